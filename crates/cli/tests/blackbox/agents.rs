//! Black-box tests of node agents: 3 real `corral server` processes and 3 real
//! `corral agent` processes on loopback; replicas are real child processes running
//! shell scripts that leave evidence in files. Agents are killed with SIGKILL.

use crate::common;

use common::agents::{process_alive, AgentSettings, Agents};
use common::{resources, Cluster, ADMIN_TOKEN};
use corral_client::{pb, ClientOptions, CorralClient};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FLAVOR: &str = "cpu-2x-gpu";
const OLD_DRIVER: &str = "535.104";
/// Agents heartbeat every 200 ms; a node silent for 1.5 s is lost.
const LOOPS: &str = "scheduler_interval_ms = 100
metering_interval_ms = 300
node_grace_ms = 1500
agent_heartbeat_interval_ms = 200
upgrade_interval_ms = 200
";

/// As `LOOPS`, but a node is lost only after 60 s of silence: far longer than an
/// agent's restart takes even on a loaded machine, so a restart never races the grace.
const PATIENT_LOOPS: &str = "scheduler_interval_ms = 100
metering_interval_ms = 300
node_grace_ms = 60000
agent_heartbeat_interval_ms = 200
upgrade_interval_ms = 200
";

struct World {
    cluster: Cluster,
    agents: Agents,
    admin: CorralClient,
    tenant: CorralClient,
    /// The tenant's token, for the `corral` binary.
    tenant_token: String,
    pool: u64,
    /// Where job scripts leave their evidence.
    evidence: PathBuf,
}

impl World {
    async fn start() -> World {
        World::start_with_loops(LOOPS).await
    }

    /// As `start`, with this `[loops]` table for the managers.
    async fn start_with_loops(loops: &str) -> World {
        let cluster = Cluster::start_with_loops(3, "sled", loops);
        cluster.wait_for_leader(Duration::from_secs(20)).await;
        let managers: Vec<String> = cluster
            .replicas
            .iter()
            .map(|replica| replica.address.clone())
            .collect();
        let options = ClientOptions {
            timeout: Duration::from_secs(15),
            transport: common::tls::transport(),
            ..ClientOptions::default()
        };
        let admin =
            CorralClient::connect(managers.clone(), Some(ADMIN_TOKEN.into()), options.clone())
                .expect("admin client");
        admin
            .define_flavor(pb::Flavor {
                name: FLAVOR.into(),
                capacity: Some(resources(2_000, 4_096, 2)),
                accelerator_type: "nvidia-t4".into(),
                cpu_architecture: "x86_64".into(),
                price_micros_per_hour: 1_000_000,
            })
            .await
            .expect("define flavor");
        let agents = Agents::start(
            cluster.directory.path(),
            3,
            &AgentSettings {
                managers: &managers,
                flavor: FLAVOR,
                zone: "zone-a",
                gpu_driver_version: OLD_DRIVER,
                heartbeat_interval_ms: 200,
                termination_grace_ms: 1_000,
            },
        );
        let registered = eventually(Duration::from_secs(20), "three agents register", || async {
            let nodes = admin
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .ok()?;
            (nodes.nodes.len() == 3).then_some(())
        })
        .await;
        if registered.is_none() {
            panic!("agents did not register\n{}", agents.logs());
        }
        let tenant = admin
            .create_tenant(pb::CreateTenantRequest {
                name: "alpha".into(),
                quota: Some(pb::Resources {
                    cpu_millicores: 1_000_000,
                    memory_mib: 1_000_000,
                    accelerators: 1_000,
                    disk_gib: 1_000_000,
                    bandwidth_mbps: 1_000_000,
                }),
                may_use_high_priority: false,
                max_active_jobs: 0,
            })
            .await
            .expect("create tenant");
        let token = admin
            .create_token(pb::CreateTokenRequest {
                name: "alpha-token".into(),
                tenant: tenant.id,
                ..Default::default()
            })
            .await
            .expect("create token");
        let network = admin
            .create_network(pb::CreateNetworkRequest {
                tenant: tenant.id,
                name: "alpha-net".into(),
                cidr: "192.168.20.0/24".into(),
            })
            .await
            .expect("create network");
        admin
            .set_network_storage(pb::SetNetworkStorageRequest {
                network: network.id,
                endpoints: vec!["sfs-turbo.alpha:2049".into(), "obs.alpha:443".into()],
            })
            .await
            .expect("attach storage");
        let pool = admin
            .create_pool(pb::CreatePoolRequest {
                name: "alpha-pool".into(),
                kind: "dedicated".into(),
                owner: tenant.id,
                flavors: vec![pb::PoolFlavor {
                    flavor: FLAVOR.into(),
                    zone: "zone-a".into(),
                    node_count: 3,
                }],
                job_types: vec!["training".into(), "inference".into(), "notebook".into()],
                network: network.id,
                driver: Some(pb::DriverSpec {
                    gpu_driver_version: OLD_DRIVER.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create pool");
        let tenant_token = token.secret.clone();
        let tenant_client =
            CorralClient::connect(managers, Some(token.secret), options).expect("tenant client");
        // The agents isolate replicas (as root, a user per tenant): the evidence
        // directory is the one place every replica may write, and the cluster's
        // directory lets them through to it (and lists nothing).
        let evidence = cluster.directory.path().join("evidence");
        std::fs::create_dir_all(&evidence).expect("evidence dir");
        {
            use std::os::unix::fs::PermissionsExt;
            let permit = |path: &std::path::Path, mode: u32| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            };
            permit(&evidence, 0o1777);
            permit(cluster.directory.path(), 0o711);
        }
        World {
            cluster,
            agents,
            admin,
            tenant: tenant_client,
            tenant_token,
            pool: pool.id,
            evidence,
        }
    }

    /// A job whose replicas run `script` with `sh -c`, each taking a whole node.
    fn spec(&self, kind: &str, name: &str, replicas: u32, script: &str) -> pb::JobSpec {
        let mut environment = std::collections::BTreeMap::new();
        environment.insert("EVIDENCE".to_string(), self.evidence.display().to_string());
        pb::JobSpec {
            name: name.into(),
            pool: self.pool,
            kind: kind.into(),
            replicas,
            per_replica: Some(resources(1_500, 1_024, 1)),
            accelerator_type: "nvidia-t4".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            environment,
            ..Default::default()
        }
    }

    async fn submit(&self, spec: pb::JobSpec) -> u64 {
        self.tenant
            .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
            .await
            .expect("submit")
            .job
    }

    async fn job(&self, job: u64) -> pb::Job {
        self.admin
            .get_job(pb::GetJobRequest {
                job,
                ..Default::default()
            })
            .await
            .expect("get job")
    }

    async fn node(&self, node: u64) -> pb::Node {
        self.admin
            .get_node(pb::GetNodeRequest {
                node,
                ..Default::default()
            })
            .await
            .expect("get node")
    }

    /// Wait until the job is in `state` (and `extra` holds), or fail with context.
    async fn wait_job(
        &self,
        job: u64,
        timeout: Duration,
        what: &str,
        extra: impl Fn(&pb::Job) -> bool,
    ) -> pb::Job {
        let found = eventually(timeout, what, || async {
            let current = self.job(job).await;
            extra(&current).then_some(current)
        })
        .await;
        match found {
            Some(job) => job,
            None => panic!(
                "{what}: job is {:?}\nnodes: {:?}\n{}",
                self.job(job).await,
                self.admin.list_nodes(pb::ListNodesRequest::default()).await,
                self.agents.logs()
            ),
        }
    }

    async fn wait_state(&self, job: u64, state: &str, timeout: Duration) -> pb::Job {
        self.wait_job(
            job,
            timeout,
            &format!("job {job} reaches {state}"),
            |current| current.state == state,
        )
        .await
    }

    /// The agent (index) running on a node id.
    async fn agent_of_node(&self, node: u64) -> usize {
        let name = self.node(node).await.name;
        self.agents.index_of(&name)
    }

    /// The tenant asks for a GPU driver upgrade of its pool.
    async fn upgrade_drivers(
        &self,
        version: &str,
        mode: &str,
        batch_size: u32,
        batch_percent: u32,
    ) {
        self.tenant
            .request_driver_upgrade(pb::RequestDriverUpgradeRequest {
                pool: self.pool,
                target: Some(pb::DriverSpec {
                    gpu_driver_version: version.into(),
                    ..Default::default()
                }),
                mode: mode.into(),
                batch_size,
                batch_percent,
            })
            .await
            .unwrap_or_else(|error| panic!("request a {mode} upgrade: {error:?}"));
    }

    /// Wait until every replica of the job reports its process started.
    async fn wait_all_started(&self, job: u64) -> pb::Job {
        self.wait_job(
            job,
            Duration::from_secs(10),
            "every replica started",
            |job| {
                job.replicas
                    .iter()
                    .all(|replica| replica.state == "Running")
            },
        )
        .await
    }

    /// Wait until the leader holds a heartbeat of the node's agent sent after `since`,
    /// and return what it reported: evidence that the agent has run since then.
    async fn wait_heartbeat_after(&self, node: u64, since: Instant) -> pb::NodeMetrics {
        let report = eventually(Duration::from_secs(10), "a fresh heartbeat", || async {
            // Measured before asking, so a heartbeat younger than this came after `since`.
            let elapsed_ms = since.elapsed().as_millis();
            let metrics = self
                .admin
                .node_metrics(pb::NodeMetricsRequest { pool: 0, node })
                .await
                .ok()?;
            metrics.nodes.into_iter().find(|report| {
                report.node == node
                    && report.reporting
                    && u128::from(report.heartbeat_age_ms) < elapsed_ms
            })
        })
        .await;
        report.unwrap_or_else(|| {
            panic!(
                "no heartbeat of node {node} since the mark\n{}",
                self.agents.logs()
            )
        })
    }

    /// Wait until the cluster has committed `entries` more entries than now: with meter
    /// ticks every 300 ms, evidence that the leader's loops have run meanwhile.
    async fn wait_commits(&self, entries: u64) {
        let committed = || async {
            self.admin
                .cluster_status(false)
                .await
                .expect("cluster status")
                .committed
        };
        let target = committed().await + entries;
        eventually(Duration::from_secs(10), "more commits", || async {
            (committed().await >= target).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("the cluster did not commit up to {target}"));
    }

    fn evidence_file(&self, name: &str) -> PathBuf {
        self.evidence.join(name)
    }
}

/// Poll `probe` every 100 ms until it answers Some, for at most `timeout`.
/// Run the `corral` binary as the tenant against every manager.
fn tenant_corral(world: &World, args: &[&str]) -> std::process::Output {
    let managers: Vec<String> = world
        .cluster
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect();
    common::corral_command(&managers.join(","), &world.tenant_token)
        .args(args)
        .output()
        .expect("run corral")
}

fn succeeded(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_limit_refuses_a_job_too_large_and_holds_the_next_until_room() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    let pool = world.pool.to_string();
    // The pool's owner sets up its queues with the CLI: "small" holds one accelerator at
    // most (and is where jobs naming none go), "big" has no limit.
    succeeded(&tenant_corral(
        &world,
        &[
            "queue",
            "create",
            &pool,
            "small",
            "--guarantee",
            "cpu=1500,memory=1024,gpu=1",
            "--limit",
            "gpu=1",
            "--default",
        ],
    ));
    succeeded(&tenant_corral(&world, &["queue", "create", &pool, "big"]));
    let listed = succeeded(&tenant_corral(&world, &["queue", "list", &pool]));
    assert!(
        listed.contains("small") && listed.contains("big"),
        "{listed}"
    );

    // A gang of two accelerators can never fit the small queue: refused at submission.
    let too_large = tenant_corral(
        &world,
        &[
            "job",
            "submit",
            "--name",
            "too-large",
            "--pool",
            &pool,
            "--replicas",
            "2",
            "--cpu-millicores",
            "1500",
            "--memory-mib",
            "1024",
            "--accelerators",
            "1",
            "--accelerator-type",
            "nvidia-t4",
            "--",
            "true",
        ],
    );
    assert!(!too_large.status.success(), "{too_large:?}");
    assert!(
        String::from_utf8_lossy(&too_large.stderr).contains("limit"),
        "{too_large:?}"
    );

    // The first job fills the small queue; the second waits for it, though a node is
    // free, while a job of the big queue submitted after it is placed.
    let hold = r#"while [ ! -f "$EVIDENCE/release" ]; do sleep 0.1; done"#;
    let first = world.submit(world.spec("training", "first", 1, hold)).await;
    world
        .wait_state(first, "Running", Duration::from_secs(20))
        .await;
    let second = world
        .submit(world.spec("training", "second", 1, "true"))
        .await;
    let mut other = world.spec("training", "other", 1, hold);
    other.queue = "big".into();
    let other = world.submit(other).await;
    world
        .wait_state(other, "Running", Duration::from_secs(20))
        .await;
    let waiting = world.job(second).await;
    assert_eq!(waiting.state, "Pending", "{waiting:?}");
    assert_eq!(
        waiting.spec.as_ref().map(|spec| spec.queue.as_str()),
        Some("small")
    );
    let status = succeeded(&tenant_corral(
        &world,
        &["queue", "status", &pool, "-o", "json"],
    ));
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    let small = status["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|queue| queue["spec"]["name"] == "small"))
        .cloned()
        .expect("the small queue");
    assert_eq!(small["used"]["accelerators"], 1, "{status}");
    assert_eq!(small["pending_jobs"], 1, "{status}");

    // Once the first job ends, the second gets its place.
    std::fs::write(world.evidence_file("release"), "").expect("release file");
    world
        .wait_state(second, "Completed", Duration::from_secs(30))
        .await;
}

async fn eventually<T, F, Fut>(timeout: Duration, _what: &str, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn placed_nodes(job: &pb::Job) -> Vec<u64> {
    job.replicas
        .iter()
        .map(|replica| replica.node)
        .filter(|node| *node != 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn training_replicas_see_their_rank_world_and_master_and_logs_stream_back() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    let script = r#"echo "rank $CORRAL_RANK of $CORRAL_WORLD_SIZE master $CORRAL_MASTER_ADDR gpus $CUDA_VISIBLE_DEVICES job $CORRAL_JOB_ID storage $CORRAL_STORAGE_ENDPOINTS" > "$EVIDENCE/rank-$CORRAL_RANK"; echo "hello from rank $CORRAL_RANK"; echo "oops on stderr" >&2"#;
    let job = world
        .submit(world.spec("training", "ranks", 2, script))
        .await;
    let done = world
        .wait_state(job, "Completed", Duration::from_secs(30))
        .await;
    assert_eq!(done.retries_used, 0);
    let master_host_port = {
        let zero = read(&world.evidence_file("rank-0"));
        zero.split_whitespace()
            .nth(5)
            .unwrap_or_default()
            .to_string()
    };
    for rank in 0..2 {
        let line = read(&world.evidence_file(&format!("rank-{rank}")));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], rank.to_string(), "rank in {line:?}");
        assert_eq!(words[3], "2", "world size in {line:?}");
        assert_eq!(
            words[5], master_host_port,
            "both ranks see one master: {line:?}"
        );
        assert_eq!(
            words[7], "0",
            "one GPU each, device 0 of its node: {line:?}"
        );
        assert_eq!(words[9], job.to_string(), "job id in {line:?}");
        assert_eq!(
            words[11], "sfs-turbo.alpha:2049,obs.alpha:443",
            "the network's storage in {line:?}"
        );
    }
    assert!(
        master_host_port.starts_with("127.0.0.1:"),
        "{master_host_port}"
    );

    // Logs stream back from the agent through the managers, stdout and stderr.
    let mut stream = world
        .tenant
        .job_logs(pb::JobLogsRequest {
            job,
            rank: 1,
            follow: false,
            tail_bytes: 0,
        })
        .await
        .expect("open logs");
    let mut output = Vec::new();
    while let Some(chunk) = stream.message().await.expect("log chunk") {
        output.extend_from_slice(&chunk.data);
    }
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("hello from rank 1"), "{output:?}");
    assert!(output.contains("oops on stderr"), "{output:?}");

    // The same through the CLI binary.
    let cli = std::process::Command::new(common::corral_binary())
        .args(["job", "logs", &job.to_string(), "--replica", "0"])
        .env("CORRAL_ADDR", world.cluster.replicas[0].address.clone())
        .env("CORRAL_CA_FILE", &common::tls::pki().ca_file)
        .env("CORRAL_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run corral job logs");
    assert!(cli.status.success(), "{cli:?}");
    assert!(String::from_utf8_lossy(&cli.stdout).contains("hello from rank 0"));

    // Usage arrives with heartbeats and is shown per node and per pool.
    let metrics = world
        .admin
        .node_metrics(pb::NodeMetricsRequest {
            pool: world.pool,
            node: 0,
        })
        .await
        .expect("node metrics");
    assert_eq!(metrics.nodes.len(), 3);
    assert!(metrics
        .nodes
        .iter()
        .all(|node| node.reporting && node.heartbeat_age_ms < 1_500));
    let cli = std::process::Command::new(common::corral_binary())
        .args(["pool", "metrics", &world.pool.to_string()])
        .env("CORRAL_ADDR", world.cluster.replicas[1].address.clone())
        .env("CORRAL_CA_FILE", &common::tls::pki().ca_file)
        .env("CORRAL_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("run corral pool metrics");
    assert!(cli.status.success(), "{cli:?}");
    assert!(
        String::from_utf8_lossy(&cli.stdout).contains("total"),
        "{cli:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_loses_its_node_and_the_gang_restarts_elsewhere() {
    let _machine = common::machine_alone().await;
    let mut world = World::start().await;
    // Each attempt records its pid; the job runs until a file appears.
    let script = r#"echo $$ >> "$EVIDENCE/pids-$CORRAL_RANK"; while [ ! -f "$EVIDENCE/finish" ]; do sleep 0.1; done"#;
    let mut spec = world.spec("training", "gang", 2, script);
    spec.retry_limit = 2;
    let job = world.submit(spec).await;
    let running = world
        .wait_state(job, "Running", Duration::from_secs(20))
        .await;
    world.wait_all_started(job).await;
    let victim_node = running.replicas[0].node;
    let victim = world.agent_of_node(victim_node).await;
    let stale_pid: u32 = eventually(Duration::from_secs(5), "rank 0 pid", || async {
        read(&world.evidence_file("pids-0")).trim().parse().ok()
    })
    .await
    .expect("rank 0 wrote its pid");
    world.agents.kill(victim);

    let restarted = world
        .wait_job(
            job,
            Duration::from_secs(20),
            "the gang restarts on live nodes",
            |job| {
                // A lost node is a disruption: no retry spent.
                job.state == "Running"
                    && job.retries_used == 0
                    && job.disruptions == 1
                    && placed_nodes(job).len() == 2
                    && !placed_nodes(job).contains(&victim_node)
            },
        )
        .await;
    assert_eq!(restarted.replicas.len(), 2);
    let lost = world.node(victim_node).await;
    assert_eq!(lost.status, "Abnormal");
    assert!(
        process_alive(stale_pid),
        "without its agent, the old process keeps running"
    );

    // The agent comes back: the node is Available again and its stale process is killed.
    world.agents.spawn(victim);
    eventually(Duration::from_secs(15), "node recovers", || async {
        (world.node(victim_node).await.status == "Available").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("node did not recover\n{}", world.agents.logs()));
    eventually(Duration::from_secs(10), "stale process killed", || async {
        (!process_alive(stale_pid)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("stale pid {stale_pid} still runs\n{}", world.agents.logs()));

    std::fs::write(world.evidence_file("finish"), "").expect("finish file");
    let done = world
        .wait_state(job, "Completed", Duration::from_secs(20))
        .await;
    assert_eq!((done.retries_used, done.disruptions), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inference_replica_moves_off_a_lost_node() {
    let _machine = common::machine_alone().await;
    let mut world = World::start().await;
    let script =
        r#"echo "$CORRAL_NODE_NAME" >> "$EVIDENCE/served-on"; while true; do sleep 0.2; done"#;
    let job = world
        .submit(world.spec("inference", "serve", 1, script))
        .await;
    let running = world
        .wait_state(job, "Running", Duration::from_secs(20))
        .await;
    let first_node = running.replicas[0].node;
    let victim = world.agent_of_node(first_node).await;
    world.agents.kill(victim);
    let moved = world
        .wait_job(
            job,
            Duration::from_secs(20),
            "the replica runs on another node",
            |job| {
                job.state == "Running"
                    && job.replicas[0].state == "Running"
                    && job.replicas[0].node != first_node
                    && job.replicas[0].node != 0
            },
        )
        .await;
    let second_node_name = world.node(moved.replicas[0].node).await.name;
    let served = eventually(Duration::from_secs(5), "second host wrote", || async {
        let text = read(&world.evidence_file("served-on"));
        text.contains(&second_node_name).then_some(text)
    })
    .await;
    assert!(
        served.is_some(),
        "the moved replica ran on {second_node_name}"
    );
    world
        .admin
        .terminate_job(pb::JobRef { job })
        .await
        .expect("terminate");
    world
        .wait_state(job, "Terminated", Duration::from_secs(15))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_waits_for_the_running_job() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    let script = r#"while [ ! -f "$EVIDENCE/finish" ]; do sleep 0.1; done; echo done > "$EVIDENCE/finished-$CORRAL_RANK""#;
    let job = world
        .submit(world.spec("training", "long", 1, script))
        .await;
    let running = world
        .wait_state(job, "Running", Duration::from_secs(20))
        .await;
    let node = running.replicas[0].node;
    world
        .admin
        .drain_node(pb::DrainNodeRequest {
            node,
            deadline_ms: 0,
        })
        .await
        .expect("drain");
    let drained = world.node(node).await;
    assert!(!drained.schedulable);
    // New work avoids the draining node while the running job keeps its place.
    let other = world
        .submit(world.spec("training", "other", 1, "sleep 0.2"))
        .await;
    let other_done = world
        .wait_state(other, "Completed", Duration::from_secs(20))
        .await;
    // Nothing may happen to the running job: give the system its chance first (the
    // node's agent has reported since, still running it, and the leader's loops ran).
    let mark = Instant::now();
    let report = world.wait_heartbeat_after(node, mark).await;
    assert_eq!(report.running_processes, 1, "{report:?}");
    world.wait_commits(2).await;
    let still = world.job(job).await;
    assert_eq!(still.state, "Running");
    assert_eq!(still.replicas[0].node, node);
    assert_eq!(still.retries_used, 0);
    let _ = other_done;
    std::fs::write(world.evidence_file("finish"), "").expect("finish");
    let done = world
        .wait_state(job, "Completed", Duration::from_secs(20))
        .await;
    assert_eq!(done.retries_used, 0);
    assert!(read(&world.evidence_file("finished-0")).contains("done"));
    assert_eq!(world.node(node).await.replicas, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secure_upgrades_never_interrupt_work_and_forcible_ones_restart_it() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    // Secure: a running job on every node; isolation waits for it.
    let script = r#"echo $$ >> "$EVIDENCE/secure-$CORRAL_RANK"; while [ ! -f "$EVIDENCE/finish-secure" ]; do sleep 0.1; done"#;
    let job = world
        .submit(world.spec("training", "busy", 3, script))
        .await;
    world
        .wait_state(job, "Running", Duration::from_secs(20))
        .await;
    world.upgrade_drivers("550.54", "secure", 0, 33).await;
    let isolated = eventually(Duration::from_secs(10), "a node is isolated", || async {
        let nodes = world
            .admin
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .ok()?;
        let isolated: Vec<u64> = nodes
            .nodes
            .iter()
            .filter(|node| !node.upgrading.is_empty())
            .map(|node| node.id)
            .collect();
        (!isolated.is_empty()).then_some(isolated)
    })
    .await
    .expect("a node isolated for the upgrade");
    assert_eq!(
        isolated.len(),
        1,
        "33% of 3 nodes rounds up to one at a time"
    );
    // Nothing may happen to the work while it runs: give the system its chance first
    // (the isolated node's agent has reported since, still running its replica, and
    // the leader's loops, the upgrade loop among them, ran).
    let mark = Instant::now();
    let report = world.wait_heartbeat_after(isolated[0], mark).await;
    assert_eq!(report.running_processes, 1, "{report:?}");
    world.wait_commits(2).await;
    let busy = world.job(job).await;
    assert_eq!(
        busy.state, "Running",
        "secure isolation does not interrupt work"
    );
    assert_eq!(busy.retries_used, 0);
    let node = world.node(isolated[0]).await;
    assert_eq!(
        node.gpu_driver_version, OLD_DRIVER,
        "no upgrade while work runs"
    );
    std::fs::write(world.evidence_file("finish-secure"), "").expect("finish");
    let done = world
        .wait_state(job, "Completed", Duration::from_secs(20))
        .await;
    assert_eq!(done.retries_used, 0);
    eventually(Duration::from_secs(30), "every node upgraded", || async {
        let nodes = world
            .admin
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .ok()?;
        nodes
            .nodes
            .iter()
            .all(|node| {
                node.gpu_driver_version == "550.54" && node.upgrading.is_empty() && node.schedulable
            })
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("secure upgrade did not finish\n{}", world.agents.logs()));
    for pid_file in ["secure-0", "secure-1", "secure-2"] {
        assert_eq!(
            read(&world.evidence_file(pid_file)).lines().count(),
            1,
            "never restarted"
        );
    }
    let pool = world
        .admin
        .get_pool(pb::GetPoolRequest {
            pool: world.pool,
            ..Default::default()
        })
        .await
        .expect("pool");
    assert!(pool.pending_upgrade.is_empty(), "{pool:?}");

    // Forcible: the running gang is evicted at once and restarts, spending no retry (an
    // upgrade is a disruption).
    let script = r#"echo $$ >> "$EVIDENCE/forced-$CORRAL_RANK"; while [ ! -f "$EVIDENCE/finish-forced" ]; do sleep 0.1; done"#;
    let mut spec = world.spec("training", "forced", 3, script);
    spec.retry_limit = 3;
    let job = world.submit(spec).await;
    world
        .wait_state(job, "Running", Duration::from_secs(20))
        .await;
    world.upgrade_drivers("560.1", "forcible", 3, 0).await;
    let restarted = world
        .wait_job(
            job,
            Duration::from_secs(30),
            "the gang restarts after the upgrade",
            |job| job.disruptions >= 1 && job.state == "Running",
        )
        .await;
    assert_eq!(restarted.retries_used, 0);
    eventually(Duration::from_secs(30), "every node on 560.1", || async {
        let nodes = world
            .admin
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .ok()?;
        nodes
            .nodes
            .iter()
            .all(|node| node.gpu_driver_version == "560.1")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("forcible upgrade did not finish\n{}", world.agents.logs()));
    std::fs::write(world.evidence_file("finish-forced"), "").expect("finish");
    world
        .wait_state(job, "Completed", Duration::from_secs(30))
        .await;
    assert!(
        read(&world.evidence_file("forced-0")).lines().count() >= 2,
        "rank 0 ran again"
    );
    // The agents ran their upgrade hook.
    let hook_runs: usize = world
        .agents
        .agents
        .iter()
        .map(|agent| {
            std::fs::read_dir(&agent.work_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.path().is_dir())
                .map(|entry| read(&entry.path().join("upgrades.log")).lines().count())
                .sum::<usize>()
                + read(&agent.work_dir.join("upgrades.log")).lines().count()
        })
        .sum();
    assert!(
        hook_runs >= 6,
        "each node ran its hook twice, saw {hook_runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_past_its_max_runtime_is_killed_and_failed() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    let script = r#"echo $$ > "$EVIDENCE/pid"; exec sleep 60"#;
    let mut spec = world.spec("training", "slow", 1, script);
    spec.max_runtime_ms = 1_500;
    spec.retry_limit = 3;
    let started = Instant::now();
    let job = world.submit(spec).await;
    let failed = world
        .wait_state(job, "Failed", Duration::from_secs(20))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    assert_eq!(failed.retries_used, 0, "a runtime limit is not retried");
    assert!(failed.reason.contains("max runtime"), "{failed:?}");
    let pid: u32 = read(&world.evidence_file("pid"))
        .trim()
        .parse()
        .expect("pid");
    eventually(Duration::from_secs(10), "process killed", || async {
        (!process_alive(pid)).then_some(())
    })
    .await
    .expect("the process past its max runtime was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_an_agent_neither_loses_nor_duplicates_its_replicas() {
    let _machine = common::machine_alone().await;
    let mut world = World::start_with_loops(PATIENT_LOOPS).await;
    let script = r#"echo $$ >> "$EVIDENCE/starts-$CORRAL_RANK"; while [ ! -f "$EVIDENCE/finish" ]; do sleep 0.1; done; exit 0"#;
    let job = world
        .submit(world.spec("training", "steady", 2, script))
        .await;
    world
        .wait_state(job, "Running", Duration::from_secs(20))
        .await;
    world.wait_all_started(job).await;
    let node = world.job(job).await.replicas[0].node;
    let agent = world.agent_of_node(node).await;
    // Killed and back well within the node grace period.
    world.agents.kill(agent);
    let restarted = Instant::now();
    world.agents.spawn(agent);
    // The restarted agent adopted the running replica: its heartbeats report it.
    let report = world.wait_heartbeat_after(node, restarted).await;
    assert_eq!(
        report.running_processes,
        1,
        "{report:?}\n{}",
        world.agents.logs()
    );
    std::fs::write(world.evidence_file("finish"), "").expect("finish");
    let done = world
        .wait_state(job, "Completed", Duration::from_secs(20))
        .await;
    assert_eq!(done.retries_used, 0);
    for rank in 0..2 {
        let starts = read(&world.evidence_file(&format!("starts-{rank}")));
        assert_eq!(
            starts.lines().count(),
            1,
            "rank {rank} started once: {starts:?}"
        );
    }
    assert_eq!(world.node(node).await.status, "Available");
}

/// A small TCP store, as torchrun's rendezvous does it: rank 0 listens on
/// MASTER_ADDR:MASTER_PORT, every other rank connects; each writes what it exchanged.
const RENDEZVOUS: &str = r#"
import os, socket, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
address = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
seen = f"rank {rank} local {os.environ['LOCAL_RANK']}/{os.environ['LOCAL_WORLD_SIZE']} node {os.environ['NODE_RANK']}"
if rank == 0:
    server = socket.create_server(address, reuse_port=True)
    server.settimeout(30)
    peers = []
    for _ in range(world - 1):
        connection, _ = server.accept()
        peers.append(connection.recv(64).decode())
        connection.sendall(b"welcome")
        connection.close()
    result = seen + " heard " + ",".join(sorted(peers))
else:
    deadline = time.time() + 30
    while True:
        try:
            connection = socket.create_connection(address, timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    connection.sendall(f"hello-from-{rank}".encode())
    result = seen + " got " + connection.recv(64).decode()
with open(os.path.join(os.environ["EVIDENCE"], f"rendezvous-{rank}"), "w") as out:
    out.write(result)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_rendezvous_over_master_addr_and_port_as_torchrun_expects() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    let mut spec = world.spec("training", "rendezvous", 2, "");
    spec.command = vec!["python3".into(), "-c".into(), RENDEZVOUS.into()];
    let job = world.submit(spec).await;
    let done = world
        .wait_state(job, "Completed", Duration::from_secs(60))
        .await;
    assert_eq!(done.retries_used, 0, "{done:?}");
    assert_eq!(
        read(&world.evidence_file("rendezvous-0")),
        "rank 0 local 0/1 node 0 heard hello-from-1"
    );
    assert_eq!(
        read(&world.evidence_file("rendezvous-1")),
        "rank 1 local 0/1 node 1 got welcome"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_past_its_memory_limit_is_oom_killed_and_the_job_says_so() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    let node = world.node(1).await;
    if corral_agent::isolation_unavailable().is_some() {
        assert_eq!(node.isolation, "none");
        eprintln!("skipped: no isolation on this machine");
        return;
    }
    assert!(node.isolation.starts_with("users+cgroup"), "{node:?}");
    let mut spec = world.spec(
        "training",
        "hungry",
        1,
        "dd if=/dev/zero of=/dev/null bs=256M count=4",
    );
    spec.per_replica = Some(resources(1_500, 32, 1));
    spec.retry_limit = 0;
    let job = world.submit(spec).await;
    let failed = world
        .wait_state(job, "Failed", Duration::from_secs(30))
        .await;
    assert!(failed.reason.contains("OOMKilled"), "{failed:?}");
    assert!(failed.reason.contains("32 MiB"), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_upgrade_hook_is_reported_and_the_other_nodes_finish_the_upgrade() {
    let _machine = common::machine_alone().await;
    let world = World::start().await;
    // node-2's hook fails on every run (its agent's work directory has the marker).
    let marker = world
        .cluster
        .directory
        .path()
        .join("agent-node-2/fail-upgrades");
    std::fs::write(&marker, "").expect("marker");
    let nodes = |world: &World| {
        let admin = world.admin.clone();
        async move {
            admin
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .map(|nodes| nodes.nodes)
                .unwrap_or_default()
        }
    };
    world.upgrade_drivers("551.0", "secure", 3, 0).await;
    let broken = eventually(Duration::from_secs(30), "node-2 gives up", || async {
        let nodes = nodes(&world).await;
        let broken = nodes.iter().find(|node| node.name == "node-2")?.clone();
        let others_done = nodes
            .iter()
            .filter(|node| node.name != "node-2")
            .all(|node| node.gpu_driver_version == "551.0" && node.schedulable);
        (broken.upgrade_failure.contains("final") && others_done).then_some(broken)
    })
    .await
    .unwrap_or_else(|| panic!("no final failure\n{}", world.agents.logs()));
    assert!(
        broken.upgrade_failure.contains("attempt 2, final")
            && broken.upgrade_failure.contains("broken driver package"),
        "{broken:?}"
    );
    assert_eq!(broken.gpu_driver_version, OLD_DRIVER);
    assert!(
        !broken.schedulable && broken.upgrading.is_empty(),
        "{broken:?}"
    );
    let pool = || async {
        world
            .admin
            .get_pool(pb::GetPoolRequest {
                pool: world.pool,
                ..Default::default()
            })
            .await
            .expect("pool")
    };
    eventually(
        Duration::from_secs(10),
        "the pool's upgrade completes",
        || async { pool().await.pending_upgrade.is_empty().then_some(()) },
    )
    .await
    .expect("the pool's upgrade completed without the failed node");

    // Fixed, a new upgrade is accepted and reaches the failed node too; the node stays
    // out of scheduling until its operator takes it back.
    std::fs::remove_file(&marker).expect("marker removed");
    world.upgrade_drivers("552.0", "secure", 3, 0).await;
    eventually(Duration::from_secs(30), "every node on 552.0", || async {
        let nodes = nodes(&world).await;
        nodes
            .iter()
            .all(|node| node.gpu_driver_version == "552.0" && node.upgrade_failure.is_empty())
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the second upgrade did not finish\n{}", world.agents.logs()));
    let node = world.node(broken.id).await;
    assert!(!node.schedulable, "{node:?}");
    world
        .admin
        .uncordon_node(pb::NodeRef { node: broken.id })
        .await
        .expect("uncordon");
    assert!(world.node(broken.id).await.schedulable);
}
