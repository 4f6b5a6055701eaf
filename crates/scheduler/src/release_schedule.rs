//! When work gives its resources back, as far as the scheduler can know. Only a limit
//! the state machine enforces (at `MeterTick`) is a promise: a training job's
//! `max_runtime_ms` and a notebook's `auto_stop_after_ms`. Inference services, work
//! that is shutting down, and jobs without a limit have no known end and never release
//! anything for the purpose of a reservation.

use crate::pool_nodes::{NodeSlot, PoolNodes};
use corral_model::{Job, JobKind, JobSpec, JobState, Resources};
use corral_state::State;

/// The runtime limit the state machine enforces for this spec, if any.
pub fn enforced_runtime_limit_ms(spec: &JobSpec) -> Option<u64> {
    match spec.kind {
        JobKind::Training { .. } => spec.max_runtime_ms,
        JobKind::Notebook { auto_stop_after_ms } => auto_stop_after_ms,
        JobKind::Inference | JobKind::Workflow(_) => None,
    }
}

/// When a job that holds resources will release them: its start plus its enforced
/// limit, never before `now_ms` (an overdue job is released at the next tick). `None`
/// when the end is not known.
pub fn expected_release_ms(job: &Job, now_ms: u64) -> Option<u64> {
    if job.state != JobState::Running || job.shutdown_target.is_some() {
        return None;
    }
    let started_at_ms = job.started_at_ms?;
    let limit_ms = enforced_runtime_limit_ms(&job.spec)?;
    Some(started_at_ms.saturating_add(limit_ms).max(now_ms))
}

/// When a job placed at `now_ms` will release its resources, if that is known.
pub(crate) fn release_if_placed_at(spec: &JobSpec, now_ms: u64) -> Option<u64> {
    enforced_runtime_limit_ms(spec).map(|limit_ms| now_ms.saturating_add(limit_ms))
}

/// Resources coming back to one node at one time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReleaseEvent {
    pub at_ms: u64,
    pub slot: NodeSlot,
    pub resources: Resources,
}

/// The known releases of the work already on the pool's nodes.
pub(crate) fn releases_of_running_work(
    state: &State,
    nodes: &PoolNodes,
    now_ms: u64,
) -> Vec<ReleaseEvent> {
    let mut releases = Vec::new();
    for slot in 0..nodes.node_count() as NodeSlot {
        for allocation in &nodes.node(slot).allocations {
            let release = state
                .job(allocation.job)
                .and_then(|job| expected_release_ms(job, now_ms));
            if let Some(at_ms) = release {
                releases.push(ReleaseEvent {
                    at_ms,
                    slot,
                    resources: allocation.resources,
                });
            }
        }
    }
    releases
}
