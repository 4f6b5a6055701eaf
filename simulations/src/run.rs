//! One run of one seed: build the simulated world (managers, nodes, clients), drive it
//! step by step while the fault driver injects and heals faults, then check everything:
//! the per-entry invariants and digests recorded on the way, the final checks, and the
//! linearizability of the client history.

use crate::agents::add_agent;
use crate::faults::FaultDriver;
use crate::final_check::{final_check, FinalReport};
use crate::history::History;
use crate::linearizability::{check, CheckResult};
use crate::managers::{add_manager, Rafts};
use crate::model::{operations, JobsModel};
use crate::options::{Fault, RunOptions, RunPlan};
use crate::recorder::Recorder;
use crate::time_check::TimeBounds;
use crate::token_check::TokenCounts;
use crate::token_workload::token_client;
use crate::workload::{
    membership_client, operator_client, pool_operator_client, set_up, tenant_client, SharedWorld,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Search steps the linearizability check may take per run.
const MAX_LINEARIZABILITY_STEPS: u64 = 5_000_000;
/// Simulated time allowed beyond the fault and heal phases before the run is called
/// stuck (setup and the final check run in it).
const SLACK_SECONDS: u64 = 60;
/// A run with at least this many seconds of faults (CI's small size has 10) must have
/// exercised the token check both ways: writes applied under a modelled token, and
/// writes refused at apply because their token was gone.
const MIN_FAULT_SECONDS_FOR_TOKEN_COVERAGE: u64 = 10;
/// ... and in which the token client saw at least this many revocations or rotations
/// acknowledged (under heavy faults the setup can take the whole fault phase).
const MIN_TOKEN_CHANGES_FOR_COVERAGE: u64 = 2;

/// What a run found.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub faults: Vec<Fault>,
    pub trace_hash: String,
    pub violations: Vec<String>,
    pub simulated_ms: u64,
    pub wall_ms: u64,
    pub entries_applied: u64,
    pub client_operations: usize,
    /// What the token-lifecycle check saw (`token_check`).
    pub token_counts: TokenCounts,
    pub trace_lines: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Simulated seconds per wall-clock second.
    pub fn speedup(&self) -> f64 {
        self.simulated_ms as f64 / (self.wall_ms.max(1)) as f64
    }
}

fn to_string_error(result: Result<(), String>) -> turmoil::Result {
    result.map_err(|message| message.into())
}

/// One run at a time per process: runs on two threads would draw task ids from tokio's
/// one process-wide counter in an order set by the operating system's scheduling (see
/// `task_ids`), so neither would replay.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn run(options: &RunOptions) -> RunReport {
    let _turn = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    crate::network::install();
    crate::task_ids::align();
    let unseeded_before = corral_store::unseeded_uses();
    let started = Instant::now();
    let plan = RunPlan::new(options);
    let recorder = Recorder::new(options.keep_trace, TimeBounds::of(&plan));
    recorder.trace(format!("seed {} faults {:?}", plan.seed, plan.faults));
    let history = History::default();
    let world = SharedWorld::default();
    let rafts = Rafts::default();
    let final_report = FinalReport::default();
    let fault_end = Duration::from_secs(8 + plan.fault_seconds);
    let mut builder = turmoil::Builder::new();
    builder
        .simulation_duration(fault_end + Duration::from_secs(plan.heal_seconds + SLACK_SECONDS))
        .tick_duration(Duration::from_millis(options.tick_ms.max(1)))
        .rng_seed(plan.seed)
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(if plan.has(Fault::MessageDelay) {
            40
        } else {
            4
        }));
    if plan.has(Fault::Reordering) {
        builder.enable_random_order();
    }
    if plan.has(Fault::MessageLoss) {
        builder.fail_rate(0.0005).repair_rate(0.05);
    }
    let mut sim = builder.build();
    let mut machines = BTreeMap::new();
    for replica in 1..=plan.replicas {
        let machine = add_manager(&mut sim, replica, &plan, &recorder, &rafts);
        machines.insert(replica, machine);
    }
    for agent in 1..=plan.agents() {
        add_agent(&mut sim, agent, &plan, &recorder);
    }
    let mut client_hosts = vec!["setup".to_string()];
    {
        let (plan, world) = (plan.clone(), world.clone());
        sim.client("setup", async move {
            to_string_error(set_up(&plan, world).await)
        });
    }
    for client in 1..=plan.clients {
        let (plan, world, history, recorder) = (
            plan.clone(),
            world.clone(),
            history.clone(),
            recorder.clone(),
        );
        client_hosts.push(format!("client-{client}"));
        sim.client(format!("client-{client}"), async move {
            to_string_error(tenant_client(client, plan, world, history, recorder).await)
        });
    }
    {
        let (plan, world, recorder) = (plan.clone(), world.clone(), recorder.clone());
        client_hosts.push("operator".to_string());
        sim.client("operator", async move {
            to_string_error(operator_client(plan, world, recorder).await)
        });
    }
    {
        let (plan, world, recorder) = (plan.clone(), world.clone(), recorder.clone());
        client_hosts.push("pool-operator".to_string());
        sim.client("pool-operator", async move {
            to_string_error(pool_operator_client(plan, world, recorder).await)
        });
    }
    {
        let (plan, world, recorder) = (plan.clone(), world.clone(), recorder.clone());
        client_hosts.push("token-client".to_string());
        sim.client("token-client", async move {
            to_string_error(token_client(plan, world, recorder).await)
        });
    }
    if plan.has(Fault::MembershipChange) && plan.replicas >= 3 {
        let (plan, recorder) = (plan.clone(), recorder.clone());
        client_hosts.push("membership".to_string());
        sim.client("membership", async move {
            to_string_error(membership_client(plan, recorder).await)
        });
    }

    let mut driver = FaultDriver::new(&plan, rafts, machines, client_hosts, recorder.clone());
    let mut final_check_started = false;
    loop {
        let now = sim.elapsed();
        driver.tick(&mut sim, now);
        if driver.healed && !final_check_started {
            final_check_started = true;
            let (plan, history, report, world) = (
                plan.clone(),
                history.clone(),
                final_report.clone(),
                world.clone(),
            );
            let settle_within = Duration::from_secs(plan.heal_seconds);
            sim.client("final-check", async move {
                to_string_error(final_check(plan, history, report, world, settle_within).await)
            });
        }
        match sim.step() {
            Ok(true) if final_check_started => break,
            Ok(_) => {}
            Err(error) => {
                recorder.violation(format!("the simulation stopped: {error}"));
                break;
            }
        }
    }
    let simulated_ms = sim.elapsed().as_millis() as u64;
    drop(sim);

    let unseeded = corral_store::unseeded_uses() - unseeded_before;
    if unseeded > 0 {
        recorder.violation(format!(
            "raft drew randomness or spawned outside its replica's seeded scope {unseeded} times: the seed cannot replay exactly"
        ));
    }
    for problem in final_report.problems() {
        recorder.violation(problem);
    }
    let records = history.records();
    let history_operations = operations(&records);
    match check(&JobsModel, &history_operations, MAX_LINEARIZABILITY_STEPS) {
        CheckResult::Linearizable => {}
        CheckResult::TimedOut { partition_key } => recorder.trace(format!(
            "linearizability check ran out of steps at {partition_key}"
        )),
        other => recorder.violation(format!("client history is not linearizable: {other:?}")),
    }
    let (token_counts, token_changes) = recorder.with(|recording| {
        (
            recording.tokens.counts,
            recording.token_changes_acknowledged,
        )
    });
    recorder.trace(format!(
        "token check: {token_counts:?}, {token_changes} changes acknowledged"
    ));
    recorder.with(|recording| {
        let time = &recording.time;
        let line = format!(
            "time check: bounds {:?}; state's time at most {} ms ahead of true time, longest freeze {} ms; {} indexes too far ahead, {} frozen too long",
            time.bounds(),
            time.most_ahead_ms,
            time.longest_freeze_ms,
            time.ahead,
            time.frozen
        );
        recording.trace_line(line);
    });
    if plan.fault_seconds >= MIN_FAULT_SECONDS_FOR_TOKEN_COVERAGE
        && token_changes >= MIN_TOKEN_CHANGES_FOR_COVERAGE
    {
        if token_counts.applied_with_credential == 0 {
            recorder.violation(
                "the token check was vacuous: no write was applied under a modelled token"
                    .to_string(),
            );
        }
        if token_counts.refused_unauthenticated == 0 {
            recorder.violation(
                "the token check was vacuous: no write reached the state machine under a revoked, expired or rotated-out token"
                    .to_string(),
            );
        }
    }
    recorder.with(|recording| RunReport {
        seed: plan.seed,
        faults: plan.faults.iter().copied().collect(),
        trace_hash: recording.trace_hash(),
        violations: recording.violations.clone(),
        simulated_ms,
        wall_ms: started.elapsed().as_millis() as u64,
        entries_applied: recording.entries_applied,
        client_operations: records.len(),
        token_counts,
        trace_lines: std::mem::take(&mut recording.trace_lines),
    })
}
