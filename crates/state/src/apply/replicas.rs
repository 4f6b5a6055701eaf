//! Agent reports about replicas: started and exited, and what each kind does when a
//! replica exits.

use super::lifecycle::RestartCause;
use super::{require_node_itself, Context, Handled};
use crate::state::State;
use corral_model::ids::{JobId, NodeId};
use corral_model::{Event, Job, JobKind, JobState, Rejection, ReplicaState};

/// The replica must sit on the reporting node; a report about an older placement is
/// stale and refused, so a late message cannot disturb a newer run.
fn placed_replica_on(job: &Job, rank: u32, node: NodeId) -> Result<ReplicaState, Rejection> {
    let replica = job
        .replicas
        .get(rank as usize)
        .ok_or_else(|| Rejection::invalid("rank", format!("job {} has no rank {rank}", job.id)))?;
    if replica.node != Some(node) {
        return Err(Rejection::state(
            "replica",
            format!("{}/{rank}", job.id),
            "NotOnThisNode",
            "report",
        ));
    }
    Ok(replica.state)
}

/// The exit code a lost replica is shown with (as if SIGKILLed), as agents report it.
const LOST_EXIT_CODE: i32 = 137;

/// A training job running longer than its max runtime at `now_ms`.
fn past_max_runtime(job: &Job, now_ms: u64) -> bool {
    let JobKind::Training { .. } = job.spec.kind else {
        return false;
    };
    match (job.spec.max_runtime_ms, job.started_at_ms) {
        (Some(limit_ms), Some(started_ms)) => started_ms.saturating_add(limit_ms) <= now_ms,
        _ => false,
    }
}

impl State {
    pub(super) fn replica_started(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        rank: u32,
        node: NodeId,
        master_port: Option<u16>,
    ) -> Handled {
        require_node_itself(context.principal, node)?;
        let job = self
            .jobs
            .get(&job_id)
            .ok_or_else(|| Rejection::not_found("job", job_id))?;
        if let Some(port) = master_port {
            if rank != 0 || job.spec.replicas < 2 {
                return Err(Rejection::invalid(
                    "master_port",
                    "only rank 0 of a job of several replicas has one",
                ));
            }
            if port < 1024 {
                return Err(Rejection::invalid("master_port", "must be 1024 or above"));
            }
        }
        let replica_state = placed_replica_on(job, rank, node)?;
        if replica_state != ReplicaState::Assigned {
            return Err(Rejection::state(
                "replica",
                format!("{job_id}/{rank}"),
                replica_state,
                "start",
            ));
        }
        let tenant = job.tenant;
        let replica = &mut self.job_mut(job_id).replicas[rank as usize];
        replica.state = ReplicaState::Running;
        replica.master_port = master_port;
        if master_port.is_some() {
            // The nodes of the other ranks wait for the port: wake their agents.
            let waiting: std::collections::BTreeSet<NodeId> = self.jobs[&job_id]
                .replicas
                .iter()
                .filter_map(|replica| replica.node)
                .filter(|other| *other != node)
                .collect();
            for waiting_node in waiting {
                context.emit(
                    Some(tenant),
                    Event::RendezvousReady {
                        job: job_id,
                        node: waiting_node,
                    },
                );
            }
        }
        context.emit(
            Some(tenant),
            Event::ReplicaStarted {
                job: job_id,
                rank,
                node,
            },
        );
        if self.jobs[&job_id].spec.kind == JobKind::Inference
            && self.jobs[&job_id].shutdown_target.is_none()
        {
            self.settle_inference_state(context, job_id, "replica started");
        }
        Ok(None)
    }

    pub(super) fn replica_exited(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        rank: u32,
        node: NodeId,
        exit_code: i32,
        oom_killed: bool,
    ) -> Handled {
        require_node_itself(context.principal, node)?;
        let job = self
            .jobs
            .get(&job_id)
            .ok_or_else(|| Rejection::not_found("job", job_id))?;
        let replica_state = placed_replica_on(job, rank, node)?;
        if !matches!(
            replica_state,
            ReplicaState::Assigned | ReplicaState::Running
        ) {
            return Err(Rejection::state(
                "replica",
                format!("{job_id}/{rank}"),
                replica_state,
                "exit",
            ));
        }
        let tenant = job.tenant;
        context.emit(
            Some(tenant),
            Event::ReplicaExited {
                job: job_id,
                rank,
                node,
                exit_code,
                oom_killed,
            },
        );
        if job.shutdown_target.is_some() {
            self.release_replica(context, job_id, rank);
            self.finish_shutdown_if_done(context, job_id);
            return Ok(None);
        }
        if exit_code != 0 && past_max_runtime(job, context.at_ms) {
            // The agent ended it for running too long (or it failed right at the limit):
            // that is the job's failure, not a reason to spend a retry.
            self.release_replica(context, job_id, rank);
            self.shut_down(
                context,
                job_id,
                JobState::Failed,
                "exceeded its max runtime",
            );
            return Ok(None);
        }
        let reason = if oom_killed {
            format!(
                "replica {rank} was OOMKilled: it passed its memory limit of {} MiB",
                job.spec.per_replica.memory_mib
            )
        } else {
            format!("replica {rank} exited with code {exit_code}")
        };
        match job.spec.kind {
            JobKind::Training { .. } if exit_code == 0 => {
                self.job_mut(job_id).replicas[rank as usize].state =
                    ReplicaState::Exited { exit_code };
                self.release_replica(context, job_id, rank);
                let all_done = self.jobs[&job_id]
                    .replicas
                    .iter()
                    .all(|replica| replica.state == ReplicaState::Exited { exit_code: 0 });
                if all_done {
                    self.transition(
                        context,
                        job_id,
                        JobState::Completed,
                        "every replica exited with code 0",
                    );
                }
            }
            JobKind::Training { .. } => {
                self.restart_or_fail_gang(context, job_id, &reason, RestartCause::OwnFailure)
            }
            JobKind::Inference => {
                self.release_replica(context, job_id, rank);
                self.settle_inference_state(context, job_id, &reason);
            }
            JobKind::Notebook { .. } => {
                self.release_replica(context, job_id, rank);
                let target = if exit_code == 0 {
                    JobState::Stopped
                } else {
                    JobState::Failed
                };
                self.transition(context, job_id, target, &reason);
            }
            JobKind::Workflow(_) => unreachable!("workflows have no replicas"),
        }
        Ok(None)
    }

    /// The agent found the replica's process gone with no recorded exit (the machine or
    /// the agent restarted under it): a disruption, handled like the loss of its node
    /// for this replica alone, spending no retry.
    pub(super) fn replica_lost(
        &mut self,
        context: &mut Context,
        job_id: JobId,
        rank: u32,
        node: NodeId,
    ) -> Handled {
        require_node_itself(context.principal, node)?;
        let job = self
            .jobs
            .get(&job_id)
            .ok_or_else(|| Rejection::not_found("job", job_id))?;
        let replica_state = placed_replica_on(job, rank, node)?;
        if !matches!(
            replica_state,
            ReplicaState::Assigned | ReplicaState::Running
        ) {
            return Err(Rejection::state(
                "replica",
                format!("{job_id}/{rank}"),
                replica_state,
                "lose",
            ));
        }
        let tenant = job.tenant;
        context.emit(
            Some(tenant),
            Event::ReplicaExited {
                job: job_id,
                rank,
                node,
                exit_code: LOST_EXIT_CODE,
                oom_killed: false,
            },
        );
        if job.shutdown_target.is_some() {
            self.release_replica(context, job_id, rank);
            self.finish_shutdown_if_done(context, job_id);
            return Ok(None);
        }
        let reason =
            format!("replica {rank} was lost on node {node}: its agent found the process gone");
        match job.spec.kind {
            JobKind::Training { .. } => {
                self.restart_or_fail_gang(context, job_id, &reason, RestartCause::Disruption)
            }
            JobKind::Inference | JobKind::Notebook { .. } => {
                // Only this replica: the node itself is fine.
                self.release_replica(context, job_id, rank);
                let job = self.job_mut(job_id);
                job.disruptions = job.disruptions.saturating_add(1);
                job.replicas[rank as usize].state = ReplicaState::Unplaced;
                if job.spec.kind == JobKind::Inference {
                    self.settle_inference_state(context, job_id, &reason);
                } else {
                    self.transition(context, job_id, JobState::Pending, &reason);
                }
            }
            JobKind::Workflow(_) => unreachable!("workflows have no replicas"),
        }
        Ok(None)
    }
}
