//! The shipped [`Processes`]: each replica's workload runs under the shim (a child
//! process of this agent, in its own session), with its record in the node's work
//! directory (see [`crate::dirs`]) so a restarted agent adopts it; a monitor task
//! watches it until it ends and ends it when asked (SIGTERM, then SIGKILL to its
//! process group after a grace period).
//!
//! Signals: the agent sends SIGTERM to the shim, which forwards it once to its whole
//! process group (workload included) and keeps waiting; SIGKILL after the grace period
//! goes to the process group directly (the shim dies with it, so the agent records 137).

use crate::dirs::{file_stem, NodeDirs};
use crate::environment::Processes;
use crate::isolation::cgroups::ReplicaCgroup;
use crate::isolation::Sandbox;
use crate::process::{exit_code_of, is_alive, read_stat, signal_group, signal_process};
use crate::replica::{
    Adoption, Control, LaunchSpec, ProcessExit, ReplicaProcess, ReplicaRecord, Supervision,
};
use crate::shim::read_exit_file;
use std::ffi::OsString;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How often an adopted process (not this agent's child) is checked for its end.
pub(crate) const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(200);

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
/// session, recorded in the node's work directory, confined as `sandbox` says.
#[derive(Clone, Debug)]
pub(crate) struct ShimProcesses {
    shim: ShimProgram,
    sandbox: Sandbox,
}

impl ShimProcesses {
    pub(crate) fn new(shim: ShimProgram, sandbox: Sandbox) -> ShimProcesses {
        ShimProcesses { shim, sandbox }
    }
}

impl Processes for ShimProcesses {
    fn spawn(&self, dirs: &NodeDirs, spec: &LaunchSpec, now_ms: u64) -> io::Result<ReplicaProcess> {
        spawn(dirs, &self.shim, &self.sandbox, spec, now_ms)
    }

    fn adopt(&self, dirs: &NodeDirs, record: ReplicaRecord) -> Adoption {
        adopt(dirs, record)
    }

    fn isolation(&self) -> String {
        self.sandbox.describe()
    }

    fn port_is_free(&self, port: u16) -> bool {
        // Bound and released at once: free now (a workload may still race for it,
        // which its rendezvous then reports).
        std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).is_ok()
    }
}

/// `PATH` of a workload whose job sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Spawns the shim running `spec` in the replica's work directory, confined as
/// `sandbox` says, and writes its record. Must be called inside a Tokio runtime.
pub(crate) fn spawn(
    dirs: &NodeDirs,
    shim: &ShimProgram,
    sandbox: &Sandbox,
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
    let confinement = match sandbox {
        Sandbox::None => None,
        Sandbox::Full(full) => Some((full.clone(), full.confinement(spec)?)),
    };
    let replica_dir = dirs.replica_dir(key);
    let work_dir = dirs.work_dir(key);
    std::fs::create_dir_all(&work_dir)?;
    std::fs::set_permissions(&replica_dir, Permissions::from_mode(0o711))?;
    std::fs::set_permissions(&work_dir, Permissions::from_mode(0o700))?;
    let log_path = dirs.log_path(key);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)?;
    if let Some((_, confinement)) = &confinement {
        let owner = (Some(confinement.uid), Some(confinement.gid));
        std::os::unix::fs::chown(&work_dir, owner.0, owner.1)?;
        std::os::unix::fs::fchown(&log, owner.0, owner.1)?;
    }
    drop(log);
    write_hostfile(
        &work_dir,
        &spec.hosts,
        confinement.as_ref().map(|(_, c)| (c.uid, c.gid)),
    )?;
    let exit_file = dirs.exit_path(key);
    match std::fs::remove_file(&exit_file) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let cgroup = match &confinement {
        Some((full, confinement)) => Some(ReplicaCgroup::create(
            full.hierarchy(),
            &cgroup_node_name(&spec.node_name, dirs),
            &file_stem(key),
            &confinement.limits,
        )?),
        None => None,
    };
    let mut command = tokio::process::Command::new(&shim.program);
    command
        .args(&shim.leading_args)
        .arg("--exit-file")
        .arg(&exit_file)
        .arg("--log-file")
        .arg(&log_path);
    if let Some(cgroup) = &cgroup {
        for procs in cgroup.procs_files() {
            command.arg("--cgroup-procs").arg(procs);
        }
    }
    if let Some((_, confinement)) = &confinement {
        command
            .arg("--uid")
            .arg(confinement.uid.to_string())
            .arg("--gid")
            .arg(confinement.gid.to_string());
    }
    // A clean environment: only what the job and corral set, never the agent's own
    // (its token, its paths).
    command
        .arg("--")
        .args(&spec.command)
        .current_dir(&work_dir)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&spec.environment)
        .env("HOME", &work_dir)
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
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            if let Some(cgroup) = &cgroup {
                cgroup.remove();
            }
            return Err(error);
        }
    };
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
        cgroup: cgroup
            .as_ref()
            .map(|cgroup| cgroup.dirs().clone())
            .unwrap_or_default(),
        uid: confinement.as_ref().map(|(_, confinement)| confinement.uid),
        master_port: spec.master_port,
    };
    if let Err(error) = dirs.write_record(&record) {
        // Without a record it could not be adopted after a restart: do not run it.
        let _ = signal_group(pid, libc::SIGKILL);
        if let Some(cgroup) = &cgroup {
            cgroup.remove();
        }
        return Err(error);
    }
    Ok(supervise(record, Some(child), exit_file))
}

/// Supervises a recorded replica again: running when its shim is alive with the
/// recorded start time; otherwise ended, with the shim's exit code when it wrote one
/// (and its cgroup, with anything left in it, removed). Must be called inside a Tokio
/// runtime.
pub(crate) fn adopt(dirs: &NodeDirs, record: ReplicaRecord) -> Adoption {
    let exit_file = dirs.exit_path(record.key());
    if is_alive(record.shim_pid, record.start_ticks) {
        return Adoption::Running(supervise(record, None, exit_file));
    }
    let cgroup = cgroup_of(&record);
    let oom_killed = cgroup.as_ref().is_some_and(|cgroup| cgroup.oom_kills() > 0);
    if let Some(cgroup) = &cgroup {
        cgroup.remove();
    }
    Adoption::Ended(match read_exit_file(&exit_file) {
        Some(exit_code) => ProcessExit {
            exit_code,
            recorded: true,
            killed: false,
            oom_killed: oom_killed && exit_code != 0,
        },
        None => ProcessExit {
            exit_code: 137,
            recorded: false,
            killed: false,
            oom_killed,
        },
    })
}

/// The name of a node's cgroup directory: its name and a digest of its work directory,
/// so two agents on one machine (two clusters, or a test's) never share a replica's
/// cgroup, and a restarted agent finds its own again.
fn cgroup_node_name(node_name: &str, dirs: &NodeDirs) -> String {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: stable across builds and runs, unlike the standard library's hasher.
    let digest = dirs
        .root()
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{node_name}-{:08x}", digest as u32)
}

/// Writes the job's hostfile into the work directory, owned by the replica's user.
fn write_hostfile(
    work_dir: &std::path::Path,
    hosts: &[String],
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let path = work_dir.join("hostfile");
    let mut contents = hosts.join("\n");
    if !contents.is_empty() {
        contents.push('\n');
    }
    // The work directory is the workload's: never follow a link it may have left.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn cgroup_of(record: &ReplicaRecord) -> Option<ReplicaCgroup> {
    (!record.cgroup.is_empty()).then(|| ReplicaCgroup::from_dirs(record.cgroup.clone()))
}

fn supervise(
    record: ReplicaRecord,
    child: Option<tokio::process::Child>,
    exit_file: PathBuf,
) -> ReplicaProcess {
    let (pid, start_ticks) = (record.shim_pid, record.start_ticks);
    let cgroup = cgroup_of(&record);
    let (process, supervision) = ReplicaProcess::with_supervision(record);
    tokio::spawn(monitor(
        pid,
        start_ticks,
        child,
        cgroup,
        exit_file,
        supervision,
    ));
    process
}

/// Ends everything of the replica at once: its process group, and its cgroup, which
/// also holds what left the group.
fn kill_everything(pid: u32, cgroup: Option<&ReplicaCgroup>) {
    if let Err(error) = signal_group(pid, libc::SIGKILL) {
        debug!("SIGKILL to group {pid}: {error}");
    }
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
}

async fn monitor(
    pid: u32,
    start_ticks: u64,
    mut child: Option<tokio::process::Child>,
    cgroup: Option<ReplicaCgroup>,
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
                        kill_everything(pid, cgroup.as_ref());
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
                    kill_everything(pid, cgroup.as_ref());
                    killed = true;
                }
            }
        }
    };
    // The workload ended: whatever it left behind in its cgroup (a daemonized
    // grandchild) ends with it, before its end is reported.
    let oom_kills = match cgroup {
        Some(cgroup) => tokio::task::spawn_blocking(move || {
            let oom_kills = cgroup.oom_kills();
            cgroup.remove();
            oom_kills
        })
        .await
        .unwrap_or(0),
        None => 0,
    };
    let outcome = match read_exit_file(&exit_file) {
        Some(exit_code) => ProcessExit {
            exit_code,
            recorded: true,
            killed,
            oom_killed: oom_kills > 0 && exit_code != 0,
        },
        None => ProcessExit {
            exit_code: match status {
                Some(status) if !killed => exit_code_of(status),
                _ => 137,
            },
            recorded: false,
            killed,
            oom_killed: oom_kills > 0,
        },
    };
    supervision.exited(outcome);
}

#[cfg(test)]
mod tests {
    //! Replica processes for real: the shim (the crate's `corral-agent-shim` binary)
    //! runs `sh` workloads; spawning, environment, exit codes, SIGTERM forwarding,
    //! SIGKILL after the grace period, adoption after the supervising object is gone,
    //! and log rotation while the shim writes.

    use super::*;
    use crate::logs::{rotate_if_needed, rotated_path};
    use crate::reconcile::ReplicaKey;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Instant;

    /// The `corral-agent-shim` binary, next to the directory of this test executable
    /// (`target/<profile>/deps/`): `cargo test -p corral-agent` builds it for the crate's
    /// integration tests.
    fn shim() -> ShimProgram {
        let test_executable = std::env::current_exe().unwrap();
        let program = test_executable
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("corral-agent-shim");
        assert!(
            program.exists(),
            "{} is missing: run the tests with `cargo test -p corral-agent`, which builds it",
            program.display()
        );
        ShimProgram {
            program,
            leading_args: Vec::new(),
        }
    }

    fn key(job: u64) -> ReplicaKey {
        ReplicaKey {
            job,
            rank: 1,
            generation: 2,
        }
    }

    fn spec(job: u64, script: &str) -> LaunchSpec {
        let mut environment = BTreeMap::new();
        environment.insert("CORRAL_RANK".to_string(), "1".to_string());
        LaunchSpec {
            key: key(job),
            command: vec!["sh".into(), "-c".into(), script.into()],
            environment,
            device_indices: vec![0],
            node_name: "node".to_string(),
            tenant: 1,
            cpu_millicores: 0,
            memory_mib: 0,
            hosts: Vec::new(),
            master_port: None,
        }
    }

    fn node_dirs() -> (tempfile::TempDir, NodeDirs) {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path().join("node"));
        dirs.create().unwrap();
        (dir, dirs)
    }

    async fn wait(process: &ReplicaProcess) -> ProcessExit {
        tokio::time::timeout(Duration::from_secs(20), process.exit_watcher().wait())
            .await
            .expect("the process ends in time")
            .expect("supervised to the end")
    }

    /// Polls `condition` every 20 ms for at most 10 s.
    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops the handle and waits until its monitor has let go of the process (its
    /// supervision ends without an exit).
    async fn abandon(process: ReplicaProcess) {
        let mut watcher = process.exit_watcher();
        drop(process);
        let exit = tokio::time::timeout(Duration::from_secs(10), watcher.wait())
            .await
            .expect("the monitor lets go in time");
        assert_eq!(exit, None, "abandoned, not ended");
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_workload_runs_in_its_directory_with_its_environment_and_its_exit_code_is_kept() {
        let (_dir, dirs) = node_dirs();
        let process = spawn(
            &dirs,
            &shim(),
            &Sandbox::None,
            &spec(
                1,
                "echo rank=$CORRAL_RANK > seen; echo to stdout; echo to stderr >&2; exit 3",
            ),
            1_000,
        )
        .unwrap();
        let exit = wait(&process).await;
        assert_eq!(
            exit,
            ProcessExit {
                exit_code: 3,
                recorded: true,
                killed: false,
                oom_killed: false,
            }
        );
        let replica_dir = dirs.work_dir(key(1));
        assert_eq!(read(&replica_dir.join("seen")), "rank=1\n");
        let log = read(&dirs.log_path(key(1)));
        assert!(
            log.contains("to stdout") && log.contains("to stderr"),
            "{log:?}"
        );
        assert_eq!(read(&dirs.exit_path(key(1))), "3\n");
        let records = dirs.scan_records().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].shim_pid, process.pid());
        assert_eq!(records[0].started_at_ms, 1_000);
        assert_eq!(records[0].device_indices, vec![0]);
    }

    #[tokio::test]
    async fn workloads_get_no_agent_token_nor_blocked_signals_and_missing_programs_exit_127() {
        let (_dir, dirs) = node_dirs();
        std::env::set_var("CORRAL_TOKEN", "secret-should-not-leak");
        let process = spawn(
            &dirs,
            &shim(),
            &Sandbox::None,
            &spec(1, "echo \"token=[$CORRAL_TOKEN]\" > seen"),
            0,
        )
        .unwrap();
        assert_eq!(wait(&process).await.exit_code, 0);
        assert_eq!(read(&dirs.work_dir(key(1)).join("seen")), "token=[]\n");

        // Nothing blocked in the workload (the shim blocks what it waits for).
        let mask = LaunchSpec {
            command: vec!["grep".into(), "SigBlk".into(), "/proc/self/status".into()],
            ..spec(3, "")
        };
        let process = spawn(&dirs, &shim(), &Sandbox::None, &mask, 0).unwrap();
        assert_eq!(wait(&process).await.exit_code, 0);
        assert_eq!(
            read(&dirs.log_path(key(3))).trim(),
            "SigBlk:\t0000000000000000"
        );

        let missing = LaunchSpec {
            command: vec!["/nonexistent/program".into()],
            ..spec(2, "")
        };
        let process = spawn(&dirs, &shim(), &Sandbox::None, &missing, 0).unwrap();
        assert_eq!(wait(&process).await.exit_code, 127);
        assert!(read(&dirs.log_path(key(2))).contains("cannot start"));
    }

    #[tokio::test]
    async fn sigterm_reaches_the_workload_once_and_its_own_exit_code_is_recorded() {
        let (_dir, dirs) = node_dirs();
        let script = "trap 'echo term >> terms; exit 7' TERM; echo ready > ready; while true; do sleep 0.05; done";
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(1, script), 0).unwrap();
        let replica_dir = dirs.work_dir(key(1));
        until("the trap is installed", || {
            replica_dir.join("ready").exists()
        })
        .await;
        let started = Instant::now();
        process.terminate(Duration::from_secs(10));
        let exit = wait(&process).await;
        assert_eq!(
            exit,
            ProcessExit {
                exit_code: 7,
                recorded: true,
                killed: false,
                oom_killed: false,
            }
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(read(&replica_dir.join("terms")), "term\n", "one SIGTERM");
    }

    #[tokio::test]
    async fn a_workload_ignoring_sigterm_is_killed_with_its_group_after_the_grace_period() {
        let (_dir, dirs) = node_dirs();
        // The background child is in the same process group and must die too.
        let script = "trap '' TERM; (trap '' TERM; while true; do sleep 0.05; done) & echo $! > child; while true; do sleep 0.05; done";
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(1, script), 0).unwrap();
        let child_file = dirs.work_dir(key(1)).join("child");
        until("the background child runs", || {
            !read(&child_file).trim().is_empty()
        })
        .await;
        let child: u32 = read(&child_file).trim().parse().unwrap();
        let started = Instant::now();
        process.terminate(Duration::from_millis(400));
        let exit = wait(&process).await;
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(
            exit,
            ProcessExit {
                exit_code: 137,
                recorded: false,
                killed: true,
                oom_killed: false,
            }
        );
        until("the background child is gone", || {
            read_stat(child).is_none_or(|stat| stat.is_dead())
        })
        .await;
    }

    #[tokio::test]
    async fn a_process_outlives_its_dropped_supervisor_and_is_adopted_again() {
        let (_dir, dirs) = node_dirs();
        let script = "echo ready > ready; exec sleep 30";
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(1, script), 5).unwrap();
        let pid = process.pid();
        abandon(process).await;
        // The workload runs, so the shim has set up its signal handling.
        let ready = dirs.work_dir(key(1)).join("ready");
        until("the workload runs", || ready.exists()).await;
        let records = dirs.scan_records().unwrap();
        assert_eq!(records.len(), 1);
        assert!(is_alive(pid, records[0].start_ticks), "still running");
        let adopted = match adopt(&dirs, records[0].clone()) {
            Adoption::Running(process) => process,
            Adoption::Ended(exit) => panic!("ended: {exit:?}"),
        };
        assert_eq!(adopted.pid(), pid);
        assert_eq!(adopted.record().started_at_ms, 5);
        adopted.terminate(Duration::from_secs(10));
        let exit = wait(&adopted).await;
        // sleep dies of the forwarded SIGTERM: 128 + 15, written by the shim.
        assert_eq!(
            exit,
            ProcessExit {
                exit_code: 143,
                recorded: true,
                killed: false,
                oom_killed: false,
            }
        );
    }

    #[tokio::test]
    async fn an_adopted_process_that_ends_by_itself_is_noticed() {
        let (_dir, dirs) = node_dirs();
        let script = "while [ ! -f go ]; do sleep 0.05; done; exit 4";
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(1, script), 0).unwrap();
        drop(process);
        let record = dirs.scan_records().unwrap().remove(0);
        let adopted = match adopt(&dirs, record) {
            Adoption::Running(process) => process,
            Adoption::Ended(exit) => panic!("ended: {exit:?}"),
        };
        std::fs::write(dirs.work_dir(key(1)).join("go"), "").unwrap();
        assert_eq!(
            wait(&adopted).await,
            ProcessExit {
                exit_code: 4,
                recorded: true,
                killed: false,
                oom_killed: false,
            }
        );
    }

    #[tokio::test]
    async fn ended_records_give_the_recorded_code_or_137_when_the_shim_vanished() {
        let (_dir, dirs) = node_dirs();
        // Ended by itself while unsupervised: the exit file has its code.
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(1, "exit 9"), 0).unwrap();
        wait(&process).await;
        drop(process);
        // Killed with its shim (no exit file).
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(2, "exec sleep 30"), 0).unwrap();
        let pid = process.pid();
        abandon(process).await;
        signal_group(pid, libc::SIGKILL).unwrap();
        let records = dirs.scan_records().unwrap();
        until("the killed shim is gone", || {
            !is_alive(pid, records[1].start_ticks)
        })
        .await;
        let outcomes: Vec<ProcessExit> = records
            .into_iter()
            .map(|record| match adopt(&dirs, record) {
                Adoption::Ended(exit) => exit,
                Adoption::Running(process) => panic!("{} runs", process.key()),
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ProcessExit {
                    exit_code: 9,
                    recorded: true,
                    killed: false,
                    oom_killed: false,
                },
                ProcessExit {
                    exit_code: 137,
                    recorded: false,
                    killed: false,
                    oom_killed: false,
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_reused_pid_is_not_adopted() {
        let (_dir, dirs) = node_dirs();
        let own = std::process::id();
        let record = ReplicaRecord {
            job: 1,
            rank: 0,
            generation: 1,
            shim_pid: own,
            start_ticks: read_stat(own).unwrap().start_ticks + 1,
            started_at_ms: 0,
            device_indices: Vec::new(),
            terminate_reason: String::new(),
            cgroup: Default::default(),
            uid: None,
            master_port: None,
        };
        match adopt(&dirs, record) {
            Adoption::Ended(exit) => assert_eq!(exit.exit_code, 137),
            Adoption::Running(_) => panic!("adopted a process that merely has the same pid"),
        }
    }

    #[tokio::test]
    async fn the_log_rotates_while_the_shim_keeps_appending() {
        let (_dir, dirs) = node_dirs();
        let script =
            "i=0; while [ ! -f stop ]; do echo line $i; i=$((i+1)); sleep 0.01; done; echo last";
        let process = spawn(&dirs, &shim(), &Sandbox::None, &spec(1, script), 0).unwrap();
        let log = dirs.log_path(key(1));
        until("the log grows", || {
            std::fs::metadata(&log).is_ok_and(|metadata| metadata.len() > 200)
        })
        .await;
        assert!(rotate_if_needed(&log, 100, 2).unwrap());
        let rotated = read(&rotated_path(&log, 1));
        assert!(rotated.starts_with("line 0\n"), "{rotated:?}");
        std::fs::write(dirs.work_dir(key(1)).join("stop"), "").unwrap();
        assert_eq!(wait(&process).await.exit_code, 0);
        let current = read(&log);
        assert!(current.ends_with("last\n"), "{current:?}");
        assert!(
            !current.contains("line 0\n"),
            "the rotated part is gone: {current:?}"
        );
        assert!(
            !current.starts_with('\0'),
            "O_APPEND writes continue at the new end, no hole"
        );
    }
}
