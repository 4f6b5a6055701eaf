//! One node's life: adopt the replicas recorded in its work directory, register with
//! the managers, then run its session — heartbeats (with usage) to the leader, the
//! `WatchAssignments` stream, the report sender — around a single event loop that owns
//! the node's replicas and carries out what [`crate::reconcile`] decides, enforces
//! `max_runtime_ms` (through reconcile), rotates logs and handles driver upgrades.
//!
//! All mutable state of a node lives in its event loop; the other tasks talk to it over
//! one bounded channel.
//!
//! Everything that touches the machine — processes, the clock, measured use, the
//! upgrade hook, blocking threads — comes through the node's [`AgentEnvironment`].
//!
//! Replica processes are spawned off the loop, on Tokio's blocking threads, at most
//! [`MAX_CONCURRENT_SPAWNS`] at a time: a spawn blocks for milliseconds of process
//! creation, and a busy node gets hundreds of assignments at once, which one after
//! another on the loop would hold up everything else it does (exits, reports, newer
//! assignments). A replica is *starting* from its spawn's beginning to its end; its
//! start is reported when the spawn finishes, or, if it was stopped meanwhile, it is
//! ended then. A stopping node waits for its spawns in flight, so every process it
//! started has its record for the next agent to adopt.

use crate::config::{AgentConfig, DriverVersions};
use crate::environment::{AgentEnvironment, HookRun};
use crate::janitor::Janitor;
use crate::logs::{rotate_if_needed, NodeLogs, NodeRegistry};
use crate::manager_link::{Failure, ManagerLink, ManagerPool, CALL_TIMEOUT};
use crate::reconcile::{reconcile, Action, Desired, ExitReason, Local, ReplicaKey};
use crate::reports::{deliver, report_queue, Report, ReportQueue, MAX_PENDING_REPORTS};
use crate::supervisor::{
    workload_environment, Adoption, LaunchSpec, NodeDirs, ProcessExit, ReplicaProcess,
    RunningReplica, RunningView,
};
use crate::upgrade::{self, UpgradeStep};
use crate::usage::{simulated_accelerator_utilization, UsageTracker};
use corral_wire::pb;
use corral_wire::pb::replica_report::Event as ReportEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::{self, JoinError, JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

/// Replicas (running or remembered as exited) one node holds at most.
pub const MAX_LOCAL_REPLICAS: usize = 1024;
/// Assignments of one `NodeAssignments` message looked at, at most.
pub const MAX_ASSIGNMENTS: usize = 1024;
/// Argument and environment bounds of one assignment (larger ones are refused).
pub const MAX_COMMAND_ARGS: usize = 1024;
pub const MAX_ENVIRONMENT_VARIABLES: usize = 1024;
pub const MAX_ASSIGNMENT_TEXT_BYTES: usize = 1 << 20;
/// Events waiting for a node's loop at most.
pub const EVENT_QUEUE: usize = 1024;
/// How often the loop re-reconciles (max runtime) and checks log sizes.
pub const TICK: Duration = Duration::from_millis(250);
/// Finished replicas' directories (logs) kept per node.
pub const RETAINED_FINISHED_REPLICA_DIRS: usize = 64;
/// How often old replica directories are pruned.
const PRUNE_EVERY_TICKS: u64 = 240;
/// Directories modified this recently are never pruned: a replica whose spawn began
/// after the pruner's view of the node was taken is newer (file system timestamps are
/// coarser than the clock, hence a margin).
const PRUNE_MARGIN: Duration = Duration::from_secs(1);
/// Pause before retrying a replica whose spawn failed.
const SPAWN_RETRY_MS: u64 = 5_000;
/// Replica processes being spawned at once per node. A spawn keeps a thread busy with
/// process creation, mostly in the kernel: a few at once keep the cores busy while the
/// loop goes on; more would only queue for the same cores.
pub const MAX_CONCURRENT_SPAWNS: usize = 4;
/// How long a stopping node waits for its spawns in flight (each takes milliseconds).
const SPAWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a node needs from the agent process.
#[derive(Clone, Debug)]
pub struct NodeContext {
    pub name: String,
    pub dirs: NodeDirs,
    pub config: Arc<AgentConfig>,
    /// Processes, clock, measured use, upgrade hook, blocking work, jitter.
    pub environment: AgentEnvironment,
    pub pool: Arc<ManagerPool>,
    /// Position among the process's nodes (spreads first managers and heartbeat phases).
    pub index: usize,
    pub node_count: usize,
    /// Where this agent serves `AgentLogs`.
    pub agent_address: String,
    pub registry: NodeRegistry,
}

enum Event {
    Assignments(pb::NodeAssignments),
    Exited(ReplicaKey, ProcessExit),
    /// The managers do not know the node id (e.g. their state was wiped): register again.
    NodeUnknown,
    UpgradeFinished(DriverVersions, Result<(), String>),
}

/// `first` and the events already queued behind it (at most [`EVENT_QUEUE`] more), in
/// order, except that of several assignment messages only the newest is kept: each is
/// the node's whole desired state, and a busy node gets many.
fn take_queued(first: Event, events: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    let mut taken = vec![first];
    while taken.len() <= EVENT_QUEUE {
        match events.try_recv() {
            Ok(event) => taken.push(event),
            Err(_) => break,
        }
    }
    let newest = taken
        .iter()
        .rposition(|event| matches!(event, Event::Assignments(_)));
    taken
        .into_iter()
        .enumerate()
        .filter(|(index, event)| !matches!(event, Event::Assignments(_)) || Some(*index) == newest)
        .map(|(_, event)| event)
        .collect()
}

enum SessionEnd {
    Shutdown,
    NodeUnknown,
}

enum LocalState {
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

struct LocalReplica {
    state: LocalState,
    pid: u32,
    started_reported: bool,
    started_at_ms: u64,
    device_indices: Vec<u32>,
}

struct Node {
    ctx: NodeContext,
    reports: ReportQueue,
    events: mpsc::Sender<Event>,
    node_id: u64,
    replicas: BTreeMap<ReplicaKey, LocalReplica>,
    running: RunningView,
    /// The latest assignments (None until the first message of this agent run).
    desired: Option<Vec<pb::ReplicaAssignment>>,
    last_applied_index: u64,
    status: String,
    installed: DriverVersions,
    upgrade_handled: Option<DriverVersions>,
    spawn_retry_at_ms: BTreeMap<ReplicaKey, u64>,
    /// Spawns in flight (at most [`MAX_CONCURRENT_SPAWNS`]), each of the replica
    /// `spawning` names for its task.
    spawns: JoinSet<io::Result<ReplicaProcess>>,
    spawning: BTreeMap<task::Id, ReplicaKey>,
    /// Removes files off the loop.
    janitor: Janitor,
    /// Something changed since the last reconciliation; see [`Node::settle`].
    reconcile_due: bool,
    /// The running replicas changed since the view was last published.
    running_changed: bool,
    ticks: u64,
}

/// Runs one node until `shutdown` turns true. Its replicas keep running afterwards.
pub async fn run_node(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    let (events_sender, mut events) = mpsc::channel(EVENT_QUEUE);
    let (reports, report_receiver) = report_queue(MAX_PENDING_REPORTS);
    let link = Arc::new(ManagerLink::new(
        ctx.pool.clone(),
        ctx.index,
        ctx.environment.jitter.clone(),
    ));
    let deliverer = tokio::spawn(deliver(
        report_receiver,
        link.clone(),
        Duration::from_secs(5),
    ));
    let installed = upgrade::load_installed(ctx.dirs.root(), &ctx.config.drivers);
    let janitor = Janitor::start(ctx.dirs.clone(), ctx.environment.blocking);
    let mut node = Node {
        ctx,
        reports,
        events: events_sender,
        node_id: 0,
        replicas: BTreeMap::new(),
        running: Arc::new(Mutex::new(BTreeMap::new())),
        desired: None,
        last_applied_index: 0,
        status: String::new(),
        installed,
        upgrade_handled: None,
        spawn_retry_at_ms: BTreeMap::new(),
        spawns: JoinSet::new(),
        spawning: BTreeMap::new(),
        janitor,
        reconcile_due: false,
        running_changed: false,
        ticks: 0,
    };
    node.adopt_recorded();
    loop {
        let Some(node_id) = register(&link, &node.ctx, &node.installed, &mut shutdown).await else {
            break;
        };
        if node.node_id != 0 {
            warn!("{}: registered again, as node {node_id}", node.ctx.name);
        }
        // A new registration may face a new cluster, whose log starts again.
        node.last_applied_index = 0;
        info!("{}: registered as node {node_id}", node.ctx.name);
        node.node_id = node_id;
        node.ctx.registry.insert(
            node_id,
            NodeLogs {
                dirs: node.ctx.dirs.clone(),
                running: node.running.clone(),
            },
        );
        let tasks: Vec<JoinHandle<()>> = vec![
            tokio::spawn(heartbeat_loop(
                link.clone(),
                node.ctx.clone(),
                node_id,
                node.running.clone(),
                node.events.clone(),
            )),
            tokio::spawn(watch_loop(link.clone(), node_id, node.events.clone())),
        ];
        let end = node.event_loop(&mut events, &mut shutdown).await;
        for task in tasks {
            task.abort();
        }
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::NodeUnknown => continue,
        }
    }
    node.abandon_spawns().await;
    // Undelivered reports are derived again after a restart (records, exit files,
    // assignments' `started`), so they may be dropped here.
    deliverer.abort();
    debug!("{}: stopped; its replicas keep running", node.ctx.name);
}

/// Registers the node (retrying forever with backoff); None on shutdown.
async fn register(
    link: &ManagerLink,
    ctx: &NodeContext,
    installed: &DriverVersions,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<u64> {
    let request = pb::RegisterAgentNodeRequest {
        name: ctx.name.clone(),
        flavor: ctx.config.flavor.clone(),
        zone: ctx.config.zone.clone(),
        labels: ctx.config.labels.clone().into_iter().collect(),
        gpu_driver_version: installed.gpu_driver_version.clone(),
        npu_driver_version: installed.npu_driver_version.clone(),
        agent_address: ctx.agent_address.clone(),
    };
    let mut backoff = link.backoff(Duration::from_millis(200), Duration::from_secs(5));
    let mut warned = false;
    loop {
        let attempt = link.call(|mut stub| {
            let request = request.clone();
            async move { stub.register_agent_node(request).await }
        });
        tokio::select! {
            result = attempt => match result {
                Ok(response) if response.node != 0 => return Some(response.node),
                Ok(_) => warn!("{}: registration answered node id 0; retrying", ctx.name),
                Err(status) if !warned => {
                    warned = true;
                    warn!("{}: cannot register yet ({status}); retrying", ctx.name);
                }
                Err(status) => debug!("{}: registration failed: {status}", ctx.name),
            },
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
}

async fn heartbeat_loop(
    link: Arc<ManagerLink>,
    ctx: NodeContext,
    node_id: u64,
    running: RunningView,
    events: mpsc::Sender<Event>,
) {
    let tracker = UsageTracker::default();
    let mut interval_ms = ctx.config.heartbeat_interval_ms;
    // Spread the virtual nodes of one process over the interval.
    let phase_ms = interval_ms * ctx.index as u64 / ctx.node_count.max(1) as u64;
    tokio::time::sleep(Duration::from_millis(phase_ms)).await;
    let mut failing = false;
    loop {
        let started = tokio::time::Instant::now();
        let replicas: Vec<(ReplicaKey, RunningReplica)> = running
            .lock()
            .map(|running| {
                running
                    .iter()
                    .map(|(key, replica)| (*key, replica.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let snapshot = ctx.environment.usage.snapshot().await;
        let pids: Vec<(ReplicaKey, u32)> = replicas
            .iter()
            .map(|(key, replica)| (*key, replica.pid))
            .collect();
        let uses = tracker.measure(&snapshot, &pids);
        let busy: Vec<u32> = replicas
            .iter()
            .flat_map(|(_, replica)| replica.device_indices.iter().copied())
            .collect();
        let request = pb::HeartbeatRequest {
            node: node_id,
            agent_address: ctx.agent_address.clone(),
            cpu_used_millicores: uses.iter().map(|used| used.cpu_millicores).sum(),
            memory_used_mib: uses.iter().map(|used| used.memory_mib).sum(),
            accelerator_utilization_percent: if ctx.config.simulate_accelerators {
                simulated_accelerator_utilization(&busy, ctx.config.accelerators)
            } else {
                0
            },
            replicas: uses
                .iter()
                .map(|used| pb::ReplicaUsage {
                    job: used.key.job,
                    rank: used.key.rank,
                    generation: used.key.generation,
                    pid: used.pid,
                    cpu_millicores: used.cpu_millicores,
                    memory_mib: used.memory_mib,
                })
                .collect(),
        };
        let result = link
            .call(|mut stub| {
                let request = request.clone();
                async move { stub.heartbeat(request).await }
            })
            .await;
        match result {
            Ok(response) => {
                if failing {
                    info!("{}: heartbeats reach {} again", ctx.name, link.current());
                    failing = false;
                }
                if response.heartbeat_interval_ms > 0 {
                    interval_ms = response.heartbeat_interval_ms.clamp(50, 60_000);
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                warn!(
                    "{}: the managers do not know node {node_id}: {status}",
                    ctx.name
                );
                let _ = events.send(Event::NodeUnknown).await;
                return;
            }
            Err(status) => {
                if !failing {
                    warn!("{}: heartbeat failed: {status}", ctx.name);
                    failing = true;
                } else {
                    debug!("{}: heartbeat failed: {status}", ctx.name);
                }
            }
        }
        tokio::time::sleep_until(started + Duration::from_millis(interval_ms)).await;
    }
}

/// Keeps a `WatchAssignments` stream open to the node's current manager, reopening it
/// (with backoff) when it fails or ends, and at once when the current manager changes.
async fn watch_loop(link: Arc<ManagerLink>, node_id: u64, events: mpsc::Sender<Event>) {
    let mut backoff = link.backoff(Duration::from_millis(100), Duration::from_secs(5));
    let mut current = link.subscribe();
    loop {
        let address = current.borrow_and_update().clone();
        let opened = match link.stub() {
            Ok(mut stub) => tokio::time::timeout(
                CALL_TIMEOUT,
                stub.watch_assignments(pb::WatchAssignmentsRequest { node: node_id }),
            )
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("opening the watch"))),
            Err(status) => Err(status),
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::NotFound {
                    let _ = events.send(Event::NodeUnknown).await;
                    return;
                }
                debug!("watching assignments at {address}: {status}");
                if let Failure::Redirect(_) = link.after_failure(&status) {
                    continue;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let switched = loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(assignments)) => {
                        backoff.reset();
                        if events.send(Event::Assignments(assignments)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        debug!("the assignments stream from {address} ended");
                        break false;
                    }
                    Err(status) => {
                        debug!("the assignments stream from {address} failed: {status}");
                        break matches!(link.after_failure(&status), Failure::Redirect(_));
                    }
                },
                changed = current.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *current.borrow() != address {
                        break true;
                    }
                }
            }
        };
        if !switched {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

impl Node {
    fn name(&self) -> &str {
        &self.ctx.name
    }

    /// The environment's wall clock.
    fn now_ms(&self) -> u64 {
        self.ctx.environment.clock.now_ms()
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.ctx.config.termination_grace_ms)
    }

    /// Supervises again every replica recorded in the work directory.
    fn adopt_recorded(&mut self) {
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
                    let reason = terminating.unwrap_or(if exit.recorded {
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
                },
            );
        }
        self.publish_running();
    }

    async fn event_loop(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Whatever is already waiting is handled as one batch, and settled once.
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return SessionEnd::Shutdown,
                event = events.recv() => {
                    let Some(event) = event else {
                        return SessionEnd::Shutdown;
                    };
                    for event in take_queued(event, events) {
                        if let Some(end) = self.on_event(event) {
                            return end;
                        }
                    }
                }
                Some(spawned) = self.spawns.join_next_with_id(), if !self.spawns.is_empty() => {
                    self.on_spawned(spawned);
                    // At most MAX_CONCURRENT_SPAWNS.
                    while let Some(spawned) = self.spawns.try_join_next_with_id() {
                        self.on_spawned(spawned);
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
            self.settle();
        }
    }

    fn on_event(&mut self, event: Event) -> Option<SessionEnd> {
        match event {
            Event::Assignments(assignments) => self.on_assignments(assignments),
            Event::Exited(key, exit) => self.on_exit(key, exit),
            Event::NodeUnknown => return Some(SessionEnd::NodeUnknown),
            Event::UpgradeFinished(versions, result) => self.on_upgrade_finished(versions, result),
        }
        None
    }

    /// After a batch of events: one reconciliation and one update of the running view,
    /// however many events the batch held. A busy node's replicas end by the hundred a
    /// second, and each reconciliation looks at all of the node's replicas.
    fn settle(&mut self) {
        if std::mem::take(&mut self.reconcile_due) {
            self.reconcile_now();
        }
        if std::mem::take(&mut self.running_changed) {
            self.publish_running();
        }
    }

    fn on_assignments(&mut self, message: pb::NodeAssignments) {
        if message.node != self.node_id {
            warn!(
                "{}: ignoring assignments for node {} (this is node {})",
                self.name(),
                message.node,
                self.node_id
            );
            return;
        }
        if message.applied_index < self.last_applied_index {
            debug!(
                "{}: ignoring assignments at index {} older than {}",
                self.name(),
                message.applied_index,
                self.last_applied_index
            );
            return;
        }
        self.last_applied_index = message.applied_index;
        if message.status != self.status {
            info!(
                "{}: the managers see this node as {}",
                self.name(),
                message.status
            );
            self.status = message.status.clone();
        }
        let mut seen = BTreeSet::new();
        let mut desired = Vec::new();
        for assignment in message.replicas.into_iter().take(MAX_ASSIGNMENTS) {
            if let Err(problem) = check_assignment(&assignment) {
                warn!(
                    "{}: ignoring assignment of job {} rank {}: {problem}",
                    self.name(),
                    assignment.job,
                    assignment.rank
                );
                continue;
            }
            if seen.insert(key_of(&assignment)) {
                desired.push(assignment);
            }
        }
        self.desired = Some(desired);
        self.consider_upgrade(message.upgrade.as_ref());
        self.reconcile_due = true;
    }

    fn on_exit(&mut self, key: ReplicaKey, exit: ProcessExit) {
        let name = self.ctx.name.clone();
        if let Some(replica) = self.replicas.get_mut(&key) {
            if let LocalState::Running { terminating, .. } = &replica.state {
                let reason = match terminating {
                    Some(reason) => *reason,
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

    fn on_tick(&mut self) {
        self.ticks += 1;
        // For max runtimes and spawn retries, which no event announces.
        self.reconcile_due = true;
        let config = &self.ctx.config;
        for (key, replica) in &self.replicas {
            if let LocalState::Running { .. } = replica.state {
                let log = self.ctx.dirs.log_path(*key);
                match rotate_if_needed(&log, config.log_max_bytes, config.log_files_kept) {
                    Ok(true) => debug!("{}: rotated {}", self.ctx.name, log.display()),
                    Ok(false) => {}
                    Err(error) => warn!("{}: rotating {}: {error}", self.ctx.name, log.display()),
                }
            }
        }
        if self.ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
            let keep: BTreeSet<ReplicaKey> = self.replicas.keys().copied().collect();
            // The system clock, not the environment's: it is compared with the file
            // system's modification times, which the file system stamps from it.
            let modified_before = SystemTime::now() - PRUNE_MARGIN;
            self.janitor
                .prune(keep, RETAINED_FINISHED_REPLICA_DIRS, modified_before);
        }
    }

    fn reconcile_now(&mut self) {
        let Some(desired) = &self.desired else {
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
        if !self.spawn_retry_at_ms.is_empty() {
            let listed: BTreeSet<ReplicaKey> = wanted.iter().map(|desired| desired.key).collect();
            self.spawn_retry_at_ms.retain(|key, _| listed.contains(key));
        }
        self.running_changed |= changed;
    }

    fn carry_out(&mut self, action: Action, wanted: &[Desired], now: u64) {
        match action {
            Action::Start(key) => self.start(key, now),
            Action::Terminate(key, reason) => self.terminate(key, reason, wanted),
            Action::ReportStarted(key) => {
                if let Some(replica) = self.replicas.get_mut(&key) {
                    replica.started_reported = true;
                    let pid = replica.pid;
                    self.push_report(key, ReportEvent::Started(pb::ReplicaStartedReport { pid }));
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
                let pid = replica.pid;
                if report_start {
                    self.push_report(key, ReportEvent::Started(pb::ReplicaStartedReport { pid }));
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

    /// Begins spawning a listed replica (on a blocking thread when the environment's
    /// processes block); it is Starting until
    /// [`Node::on_spawned`].
    fn start(&mut self, key: ReplicaKey, now: u64) {
        // First, as the cheapest: while every spawn slot is busy each reconcile asks
        // again for all the replicas still to start, and the reconcile after a spawn
        // finishes starts the next ones.
        if self.spawns.len() >= MAX_CONCURRENT_SPAWNS {
            return;
        }
        if self.replicas.len() >= MAX_LOCAL_REPLICAS {
            warn!(
                "{}: already holds {MAX_LOCAL_REPLICAS} replicas; not starting {key}",
                self.name()
            );
            return;
        }
        if self.spawn_retry_at_ms.get(&key).is_some_and(|&at| now < at) {
            return;
        }
        let Some(assignment) = self
            .desired
            .as_ref()
            .and_then(|desired| desired.iter().find(|assignment| key_of(assignment) == key))
        else {
            return;
        };
        let spec = LaunchSpec {
            key,
            command: assignment.command.clone(),
            environment: workload_environment(assignment, &self.ctx.name),
            device_indices: assignment.device_indices.clone(),
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
            .spawn_into(&mut self.spawns, move || {
                processes.spawn(&dirs, &spec, clock.now_ms())
            });
        self.spawning.insert(spawn, key);
        self.replicas.insert(
            key,
            LocalReplica {
                state: LocalState::Starting { terminating: None },
                pid: 0,
                started_reported: false,
                started_at_ms: now,
                device_indices,
            },
        );
    }

    /// A spawn finished: its replica runs — its start reported, or ended at once when it
    /// was stopped meanwhile — or, when the spawn failed, it is absent again and is
    /// retried after [`SPAWN_RETRY_MS`]. Either way a spawn slot is free.
    fn on_spawned(&mut self, spawned: Result<(task::Id, io::Result<ReplicaProcess>), JoinError>) {
        let (id, spawned) = match spawned {
            Ok((id, spawned)) => (id, spawned),
            // The spawn itself panicked: a failed spawn of its replica.
            Err(error) => (error.id(), Err(io::Error::other(error.to_string()))),
        };
        let Some(key) = self.spawning.remove(&id) else {
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
                self.spawn_retry_at_ms.insert(key, retry_at_ms);
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
                self.push_report(key, ReportEvent::Started(pb::ReplicaStartedReport { pid }));
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
        self.spawn_retry_at_ms.remove(&key);
    }

    /// Waits (at most [`SPAWN_DRAIN_TIMEOUT`]) for the spawns in flight and leaves their
    /// processes running unsupervised, like every replica of a stopping node: each has
    /// its record, so the next agent adopts it. Without the wait a spawn could finish
    /// after that agent read the records, and start its replica a second time.
    async fn abandon_spawns(&mut self) {
        let name = self.ctx.name.clone();
        let spawns = &mut self.spawns;
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
        self.spawning.clear();
    }

    fn watch_exit(&self, key: ReplicaKey, process: &ReplicaProcess) {
        let mut watcher = process.exit_watcher();
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Some(exit) = watcher.wait().await {
                let _ = events.send(Event::Exited(key, exit)).await;
            }
        });
    }

    fn push_report(&self, key: ReplicaKey, event: ReportEvent) {
        self.reports.push(Report::Replica(pb::ReplicaReport {
            node: self.node_id,
            job: key.job,
            rank: key.rank,
            generation: key.generation,
            event: Some(event),
        }));
    }

    fn publish_running(&self) {
        let running: BTreeMap<ReplicaKey, RunningReplica> = self
            .replicas
            .iter()
            .filter(|(_, replica)| matches!(replica.state, LocalState::Running { .. }))
            .map(|(key, replica)| {
                (
                    *key,
                    RunningReplica {
                        pid: replica.pid,
                        device_indices: replica.device_indices.clone(),
                    },
                )
            })
            .collect();
        if let Ok(mut view) = self.running.lock() {
            *view = running;
        }
    }

    fn consider_upgrade(&mut self, target: Option<&pb::DriverTarget>) {
        match upgrade::decide(target, &self.installed, self.upgrade_handled.as_ref()) {
            UpgradeStep::Nothing => {}
            UpgradeStep::Report(versions) => {
                self.upgrade_handled = Some(versions.clone());
                self.push_driver_report(&versions);
            }
            UpgradeStep::Install(versions) => {
                self.upgrade_handled = Some(versions.clone());
                let Some(hook) = self.ctx.config.upgrade_hook.clone() else {
                    info!(
                        "{}: no upgrade hook; recording drivers {versions:?}",
                        self.name()
                    );
                    self.on_upgrade_finished(versions, Ok(()));
                    return;
                };
                info!("{}: upgrading drivers to {versions:?}", self.name());
                let events = self.events.clone();
                let run = self.ctx.environment.upgrade_hook.run(HookRun {
                    hook,
                    versions: versions.clone(),
                    node_dir: self.ctx.dirs.root().to_path_buf(),
                    node_name: self.ctx.name.clone(),
                    timeout: Duration::from_millis(self.ctx.config.upgrade_timeout_ms),
                });
                tokio::spawn(async move {
                    let result = run.await;
                    let _ = events.send(Event::UpgradeFinished(versions, result)).await;
                });
            }
        }
    }

    fn on_upgrade_finished(&mut self, versions: DriverVersions, result: Result<(), String>) {
        if let Err(problem) = result {
            error!("{}: driver upgrade failed: {problem}", self.name());
            return;
        }
        if let Err(error) = upgrade::store_installed(self.ctx.dirs.root(), &versions) {
            error!(
                "{}: cannot record the driver versions: {error}",
                self.name()
            );
            return;
        }
        info!("{}: drivers now {versions:?}", self.name());
        self.installed = versions.clone();
        self.push_driver_report(&versions);
    }

    fn push_driver_report(&self, versions: &DriverVersions) {
        self.reports.push(Report::Driver(pb::DriverReport {
            node: self.node_id,
            gpu_driver_version: versions.gpu_driver_version.clone(),
            npu_driver_version: versions.npu_driver_version.clone(),
        }));
    }
}

/// Asks a process to end and writes why into its record, so that a restarted agent
/// finishes the job and reports the right reason.
fn end_process(dirs: &NodeDirs, process: &ReplicaProcess, reason: ExitReason, grace: Duration) {
    process.terminate(grace);
    let mut record = process.record().clone();
    record.terminate_reason = reason.as_str().to_string();
    if let Err(error) = dirs.write_record(&record) {
        warn!("cannot update the record of {}: {error}", process.key());
    }
}

fn key_of(assignment: &pb::ReplicaAssignment) -> ReplicaKey {
    ReplicaKey {
        job: assignment.job,
        rank: assignment.rank,
        generation: assignment.generation,
    }
}

fn parse_reason(reason: &str) -> Option<ExitReason> {
    match reason {
        "stopped" => Some(ExitReason::Stopped),
        "max_runtime" => Some(ExitReason::MaxRuntime),
        _ => None,
    }
}

/// Bounds on what the agent will run from one assignment.
fn check_assignment(assignment: &pb::ReplicaAssignment) -> Result<(), String> {
    if assignment.command.len() > MAX_COMMAND_ARGS {
        return Err(format!("more than {MAX_COMMAND_ARGS} arguments"));
    }
    if assignment.environment.len() > MAX_ENVIRONMENT_VARIABLES {
        return Err(format!("more than {MAX_ENVIRONMENT_VARIABLES} variables"));
    }
    let text_bytes: usize = assignment.command.iter().map(String::len).sum::<usize>()
        + assignment
            .environment
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    if text_bytes > MAX_ASSIGNMENT_TEXT_BYTES {
        return Err("command and environment exceed 1 MiB".to_string());
    }
    let bad_text = assignment
        .command
        .iter()
        .chain(assignment.environment.values())
        .any(|text| text.contains('\0'))
        || assignment
            .environment
            .keys()
            .any(|name| name.is_empty() || name.contains('=') || name.contains('\0'));
    if bad_text {
        return Err("NUL bytes or bad variable names".to_string());
    }
    if !assignment.stop && assignment.command.first().is_none_or(String::is_empty) {
        return Err("empty command".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_beyond_the_bounds_are_refused() {
        let fine = pb::ReplicaAssignment {
            command: vec!["sh".into(), "-c".into(), "true".into()],
            ..Default::default()
        };
        assert!(check_assignment(&fine).is_ok());
        assert!(check_assignment(&pb::ReplicaAssignment {
            command: vec![],
            ..fine.clone()
        })
        .is_err());
        assert!(check_assignment(&pb::ReplicaAssignment {
            command: vec!["a\0b".into()],
            ..fine.clone()
        })
        .is_err());
        let mut bad_env = fine.clone();
        bad_env.environment.insert("A=B".into(), "x".into());
        assert!(check_assignment(&bad_env).is_err());
        assert!(check_assignment(&pb::ReplicaAssignment {
            command: vec!["x".repeat(MAX_ASSIGNMENT_TEXT_BYTES + 1)],
            ..fine
        })
        .is_err());
    }

    #[test]
    fn only_termination_reasons_are_restored() {
        assert_eq!(parse_reason("stopped"), Some(ExitReason::Stopped));
        assert_eq!(parse_reason("max_runtime"), Some(ExitReason::MaxRuntime));
        assert_eq!(parse_reason(""), None);
        assert_eq!(parse_reason("lost"), None);
    }
}
