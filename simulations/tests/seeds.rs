//! The simulation in the test suite, each run in a fresh process of the `simulations`
//! binary as a user runs it (runs in one process were seen to influence each other, see
//! SIMULATION.md): the determinism check (a seed run twice gives the same trace hash),
//! the regression seeds (each once found a bug), a dozen swarm seeds, an injected bug
//! that must be caught, and (ignored, long) the 200-seed swarm sweep.

use std::process::Command;

/// Seeds that found a bug, run with the default options they found it under.
const REGRESSION_SEEDS: &[u64] = &[2, 3, 8];

/// Run the binary; returns whether it passed and the trace hash it printed (empty when
/// the run ended in a panic: a replica's own assertion caught something).
fn simulate(arguments: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_simulations"))
        .args(arguments)
        .output()
        .expect("run the simulations binary");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let trace = stdout
        .split("| trace ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    if !output.status.success() {
        eprintln!("{stdout}");
    }
    (output.status.success(), trace)
}

const SMALL: &[&str] = &[
    "--nodes",
    "5",
    "--clients",
    "2",
    "--operations-per-client",
    "20",
    "--fault-seconds",
    "10",
    "--heal-seconds",
    "15",
];

fn small_seed(seed: u64) -> Vec<String> {
    let mut arguments = vec!["--seed".to_string(), seed.to_string()];
    arguments.extend(SMALL.iter().map(|argument| argument.to_string()));
    arguments
}

fn as_strs(arguments: &[String]) -> Vec<&str> {
    arguments.iter().map(String::as_str).collect()
}

#[test]
fn a_seed_replays_exactly() {
    let seed = small_seed(4242);
    let (_, first) = simulate(&as_strs(&seed));
    let (_, second) = simulate(&as_strs(&seed));
    assert!(!first.is_empty(), "the run printed its trace hash");
    assert_eq!(first, second, "the same seed gave two different runs");
    let (_, other) = simulate(&as_strs(&small_seed(4243)));
    assert_ne!(first, other, "different seeds, different runs");
}

#[test]
fn regression_seeds_pass() {
    for seed in REGRESSION_SEEDS {
        let (passed, _) = simulate(&["--seed", &seed.to_string()]);
        assert!(
            passed,
            "regression seed {seed} failed; replay: cargo run -p simulations --release -- --seed {seed}"
        );
    }
}

/// The CI subset: the first dozen seeds in swarm mode, at the small size, in one process.
#[test]
fn ci_swarm_seeds_pass() {
    let mut arguments = vec![
        "--seed".to_string(),
        "1".to_string(),
        "--seeds".to_string(),
        "12".to_string(),
    ];
    arguments.extend(SMALL.iter().map(|argument| argument.to_string()));
    let (passed, _) = simulate(&as_strs(&arguments));
    assert!(
        passed,
        "a CI seed failed (its replay command is printed above)"
    );
}

/// The long sweep: `cargo test -p simulations --release -- --ignored`.
#[test]
#[ignore = "long: 200 seeds; run with --ignored (in release)"]
fn swarm_seeds_pass() {
    let count: u64 = std::env::var("CORRAL_SIMULATION_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200);
    let failed: Vec<u64> = (1..=count)
        .filter(|seed| !simulate(&as_strs(&small_seed(*seed))).0)
        .collect();
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

#[test]
fn an_injected_capacity_bug_is_caught_within_three_seeds() {
    // The scheduler plans and the state machine accepts without looking at capacity:
    // the invariant checks after every applied entry must report a node over capacity.
    let caught = (1..=3u64).any(|seed| {
        let mut arguments = small_seed(seed);
        arguments.extend([
            "--inject-bug".to_string(),
            "skip-capacity-checks".to_string(),
        ]);
        !simulate(&as_strs(&arguments)).0
    });
    assert!(
        caught,
        "the checks did not notice nodes allocated beyond capacity"
    );
}
