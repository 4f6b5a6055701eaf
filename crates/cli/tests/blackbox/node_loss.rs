//! Black-box test of correlated node loss (issue 22): 3 real `corral server` processes
//! and `corral agent --simulate 3` processes, two per "rack" of six nodes. Gangs run
//! on the first agent of rack a, the second one's nodes idle (and first in the
//! scheduler's node order). Rack a loses power: its agents are SIGKILLed 700 ms apart,
//! so their nodes' grace periods end apart too. Every gang must run again on rack b
//! within the grace period + 5 s of the first kill, none failed, no retry spent, and
//! moved exactly once: never placed on the idle, already silent nodes of its own rack.

use crate::common;

use common::agents::{AgentSettings, Agents};
use common::{resources, Cluster, ADMIN_TOKEN};
use corral_client::{pb, ClientOptions, CorralClient};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

const FLAVOR: &str = "cpu-2x-gpu";
const DRIVER: &str = "535.104";
const GRACE_MS: u64 = 2_000;
/// Agents heartbeat every 200 ms; a node silent for 2 s is lost.
const LOOPS: &str = "scheduler_interval_ms = 100
metering_interval_ms = 300
node_grace_ms = 2000
agent_heartbeat_interval_ms = 200
upgrade_interval_ms = 200
";
const NODES_PER_AGENT: u32 = 3;
const NODES_PER_RACK: u32 = 2 * NODES_PER_AGENT;
/// Gangs of two half-node replicas, one node each: the first agent's nodes.
const GANGS: usize = 3;
/// Between the deaths of rack a's two agents: past the silence after which a node
/// gets no new placements (3 heartbeats, 600 ms), well within the grace period.
const SECOND_KILL_AFTER: Duration = Duration::from_millis(700);

async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
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

async fn nodes_named(admin: &CorralClient, prefix: &str) -> Vec<pb::Node> {
    admin
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .map(|listed| listed.nodes)
        .unwrap_or_default()
        .into_iter()
        .filter(|node| node.name.starts_with(prefix))
        .collect()
}

async fn job(admin: &CorralClient, job: u64) -> pb::Job {
    admin
        .get_job(pb::GetJobRequest {
            job,
            ..Default::default()
        })
        .await
        .expect("get job")
}

fn running_on(job: &pb::Job, nodes: &BTreeSet<u64>) -> bool {
    job.state == "Running"
        && job
            .replicas
            .iter()
            .all(|replica| replica.state == "Running" && nodes.contains(&replica.node))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_agent_of_many_nodes_moves_every_gang_without_failing_any() {
    let _machine = common::machine_alone().await;
    let cluster = Cluster::start_with_loops(3, "sled", LOOPS);
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
    let admin = CorralClient::connect(managers.clone(), Some(ADMIN_TOKEN.into()), options.clone())
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
    let settings = AgentSettings {
        managers: &managers,
        flavor: FLAVOR,
        zone: "zone-a",
        gpu_driver_version: DRIVER,
        heartbeat_interval_ms: 200,
        termination_grace_ms: 1_000,
    };
    let mut agents = Agents { agents: Vec::new() };
    let directory = cluster.directory.path().to_path_buf();
    // Rack a's first agent registers first: its nodes come first in node order.
    let mut rack_a = Vec::new();
    for (name, registered_before) in [("rack-a1", 0), ("rack-a2", NODES_PER_AGENT)] {
        rack_a.push(agents.add_simulated(&directory, name, NODES_PER_AGENT, &settings));
        let wanted = (registered_before + NODES_PER_AGENT) as usize;
        let registered = eventually(Duration::from_secs(20), || async {
            (nodes_named(&admin, "rack-a").await.len() == wanted).then_some(())
        })
        .await;
        assert!(
            registered.is_some(),
            "{name} did not register\n{}",
            agents.logs()
        );
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
    let pool = admin
        .create_pool(pb::CreatePoolRequest {
            name: "alpha-pool".into(),
            kind: "dedicated".into(),
            owner: tenant.id,
            flavors: vec![pb::PoolFlavor {
                flavor: FLAVOR.into(),
                zone: "zone-a".into(),
                node_count: NODES_PER_RACK,
            }],
            job_types: vec!["training".into()],
            network: network.id,
            driver: Some(pb::DriverSpec {
                gpu_driver_version: DRIVER.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create pool");
    let user = CorralClient::connect(managers.clone(), Some(token.secret), options)
        .expect("tenant client");

    // Gangs of two half-node replicas on rack-a (the only nodes of the pool so far).
    let mut jobs = Vec::new();
    for index in 0..GANGS {
        let spec = pb::JobSpec {
            name: format!("gang-{index}"),
            pool: pool.id,
            kind: "training".into(),
            replicas: 2,
            // Half a node: a gang of two fills one (disk and bandwidth included).
            per_replica: Some(pb::Resources {
                disk_gib: 5,
                bandwidth_mbps: 50,
                ..resources(900, 1_024, 1)
            }),
            accelerator_type: "nvidia-t4".into(),
            command: vec!["sh".into(), "-c".into(), "sleep 300".into()],
            retry_limit: 1,
            ..Default::default()
        };
        let submitted = user
            .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
            .await
            .expect("submit");
        jobs.push(submitted.job);
    }
    let rack_a_ids: BTreeSet<u64> = nodes_named(&admin, "rack-a1-")
        .await
        .iter()
        .map(|node| node.id)
        .collect();
    for id in &jobs {
        let started = eventually(Duration::from_secs(30), || async {
            running_on(&job(&admin, *id).await, &rack_a_ids).then_some(())
        })
        .await;
        assert!(
            started.is_some(),
            "job {id} did not start on rack-a1: {:?}\n{}",
            job(&admin, *id).await,
            agents.logs()
        );
    }

    // Rack a2's idle nodes: where the displaced gangs would go first if silent nodes
    // still took new work.
    let idle = nodes_named(&admin, "rack-a2-")
        .await
        .iter()
        .filter(|node| node.replicas == 0 && node.pool == pool.id)
        .count();
    assert_eq!(idle, NODES_PER_AGENT as usize, "idle rack-a2 nodes");

    // A second rack joins the pool: room for every gang.
    agents.add_simulated(&directory, "rack-b", NODES_PER_RACK, &settings);
    let registered = eventually(Duration::from_secs(20), || async {
        (nodes_named(&admin, "rack-b-").await.len() == NODES_PER_RACK as usize).then_some(())
    })
    .await;
    assert!(
        registered.is_some(),
        "rack-b did not register\n{}",
        agents.logs()
    );
    user.scale_pool(pb::ScalePoolRequest {
        pool: pool.id,
        flavor: FLAVOR.into(),
        zone: "zone-a".into(),
        node_count: 2 * NODES_PER_RACK,
    })
    .await
    .expect("scale the pool out");
    let rack_b_ids: BTreeSet<u64> = nodes_named(&admin, "rack-b-")
        .await
        .iter()
        .filter(|node| node.pool == pool.id)
        .map(|node| node.id)
        .collect();
    assert_eq!(rack_b_ids.len(), NODES_PER_RACK as usize);

    // Rack a dies: both its agents (all its nodes), one shortly after the other.
    let killed_at = Instant::now();
    agents.kill(rack_a[0]);
    tokio::time::sleep(SECOND_KILL_AFTER).await;
    agents.kill(rack_a[1]);
    let deadline = Duration::from_millis(GRACE_MS) + Duration::from_secs(5);
    let moved = eventually(deadline, || async {
        for id in &jobs {
            if !running_on(&job(&admin, *id).await, &rack_b_ids) {
                return None;
            }
        }
        Some(killed_at.elapsed())
    })
    .await;
    let mut states = Vec::new();
    for id in &jobs {
        states.push(job(&admin, *id).await);
    }
    assert!(
        moved.is_some(),
        "not every gang runs on rack-b within {deadline:?} of the kill: {states:#?}\n{}",
        agents.logs()
    );
    // Every node of rack a is marked lost (rack a2's a little later) and holds nothing;
    // the gangs were not disturbed by that second loss.
    let all_lost = eventually(deadline, || async {
        let nodes = nodes_named(&admin, "rack-a").await;
        nodes
            .iter()
            .all(|node| node.status == "Abnormal" && node.replicas == 0)
            .then_some(())
    })
    .await;
    assert!(
        all_lost.is_some(),
        "rack a not marked lost: {:#?}",
        nodes_named(&admin, "rack-a").await
    );
    let mut states = Vec::new();
    for id in &jobs {
        states.push(job(&admin, *id).await);
    }
    for current in &states {
        assert!(running_on(current, &rack_b_ids), "{current:?}");
        assert_eq!(current.retries_used, 0, "no retry spent: {current:?}");
        // Moved once: never placed on a silent node of its own rack in between.
        assert_eq!(current.disruptions, 1, "one disruption: {current:?}");
    }
    eprintln!(
        "every gang running again on rack b {:?} after the first kill",
        moved.unwrap_or_default()
    );
}
