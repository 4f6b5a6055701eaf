//! One node's life: adopt the replicas recorded in its work directory, register with
//! the managers, then run its [`session`] — heartbeats (with usage) to the leader, the
//! `WatchAssignments` stream, the report sender — around a single event loop that owns
//! the node's replicas and carries out what [`crate::reconcile`] decides, enforces
//! `max_runtime_ms` (through reconcile), rotates logs and handles driver upgrades.
//!
//! All mutable state of a node lives in its event loop; the other tasks talk to it over
//! one bounded channel. Everything that touches the machine — processes, the clock,
//! measured use, the upgrade hook, blocking threads — comes through the node's
//! [`crate::environment::AgentEnvironment`].
//!
//! - [`context`]: what a node takes from the agent process;
//! - [`session`]: registration, heartbeats and the assignments stream;
//! - [`assignments`]: the bounds on an assignment and the latest desired state;
//! - [`replicas`]: adoption, exits, carrying out reconciliation, the running view;
//! - [`spawns`]: starting replicas off the loop, a few at a time;
//! - [`upgrades`]: driver upgrades.

mod assignments;
pub(crate) mod context;
mod replicas;
pub(crate) mod session;
mod spawns;
mod upgrades;

use crate::config::DriverVersions;
use crate::janitor::Janitor;
use crate::logs::{rotate_if_needed, NodeLogs};
use crate::managers::link::ManagerLink;
use crate::managers::reports::{deliver, report_queue, ReportQueue, MAX_PENDING_REPORTS};
use crate::reconcile::ReplicaKey;
use crate::replica::{ProcessExit, RunningView};
use crate::wire::pb;
use assignments::Assigned;
use context::NodeContext;
use replicas::{LocalReplica, LocalState};
use session::{FromManagers, Session};
use spawns::Spawns;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use upgrades::Upgrades;

/// Events waiting for a node's loop at most.
pub(crate) const EVENT_QUEUE: usize = 1024;
/// How often the loop re-reconciles (max runtime) and checks log sizes.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Finished replicas' directories (logs) kept per node.
pub(crate) const RETAINED_FINISHED_REPLICA_DIRS: usize = 64;
/// How often old replica directories are pruned.
const PRUNE_EVERY_TICKS: u64 = 240;
/// Directories modified this recently are never pruned: a replica whose spawn began
/// after the pruner's view of the node was taken is newer (file system timestamps are
/// coarser than the clock, hence a margin).
const PRUNE_MARGIN: Duration = Duration::from_secs(1);

/// What the node's loop is told.
enum Event {
    Assignments(pb::NodeAssignments),
    Exited(ReplicaKey, ProcessExit),
    /// The managers do not know the node id (e.g. their state was wiped): register again.
    NodeUnknown,
    UpgradeFinished(DriverVersions, Result<(), String>),
    /// A failed upgrade's pause is over: run the hook again if still wanted.
    UpgradeRetry(DriverVersions),
}

impl From<FromManagers> for Event {
    fn from(message: FromManagers) -> Event {
        match message {
            FromManagers::Assignments(assignments) => Event::Assignments(assignments),
            FromManagers::NodeUnknown => Event::NodeUnknown,
        }
    }
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

/// One node's state, owned by its event loop.
struct Node {
    ctx: NodeContext,
    reports: ReportQueue,
    events: mpsc::Sender<Event>,
    node_id: u64,
    replicas: BTreeMap<ReplicaKey, LocalReplica>,
    running: RunningView,
    assigned: Assigned,
    upgrades: Upgrades,
    spawns: Spawns,
    /// Removes files off the loop.
    janitor: Janitor,
    /// Something changed since the last reconciliation; see [`Node::settle`].
    reconcile_due: bool,
    /// The running replicas changed since the view was last published.
    running_changed: bool,
    ticks: u64,
}

/// Runs one node until `shutdown` turns true. Its replicas keep running afterwards.
pub(crate) async fn run_node(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
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
    let upgrades = Upgrades::load(ctx.dirs.root(), &ctx.config.drivers);
    let janitor = Janitor::start(ctx.dirs.clone(), ctx.environment.blocking);
    let mut node = Node {
        ctx,
        reports,
        events: events_sender,
        node_id: 0,
        replicas: BTreeMap::new(),
        running: Arc::new(Mutex::new(BTreeMap::new())),
        assigned: Assigned::default(),
        upgrades,
        spawns: Spawns::default(),
        janitor,
        reconcile_due: false,
        running_changed: false,
        ticks: 0,
    };
    node.adopt_recorded();
    loop {
        let Some((node_id, credential)) =
            session::register(&link, &node.ctx, node.upgrades.installed(), &mut shutdown).await
        else {
            break;
        };
        if node.node_id != 0 {
            warn!("{}: registered again, as node {node_id}", node.ctx.name);
        }
        // A new registration may face a new cluster, whose log starts again.
        node.assigned.applied_index = 0;
        info!("{}: registered as node {node_id}", node.ctx.name);
        node.node_id = node_id;
        node.ctx.registry.insert(
            node_id,
            NodeLogs {
                dirs: node.ctx.dirs.clone(),
                running: node.running.clone(),
                log_key: credential.log_key,
            },
        );
        let session = Session::start(
            &link,
            &node.ctx,
            node_id,
            node.running.clone(),
            &node.events,
        );
        let end = node.event_loop(&mut events, &mut shutdown).await;
        session.end();
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
                Some(spawned) = self.spawns.next_finished(), if !self.spawns.is_empty() => {
                    self.on_spawned(spawned);
                    // At most MAX_CONCURRENT_SPAWNS.
                    while let Some(spawned) = self.spawns.try_next_finished() {
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
            Event::UpgradeRetry(versions) => self.retry_upgrade(versions),
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
}
