//! Job lifecycle mechanics shared by every handler: state transitions (only through
//! the table in `corral_model::job::allowed_transition`), queue membership, releasing
//! replicas, shutting jobs down, and evicting work from a node by each kind's policy.

use super::Context;
use crate::state::{QueueKey, State};
use corral_model::ids::{JobId, NodeId};
use corral_model::job::allowed_transition;
use corral_model::job::disruption_backoff_ms;
use corral_model::limits::{MAX_DISRUPTIONS_PER_JOB, MAX_FINISHED_JOBS_RETAINED, MAX_PRIORITY};
use corral_model::{Event, Job, JobKind, JobState, ReplicaState};

pub(crate) fn queue_key(job: &Job) -> QueueKey {
    QueueKey {
        priority_rank: MAX_PRIORITY - job.spec.priority,
        submitted_at_ms: job.submitted_at_ms,
        job: job.id,
    }
}

/// Why a training gang restarts: what decides whether it spends a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RestartCause {
    /// The job's own failure (non-zero exit, OOM kill): spends one of `retry_limit`.
    OwnFailure,
    /// Infrastructure ended it (node lost, agent restarted under it, drain, driver
    /// upgrade, eviction): spends no retry, counts against `MAX_DISRUPTIONS_PER_JOB`.
    Disruption,
}

/// Whether the job belongs in its pool's queue.
pub(crate) fn wants_queue(job: &Job) -> bool {
    job.state.wants_placement() && job.shutdown_target.is_none() && job.unplaced_count() > 0
}

impl State {
    pub(crate) fn job_mut(&mut self, job_id: JobId) -> &mut Job {
        match self.jobs.get_mut(&job_id) {
            Some(job) => job,
            None => unreachable!("job {job_id} must exist here"),
        }
    }

    /// Move a job to `to`. Panics on a transition outside the table: that is a bug in
    /// the state machine, and replicas must stop rather than diverge.
    pub(crate) fn transition(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        to: JobState,
        reason: &str,
    ) {
        let at_ms = context.at_ms;
        let job = self.job_mut(job_id);
        let from = job.state;
        if from == to {
            return;
        }
        assert!(
            allowed_transition(&job.spec.kind, from, to),
            "job {job_id}: {from:?} -> {to:?} is not allowed for {}",
            job.spec.kind.label()
        );
        account_durations(job, from, to, at_ms);
        job.state = to;
        job.generation += 1;
        job.reason = reason.to_string();
        if to.wants_placement() && !from.wants_placement() {
            job.queued_at_ms = at_ms;
        }
        if !matches!(to, JobState::Terminating | JobState::Stopping) {
            job.shutdown_target = None;
        }
        if to.is_terminal() {
            job.finished_at_ms = Some(at_ms);
        }
        let tenant = job.tenant;
        let parent = job.parent_workflow;
        self.sync_queue(job_id);
        context.emit(
            Some(tenant),
            Event::JobStateChanged {
                job: job_id,
                from,
                to,
                reason: reason.to_string(),
            },
        );
        if to.is_terminal() {
            self.active_jobs -= 1;
            if let Some(count) = self.active_jobs_per_tenant.get_mut(&tenant) {
                *count -= 1;
                if *count == 0 {
                    self.active_jobs_per_tenant.remove(&tenant);
                }
            }
            self.remember_finished(job_id);
            if let Some(workflow) = parent {
                self.workflow_child_finished(context, workflow, job_id);
            }
        }
    }

    /// Put the job in or take it out of its pool's queue, to match `wants_queue`.
    pub(crate) fn sync_queue(&mut self, job_id: JobId) {
        let job = &self.jobs[&job_id];
        let key = queue_key(job);
        let pool = job.spec.pool;
        if wants_queue(job) {
            self.queues.entry(pool).or_default().insert(key);
        } else if let Some(queue) = self.queues.get_mut(&pool) {
            queue.remove(&key);
            if queue.is_empty() {
                self.queues.remove(&pool);
            }
        }
    }

    fn remember_finished(&mut self, job_id: JobId) {
        self.finished_jobs.push_back(job_id);
        while self.finished_jobs.len() > MAX_FINISHED_JOBS_RETAINED {
            if let Some(oldest) = self.finished_jobs.pop_front() {
                // A workflow's children are kept while the workflow is.
                self.jobs.remove(&oldest);
            }
        }
    }

    /// Give back what one replica holds: node capacity and devices, tenant usage, and
    /// its billing meter. The replica becomes Unplaced (or keeps its exit state).
    pub(crate) fn release_replica(&mut self, context: &mut Context, job_id: JobId, rank: u32) {
        let job = self.job_mut(job_id);
        let replica = &mut job.replicas[rank as usize];
        let Some(node_id) = replica.node.take() else {
            return;
        };
        let device_mask = replica.device_mask;
        replica.device_mask = 0;
        replica.assigned_at_ms = None;
        // The port stays known (rank 0 may finish before the others start) until the
        // next placement.
        if !matches!(replica.state, ReplicaState::Exited { .. }) {
            replica.state = ReplicaState::Unplaced;
        }
        let meter = replica.meter.take();
        let resources = job.spec.per_replica;
        let tenant_id = job.tenant;
        let node = match self.nodes.get_mut(&node_id) {
            Some(node) => node,
            None => unreachable!("replica of {job_id} on missing node {node_id}"),
        };
        let position = node
            .allocations
            .iter()
            .position(|allocation| allocation.job == job_id && allocation.rank == rank);
        let Some(position) = position else {
            unreachable!("node {node_id} has no allocation for {job_id} rank {rank}");
        };
        node.allocations.swap_remove(position);
        node.allocated = node
            .allocated
            .checked_sub(&resources)
            .expect("node allocation underflow");
        assert_eq!(
            node.devices_in_use & device_mask,
            device_mask,
            "released devices must have been held"
        );
        node.devices_in_use &= !device_mask;
        let (pool_id, queue) = {
            let spec = &self.jobs[&job_id].spec;
            (spec.pool, spec.queue.clone())
        };
        if self.counts_against_quota(tenant_id, pool_id) {
            let tenant = self
                .tenants
                .get_mut(&tenant_id)
                .expect("a job's tenant exists while it holds resources");
            tenant.used = tenant
                .used
                .checked_sub(&resources)
                .expect("tenant usage underflow");
        }
        self.account_queue_use(pool_id, queue.as_deref(), &resources, false);
        if let Some(meter_id) = meter {
            self.close_meter(context, meter_id);
        }
        context.emit(
            Some(tenant_id),
            Event::ReplicaReleased {
                job: job_id,
                rank,
                node: node_id,
            },
        );
    }

    pub(crate) fn release_all_replicas(&mut self, context: &mut Context, job_id: JobId) {
        let ranks: Vec<u32> = self.jobs[&job_id]
            .placed_replicas()
            .map(|replica| replica.rank)
            .collect();
        for rank in ranks {
            self.release_replica(context, job_id, rank);
        }
    }

    /// Reset every replica to Unplaced, for a fresh run.
    fn reset_replicas(&mut self, job_id: JobId) {
        let job = self.job_mut(job_id);
        for replica in &mut job.replicas {
            assert!(
                replica.node.is_none(),
                "reset a replica that still holds a node"
            );
            replica.state = ReplicaState::Unplaced;
        }
    }

    /// Stop a job and bring it to `target` (Terminated, Failed, Stopped). Replicas that
    /// never started are released at once; running ones are released as their agents
    /// report them exited, meanwhile the job is Terminating (training) or Stopping.
    pub(crate) fn shut_down(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        target: JobState,
        reason: &str,
    ) {
        let job = &self.jobs[&job_id];
        // A job may already have ended earlier in the same entry (a workflow that failed
        // terminates its other steps while the caller still walks its list); leave it.
        if job.state.is_terminal() {
            return;
        }
        if let JobKind::Workflow(_) = job.spec.kind {
            self.terminate_workflow(context, job_id, target, reason);
            return;
        }
        let not_started: Vec<u32> = job
            .replicas
            .iter()
            .filter(|replica| replica.is_placed() && replica.state == ReplicaState::Assigned)
            .map(|replica| replica.rank)
            .collect();
        for rank in not_started {
            self.release_replica(context, job_id, rank);
        }
        let job = &self.jobs[&job_id];
        if job.placed_replicas().next().is_none() {
            self.transition(context, job_id, target, reason);
            return;
        }
        let waiting_state = match job.spec.kind {
            JobKind::Training { .. } => JobState::Terminating,
            _ => JobState::Stopping,
        };
        self.job_mut(job_id).shutdown_target = Some(target);
        self.transition(context, job_id, waiting_state, reason);
    }

    /// After a replica of a shutting-down job was released: finish when none is left.
    pub(crate) fn finish_shutdown_if_done(&mut self, context: &mut Context, job_id: JobId) {
        let job = &self.jobs[&job_id];
        let Some(target) = job.shutdown_target else {
            return;
        };
        if job.placed_replicas().next().is_none() {
            let reason = job.reason.clone();
            self.transition(context, job_id, target, &reason);
        }
    }

    /// Restart a training gang from scratch, or fail it. The one place that decides
    /// whether a gang has a restart left: the job's own failure spends one of its
    /// `retry_limit` retries; an infrastructure disruption spends none but counts
    /// against `MAX_DISRUPTIONS_PER_JOB`, and past `DISRUPTIONS_WITHOUT_BACKOFF` holds
    /// the job back from placement for a growing backoff.
    pub(crate) fn restart_or_fail_gang(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        reason: &str,
        cause: RestartCause,
    ) {
        self.release_all_replicas(context, job_id);
        self.reset_replicas(job_id);
        let at_ms = context.at_ms;
        let job = self.job_mut(job_id);
        let JobKind::Training { retry_limit } = job.spec.kind else {
            unreachable!("only training jobs restart as a gang");
        };
        let retries_used = job.retries_used;
        let (target, reason) = match cause {
            RestartCause::OwnFailure if retries_used < retry_limit => {
                let attempt = retries_used + 1;
                job.retries_used = attempt;
                (
                    JobState::Pending,
                    format!("{reason}; restart {attempt} of {retry_limit}"),
                )
            }
            RestartCause::OwnFailure => (JobState::Failed, format!("{reason}; no retries left")),
            RestartCause::Disruption => {
                let disruptions = job.disruptions.saturating_add(1);
                job.disruptions = disruptions;
                if disruptions > MAX_DISRUPTIONS_PER_JOB {
                    (
                        JobState::Failed,
                        format!(
                            "{reason}; disrupted {disruptions} times by infrastructure \
                             failures (at most {MAX_DISRUPTIONS_PER_JOB}): its nodes keep failing"
                        ),
                    )
                } else {
                    let backoff_ms = disruption_backoff_ms(disruptions);
                    job.not_before_ms = (backoff_ms > 0).then(|| at_ms.saturating_add(backoff_ms));
                    let wait = if backoff_ms > 0 {
                        format!(", placed again after {backoff_ms} ms")
                    } else {
                        String::new()
                    };
                    (
                        JobState::Pending,
                        format!(
                            "{reason}; restart after disruption {disruptions} of \
                             {MAX_DISRUPTIONS_PER_JOB}{wait} (no retry spent: \
                             {retries_used} of {retry_limit} used)"
                        ),
                    )
                }
            }
        };
        self.transition(context, job_id, target, &reason);
    }

    /// Take every replica off `node_id` by each kind's policy: a training gang restarts
    /// (or fails), inference replicas and notebooks go back to the queue to move. Every
    /// caller evicts for an infrastructure reason (loss, drain, upgrade, taint, pool
    /// change): a disruption, never the job's own failure.
    pub(crate) fn evict_node(&mut self, context: &mut Context, node_id: NodeId, reason: &str) {
        let mut jobs: Vec<JobId> = self.nodes[&node_id]
            .allocations
            .iter()
            .map(|allocation| allocation.job)
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        for job_id in jobs {
            self.evict_job_from_nodes(context, job_id, &[node_id], reason);
        }
    }

    pub(crate) fn evict_job_from_node(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        node_id: NodeId,
        reason: &str,
    ) {
        self.evict_job_from_nodes(context, job_id, &[node_id], reason);
    }

    /// Take the job's replicas off `nodes` at once, one disruption for the job however
    /// many of its nodes are listed (a rack's loss restarts a gang once).
    pub(crate) fn evict_job_from_nodes(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        nodes: &[NodeId],
        reason: &str,
    ) {
        let job = &self.jobs[&job_id];
        let ranks_on_nodes: Vec<u32> = job
            .replicas
            .iter()
            .filter(|replica| replica.node.is_some_and(|node| nodes.contains(&node)))
            .map(|replica| replica.rank)
            .collect();
        // Nothing of the job is on the nodes any more: it was released earlier in the
        // same entry (e.g. its workflow failed and terminated it).
        if ranks_on_nodes.is_empty() {
            return;
        }
        if job.shutdown_target.is_some() {
            for rank in ranks_on_nodes {
                self.release_replica(context, job_id, rank);
            }
            self.finish_shutdown_if_done(context, job_id);
            return;
        }
        match job.spec.kind {
            JobKind::Training { .. } => {
                self.restart_or_fail_gang(context, job_id, reason, RestartCause::Disruption)
            }
            JobKind::Inference => {
                self.count_disruption(job_id);
                for rank in ranks_on_nodes {
                    self.release_replica(context, job_id, rank);
                }
                self.settle_inference_state(context, job_id, reason);
            }
            JobKind::Notebook { .. } => {
                self.count_disruption(job_id);
                for rank in ranks_on_nodes {
                    self.release_replica(context, job_id, rank);
                }
                self.reset_replicas(job_id);
                self.transition(context, job_id, JobState::Pending, reason);
            }
            JobKind::Workflow(_) => unreachable!("workflows hold no nodes"),
        }
    }

    /// Services and notebooks run until stopped and are moved as often as their nodes
    /// fail (as before): their disruptions are counted for people, not bounded.
    fn count_disruption(&mut self, job_id: JobId) {
        let job = self.job_mut(job_id);
        job.disruptions = job.disruptions.saturating_add(1);
    }

    /// An inference service is Running when every replica runs, Concerning when some
    /// run and others are being replaced, Deploying when none runs.
    pub(crate) fn settle_inference_state(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        reason: &str,
    ) {
        let job = &self.jobs[&job_id];
        let running = job
            .replicas
            .iter()
            .filter(|replica| replica.state == ReplicaState::Running)
            .count();
        let placed = job.placed_replicas().count();
        let target = if running == job.replicas.len() {
            JobState::Running
        } else if job.state == JobState::Deploying && placed > 0 {
            JobState::Deploying
        } else if running > 0 || (job.state != JobState::Deploying && placed > 0) {
            JobState::Concerning
        } else {
            JobState::Deploying
        };
        if target != job.state {
            self.transition(context, job_id, target, reason);
        } else {
            self.sync_queue(job_id);
        }
    }
}

fn is_running(state: JobState) -> bool {
    matches!(state, JobState::Running | JobState::Concerning)
}

/// Keep the pending and running totals that queries report: time in a waiting state is
/// pending time; time in Running or Concerning is running time.
fn account_durations(job: &mut Job, from: JobState, to: JobState, at_ms: u64) {
    if from.wants_placement() && !to.wants_placement() {
        job.pending_ms_total += at_ms.saturating_sub(job.queued_at_ms);
    }
    if is_running(from) && !is_running(to) {
        if let Some(started) = job.started_at_ms {
            job.running_ms_total += at_ms.saturating_sub(started);
        }
    }
    if !is_running(from) && is_running(to) {
        job.started_at_ms = Some(at_ms);
    }
}
