//! The fault driver: between simulation steps it injects the run's faults at seeded
//! moments and heals each after a seeded while; at the end of the fault phase it heals
//! everything (liveness mode), so the checks can demand that work settles.

use crate::agents::agent_host;
use crate::managers::{manager_host, mix, Rafts};
use crate::options::{Fault, RunPlan};
use crate::recorder::Recorder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::time::Duration;

/// How a fault is undone.
#[derive(Clone, Debug)]
enum Healing {
    Repair(String, String),
    RepairOneWay(String, String),
    Release(String, String),
    RestartManager(u64),
    RestartAgent(u64),
}

pub struct FaultDriver {
    plan: RunPlan,
    random: StdRng,
    rafts: Rafts,
    recorder: Recorder,
    next_fault_at: Duration,
    pending: Vec<(Duration, Healing)>,
    managers_down: BTreeSet<u64>,
    agents_down: BTreeSet<u64>,
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
    pub fn new(plan: &RunPlan, rafts: Rafts, recorder: Recorder) -> FaultDriver {
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
                )
            })
            .collect();
        FaultDriver {
            plan: plan.clone(),
            random: StdRng::seed_from_u64(mix(plan.seed, 0xfa17)),
            rafts,
            recorder,
            // Let the cluster form and the world be set up first.
            next_fault_at: Duration::from_secs(8),
            pending: Vec::new(),
            managers_down: BTreeSet::new(),
            agents_down: BTreeSet::new(),
            episodic,
            healed: false,
        }
    }

    fn fault_end(&self) -> Duration {
        Duration::from_secs(8 + self.plan.fault_seconds)
    }

    /// Run before every step.
    pub fn tick(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
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

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, healing: Healing) {
        self.recorder.trace(format!("heal {healing:?}"));
        match healing {
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

    /// A manager may crash only while a majority stays up.
    fn may_crash_manager(&self) -> bool {
        let majority = self.plan.replicas / 2 + 1;
        self.plan.replicas - (self.managers_down.len() as u64) > majority
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
            // Set up once for the whole fault phase (see `run`).
            Fault::MessageLoss
            | Fault::Reordering
            | Fault::ClockSkew
            | Fault::MembershipChange
            | Fault::SnapshotUnderLoad => {}
        }
    }
}
