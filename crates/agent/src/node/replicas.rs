//! A node's replicas: adopting the recorded ones, following their exits, and carrying
//! out what [`crate::reconcile`] decides — ending, reporting, forgetting (starting is
//! [`super::spawns`]) — and publishing the running ones for logs and heartbeats.

use super::assignments::key_of;
use super::{Event, Node};
use crate::dirs::NodeDirs;
use crate::managers::reports::Report;
use crate::reconcile::{reconcile, Action, Desired, ExitReason, Local, ReplicaKey};
use crate::replica::{Adoption, ProcessExit, ReplicaProcess, RunningReplica};
use crate::wire::pb;
use crate::wire::pb::replica_report::Event as ReportEvent;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// Replicas (running or remembered as exited) one node holds at most.
pub(super) const MAX_LOCAL_REPLICAS: usize = 1024;

pub(super) enum LocalState {
    /// Its process is being spawned; `terminating` is set when it was stopped meanwhile.
    Starting { terminating: Option<ExitReason> },
    Running {
        process: ReplicaProcess,
        terminating: Option<ExitReason>,
    },
    Exited {
        exit_code: i32,
        reason: ExitReason,
        reported: bool,
    },
}

pub(super) struct LocalReplica {
    pub(super) state: LocalState,
    pub(super) pid: u32,
    pub(super) started_reported: bool,
    pub(super) started_at_ms: u64,
    pub(super) device_indices: Vec<u32>,
    /// The rendezvous port allocated for it (rank 0 of a multi-replica job), reported
    /// with its start.
    pub(super) master_port: Option<u16>,
}

/// A replica's started report: its pid, and rank 0's rendezvous port.
pub(super) fn started_report(replica: &LocalReplica) -> pb::ReplicaStartedReport {
    pb::ReplicaStartedReport {
        pid: replica.pid,
        master_port: replica.master_port.map_or(0, u32::from),
    }
}

impl Node {
    /// Supervises again every replica recorded in the work directory.
    pub(super) fn adopt_recorded(&mut self) {
        let records = match self.ctx.dirs.scan_records() {
            Ok(records) => records,
            Err(error) => {
                error!("{}: cannot read replica records: {error}", self.name());
                return;
            }
        };
        for record in records.into_iter().take(MAX_LOCAL_REPLICAS) {
            let key = record.key();
            let pid = record.shim_pid;
            let started_at_ms = record.started_at_ms;
            let device_indices = record.device_indices.clone();
            let master_port = record.master_port;
            let terminating = parse_reason(&record.terminate_reason);
            let state = match self.ctx.environment.processes.adopt(&self.ctx.dirs, record) {
                Adoption::Running(process) => {
                    info!("{}: adopted {key} (pid {pid})", self.name());
                    if terminating.is_some() {
                        process.terminate(self.grace());
                    }
                    self.watch_exit(key, &process);
                    LocalState::Running {
                        process,
                        terminating,
                    }
                }
                Adoption::Ended(exit) => {
                    let reason = terminating.unwrap_or(if exit.oom_killed {
                        ExitReason::OomKilled
                    } else if exit.recorded {
                        ExitReason::Exited
                    } else {
                        ExitReason::Lost
                    });
                    info!(
                        "{}: {key} ended while the agent was away (exit code {}, {})",
                        self.name(),
                        exit.exit_code,
                        if exit.recorded { "recorded" } else { "lost" }
                    );
                    LocalState::Exited {
                        exit_code: exit.exit_code,
                        reason,
                        reported: false,
                    }
                }
            };
            self.replicas.insert(
                key,
                LocalReplica {
                    state,
                    pid,
                    started_reported: false,
                    started_at_ms,
                    device_indices,
                    master_port,
                },
            );
        }
        self.publish_running();
    }

    pub(super) fn on_exit(&mut self, key: ReplicaKey, exit: ProcessExit) {
        let name = self.ctx.name.clone();
        if let Some(replica) = self.replicas.get_mut(&key) {
            if let LocalState::Running { terminating, .. } = &replica.state {
                let reason = match terminating {
                    Some(reason) => *reason,
                    None if exit.oom_killed => ExitReason::OomKilled,
                    None if !exit.recorded => ExitReason::Lost,
                    None => ExitReason::Exited,
                };
                info!(
                    "{name}: {key} exited with code {}{}",
                    exit.exit_code,
                    if reason == ExitReason::Exited {
                        String::new()
                    } else {
                        format!(" ({})", reason.as_str())
                    }
                );
                replica.state = LocalState::Exited {
                    exit_code: exit.exit_code,
                    reason,
                    reported: false,
                };
                self.running_changed = true;
            }
        }
        self.reconcile_due = true;
    }

    pub(super) fn reconcile_now(&mut self) {
        let Some(desired) = &self.assigned.replicas else {
            return;
        };
        let wanted: Vec<Desired> = desired
            .iter()
            .map(|assignment| Desired {
                key: key_of(assignment),
                stop: assignment.stop,
                started: assignment.started,
                max_runtime_ms: assignment.max_runtime_ms,
                device_indices: assignment.device_indices.clone(),
            })
            .collect();
        let locals: BTreeMap<ReplicaKey, Local> = self
            .replicas
            .iter()
            .map(|(key, replica)| {
                let local = match &replica.state {
                    LocalState::Starting { terminating } => Local::Starting {
                        terminating: *terminating,
                        device_indices: replica.device_indices.clone(),
                    },
                    LocalState::Running { terminating, .. } => Local::Running {
                        started_reported: replica.started_reported,
                        started_at_ms: replica.started_at_ms,
                        terminating: *terminating,
                        device_indices: replica.device_indices.clone(),
                    },
                    LocalState::Exited { reported, .. } => Local::Exited {
                        reported: *reported,
                    },
                };
                (*key, local)
            })
            .collect();
        let now = self.now_ms();
        let actions = reconcile(&wanted, &locals, now);
        let changed = !actions.is_empty();
        for action in actions {
            self.carry_out(action, &wanted, now);
        }
        self.spawns.keep_retries_of(&wanted);
        self.running_changed |= changed;
    }

    fn carry_out(&mut self, action: Action, wanted: &[Desired], now: u64) {
        match action {
            Action::Start(key) => self.start(key, now),
            Action::Terminate(key, reason) => self.terminate(key, reason, wanted),
            Action::ReportStarted(key) => {
                if let Some(replica) = self.replicas.get_mut(&key) {
                    replica.started_reported = true;
                    let report = started_report(replica);
                    self.push_report(key, ReportEvent::Started(report));
                }
            }
            Action::ReportExit(key) => {
                let recorded_start = wanted
                    .iter()
                    .any(|desired| desired.key == key && desired.started);
                let Some(replica) = self.replicas.get_mut(&key) else {
                    return;
                };
                let LocalState::Exited {
                    exit_code,
                    reason,
                    reported,
                } = &mut replica.state
                else {
                    return;
                };
                *reported = true;
                let (exit_code, reason) = (*exit_code, *reason);
                // An adopted replica that ended before its start was ever reported.
                let report_start = !replica.started_reported && !recorded_start;
                replica.started_reported = true;
                let report = started_report(replica);
                if report_start {
                    self.push_report(key, ReportEvent::Started(report));
                }
                self.push_report(
                    key,
                    ReportEvent::Exited(pb::ReplicaExitedReport {
                        exit_code,
                        reason: reason.as_str().to_string(),
                    }),
                );
            }
            Action::ReportLost(key) => {
                if self.replicas.len() >= MAX_LOCAL_REPLICAS {
                    return;
                }
                warn!(
                    "{}: {key} was recorded started but has no process here: lost",
                    self.name()
                );
                self.replicas.insert(
                    key,
                    LocalReplica {
                        state: LocalState::Exited {
                            exit_code: 137,
                            reason: ExitReason::Lost,
                            reported: true,
                        },
                        pid: 0,
                        started_reported: true,
                        started_at_ms: now,
                        device_indices: Vec::new(),
                        master_port: None,
                    },
                );
                self.push_report(
                    key,
                    ReportEvent::Exited(pb::ReplicaExitedReport {
                        exit_code: 137,
                        reason: ExitReason::Lost.as_str().to_string(),
                    }),
                );
            }
            Action::Forget(key) => {
                self.replicas.remove(&key);
                if self.ctx.dirs.discard_record(key) {
                    self.janitor.empty_trash();
                }
                debug!("{}: forgot {key}", self.name());
            }
        }
    }

    /// Ends a replica (SIGTERM now, SIGKILL after the grace period); a starting one as
    /// soon as its spawn finishes.
    fn terminate(&mut self, key: ReplicaKey, reason: ExitReason, wanted: &[Desired]) {
        let why = match reason {
            ExitReason::MaxRuntime => "ran longer than its max runtime",
            _ if wanted.iter().any(|desired| desired.key == key) => "stopped",
            _ => "no longer assigned here",
        };
        let grace = self.grace();
        let Some(replica) = self.replicas.get_mut(&key) else {
            return;
        };
        match &mut replica.state {
            LocalState::Starting { terminating } => {
                info!(
                    "{}: ending {key} as soon as it has started: {why}",
                    self.ctx.name
                );
                *terminating = Some(reason);
            }
            LocalState::Running {
                process,
                terminating,
            } => {
                info!(
                    "{}: ending {key} (pid {}): {why}",
                    self.ctx.name,
                    process.pid()
                );
                end_process(&self.ctx.dirs, process, reason, grace);
                *terminating = Some(reason);
            }
            LocalState::Exited { .. } => {}
        }
    }

    pub(super) fn watch_exit(&self, key: ReplicaKey, process: &ReplicaProcess) {
        let mut watcher = process.exit_watcher();
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Some(exit) = watcher.wait().await {
                let _ = events.send(Event::Exited(key, exit)).await;
            }
        });
    }

    pub(super) fn push_report(&self, key: ReplicaKey, event: ReportEvent) {
        self.reports.push(Report::Replica(pb::ReplicaReport {
            node: self.node_id,
            job: key.job,
            rank: key.rank,
            generation: key.generation,
            event: Some(event),
        }));
    }

    pub(super) fn publish_running(&self) {
        let running: BTreeMap<ReplicaKey, RunningReplica> = self
            .replicas
            .iter()
            .filter_map(|(key, replica)| match &replica.state {
                LocalState::Running { process, .. } => Some((
                    *key,
                    RunningReplica {
                        pid: replica.pid,
                        device_indices: replica.device_indices.clone(),
                        cgroup: process.record().cgroup.clone(),
                    },
                )),
                _ => None,
            })
            .collect();
        if let Ok(mut view) = self.running.lock() {
            *view = running;
        }
    }
}

/// Asks a process to end and writes why into its record, so that a restarted agent
/// finishes the job and reports the right reason.
pub(super) fn end_process(
    dirs: &NodeDirs,
    process: &ReplicaProcess,
    reason: ExitReason,
    grace: Duration,
) {
    process.terminate(grace);
    let mut record = process.record().clone();
    record.terminate_reason = reason.as_str().to_string();
    if let Err(error) = dirs.write_record(&record) {
        warn!("cannot update the record of {}: {error}", process.key());
    }
}

fn parse_reason(reason: &str) -> Option<ExitReason> {
    match reason {
        "stopped" => Some(ExitReason::Stopped),
        "max_runtime" => Some(ExitReason::MaxRuntime),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_termination_reasons_are_restored() {
        assert_eq!(parse_reason("stopped"), Some(ExitReason::Stopped));
        assert_eq!(parse_reason("max_runtime"), Some(ExitReason::MaxRuntime));
        assert_eq!(parse_reason(""), None);
        assert_eq!(parse_reason("lost"), None);
    }
}
