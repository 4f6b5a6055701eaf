//! What one run does, derived entirely from its seed and the command line: cluster size,
//! which faults are on (all, or a random subset per seed in swarm mode), the clock skew
//! of each host, and how long faults last before the liveness phase heals everything.

use crate::managers::mix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt;

/// Every fault the simulation can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Two groups of managers cannot talk, both ways.
    Partition,
    /// Messages from one manager to another are dropped; the reverse still flows.
    OneWayPartition,
    /// The leader is cut off from every other manager.
    LeaderIsolation,
    /// Links hold their messages for a while, then deliver them all at once.
    MessageDelay,
    /// Links break at random (dropping what is in flight) and heal at random.
    MessageLoss,
    /// Hosts run in a random order each step, so messages arrive reordered.
    Reordering,
    /// A manager crashes and restarts from its disk.
    ReplicaCrash,
    /// A node agent crashes and restarts; its node's replicas must be found again.
    AgentCrash,
    /// A node goes away for longer than the grace period.
    NodeLoss,
    /// Managers' wall clocks disagree by up to seconds.
    ClockSkew,
    /// A voter is removed and added back under load.
    MembershipChange,
    /// Snapshots every few entries, so lagging replicas install them under load.
    SnapshotUnderLoad,
    /// The leader is crashed again and again.
    LeaderChurn,
    /// A manager's disk fills up: every log, vote and snapshot write fails (ENOSPC)
    /// until it is freed. Its raft core dies on the first failed write, the replica
    /// stops (fail-stop) and its supervisor restarts it, with a backoff.
    DiskFull,
    /// One write of a manager fails its fsync: the write, and all appended after it,
    /// is lost at the replica's restart (which the fail-stop forces).
    FailedFsync,
    /// A manager's wall clock steps an hour forward or back (an NTP step), then back.
    ClockStep,
    /// The leader can send but not receive: every link into it drops its messages.
    LeaderInboundPartition,
    /// A manager stops for seconds (SIGSTOP), then goes on.
    Pause,
}

/// Faults the simulation learned for issue 19 (gray failures), after the first 13:
/// appended, so swarm mode draws the older faults' choices for a seed as before.
pub const ALL_FAULTS: [Fault; 18] = [
    Fault::Partition,
    Fault::OneWayPartition,
    Fault::LeaderIsolation,
    Fault::MessageDelay,
    Fault::MessageLoss,
    Fault::Reordering,
    Fault::ReplicaCrash,
    Fault::AgentCrash,
    Fault::NodeLoss,
    Fault::ClockSkew,
    Fault::MembershipChange,
    Fault::SnapshotUnderLoad,
    Fault::LeaderChurn,
    Fault::DiskFull,
    Fault::FailedFsync,
    Fault::ClockStep,
    Fault::LeaderInboundPartition,
    Fault::Pause,
];

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, formatter)
    }
}

/// How faults are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    None,
    All,
    /// A random subset per seed (swarm testing: some faults mask others).
    Swarm,
    /// These faults only: bit `i` stands for `ALL_FAULTS[i]` (`--faults A,B`).
    Only(u32),
}

impl FaultMode {
    /// `swarm`, `all`, `none`, or a comma-separated list of fault names.
    pub fn parse(text: &str) -> Result<FaultMode, String> {
        match text {
            "swarm" => return Ok(FaultMode::Swarm),
            "all" => return Ok(FaultMode::All),
            "none" => return Ok(FaultMode::None),
            _ => {}
        }
        let mut bits = 0u32;
        for name in text.split(',').map(str::trim) {
            let position = ALL_FAULTS
                .iter()
                .position(|fault| fault.to_string() == name)
                .ok_or_else(|| {
                    let names: Vec<String> = ALL_FAULTS.iter().map(Fault::to_string).collect();
                    format!(
                        "--faults must be swarm, all, none or a comma-separated list of {}, not {name:?}",
                        names.join(", ")
                    )
                })?;
            bits |= 1 << position;
        }
        Ok(FaultMode::Only(bits))
    }
}

/// The command-line choices a run starts from.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    pub replicas: u64,
    pub nodes: u64,
    pub clients: u64,
    /// Simulated seconds of workload with faults.
    pub fault_seconds: u64,
    /// Simulated seconds after every fault is healed, in which work must settle.
    pub heal_seconds: u64,
    pub fault_mode: FaultMode,
    pub operations_per_client: u64,
    /// Keep every trace line (to write the trace of a failing seed).
    pub keep_trace: bool,
    /// Simulated milliseconds per step: how often the network delivers messages. Each
    /// step costs time for every host and every link (turmoil walks all links for each
    /// host), so a coarser step runs faster; every hop then takes at least one step.
    pub tick_ms: u64,
    /// Nodes each simulated agent runs (`corral agent --simulate N`); the agents are
    /// `ceil(nodes / nodes_per_agent)` turmoil hosts. 1 gives every node its own agent,
    /// so a crash or a delayed link hits one node; more nodes per agent mean fewer hosts
    /// (turmoil's step costs time per host and per pair of hosts), and then an agent
    /// crash or node loss takes every node of that agent, like a rack.
    pub nodes_per_agent: u64,
    /// The public pool gets a default and a capped queue, and a quarter of its training
    /// jobs go to the capped one (`--queues`; off in CI's sweeps, see SIMULATION.md).
    pub queues: bool,
}

/// 10 ms per step: a round trip takes 20 ms or more, well inside raft's 150-300 ms
/// election timeouts; 1 ms steps ran the default size about 3x slower (SIMULATION.md).
pub const DEFAULT_TICK_MS: u64 = 10;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: 1,
            replicas: 3,
            nodes: 8,
            clients: 3,
            fault_seconds: 20,
            heal_seconds: 25,
            fault_mode: FaultMode::Swarm,
            operations_per_client: 40,
            keep_trace: false,
            tick_ms: DEFAULT_TICK_MS,
            nodes_per_agent: 1,
            queues: false,
        }
    }
}

impl RunOptions {
    /// The CI size: 3 managers, 5 nodes, 2 clients, 10 + 12 simulated seconds.
    pub fn small() -> RunOptions {
        RunOptions {
            nodes: 5,
            clients: 2,
            fault_seconds: 10,
            heal_seconds: 15,
            operations_per_client: 20,
            ..RunOptions::default()
        }
    }
}

/// Everything a run does, fixed before it starts.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub seed: u64,
    pub replicas: u64,
    pub nodes: u64,
    pub nodes_per_agent: u64,
    pub clients: u64,
    pub fault_seconds: u64,
    pub heal_seconds: u64,
    pub operations_per_client: u64,
    pub faults: BTreeSet<Fault>,
    pub snapshot_every_entries: u64,
    pub node_grace_ms: u64,
    /// See `RunOptions::queues`.
    pub queues: bool,
    clock_skews_ms: Vec<i64>,
}

/// The largest clock skew between a manager and true simulated time.
const MAX_CLOCK_SKEW_MS: i64 = 5_000;

impl RunPlan {
    pub fn new(options: &RunOptions) -> RunPlan {
        let mut random = StdRng::seed_from_u64(mix(options.seed, 0x91a2));
        let faults: BTreeSet<Fault> = match options.fault_mode {
            FaultMode::None => BTreeSet::new(),
            FaultMode::All => ALL_FAULTS.into_iter().collect(),
            FaultMode::Swarm => ALL_FAULTS
                .into_iter()
                .filter(|_| random.random_bool(0.5))
                .collect(),
            FaultMode::Only(bits) => ALL_FAULTS
                .into_iter()
                .enumerate()
                .filter(|(position, _)| bits & (1 << position) != 0)
                .map(|(_, fault)| fault)
                .collect(),
        };
        let clock_skews_ms = (0..=options.replicas)
            .map(|_| {
                if faults.contains(&Fault::ClockSkew) {
                    random.random_range(-MAX_CLOCK_SKEW_MS..=MAX_CLOCK_SKEW_MS)
                } else {
                    0
                }
            })
            .collect();
        RunPlan {
            seed: options.seed,
            replicas: options.replicas,
            nodes: options.nodes,
            nodes_per_agent: options.nodes_per_agent.max(1),
            clients: options.clients,
            fault_seconds: options.fault_seconds,
            heal_seconds: options.heal_seconds,
            operations_per_client: options.operations_per_client,
            snapshot_every_entries: if faults.contains(&Fault::SnapshotUnderLoad) {
                100
            } else {
                1_000
            },
            node_grace_ms: 3_000,
            queues: options.queues,
            faults,
            clock_skews_ms,
        }
    }

    /// How many agents (turmoil hosts) run the nodes.
    pub fn agents(&self) -> u64 {
        self.nodes.div_ceil(self.nodes_per_agent)
    }

    /// How many nodes agent `agent` (1-based) runs: the last one runs the rest.
    pub fn nodes_of_agent(&self, agent: u64) -> u64 {
        let before = (agent - 1) * self.nodes_per_agent;
        self.nodes.saturating_sub(before).min(self.nodes_per_agent)
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    pub fn clock_skew_ms(&self, replica: u64) -> i64 {
        self.clock_skews_ms
            .get(replica as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The largest configured skew of any manager from true simulated time.
    pub fn largest_clock_skew_ms(&self) -> u64 {
        (1..=self.replicas)
            .map(|replica| self.clock_skew_ms(replica).unsigned_abs())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: u64, nodes_per_agent: u64) -> RunPlan {
        RunPlan::new(&RunOptions {
            nodes,
            nodes_per_agent,
            ..RunOptions::default()
        })
    }

    #[test]
    fn agents_share_the_nodes_and_the_last_runs_the_rest() {
        let racks = plan(12, 5);
        assert_eq!(racks.agents(), 3);
        let counts: Vec<u64> = (1..=3).map(|agent| racks.nodes_of_agent(agent)).collect();
        assert_eq!(counts, vec![5, 5, 2]);
        let one_each = plan(4, 1);
        assert_eq!(one_each.agents(), 4);
        assert!((1..=4).all(|agent| one_each.nodes_of_agent(agent) == 1));
    }

    #[test]
    fn every_fault_is_listed_once_and_all_mode_has_them_all() {
        let listed: BTreeSet<Fault> = ALL_FAULTS.into_iter().collect();
        assert_eq!(listed.len(), ALL_FAULTS.len());
        let all = RunPlan::new(&RunOptions {
            fault_mode: FaultMode::All,
            ..RunOptions::default()
        });
        assert_eq!(all.faults, listed);
        assert_eq!(Fault::ClockStep.to_string(), "ClockStep");
    }

    #[test]
    fn swarm_mode_picks_the_new_faults_for_some_seeds_and_not_others() {
        for fault in [
            Fault::DiskFull,
            Fault::FailedFsync,
            Fault::ClockStep,
            Fault::LeaderInboundPartition,
            Fault::Pause,
        ] {
            let picked = (1..=40)
                .filter(|seed| {
                    RunPlan::new(&RunOptions {
                        seed: *seed,
                        ..RunOptions::default()
                    })
                    .has(fault)
                })
                .count();
            assert!((1..40).contains(&picked), "{fault} in {picked} of 40 seeds");
        }
    }

    #[test]
    fn a_list_of_faults_runs_those_only() {
        let mode = FaultMode::parse("DiskFull, Pause").unwrap();
        let plan = RunPlan::new(&RunOptions {
            fault_mode: mode,
            ..RunOptions::default()
        });
        assert_eq!(
            plan.faults.into_iter().collect::<Vec<_>>(),
            vec![Fault::DiskFull, Fault::Pause]
        );
        assert_eq!(FaultMode::parse("all").unwrap(), FaultMode::All);
        assert!(FaultMode::parse("DiskFull,Nonsense").is_err());
    }

    #[test]
    fn zero_nodes_per_agent_means_one() {
        assert_eq!(plan(3, 0).agents(), 3);
    }
}
