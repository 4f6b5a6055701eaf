//! Reading a pool's queue once per round, and the order in which the round considers
//! the jobs: plain queue order (priority, then submission time, then id) in a
//! dedicated pool, dominant-resource fair share across tenants in the public pool.
//!
//! The one pass over the queue copies what the round needs of each job into a compact
//! `QueuedJob`, so that the many jobs a full pool turns away are decided from these
//! records, read in sequence, without touching the jobs again.

use crate::capacity::per_dimension_minimum;
use crate::fair_share::FairShareOrder;
use crate::placement_class::{ClassId, PlacementClasses};
use crate::pool_nodes::PoolNodes;
use crate::queues::QueueLedger;
use crate::release_schedule::enforced_runtime_limit_ms;
use corral_model::ids::{PoolId, TenantId};
use corral_model::{Job, JobKind, Resources};
use corral_state::State;

/// What the round needs to know of one queued job.
pub(crate) struct QueuedJob<'a> {
    pub job: &'a Job,
    pub tenant: TenantId,
    pub per_replica: Resources,
    /// The job's replica count; its unplaced replicas are never more.
    pub replicas: u32,
    /// Inference: replicas spread and may be placed in part.
    pub spreads: bool,
    pub runtime_limit_ms: Option<u64>,
    pub class: ClassId,
    /// The job's queue in the round's `QueueLedger` (`None`: not limited by a queue).
    pub queue: Option<usize>,
}

/// The queue of `pool` as records, in queue order, and the per-dimension minimum of
/// their requests (a node with less free on some dimension can host none of them).
/// Jobs held back at `now_ms` after a disruption, and jobs naming a queue the pool no
/// longer has, are left out of the round.
pub(crate) fn read_queue<'a>(
    state: &'a State,
    pool: PoolId,
    nodes: &PoolNodes,
    classes: &mut PlacementClasses<'a>,
    queues: Option<&QueueLedger>,
    now_ms: u64,
) -> (Vec<QueuedJob<'a>>, Resources) {
    let mut queued = Vec::with_capacity(state.queue_length(pool));
    let mut smallest_request: Option<Resources> = None;
    for job in state
        .queue(pool)
        .filter_map(|key| state.job(key.job))
        .filter(|job| !job.held_back_at(now_ms))
    {
        let spec = &job.spec;
        let queue = match (&spec.queue, queues) {
            (None, _) => None,
            (Some(name), Some(ledger)) => match ledger.position(name) {
                Some(position) => Some(position),
                None => continue,
            },
            (Some(_), None) => continue,
        };
        smallest_request = Some(match smallest_request {
            None => spec.per_replica,
            Some(smallest) => per_dimension_minimum(&smallest, &spec.per_replica),
        });
        queued.push(QueuedJob {
            job,
            tenant: job.tenant,
            per_replica: spec.per_replica,
            replicas: spec.replicas,
            spreads: matches!(spec.kind, JobKind::Inference),
            runtime_limit_ms: enforced_runtime_limit_ms(spec),
            class: classes.class_for(spec, nodes),
            queue,
        });
    }
    (queued, smallest_request.unwrap_or(Resources::ZERO))
}

/// Hands out positions in the queue records, in round order.
pub(crate) enum JobOrder {
    Queue(std::ops::Range<usize>),
    FairShare(FairShareOrder),
    /// Given positions in order (the borrowing pass over deferred jobs).
    Listed(std::vec::IntoIter<usize>),
}

impl JobOrder {
    pub(crate) fn next_job(&mut self) -> Option<usize> {
        match self {
            JobOrder::Queue(positions) => positions.next(),
            JobOrder::FairShare(order) => order.next_job(),
            JobOrder::Listed(positions) => positions.next(),
        }
    }

    /// Tell the order what a job of `tenant` was given, so shares move.
    pub(crate) fn record_placement(&mut self, tenant: TenantId, resources: &Resources) {
        if let JobOrder::FairShare(order) = self {
            order.record_placement(tenant, resources);
        }
    }
}
