//! The node-agents benchmark (`--agents`): jobs fully executed per second through 3
//! managers and 3 real `corral agent` processes, and submit-to-running latency on an
//! idle cluster, side by side with Slurm on one host (benches/agents/slurm_bench.py)
//! running the same jobs.
//!
//! corral's run: every job is a single-replica training job running `true` as a real
//! child process on an agent. The clock starts at the first submit and stops when the
//! watch stream has shown every job Completed. Submits come from `clients` concurrent
//! callers (each waits for its previous submit, like a script calling `sbatch`).
//! Latency: one job at a time on the idle cluster, from the submit call until the
//! watch stream shows the job Running (its process was started and reported).

use crate::corral_cluster::{self, CorralCluster, ADMIN_TOKEN, AGENT_TOKEN, TENANT_TOKEN_NAME};
use crate::load::percentile_of;
use corral_client::pb;
use corral_client::AdminStub;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const FLAVOR: &str = "bench-cpu";
const AGENTS: usize = 3;
/// CPUs the one Slurm node declares (one `true` job each).
const SLURM_CPUS: u32 = 256;

pub struct AgentBenchOptions {
    pub jobs: usize,
    pub clients: usize,
    pub latency_samples: usize,
    /// benches/agents/slurm_bench.py; None skips Slurm.
    pub slurm_script: Option<PathBuf>,
}

#[derive(Debug, Default, Clone)]
pub struct AgentBenchResults {
    pub jobs: usize,
    pub corral_seconds: f64,
    pub corral_jobs_per_second: f64,
    pub corral_submits_per_second: f64,
    pub corral_running_p50_ms: f64,
    pub corral_running_p99_ms: f64,
    pub slurm: Option<serde_json::Value>,
    pub load_before: String,
    pub load_after: String,
}

struct AgentProcesses {
    children: Vec<Child>,
    work_dirs: Vec<PathBuf>,
}

impl Drop for AgentProcesses {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_agents(binary: &Path, directory: &Path, managers: &[String]) -> AgentProcesses {
    let mut processes = AgentProcesses {
        children: Vec::new(),
        work_dirs: Vec::new(),
    };
    let managers: Vec<String> = managers
        .iter()
        .map(|address| format!("\"{address}\""))
        .collect();
    for index in 1..=AGENTS {
        let work_dir = directory.join(format!("agent-{index}"));
        std::fs::create_dir_all(&work_dir).expect("agent work dir");
        let config = format!(
            "managers = [{}]\nbootstrap_token = \"{AGENT_TOKEN}\"\nname = \"bench-node-{index}\"\nflavor = \"{FLAVOR}\"\nzone = \"zone-a\"\nwork_dir = \"{}\"\nlisten_address = \"127.0.0.1:0\"\ntls = {{ insecure = true }}\n",
            managers.join(", "),
            work_dir.display()
        );
        let config_path = directory.join(format!("agent-{index}.toml"));
        std::fs::write(&config_path, config).expect("agent config");
        let log = std::fs::File::create(directory.join(format!("agent-{index}.log"))).expect("log");
        let child = Command::new(binary)
            .arg("agent")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start corral agent");
        processes.children.push(child);
        processes.work_dirs.push(work_dir);
    }
    processes
}

fn bench_flavor() -> pb::Flavor {
    pb::Flavor {
        name: FLAVOR.into(),
        capacity: Some(pb::Resources {
            cpu_millicores: 64_000,
            memory_mib: 262_144,
            accelerators: 0,
            disk_gib: 1_000,
            bandwidth_mbps: 10_000,
        }),
        accelerator_type: String::new(),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: 1_000_000,
    }
}

fn true_job(pool: u64, name: &str) -> pb::JobSpec {
    pb::JobSpec {
        name: name.into(),
        pool,
        kind: "training".into(),
        replicas: 1,
        per_replica: Some(pb::Resources {
            cpu_millicores: 100,
            memory_mib: 64,
            accelerators: 0,
            disk_gib: 0,
            bandwidth_mbps: 0,
        }),
        command: vec!["true".into()],
        ..Default::default()
    }
}

/// Set up the tenant and a public pool over the agents' nodes; returns the pool and the
/// tenant's token.
async fn seed(admin: &AdminStub) -> Result<(u64, String), String> {
    let mut client = admin.clone();
    client
        .define_flavor(bench_flavor())
        .await
        .map_err(|status| format!("define flavor: {status}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = client
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .map_err(|status| format!("list nodes: {status}"))?
            .into_inner();
        if nodes.nodes.len() >= AGENTS {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} agents registered in 30 s",
                nodes.nodes.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tenant = client
        .create_tenant(pb::CreateTenantRequest {
            name: "bench".into(),
            quota: Some(pb::Resources {
                cpu_millicores: u64::MAX / 4,
                memory_mib: u64::MAX / 4,
                accelerators: 1_000_000,
                disk_gib: u64::MAX / 4,
                bandwidth_mbps: u64::MAX / 4,
            }),
            may_use_high_priority: false,
            max_active_jobs: 0,
        })
        .await
        .map_err(|status| format!("create tenant: {status}"))?
        .into_inner();
    let token = client
        .create_token(pb::CreateTokenRequest {
            name: TENANT_TOKEN_NAME.into(),
            tenant: tenant.id,
            ..Default::default()
        })
        .await
        .map_err(|status| format!("create token: {status}"))?
        .into_inner();
    let pool = client
        .create_pool(pb::CreatePoolRequest {
            name: "public".into(),
            kind: "public".into(),
            flavors: vec![pb::PoolFlavor {
                flavor: FLAVOR.into(),
                zone: "zone-a".into(),
                node_count: AGENTS as u32,
            }],
            job_types: vec!["training".into()],
            ..Default::default()
        })
        .await
        .map_err(|status| format!("create pool: {status}"))?
        .into_inner();
    Ok((pool.id, token.secret))
}

/// The job id a `JobStateChanged` event's detail names when it reached `state`.
fn job_reaching(event: &pb::Event, state: &str) -> Option<u64> {
    if event.kind != "JobStateChanged" {
        return None;
    }
    let (job, change) = event.detail.split_once(": ")?;
    let reached = change.split(" -> ").nth(1)?;
    let reached = reached.split_whitespace().next()?;
    if reached != state {
        return None;
    }
    job.strip_prefix("job-")?.parse().ok()
}

async fn current_index(admin: &AdminStub) -> Result<u64, String> {
    let status = admin
        .clone()
        .cluster_status(pb::ClusterStatusRequest::default())
        .await
        .map_err(|status| format!("cluster status: {status}"))?
        .into_inner();
    Ok(status.last_applied)
}

/// Submit-to-running of one job at a time on the idle cluster.
async fn running_latency(
    admin: &AdminStub,
    tenant: &AdminStub,
    pool: u64,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::with_capacity(samples);
    let from_index = current_index(admin).await? + 1;
    let mut events = admin
        .clone()
        .watch(pb::WatchRequest { from_index })
        .await
        .map_err(|status| format!("watch: {status}"))?
        .into_inner();
    for sample in 0..samples {
        let started = Instant::now();
        let job = tenant
            .clone()
            .submit_job(pb::SubmitJobRequest {
                spec: Some(true_job(pool, &format!("latency-{sample}"))),
            })
            .await
            .map_err(|status| format!("submit: {status}"))?
            .into_inner()
            .job;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .map_err(|_| format!("job {job} not Running within 10 s"))?
                .map_err(|status| format!("watch: {status}"))?
                .ok_or("the watch stream ended")?;
            if job_reaching(&event, "Running") == Some(job) {
                latencies.push(started.elapsed());
                break;
            }
        }
        // Let the job finish so the next sample starts on an idle cluster.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(latencies)
}

/// `jobs` jobs from `clients` concurrent submitters; seconds from the first submit to
/// the last Completed, and the submit rate.
async fn throughput(
    admin: &AdminStub,
    tenant: &AdminStub,
    pool: u64,
    jobs: usize,
    clients: usize,
) -> Result<(f64, f64), String> {
    let from_index = current_index(admin).await? + 1;
    let mut events = admin
        .clone()
        .watch(pb::WatchRequest { from_index })
        .await
        .map_err(|status| format!("watch: {status}"))?
        .into_inner();
    let submitted = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut submitters = Vec::new();
    for _ in 0..clients.max(1) {
        let tenant = tenant.clone();
        let submitted = submitted.clone();
        let next = next.clone();
        submitters.push(tokio::spawn(async move {
            let mut tenant = tenant;
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= jobs {
                    return Ok::<(), String>(());
                }
                let job = tenant
                    .submit_job(pb::SubmitJobRequest {
                        spec: Some(true_job(pool, &format!("true-{index}"))),
                    })
                    .await
                    .map_err(|status| format!("submit: {status}"))?
                    .into_inner()
                    .job;
                submitted.lock().await.insert(job);
            }
        }));
    }
    let mut completed = BTreeSet::new();
    let mut submit_seconds = None;
    loop {
        if submit_seconds.is_none() && submitters.iter().all(|task| task.is_finished()) {
            submit_seconds = Some(started.elapsed().as_secs_f64());
            for task in submitters.drain(..) {
                task.await.map_err(|error| error.to_string())??;
            }
        }
        if submit_seconds.is_some() {
            let submitted = submitted.lock().await;
            if submitted.len() == jobs && submitted.iter().all(|job| completed.contains(job)) {
                break;
            }
        }
        let event = tokio::time::timeout(Duration::from_secs(60), events.message())
            .await
            .map_err(|_| format!("no progress for 60 s ({} completed)", completed.len()))?
            .map_err(|status| format!("watch: {status}"))?
            .ok_or("the watch stream ended")?;
        if let Some(job) = job_reaching(&event, "Completed") {
            completed.insert(job);
        }
        if let Some(job) = job_reaching(&event, "Failed") {
            return Err(format!("job {job} failed: {}", event.detail));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let submit_rate = jobs as f64 / submit_seconds.unwrap_or(seconds);
    Ok((seconds, submit_rate))
}

/// The Slurm side with the same jobs and the same number of concurrent submitters.
fn run_slurm(
    script: &Path,
    jobs: usize,
    submitters: usize,
    work: &Path,
) -> Result<serde_json::Value, String> {
    let output = Command::new("python3")
        .arg(script)
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg("--submitters")
        .arg(submitters.to_string())
        // As many job slots as the agents offer would be 1,920; beyond 64 Slurm is
        // limited by the machine (benches/agents/SLURM.md), so 256 is a fair match.
        .arg("--cpus")
        .arg(SLURM_CPUS.to_string())
        .arg("--work")
        .arg(work)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("python3 {}: {error}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed: {:?}", script.display(), output.status));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let json_line = text
        .lines()
        .rev()
        .find(|line| line.trim_start().starts_with('{'))
        .ok_or("the Slurm benchmark printed no JSON")?;
    serde_json::from_str(json_line).map_err(|error| format!("Slurm JSON: {error}"))
}

pub async fn bench(
    binary: &Path,
    work: &Path,
    options: &AgentBenchOptions,
    load_average: fn() -> String,
) -> Result<AgentBenchResults, String> {
    let mut results = AgentBenchResults {
        jobs: options.jobs,
        load_before: load_average(),
        ..Default::default()
    };
    {
        let cluster = CorralCluster::start(binary, &work.join("corral"), 3);
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let managers: Vec<String> = cluster
            .replicas
            .iter()
            .map(|replica| replica.address.clone())
            .collect();
        let admin = cluster.admin(leader, ADMIN_TOKEN);
        let _agents = start_agents(binary, &work.join("agents"), &managers);
        let (pool, tenant_token) = seed(&admin).await?;
        let tenant = corral_cluster::admin(
            &cluster.replicas[leader].address,
            &tenant_token,
            Duration::from_secs(30),
        );
        println!(
            "corral: submit-to-running latency, {} samples",
            options.latency_samples
        );
        let mut latencies = running_latency(&admin, &tenant, pool, options.latency_samples).await?;
        latencies.sort_unstable();
        results.corral_running_p50_ms = percentile_of(&latencies, 50.0);
        results.corral_running_p99_ms = percentile_of(&latencies, 99.0);
        println!(
            "corral: {} `true` jobs from {} clients",
            options.jobs, options.clients
        );
        let (seconds, submit_rate) =
            throughput(&admin, &tenant, pool, options.jobs, options.clients).await?;
        results.corral_seconds = seconds;
        results.corral_jobs_per_second = options.jobs as f64 / seconds;
        results.corral_submits_per_second = submit_rate;
        println!(
            "corral: {:.1} jobs/s ({:.2} s), submits {:.0}/s, running p50 {:.1} ms p99 {:.1} ms",
            results.corral_jobs_per_second,
            seconds,
            submit_rate,
            results.corral_running_p50_ms,
            results.corral_running_p99_ms
        );
    }
    if let Some(script) = &options.slurm_script {
        println!("slurm: {} `true` jobs", options.jobs);
        results.slurm = Some(run_slurm(
            script,
            options.jobs,
            options.clients,
            &work.join("slurm"),
        )?);
    }
    results.load_after = load_average();
    Ok(results)
}

pub fn markdown(results: &AgentBenchResults) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "Load average before → after: {} → {}\n\n",
        results.load_before, results.load_after
    ));
    text.push_str(
        "| System | Jobs | Seconds | Jobs/s | Submits/s | Submit→running p50 / p99 ms |\n",
    );
    text.push_str("|---|---:|---:|---:|---:|---:|\n");
    text.push_str(&format!(
        "| corral (3 managers, 3 agents) | {} | {:.2} | {:.1} | {:.0} | {:.1} / {:.1} |\n",
        results.jobs,
        results.corral_seconds,
        results.corral_jobs_per_second,
        results.corral_submits_per_second,
        results.corral_running_p50_ms,
        results.corral_running_p99_ms
    ));
    if let Some(slurm) = &results.slurm {
        let number = |key: &str| {
            slurm
                .get(key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        let latency = |key: &str| {
            slurm
                .get("start_latency_ms")
                .and_then(|latency| latency.get(key))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        let slurm_rate = number("jobs_per_second");
        text.push_str(&format!(
            "| Slurm (one host, tuned) | {} | {:.2} | {:.1} | {:.0} | {:.1} / {:.1} |\n",
            results.jobs,
            number("seconds"),
            slurm_rate,
            number("submit_per_second"),
            latency("p50"),
            latency("p99")
        ));
        if slurm_rate > 0.0 {
            text.push_str(&format!(
                "\ncorral / Slurm completed jobs per second: **{:.1}×**\n",
                results.corral_jobs_per_second / slurm_rate
            ));
        }
    }
    text
}
