//! Spawning a node's replicas off its loop, at most [`MAX_CONCURRENT_SPAWNS`] at a time:
//! a spawn blocks for milliseconds of process creation, and a busy node gets hundreds
//! of assignments at once, which one after another on the loop would hold up
//! everything else it does (exits, reports, newer assignments). A replica is
//! *starting* from its spawn's beginning to its end; its start is reported when the
//! spawn finishes, or, if it was stopped meanwhile, it is ended then. A failed spawn is
//! retried after [`SPAWN_RETRY_MS`]. A stopping node waits for its spawns in flight, so
//! every process it started has its record for the next agent to adopt.

use super::replicas::{end_process, LocalReplica, LocalState, MAX_LOCAL_REPLICAS};
use super::Node;
use crate::reconcile::{Desired, ReplicaKey};
use crate::replica::{LaunchSpec, ReplicaProcess};
use crate::wire::pb;
use crate::wire::pb::replica_report::Event as ReportEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::Duration;
use tokio::task::{self, JoinError, JoinSet};
use tracing::{debug, error, info, warn};

/// Pause before retrying a replica whose spawn failed.
const SPAWN_RETRY_MS: u64 = 5_000;
/// Replica processes being spawned at once per node. A spawn keeps a thread busy with
/// process creation, mostly in the kernel: a few at once keep the cores busy while the
/// loop goes on; more would only queue for the same cores.
pub(crate) const MAX_CONCURRENT_SPAWNS: usize = 4;
/// At most this many ports are probed for one rendezvous.
const MAX_PORT_PROBES: u64 = 64;
/// How long a stopping node waits for its spawns in flight (each takes milliseconds).
const SPAWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A finished spawn: its task and its process, or why there is none.
pub(super) type Spawned = Result<(task::Id, io::Result<ReplicaProcess>), JoinError>;

/// A node's spawns in flight and the pauses of the failed ones.
#[derive(Debug, Default)]
pub(super) struct Spawns {
    /// At most [`MAX_CONCURRENT_SPAWNS`], each of the replica `spawning` names for its
    /// task.
    tasks: JoinSet<io::Result<ReplicaProcess>>,
    spawning: BTreeMap<task::Id, ReplicaKey>,
    /// When a replica whose spawn failed may be spawned again.
    retry_at_ms: BTreeMap<ReplicaKey, u64>,
}

impl Spawns {
    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next spawn to finish (pending while none is in flight).
    pub(super) async fn next_finished(&mut self) -> Option<Spawned> {
        self.tasks.join_next_with_id().await
    }

    /// A spawn that has already finished, if any.
    pub(super) fn try_next_finished(&mut self) -> Option<Spawned> {
        self.tasks.try_join_next_with_id()
    }

    /// Forgets the retry pauses of replicas no longer `wanted`.
    pub(super) fn keep_retries_of(&mut self, wanted: &[Desired]) {
        if !self.retry_at_ms.is_empty() {
            let listed: BTreeSet<ReplicaKey> = wanted.iter().map(|desired| desired.key).collect();
            self.retry_at_ms.retain(|key, _| listed.contains(key));
        }
    }
}

impl Node {
    /// Begins spawning a listed replica (on a blocking thread when the environment's
    /// processes block); it is Starting until
    /// [`Node::on_spawned`].
    pub(super) fn start(&mut self, key: ReplicaKey, now: u64) {
        // First, as the cheapest: while every spawn slot is busy each reconcile asks
        // again for all the replicas still to start, and the reconcile after a spawn
        // finishes starts the next ones.
        if self.spawns.tasks.len() >= MAX_CONCURRENT_SPAWNS {
            return;
        }
        if self.replicas.len() >= MAX_LOCAL_REPLICAS {
            warn!(
                "{}: already holds {MAX_LOCAL_REPLICAS} replicas; not starting {key}",
                self.name()
            );
            return;
        }
        if self
            .spawns
            .retry_at_ms
            .get(&key)
            .is_some_and(|&at| now < at)
        {
            return;
        }
        let Some(assignment) = self.assigned.get(key) else {
            return;
        };
        // A gang's rendezvous: rank 0's agent picks a free port for it; the other ranks
        // start once the managers know it (rank 0 reported its start).
        let gang = assignment.world_size > 1;
        let master_port = if gang && assignment.rank == 0 {
            match self.allocate_master_port(key) {
                Some(port) => Some(port),
                None => {
                    warn!(
                        "{}: no free port in master_port_range for {key}; retrying",
                        self.name()
                    );
                    let retry_at_ms = now + SPAWN_RETRY_MS;
                    self.spawns.retry_at_ms.insert(key, retry_at_ms);
                    return;
                }
            }
        } else {
            None
        };
        if gang && assignment.rank > 0 && assignment.master_address.is_empty() {
            return;
        }
        let mut environment = workload_environment(assignment, &self.ctx.name);
        if let Some(port) = master_port {
            let host = &assignment.master_host;
            environment.insert("MASTER_ADDR".to_string(), host.clone());
            environment.insert("MASTER_PORT".to_string(), port.to_string());
            environment.insert("CORRAL_MASTER_ADDR".to_string(), format!("{host}:{port}"));
        }
        let spec = LaunchSpec {
            key,
            command: assignment.command.clone(),
            environment,
            device_indices: assignment.device_indices.clone(),
            node_name: self.ctx.name.clone(),
            tenant: assignment.tenant,
            cpu_millicores: assignment.cpu_millicores,
            memory_mib: assignment.memory_mib,
            hosts: assignment.hosts.clone(),
            master_port,
        };
        let device_indices = spec.device_indices.clone();
        let dirs = self.ctx.dirs.clone();
        let processes = self.ctx.environment.processes.clone();
        let clock = self.ctx.environment.clock.clone();
        // The start time is taken when the process is created, for `max_runtime_ms`.
        let spawn = self
            .ctx
            .environment
            .blocking
            .spawn_into(&mut self.spawns.tasks, move || {
                processes.spawn(&dirs, &spec, clock.now_ms())
            });
        self.spawns.spawning.insert(spawn, key);
        self.replicas.insert(
            key,
            LocalReplica {
                state: LocalState::Starting { terminating: None },
                pid: 0,
                started_reported: false,
                started_at_ms: now,
                device_indices,
                master_port,
            },
        );
    }

    /// A port of `master_port_range` that no replica of this node holds and the
    /// machine has free, probed from a point that depends on the replica (so gangs
    /// starting together on one node spread out); None when all probed are taken.
    fn allocate_master_port(&self, key: ReplicaKey) -> Option<u16> {
        let [first, last] = self.ctx.config.master_port_range;
        let span = u64::from(last - first) + 1;
        let held: BTreeSet<u16> = self
            .replicas
            .values()
            .filter_map(|replica| replica.master_port)
            .collect();
        let start = key.job.wrapping_mul(7_919).wrapping_add(key.generation) % span;
        (0..span.min(MAX_PORT_PROBES))
            .map(|offset| first + ((start + offset) % span) as u16)
            .find(|port| !held.contains(port) && self.ctx.environment.processes.port_is_free(*port))
    }

    /// A spawn finished: its replica runs — its start reported, or ended at once when it
    /// was stopped meanwhile — or, when the spawn failed, it is absent again and is
    /// retried after [`SPAWN_RETRY_MS`]. Either way a spawn slot is free.
    pub(super) fn on_spawned(&mut self, spawned: Spawned) {
        let (id, spawned) = match spawned {
            Ok((id, spawned)) => (id, spawned),
            // The spawn itself panicked: a failed spawn of its replica.
            Err(error) => (error.id(), Err(io::Error::other(error.to_string()))),
        };
        let Some(key) = self.spawns.spawning.remove(&id) else {
            return;
        };
        match spawned {
            Ok(process) => self.on_started(key, process),
            Err(error) => {
                error!(
                    "{}: cannot start {key}: {error}; retrying in {SPAWN_RETRY_MS} ms",
                    self.name()
                );
                self.replicas.remove(&key);
                let retry_at_ms = self.now_ms() + SPAWN_RETRY_MS;
                self.spawns.retry_at_ms.insert(key, retry_at_ms);
            }
        }
        // A spawn slot is free: the next reconciliation starts what waits.
        self.running_changed = true;
        self.reconcile_due = true;
    }

    fn on_started(&mut self, key: ReplicaKey, process: ReplicaProcess) {
        let pid = process.pid();
        let terminating = match self.replicas.get(&key).map(|replica| &replica.state) {
            Some(LocalState::Starting { terminating }) => *terminating,
            _ => {
                // Cannot happen (only a finished spawn ends Starting), but a process
                // nothing tracks must not run: a restarted agent would not know it.
                error!(
                    "{}: {key} started as pid {pid} but was not starting here; killing it",
                    self.name()
                );
                process.kill();
                return;
            }
        };
        match terminating {
            Some(reason) => {
                // Stopped while starting: ended now; its start is reported with its
                // exit if it is still listed then (as for an adopted replica).
                info!(
                    "{}: started {key} (pid {pid}); ending it at once",
                    self.name()
                );
                end_process(&self.ctx.dirs, &process, reason, self.grace());
            }
            None => {
                info!("{}: started {key} (pid {pid})", self.name());
                let master_port = self
                    .replicas
                    .get(&key)
                    .and_then(|replica| replica.master_port)
                    .map_or(0, u32::from);
                self.push_report(
                    key,
                    ReportEvent::Started(pb::ReplicaStartedReport { pid, master_port }),
                );
            }
        }
        self.watch_exit(key, &process);
        if let Some(replica) = self.replicas.get_mut(&key) {
            replica.pid = pid;
            replica.started_at_ms = process.record().started_at_ms;
            replica.started_reported = terminating.is_none();
            replica.state = LocalState::Running {
                process,
                terminating,
            };
        }
        self.spawns.retry_at_ms.remove(&key);
    }

    /// Waits (at most [`SPAWN_DRAIN_TIMEOUT`]) for the spawns in flight and leaves their
    /// processes running unsupervised, like every replica of a stopping node: each has
    /// its record, so the next agent adopts it. Without the wait a spawn could finish
    /// after that agent read the records, and start its replica a second time.
    pub(super) async fn abandon_spawns(&mut self) {
        let name = self.ctx.name.clone();
        let spawns = &mut self.spawns.tasks;
        let drained = tokio::time::timeout(SPAWN_DRAIN_TIMEOUT, async {
            while let Some(spawned) = spawns.join_next().await {
                if let Ok(Ok(process)) = spawned {
                    debug!(
                        "{name}: {} (pid {}) is left to the next agent",
                        process.key(),
                        process.pid()
                    );
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("{name}: spawns still unfinished after {SPAWN_DRAIN_TIMEOUT:?}");
        }
        self.spawns.spawning.clear();
    }
}

/// The workload's environment: the job's, plus the `CORRAL_*` variables, the names
/// PyTorch's launcher sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
/// `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`) and the visible accelerator devices, all
/// of which override the job's own values of the same names.
fn workload_environment(
    assignment: &pb::ReplicaAssignment,
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
        ("CORRAL_HOSTFILE", "hostfile".to_string()),
        ("RANK", assignment.rank.to_string()),
        ("WORLD_SIZE", assignment.world_size.to_string()),
        ("LOCAL_RANK", assignment.local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", assignment.local_world_size.to_string()),
        ("NODE_RANK", assignment.node_rank.to_string()),
    ] {
        environment.insert(name.to_string(), value);
    }
    if let Some((host, port)) = assignment.master_address.rsplit_once(':') {
        environment.insert("MASTER_ADDR".to_string(), host.to_string());
        environment.insert("MASTER_PORT".to_string(), port.to_string());
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
            local_rank: 1,
            local_world_size: 2,
            node_rank: 1,
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
        assert_eq!(get("RANK"), Some("1"));
        assert_eq!(get("WORLD_SIZE"), Some("4"));
        assert_eq!(get("LOCAL_RANK"), Some("1"));
        assert_eq!(get("LOCAL_WORLD_SIZE"), Some("2"));
        assert_eq!(get("NODE_RANK"), Some("1"));
        assert_eq!(get("MASTER_ADDR"), Some("10.0.0.1"));
        assert_eq!(get("MASTER_PORT"), Some("29500"));
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
}
