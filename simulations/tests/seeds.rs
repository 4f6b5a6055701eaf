//! The simulation in the test suite, run through the `simulations` binary as a user
//! runs it: the determinism checks (a seed run twice, and after another seed in the same
//! process, gives the same trace hash),
//! the regression seeds (each once found a bug), 200 small swarm seeds (CI's subset),
//! an injected bug that must be caught, and (ignored, long) 200 default-size seeds.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

/// Seeds that found a bug, with the options (beyond the defaults) they found it under.
const REGRESSION_SEEDS: &[(u64, &[&str])] = &[
    // A retried submit applied twice (request ids); a dead peer connection never noticed.
    (2, &[]),
    (8, &[]),
    // A lagging replica called a report about a placement it had not applied yet stale;
    // the real agent does not resend an answered report, so the job stayed Running.
    (3, &[]),
    // A retried terminate whose first attempt was applied was refused ("while
    // Terminating"): only submits carried the client's request id.
    (30, &[]),
    // A follower that lagged without knowing it refused a valid token as unknown.
    (5, &["--nodes", "20"]),
    // The setup's token creation was answered AlreadyExists after a lost reply and
    // retried under the same name until its deadline (a harness bug: a token's secret
    // is only in the reply, so a retry needs a new name).
    (1133, &[]),
];

/// Run the binary; returns whether it passed and the trace hash of each seed it ran
/// (none for a seed whose run ended in a panic: a replica's own assertion caught
/// something).
fn simulate_seeds(arguments: &[&str]) -> (bool, Vec<(u64, String)>) {
    let output = Command::new(env!("CARGO_BIN_EXE_simulations"))
        .args(arguments)
        .output()
        .expect("run the simulations binary");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let traces = stdout
        .lines()
        .filter_map(|line| {
            let seed = line
                .strip_prefix("seed ")?
                .split(':')
                .next()?
                .parse()
                .ok()?;
            let hash = line.split("| trace ").nth(1)?.split_whitespace().next()?;
            Some((seed, hash.to_string()))
        })
        .collect();
    if !output.status.success() {
        // The failing seeds' reports, and the binary's own complaints (a bad option).
        eprintln!("{stdout}");
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
    (output.status.success(), traces)
}

/// Run one seed; whether it passed and its trace hash (empty after a panic).
fn simulate(arguments: &[&str]) -> (bool, String) {
    let (passed, traces) = simulate_seeds(arguments);
    let trace = traces.into_iter().next().map(|(_, hash)| hash);
    (passed, trace.unwrap_or_default())
}

/// The small size's workload and phases, without its node count.
const SMALL_WORKLOAD: &[&str] = &[
    "--clients",
    "2",
    "--operations-per-client",
    "20",
    "--fault-seconds",
    "10",
    "--heal-seconds",
    "15",
];

/// CI's small size: 5 nodes and [`SMALL_WORKLOAD`].
fn small() -> Vec<&'static str> {
    let mut arguments = vec!["--nodes", "5"];
    arguments.extend_from_slice(SMALL_WORKLOAD);
    arguments
}

fn small_seed(seed: u64) -> Vec<String> {
    let mut arguments = vec!["--seed".to_string(), seed.to_string()];
    arguments.extend(small().into_iter().map(String::from));
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

/// A seed run after another in the same process replays as it does alone: nothing a
/// run leaves behind in the process (tokio's task numbering, connections' memory of
/// reset streams) reaches the next.
#[test]
fn a_seed_replays_exactly_after_another_in_the_same_process() {
    let (_, alone) = simulate(&as_strs(&small_seed(4242)));
    let mut arguments = small_seed(4241);
    arguments.extend(["--seeds".to_string(), "2".to_string()]);
    let (_, traces) = simulate_seeds(&as_strs(&arguments));
    let after_another = traces
        .iter()
        .find(|(seed, _)| *seed == 4242)
        .map(|(_, hash)| hash.clone());
    assert_eq!(
        Some(alone),
        after_another,
        "seed 4242 after 4241: {traces:?}"
    );
}

/// Agents that run several nodes each (racks: `--nodes-per-agent`), with every fault
/// on, so agent crashes and node losses take whole racks: the run passes, and replays.
#[test]
fn racks_of_nodes_pass_and_replay() {
    let mut arguments = vec![
        "--seed",
        "77",
        "--nodes",
        "12",
        "--nodes-per-agent",
        "5",
        "--faults",
        "all",
    ];
    arguments.extend_from_slice(SMALL_WORKLOAD);
    let (passed, first) = simulate(&arguments);
    assert!(passed, "racks of nodes: {}", arguments.join(" "));
    assert!(!first.is_empty(), "the run printed its trace hash");
    let (_, second) = simulate(&arguments);
    assert_eq!(first, second, "the rack run did not replay");
}

/// The gray-failure faults of issue 19 alone (a clock step, a full disk, a failed
/// fsync, the leader's inbound links cut, a pause).
const GRAY_FAULTS: &str = "ClockStep,DiskFull,FailedFsync,LeaderInboundPartition,Pause";

/// A seed with the gray-failure faults replays exactly too: the disk's fault switch,
/// the supervisor's restarts and the clock steps are all driven from the seed.
#[test]
fn a_seed_with_gray_failures_replays_exactly() {
    let mut arguments = small_seed(11);
    arguments.extend(["--faults".to_string(), GRAY_FAULTS.to_string()]);
    let (_, first) = simulate(&as_strs(&arguments));
    let (_, second) = simulate(&as_strs(&arguments));
    assert!(!first.is_empty(), "the run printed its trace hash");
    assert_eq!(first, second, "the same seed gave two different runs");
}

/// Run `arguments` writing every trace into a fresh directory; whether it passed and
/// the traces' text.
fn simulate_with_traces(arguments: &[String]) -> (bool, String) {
    let directory = tempfile::tempdir().unwrap();
    let mut arguments = arguments.to_vec();
    arguments.extend([
        "--write-traces".to_string(),
        "--trace-dir".to_string(),
        directory.path().display().to_string(),
    ]);
    let (passed, _) = simulate_seeds(&as_strs(&arguments));
    let mut traces = String::new();
    for item in std::fs::read_dir(directory.path()).unwrap() {
        traces.push_str(&std::fs::read_to_string(item.unwrap().path()).unwrap());
    }
    (passed, traces)
}

/// Disk faults end in a fail-stop and a restart by the supervisor, and the run passes
/// every check (nothing acknowledged lost, digests equal, the liveness probe committed
/// and placed within its bound after healing).
#[test]
fn replicas_whose_disk_fails_stop_restart_and_the_cluster_recovers() {
    let mut arguments = small_seed(1);
    arguments.extend([
        "--seeds".to_string(),
        "3".to_string(),
        "--faults".to_string(),
        "DiskFull,FailedFsync".to_string(),
    ]);
    let (passed, traces) = simulate_with_traces(&arguments);
    assert!(passed, "disk faults: {}", arguments.join(" "));
    for expected in [
        "DiskFull on manager-",
        "FailedFsync on manager-",
        "stops itself: its raft core stopped",
        "no space left on device",
        "fsync failed",
        "supervisor at ",
        "incarnation 1",
    ] {
        assert!(
            traces.contains(expected),
            "no {expected:?} in the traces of {}",
            arguments.join(" ")
        );
    }
}

/// Seeds that found a gray failure (issue 19), with the faults they found it under;
/// each failed before the server's fix and must pass after it.
const GRAY_FAILURE_SEEDS: &[(u64, &str)] = &[
    // A leader whose clock stepped an hour forward stamped entries an hour ahead (the
    // time check: 3,602,820 ms ahead), and the state's time then froze; the token
    // client waited an hour for an expiry stamped so (a harness bug, now capped).
    (5, "all"),
];

/// A leader that can send but not receive is replaced within the failover bound
/// (`INBOUND_FAILOVER_BOUND`, 2 s), judged in runs where no other fault stands in the
/// way of an election.
/// (Other checks of these runs are the swarm's business: the assertion is on the
/// failover judge's verdict alone.)
#[test]
fn an_inbound_partition_of_the_leader_ends_in_a_failover_within_the_bound() {
    let mut arguments = small_seed(1);
    arguments.extend([
        "--seeds".to_string(),
        "8".to_string(),
        "--faults".to_string(),
        "LeaderInboundPartition".to_string(),
    ]);
    let (_, traces) = simulate_with_traces(&arguments);
    assert!(
        traces.contains("failover from manager-"),
        "no failover seen: {}",
        arguments.join(" ")
    );
    assert!(
        !traces.contains("with every link into it cut"),
        "a failover took too long: {}",
        arguments.join(" ")
    );
}

#[test]
fn gray_failure_seeds_pass() {
    for (seed, faults) in GRAY_FAILURE_SEEDS {
        let mut arguments = small_seed(*seed);
        arguments.extend(["--faults".to_string(), faults.to_string()]);
        let (passed, _) = simulate(&as_strs(&arguments));
        assert!(
            passed,
            "gray-failure seed {seed} failed; replay: cargo run -p simulations --release -- {}",
            arguments.join(" ")
        );
    }
}

#[test]
fn regression_seeds_pass() {
    for (seed, options) in REGRESSION_SEEDS {
        let seed_text = seed.to_string();
        let mut arguments = vec!["--seed", seed_text.as_str()];
        arguments.extend_from_slice(options);
        let (passed, _) = simulate(&arguments);
        assert!(
            passed,
            "regression seed {seed} failed; replay: cargo run -p simulations --release -- {}",
            arguments.join(" ")
        );
    }
}

/// Seeds in CI's subset (the issue asks for at least 200 in under 10 minutes).
const CI_SEEDS: u64 = 200;
/// Sweeps run in this many processes side by side (CI machines have 2 cores).
const PROCESSES: u64 = 2;

/// Run seeds `first..first + count`, split between [`PROCESSES`] processes that each run
/// their share one after another; whether every seed passed.
fn sweep(first: u64, count: u64, options: &[&str]) -> bool {
    let share = count.div_ceil(PROCESSES);
    let children: Vec<_> = (0..PROCESSES)
        .map(|process| {
            let start = first + process * share;
            let seeds = share.min((first + count).saturating_sub(start));
            Command::new(env!("CARGO_BIN_EXE_simulations"))
                .args(["--seed", &start.to_string(), "--seeds", &seeds.to_string()])
                .args(options)
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the simulations binary")
        })
        .collect();
    let mut passed = true;
    for child in children {
        let output = child
            .wait_with_output()
            .expect("wait for the simulations binary");
        if !output.status.success() {
            passed = false;
            // The failing seeds, their violations and replay commands.
            eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        }
    }
    passed
}

/// The CI subset: the first 200 seeds in swarm mode at the small size.
#[test]
fn ci_swarm_seeds_pass() {
    assert!(
        sweep(1, CI_SEEDS, &small()),
        "a CI seed failed (its replay command is printed above)"
    );
}

/// The workload with queues in the public pool (`--queues`): its own CI subset, since
/// seeds 113 and 147 of the swarm fail with it (SIMULATION.md, open findings).
#[test]
fn queue_workload_seeds_pass() {
    let mut options = small();
    options.push("--queues");
    assert!(
        sweep(1, 40, &options),
        "a queue-workload seed failed (its replay command is printed above)"
    );
}

/// The default-size sweep: `cargo test -p simulations --release -- --ignored`
/// (`CORRAL_SIMULATION_SEEDS` sets the count). The soak is the binary itself:
/// `cargo run -p simulations --release -- --seeds 5000`.
#[test]
#[ignore = "long: 200 default-size seeds; run with --ignored (in release)"]
fn default_size_swarm_seeds_pass() {
    let count: u64 = std::env::var("CORRAL_SIMULATION_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200);
    assert!(sweep(1, count, &[]), "a seed failed (see above)");
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
