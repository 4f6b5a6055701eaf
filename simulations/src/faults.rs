//! The fault driver: between simulation steps it injects the run's faults at seeded
//! moments and heals each after a seeded while; at the end of the fault phase it heals
//! everything (liveness mode), so the checks can demand that work settles.
//!
//! It is also the managers' supervisor: a replica that stopped itself (its raft core
//! died on a failed storage write, `managers.rs`) is taken down and restarted from its
//! disk after a backoff (1, 2, 4, then 8 s while it keeps failing), as systemd's
//! `Restart=on-failure` would; a restart while its disk is still full fails again, a
//! few times a fault at most. A replica that stops itself with no storage fault on its
//! disk is a violation.

use crate::agents::agent_host;
use crate::managers::{manager_host, mix, ManagerMachine, Rafts};
use crate::options::{Fault, RunPlan};
use crate::recorder::Recorder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A clock step: an hour, as an NTP step after a bad time source.
const CLOCK_STEP_MS: i64 = 3_600_000;
/// The supervisor's first restart delay, doubled per consecutive fail-stop up to
/// `RESTART_DELAY_MAX_MS`.
const RESTART_DELAY_MS: u64 = 1_000;
const RESTART_DELAY_MAX_MS: u64 = 8_000;
/// A leader that can send but not receive must have been replaced within this long
/// (CheckQuorum: it steps down within an election timeout or two, and the others elect
/// a leader the quorum can reach), in runs where nothing else can stand in the way.
pub const INBOUND_FAILOVER_BOUND: Duration = Duration::from_secs(2);
/// Faults that can keep the managers from electing a leader on their own (or make the
/// driver's view of the leader stale); with any of them on, the failover bound above is
/// not judged.
const FAULTS_IN_THE_WAY_OF_A_FAILOVER: [Fault; 12] = [
    Fault::Partition,
    Fault::OneWayPartition,
    Fault::LeaderIsolation,
    Fault::MessageDelay,
    Fault::MessageLoss,
    Fault::ReplicaCrash,
    Fault::LeaderChurn,
    Fault::MembershipChange,
    Fault::DiskFull,
    Fault::FailedFsync,
    Fault::ClockStep,
    Fault::Pause,
];

/// How a fault is undone.
#[derive(Clone, Debug)]
enum Healing {
    Repair(String, String),
    RepairOneWay(String, String),
    Release(String, String),
    RestartManager(u64),
    RestartAgent(u64),
    /// Free a full disk, or disarm a failed fsync that has not fired.
    FreeDisk(u64),
    /// Set a stepped clock right.
    ClockBack(u64),
    /// Let every host reach the leader again.
    RepairInbound(String),
    /// Resume a paused manager.
    Resume(u64),
}

pub struct FaultDriver {
    plan: RunPlan,
    random: StdRng,
    rafts: Rafts,
    machines: BTreeMap<u64, ManagerMachine>,
    /// Every client host of the run, for faults on all of a manager's links.
    client_hosts: Vec<String>,
    recorder: Recorder,
    next_fault_at: Duration,
    pending: Vec<(Duration, Healing)>,
    managers_down: BTreeSet<u64>,
    agents_down: BTreeSet<u64>,
    /// Managers with a disk fault, a stepped clock or paused: like the ones down, they
    /// may not lead or may stop, so a majority is kept clear of all of them.
    disk_faulty: BTreeSet<u64>,
    clock_stepped: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    /// Per manager: its disk's failure count the supervisor has seen, and how many
    /// times in a row it stopped itself (for the backoff).
    disk_failures_seen: BTreeMap<u64, u64>,
    fail_stops_in_a_row: BTreeMap<u64, u32>,
    /// The leader whose inbound links are cut, since when, if it is not replaced yet
    /// and the failover bound is judged in this run.
    inbound_cut: Option<(u64, Duration)>,
    /// Managers whose inbound links are cut now. A failover is judged only while the cut
    /// leader is the only one: with two of three cut, no candidate hears its votes.
    inbound_cut_hosts: BTreeSet<String>,
    judge_failover: bool,
    /// The faults chosen at random moments (the rest are set up once, see `run`).
    episodic: Vec<Fault>,
    pub healed: bool,
}

fn pairs_between(left: &[u64], right: &[u64]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for a in left {
        for b in right {
            pairs.push((manager_host(*a), manager_host(*b)));
        }
    }
    pairs
}

impl FaultDriver {
    pub fn new(
        plan: &RunPlan,
        rafts: Rafts,
        machines: BTreeMap<u64, ManagerMachine>,
        client_hosts: Vec<String>,
        recorder: Recorder,
    ) -> FaultDriver {
        let episodic = plan
            .faults
            .iter()
            .copied()
            .filter(|fault| {
                matches!(
                    fault,
                    Fault::Partition
                        | Fault::OneWayPartition
                        | Fault::LeaderIsolation
                        | Fault::MessageDelay
                        | Fault::ReplicaCrash
                        | Fault::AgentCrash
                        | Fault::NodeLoss
                        | Fault::LeaderChurn
                        | Fault::DiskFull
                        | Fault::FailedFsync
                        | Fault::ClockStep
                        | Fault::LeaderInboundPartition
                        | Fault::Pause
                )
            })
            .collect();
        FaultDriver {
            plan: plan.clone(),
            random: StdRng::seed_from_u64(mix(plan.seed, 0xfa17)),
            rafts,
            machines,
            client_hosts,
            recorder,
            // Let the cluster form and the world be set up first.
            next_fault_at: Duration::from_secs(8),
            pending: Vec::new(),
            managers_down: BTreeSet::new(),
            agents_down: BTreeSet::new(),
            disk_faulty: BTreeSet::new(),
            clock_stepped: BTreeSet::new(),
            paused: BTreeSet::new(),
            disk_failures_seen: BTreeMap::new(),
            fail_stops_in_a_row: BTreeMap::new(),
            inbound_cut: None,
            inbound_cut_hosts: BTreeSet::new(),
            judge_failover: !FAULTS_IN_THE_WAY_OF_A_FAILOVER
                .iter()
                .any(|fault| plan.has(*fault)),
            episodic,
            healed: false,
        }
    }

    fn fault_end(&self) -> Duration {
        Duration::from_secs(8 + self.plan.fault_seconds)
    }

    /// Run before every step.
    pub fn tick(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        self.supervise(sim, now);
        self.judge_failover(now);
        self.heal_due(sim, now);
        if now >= self.fault_end() {
            if !self.healed {
                self.heal_all(sim);
            }
            return;
        }
        if now >= self.next_fault_at && !self.episodic.is_empty() {
            let fault = self.episodic[self.random.random_range(0..self.episodic.len())];
            self.inject(sim, now, fault);
            self.next_fault_at = now + Duration::from_millis(self.random.random_range(500..2_500));
        }
    }

    fn heal_due(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(at, _)| *at <= now);
        self.pending = later;
        for (_, healing) in due {
            self.heal(sim, healing);
        }
    }

    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        let pending: Vec<Healing> = self.pending.drain(..).map(|(_, healing)| healing).collect();
        for healing in pending {
            self.heal(sim, healing);
        }
        sim.set_fail_rate(0.0);
        // A link that message loss broke heals only by chance, per message sent on it
        // (turmoil's repair rate); with little traffic it could stay broken for the
        // whole settle phase, and an agent whose link to the leader stayed down looked
        // like a liveness bug (default-size seed 16, once writes were grouped).
        let hosts = self.all_hosts();
        for (position, a) in hosts.iter().enumerate() {
            for b in &hosts[position + 1..] {
                sim.repair(a.as_str(), b.as_str());
            }
        }
        // The supervisor restarts at once whatever it was still waiting to restart.
        self.fail_stops_in_a_row.clear();
        self.healed = true;
        self.recorder.trace("heal everything".into());
    }

    /// Every manager's and agent's host name.
    fn all_hosts(&self) -> Vec<String> {
        let managers = self.managers().into_iter().map(manager_host);
        let agents =
            (1..=self.plan.agents()).map(|agent| agent_host(agent, self.plan.nodes_per_agent));
        managers.chain(agents).collect()
    }

    /// The supervisor: take down each replica that stopped itself, and restart it from
    /// its disk after the backoff.
    fn supervise(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        for replica in self.managers() {
            if self.managers_down.contains(&replica) {
                continue;
            }
            let Some(machine) = self.machines.get(&replica) else {
                continue;
            };
            let Some(reason) = machine.take_exit() else {
                continue;
            };
            let failures = machine.disk.faults().failures();
            let seen = self.disk_failures_seen.insert(replica, failures);
            if failures <= seen.unwrap_or(0) {
                self.recorder.violation(format!(
                    "manager-{replica} stopped itself with no storage fault on its disk: {reason}"
                ));
            }
            self.managers_down.insert(replica);
            sim.crash(manager_host(replica));
            let in_a_row = self.fail_stops_in_a_row.entry(replica).or_insert(0);
            *in_a_row += 1;
            let delay_ms = (RESTART_DELAY_MS << (*in_a_row - 1).min(3)).min(RESTART_DELAY_MAX_MS);
            self.recorder.trace(format!(
                "supervisor at {}ms: manager-{replica} stopped ({reason}); restart {in_a_row} in a row in {delay_ms} ms",
                now.as_millis()
            ));
            let restart = Healing::RestartManager(replica);
            if self.healed {
                // Liveness mode: no backoff left to wait out.
                self.heal(sim, restart);
            } else {
                self.pending
                    .push((now + Duration::from_millis(delay_ms), restart));
            }
        }
    }

    /// While the leader's inbound links are cut: has another leader taken over?
    fn judge_failover(&mut self, now: Duration) {
        let Some((cut, since)) = self.inbound_cut else {
            return;
        };
        let leader = self.leader();
        if leader.is_some_and(|leader| leader != cut) {
            self.inbound_cut = None;
            self.recorder.trace(format!(
                "failover from manager-{cut}, which receives nothing, after {} ms",
                (now - since).as_millis()
            ));
        } else if now >= since + INBOUND_FAILOVER_BOUND {
            self.inbound_cut = None;
            self.recorder.violation(format!(
                "liveness: manager-{cut} led for {} ms with every link into it cut (from {} ms), and no other leader was elected (bound {} ms: CheckQuorum)",
                (now - since).as_millis(),
                since.as_millis(),
                INBOUND_FAILOVER_BOUND.as_millis()
            ));
        }
    }

    fn machine(&self, replica: u64) -> Option<ManagerMachine> {
        self.machines.get(&replica).cloned()
    }

    /// Every host but `host`: managers, agents and clients.
    fn hosts_but(&self, host: &str) -> Vec<String> {
        self.all_hosts()
            .into_iter()
            .chain(self.client_hosts.iter().cloned())
            .filter(|other| other != host)
            .collect()
    }

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, healing: Healing) {
        self.recorder.trace(format!("heal {healing:?}"));
        match healing {
            Healing::FreeDisk(replica) => {
                self.disk_faulty.remove(&replica);
                self.fail_stops_in_a_row.remove(&replica);
                if let Some(machine) = self.machine(replica) {
                    machine.disk.faults().heal();
                }
            }
            Healing::ClockBack(replica) => {
                if self.clock_stepped.remove(&replica) {
                    if let Some(machine) = self.machine(replica) {
                        machine.set_clock_step_ms(0);
                    }
                    let now_ms = sim.elapsed().as_millis() as u64;
                    let epoch_now = crate::managers::EPOCH_MS + now_ms;
                    self.recorder
                        .with(|recording| recording.time.clock_healed(epoch_now));
                }
            }
            Healing::RepairInbound(leader) => {
                if self
                    .inbound_cut
                    .is_some_and(|(cut, _)| manager_host(cut) == leader)
                {
                    self.inbound_cut = None;
                }
                self.inbound_cut_hosts.remove(&leader);
                for other in self.hosts_but(&leader) {
                    sim.repair_oneway(other.as_str(), leader.as_str());
                }
            }
            Healing::Resume(replica) => {
                self.paused.remove(&replica);
                let host = manager_host(replica);
                for other in self.hosts_but(&host) {
                    sim.release(host.as_str(), other.as_str());
                }
            }
            Healing::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
            Healing::RepairOneWay(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
            Healing::Release(a, b) => sim.release(a.as_str(), b.as_str()),
            Healing::RestartManager(replica) => {
                self.managers_down.remove(&replica);
                sim.bounce(manager_host(replica));
            }
            Healing::RestartAgent(agent) => {
                self.agents_down.remove(&agent);
                sim.bounce(agent_host(agent, self.plan.nodes_per_agent));
            }
        }
    }

    fn later(&mut self, now: Duration, minimum_ms: u64, maximum_ms: u64, healing: Healing) {
        let after = Duration::from_millis(self.random.random_range(minimum_ms..maximum_ms));
        self.pending.push((now + after, healing));
    }

    fn managers(&self) -> Vec<u64> {
        (1..=self.plan.replicas).collect()
    }

    fn leader(&self) -> Option<u64> {
        let down = self.managers_down.clone();
        self.rafts.leader(move |replica| !down.contains(&replica))
    }

    /// The managers down, or with a fault that may stop them or keep them from
    /// leading (a disk fault, a stepped clock, a pause).
    fn impaired(&self) -> BTreeSet<u64> {
        let mut impaired = self.managers_down.clone();
        impaired.extend(self.disk_faulty.iter().copied());
        impaired.extend(self.clock_stepped.iter().copied());
        impaired.extend(self.paused.iter().copied());
        impaired
    }

    /// A manager may crash (or be impaired) only while a majority stays clear.
    fn may_crash_manager(&self) -> bool {
        let majority = self.plan.replicas / 2 + 1;
        self.plan.replicas - (self.impaired().len() as u64) > majority
    }

    /// A manager that may be impaired now: chosen at random, unimpaired, with a
    /// majority clear of faults besides it.
    fn manager_to_impair(&mut self) -> Option<u64> {
        let replica = self.random.random_range(1..=self.plan.replicas);
        (self.may_crash_manager() && !self.impaired().contains(&replica)).then_some(replica)
    }

    fn inject(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, fault: Fault) {
        self.recorder
            .trace(format!("inject {fault} at {}ms", now.as_millis()));
        match fault {
            Fault::Partition => {
                let mut managers = self.managers();
                let split = self.random.random_range(1..managers.len());
                let right = managers.split_off(split);
                for (a, b) in pairs_between(&managers, &right) {
                    sim.partition(a.as_str(), b.as_str());
                    self.later(now, 500, 4_000, Healing::Repair(a, b));
                }
            }
            Fault::OneWayPartition => {
                let from = self.random.random_range(1..=self.plan.replicas);
                let to = 1
                    + (from + self.random.random_range(0..self.plan.replicas - 1))
                        % self.plan.replicas;
                let (from, to) = (manager_host(from), manager_host(to));
                sim.partition_oneway(from.as_str(), to.as_str());
                self.later(now, 500, 4_000, Healing::RepairOneWay(from, to));
            }
            Fault::LeaderIsolation => {
                if let Some(leader) = self.leader() {
                    let others: Vec<u64> = self
                        .managers()
                        .into_iter()
                        .filter(|replica| *replica != leader)
                        .collect();
                    for (a, b) in pairs_between(&[leader], &others) {
                        sim.partition(a.as_str(), b.as_str());
                        self.later(now, 1_000, 4_000, Healing::Repair(a, b));
                    }
                }
            }
            Fault::MessageDelay => {
                let a = manager_host(self.random.random_range(1..=self.plan.replicas));
                let b = if self.random.random_bool(0.5) {
                    manager_host(self.random.random_range(1..=self.plan.replicas))
                } else {
                    let agent = self.random.random_range(1..=self.plan.agents());
                    agent_host(agent, self.plan.nodes_per_agent)
                };
                if a != b {
                    sim.hold(a.as_str(), b.as_str());
                    self.later(now, 200, 2_000, Healing::Release(a, b));
                }
            }
            Fault::ReplicaCrash => {
                let replica = self.random.random_range(1..=self.plan.replicas);
                if self.may_crash_manager() && !self.managers_down.contains(&replica) {
                    self.managers_down.insert(replica);
                    sim.crash(manager_host(replica));
                    self.later(now, 300, 3_000, Healing::RestartManager(replica));
                }
            }
            Fault::LeaderChurn => {
                if let Some(leader) = self.leader() {
                    if self.may_crash_manager() {
                        self.managers_down.insert(leader);
                        sim.crash(manager_host(leader));
                        self.later(now, 300, 1_500, Healing::RestartManager(leader));
                    }
                }
            }
            Fault::AgentCrash | Fault::NodeLoss => {
                let agent = self.random.random_range(1..=self.plan.agents());
                if !self.agents_down.contains(&agent) {
                    self.agents_down.insert(agent);
                    sim.crash(agent_host(agent, self.plan.nodes_per_agent));
                    let (minimum_ms, maximum_ms) = if fault == Fault::AgentCrash {
                        (100, self.plan.node_grace_ms / 2)
                    } else {
                        (
                            self.plan.node_grace_ms + 1_000,
                            self.plan.node_grace_ms + 4_000,
                        )
                    };
                    self.later(now, minimum_ms, maximum_ms, Healing::RestartAgent(agent));
                }
            }
            Fault::DiskFull | Fault::FailedFsync => {
                if let Some(replica) = self.manager_to_impair() {
                    if let Some(machine) = self.machine(replica) {
                        if fault == Fault::DiskFull {
                            machine.disk.faults().set_full(true);
                        } else {
                            machine.disk.faults().fail_next_sync();
                        }
                        self.recorder.trace(format!("{fault} on manager-{replica}"));
                        self.disk_faulty.insert(replica);
                        self.later(now, 1_000, 5_000, Healing::FreeDisk(replica));
                    }
                }
            }
            Fault::ClockStep => {
                if let Some(replica) = self.manager_to_impair() {
                    let step_ms = if self.random.random_bool(0.5) {
                        CLOCK_STEP_MS
                    } else {
                        -CLOCK_STEP_MS
                    };
                    if let Some(machine) = self.machine(replica) {
                        machine.set_clock_step_ms(step_ms);
                        self.recorder
                            .trace(format!("clock of manager-{replica} steps {step_ms} ms"));
                        self.recorder
                            .with(|recording| recording.time.clock_stepped());
                        self.clock_stepped.insert(replica);
                        self.later(now, 1_000, 6_000, Healing::ClockBack(replica));
                    }
                }
            }
            Fault::LeaderInboundPartition => {
                if let Some(leader) = self.leader() {
                    let host = manager_host(leader);
                    for other in self.hosts_but(&host) {
                        sim.partition_oneway(other.as_str(), host.as_str());
                    }
                    self.recorder
                        .trace(format!("manager-{leader} (leader) receives nothing"));
                    self.inbound_cut_hosts.insert(host.clone());
                    let only_cut = self.inbound_cut_hosts.len() == 1;
                    if !only_cut {
                        // Another manager cannot receive either: no election can win.
                        self.inbound_cut = None;
                    } else if self.judge_failover && self.inbound_cut.is_none() {
                        self.inbound_cut = Some((leader, now));
                    }
                    self.later(now, 1_000, 6_000, Healing::RepairInbound(host));
                }
            }
            Fault::Pause => {
                // The leader half the time: its pause is the one that matters most.
                let leader = if self.random.random_bool(0.5) {
                    self.leader()
                } else {
                    None
                };
                let chosen = match leader {
                    Some(leader)
                        if self.may_crash_manager() && !self.impaired().contains(&leader) =>
                    {
                        Some(leader)
                    }
                    Some(_) => None,
                    None => self.manager_to_impair(),
                };
                if let Some(replica) = chosen {
                    let host = manager_host(replica);
                    for other in self.hosts_but(&host) {
                        sim.hold(host.as_str(), other.as_str());
                    }
                    self.recorder.trace(format!("manager-{replica} paused"));
                    self.paused.insert(replica);
                    self.later(now, 2_000, 8_000, Healing::Resume(replica));
                }
            }
            // Set up once for the whole fault phase (see `run`).
            Fault::MessageLoss
            | Fault::Reordering
            | Fault::ClockSkew
            | Fault::MembershipChange
            | Fault::SnapshotUnderLoad => {}
        }
    }
}
