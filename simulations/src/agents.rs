//! Simulated nodes running the real node agent: one turmoil host per agent runs
//! `corral_agent::Agent` (the node loop, reconciliation, report queue, manager link and
//! `AgentLogs` server of `corral agent`) over turmoil's network, in an
//! [`AgentEnvironment`] of a simulated machine:
//!
//! - **processes** ([`Machine`]): a replica whose command is `sim-run <ms> <exit code>`
//!   runs for that long in simulated time, then exits with that code; any other command
//!   runs until it is stopped. SIGTERM ends one `TERMINATION_DELAY` later with 143,
//!   SIGKILL at once with 137. The processes belong to the machine, not to the agent's
//!   host, so they outlive an agent crash as shim-supervised replicas do: the restarted
//!   agent adopts the ones still running from their records and reports the ones that
//!   ended meanwhile with their exit codes;
//! - **clock**: simulated time since the simulation's epoch (no skew);
//! - **measured use**: none (the heartbeats carry zero CPU and memory);
//! - **upgrade hook**: takes `UPGRADE_DURATION` of simulated time and succeeds;
//! - **blocking work**: inline on the calling task, as turmoil runs on one thread;
//! - **jitter**: seeded per node and agent incarnation.
//!
//! With `nodes_per_agent` > 1 one agent runs several nodes (`corral agent --simulate`),
//! on one machine: a rack, whose crash or loss takes all its nodes.
//!
//! The agent's files (replica records, installed drivers) live in a temporary directory
//! per agent (one subdirectory per node when it runs several), created with the simulation and removed with it; like a machine's disk it
//! outlives the agent's crashes.

use crate::managers::{manager_addresses, mix, simulated_now_ms, AGENT_TOKEN};
use crate::options::RunPlan;
use crate::recorder::Recorder;
use corral_agent::{
    Adoption, Agent, AgentConfig, AgentEnvironment, BlockingWork, Clock, Control, DriverVersions,
    HookRun, IsolationMode, Jitter, LaunchSpec, NodeDirs, ProcSnapshot, ProcessExit, Processes,
    ReplicaKey, ReplicaProcess, ReplicaRecord, Supervision, UpgradeHook, UsageSource,
};
use corral_server::TlsConfig;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NODE_FLAVOR: &str = "sim-gpu-4";
pub const NODE_ZONE: &str = "zone-a";
pub const DRIVER_VERSION: &str = "535.0";
/// Where each node's agent serves `AgentLogs`.
const AGENT_PORT: u16 = 7100;
/// The agent's heartbeat period until a manager names another.
const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Between SIGTERM and SIGKILL (simulated workloads end well within it).
const TERMINATION_GRACE_MS: u64 = 2_000;
/// How long a simulated workload takes to end after SIGTERM.
const TERMINATION_DELAY: Duration = Duration::from_millis(20);
/// How long the simulated driver-upgrade hook runs.
const UPGRADE_DURATION: Duration = Duration::from_millis(200);
/// The command of a workload that ends by itself: `sim-run <ms> <exit code>`.
const SIMULATED_RUN: &str = "sim-run";
/// The first pid a machine hands out.
const FIRST_PID: u32 = 1_000;
/// The exit code of a workload ended by SIGTERM (128 + 15), as the shim records it.
const TERMINATED_EXIT_CODE: i32 = 143;
/// The exit code of a killed or vanished workload (128 + 9).
const KILLED_EXIT_CODE: i32 = 137;

/// The turmoil host of agent `index` (1-based): `node-N` when every node has its own
/// agent, `rack-N` when an agent runs several nodes (named `rack-N-1` ...).
pub fn agent_host(index: u64, nodes_per_agent: u64) -> String {
    if nodes_per_agent == 1 {
        format!("node-{index}")
    } else {
        format!("rack-{index}")
    }
}

/// Adds agent `index` (1-based) of `plan`: its machine, its work directory, and a host
/// that runs a real agent for its nodes on them (again after each crash of the host).
pub fn add_agent(sim: &mut turmoil::Sim<'_>, index: u64, plan: &RunPlan, recorder: &Recorder) {
    let name = agent_host(index, plan.nodes_per_agent);
    let work_dir = match tempfile::Builder::new()
        .prefix(&format!("corral-simulation-{name}-"))
        .tempdir_in(scratch_directory())
    {
        Ok(directory) => Arc::new(directory),
        Err(error) => {
            recorder.violation(format!("{name}: cannot create a work directory: {error}"));
            return;
        }
    };
    // `corral agent --simulate N` runs N nodes; without it, the agent's own node.
    let simulate = (plan.nodes_per_agent > 1).then(|| plan.nodes_of_agent(index) as u32);
    let machine = Machine::new(name.clone(), recorder.clone());
    let incarnation = Arc::new(AtomicU64::new(0));
    let recorder = recorder.clone();
    let replicas = plan.replicas;
    sim.host(name.clone(), move || {
        let started = incarnation.fetch_add(1, Ordering::Relaxed);
        let config = agent_config(&name, replicas, work_dir.path());
        let environment = machine.environment(mix(index, 0xa9e7 + started));
        let (name, recorder) = (name.clone(), recorder.clone());
        async move {
            // Traced here, not in the closure: turmoil calls the closure from `bounce`,
            // outside the host's step, where `sim_elapsed` mixes in wall time.
            recorder.trace(format!("start agent of {name} incarnation {started}"));
            let agent = Agent::start_in(config, simulate, environment)
                .await
                .map_err(|error| format!("the agent of {name} failed to start: {error}"))?;
            // Runs until the simulation crashes this host (dropping every task).
            agent
                .run_until(std::future::pending())
                .await
                .map_err(|error| format!("the agent of {name} stopped: {error}"))?;
            Ok(())
        }
    });
}

/// Where the machines' disks go: `TMPDIR` if set, else memory (`/dev/shm`) where there
/// is one, as the agent rewrites its records on every change and a real disk's metadata
/// work showed in the simulation's profile; otherwise the system's temporary directory.
fn scratch_directory() -> std::path::PathBuf {
    let memory = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && memory.is_dir() {
        memory.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn agent_config(name: &str, replicas: u64, work_dir: &Path) -> AgentConfig {
    AgentConfig {
        managers: manager_addresses(replicas),
        bootstrap_token: Some(AGENT_TOKEN.into()),
        bootstrap_token_file: None,
        advertise_address: Some(format!("{name}:{AGENT_PORT}")),
        name: name.to_string(),
        flavor: NODE_FLAVOR.into(),
        zone: NODE_ZONE.into(),
        work_dir: work_dir.to_path_buf(),
        listen_address: format!("0.0.0.0:{AGENT_PORT}"),
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        termination_grace_ms: TERMINATION_GRACE_MS,
        log_max_bytes: 8 << 20,
        log_files_kept: 3,
        simulate_accelerators: true,
        accelerators: 4,
        upgrade_hook: Some(vec!["simulated-driver-upgrade".into()]),
        upgrade_timeout_ms: 60_000,
        // A failing hook runs twice, 500 ms apart, before the node gives up.
        upgrade_attempts: 2,
        upgrade_retry_backoff_ms: 500,
        labels: BTreeMap::new(),
        drivers: DriverVersions {
            gpu_driver_version: DRIVER_VERSION.into(),
            npu_driver_version: String::new(),
        },
        // Plaintext, as the managers: the simulation must replay exactly.
        tls: TlsConfig::insecure(),
        // Simulated processes: nothing to confine (the real agent's isolation is tested
        // on real processes, `crates/agent/tests/isolation.rs`).
        isolation: IsolationMode::None,
        tenant_uid_range: [200_000, 265_535],
        replica_pids_max: 4_096,
        master_port_range: [29_500, 30_499],
        accelerator_devices: Vec::new(),
    }
}

/// Simulated time since the simulation began.
fn simulated_elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// How and when a simulated process ends.
#[derive(Clone, Copy, Debug)]
struct End {
    /// Simulated time since the simulation began.
    at: Duration,
    exit: ProcessExit,
}

#[derive(Debug)]
struct SimulatedProcess {
    key: ReplicaKey,
    /// Against pid reuse, as the real record's start ticks (pids are never reused here).
    start_ticks: u64,
    /// None: runs until stopped.
    end: Option<End>,
}

impl SimulatedProcess {
    /// Its end, once it has come.
    fn ended(&self, now: Duration) -> Option<ProcessExit> {
        self.end.filter(|end| end.at <= now).map(|end| end.exit)
    }

    /// Ends it at `end` unless it ends earlier anyway.
    fn end_by(&mut self, end: End) {
        if self.end.is_none_or(|current| end.at < current.at) {
            self.end = Some(end);
        }
    }
}

#[derive(Debug, Default)]
struct MachineState {
    next_pid: u32,
    processes: BTreeMap<u32, SimulatedProcess>,
}

/// One node's simulated processes, shared by every incarnation of its agent. Whether a
/// process still runs is computed from simulated time when asked, so nothing needs to
/// run while the agent's host is down.
#[derive(Clone)]
pub struct Machine {
    name: String,
    state: Arc<Mutex<MachineState>>,
    recorder: Recorder,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "simulated machine {}", self.name)
    }
}

impl Machine {
    fn new(name: String, recorder: Recorder) -> Machine {
        let state = MachineState {
            next_pid: FIRST_PID,
            processes: BTreeMap::new(),
        };
        Machine {
            name,
            state: Arc::new(Mutex::new(state)),
            recorder,
        }
    }

    /// The environment of one incarnation of this node's agent.
    fn environment(&self, jitter_seed: u64) -> AgentEnvironment {
        AgentEnvironment {
            processes: Arc::new(self.clone()),
            clock: Arc::new(SimulatedClock),
            usage: Arc::new(NoUsage),
            upgrade_hook: Arc::new(SimulatedUpgradeHook {
                recorder: self.recorder.clone(),
                runs: Arc::default(),
            }),
            blocking: BlockingWork::Inline,
            jitter: Jitter::seeded(jitter_seed),
        }
    }

    fn with<T>(&self, work: impl FnOnce(&mut MachineState) -> T) -> T {
        // Nothing panics while holding it; a poisoned lock still holds valid processes.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut state)
    }

    /// Hands the process to a watcher task on the agent's host, and its handle to the
    /// agent.
    fn supervise(&self, record: ReplicaRecord) -> ReplicaProcess {
        let pid = record.shim_pid;
        let (process, supervision) = ReplicaProcess::with_supervision(record);
        tokio::spawn(watch(self.clone(), pid, supervision));
        process
    }

    /// Ends process `pid` at `end` (or earlier, if it ends earlier anyway).
    fn end_by(&self, pid: u32, end: End) {
        self.with(|state| {
            if let Some(process) = state.processes.get_mut(&pid) {
                process.end_by(end);
            }
        });
    }

    /// When `pid` ends: its end, or None when it runs until stopped or is unknown.
    fn end_of(&self, pid: u32) -> Option<End> {
        self.with(|state| state.processes.get(&pid).and_then(|process| process.end))
    }

    fn trace(&self, line: String) {
        self.recorder.trace(format!("{} {line}", self.name));
    }
}

/// When a workload's command makes it end by itself: `sim-run <ms> <exit code>`. Code
/// 137 stands for the kernel's OOM killer (a real replica's cgroup would count it).
fn natural_end(command: &[String], now: Duration) -> Option<End> {
    match command {
        [program, run_ms, exit_code] if program == SIMULATED_RUN => {
            let run_ms: u64 = run_ms.parse().unwrap_or(1_000);
            let exit_code: i32 = exit_code.parse().unwrap_or(0);
            Some(End {
                at: now + Duration::from_millis(run_ms),
                exit: ProcessExit {
                    exit_code,
                    recorded: true,
                    killed: false,
                    oom_killed: exit_code == 137,
                },
            })
        }
        _ => None,
    }
}

impl Processes for Machine {
    fn spawn(&self, dirs: &NodeDirs, spec: &LaunchSpec, now_ms: u64) -> io::Result<ReplicaProcess> {
        if spec.command.first().is_none_or(String::is_empty) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        }
        let now = simulated_elapsed();
        let pid = self.with(|state| {
            let pid = state.next_pid;
            state.next_pid += 1;
            pid
        });
        let record = ReplicaRecord {
            job: spec.key.job,
            rank: spec.key.rank,
            generation: spec.key.generation,
            shim_pid: pid,
            start_ticks: now.as_millis() as u64,
            started_at_ms: now_ms,
            device_indices: spec.device_indices.clone(),
            terminate_reason: String::new(),
            cgroup: Default::default(),
            uid: None,
            master_port: spec.master_port,
        };
        // As the real spawn: without a record it could not be adopted, so it must not run.
        dirs.write_record(&record)?;
        let process = SimulatedProcess {
            key: spec.key,
            start_ticks: record.start_ticks,
            end: natural_end(&spec.command, now),
        };
        self.with(|state| state.processes.insert(pid, process));
        self.trace(format!("spawned {} as pid {pid}", spec.key));
        Ok(self.supervise(record))
    }

    fn adopt(&self, _dirs: &NodeDirs, record: ReplicaRecord) -> Adoption {
        let pid = record.shim_pid;
        let found = self.with(|state| {
            state
                .processes
                .get(&pid)
                .filter(|process| {
                    process.start_ticks == record.start_ticks && process.key == record.key()
                })
                .map(|process| process.ended(simulated_elapsed()))
        });
        match found {
            Some(None) => {
                self.trace(format!("agent adopts running {} (pid {pid})", record.key()));
                Adoption::Running(self.supervise(record))
            }
            Some(Some(exit)) => {
                self.trace(format!(
                    "agent finds {} (pid {pid}) ended with {}",
                    record.key(),
                    exit.exit_code
                ));
                Adoption::Ended(exit)
            }
            None => {
                self.trace(format!("agent finds {} (pid {pid}) gone", record.key()));
                Adoption::Ended(ProcessExit {
                    exit_code: KILLED_EXIT_CODE,
                    recorded: false,
                    killed: false,
                    oom_killed: false,
                })
            }
        }
    }
}

/// Watches a simulated process for the agent: carries out its requests and reports
/// its end. Dies with the agent's host; the process does not.
async fn watch(machine: Machine, pid: u32, mut supervision: Supervision) {
    loop {
        let end = machine.end_of(pid);
        let until_end = async {
            match end {
                Some(end) => tokio::time::sleep(end.at.saturating_sub(simulated_elapsed())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
                   _ = until_end => {
                       let ended = machine.with(|state| {
                           state
                               .processes
                               .get(&pid)
                               .and_then(|process| process.ended(simulated_elapsed()).map(|exit| (process.key, exit)))
                       });
                       if let Some((key, exit)) = ended {
                           machine.trace(format!("{key} (pid {pid}) exited with {}", exit.exit_code));
                           supervision.exited(exit);
                           return;
                       }
                   }
                   request = supervision.next_request() => {
                       let now = simulated_elapsed();
                       match request {
                           Some(Control::Terminate(_grace)) => {
                               machine.trace(format!("SIGTERM to pid {pid}"));
                               machine.end_by(pid, End {
                                   at: now + TERMINATION_DELAY,
                                   exit: ProcessExit {
                                       exit_code: TERMINATED_EXIT_CODE,
                                       recorded: true,
                                       killed: false,
        oom_killed: false,
                                   },
                               });
                           }
                           Some(Control::Kill) => {
                               machine.trace(format!("SIGKILL to pid {pid}"));
                               machine.end_by(pid, End {
                                   at: now,
                                   exit: ProcessExit {
                                       exit_code: KILLED_EXIT_CODE,
                                       recorded: false,
                                       killed: true,
        oom_killed: false,
                                   },
                               });
                           }
                           // The agent let go of it (it stopped, or its host crashed).
                           None => return,
                       }
                   }
               }
    }
}

/// Simulated time since the simulation's epoch.
#[derive(Debug)]
struct SimulatedClock;

impl Clock for SimulatedClock {
    fn now_ms(&self) -> u64 {
        simulated_now_ms(0)
    }
}

/// Simulated workloads use no CPU or memory that the agent could measure.
#[derive(Debug)]
struct NoUsage;

impl UsageSource for NoUsage {
    fn snapshot(&self) -> BoxFuture<'_, Arc<ProcSnapshot>> {
        Box::pin(async {
            Arc::new(ProcSnapshot {
                taken_at: tokio::time::Instant::now(),
                sessions: HashMap::new(),
                accelerator_utilization_percent: None,
            })
        })
    }
}

/// The driver-upgrade hook of a simulated node: takes a while, always succeeds.
struct SimulatedUpgradeHook {
    recorder: Recorder,
    /// Runs so far per (node, target), to fail some only the first time.
    runs: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
}

/// How a simulated upgrade of `node` to `versions` goes, decided by a stable digest of
/// both (the same in every replay): one in eight targets is broken on a node (every
/// run fails: the final-failure path), one in eight fails its first run only (the
/// retry path), the rest succeed.
fn upgrade_fails(node: &str, versions: &DriverVersions, run: u32) -> bool {
    let digest = format!(
        "{node}/{}/{}",
        versions.gpu_driver_version, versions.npu_driver_version
    )
    .bytes()
    .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    match digest % 8 {
        0 => true,
        1 => run == 1,
        _ => false,
    }
}

impl std::fmt::Debug for SimulatedUpgradeHook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("simulated driver-upgrade hook")
    }
}

impl UpgradeHook for SimulatedUpgradeHook {
    fn run(&self, run: HookRun) -> BoxFuture<'static, Result<(), String>> {
        let recorder = self.recorder.clone();
        let run_number = {
            let mut runs = self
                .runs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = runs
                .entry(format!("{}/{:?}", run.node_name, run.versions))
                .or_insert(0);
            *count += 1;
            *count
        };
        Box::pin(async move {
            recorder.trace(format!(
                "{} upgrading drivers to {:?} (run {run_number})",
                run.node_name, run.versions
            ));
            tokio::time::sleep(UPGRADE_DURATION.min(run.timeout)).await;
            if upgrade_fails(&run.node_name, &run.versions, run_number) {
                return Err("simulated driver install failure".to_string());
            }
            Ok(())
        })
    }
}
