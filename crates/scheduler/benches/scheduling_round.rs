//! One scheduling round at scale, and the state machine's apply throughput around it.
//!
//! The state is built once, outside the timed loops, only through real commands
//! applied with `State::apply`: 10,000 nodes of 8 accelerators claimed by one pool
//! (the public pool with 10 tenants, and separately a dedicated pool of one tenant),
//! then 100,000 queued jobs of mixed sizes: single replicas of 1, 2, 4 or 8
//! accelerators and training gangs of 2-16 replicas, drawn from a fixed-seed generator.
//!
//! Measured:
//! - `round/public`, `round/dedicated`: `plan_round` over that state; throughput is
//!   the round's placements (jobs placed), time per iteration is the round latency.
//!   The pool fills after about 10,000 jobs and the round stops there;
//! - `round/public_all_jobs_considered`: the same public pool, except that 16 of the
//!   10,000 nodes carry a NoSchedule taint no job tolerates; they keep the pool from
//!   ever counting as full, so the round looks at all 100,000 jobs and the ~90,000
//!   that no longer fit go through the failure memo;
//! - `apply/submit`: applying 100,000 `JobSubmit` entries to the state with the empty
//!   pool (throughput: submits);
//! - `apply/plan`: applying the public round's plan as one `SchedulerPlan` entry
//!   (throughput: placements).
//!
//! Run: `cargo bench -p corral-scheduler --bench scheduling_round`.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/scheduler/common/mod.rs"]
mod common;

use common::{inference, notebook, training, with_priority, Cluster};
use corral_model::ids::{PoolId, TenantId};
use corral_model::limits::HOUR_MS;
use corral_model::{Command, Entry, Event, JobSpec, Principal, Taint, TaintEffect};
use corral_scheduler::{plan_round, Plan, RoundOptions};
use corral_state::State;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const NODES: u32 = 10_000;
const ACCELERATORS_PER_NODE: u32 = 8;
const QUEUED_JOBS: usize = 100_000;
const PUBLIC_TENANTS: usize = 10;

/// SplitMix64: a fixed-seed generator, so every run builds the same queue.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// One job of the mix: 85% single replicas (training, notebook or inference) of 1, 2,
/// 4 or 8 accelerators, 15% training gangs of 2-16 replicas of the same sizes; most
/// training jobs have a max runtime of 1-24 hours.
fn mixed_job(pool: PoolId, dedicated: bool, generator: &mut Generator) -> JobSpec {
    let accelerators = [1, 2, 4, 8][generator.below(4) as usize];
    let mut spec = match generator.below(100) {
        0..=49 => training(pool, 1, accelerators),
        50..=64 => notebook(pool, accelerators),
        65..=84 => inference(pool, 1, accelerators),
        _ => training(pool, 2 + generator.below(15) as u32, accelerators),
    };
    if spec.kind.is_gang() && generator.below(10) < 7 {
        spec.max_runtime_ms = Some((1 + generator.below(24)) * HOUR_MS);
    }
    if dedicated {
        spec = with_priority(spec, 1 + generator.below(3) as u8);
    }
    spec
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Public,
    PublicWithSpareTaintedNodes,
    Dedicated,
}

/// Nodes that no job may use, in the variant that has them.
const SPARE_TAINTED_NODES: u32 = 16;

struct Scale {
    /// Nodes and the pool, nothing queued.
    empty: Cluster,
    /// The same with the queue filled.
    queued: Cluster,
    pool: PoolId,
    submits: Vec<(TenantId, JobSpec)>,
}

fn build_scale(variant: Variant) -> Scale {
    let started = Instant::now();
    let dedicated = variant == Variant::Dedicated;
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(ACCELERATORS_PER_NODE);
    let tenant_count = if dedicated { 1 } else { PUBLIC_TENANTS };
    let quota = NODES * ACCELERATORS_PER_NODE * 10;
    let tenants: Vec<TenantId> = (0..tenant_count)
        .map(|index| cluster.tenant(&format!("tenant-{index}"), quota))
        .collect();
    let spare = if variant == Variant::PublicWithSpareTaintedNodes {
        SPARE_TAINTED_NODES
    } else {
        0
    };
    cluster.register_nodes(&flavor, NODES - spare, &BTreeMap::new(), &[]);
    let reserved = Taint {
        key: "reserved".into(),
        value: "yes".into(),
        effect: TaintEffect::NoSchedule,
    };
    cluster.register_nodes(&flavor, spare, &BTreeMap::new(), &[reserved]);
    let pool = if dedicated {
        cluster.dedicated_pool("dedicated", tenants[0], &[(&flavor, NODES)])
    } else {
        cluster.public_pool(&[(&flavor, NODES)])
    };
    let mut generator = Generator(if dedicated { 7 } else { 42 });
    let submits: Vec<(TenantId, JobSpec)> = (0..QUEUED_JOBS)
        .map(|index| {
            let tenant = tenants[index % tenants.len()];
            (tenant, mixed_job(pool, dedicated, &mut generator))
        })
        .collect();
    let empty = cluster.clone();
    for (tenant, spec) in &submits {
        cluster.submit(*tenant, spec.clone());
    }
    assert_eq!(cluster.state.queue_length(pool), QUEUED_JOBS);
    eprintln!(
        "built {} pool: {NODES} nodes ({spare} tainted), {QUEUED_JOBS} queued jobs in {:.1?}",
        if dedicated { "dedicated" } else { "public" },
        started.elapsed()
    );
    Scale {
        empty,
        queued: cluster,
        pool,
        submits,
    }
}

/// The entry that follows the state's last applied one, at the state's time.
fn next_entry(state: &State, principal: Principal, command: Command) -> Entry {
    Entry {
        index: state.applied_index() + 1,
        at_ms: state.now_ms(),
        principal,
        credential: None,
        command,
    }
}

/// The benchmark's submissions as log entries following the empty-pool state.
fn submit_entries(scale: &Scale) -> Vec<Entry> {
    let first_index = scale.empty.state.applied_index() + 1;
    scale
        .submits
        .iter()
        .enumerate()
        .map(|(offset, (tenant, spec))| Entry {
            index: first_index + offset as u64,
            at_ms: scale.empty.state.now_ms(),
            principal: Principal::TenantUser(*tenant),
            credential: None,
            command: Command::JobSubmit(spec.clone()),
        })
        .collect()
}

fn describe(name: &str, scale: &Scale, plan: &Plan, latency: Duration) {
    let diagnostics = &plan.diagnostics;
    let accelerators_placed: u64 = plan
        .placements
        .iter()
        .map(|placement| {
            let job = scale
                .queued
                .state
                .job(placement.job)
                .expect("placed job exists");
            u64::from(job.spec.per_replica.accelerators) * placement.assignments.len() as u64
        })
        .sum();
    let placements_per_second = diagnostics.jobs_placed as f64 / latency.as_secs_f64();
    eprintln!(
        "{name}: {} jobs considered (pool full: {}), {} placed ({} replicas, {} of {} \
         accelerators), {} did not fit, head {:?} with reservation at {:?} ms on {} nodes; \
         one untimed run {:.1?} = {:.0} placements/s",
        diagnostics.jobs_considered,
        diagnostics.stopped_with_pool_full,
        diagnostics.jobs_placed,
        diagnostics.replicas_placed,
        accelerators_placed,
        NODES * ACCELERATORS_PER_NODE,
        diagnostics.jobs_not_fitting,
        diagnostics.head.as_ref().map(|head| head.job),
        diagnostics
            .head
            .as_ref()
            .and_then(|head| head.reservation.as_ref())
            .map(|reservation| reservation.shadow_time_ms),
        diagnostics
            .head
            .as_ref()
            .and_then(|head| head.reservation.as_ref())
            .map_or(0, |reservation| reservation.nodes.len()),
        latency,
        placements_per_second,
    );
}

fn first_plan(name: &str, scale: &Scale) -> Plan {
    let started = Instant::now();
    let plan = plan_round(&scale.queued.state, scale.pool, &RoundOptions::default());
    describe(name, scale, &plan, started.elapsed());
    plan
}

/// Once, untimed: every submit the `apply/submit` bench applies is accepted, and the
/// plan the `apply/plan` bench applies is accepted whole (the timed loops only
/// `debug_assert` this, which is compiled out in bench builds).
fn check_applies_are_accepted(scale: &Scale, plan: &Plan) {
    let mut state = scale.empty.state.clone();
    for entry in submit_entries(scale) {
        state.apply(&entry).expect("every submit is accepted");
    }
    assert_eq!(state.queue_length(scale.pool), QUEUED_JOBS);
    let mut state = scale.queued.state.clone();
    let entry = next_entry(&state, Principal::System, plan.to_command());
    let applied = state.apply(&entry).expect("the plan is accepted");
    let rejected = applied
        .events
        .iter()
        .filter(|record| matches!(record.event, Event::PlacementRejected { .. }))
        .count();
    assert_eq!(rejected, 0, "no placement of a fresh plan is rejected");
    assert_eq!(
        state.queue_length(scale.pool) + plan.placements.len(),
        QUEUED_JOBS
    );
}

fn scheduling(criterion: &mut Criterion) {
    let public = build_scale(Variant::Public);
    let all_considered = build_scale(Variant::PublicWithSpareTaintedNodes);
    let dedicated = build_scale(Variant::Dedicated);
    let public_plan = first_plan("round/public", &public);
    let all_considered_plan = first_plan("round/public_all_jobs_considered", &all_considered);
    let dedicated_plan = first_plan("round/dedicated", &dedicated);

    check_applies_are_accepted(&public, &public_plan);

    let mut rounds = criterion.benchmark_group("round");
    rounds
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for (name, scale, plan) in [
        ("public", &public, &public_plan),
        (
            "public_all_jobs_considered",
            &all_considered,
            &all_considered_plan,
        ),
        ("dedicated", &dedicated, &dedicated_plan),
    ] {
        rounds.throughput(Throughput::Elements(plan.placements.len() as u64));
        rounds.bench_function(name, |bencher| {
            bencher.iter(|| {
                black_box(plan_round(
                    black_box(&scale.queued.state),
                    scale.pool,
                    &RoundOptions::default(),
                ))
            })
        });
    }
    rounds.finish();

    let mut applies = criterion.benchmark_group("apply");
    applies
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    applies.throughput(Throughput::Elements(public.submits.len() as u64));
    applies.bench_function("submit", |bencher| {
        bencher.iter_batched(
            || (public.empty.state.clone(), submit_entries(&public)),
            |(mut state, entries)| {
                for entry in &entries {
                    let submitted = state.apply(entry);
                    debug_assert!(submitted.is_ok());
                }
                (state, entries)
            },
            BatchSize::PerIteration,
        )
    });
    applies.throughput(Throughput::Elements(public_plan.placements.len() as u64));
    applies.bench_function("plan", |bencher| {
        bencher.iter_batched(
            || {
                let state = public.queued.state.clone();
                let entry = next_entry(&state, Principal::System, public_plan.to_command());
                (state, entry)
            },
            |(mut state, entry)| {
                let applied = state.apply(&entry);
                debug_assert!(applied.is_ok());
                (state, applied)
            },
            BatchSize::PerIteration,
        )
    });
    applies.finish();
}

criterion_group!(benches, scheduling);
criterion_main!(benches);
