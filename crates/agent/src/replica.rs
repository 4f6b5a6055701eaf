//! A replica process as the node loop sees it, whoever runs it (the shim on a real
//! machine, a simulated machine in the simulation): its [`ReplicaRecord`], what to
//! launch ([`LaunchSpec`]), the handle the loop holds ([`ReplicaProcess`]), the
//! watcher's side of it ([`Supervision`]), how it ended ([`ProcessExit`]), and what the
//! rest of the agent (logs, heartbeats) sees of the running ones ([`RunningView`]).
//! The plain data of the [`crate::environment::Processes`] seam.

use crate::reconcile::ReplicaKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// What the agent remembers of a spawned replica across its own restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaRecord {
    pub job: u64,
    pub rank: u32,
    pub generation: u64,
    pub shim_pid: u32,
    /// `/proc/<pid>/stat` field 22 of the shim, against pid reuse.
    pub start_ticks: u64,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_at_ms: u64,
    #[serde(default)]
    pub device_indices: Vec<u32>,
    /// Set once the agent began ending it ("stopped", "max_runtime"), so a restarted
    /// agent finishes the job and reports the right reason.
    #[serde(default)]
    pub terminate_reason: String,
    /// The replica's cgroup directories (controller name, or "unified" on v2, to the
    /// directory); empty without isolation. A restarted agent adopts the replica with
    /// them, and removes them once it ends.
    #[serde(default)]
    pub cgroup: BTreeMap<String, std::path::PathBuf>,
    /// The uid the workload runs as; None without isolation.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The rendezvous port this agent allocated for rank 0 of a multi-replica job
    /// (reported with its start, so the other ranks learn it).
    #[serde(default)]
    pub master_port: Option<u16>,
}

impl ReplicaRecord {
    pub fn key(&self) -> ReplicaKey {
        ReplicaKey {
            job: self.job,
            rank: self.rank,
            generation: self.generation,
        }
    }
}

/// How a replica's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    /// The workload's exit code (128 + signal when a signal ended it; 137 when the
    /// agent had to SIGKILL it or it vanished).
    pub exit_code: i32,
    /// The code came from the shim's exit file. False when the shim itself was killed
    /// or vanished.
    pub recorded: bool,
    /// The agent sent SIGKILL after the grace period.
    pub killed: bool,
    /// The kernel's OOM killer killed a process of the replica (it passed its memory
    /// limit).
    pub oom_killed: bool,
}

/// What to launch for one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    pub key: ReplicaKey,
    /// argv; the first element is the program.
    pub command: Vec<String>,
    /// The workload's whole environment (the agent's own is not passed on).
    pub environment: BTreeMap<String, String>,
    pub device_indices: Vec<u32>,
    /// The node the replica runs on (names its cgroup).
    pub node_name: String,
    /// The job's tenant (chooses the uid it runs as).
    pub tenant: u64,
    /// The replica's CPU request, enforced as a quota (1000 per core; 0: none).
    pub cpu_millicores: u64,
    /// The replica's memory request, enforced as a limit (0: none).
    pub memory_mib: u64,
    /// The job's hostfile lines ("host slots=N"), written to `hostfile` in the work
    /// directory for MPI-style launchers.
    pub hosts: Vec<String>,
    /// The rendezvous port allocated for rank 0, kept in its record.
    pub master_port: Option<u16>,
}

/// What the agent asks of a supervised process's monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// End it: SIGTERM now, SIGKILL to its group after the grace period.
    Terminate(Duration),
    /// End it at once (SIGKILL to its group): a process nothing may track.
    Kill,
}

/// A replica process this agent supervises (spawned or adopted). Dropping it abandons
/// the process: it keeps running and can be adopted again from its record.
#[derive(Debug)]
pub struct ReplicaProcess {
    record: ReplicaRecord,
    control: mpsc::Sender<Control>,
    exit: watch::Receiver<Option<ProcessExit>>,
}

/// The outcome of adopting a recorded replica.
#[derive(Debug)]
pub enum Adoption {
    /// Still running: supervised again.
    Running(ReplicaProcess),
    /// Ended while no agent watched it.
    Ended(ProcessExit),
}

impl ReplicaProcess {
    /// The handle of a process recorded as `record`, and the [`Supervision`] through
    /// which whoever watches the process (this module's monitor of a real process, or a
    /// simulated machine's) takes the agent's requests and reports its end.
    pub fn with_supervision(record: ReplicaRecord) -> (ReplicaProcess, Supervision) {
        let (control_sender, control) = mpsc::channel(4);
        let (exit_sender, exit) = watch::channel(None);
        let process = ReplicaProcess {
            record,
            control: control_sender,
            exit,
        };
        let supervision = Supervision {
            control,
            exit: exit_sender,
        };
        (process, supervision)
    }

    pub(crate) fn key(&self) -> ReplicaKey {
        self.record.key()
    }

    /// The shim's pid (the process group and session of the replica).
    pub(crate) fn pid(&self) -> u32 {
        self.record.shim_pid
    }

    pub(crate) fn record(&self) -> &ReplicaRecord {
        &self.record
    }

    /// Asks the process to end: SIGTERM now, SIGKILL to its group after `grace`. A
    /// second call changes nothing.
    pub(crate) fn terminate(&self, grace: Duration) {
        if self.control.try_send(Control::Terminate(grace)).is_err() {
            debug!("{}: already terminating or ended", self.key());
        }
    }

    /// Ends the process at once (SIGKILL to its group), even when this handle is
    /// dropped right after.
    pub(crate) fn kill(&self) {
        if self.control.try_send(Control::Kill).is_err() {
            debug!(
                "{}: cannot ask for a kill (ended, or requests queued)",
                self.key()
            );
        }
    }

    /// Resolves when the process has ended.
    pub(crate) fn exit_watcher(&self) -> ExitWatcher {
        ExitWatcher {
            exit: self.exit.clone(),
        }
    }
}

/// Waits for a supervised process's end (clonable, usable after the
/// [`ReplicaProcess`] moved).
#[derive(Clone, Debug)]
pub(crate) struct ExitWatcher {
    exit: watch::Receiver<Option<ProcessExit>>,
}

impl ExitWatcher {
    /// The exit, or None when the supervision was abandoned first.
    pub(crate) async fn wait(&mut self) -> Option<ProcessExit> {
        loop {
            if let Some(exit) = *self.exit.borrow_and_update() {
                return Some(exit);
            }
            if self.exit.changed().await.is_err() {
                return *self.exit.borrow();
            }
        }
    }
}

/// The watcher's side of a supervised process: the agent's requests in, the end out.
#[derive(Debug)]
pub struct Supervision {
    control: mpsc::Receiver<Control>,
    exit: watch::Sender<Option<ProcessExit>>,
}

impl Supervision {
    /// The agent's next request, in the order made; None once the agent abandoned the
    /// process (dropped its handle), which then keeps running, to be adopted again.
    pub async fn next_request(&mut self) -> Option<Control> {
        self.control.recv().await
    }

    /// Reports how the process ended.
    pub fn exited(self, exit: ProcessExit) {
        let _ = self.exit.send(Some(exit));
    }
}

/// What other parts of the agent (logs, heartbeats) see of a running replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunningReplica {
    pub(crate) pid: u32,
    pub(crate) device_indices: Vec<u32>,
    /// Its cgroup directories (empty without isolation): its use is read there.
    pub(crate) cgroup: BTreeMap<String, std::path::PathBuf>,
}

/// The running replicas of a node, published by its reconcile loop.
pub(crate) type RunningView =
    std::sync::Arc<std::sync::Mutex<BTreeMap<ReplicaKey, RunningReplica>>>;
