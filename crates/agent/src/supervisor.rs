//! Replica processes: spawning a workload under the shim in its own session, the
//! per-replica state record that lets a restarted agent adopt it, watching it until it
//! ends, and ending it (SIGTERM, then SIGKILL to its process group after a grace period).
//!
//! Layout of a node's work directory:
//! - `state/<job>-<rank>-<generation>.json`: the [`ReplicaRecord`] (shim pid and start
//!   time, start wall clock, devices), written atomically once the shim is spawned;
//! - `state/<job>-<rank>-<generation>.exit`: the exit code, written by the shim;
//! - `replicas/<job>-<rank>-<generation>/`: the workload's working directory, holding
//!   `output.log` (and its rotations);
//! - `trash/`: records and exit files of forgotten replicas, moved there by a rename on
//!   the node's loop and removed later by [`crate::janitor`] (a removal can take
//!   milliseconds, a rename does not).
//!
//! Signals: the agent sends SIGTERM to the shim, which forwards it once to its whole
//! process group (workload included) and keeps waiting; SIGKILL after the grace period
//! goes to the process group directly (the shim dies with it, so the agent records 137).

use crate::environment::Processes;
use crate::files::{read_small, replace_atomic};
use crate::process::{exit_code_of, is_alive, read_stat, signal_group, signal_process};
use crate::reconcile::ReplicaKey;
use crate::shim::read_exit_file;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

/// How often an adopted process (not this agent's child) is checked for its end.
pub const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// At most this many state records are read when a node starts.
pub const MAX_RECORDS_SCANNED: usize = 4096;
/// At most this many trash entries are removed by one [`NodeDirs::empty_trash`].
pub const MAX_TRASH_REMOVED: usize = 4096;

/// Makes the names of trashed files unique within this process (the process id makes
/// them unique across the agent's restarts).
static TRASHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How to start the shim: `program leading_args... --exit-file F --log-file L -- argv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimProgram {
    pub program: PathBuf,
    pub leading_args: Vec<OsString>,
}

impl ShimProgram {
    /// The running `corral` binary's `agent-shim` subcommand.
    pub fn current_exe() -> io::Result<ShimProgram> {
        Ok(ShimProgram {
            program: std::env::current_exe()?,
            leading_args: vec![OsString::from("agent-shim")],
        })
    }
}

/// The shipped [`Processes`]: each replica a child process under the shim, in its own
/// session, recorded in the node's work directory.
#[derive(Clone, Debug)]
pub struct ShimProcesses {
    shim: ShimProgram,
}

impl ShimProcesses {
    pub fn new(shim: ShimProgram) -> ShimProcesses {
        ShimProcesses { shim }
    }
}

impl Processes for ShimProcesses {
    fn spawn(&self, dirs: &NodeDirs, spec: &LaunchSpec, now_ms: u64) -> io::Result<ReplicaProcess> {
        ReplicaProcess::spawn(dirs, &self.shim, spec, now_ms)
    }

    fn adopt(&self, dirs: &NodeDirs, record: ReplicaRecord) -> Adoption {
        ReplicaProcess::adopt(dirs, record)
    }
}

/// The directories of one node.
#[derive(Clone, Debug)]
pub struct NodeDirs {
    root: PathBuf,
}

impl NodeDirs {
    pub fn new(root: impl Into<PathBuf>) -> NodeDirs {
        NodeDirs { root: root.into() }
    }

    /// Creates the node's directories.
    pub fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(self.state_dir())?;
        std::fs::create_dir_all(self.trash_dir())?;
        std::fs::create_dir_all(self.replicas_dir())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn replicas_dir(&self) -> PathBuf {
        self.root.join("replicas")
    }

    pub fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    pub fn record_path(&self, key: ReplicaKey) -> PathBuf {
        self.state_dir().join(format!("{}.json", file_stem(key)))
    }

    pub fn exit_path(&self, key: ReplicaKey) -> PathBuf {
        self.state_dir().join(format!("{}.exit", file_stem(key)))
    }

    pub fn replica_dir(&self, key: ReplicaKey) -> PathBuf {
        self.replicas_dir().join(file_stem(key))
    }

    pub fn log_path(&self, key: ReplicaKey) -> PathBuf {
        self.replica_dir(key).join(crate::logs::LOG_FILE_NAME)
    }

    /// Reads the replica records of the state directory (at most
    /// [`MAX_RECORDS_SCANNED`]); unreadable ones are removed with a warning.
    pub fn scan_records(&self) -> io::Result<Vec<ReplicaRecord>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.state_dir())?.take(MAX_RECORDS_SCANNED) {
            let path = entry?.path();
            if path.extension().and_then(|extension| extension.to_str()) != Some("json") {
                continue;
            }
            let record = read_small(&path).and_then(|bytes| {
                serde_json::from_slice::<ReplicaRecord>(&bytes)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
            });
            match record {
                Ok(record) if self.record_path(record.key()) == path => records.push(record),
                Ok(_) => {
                    warn!(
                        "{}: record does not match its name, removed",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
                Err(error) => {
                    warn!(
                        "{}: unreadable replica record, removed: {error}",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        records.sort_by_key(ReplicaRecord::key);
        Ok(records)
    }

    /// Writes (or replaces) a replica's record atomically (not durably: see
    /// [`replace_atomic`] for why a running process's record needs no fsync).
    pub fn write_record(&self, record: &ReplicaRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        replace_atomic(&self.record_path(record.key()), &bytes)
    }

    /// Removes the directories (logs, working files) of replicas not in `keep` and last
    /// modified before `modified_before`, beyond the `retained` most recently modified
    /// of those. Returns how many were removed. The time bound lets it run while the
    /// node starts replicas: a directory created after `keep` was taken is newer.
    pub fn prune_replica_dirs(
        &self,
        keep: &BTreeSet<ReplicaKey>,
        retained: usize,
        modified_before: SystemTime,
    ) -> usize {
        let Ok(entries) = std::fs::read_dir(self.replicas_dir()) else {
            return 0;
        };
        let mut finished: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .take(MAX_RECORDS_SCANNED)
            .filter_map(|entry| {
                let key = parse_file_stem(entry.file_name().to_str()?)?;
                if keep.contains(&key) {
                    return None;
                }
                let modified = entry.metadata().ok()?.modified().ok()?;
                (modified < modified_before).then(|| (modified, entry.path()))
            })
            .collect();
        if finished.len() <= retained {
            return 0;
        }
        finished.sort();
        let excess = finished.len() - retained;
        let mut removed = 0;
        for (_, path) in finished.into_iter().take(excess) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(error) => warn!("cannot remove {}: {error}", path.display()),
            }
        }
        removed
    }

    /// Moves a replica's record and exit file into the trash (its logs stay); true when
    /// something was moved, for [`NodeDirs::empty_trash`] to remove. A file that cannot
    /// be moved is removed at once.
    pub fn discard_record(&self, key: ReplicaKey) -> bool {
        let mut moved = false;
        for path in [self.record_path(key), self.exit_path(key)] {
            let Some(name) = path.file_name() else {
                continue;
            };
            let mut trashed_name = name.to_os_string();
            let unique = TRASHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            trashed_name.push(format!(".{}-{unique}", std::process::id()));
            match std::fs::rename(&path, self.trash_dir().join(trashed_name)) {
                Ok(()) => moved = true,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    debug!("cannot move {} to the trash: {error}", path.display());
                    if let Err(error) = std::fs::remove_file(&path) {
                        warn!("cannot remove {}: {error}", path.display());
                    }
                }
            }
        }
        moved
    }

    /// Removes what is in the trash, at most [`MAX_TRASH_REMOVED`] entries; returns how
    /// many were removed.
    pub fn empty_trash(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.trash_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten().take(MAX_TRASH_REMOVED) {
            let path = entry.path();
            let result = match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match result {
                Ok(()) => removed += 1,
                Err(error) => warn!("cannot remove {}: {error}", path.display()),
            }
        }
        removed
    }
}

fn file_stem(key: ReplicaKey) -> String {
    format!("{}-{}-{}", key.job, key.rank, key.generation)
}

/// Parses a replica directory or record name `<job>-<rank>-<generation>`.
pub fn parse_file_stem(stem: &str) -> Option<ReplicaKey> {
    let mut parts = stem.split('-');
    let key = ReplicaKey {
        job: parts.next()?.parse().ok()?,
        rank: parts.next()?.parse().ok()?,
        generation: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(key)
}

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
}

/// What to launch for one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    pub key: ReplicaKey,
    /// argv; the first element is the program.
    pub command: Vec<String>,
    /// Added to the agent's own environment (which loses `CORRAL_TOKEN`).
    pub environment: BTreeMap<String, String>,
    pub device_indices: Vec<u32>,
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
    /// Spawns the shim running `spec` in the replica's directory and writes its record.
    /// Must be called inside a Tokio runtime.
    pub fn spawn(
        dirs: &NodeDirs,
        shim: &ShimProgram,
        spec: &LaunchSpec,
        now_ms: u64,
    ) -> io::Result<ReplicaProcess> {
        let (program, _) = spec
            .command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        if program.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty program"));
        }
        let key = spec.key;
        let replica_dir = dirs.replica_dir(key);
        std::fs::create_dir_all(&replica_dir)?;
        let exit_file = dirs.exit_path(key);
        match std::fs::remove_file(&exit_file) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut command = tokio::process::Command::new(&shim.program);
        command
            .args(&shim.leading_args)
            .arg("--exit-file")
            .arg(&exit_file)
            .arg("--log-file")
            .arg(dirs.log_path(key))
            .arg("--")
            .args(&spec.command)
            .current_dir(&replica_dir)
            .env_remove("CORRAL_TOKEN")
            .envs(&spec.environment)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false);
        // Its own process group, so the agent signals the shim and the workload together
        // and a signal to the agent's group does not reach them. No `pre_exec` hook: the
        // standard library then starts the shim with posix_spawn (no copy of the agent's
        // page tables), which a busy node does hundreds of times a second. The shim
        // installs its signal handling first thing.
        command.process_group(0);
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the shim ended before its pid was known"))?;
        // A shim that already ended is a zombie until reaped, so its stat is readable.
        let start_ticks = read_stat(pid).map(|stat| stat.start_ticks).unwrap_or(0);
        let record = ReplicaRecord {
            job: key.job,
            rank: key.rank,
            generation: key.generation,
            shim_pid: pid,
            start_ticks,
            started_at_ms: now_ms,
            device_indices: spec.device_indices.clone(),
            terminate_reason: String::new(),
        };
        if let Err(error) = dirs.write_record(&record) {
            // Without a record it could not be adopted after a restart: do not run it.
            let _ = signal_group(pid, libc::SIGKILL);
            return Err(error);
        }
        Ok(ReplicaProcess::supervise(record, Some(child), exit_file))
    }

    /// Supervises a recorded replica again: running when its shim is alive with the
    /// recorded start time; otherwise ended, with the shim's exit code when it wrote one.
    /// Must be called inside a Tokio runtime.
    pub fn adopt(dirs: &NodeDirs, record: ReplicaRecord) -> Adoption {
        let exit_file = dirs.exit_path(record.key());
        if is_alive(record.shim_pid, record.start_ticks) {
            return Adoption::Running(ReplicaProcess::supervise(record, None, exit_file));
        }
        Adoption::Ended(match read_exit_file(&exit_file) {
            Some(exit_code) => ProcessExit {
                exit_code,
                recorded: true,
                killed: false,
            },
            None => ProcessExit {
                exit_code: 137,
                recorded: false,
                killed: false,
            },
        })
    }

    fn supervise(
        record: ReplicaRecord,
        child: Option<tokio::process::Child>,
        exit_file: PathBuf,
    ) -> ReplicaProcess {
        let (pid, start_ticks) = (record.shim_pid, record.start_ticks);
        let (process, supervision) = ReplicaProcess::with_supervision(record);
        tokio::spawn(monitor(pid, start_ticks, child, exit_file, supervision));
        process
    }

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

    pub fn key(&self) -> ReplicaKey {
        self.record.key()
    }

    /// The shim's pid (the process group and session of the replica).
    pub fn pid(&self) -> u32 {
        self.record.shim_pid
    }

    pub fn record(&self) -> &ReplicaRecord {
        &self.record
    }

    /// Asks the process to end: SIGTERM now, SIGKILL to its group after `grace`. A
    /// second call changes nothing.
    pub fn terminate(&self, grace: Duration) {
        if self.control.try_send(Control::Terminate(grace)).is_err() {
            debug!("{}: already terminating or ended", self.key());
        }
    }

    /// Ends the process at once (SIGKILL to its group), even when this handle is
    /// dropped right after.
    pub fn kill(&self) {
        if self.control.try_send(Control::Kill).is_err() {
            debug!(
                "{}: cannot ask for a kill (ended, or requests queued)",
                self.key()
            );
        }
    }

    /// Resolves when the process has ended.
    pub fn exit_watcher(&self) -> ExitWatcher {
        ExitWatcher {
            exit: self.exit.clone(),
        }
    }
}

/// Waits for a supervised process's end (clonable, usable after the
/// [`ReplicaProcess`] moved).
#[derive(Clone, Debug)]
pub struct ExitWatcher {
    exit: watch::Receiver<Option<ProcessExit>>,
}

impl ExitWatcher {
    /// The exit, or None when the supervision was abandoned first.
    pub async fn wait(&mut self) -> Option<ProcessExit> {
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

async fn monitor(
    pid: u32,
    start_ticks: u64,
    mut child: Option<tokio::process::Child>,
    exit_file: PathBuf,
    mut supervision: Supervision,
) {
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let mut poll = tokio::time::interval(ADOPTED_POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        let owned = child.is_some();
        tokio::select! {
            waited = async {
                match child.as_mut() {
                    Some(child) => child.wait().await,
                    None => std::future::pending().await,
                }
            }, if owned => match waited {
                Ok(status) => break Some(status),
                Err(error) => {
                    // Fall back to watching /proc.
                    warn!("waiting for pid {pid}: {error}");
                    child = None;
                }
            },
            _ = poll.tick(), if !owned => {
                if !is_alive(pid, start_ticks) {
                    break None;
                }
            }
            message = supervision.next_request() => match message {
                Some(Control::Terminate(grace)) => {
                    if kill_at.is_none() && !killed && is_alive(pid, start_ticks) {
                        if let Err(error) = signal_process(pid, libc::SIGTERM) {
                            debug!("SIGTERM to {pid}: {error}");
                        }
                        kill_at = Some(Instant::now() + grace);
                    }
                }
                Some(Control::Kill) => {
                    if !killed && is_alive(pid, start_ticks) {
                        if let Err(error) = signal_group(pid, libc::SIGKILL) {
                            debug!("SIGKILL to group {pid}: {error}");
                        }
                        killed = true;
                        kill_at = None;
                    }
                }
                // Abandoned: the process keeps running, to be adopted again.
                None => return,
            },
            _ = async {
                match kill_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if kill_at.is_some() => {
                kill_at = None;
                if is_alive(pid, start_ticks) {
                    if let Err(error) = signal_group(pid, libc::SIGKILL) {
                        debug!("SIGKILL to group {pid}: {error}");
                    }
                    killed = true;
                }
            }
        }
    };
    let outcome = match read_exit_file(&exit_file) {
        Some(exit_code) => ProcessExit {
            exit_code,
            recorded: true,
            killed,
        },
        None => ProcessExit {
            exit_code: match status {
                Some(status) if !killed => exit_code_of(status),
                _ => 137,
            },
            recorded: false,
            killed,
        },
    };
    supervision.exited(outcome);
}

/// What other parts of the agent (logs, heartbeats) see of a running replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningReplica {
    pub pid: u32,
    pub device_indices: Vec<u32>,
}

/// The running replicas of a node, published by its reconcile loop.
pub type RunningView = std::sync::Arc<std::sync::Mutex<BTreeMap<ReplicaKey, RunningReplica>>>;

/// The workload's environment: the job's, plus the `CORRAL_*` variables and the visible
/// accelerator devices (which override the job's own values of the same names).
pub fn workload_environment(
    assignment: &corral_wire::pb::ReplicaAssignment,
    node_name: &str,
) -> BTreeMap<String, String> {
    let mut environment = assignment.environment.clone();
    let devices = assignment
        .device_indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (name, value) in [
        ("CORRAL_JOB_ID", assignment.job.to_string()),
        ("CORRAL_RANK", assignment.rank.to_string()),
        ("CORRAL_WORLD_SIZE", assignment.world_size.to_string()),
        ("CORRAL_MASTER_ADDR", assignment.master_address.clone()),
        ("CORRAL_GENERATION", assignment.generation.to_string()),
        ("CORRAL_NODE_NAME", node_name.to_string()),
        (
            "CORRAL_STORAGE_ENDPOINTS",
            assignment.storage_endpoints.join(","),
        ),
    ] {
        environment.insert(name.to_string(), value);
    }
    match assignment.accelerator_kind.as_str() {
        "gpu" => {
            environment.insert("CUDA_VISIBLE_DEVICES".to_string(), devices);
        }
        "npu" => {
            environment.insert("ASCEND_VISIBLE_DEVICES".to_string(), devices);
        }
        _ => {}
    }
    environment
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::pb;

    #[test]
    fn file_stems_round_trip_and_reject_other_names() {
        let key = ReplicaKey {
            job: 12,
            rank: 3,
            generation: 7,
        };
        assert_eq!(parse_file_stem(&file_stem(key)), Some(key));
        assert_eq!(parse_file_stem("12-3"), None);
        assert_eq!(parse_file_stem("12-3-7-1"), None);
        assert_eq!(parse_file_stem("a-3-7"), None);
    }

    #[test]
    fn the_environment_names_the_replica_and_its_devices() {
        let assignment = pb::ReplicaAssignment {
            job: 5,
            rank: 1,
            generation: 2,
            world_size: 4,
            environment: [
                ("EPOCHS".to_string(), "3".to_string()),
                ("CORRAL_RANK".to_string(), "spoofed".to_string()),
            ]
            .into_iter()
            .collect(),
            device_indices: vec![0, 3],
            accelerator_kind: "gpu".into(),
            master_address: "10.0.0.1:29500".into(),
            storage_endpoints: vec!["s3-a:9000".into(), "s3-b:9000".into()],
            ..Default::default()
        };
        let environment = workload_environment(&assignment, "node-7");
        let get = |name: &str| environment.get(name).map(String::as_str);
        assert_eq!(get("EPOCHS"), Some("3"));
        assert_eq!(get("CORRAL_JOB_ID"), Some("5"));
        assert_eq!(get("CORRAL_RANK"), Some("1"));
        assert_eq!(get("CORRAL_WORLD_SIZE"), Some("4"));
        assert_eq!(get("CORRAL_MASTER_ADDR"), Some("10.0.0.1:29500"));
        assert_eq!(get("CORRAL_GENERATION"), Some("2"));
        assert_eq!(get("CORRAL_NODE_NAME"), Some("node-7"));
        assert_eq!(get("CORRAL_STORAGE_ENDPOINTS"), Some("s3-a:9000,s3-b:9000"));
        assert_eq!(get("CUDA_VISIBLE_DEVICES"), Some("0,3"));
        assert_eq!(get("ASCEND_VISIBLE_DEVICES"), None);
        let npu = workload_environment(
            &pb::ReplicaAssignment {
                accelerator_kind: "npu".into(),
                device_indices: vec![1],
                ..assignment
            },
            "n",
        );
        assert_eq!(
            npu.get("ASCEND_VISIBLE_DEVICES").map(String::as_str),
            Some("1")
        );
        assert_eq!(npu.get("CUDA_VISIBLE_DEVICES"), None);
    }

    fn key(job: u64) -> ReplicaKey {
        ReplicaKey {
            job,
            rank: 0,
            generation: 1,
        }
    }

    #[test]
    fn discarded_records_wait_in_the_trash_until_it_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        for job in [1, 2] {
            std::fs::write(dirs.record_path(key(job)), "{}").unwrap();
            std::fs::write(dirs.exit_path(key(job)), "0\n").unwrap();
        }
        std::fs::create_dir(dirs.trash_dir().join("left-by-a-crash")).unwrap();
        assert!(dirs.discard_record(key(1)));
        assert!(!dirs.discard_record(key(3)), "nothing to move");
        assert!(!dirs.record_path(key(1)).exists() && !dirs.exit_path(key(1)).exists());
        assert!(dirs.record_path(key(2)).exists(), "others stay");
        // The same key again (started anew, forgotten again): its new files are moved
        // too, under other names.
        std::fs::write(dirs.record_path(key(1)), "{}").unwrap();
        assert!(dirs.discard_record(key(1)));
        assert_eq!(std::fs::read_dir(dirs.trash_dir()).unwrap().count(), 4);
        assert_eq!(dirs.empty_trash(), 4);
        assert_eq!(std::fs::read_dir(dirs.trash_dir()).unwrap().count(), 0);
        assert!(dirs.record_path(key(2)).exists());
    }

    #[test]
    fn pruning_keeps_listed_recent_and_too_new_directories() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        for job in 1..=5 {
            std::fs::create_dir(dirs.replica_dir(key(job))).unwrap();
            // Distinct modification times, job 1 the oldest.
            std::thread::sleep(Duration::from_millis(20));
        }
        let cutoff = SystemTime::now();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::create_dir(dirs.replica_dir(key(6))).unwrap();
        std::fs::create_dir(dirs.replicas_dir().join("not-a-replica")).unwrap();
        let keep: BTreeSet<ReplicaKey> = [key(1)].into();
        // Candidates: 2, 3, 4, 5 (1 is kept, 6 is newer than the cutoff); the newest
        // one of them is retained.
        assert_eq!(dirs.prune_replica_dirs(&keep, 1, cutoff), 3);
        let left: BTreeSet<String> = std::fs::read_dir(dirs.replicas_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["1-0-1", "5-0-1", "6-0-1", "not-a-replica"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn unreadable_records_are_removed_on_scan() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        let record = ReplicaRecord {
            job: 1,
            rank: 0,
            generation: 1,
            shim_pid: 99,
            start_ticks: 5,
            started_at_ms: 10,
            device_indices: vec![2],
            terminate_reason: String::new(),
        };
        crate::files::write_atomic(
            &dirs.record_path(record.key()),
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let broken = dirs.state_dir().join("2-0-1.json");
        std::fs::write(&broken, "{").unwrap();
        assert_eq!(dirs.scan_records().unwrap(), vec![record]);
        assert!(!broken.exists());
    }
}
