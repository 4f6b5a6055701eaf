//! The seeded workload: an operator sets the world up (flavor, two tenants with tokens
//! and networks, a dedicated pool and the public pool), then tenant clients submit,
//! read and terminate all four kinds of work while an operator client requests driver
//! upgrades and changes priorities. Every tenant call and its reply goes into the
//! history. All of it through the real `CorralClient` over the simulated network.

use crate::agents::{DRIVER_VERSION, NODE_FLAVOR, NODE_ZONE};
use crate::history::{now_ns, Call, History, Record, Reply};
use crate::managers::{manager_addresses, mix, ADMIN_TOKEN};
use crate::options::RunPlan;
use crate::recorder::Recorder;
use corral_client::{pb, ClientError, ClientOptions, CorralClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

/// What setup created, shared with the tenant clients.
#[derive(Clone, Debug)]
pub struct World {
    pub tenant_tokens: Vec<String>,
    pub tenant_ids: Vec<u64>,
    /// Pools each tenant may submit to (tenant 0: its dedicated pool and the public one).
    pub tenant_pools: Vec<Vec<u64>>,
    pub pools: Vec<u64>,
}

pub type SharedWorld = Arc<Mutex<Option<World>>>;

const SETUP_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Setup gives up after this long (simulated): a cluster that cannot be set up in a
/// minute without faults is a failure in itself.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// Client options; `seed` makes the client's request ids replay.
pub fn client_options(seed: u64) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        request_id_seed: Some(seed),
        ..ClientOptions::default()
    }
}

/// An operator client; `salt` keeps different clients' request ids apart.
pub fn admin_client(plan: &RunPlan, salt: u64) -> Result<CorralClient, String> {
    CorralClient::connect(
        manager_addresses(plan.replicas),
        Some(ADMIN_TOKEN.into()),
        client_options(mix(plan.seed, 0xad00 + salt)),
    )
    .map_err(|error| error.to_string())
}

/// Retry `call` until it succeeds or the setup deadline passes.
async fn until_done<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("setup: {what}: {error}; retrying");
                tokio::time::sleep(SETUP_RETRY_PAUSE).await;
            }
            Err(error) => return Err(format!("setup: {what}: {error}")),
        }
    }
}

pub(crate) fn resources(cpu_millicores: u64, memory_mib: u64, accelerators: u32) -> pb::Resources {
    pb::Resources {
        cpu_millicores,
        memory_mib,
        accelerators,
        disk_gib: 100,
        bandwidth_mbps: 100,
    }
}

/// The operator's setup; every step is idempotent or checked first, because a step
/// whose reply was lost may have happened.
pub async fn set_up(plan: &RunPlan, world: SharedWorld) -> Result<(), String> {
    let admin = admin_client(plan, 1)?;
    // A retry after a lost reply finds the flavor defined: that is success.
    until_done("define flavor", || async {
        let defined = admin.define_flavor(pb::Flavor {
            name: NODE_FLAVOR.into(),
            // Room for four one-accelerator replicas in every dimension.
            capacity: Some(pb::Resources {
                cpu_millicores: 16_000,
                memory_mib: 65_536,
                accelerators: 4,
                disk_gib: 400,
                bandwidth_mbps: 400,
            }),
            accelerator_type: "nvidia-sim".into(),
            cpu_architecture: "x86_64".into(),
            price_micros_per_hour: 1_000_000,
        });
        match defined.await {
            Err(error) if error.code() == Code::AlreadyExists => Ok(()),
            other => other.map(drop),
        }
    })
    .await?;
    let node_count = plan.nodes as usize;
    until_done("wait for every node", || async {
        let nodes = admin.list_nodes(pb::ListNodesRequest::default()).await?;
        if nodes.nodes.len() >= node_count {
            Ok(())
        } else {
            Err(ClientError::from(tonic::Status::unavailable(
                "nodes still registering",
            )))
        }
    })
    .await?;
    let mut tenant_tokens = Vec::new();
    let mut tenant_ids = Vec::new();
    for name in ["tenant-a", "tenant-b"] {
        let tenant = until_done("create tenant", || async {
            let tenants = admin
                .list_tenants(pb::ListTenantsRequest::default())
                .await?;
            if let Some(tenant) = tenants.tenants.into_iter().find(|t| t.name == name) {
                return Ok(tenant);
            }
            admin
                .create_tenant(pb::CreateTenantRequest {
                    name: name.into(),
                    quota: Some(pb::Resources {
                        cpu_millicores: 1_000_000,
                        memory_mib: 10_000_000,
                        accelerators: 1_000,
                        disk_gib: 1_000_000,
                        bandwidth_mbps: 1_000_000,
                    }),
                    may_use_high_priority: true,
                    max_active_jobs: 0,
                })
                .await
        })
        .await?;
        // A token's secret is in the reply only: when a reply is lost the token may exist
        // with a secret nobody knows (creation is not deduplicated, see admin.rs), and a
        // retry under the same name is refused as AlreadyExists. Each retry therefore
        // asks for a token under a new name, as an operator would.
        let mut attempt = 0u32;
        let token = until_done("create token", || {
            attempt += 1;
            let token_name = if attempt == 1 {
                format!("{name}-token-{}", tenant_tokens.len())
            } else {
                format!("{name}-token-{}-retry-{attempt}", tenant_tokens.len())
            };
            admin.create_token(pb::CreateTokenRequest {
                name: token_name,
                tenant: tenant.id,
                ..Default::default()
            })
        })
        .await?;
        tenant_tokens.push(token.secret);
        tenant_ids.push(tenant.id);
    }
    let network = until_done("create network", || async {
        let networks = admin
            .list_networks(pb::ListNetworksRequest::default())
            .await?;
        if let Some(network) = networks.networks.into_iter().find(|n| n.name == "a-net") {
            return Ok(network);
        }
        admin
            .create_network(pb::CreateNetworkRequest {
                tenant: tenant_ids[0],
                name: "a-net".into(),
                cidr: "192.168.10.0/24".into(),
            })
            .await
    })
    .await?;
    let job_types: Vec<String> = ["training", "inference", "notebook"]
        .into_iter()
        .map(String::from)
        .collect();
    let dedicated_nodes = (plan.nodes / 2) as u32;
    let dedicated = pb::CreatePoolRequest {
        name: "a-dedicated".into(),
        kind: "dedicated".into(),
        owner: tenant_ids[0],
        flavors: vec![pb::PoolFlavor {
            flavor: NODE_FLAVOR.into(),
            zone: NODE_ZONE.into(),
            node_count: dedicated_nodes,
        }],
        job_types: job_types.clone(),
        network: network.id,
        driver: Some(pb::DriverSpec {
            gpu_driver_version: DRIVER_VERSION.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let public = pb::CreatePoolRequest {
        name: "public".into(),
        kind: "public".into(),
        flavors: vec![pb::PoolFlavor {
            flavor: NODE_FLAVOR.into(),
            zone: NODE_ZONE.into(),
            node_count: plan.nodes as u32 - dedicated_nodes,
        }],
        job_types,
        billing: Some(pb::Billing {
            mode: "pay-per-use".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pools = Vec::new();
    for request in [dedicated, public] {
        let pool = until_done("create pool", || async {
            let existing = admin.list_pools(pb::ListPoolsRequest::default()).await?;
            if let Some(pool) = existing.pools.into_iter().find(|p| p.name == request.name) {
                return Ok(pool);
            }
            admin.create_pool(request.clone()).await
        })
        .await?;
        pools.push(pool.id);
    }
    if plan.queues {
        create_public_queues(&admin, pools[1], &tenant_ids).await?;
    }
    *world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(World {
        tenant_tokens,
        tenant_ids,
        tenant_pools: vec![pools.clone(), vec![pools[1]]],
        pools,
    });
    Ok(())
}

/// The public pool's queues: `shared`, the default (nothing guaranteed, no limit), and
/// `capped`, guaranteed one replica's worth and never more than eight accelerators (half
/// the public pool at the default size; tighter, its queue outlasted the settle bound), so
/// that the workload exercises the queue limit and the borrowing rule.
const CAPPED_QUEUE: &str = "capped";

async fn create_public_queues(
    admin: &CorralClient,
    public: u64,
    tenant_ids: &[u64],
) -> Result<(), String> {
    let unbounded = pb::Resources {
        cpu_millicores: u64::MAX,
        memory_mib: u64::MAX,
        accelerators: u32::MAX,
        disk_gib: u64::MAX,
        bandwidth_mbps: u64::MAX,
    };
    let queues = [
        pb::QueueSpec {
            pool: public,
            name: "shared".into(),
            guarantee: Some(pb::Resources::default()),
            limit: Some(unbounded),
            weight: 1,
            members: tenant_ids.to_vec(),
            is_default: true,
        },
        pb::QueueSpec {
            pool: public,
            name: CAPPED_QUEUE.into(),
            guarantee: Some(resources(1_000, 2_048, 1)),
            limit: Some(pb::Resources {
                accelerators: 8,
                ..unbounded
            }),
            weight: 1,
            members: tenant_ids.to_vec(),
            is_default: false,
        },
    ];
    for queue in queues {
        // A retry after a lost reply finds the queue created: that is success.
        until_done("create queue", || async {
            match admin.create_queue(queue.clone()).await {
                Err(error) if error.code() == Code::AlreadyExists => Ok(()),
                other => other.map(drop),
            }
        })
        .await?;
    }
    Ok(())
}

/// Whether a public-pool training job goes to the capped queue: one in four, chosen by
/// its name so that the random sequence (and each seed's scenario) stays what it was.
fn capped(name: &str) -> bool {
    name.bytes().map(u64::from).sum::<u64>() % 4 == 0
}

pub async fn wait_for_world(world: &SharedWorld) -> World {
    loop {
        if let Some(world) = world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        {
            return world;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether an error leaves the outcome open (the write may have been applied).
fn outcome_unknown(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

pub fn reply_of<T>(result: &Result<T, ClientError>, success: impl FnOnce(&T) -> Reply) -> Reply {
    match result {
        Ok(value) => success(value),
        Err(error) => reply_of_error(error),
    }
}

/// What a failed call tells of its outcome: unknown, or refused.
fn reply_of_error(error: &ClientError) -> Reply {
    if outcome_unknown(error) {
        Reply::Unknown
    } else {
        Reply::Refused {
            code: format!("{:?}", error.code()),
            message: error.to_string(),
        }
    }
}

/// `queues`: the public pool has the queues of `create_public_queues` (`--queues`).
fn job_spec(
    random: &mut StdRng,
    name: &str,
    pool: u64,
    public_pool: u64,
    queues: bool,
) -> pb::JobSpec {
    let kind = match random.random_range(0..10) {
        0..=4 => "training",
        5..=6 => "inference",
        7..=8 => "notebook",
        _ => "workflow",
    };
    let run_ms = random.random_range(200..4_000u64);
    // One in ten fails; a third of those (by run time, so the random sequence, and so
    // every seed's scenario, stays what it was) as the kernel's OOM killer ends a
    // replica past its memory limit (137, reported as OOMKilled).
    let exit_code = if random.random_bool(0.1) {
        if run_ms % 3 == 0 {
            137
        } else {
            1
        }
    } else {
        0
    };
    let training_command = vec!["sim-run".into(), run_ms.to_string(), exit_code.to_string()];
    let mut spec = pb::JobSpec {
        name: name.into(),
        pool,
        kind: kind.into(),
        replicas: 1,
        per_replica: Some(resources(1_000, 2_048, 1)),
        accelerator_type: "nvidia-sim".into(),
        // The public pool has no priorities.
        priority: if pool == public_pool {
            1
        } else {
            random.random_range(1..=3)
        },
        ..Default::default()
    };
    match kind {
        "training" => {
            spec.replicas = random.random_range(1..=2);
            spec.command = training_command;
            spec.retry_limit = 2;
            if queues && pool == public_pool && capped(name) {
                spec.queue = CAPPED_QUEUE.into();
            }
        }
        "inference" => {
            spec.replicas = random.random_range(1..=2);
            spec.command = vec!["serve".into()];
        }
        "notebook" => spec.command = vec!["notebook".into()],
        _ => {
            spec.per_replica = None;
            spec.accelerator_type = String::new();
            spec.steps = (0..2)
                .map(|step| pb::WorkflowStep {
                    name: format!("step-{step}"),
                    depends_on: if step == 0 { vec![] } else { vec![step - 1] },
                    spec: Some(pb::JobSpec {
                        name: format!("{name}-step-{step}"),
                        pool,
                        kind: "training".into(),
                        replicas: 1,
                        per_replica: Some(resources(1_000, 2_048, 1)),
                        accelerator_type: "nvidia-sim".into(),
                        command: training_command.clone(),
                        retry_limit: 2,
                        ..Default::default()
                    }),
                    use_public_pool: false,
                })
                .collect();
        }
    }
    spec
}

/// One tenant client: a seeded sequence of submits, reads and terminations.
pub async fn tenant_client(
    client_index: u64,
    plan: RunPlan,
    world: SharedWorld,
    history: History,
    recorder: Recorder,
) -> Result<(), String> {
    let world = wait_for_world(&world).await;
    let tenant = (client_index % world.tenant_tokens.len() as u64) as usize;
    let client = CorralClient::connect(
        manager_addresses(plan.replicas),
        Some(world.tenant_tokens[tenant].clone()),
        client_options(mix(plan.seed, 0xc0 + client_index)),
    )
    .map_err(|error| error.to_string())?;
    let mut random = StdRng::seed_from_u64(mix(plan.seed, 1_000 + client_index));
    // Its own stream, so batches leave the other draws as they were.
    let mut batch_random = StdRng::seed_from_u64(mix(plan.seed, 2_000 + client_index));
    let mut known: Vec<(String, u64)> = Vec::new();
    for operation in 0..plan.operations_per_client {
        let pause_ms = random.random_range(20..400u64);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let choice = random.random_range(0..100);
        let called_at_ns = now_ns();
        let calls = if known.is_empty() || choice < 50 {
            let name = format!("job-c{client_index}-{operation}");
            let pools = &world.tenant_pools[tenant];
            let pool = pools[random.random_range(0..pools.len())];
            let spec = job_spec(&mut random, &name, pool, world.pools[1], plan.queues);
            if batch_random.random_range(0..BATCH_ONE_IN) == 0 {
                let mut specs = vec![spec];
                for slot in 1..batch_random.random_range(2..=MAX_BATCH_SPECS) {
                    let name = format!("{name}-{slot}");
                    let pool = pools[batch_random.random_range(0..pools.len())];
                    specs.push(job_spec(
                        &mut batch_random,
                        &name,
                        pool,
                        world.pools[1],
                        plan.queues,
                    ));
                }
                submit_batch(&client, specs, &mut known).await
            } else {
                let result = client.submit_job(spec).await;
                let reply = reply_of(&result, |submitted| Reply::Submitted { job: submitted.job });
                if let Ok(submitted) = &result {
                    known.push((name.clone(), submitted.job));
                }
                vec![(Call::Submit { name }, reply)]
            }
        } else if choice < 80 {
            let (name, job) = known[random.random_range(0..known.len())].clone();
            let result = client.get_job(job).await;
            let reply = match &result {
                Err(error) if error.code() == Code::NotFound => Reply::Refused {
                    code: "NotFound".into(),
                    message: error.to_string(),
                },
                _ => reply_of(&result, |job| Reply::Found {
                    state: job.state.clone(),
                }),
            };
            vec![(Call::Get { name, job }, reply)]
        } else {
            let (name, job) = known[random.random_range(0..known.len())].clone();
            let result = client.terminate_job(job).await;
            vec![(
                Call::Terminate { name, job },
                reply_of(&result, |_| Reply::Acknowledged),
            )]
        };
        let returned_at_ns = now_ns();
        for (call, reply) in calls {
            recorder.trace(format!("client-{client_index} {call:?} -> {reply:?}"));
            history.push(Record {
                client: client_index,
                call,
                reply,
                called_at_ns,
                returned_at_ns,
            });
        }
    }
    Ok(())
}

/// One submit in this many is a `SubmitJobs` of several specs.
const BATCH_ONE_IN: u32 = 5;
/// Specs in such a batch: 2 to this many.
const MAX_BATCH_SPECS: usize = 3;

/// Submit `specs` in one `SubmitJobs` call; one history call per spec, each a submit
/// of its own (the writes are separate; only the call is shared). A spec's error is a
/// definite refusal; a failed call leaves every spec's outcome as the error says.
async fn submit_batch(
    client: &CorralClient,
    specs: Vec<pb::JobSpec>,
    known: &mut Vec<(String, u64)>,
) -> Vec<(Call, Reply)> {
    let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
    let result = client.submit_jobs(pb::SubmitJobsRequest { specs }).await;
    names
        .into_iter()
        .enumerate()
        .map(|(slot, name)| {
            let reply = match &result {
                Ok(response) => match response.results.get(slot) {
                    Some(submitted) if submitted.error.is_empty() => {
                        known.push((name.clone(), submitted.job));
                        Reply::Submitted { job: submitted.job }
                    }
                    Some(refused) => Reply::Refused {
                        code: "Refused".into(),
                        message: refused.error.clone(),
                    },
                    // A malformed reply: what happened to this spec is not known.
                    None => Reply::Unknown,
                },
                Err(error) => reply_of_error(error),
            };
            (Call::Submit { name }, reply)
        })
        .collect()
}

/// The operator during the run: rolling driver upgrades (some cancelled) and priority
/// changes.
pub async fn operator_client(
    plan: RunPlan,
    world: SharedWorld,
    recorder: Recorder,
) -> Result<(), String> {
    let world = wait_for_world(&world).await;
    let admin = admin_client(&plan, 2)?;
    let mut random = StdRng::seed_from_u64(mix(plan.seed, 77));
    // Upgrades are part of the operator's bad day: none is started once the faults are
    // healed. A forcible upgrade evicts work without spending its retries, so one
    // started late would keep moving jobs past the settle bound by design.
    let fault_phase_ends_ms = (8 + plan.fault_seconds) * 1_000;
    for round in 0..4u64 {
        tokio::time::sleep(Duration::from_millis(random.random_range(1_000..4_000))).await;
        let elapsed_ms = crate::managers::simulated_now_ms(0) - crate::managers::EPOCH_MS;
        if elapsed_ms >= fault_phase_ends_ms {
            recorder.trace("operator: the faults are healed; no more upgrades".to_string());
            break;
        }
        // Only a dedicated pool's node runtime may be upgraded.
        let pool = world.pools[0];
        let mode = if random.random_bool(0.5) {
            "secure"
        } else {
            "forcible"
        };
        let result = admin
            .request_driver_upgrade(pb::RequestDriverUpgradeRequest {
                pool,
                target: Some(pb::DriverSpec {
                    gpu_driver_version: format!("{DRIVER_VERSION}.{round}"),
                    ..Default::default()
                }),
                mode: mode.into(),
                batch_size: 1,
                ..Default::default()
            })
            .await;
        recorder.trace(format!(
            "operator upgrade pool {pool} {mode} -> {:?}",
            result.map_err(|error| error.to_string())
        ));
        // Nodes whose upgrade failed for good are fixed by hand and taken back, as an
        // operator would (uncordon clears the failure).
        if let Ok(nodes) = admin.list_nodes(pb::ListNodesRequest::default()).await {
            for node in nodes
                .nodes
                .iter()
                .filter(|node| node.upgrade_failure.contains("final"))
            {
                let restored = admin.uncordon_node(pb::NodeRef { node: node.id }).await;
                recorder.trace(format!(
                    "operator uncordon node {} after a failed upgrade -> {:?}",
                    node.id,
                    restored.map_err(|error| error.to_string())
                ));
            }
        }
        // Sometimes the operator gives up on an upgrade that is under way (nodes whose
        // hook keeps failing hold it up until they give up themselves).
        if random.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(random.random_range(200..2_000))).await;
            let cancelled = admin
                .cancel_driver_upgrade(pb::CancelDriverUpgradeRequest { pool })
                .await;
            recorder.trace(format!(
                "operator cancel upgrade of pool {pool} -> {:?}",
                cancelled.map_err(|error| error.to_string())
            ));
        }
    }
    Ok(())
}

/// Membership under load: remove the highest-numbered voter, then add it back (as a
/// learner that catches up, then a voter).
pub async fn membership_client(plan: RunPlan, recorder: Recorder) -> Result<(), String> {
    let admin = admin_client(&plan, 3)?;
    let replica = plan.replicas;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let removed = admin
        .remove_replica(pb::RemoveReplicaRequest { id: replica })
        .await;
    recorder.trace(format!(
        "membership: remove {replica} -> {:?}",
        removed.map_err(|error| error.code())
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let added = until_done("add the replica back", || {
        admin.add_replica(pb::AddReplicaRequest {
            id: replica,
            address: crate::managers::manager_address(replica),
        })
    })
    .await;
    recorder.trace(format!(
        "membership: add {replica} back -> {}",
        added.is_ok()
    ));
    added.map(drop)
}

/// Pool operations under load: drain a node and put it back, and move a node from the
/// dedicated pool to the public one and back (scale down, scale up). Every operation
/// is undone before the fault phase ends, so the pools the final check needs are whole
/// again; each call's outcome is traced (a refusal under faults is fine, a broken
/// invariant is not: the per-entry checks watch every change these make).
pub async fn pool_operator_client(
    plan: RunPlan,
    world: SharedWorld,
    recorder: Recorder,
) -> Result<(), String> {
    let world = wait_for_world(&world).await;
    // Salt 5: each admin client needs its own request-id sequence (4 is the final
    // check's; a shared sequence made the state machine answer the final check's
    // terminations with the outcomes of this client's earlier calls).
    let admin = admin_client(&plan, 5)?;
    let mut random = StdRng::seed_from_u64(mix(plan.seed, 79));
    let (dedicated, public) = (world.pools[0], world.pools[1]);
    let dedicated_nodes = (plan.nodes / 2) as u32;
    let public_nodes = plan.nodes as u32 - dedicated_nodes;
    tokio::time::sleep(Duration::from_millis(random.random_range(1_000..3_000))).await;
    drain_and_restore_a_node(&admin, &mut random, &recorder).await;
    let pause = Duration::from_millis(random.random_range(500..2_000));
    if dedicated_nodes > 1 {
        scale(&admin, &recorder, dedicated, dedicated_nodes - 1).await;
        tokio::time::sleep(pause).await;
        scale(&admin, &recorder, public, public_nodes + 1).await;
        tokio::time::sleep(pause).await;
        scale(&admin, &recorder, public, public_nodes).await;
        scale(&admin, &recorder, dedicated, dedicated_nodes).await;
    }
    Ok(())
}

async fn drain_and_restore_a_node(admin: &CorralClient, random: &mut StdRng, recorder: &Recorder) {
    let nodes = match admin.list_nodes(pb::ListNodesRequest::default()).await {
        Ok(response) => response.nodes,
        Err(error) => {
            recorder.trace(format!("operator list nodes -> {error}"));
            return;
        }
    };
    if nodes.is_empty() {
        return;
    }
    let node = nodes[random.random_range(0..nodes.len())].id;
    let drained = admin
        .drain_node(pb::DrainNodeRequest {
            node,
            // An instant on the managers' clock: two simulated seconds from now.
            deadline_ms: crate::managers::simulated_now_ms(0) + 2_000,
        })
        .await;
    recorder.trace(format!(
        "operator drain node {node} -> {:?}",
        drained.map_err(|error| error.to_string())
    ));
    tokio::time::sleep(Duration::from_millis(random.random_range(1_000..3_000))).await;
    // Put it back even if the drain's answer was lost: uncordoning is idempotent.
    let restored = until_answered(|| admin.uncordon_node(pb::NodeRef { node })).await;
    recorder.trace(format!(
        "operator uncordon node {node} -> {:?}",
        restored.map(|_| ()).map_err(|error| error.to_string())
    ));
}

async fn scale(admin: &CorralClient, recorder: &Recorder, pool: u64, node_count: u32) {
    let request = pb::ScalePoolRequest {
        pool,
        flavor: NODE_FLAVOR.into(),
        zone: NODE_ZONE.into(),
        node_count,
    };
    let result = until_answered(|| admin.scale_pool(request.clone())).await;
    recorder.trace(format!(
        "operator scale pool {pool} to {node_count} nodes -> {:?}",
        result.map(|_| ()).map_err(|error| error.to_string())
    ));
}

/// Attempts of an operator call whose outcome stayed unknown (faults).
const OPERATOR_ATTEMPTS: u32 = 20;

/// Retry `call` while its outcome is unknown (the cluster unavailable or the call timed
/// out); a refusal is an answer and is returned.
async fn until_answered<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error)
                if attempt < OPERATOR_ATTEMPTS
                    && matches!(error.code(), Code::Unavailable | Code::DeadlineExceeded) =>
            {
                attempt += 1;
                tokio::time::sleep(SETUP_RETRY_PAUSE).await;
            }
            result => return result,
        }
    }
}
