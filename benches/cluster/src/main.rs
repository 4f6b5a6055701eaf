//! The cluster benchmark of corral: a 3-replica `corral server` cluster on loopback
//! (sled, fsync on) side by side with a 3-member etcd cluster, both real processes.
//!
//! 1. Submit throughput and latency at each concurrency level (default 1, 16, 64, 256
//!    clients) and with batch submits (16 clients × 100 jobs per SubmitJobs); etcd does
//!    256-byte puts (and Txns of 100 puts) at the same concurrency, alternating with
//!    corral level by level.
//! 2. Leader failover: SIGKILL the leader 20 times; time until a submit is committed and
//!    that job is Running (placed by the new leader's scheduler).
//! 3. Restart time of a replica holding 1,000,000 jobs.
//!
//! Run `benches/cluster/run.sh` (installs etcd, builds, runs) or
//! `cargo run --release -p corral-cluster-bench -- --help`.
// A program whose output is its report (the workspace lints keep stdout to such programs).
#![allow(clippy::print_stdout)]

mod agents;
mod corral_cluster;
mod etcd_cluster;
mod failover;
mod load;
mod report;
mod restart;
mod spec;
mod throughput;

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "corral-cluster-bench",
    about = "corral 3-replica cluster vs 3-member etcd on loopback: throughput, failover, restart"
)]
pub struct Args {
    /// The corral binary [default: `cargo build --release -p corral` in this workspace, then
    /// target/release/corral ($CARGO_TARGET_DIR respected)]. It must be built from the same
    /// source as this benchmark: the restart run writes its state offline.
    #[arg(long, value_name = "PATH")]
    pub corral: Option<PathBuf>,
    /// The etcd binary (Debian package `etcd-server`; benches/cluster/run.sh installs it).
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    pub etcd: PathBuf,
    /// A 2-minute smoke run: 3 s windows, 5 kills, restart with 100,000 jobs.
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds per throughput run [default: 10; 3 with --quick].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Warm-up seconds before each measured window [default: 2; 1 with --quick].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Concurrency levels [default: 1,16,64,256].
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Jobs per SubmitJobs call (puts per etcd Txn) in the batch run; 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Clients of the batch run.
    #[arg(long, default_value_t = 16)]
    pub batch_clients: usize,
    /// Clients share at most this many HTTP/2 connections (the same for both systems).
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Leader kills [default: 20; 5 with --quick].
    #[arg(long)]
    pub kills: Option<usize>,
    /// Raft timing of every corral replica as HEARTBEAT:ELECTION_MIN:ELECTION_MAX in ms
    /// [default: the shipped defaults, 100:150:300]. Not the benchmark's default setup.
    #[arg(long, value_name = "MS:MS:MS", value_parser = parse_timing)]
    pub raft_timing: Option<(u64, u64, u64)>,
    /// Jobs the restarted replica holds [default: 1,000,000; 100,000 with --quick].
    #[arg(long)]
    pub restart_jobs: Option<u64>,
    /// Of those, jobs submitted through the API after the snapshot (the log tail).
    #[arg(long, default_value_t = 5_000)]
    pub restart_tail: u64,
    /// Timed restarts of each kind [default: 3; 1 with --quick].
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Diagnostic: also run corral at each level with submits to a pool that does not
    /// exist (committed through raft, refused by the state machine, nothing queued), to
    /// separate the raft write path from the leader's scheduler.
    #[arg(long)]
    pub diagnose_raft_path: bool,
    /// Diagnostic: run every corral replica on this storage engine instead of sled
    /// (`memory` shows what fsync and the disk path cost). Not the benchmark.
    #[arg(long, value_name = "ENGINE")]
    pub diagnose_engine: Option<String>,
    /// Run corral only.
    #[arg(long)]
    pub skip_etcd: bool,
    /// Skip the throughput runs.
    #[arg(long)]
    pub skip_throughput: bool,
    /// Skip the failover runs.
    #[arg(long)]
    pub skip_failover: bool,
    /// Skip the restart runs.
    #[arg(long)]
    pub skip_restart: bool,
    /// Keep data and logs here (and keep them afterwards) instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Also write the results as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write the raw results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run the node-agents benchmark instead (benches/agents/run.sh): `true` jobs
    /// executed by 3 managers and 3 agents, side by side with Slurm.
    #[arg(long)]
    pub agents: bool,
    /// Jobs of the agents benchmark.
    #[arg(long, default_value_t = 2_000)]
    pub agent_jobs: usize,
    /// Concurrent submitters of the agents benchmark.
    #[arg(long, default_value_t = 16)]
    pub agent_clients: usize,
    /// Submit-to-running samples of the agents benchmark.
    #[arg(long, default_value_t = 50)]
    pub latency_samples: usize,
    /// The Slurm side of the agents benchmark; without it, Slurm is skipped.
    #[arg(long, value_name = "PATH")]
    pub slurm_script: Option<PathBuf>,
}

pub struct Settings {
    pub seconds: u64,
    pub warmup: u64,
    pub clients: Vec<usize>,
    pub kills: usize,
    pub restart_jobs: u64,
    pub restarts: usize,
}

impl Args {
    fn settings(&self) -> Settings {
        let quick = self.quick;
        Settings {
            seconds: self.seconds.unwrap_or(if quick { 3 } else { 10 }),
            warmup: self.warmup.unwrap_or(if quick { 1 } else { 2 }),
            clients: self.clients.clone().unwrap_or_else(|| vec![1, 16, 64, 256]),
            kills: self.kills.unwrap_or(if quick { 5 } else { 20 }),
            restart_jobs: self
                .restart_jobs
                .unwrap_or(if quick { 100_000 } else { 1_000_000 }),
            restarts: self.restarts.unwrap_or(if quick { 1 } else { 3 }),
        }
    }
}

fn parse_timing(text: &str) -> Result<(u64, u64, u64), String> {
    let parts: Vec<u64> = text
        .split(':')
        .map(|part| {
            part.parse::<u64>()
                .map_err(|error| format!("{part}: {error}"))
        })
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [heartbeat, minimum, maximum] => Ok((heartbeat, minimum, maximum)),
        _ => Err("expected HEARTBEAT:ELECTION_MIN:ELECTION_MAX in milliseconds".into()),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn locate_corral(argument: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = argument {
        return path
            .canonicalize()
            .map_err(|error| format!("--corral {}: {error}", path.display()));
    }
    // The offline state of the restart run is written by this binary's copy of the store
    // and state crates, so the server must come from the same tree: build it (a no-op
    // when it is up to date) rather than trust whatever binary is lying around.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let built = target.join("release/corral");
    println!("building corral: cargo build --release -p corral");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "corral"])
        .current_dir(workspace_root())
        .status();
    match status {
        Ok(status) if status.success() && built.is_file() => Ok(built),
        _ if Path::new("target/release/corral").is_file() => {
            println!("cargo build failed; using target/release/corral as it is");
            Ok(PathBuf::from("target/release/corral")
                .canonicalize()
                .map_err(|error| error.to_string())?)
        }
        _ => Err(format!(
            "could not build corral (expected {}); pass --corral PATH",
            built.display()
        )),
    }
}

fn etcd_version(binary: &Path) -> Result<String, String> {
    let output = Command::new(binary).arg("--version").output().map_err(|error| {
        format!(
            "{}: {error}. Install etcd with `apt-get install -y etcd-server` (or run benches/cluster/run.sh), or pass --skip-etcd",
            binary.display()
        )
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("etcd").trim().to_string())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Data of finished runs is removed (disk space), unless the user chose the directory.
fn remove(args: &Args, directory: &Path) {
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(directory);
    }
}

/// `--work-dir`, created if needed, or a temporary directory removed when the returned
/// guard drops.
fn work_directory(
    args: &Args,
    prefix: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    match &args.work_dir {
        Some(directory) => {
            std::fs::create_dir_all(directory).map_err(|error| error.to_string())?;
            Ok((directory.clone(), None))
        }
        None => {
            let temporary = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(|error| error.to_string())?;
            Ok((temporary.path().to_path_buf(), Some(temporary)))
        }
    }
}

/// The `--agents` run: corral's agents against Slurm.
async fn agents_bench(args: Args) -> Result<(), String> {
    let corral = locate_corral(args.corral.as_deref())?;
    let (work, _temporary) = work_directory(&args, "corral-agents-bench-")?;
    let options = agents::AgentBenchOptions {
        jobs: args.agent_jobs,
        clients: args.agent_clients,
        latency_samples: args.latency_samples,
        slurm_script: args.slurm_script.clone(),
    };
    let results = agents::bench(&corral, &work, &options, load_average).await?;
    let text = agents::markdown(&results);
    println!("\n{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).map_err(|error| format!("{}: {error}", path.display()))?;
    }
    Ok(())
}

async fn bench(args: Args) -> Result<(), String> {
    if args.agents {
        return agents_bench(args).await;
    }
    let settings = args.settings();
    let corral_setup = match args.raft_timing {
        Some((heartbeat, minimum, maximum)) => {
            let _ = corral_cluster::RAFT_SECTION.set(format!(
                "\n[raft]\nheartbeat_interval_ms = {heartbeat}\nelection_timeout_min_ms = {minimum}\nelection_timeout_max_ms = {maximum}\n"
            ));
            format!("raft heartbeat {heartbeat} ms, election timeout {minimum}-{maximum} ms (--raft-timing, not the defaults)")
        }
        None => {
            "the shipped defaults (raft heartbeat 100 ms, election timeout 150-300 ms)".to_string()
        }
    };
    let corral_setup = match &args.diagnose_engine {
        Some(engine) => format!("{corral_setup}; DIAGNOSTIC: {engine} engine instead of sled"),
        None => format!("{corral_setup}; sled engine, fsync on"),
    };
    if let Some(engine) = &args.diagnose_engine {
        println!("DIAGNOSTIC RUN: corral replicas use the {engine} engine, not sled");
        let _ = corral_cluster::ENGINE.set(engine.clone());
    }
    let corral = locate_corral(args.corral.as_deref())?;
    let etcd_version = if args.skip_etcd {
        None
    } else {
        Some(etcd_version(&args.etcd)?)
    };
    let (work, _temporary) = work_directory(&args, "corral-cluster-bench-")?;
    let started = Instant::now();
    let mut results = report::Results {
        etcd_version: etcd_version.clone(),
        cores: std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        load_before: load_average(),
        spec_bytes: spec::spec_bytes(),
        seconds: settings.seconds,
        warmup: settings.warmup,
        max_connections: args.max_connections,
        corral_setup,
        ..report::Results::default()
    };
    println!(
        "corral: {}\netcd: {}\nwork directory: {}\njob spec: {} bytes of protobuf; etcd value: {} bytes\n",
        corral.display(),
        etcd_version.as_deref().unwrap_or("(skipped)"),
        work.display(),
        results.spec_bytes,
        spec::ETCD_VALUE_BYTES
    );

    if !args.skip_throughput {
        let mut levels: Vec<(usize, usize)> = settings
            .clients
            .iter()
            .map(|clients| (*clients, 1))
            .collect();
        if args.batch_size > 1 {
            levels.push((args.batch_clients, args.batch_size));
        }
        for (clients, batch) in levels {
            let options = throughput::LevelOptions {
                clients,
                batch,
                max_connections: args.max_connections,
                warmup: Duration::from_secs(settings.warmup),
                window: Duration::from_secs(settings.seconds),
                rejected_submits: false,
            };
            let label = if batch > 1 {
                format!("{clients} × batch {batch}")
            } else {
                format!("{clients}")
            };
            let directory = work.join(format!("corral-c{clients}-b{batch}"));
            let (corral_result, info) =
                throughput::corral_level(&corral, &directory, options).await?;
            remove(&args, &directory);
            println!(
                "{}",
                report::load_line("corral", &label, &corral_result, Some(&info))
            );
            let etcd_result = match &etcd_version {
                Some(_) => {
                    let directory = work.join(format!("etcd-c{clients}-b{batch}"));
                    let result = throughput::etcd_level(&args.etcd, &directory, options).await?;
                    remove(&args, &directory);
                    println!("{}", report::load_line("etcd", &label, &result, None));
                    Some(result)
                }
                None => None,
            };
            let raft_path = if args.diagnose_raft_path && batch == 1 {
                let directory = work.join(format!("corral-raft-path-c{clients}"));
                let options = throughput::LevelOptions {
                    rejected_submits: true,
                    ..options
                };
                let (result, info) = throughput::corral_level(&corral, &directory, options).await?;
                remove(&args, &directory);
                println!(
                    "{}",
                    report::load_line(
                        "corral",
                        &format!("{label} (raft path)"),
                        &result,
                        Some(&info)
                    )
                );
                Some(result)
            } else {
                None
            };
            results.levels.push(report::Level {
                label,
                clients,
                batch,
                corral: corral_result,
                corral_info: info,
                etcd: etcd_result,
                raft_path,
            });
        }
        println!();
    }

    if !args.skip_failover {
        println!("failover: {} leader kills", settings.kills);
        let directory = work.join("failover");
        results.failover = failover::run(&corral, &directory, settings.kills).await?;
        remove(&args, &directory);
        println!();
    }

    if !args.skip_restart {
        println!("restart: a replica holding {} jobs", settings.restart_jobs);
        let directory = work.join("restart");
        results.restart = Some(
            restart::run(
                &corral,
                &directory,
                settings.restart_jobs,
                args.restart_tail,
                settings.restarts,
            )
            .await?,
        );
        remove(&args, &directory);
        println!();
    }

    results.total_seconds = started.elapsed().as_secs_f64();
    results.load_after = load_average();
    let markdown = report::markdown(&results);
    println!("{markdown}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown).map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report::json(&results)).expect("json"),
        )
        .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(error) = bench(args).await {
        eprintln!("corral-cluster-bench: {error}");
        std::process::exit(1);
    }
}
