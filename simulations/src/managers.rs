//! The manager replicas as turmoil hosts: the real `corral_server::Manager` on the memory
//! engine, whose "disk" (`MemoryDisk`) the simulation keeps across a host's crash and
//! restart, with a per-host clock (simulated time plus this host's skew), seeded raft
//! randomness and seeded request ids, each derived from the run's seed and the host's
//! incarnation.
//!
//! Like the shipped server under its supervisor (`corral_server::run` exits), a replica
//! whose raft core died (a storage write failed: openraft's `running_state` turns to
//! `Fatal`, and `Manager::stopped` resolves) stops itself (fail-stop): the host notes
//! why on its `ManagerMachine` and the fault driver, its supervisor, takes the process
//! down and restarts it from its disk after a backoff.

use crate::options::RunPlan;
use crate::recorder::Recorder;
use corral_server::{
    AuthConfig, BlockingWork, Clock, ClusterConfig, Environment, LoopConfig, Manager, MemberConfig,
    RaftConfig, Randomness, ServerConfig, StorageConfig, TlsConfig,
};
use corral_store::{Engine, MemoryDisk, SeededRuntime};
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What outlives a manager host's crashes and the fault driver controls: the machine.
/// Its memory disk (with the disk's fault switch), the step its wall clock took (on top
/// of the configured skew), and why its replica stopped itself, if it did (taken by the
/// supervisor). Clones share it.
#[derive(Clone, Default)]
pub struct ManagerMachine {
    pub disk: MemoryDisk,
    clock_step_ms: Arc<AtomicI64>,
    exited: Arc<Mutex<Option<String>>>,
}

impl ManagerMachine {
    /// Step the wall clock to `step_ms` off its configured skew (0: back).
    pub fn set_clock_step_ms(&self, step_ms: i64) {
        self.clock_step_ms.store(step_ms, Ordering::Relaxed);
    }

    fn clock_step_ms(&self) -> i64 {
        self.clock_step_ms.load(Ordering::Relaxed)
    }

    fn exit(&self, reason: String) {
        *self
            .exited
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason);
    }

    /// Why the replica stopped itself since the last call, if it did.
    pub fn take_exit(&self) -> Option<String> {
        self.exited
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The raft handle of every replica's latest incarnation, so the fault driver can find
/// the leader. A crashed replica's entry is stale until it restarts; the driver knows
/// which replicas are down.
#[derive(Clone, Default)]
pub struct Rafts(Arc<Mutex<BTreeMap<u64, corral_store::Raft>>>);

impl Rafts {
    fn insert(&self, replica: u64, raft: corral_store::Raft) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(replica, raft);
    }

    /// The leader the replicas in `live` agree on under the highest term they know.
    pub fn leader(&self, live: impl Fn(u64) -> bool) -> Option<u64> {
        let rafts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rafts
            .iter()
            .filter(|(replica, _)| live(**replica))
            .map(|(_, raft)| {
                let metrics = raft.metrics().borrow_watched().clone();
                (metrics.current_term, metrics.current_leader)
            })
            .max()
            .and_then(|(_, leader)| leader)
    }
}

pub const MANAGER_PORT: u16 = 7000;
pub const ADMIN_TOKEN: &str = "sim-admin-token-0123456789";
pub const AGENT_TOKEN: &str = "sim-agent-token-0123456789";
const CLUSTER_SECRET: &str = "sim-cluster-secret-0123456789";
/// The simulated wall clock starts here (2026-01-01T00:00:00Z) on every host.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

pub fn manager_host(replica: u64) -> String {
    format!("manager-{replica}")
}

pub fn manager_address(replica: u64) -> String {
    format!("{}:{MANAGER_PORT}", manager_host(replica))
}

/// Every manager's client address, for clients and agents.
pub fn manager_addresses(replicas: u64) -> Vec<String> {
    (1..=replicas).map(manager_address).collect()
}

fn config(replica: u64, plan: &RunPlan) -> ServerConfig {
    ServerConfig {
        id: replica,
        listen: format!("0.0.0.0:{MANAGER_PORT}"),
        advertise: Some(manager_address(replica)),
        data_dir: format!("/simulated/{}", manager_host(replica)).into(),
        cluster: ClusterConfig {
            members: (1..=plan.replicas)
                .map(|id| MemberConfig {
                    id,
                    address: manager_address(id),
                })
                .collect(),
            secret: CLUSTER_SECRET.into(),
        },
        storage: StorageConfig {
            engine: Engine::Memory,
            // Small, so snapshots are built, purged and installed during a run.
            snapshot_every_entries: plan.snapshot_every_entries,
            logs_kept_after_snapshot: 20,
            // The memory engine has no file system to watch.
            min_free_disk_mib: 0,
        },
        auth: AuthConfig {
            admin_token: Some(ADMIN_TOKEN.into()),
            bootstrap_token: Some(AGENT_TOKEN.into()),
            agent_token: None,
        },
        raft: RaftConfig::default(),
        loops: LoopConfig {
            node_grace_ms: plan.node_grace_ms,
            ..LoopConfig::default()
        },
        limits: corral_server::LimitsConfig::default(),
        // Plaintext: rustls draws randomness outside the simulation's seed, and a run
        // must replay exactly.
        tls: TlsConfig::insecure(),
    }
}

/// SplitMix64: derive independent seeds from one.
pub fn mix(seed: u64, salt: u64) -> u64 {
    let mixed = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_133f_11eb);
    mixed ^ (mixed >> 31)
}

/// Simulated milliseconds since the Unix epoch on this host, `skew_ms` off.
pub fn simulated_now_ms(skew_ms: i64) -> u64 {
    let elapsed_ms = turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64);
    (EPOCH_MS + elapsed_ms).saturating_add_signed(skew_ms)
}

/// Add replica `replica` (1-based) to the simulation; its machine, for the fault driver.
pub fn add_manager(
    sim: &mut turmoil::Sim<'_>,
    replica: u64,
    plan: &RunPlan,
    recorder: &Recorder,
    rafts: &Rafts,
) -> ManagerMachine {
    let rafts = rafts.clone();
    let config = config(replica, plan);
    let machine = ManagerMachine::default();
    let host_machine = machine.clone();
    let disk = machine.disk.clone();
    // Another handle to the replica's log (clones share it), where the token check
    // reads back each entry the replica applies. Opening a fresh disk reads nothing.
    let log = corral_store::open_memory_storage(&disk)
        .expect("a fresh memory disk opens")
        .log;
    let incarnation = Arc::new(AtomicU64::new(0));
    let skew_ms = plan.clock_skew_ms(replica);
    let seed = mix(plan.seed, replica);
    let recorder = recorder.clone();
    sim.host(manager_host(replica), move || {
        let config = config.clone();
        let rafts = rafts.clone();
        let started = incarnation.fetch_add(1, Ordering::Relaxed);
        let host_seed = mix(seed, started);
        let start_recorder = recorder.clone();
        let machine = host_machine.clone();
        let clock_machine = host_machine.clone();
        let environment = Environment {
            clock: Clock::from_fn(move || {
                simulated_now_ms(skew_ms.saturating_add(clock_machine.clock_step_ms()))
            }),
            randomness: Randomness::seeded(mix(host_seed, 1)),
            memory_disk: Some(disk.clone()),
            entry_observer: Some(recorder.entry_observer(replica, log.clone())),
            blocking_work: BlockingWork::Inline,
        };
        SeededRuntime::scope(host_seed, async move {
            // Traced from inside the host's software: turmoil's clock for a restarted
            // host is only right once its new runtime is ticking (in this closure it
            // reads the wall clock, which made traces differ between runs).
            start_recorder.trace(format!("start manager-{replica} incarnation {started}"));
            let failures_before = machine.disk.faults().failures();
            let manager = match Manager::start_in(config, environment).await {
                Ok(manager) => manager,
                // A start that a storage fault failed is a fail-stop like any other.
                Err(error)
                    if machine.disk.faults().is_full()
                        || machine.disk.faults().failures() > failures_before =>
                {
                    let reason = format!("failed to start: {error}");
                    start_recorder.trace(format!("manager-{replica} stops itself: {reason}"));
                    machine.exit(reason);
                    std::future::pending::<()>().await;
                    return Ok(());
                }
                Err(error) => {
                    return Err(format!("manager-{replica} failed to start: {error}").into())
                }
            };
            rafts.insert(replica, manager.raft.clone());
            // Serve until the raft core dies (then stop, for the supervisor to restart
            // this replica) or the simulation crashes this host (dropping every task).
            let reason = manager.stopped().await;
            start_recorder.trace(format!(
                "manager-{replica} stops itself: its raft core stopped: {reason}"
            ));
            machine.exit(reason);
            std::future::pending::<()>().await;
            drop(manager);
            Ok(())
        })
    });
    machine
}
