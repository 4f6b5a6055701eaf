//! The scale benchmark (`--scale`, `benches/scale/run.sh`): 3 release replicas (sled,
//! fsync, shipped timings) and agents simulating 1,000 nodes each (`corral agent
//! --simulate 1000`; at least two agents when the node-loss case runs), at each pool
//! size asked for. Per size, on a fresh cluster:
//! - time to register every node (from the agents' start until ListNodes shows them);
//! - the leader's and a follower's CPU (% of one core) and resident memory, and raft
//!   entries applied per second, over a quiet window at steady state;
//! - SubmitJob call latency and submit-to-running latency, one `true` job at a time
//!   (`agents::running_latency`);
//! - a burst: `burst_calls` concurrent SubmitJobs of `true` jobs, the rate from the
//!   first call until the watch stream has shown every job Running (or past it), the
//!   jobs that failed, and the leader's term before and after (elections during it);
//! - optionally the node-loss case: `gangs` 2-replica gangs of `sleep` on the nodes of
//!   the agents, the agent running most of them killed; the time until all its nodes
//!   are marked lost, the gangs running again elsewhere, and the jobs failed.

use crate::agents::{self, job_reaching};
use crate::corral_cluster::{self, CorralCluster, ADMIN_TOKEN};
use crate::load::percentile_of;
use corral_client::pb;
use corral_client::AdminStub;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Virtual nodes per agent process (`--simulate` takes at most 1,024).
const NODES_PER_AGENT: usize = 1_000;
/// How long all nodes may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(600);
/// A burst or the node-loss case fails when the watch shows nothing for this long.
const NO_PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ScaleOptions {
    /// Pool sizes, in nodes (multiples of 1,000 use whole agents).
    pub sizes: Vec<usize>,
    pub latency_samples: usize,
    pub burst_jobs: usize,
    pub burst_calls: usize,
    /// Seconds of the quiet window CPU, memory and entries/s are measured over.
    pub steady_seconds: u64,
    /// Gangs of the node-loss case; 0 skips it.
    pub loss_gangs: usize,
}

/// The node-loss case's outcome.
#[derive(Debug, Default, Clone)]
pub struct LossRow {
    pub nodes_lost: usize,
    /// From the kill until every node of the agent is lost.
    pub mark_seconds: f64,
    /// Gangs displaced, and how many ran again on other nodes.
    pub displaced: usize,
    pub running_elsewhere: usize,
    /// From the kill until the last displaced gang ran again.
    pub rerun_seconds: f64,
    pub failed: usize,
}

#[derive(Debug, Default, Clone)]
pub struct ScaleRow {
    pub nodes: usize,
    pub register_seconds: f64,
    pub leader_cpu_percent: f64,
    pub leader_rss_mib: f64,
    pub follower_cpu_percent: f64,
    pub follower_rss_mib: f64,
    pub entries_per_second: f64,
    pub submit_p50_ms: f64,
    pub submit_p99_ms: f64,
    pub running_p50_ms: f64,
    pub running_p99_ms: f64,
    pub burst_jobs: usize,
    pub burst_jobs_per_second: f64,
    pub burst_failed: usize,
    pub term_before: u64,
    pub term_after: u64,
    pub loss: Option<LossRow>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of a process, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn status(admin: &AdminStub) -> Result<pb::ClusterStatusResponse, String> {
    Ok(admin
        .clone()
        .cluster_status(pb::ClusterStatusRequest::default())
        .await
        .map_err(|status| format!("cluster status: {status}"))?
        .into_inner())
}

/// CPU % of one core and RSS of the leader and one follower, and entries/s, over
/// `seconds` of quiet.
async fn steady_state(
    cluster: &CorralCluster,
    leader: usize,
    admin: &AdminStub,
    seconds: u64,
    row: &mut ScaleRow,
) -> Result<(), String> {
    let follower = (leader + 1) % cluster.replicas.len();
    let pids = [cluster.pid(leader), cluster.pid(follower)];
    let ticks_before: Vec<Option<u64>> = pids.iter().map(|pid| pid.and_then(cpu_ticks)).collect();
    let index_before = status(admin).await?.last_applied;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let index_after = status(admin).await?.last_applied;
    let percent = |index: usize| match (ticks_before[index], pids[index].and_then(cpu_ticks)) {
        (Some(before), Some(after)) => {
            after.saturating_sub(before) as f64 / TICKS_PER_SECOND / elapsed * 100.0
        }
        _ => f64::NAN,
    };
    row.leader_cpu_percent = percent(0);
    row.follower_cpu_percent = percent(1);
    row.leader_rss_mib = pids[0].and_then(rss_mib).unwrap_or(f64::NAN);
    row.follower_rss_mib = pids[1].and_then(rss_mib).unwrap_or(f64::NAN);
    row.entries_per_second = index_after.saturating_sub(index_before) as f64 / elapsed;
    Ok(())
}

/// `jobs` `true` jobs in `calls` concurrent SubmitJobs; seconds until every one was
/// seen Running (or Completed), and how many failed.
async fn burst(
    admin: &AdminStub,
    tenant: &AdminStub,
    pool: u64,
    jobs: usize,
    calls: usize,
) -> Result<(f64, usize), String> {
    let from_index = agents::current_index(admin).await? + 1;
    let mut events = admin
        .clone()
        .watch(pb::WatchRequest { from_index })
        .await
        .map_err(|status| format!("watch: {status}"))?
        .into_inner();
    let calls = calls.max(1);
    let started = Instant::now();
    let mut submitters = Vec::new();
    for call in 0..calls {
        let share = jobs / calls + usize::from(call < jobs % calls);
        let specs = (0..share)
            .map(|index| agents::true_job(pool, &format!("burst-{call}-{index}")))
            .collect();
        let tenant = tenant.clone();
        submitters.push(tokio::spawn(
            async move { submit_jobs(&tenant, specs).await },
        ));
    }
    let mut submitted = BTreeSet::new();
    for submitter in submitters {
        let results = submitter.await.map_err(|error| error.to_string())??;
        for result in results {
            if !result.error.is_empty() {
                return Err(format!("a spec was refused: {}", result.error));
            }
            submitted.insert(result.job);
        }
    }
    let (mut ran, mut failed) = (BTreeSet::new(), BTreeSet::new());
    while ran.len() + failed.len() < submitted.len() {
        let event = tokio::time::timeout(NO_PROGRESS_TIMEOUT, events.message())
            .await
            .map_err(|_| format!("burst: no progress ({} ran)", ran.len()))?
            .map_err(|status| format!("watch: {status}"))?
            .ok_or("the watch stream ended")?;
        for state in ["Running", "Completed"] {
            if let Some(job) = job_reaching(&event, state).filter(|job| submitted.contains(job)) {
                ran.insert(job);
            }
        }
        if let Some(job) = job_reaching(&event, "Failed").filter(|job| !ran.contains(job)) {
            failed.insert(job);
        }
    }
    Ok((started.elapsed().as_secs_f64(), failed.len()))
}

/// A 2-replica gang of `sleep` with half of the flavor's 64 cores per replica. The
/// sleeps end on their own (a killed agent's shims outlive it).
fn sleeping_gang(pool: u64, name: &str) -> pb::JobSpec {
    let mut spec = agents::true_job(pool, name);
    spec.replicas = 2;
    spec.command = vec!["sleep".into(), "300".into()];
    if let Some(resources) = spec.per_replica.as_mut() {
        resources.cpu_millicores = 32_000;
    }
    spec
}

/// SubmitJobs, sent again while the cluster is between leaders (a loaded machine sees
/// elections under the burst). Without a request id a retry may duplicate an entry
/// that was proposed after all; only the jobs of the answer are counted.
async fn submit_jobs(
    tenant: &AdminStub,
    specs: Vec<pb::JobSpec>,
) -> Result<Vec<pb::SubmitResult>, String> {
    let mut attempts = 0;
    loop {
        let answer = tenant
            .clone()
            .submit_jobs(pb::SubmitJobsRequest {
                specs: specs.clone(),
            })
            .await;
        match answer {
            Ok(response) => return Ok(response.into_inner().results),
            Err(status) if attempts < 40 && status.code() == tonic::Code::Unavailable => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => return Err(format!("submit jobs: {status}")),
        }
    }
}

/// A job, asked again while the cluster is between leaders (a loaded machine sees
/// elections under the burst).
async fn get_job(admin: &AdminStub, job: u64) -> Result<pb::Job, String> {
    let mut attempts = 0;
    loop {
        let answer = admin
            .clone()
            .get_job(pb::GetJobRequest {
                job,
                // Any replica answers (the replica asked may have lost the lead); the
                // gangs are Running, so a lagging view still names their nodes.
                read: Some(pb::ReadOptions { stale: true }),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(detail) => return Ok(detail.into_inner()),
            Err(status) if attempts < 20 && status.code() == tonic::Code::Unavailable => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) => return Err(format!("get job {job}: {status}")),
        }
    }
}

/// Node name → the agent process that runs it (`<prefix>-<agent>-<n>`).
fn agent_of(name: &str) -> Option<usize> {
    let mut parts = name.rsplitn(3, '-');
    let _node = parts.next()?;
    parts.next()?.parse().ok()
}

/// The node-loss case: `gangs` gangs placed, those of agent 1's nodes displaced by
/// killing it; how long until its nodes are lost and the gangs run elsewhere.
async fn node_loss(
    admin: &AdminStub,
    tenant: &AdminStub,
    pool: u64,
    gangs: usize,
    agent_processes: &mut agents::AgentProcesses,
) -> Result<LossRow, String> {
    let mut row = LossRow::default();
    let from_index = agents::current_index(admin).await? + 1;
    let mut events = admin
        .clone()
        .watch(pb::WatchRequest { from_index })
        .await
        .map_err(|status| format!("watch: {status}"))?
        .into_inner();
    let specs = (0..gangs)
        .map(|index| sleeping_gang(pool, &format!("gang-{index}")))
        .collect();
    let results = submit_jobs(tenant, specs).await?;
    let jobs: BTreeSet<u64> = results.iter().map(|result| result.job).collect();
    let mut running = BTreeSet::new();
    while running.len() < jobs.len() {
        let event = tokio::time::timeout(NO_PROGRESS_TIMEOUT, events.message())
            .await
            .map_err(|_| format!("gangs: {} of {} running", running.len(), jobs.len()))?
            .map_err(|status| format!("watch: {status}"))?
            .ok_or("the watch stream ended")?;
        if let Some(job) = job_reaching(&event, "Running").filter(|job| jobs.contains(job)) {
            running.insert(job);
        }
    }
    // Which agent each gang's nodes belong to; the victim is the agent running most.
    let nodes = admin
        .clone()
        .list_nodes(pb::ListNodesRequest {
            read: Some(pb::ReadOptions { stale: true }),
            ..Default::default()
        })
        .await
        .map_err(|status| format!("list nodes: {status}"))?
        .into_inner()
        .nodes;
    let agent_of_node: BTreeMap<u64, usize> = nodes
        .iter()
        .filter_map(|node| Some((node.id, agent_of(&node.name)?)))
        .collect();
    let mut gangs_of_agent: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for job in &jobs {
        let detail = get_job(admin, *job).await?;
        for replica in detail.replicas {
            if let Some(agent) = agent_of_node.get(&replica.node) {
                gangs_of_agent.entry(*agent).or_default().insert(*job);
            }
        }
    }
    let (victim, displaced) = gangs_of_agent
        .iter()
        .max_by_key(|(_, gangs)| gangs.len())
        .map(|(agent, gangs)| (*agent, gangs.clone()))
        .ok_or("no gang runs on a known agent")?;
    let victim_nodes: BTreeSet<u64> = agent_of_node
        .iter()
        .filter(|(_, agent)| **agent == victim)
        .map(|(node, _)| *node)
        .collect();
    row.displaced = displaced.len();
    let from_index = agents::current_index(admin).await? + 1;
    let mut events = admin
        .clone()
        .watch(pb::WatchRequest { from_index })
        .await
        .map_err(|status| format!("watch: {status}"))?
        .into_inner();
    let killed = Instant::now();
    agent_processes.kill(victim - 1);
    let (mut lost, mut rerun, mut failed) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    while lost.len() < victim_nodes.len() || rerun.len() + failed.len() < displaced.len() {
        let event = tokio::time::timeout(NO_PROGRESS_TIMEOUT, events.message())
            .await
            .map_err(|_| {
                format!(
                    "node loss: {} of {} nodes lost, {} of {} gangs rerun, {} failed",
                    lost.len(),
                    victim_nodes.len(),
                    rerun.len(),
                    displaced.len(),
                    failed.len()
                )
            })?
            .map_err(|status| format!("watch: {status}"))?
            .ok_or("the watch stream ended")?;
        if event.kind == "NodeStatusChanged" && event.detail.ends_with("-> Abnormal") {
            if let Some(node) = event
                .detail
                .split(':')
                .next()
                .and_then(|name| name.trim().strip_prefix("node-"))
                .and_then(|id| id.parse::<u64>().ok())
                .filter(|node| victim_nodes.contains(node))
            {
                lost.insert(node);
                if lost.len() == victim_nodes.len() {
                    row.mark_seconds = killed.elapsed().as_secs_f64();
                }
            }
        }
        if let Some(job) = job_reaching(&event, "Running").filter(|job| displaced.contains(job)) {
            rerun.insert(job);
            row.rerun_seconds = killed.elapsed().as_secs_f64();
        }
        if let Some(job) = job_reaching(&event, "Failed").filter(|job| jobs.contains(job)) {
            failed.insert(job);
        }
    }
    row.nodes_lost = lost.len();
    row.running_elsewhere = rerun.len();
    row.failed = failed.len();
    Ok(row)
}

async fn one_size(
    binary: &Path,
    work: &Path,
    nodes: usize,
    options: &ScaleOptions,
) -> Result<ScaleRow, String> {
    let mut row = ScaleRow {
        nodes,
        burst_jobs: options.burst_jobs,
        ..Default::default()
    };
    let cluster = CorralCluster::start(binary, &work.join("corral"), 3);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let admin = cluster.admin(leader, ADMIN_TOKEN);
    agents::define_flavor(&admin).await?;
    let managers: Vec<String> = cluster
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect();
    // The node-loss case kills one agent, so there are at least two.
    let agent_count = nodes
        .div_ceil(NODES_PER_AGENT)
        .max(if options.loss_gangs > 0 { 2 } else { 1 });
    let per_agent = u32::try_from(nodes.div_ceil(agent_count)).map_err(|_| "too many nodes")?;
    let registering = Instant::now();
    let mut agent_processes = agents::start_agents(
        binary,
        &work.join("agents"),
        &managers,
        agent_count,
        "scale",
        Some(per_agent),
    );
    let total = agent_count * per_agent as usize;
    agents::wait_for_nodes(&admin, total, REGISTER_TIMEOUT).await?;
    row.register_seconds = registering.elapsed().as_secs_f64();
    row.nodes = total;
    println!(
        "  {total} nodes registered in {:.1} s",
        row.register_seconds
    );
    let (pool, tenant_token) = agents::seed(&admin, total).await?;
    let tenant = corral_cluster::admin(
        &cluster.replicas[leader].address,
        &tenant_token,
        Duration::from_secs(60),
    );
    // Let the registrations' streams settle before the quiet window, and measure the
    // replica that leads then.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let admin = cluster.admin(leader, ADMIN_TOKEN);
    steady_state(&cluster, leader, &admin, options.steady_seconds, &mut row).await?;
    println!(
        "  steady: leader {:.1}% CPU {:.0} MiB, follower {:.1}% CPU {:.0} MiB, {:.2} entries/s",
        row.leader_cpu_percent,
        row.leader_rss_mib,
        row.follower_cpu_percent,
        row.follower_rss_mib,
        row.entries_per_second
    );
    let latencies = agents::running_latency(&admin, &tenant, pool, options.latency_samples).await?;
    row.submit_p50_ms = percentile_of(&latencies.submit, 50.0);
    row.submit_p99_ms = percentile_of(&latencies.submit, 99.0);
    row.running_p50_ms = percentile_of(&latencies.running, 50.0);
    row.running_p99_ms = percentile_of(&latencies.running, 99.0);
    println!(
        "  submit p50 {:.1} / p99 {:.1} ms; submit-to-running p50 {:.1} / p99 {:.1} ms",
        row.submit_p50_ms, row.submit_p99_ms, row.running_p50_ms, row.running_p99_ms
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let admin = cluster.admin(leader, ADMIN_TOKEN);
    row.term_before = status(&admin).await?.term;
    let (seconds, failed) = burst(
        &admin,
        &tenant,
        pool,
        options.burst_jobs,
        options.burst_calls,
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let admin = cluster.admin(leader, ADMIN_TOKEN);
    row.term_after = status(&admin).await?.term;
    row.burst_jobs_per_second = options.burst_jobs as f64 / seconds;
    row.burst_failed = failed;
    println!(
        "  burst: {} jobs in {seconds:.2} s ({:.0} jobs/s), {failed} failed, term {} -> {}",
        options.burst_jobs, row.burst_jobs_per_second, row.term_before, row.term_after
    );
    if options.loss_gangs > 0 {
        // The burst's `true` jobs are done; the gangs get the nodes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loss = node_loss(
            &admin,
            &tenant,
            pool,
            options.loss_gangs,
            &mut agent_processes,
        )
        .await?;
        println!(
            "  node loss: {} nodes lost in {:.1} s; {} of {} displaced gangs running elsewhere after {:.1} s; {} failed",
            loss.nodes_lost,
            loss.mark_seconds,
            loss.running_elsewhere,
            loss.displaced,
            loss.rerun_seconds,
            loss.failed
        );
        row.loss = Some(loss);
    }
    Ok(row)
}

pub async fn bench(
    binary: &Path,
    work: &Path,
    options: &ScaleOptions,
) -> Result<Vec<ScaleRow>, String> {
    let mut rows = Vec::new();
    for nodes in &options.sizes {
        println!("scale: {nodes} nodes");
        let row = one_size(
            binary,
            &work.join(format!("nodes-{nodes}")),
            *nodes,
            options,
        )
        .await?;
        rows.push(row);
    }
    Ok(rows)
}

pub fn markdown(rows: &[ScaleRow], load_before: &str, load_after: &str) -> String {
    let mut text = format!("Load average before → after: {load_before} → {load_after}\n\n");
    text.push_str(
        "| Nodes | Register s | Leader CPU % / RSS MiB | Follower CPU % / RSS MiB | Entries/s | Submit p50 / p99 ms | Submit→running p50 / p99 ms | Burst: jobs, jobs/s (failed) | Term before → after |\n",
    );
    text.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        text.push_str(&format!(
            "| {} | {:.1} | {:.1} / {:.0} | {:.1} / {:.0} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {}, {:.0} ({}) | {} → {} |\n",
            row.nodes,
            row.register_seconds,
            row.leader_cpu_percent,
            row.leader_rss_mib,
            row.follower_cpu_percent,
            row.follower_rss_mib,
            row.entries_per_second,
            row.submit_p50_ms,
            row.submit_p99_ms,
            row.running_p50_ms,
            row.running_p99_ms,
            row.burst_jobs,
            row.burst_jobs_per_second,
            row.burst_failed,
            row.term_before,
            row.term_after
        ));
    }
    if let Some(first) = rows.first() {
        text.push_str(
            "\nRatios to the first row (submit p99, submit→running p99, burst rate):\n\n",
        );
        for row in rows {
            text.push_str(&format!(
                "- {} nodes: {:.2}×, {:.2}×, {:.2}×\n",
                row.nodes,
                row.submit_p99_ms / first.submit_p99_ms,
                row.running_p99_ms / first.running_p99_ms,
                row.burst_jobs_per_second / first.burst_jobs_per_second
            ));
        }
    }
    let losses: Vec<(usize, &LossRow)> = rows
        .iter()
        .filter_map(|row| Some((row.nodes, row.loss.as_ref()?)))
        .collect();
    if !losses.is_empty() {
        text.push_str("\n| Nodes | Nodes lost | Marked lost after s | Displaced gangs running elsewhere | Last rerun after s | Jobs failed |\n");
        text.push_str("|---:|---:|---:|---:|---:|---:|\n");
        for (nodes, loss) in losses {
            text.push_str(&format!(
                "| {nodes} | {} | {:.1} | {} of {} | {:.1} | {} |\n",
                loss.nodes_lost,
                loss.mark_seconds,
                loss.running_elsewhere,
                loss.displaced,
                loss.rerun_seconds,
                loss.failed
            ));
        }
    }
    text
}
