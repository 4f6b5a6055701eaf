//! Leader-only loops: the scheduler, the metering tick, node liveness and driver
//! upgrades. A supervisor
//! watches raft metrics; the loops start only after this replica leads and has applied
//! every entry of earlier terms (a read-index barrier proves it), and are aborted the
//! moment it stops leading or its lease lapses.

use crate::config::LoopConfig;
use crate::leader::liveness::Liveness;
use crate::replication::proposer::Proposer;
use corral_model::ids::JobId;
use corral_model::limits::MAX_NODES_LOST_PER_ENTRY;
use corral_model::{
    Command, Event, EventRecord, JobState, NodeId, NodeStatus, Placement, PoolId, Principal,
};
use corral_scheduler::{any_could_fit, nodes_to_isolate, plan_all_pools, RoundOptions};
use corral_store::{Raft, StateMachineStore};
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::{ReadPolicy, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// After a round that placed nothing, the next one waits for an event but starts no
/// sooner than this after the last: a round reads the whole queue under the state
/// machine's read lock, and a burst of submits into a full pool would otherwise pay one
/// full scan per applied batch. A job that fits waits at most this much longer.
const IDLE_ROUND_MIN_GAP: Duration = Duration::from_millis(20);

/// After a round in which nothing fit any node, the scheduler interval is stretched
/// this many times: only freed capacity (an event) or a new job that fits can let a
/// round place something then, and both wake the scheduler at once.
const FULL_POOL_INTERVAL_FACTOR: u32 = 10;

/// A node not heard from for this many of its agent's heartbeat intervals gets no new
/// placements (well before its grace period ends and it is marked lost), so work
/// displaced from a dead rack or agent is not placed on its silent neighbours.
const SILENT_AFTER_HEARTBEATS: u32 = 3;

#[derive(Clone)]
pub(crate) struct LeaderLoops {
    pub(crate) raft: Raft,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) proposer: Proposer,
    pub(crate) liveness: Liveness,
    pub(crate) loops: LoopConfig,
    /// How long a leader may go without a quorum acknowledging it before it stops
    /// acting as leader (openraft's lease: the max election timeout).
    pub(crate) lease: Duration,
}

impl LeaderLoops {
    /// Runs until the raft instance shuts down.
    pub(crate) async fn supervise(self) {
        let mut metrics = self.raft.metrics();
        loop {
            let term = {
                let current = metrics.borrow_watched();
                (current.state == ServerState::Leader).then_some(current.current_term)
            };
            match term {
                Some(term) => self.lead(term).await,
                None => {
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Lead for one term: barrier, start the loops, watch for the end of leadership.
    async fn lead(&self, term: u64) {
        if let Err(error) = self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            debug!("leader barrier failed in term {term}: {error}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        info!("leading term {term}: starting leader loops");
        self.liveness.restart_grace();
        let tasks = [
            tokio::spawn(self.clone().scheduler_loop()),
            tokio::spawn(self.clone().metering_loop()),
            tokio::spawn(self.clone().liveness_loop()),
            tokio::spawn(self.clone().upgrade_loop()),
        ];
        self.wait_until_not_leading(term).await;
        abort_all(&tasks);
        info!("stopped leader loops of term {term}");
    }

    async fn wait_until_not_leading(&self, term: u64) {
        let mut metrics = self.raft.metrics();
        let check_every = (self.lease / 4).max(Duration::from_millis(10));
        loop {
            {
                let current = metrics.borrow_watched();
                let lease_lapsed = current
                    .last_quorum_acked
                    .as_ref()
                    .is_none_or(|acked| acked.elapsed() > self.lease);
                let single_voter = current.membership_config.membership().voter_ids().count() == 1;
                if current.state != ServerState::Leader
                    || current.current_term != term
                    || (lease_lapsed && !single_voter)
                {
                    return;
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(check_every) => {}
            }
        }
    }

    async fn scheduler_loop(self) {
        let mut events = self.state_machine.subscribe();
        let interval = Duration::from_millis(self.loops.scheduler_interval_ms);
        let mut refused = RefusedPlans::default();
        loop {
            let round_started = tokio::time::Instant::now();
            let unavailable_nodes = self.silent_nodes();
            let cluster_now_ms = self.proposer.cluster_now_ms();
            let plans = self.state_machine.read(|state| {
                let options = RoundOptions {
                    unavailable_nodes,
                    // The cluster's time now (`cluster_clock`); the plan's entry is
                    // stamped no earlier, so a job held back after a disruption is
                    // not proposed before the applier would take it.
                    now_ms: Some(cluster_now_ms),
                    ..RoundOptions::default()
                };
                plan_all_pools(state, &options)
            });
            let nothing_fits_anywhere = plans
                .iter()
                .all(|plan| plan.diagnostics.nothing_fits_any_node);
            let mut proposed_any = false;
            for mut plan in plans.into_iter().filter(|plan| !plan.is_empty()) {
                // Checked again at proposal time: a node that fell silent since the
                // round read the liveness view gets nothing new.
                let silent = self.silent_nodes();
                plan.placements
                    .retain(|placement| !places_on_any(placement, &silent));
                if plan.is_empty() || refused.holds(plan.pool, &plan.placements, interval) {
                    continue;
                }
                proposed_any = true;
                let (pool, placements) = (plan.pool, plan.placements.clone());
                match self
                    .proposer
                    .propose_here(Principal::System, plan.into_command())
                    .await
                {
                    Ok(outcome) => {
                        let took_effect = self.state_machine.read(|state| {
                            any_placement_applied_at(state, &placements, outcome.index)
                        });
                        if took_effect {
                            refused.forget(pool);
                        } else {
                            refused.remember(pool, placements);
                        }
                    }
                    Err(status) => {
                        warn!("scheduler plan not committed: {}", status.message());
                        tokio::time::sleep(interval).await;
                        break;
                    }
                }
            }
            if proposed_any {
                // Placing changes the state; plan again at once in case more fits.
                continue;
            }
            self.wait_for_a_reason_to_plan(&mut events, interval, nothing_fits_anywhere)
                .await;
            tokio::time::sleep_until(round_started + IDLE_ROUND_MIN_GAP).await;
        }
    }

    /// Nodes the leader has not heard from for `SILENT_AFTER_HEARTBEATS` heartbeat
    /// intervals (or the grace period, if shorter): no new placements go there.
    fn silent_nodes(&self) -> BTreeSet<NodeId> {
        let heartbeat = Duration::from_millis(self.loops.agent_heartbeat_interval_ms);
        let grace = Duration::from_millis(self.loops.node_grace_ms);
        let silence = (heartbeat * SILENT_AFTER_HEARTBEATS).min(grace);
        self.liveness
            .silent_longer_than(silence)
            .into_iter()
            .collect()
    }

    /// After a round that placed nothing: wait until a round might place something. That
    /// is any applied event, a lagging event stream, or the interval (time alone changes
    /// backfill and runtime limits); except that when the round found nothing fits any
    /// node, submissions wake it only if one of the new jobs could fit
    /// (`any_could_fit`), and time alone cannot make room, so the interval is stretched
    /// by `FULL_POOL_INTERVAL_FACTOR` (a safety net, not a need). Submissions into a full
    /// pool are the common case under load, and each round reads the whole queue, so
    /// skipping those rounds is what keeps the leader's CPU for the write path.
    async fn wait_for_a_reason_to_plan(
        &self,
        events: &mut broadcast::Receiver<Arc<Vec<EventRecord>>>,
        interval: Duration,
        nothing_fits_anywhere: bool,
    ) {
        let wait = if nothing_fits_anywhere {
            interval * FULL_POOL_INTERVAL_FACTOR
        } else {
            interval
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = tokio::select! {
                received = events.recv() => received,
                _ = tokio::time::sleep_until(deadline) => return,
            };
            let mut submitted = Vec::new();
            let Ok(batch) = received else { return };
            if !nothing_fits_anywhere || !collect_submissions(&batch, &mut submitted) {
                return;
            }
            // Take in whatever else was applied meanwhile, so a burst is checked once.
            loop {
                match events.try_recv() {
                    Ok(batch) => {
                        if !collect_submissions(&batch, &mut submitted) {
                            return;
                        }
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(_) => return,
                }
            }
            if self
                .state_machine
                .read(|state| any_could_fit(state, submitted.iter().copied()))
            {
                return;
            }
        }
    }

    async fn metering_loop(self) {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.loops.metering_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(status) = self
                .proposer
                .propose_here(Principal::System, Command::MeterTick)
                .await
            {
                warn!("meter tick not committed: {}", status.message());
            }
        }
    }

    /// Node liveness: nodes whose agents heartbeat are watched; every node silent past
    /// the grace period is proposed lost in one `NodesLost` entry per pass (split only
    /// past `MAX_NODES_LOST_PER_ENTRY`), so a dead rack or agent is marked lost at once
    /// and its displaced work re-queued together; a lost one heard from again is
    /// proposed recovered. Heartbeats stay in memory. A pass runs every heartbeat
    /// interval (at most every grace/4), so a loss is recorded within about grace plus
    /// one interval.
    async fn liveness_loop(self) {
        let grace = Duration::from_millis(self.loops.node_grace_ms);
        let heartbeat = Duration::from_millis(self.loops.agent_heartbeat_interval_ms);
        let mut ticker =
            tokio::time::interval((grace / 4).min(heartbeat).max(Duration::from_millis(50)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.propose_recoveries(grace).await;
            let silent = self.liveness.silent_longer_than(grace);
            if silent.is_empty() {
                continue;
            }
            let losable: Vec<NodeId> = self.state_machine.read(|state| {
                silent
                    .into_iter()
                    .filter(|node| {
                        state.node(*node).is_some_and(|node| {
                            matches!(node.status, NodeStatus::Available | NodeStatus::Checking)
                        })
                    })
                    .collect()
            });
            for nodes in losable.chunks(MAX_NODES_LOST_PER_ENTRY) {
                let command = Command::NodesLost {
                    nodes: nodes.to_vec(),
                };
                match self.proposer.propose_here(Principal::System, command).await {
                    Ok(outcome) => {
                        if let Err(rejection) = outcome.result {
                            debug!("NodesLost of {} nodes refused: {rejection}", nodes.len());
                        } else {
                            info!("marked {} silent nodes lost in one entry", nodes.len());
                        }
                        for node in nodes {
                            self.liveness.forget(*node);
                        }
                    }
                    Err(status) => warn!(
                        "NodesLost for {} nodes not committed: {}",
                        nodes.len(),
                        status.message()
                    ),
                }
            }
        }
    }
}

impl LeaderLoops {
    async fn propose_recoveries(&self, grace: Duration) {
        for node in self.liveness.heard_within(grace) {
            let abnormal = self.state_machine.read(|state| {
                state
                    .node(node)
                    .is_some_and(|node| node.status == NodeStatus::Abnormal)
            });
            if !abnormal {
                continue;
            }
            if let Err(status) = self
                .proposer
                .propose_here(Principal::System, Command::NodeRecovered { node })
                .await
            {
                warn!(
                    "NodeRecovered for {node} not committed: {}",
                    status.message()
                );
            }
        }
    }

    /// Driver upgrades: isolate the next nodes of every pool upgrading its drivers,
    /// within each pool's batch bound. The agents take it from there.
    async fn upgrade_loop(self) {
        let mut events = self.state_machine.subscribe();
        let interval = Duration::from_millis(self.loops.upgrade_interval_ms);
        loop {
            let nodes = self.state_machine.read(nodes_to_isolate);
            let proposed_any = !nodes.is_empty();
            for node in nodes {
                match self
                    .proposer
                    .propose_here(Principal::System, Command::NodeUpgradeBegin { node })
                    .await
                {
                    Ok(outcome) => {
                        if let Err(rejection) = outcome.result {
                            debug!("upgrade of {node} refused: {rejection}");
                        }
                    }
                    Err(status) => {
                        warn!(
                            "NodeUpgradeBegin for {node} not committed: {}",
                            status.message()
                        );
                    }
                }
            }
            if proposed_any {
                // At most one round of isolations per interval: a refused one (the state
                // moved on meanwhile) is not retried in a tight loop.
                tokio::time::sleep(interval).await;
                continue;
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Plans the state machine refused entirely, per pool. Proposing the same plan again
/// at once would be refused again and only grow the log, so it waits; but only for a
/// while (ten scheduler intervals), because the state may change in ways the planner
/// does not see as a different plan (e.g. a node that became fit again).
#[derive(Default)]
struct RefusedPlans {
    plans: BTreeMap<PoolId, (Vec<Placement>, tokio::time::Instant)>,
}

impl RefusedPlans {
    fn holds(&self, pool: PoolId, placements: &[Placement], interval: Duration) -> bool {
        self.plans.get(&pool).is_some_and(|(refused, at)| {
            refused.as_slice() == placements && at.elapsed() < interval * 10
        })
    }

    fn remember(&mut self, pool: PoolId, placements: Vec<Placement>) {
        self.plans
            .insert(pool, (placements, tokio::time::Instant::now()));
    }

    fn forget(&mut self, pool: PoolId) {
        self.plans.remove(&pool);
    }
}

/// Add the jobs of `batch`'s submissions to `submitted`; false when the batch holds any
/// other event.
fn collect_submissions(batch: &[EventRecord], submitted: &mut Vec<JobId>) -> bool {
    for record in batch {
        match record.event {
            Event::JobSubmitted { job, .. } => submitted.push(job),
            // A new job's first transition, part of its submission.
            Event::JobStateChanged {
                from: JobState::Creating,
                ..
            } => {}
            _ => return false,
        }
    }
    true
}

/// Whether the placement puts a replica on one of `nodes`.
fn places_on_any(placement: &Placement, nodes: &BTreeSet<NodeId>) -> bool {
    placement
        .assignments
        .iter()
        .any(|(_, node)| nodes.contains(node))
}

/// Whether the plan applied at `index` placed at least one of its replicas.
fn any_placement_applied_at(
    state: &corral_state::State,
    placements: &[Placement],
    index: u64,
) -> bool {
    placements.iter().any(|placement| {
        state.job(placement.job).is_some_and(|job| {
            placement.assignments.iter().any(|(rank, _)| {
                job.replicas
                    .get(*rank as usize)
                    .is_some_and(|replica| replica.placed_at_index == index)
            })
        })
    })
}

fn abort_all(tasks: &[JoinHandle<()>]) {
    for task in tasks {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_touching_a_silent_node_is_dropped_whole() {
        let silent: BTreeSet<NodeId> = [NodeId(3)].into_iter().collect();
        let gang = Placement {
            job: JobId(1),
            assignments: vec![(0, NodeId(2)), (1, NodeId(3))],
        };
        let elsewhere = Placement {
            job: JobId(2),
            assignments: vec![(0, NodeId(2)), (1, NodeId(4))],
        };
        assert!(places_on_any(&gang, &silent));
        assert!(!places_on_any(&elsewhere, &silent));
    }
}
