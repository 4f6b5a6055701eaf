//! `cargo run -p simulations --release -- --seed S` replays one seed; `--seeds N` runs
//! seeds S..S+N (the soak). A failing seed prints the command that replays it and
//! writes its trace.
// A program whose output is its report (the workspace lints keep stdout to such programs).
#![allow(clippy::print_stdout)]

use clap::Parser;
use simulations::{run, FaultMode, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "Deterministic chaos simulation of corral's managers and agents")]
struct Arguments {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds to run, starting at --seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    #[arg(long, default_value_t = 8)]
    nodes: u64,
    #[arg(long, default_value_t = 3)]
    clients: u64,
    #[arg(long, default_value_t = 40)]
    operations_per_client: u64,
    /// Simulated seconds with faults.
    #[arg(long, default_value_t = 20)]
    fault_seconds: u64,
    /// Simulated seconds after healing in which all work must settle.
    #[arg(long, default_value_t = 25)]
    heal_seconds: u64,
    /// swarm (a random subset of faults per seed), all, none, or a comma-separated
    /// list of faults (DiskFull,Pause).
    #[arg(long, default_value = "swarm")]
    faults: String,
    /// Where a failing seed's trace is written.
    #[arg(long, default_value = "target/simulation-traces")]
    trace_dir: PathBuf,
    /// Write every seed's trace, not only a failing one's.
    #[arg(long)]
    write_traces: bool,
    /// Simulated milliseconds per step (the network's delivery granularity).
    #[arg(long, default_value_t = simulations::options::DEFAULT_TICK_MS)]
    tick_ms: u64,
    /// Nodes per simulated agent (`corral agent --simulate N`): fewer hosts, faster
    /// runs; an agent crash or node loss then takes all of an agent's nodes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    nodes_per_agent: u64,
    /// Give the public pool a default and a capped queue, and send a quarter of its
    /// training jobs to the capped one (off by default: see SIMULATION.md).
    #[arg(long)]
    queues: bool,
    /// Run with a deliberate bug, to see the checks catch it: skip-capacity-checks.
    #[arg(long)]
    inject_bug: Option<String>,
}

fn fault_mode(text: &str) -> Result<FaultMode, String> {
    FaultMode::parse(text)
}

/// The seed running now, for the panic report.
static CURRENT_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A panic (a replica's own assertion, or the harness) ends the process: say which seed
/// did it and how to replay it first.
fn install_panic_report() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |information| {
        let seed = CURRENT_SEED.load(std::sync::atomic::Ordering::Relaxed);
        println!("seed {seed}: FAILED (panic: {information})");
        println!(
            "  replay: cargo run -p simulations --release -- --seed {seed} (with the same options)"
        );
        default_hook(information);
    }));
}

fn main() -> ExitCode {
    if std::env::var_os("CORRAL_SIM_DEBUG_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let arguments = Arguments::parse();
    let fault_mode = match fault_mode(&arguments.faults) {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match arguments.inject_bug.as_deref() {
        None => {}
        Some("skip-capacity-checks") => {
            corral_model::fault_injection::enable_skip_capacity_checks()
        }
        Some(other) => {
            eprintln!("--inject-bug must be skip-capacity-checks, not {other}");
            return ExitCode::from(2);
        }
    }
    install_panic_report();
    let mut failures = 0u64;
    let (mut simulated_ms, mut wall_ms) = (0u64, 0u64);
    for seed in arguments.seed..arguments.seed.saturating_add(arguments.seeds) {
        let options = RunOptions {
            seed,
            replicas: arguments.replicas,
            nodes: arguments.nodes,
            clients: arguments.clients,
            fault_seconds: arguments.fault_seconds,
            heal_seconds: arguments.heal_seconds,
            fault_mode,
            operations_per_client: arguments.operations_per_client,
            keep_trace: true,
            tick_ms: arguments.tick_ms,
            nodes_per_agent: arguments.nodes_per_agent,
            queues: arguments.queues,
        };
        CURRENT_SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
        let report = run(&options);
        simulated_ms += report.simulated_ms;
        wall_ms += report.wall_ms;
        println!(
            "seed {seed}: {} | {} entries, {} client ops, tokens {}/{}/{} created/rotated/revoked, {} writes applied under tokens, {} refused unauthenticated at apply | {:.1} s simulated in {:.1} s ({:.0}x) | trace {} | faults {:?}",
            if report.passed() { "ok" } else { "FAILED" },
            report.entries_applied,
            report.client_operations,
            report.token_counts.tokens_created,
            report.token_counts.tokens_rotated,
            report.token_counts.tokens_revoked,
            report.token_counts.applied_with_credential,
            report.token_counts.refused_unauthenticated,
            report.simulated_ms as f64 / 1000.0,
            report.wall_ms as f64 / 1000.0,
            report.speedup(),
            &report.trace_hash[..16],
            report.faults,
        );
        if arguments.write_traces || !report.passed() {
            let _ = std::fs::create_dir_all(&arguments.trace_dir);
            let path = arguments.trace_dir.join(format!("seed-{seed}.trace"));
            match std::fs::write(&path, report.trace_lines.join("\n")) {
                Ok(()) => println!("  trace written to {}", path.display()),
                Err(error) => {
                    println!("  could not write the trace to {}: {error}", path.display())
                }
            }
        }
        if !report.passed() {
            failures += 1;
            for violation in &report.violations {
                println!("  violation: {violation}");
            }
            println!(
                "  replay: cargo run -p simulations --release -- --seed {seed} --replicas {} --nodes {} --clients {} --operations-per-client {} --fault-seconds {} --heal-seconds {} --faults {} --tick-ms {} --nodes-per-agent {}{}",
                arguments.replicas, arguments.nodes, arguments.clients, arguments.operations_per_client,
                arguments.fault_seconds, arguments.heal_seconds, arguments.faults, arguments.tick_ms,
                arguments.nodes_per_agent,
                if arguments.queues { " --queues" } else { "" }
            );
        }
    }
    println!(
        "{} seeds, {failures} failed; {:.0}x real time overall",
        arguments.seeds,
        simulated_ms as f64 / wall_ms.max(1) as f64
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
