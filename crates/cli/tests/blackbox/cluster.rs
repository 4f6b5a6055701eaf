//! Black-box tests of a replicated manager cluster: real `corral server` processes on
//! loopback, real gRPC, real disk, SIGKILL.

use crate::common;

use common::{resources, Admin, Cluster, ADMIN_TOKEN};
use corral_client::pb;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

pub(crate) const GPU_FLAVOR: &str = "gpu-8x-a100";

pub(crate) struct World {
    pub(crate) tenant_tokens: Vec<String>,
    pub(crate) tenant_ids: Vec<u64>,
    pub(crate) public_pool: u64,
    pub(crate) dedicated_pool: u64,
}

pub(crate) async fn define_world(admin: &Admin) -> World {
    let mut client = admin.raw();
    let flavor = pb::Flavor {
        name: GPU_FLAVOR.into(),
        capacity: Some(resources(96_000, 1_048_576, 8)),
        accelerator_type: "nvidia-a100".into(),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: 32_000_000,
    };
    client
        .define_flavor(admin.request(flavor))
        .await
        .expect("define flavor");
    for index in 0..8 {
        let register = pb::RegisterNodeRequest {
            name: format!("gpu-{index}"),
            flavor: GPU_FLAVOR.into(),
            zone: "zone-a".into(),
            ..Default::default()
        };
        client
            .register_node(admin.request(register))
            .await
            .expect("register node");
    }
    let mut tenant_tokens = Vec::new();
    let mut tenant_ids = Vec::new();
    for name in ["alpha", "beta"] {
        let request = pb::CreateTenantRequest {
            name: name.into(),
            quota: Some(resources(100_000_000, 100_000_000, 100_000)),
            may_use_high_priority: false,
            max_active_jobs: 0,
        };
        let tenant = client
            .create_tenant(admin.request(request))
            .await
            .expect("create tenant")
            .into_inner();
        let token = client
            .create_token(admin.request(pb::CreateTokenRequest {
                name: format!("{name}-token"),
                tenant: tenant.id,
                ..Default::default()
            }))
            .await
            .expect("create token")
            .into_inner();
        tenant_tokens.push(token.secret);
        tenant_ids.push(tenant.id);
    }
    let public = pb::CreatePoolRequest {
        name: "public".into(),
        kind: "public".into(),
        flavors: vec![pb::PoolFlavor {
            flavor: GPU_FLAVOR.into(),
            zone: "zone-a".into(),
            node_count: 5,
        }],
        job_types: vec!["training".into(), "inference".into(), "notebook".into()],
        billing: Some(pb::Billing {
            mode: "pay-per-use".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let public_pool = client
        .create_pool(admin.request(public))
        .await
        .expect("create public pool")
        .into_inner()
        .id;
    let network = client
        .create_network(admin.request(pb::CreateNetworkRequest {
            tenant: tenant_ids[0],
            name: "alpha-net".into(),
            cidr: "192.168.0.0/24".into(),
        }))
        .await
        .expect("create network")
        .into_inner();
    let dedicated = pb::CreatePoolRequest {
        name: "alpha-pool".into(),
        kind: "dedicated".into(),
        owner: tenant_ids[0],
        flavors: vec![pb::PoolFlavor {
            flavor: GPU_FLAVOR.into(),
            zone: "zone-a".into(),
            node_count: 2,
        }],
        job_types: vec!["training".into()],
        network: network.id,
        billing: Some(pb::Billing {
            mode: "pay-per-use".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let dedicated_pool = client
        .create_pool(admin.request(dedicated))
        .await
        .expect("create dedicated pool")
        .into_inner()
        .id;
    World {
        tenant_tokens,
        tenant_ids,
        public_pool,
        dedicated_pool,
    }
}

pub(crate) fn training_spec(name: String, pool: u64, accelerators: u32) -> pb::JobSpec {
    pb::JobSpec {
        name,
        pool,
        kind: "training".into(),
        replicas: 1,
        per_replica: Some(resources(1_000, 1_024, accelerators)),
        accelerator_type: "nvidia-a100".into(),
        priority: 1,
        command: vec!["python".into(), "train.py".into()],
        retry_limit: 1,
        ..Default::default()
    }
}

static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Submit under one request id, retried on any answer that leaves the outcome open
/// (the server deduplicates by the id, so a retry never creates a second job), moving
/// to the next replica after each failure as a client library does.
async fn submit_anywhere(
    addresses: &[String],
    token: &str,
    first: usize,
    spec: pb::JobSpec,
) -> Result<u64, tonic::Status> {
    let request_id = format!(
        "{:x}{:08x}",
        std::process::id(),
        NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)
    );
    let mut last = tonic::Status::unavailable("never tried");
    for attempt in 0..100 {
        let admin = Admin::connect(&addresses[(first + attempt) % addresses.len()], token).await;
        let mut request = admin.request(pb::SubmitJobRequest {
            spec: Some(spec.clone()),
        });
        request
            .metadata_mut()
            .insert("x-corral-request-id", request_id.parse().unwrap());
        match admin.raw().submit_job(request).await {
            Ok(response) => return Ok(response.into_inner().job),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::DeadlineExceeded
                ) =>
            {
                last = status;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => return Err(status),
        }
    }
    Err(last)
}

/// One submit under the caller's request id, no retries.
async fn submit_with_request_id(
    admin: &Admin,
    request_id: &str,
    spec: pb::JobSpec,
) -> Result<u64, tonic::Status> {
    let mut request = admin.request(pb::SubmitJobRequest { spec: Some(spec) });
    request
        .metadata_mut()
        .insert("x-corral-request-id", request_id.parse().unwrap());
    Ok(admin.raw().submit_job(request).await?.into_inner().job)
}

/// The caller's jobs, as a default `ListJobs` returns them.
async fn default_job_list(admin: &Admin) -> Vec<pb::Job> {
    admin
        .raw()
        .list_jobs(admin.request(pb::ListJobsRequest::default()))
        .await
        .expect("list jobs")
        .into_inner()
        .jobs
}

async fn submit(admin: &Admin, spec: pb::JobSpec) -> Result<u64, tonic::Status> {
    submit_anywhere(&[admin.address().to_string()], admin.token(), 0, spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_load_loses_no_acknowledged_submit() {
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster::start(3, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = cluster.client(0, ADMIN_TOKEN).await;
    let world = Arc::new(define_world(&admin).await);
    let addresses: Vec<String> = cluster
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect();

    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for client_index in 0..8usize {
        let world = world.clone();
        let acknowledged = acknowledged.clone();
        let failures = failures.clone();
        let addresses = addresses.clone();
        clients.push(tokio::spawn(async move {
            let tenant = client_index % 2;
            let pool = if tenant == 0 {
                world.dedicated_pool
            } else {
                world.public_pool
            };
            for number in 0..125usize {
                // Spread over replicas; a follower forwards the write to the leader.
                let name = format!("job-c{client_index}-n{number}");
                let spec = training_spec(name.clone(), pool, 1);
                match submit_anywhere(
                    &addresses,
                    &world.tenant_tokens[tenant],
                    client_index + number,
                    spec,
                )
                .await
                {
                    Ok(job) => {
                        acknowledged.lock().unwrap().insert(name, job);
                    }
                    Err(status) => {
                        failures.lock().unwrap().push(format!(
                            "{:?}: {}",
                            status.code(),
                            status.message()
                        ));
                    }
                }
            }
        }));
    }
    // SIGKILL the leader in the middle of the load.
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let old_leader_index = cluster.index_of(old_leader);
    cluster.kill(old_leader_index);
    for client in clients {
        client.await.expect("client task");
    }
    let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, old_leader, "a new leader is elected");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let failed = failures.lock().unwrap().clone();
    assert_eq!(acknowledged.len() + failed.len(), 1000);
    // Retries under the same request id ride out the failover.
    assert!(
        failed.is_empty(),
        "{} submits failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    cluster.wait_for_agreement(Duration::from_secs(30)).await;
    for replica in cluster
        .replicas
        .iter()
        .filter(|replica| replica.child.is_some())
    {
        check_replica(
            &Admin::connect(&replica.address, ADMIN_TOKEN).await,
            &acknowledged,
        )
        .await;
    }

    // The killed replica restarts from its disk and catches up.
    cluster.spawn(old_leader_index);
    let (index, digest) = cluster.wait_for_agreement(Duration::from_secs(60)).await;
    assert!(index > 0 && !digest.is_empty());
    check_replica(
        &Admin::connect(&cluster.replicas[old_leader_index].address, ADMIN_TOKEN).await,
        &acknowledged,
    )
    .await;
}

/// Every job this replica holds (a stale read: what it has applied, without asking the
/// leader).
async fn stale_job_list(admin: &Admin) -> Vec<pb::Job> {
    admin
        .raw()
        .list_jobs(admin.request(pb::ListJobsRequest {
            read: Some(pb::ReadOptions { stale: true }),
            page: Some(pb::Page { limit: 10_000 }),
            ..Default::default()
        }))
        .await
        .expect("list jobs")
        .into_inner()
        .jobs
}

/// Every acknowledged submit exists exactly once, with its id; no node is over capacity.
async fn check_replica(admin: &Admin, acknowledged: &BTreeMap<String, u64>) {
    let jobs = stale_job_list(admin).await;
    let mut by_name: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for job in &jobs {
        let name = job
            .spec
            .as_ref()
            .map(|spec| spec.name.clone())
            .unwrap_or_default();
        by_name.entry(name).or_default().push(job.id);
    }
    for (name, id) in acknowledged {
        assert_eq!(
            by_name.get(name),
            Some(&vec![*id]),
            "acknowledged {name} must exist exactly once as job {id}"
        );
    }
    let nodes = admin
        .raw()
        .list_nodes(admin.request(pb::ListNodesRequest {
            read: Some(pb::ReadOptions { stale: true }),
            ..Default::default()
        }))
        .await
        .expect("list nodes")
        .into_inner()
        .nodes;
    assert!(!nodes.is_empty());
    for node in nodes {
        let (capacity, allocated) = (
            node.capacity.unwrap_or_default(),
            node.allocated.unwrap_or_default(),
        );
        assert!(
            allocated.accelerators <= capacity.accelerators
                && allocated.cpu_millicores <= capacity.cpu_millicores,
            "node {} over capacity",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_grows_to_five_and_shrinks_to_three_under_load() {
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster::start(3, "sled");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = cluster.client(0, ADMIN_TOKEN).await;
    let world = Arc::new(define_world(&admin).await);
    let members: Vec<(u64, String)> = cluster
        .replicas
        .iter()
        .map(|replica| (replica.id, replica.address.clone()))
        .collect();
    for id in [4u64, 5] {
        let address = format!("127.0.0.1:{}", common::free_port());
        let replica = cluster.prepare_replica(id, &address, &members);
        cluster.replicas.push(replica);
        let index = cluster.replicas.len() - 1;
        cluster.spawn(index);
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let world = world.clone();
        let address = cluster.replicas[0].address.clone();
        tokio::spawn(async move {
            let admin = Admin::connect(&address, &world.tenant_tokens[1]).await;
            let mut accepted = 0usize;
            let mut number = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if submit(
                    &admin,
                    training_spec(format!("load-{number}"), world.public_pool, 1),
                )
                .await
                .is_ok()
                {
                    accepted += 1;
                }
                number += 1;
            }
            accepted
        })
    };

    let leader_admin = Admin::connect(
        &cluster.replicas[cluster.index_of(leader)].address,
        ADMIN_TOKEN,
    )
    .await;
    for id in [4u64, 5] {
        let address = cluster.replicas[cluster.index_of(id)].address.clone();
        leader_admin
            .raw()
            .add_replica(leader_admin.request(pb::AddReplicaRequest { id, address }))
            .await
            .expect("add replica");
    }
    let status = leader_admin.status().await.expect("status");
    assert_eq!(
        status.members.iter().filter(|member| member.voter).count(),
        5,
        "{status:?}"
    );
    // The new members catch up while the load goes on; digests are compared once it
    // has stopped.
    cluster.wait_for_catch_up(Duration::from_secs(60)).await;

    for id in [4u64, 5] {
        leader_admin
            .raw()
            .remove_replica(leader_admin.request(pb::RemoveReplicaRequest { id }))
            .await
            .expect("remove replica");
    }
    let status = leader_admin.status().await.expect("status");
    assert_eq!(
        status.members.iter().filter(|member| member.voter).count(),
        3,
        "{status:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let accepted = load.await.expect("load task");
    assert!(accepted > 0, "writes continued during membership changes");
    for id in [4u64, 5] {
        let index = cluster.index_of(id);
        cluster.kill(index);
    }
    cluster.wait_for_agreement(Duration::from_secs(60)).await;

    // A write sent to a follower succeeds.
    let follower = cluster
        .replicas
        .iter()
        .find(|replica| replica.id != leader && replica.child.is_some())
        .expect("a follower");
    let follower_admin = Admin::connect(&follower.address, ADMIN_TOKEN).await;
    let request = pb::CreateTenantRequest {
        name: "via-follower".into(),
        quota: Some(resources(1_000, 1_024, 1)),
        may_use_high_priority: false,
        max_active_jobs: 0,
    };
    let tenant = follower_admin
        .raw()
        .create_tenant(follower_admin.request(request))
        .await
        .expect("write through a follower")
        .into_inner();
    assert_eq!(tenant.name, "via-follower");
}

/// A one-replica cluster on `engine` with the test world defined, and an admin client.
async fn one_replica_world(engine: &str) -> (Cluster, Admin, World) {
    let cluster = Cluster::start(1, engine);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = cluster.client(0, ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    (cluster, admin, world)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_wrong_token_and_cross_tenant_calls_are_rejected() {
    let _machine = common::machine_shared().await;
    let (cluster, _admin, world) = one_replica_world("memory").await;
    let alpha = cluster.client(0, &world.tenant_tokens[0]).await;
    let beta = cluster.client(0, &world.tenant_tokens[1]).await;
    let beta_job = submit(
        &beta,
        training_spec("beta-job".into(), world.public_pool, 1),
    )
    .await
    .expect("beta submits");
    let anonymous = cluster.client(0, "").await;
    let wrong = cluster.client(0, "not-a-real-token-at-all").await;

    let cases: Vec<(&str, Result<(), tonic::Status>, Code)> = vec![
        (
            "no token lists pools",
            anonymous
                .raw()
                .list_pools(anonymous.request(pb::ListPoolsRequest::default()))
                .await
                .map(drop),
            Code::Unauthenticated,
        ),
        (
            "wrong token lists pools",
            wrong
                .raw()
                .list_pools(wrong.request(pb::ListPoolsRequest::default()))
                .await
                .map(drop),
            Code::Unauthenticated,
        ),
        (
            "tenant creates a tenant",
            alpha
                .raw()
                .create_tenant(alpha.request(pb::CreateTenantRequest {
                    name: "sneaky".into(),
                    ..Default::default()
                }))
                .await
                .map(drop),
            Code::PermissionDenied,
        ),
        (
            "tenant creates a token",
            alpha
                .raw()
                .create_token(alpha.request(pb::CreateTokenRequest {
                    name: "x".into(),
                    tenant: 0,
                    ..Default::default()
                }))
                .await
                .map(drop),
            Code::PermissionDenied,
        ),
        (
            "tenant reads another's job",
            alpha
                .raw()
                .get_job(alpha.request(pb::GetJobRequest {
                    job: beta_job,
                    ..Default::default()
                }))
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "tenant terminates another's job",
            alpha
                .raw()
                .terminate_job(alpha.request(pb::JobRef { job: beta_job }))
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "tenant reads another's dedicated pool",
            beta.raw()
                .get_pool(beta.request(pb::GetPoolRequest {
                    pool: world.dedicated_pool,
                    read: None,
                }))
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "tenant submits to another's dedicated pool",
            submit(
                &beta,
                training_spec("intruder".into(), world.dedicated_pool, 1),
            )
            .await
            .map(drop),
            Code::NotFound,
        ),
        (
            "tenant bills of another tenant",
            alpha
                .raw()
                .list_bills(alpha.request(pb::ListBillsRequest {
                    tenant: world.tenant_ids[1],
                    ..Default::default()
                }))
                .await
                .map(drop),
            Code::NotFound,
        ),
        (
            "tenant adds a replica",
            alpha
                .raw()
                .add_replica(alpha.request(pb::AddReplicaRequest {
                    id: 9,
                    address: "127.0.0.1:1".into(),
                }))
                .await
                .map(drop),
            Code::PermissionDenied,
        ),
    ];
    for (name, result, expected) in cases {
        let status = result.expect_err(name);
        assert_eq!(status.code(), expected, "{name}: {status:?}");
    }
    // A tenant's job list holds only its own jobs.
    let jobs = default_job_list(&alpha).await;
    assert!(jobs.iter().all(|job| job.tenant == world.tenant_ids[0]));
    // A request id names one command: a repeat gets the first answer, the same id with
    // another command is refused and creates nothing.
    let request_id = "5eed0000000000000000000000000001";
    let submit_named = |name: &str| {
        submit_with_request_id(
            &alpha,
            request_id,
            training_spec(name.into(), world.public_pool, 1),
        )
    };
    let first = submit_named("once")
        .await
        .expect("alpha submits under its request id");
    let repeated = submit_named("once").await.expect("the repeat is answered");
    assert_eq!(repeated, first, "a repeated request created another job");
    let status = submit_named("another")
        .await
        .expect_err("the same request id with another command");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("different command"), "{status:?}");
    let jobs_after = default_job_list(&alpha).await;
    assert_eq!(
        jobs_after.len(),
        jobs.len() + 1,
        "only the first submit made a job"
    );
    // Peer RPCs need the cluster secret (also from a caller with a peer certificate).
    let channel = common::tls::peer_channel(&cluster.replicas[0].address);
    let mut raft = pb::raft_client::RaftClient::new(channel);
    let status = raft
        .vote(pb::RaftRequest {
            data: vec![1, 2, 3],
            ..Default::default()
        })
        .await
        .expect_err("vote without the secret");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// ClusterStatus computes the state digest (an encoding of the whole state) only when
/// asked for it; equal replicas at the same index give the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_status_computes_the_digest_only_when_asked() {
    let _machine = common::machine_shared().await;
    let (_cluster, admin, _world) = one_replica_world("memory").await;
    let plain = admin
        .raw()
        .cluster_status(admin.request(pb::ClusterStatusRequest::default()))
        .await
        .expect("status")
        .into_inner();
    assert!(plain.digest.is_empty(), "not asked for: {}", plain.digest);
    assert!(plain.last_applied > 0 && plain.leader == plain.this_replica);
    let with_digest = admin.status().await.expect("status with digest");
    assert_eq!(with_digest.digest.len(), 64, "{}", with_digest.digest);
    assert!(with_digest.digest.chars().all(|c| c.is_ascii_hexdigit()));
    let again = admin.status().await.expect("status with digest");
    if again.last_applied == with_digest.last_applied {
        assert_eq!(again.digest, with_digest.digest);
    }
}

/// One SubmitJobs call carrying `specs` under the client's request id `request_id`.
async fn submit_jobs_named(
    client: &Admin,
    specs: Vec<pb::JobSpec>,
    request_id: &str,
) -> Vec<pb::SubmitResult> {
    let mut request = client.request(pb::SubmitJobsRequest { specs });
    request
        .metadata_mut()
        .insert("x-corral-request-id", request_id.parse().unwrap());
    client
        .raw()
        .submit_jobs(request)
        .await
        .expect("batch submit")
        .into_inner()
        .results
}

/// The log indexes of the first `count` JobSubmitted events from `from_index` on.
async fn submitted_event_indexes(client: &Admin, from_index: u64, count: usize) -> Vec<u64> {
    let mut events = client
        .raw()
        .watch(client.request(pb::WatchRequest { from_index }))
        .await
        .expect("watch")
        .into_inner();
    let mut indexes = Vec::new();
    while indexes.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("events in time")
            .expect("the stream stays open")
            .expect("more events");
        if event.kind == "JobSubmitted" {
            indexes.push(event.index);
        }
    }
    indexes
}

/// The 100 writes of one SubmitJobs are proposed together (group commit): they share
/// one log entry, and each still gets its own job. Retried under the same request id
/// (its reply was lost), the call is answered with the same jobs and creates none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submit_jobs_call_is_one_entry_and_safe_to_retry() {
    let _machine = common::machine_shared().await;
    let (cluster, admin, world) = one_replica_world("sled").await;
    let before = admin.status().await.expect("status").last_applied;
    let tenant = cluster.client(0, &world.tenant_tokens[1]).await;
    let specs: Vec<pb::JobSpec> = (0..100)
        .map(|number| training_spec(format!("grouped-{number}"), world.public_pool, 1))
        .collect();
    let results = submit_jobs_named(&tenant, specs.clone(), "5eb5").await;
    assert!(results.iter().all(|result| result.error.is_empty()));
    let jobs: Vec<u64> = results.iter().map(|result| result.job).collect();
    assert_eq!(
        jobs.iter().collect::<BTreeSet<_>>().len(),
        100,
        "every write got its own job"
    );
    let indexes: BTreeSet<u64> = submitted_event_indexes(&tenant, before + 1, 100)
        .await
        .into_iter()
        .collect();
    assert_eq!(indexes.len(), 1, "the writes took entries {indexes:?}");

    let retried = submit_jobs_named(&tenant, specs, "5eb5").await;
    let retried_jobs: Vec<u64> = retried.iter().map(|result| result.job).collect();
    assert_eq!(
        retried_jobs, jobs,
        "the retry is answered with the first jobs"
    );
    let listed = tenant
        .raw()
        .list_jobs(tenant.request(pb::ListJobsRequest {
            page: Some(pb::Page { limit: 1_000 }),
            ..Default::default()
        }))
        .await
        .expect("list jobs")
        .into_inner()
        .jobs;
    let grouped = listed
        .iter()
        .filter(|job| {
            job.spec
                .as_ref()
                .is_some_and(|spec| spec.name.starts_with("grouped-"))
        })
        .count();
    assert_eq!(grouped, 100, "the retry created no jobs");
}

/// One token creation under the caller's request id, no retries; the secret.
async fn create_token_with_request_id(
    admin: &Admin,
    tenant: u64,
    request_id: &str,
) -> Result<String, tonic::Status> {
    let mut request = admin.request(pb::CreateTokenRequest {
        name: "retried-token".into(),
        tenant,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-corral-request-id", request_id.parse().unwrap());
    Ok(admin.raw().create_token(request).await?.into_inner().secret)
}

/// A token creation retried under its request id (its reply was lost) gets the same
/// secret back, and that secret works; a new call for the same name is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_token_creation_returns_the_same_working_secret() {
    let _machine = common::machine_shared().await;
    let (cluster, admin, world) = one_replica_world("sled").await;
    let tenant = world.tenant_ids[0];
    let first = create_token_with_request_id(&admin, tenant, "70ce")
        .await
        .expect("create");
    let retry = create_token_with_request_id(&admin, tenant, "70ce")
        .await
        .expect("the retry is answered with the first outcome");
    assert_eq!(first, retry, "the retry got another secret");
    let user = cluster.client(0, &first).await;
    assert!(default_job_list(&user).await.is_empty());
    let again = create_token_with_request_id(&admin, tenant, "70cf")
        .await
        .expect_err("a new call for the same name");
    assert_eq!(again.code(), Code::AlreadyExists);
}

/// Submits before the snapshot in the rejoin test.
const FILL_JOBS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_data_was_wiped_rejoins_by_snapshot() {
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster::start(3, "sled");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = cluster.client(0, ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    let addresses: Vec<String> = cluster
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect();
    // Enough entries that the snapshot purges the log behind it (the log is purged in
    // batches of 256): one client's submits one after another are one entry each
    // (group commit only groups writes that wait at the same time).
    let tenant = cluster.client(0, &world.tenant_tokens[1]).await;
    for number in 0..FILL_JOBS {
        submit(
            &tenant,
            training_spec(format!("fill-{number}"), world.public_pool, 1),
        )
        .await
        .expect("fill submit");
    }
    // Wipe replica 1, the one that initialized the cluster: on restart with an empty
    // directory it must join the existing cluster, not found a new one.
    let _ = leader;
    let follower_index = cluster.index_of(1);
    cluster.kill(follower_index);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let leader_admin = Admin::connect(&addresses[cluster.index_of(leader)], ADMIN_TOKEN).await;
    leader_admin
        .raw()
        .trigger_snapshot(leader_admin.request(pb::Empty {}))
        .await
        .expect("snapshot");
    // More writes after the snapshot, so the rejoining replica needs snapshot and log.
    let spec = training_spec("after-snapshot".into(), world.public_pool, 1);
    submit_anywhere(
        &addresses,
        &world.tenant_tokens[1],
        cluster.index_of(leader),
        spec,
    )
    .await
    .expect("submit after snapshot");

    std::fs::remove_dir_all(&cluster.replicas[follower_index].data_dir)
        .expect("wipe the data directory");
    cluster.spawn(follower_index);
    let (index, _) = cluster.wait_for_agreement(Duration::from_secs(60)).await;
    assert!(index > FILL_JOBS as u64);
    let rejoined_admin = Admin::connect(&addresses[follower_index], ADMIN_TOKEN).await;
    let rejoined = rejoined_admin.status().await.expect("status");
    assert!(
        rejoined.snapshot_index > 0,
        "the wiped replica installed a snapshot: {rejoined:?}"
    );
    let jobs_here = stale_job_list(&rejoined_admin).await;
    assert_eq!(
        jobs_here.len(),
        FILL_JOBS + 1,
        "the fill jobs and the one after the snapshot"
    );
}

/// `message` as the caller sends it under `request_id`, as every attempt of one write.
fn with_request_id<T>(admin: &Admin, message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = admin.request(message);
    request
        .metadata_mut()
        .insert("x-corral-request-id", request_id.parse().unwrap());
    request
}

/// A CreatePool or RegisterNode sent again under its request id (its reply was lost)
/// gets the first answer, not AlreadyExists, and creates nothing more; the agent's
/// RegisterAgentNode too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_pool_creation_and_node_registration_get_the_first_answer() {
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(1, "memory");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = cluster.client(0, ADMIN_TOKEN).await;
    let mut client = admin.raw();
    let flavor = pb::Flavor {
        name: GPU_FLAVOR.into(),
        capacity: Some(resources(96_000, 1_048_576, 8)),
        accelerator_type: "nvidia-a100".into(),
        cpu_architecture: "x86_64".into(),
        price_micros_per_hour: 32_000_000,
    };
    client
        .define_flavor(admin.request(flavor))
        .await
        .expect("define flavor");

    let register = pb::RegisterNodeRequest {
        name: "retried-node".into(),
        flavor: GPU_FLAVOR.into(),
        zone: "zone-a".into(),
        ..Default::default()
    };
    let first = client
        .register_node(with_request_id(&admin, register.clone(), "5e1"))
        .await
        .expect("register node")
        .into_inner();
    let retry = client
        .register_node(with_request_id(&admin, register, "5e1"))
        .await
        .expect("the retried registration is answered with the first outcome")
        .into_inner();
    assert_eq!((retry.id, &retry.name), (first.id, &first.name));

    let agent = Admin::connect(admin.address(), common::AGENT_TOKEN).await;
    // An agent: the agent token and a client certificate the cluster CA signed.
    let channel = common::tls::peer_channel(admin.address());
    let mut agents = pb::agent_service_client::AgentServiceClient::new(channel);
    let register_agent = pb::RegisterAgentNodeRequest {
        name: "retried-agent-node".into(),
        flavor: GPU_FLAVOR.into(),
        zone: "zone-a".into(),
        ..Default::default()
    };
    let first_agent = agents
        .register_agent_node(with_request_id(&agent, register_agent.clone(), "5e2"))
        .await
        .expect("register agent node")
        .into_inner();
    let retry_agent = agents
        .register_agent_node(with_request_id(&agent, register_agent, "5e2"))
        .await
        .expect("the retried agent registration is answered with the first outcome")
        .into_inner();
    assert_eq!(retry_agent.node, first_agent.node);
    assert!(!first_agent.credential.is_empty());
    assert_eq!(
        retry_agent.credential, first_agent.credential,
        "the retry hands out the credential the node was given, not a second one"
    );

    let pool = pb::CreatePoolRequest {
        name: "retried-pool".into(),
        kind: "public".into(),
        flavors: vec![pb::PoolFlavor {
            flavor: GPU_FLAVOR.into(),
            zone: "zone-a".into(),
            node_count: 1,
        }],
        job_types: vec!["training".into()],
        billing: Some(pb::Billing {
            mode: "pay-per-use".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first_pool = client
        .create_pool(with_request_id(&admin, pool.clone(), "5e3"))
        .await
        .expect("create pool")
        .into_inner();
    let retry_pool = client
        .create_pool(with_request_id(&admin, pool, "5e3"))
        .await
        .expect("the retried pool creation is answered with the first outcome")
        .into_inner();
    assert_eq!(
        (retry_pool.id, &retry_pool.name),
        (first_pool.id, &first_pool.name)
    );

    let pools = client
        .list_pools(admin.request(pb::ListPoolsRequest::default()))
        .await
        .expect("list pools")
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1, "one pool: {pools:?}");
    let nodes = client
        .list_nodes(admin.request(pb::ListNodesRequest::default()))
        .await
        .expect("list nodes")
        .into_inner()
        .nodes;
    let mut names: Vec<&str> = nodes.iter().map(|node| node.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["retried-agent-node", "retried-node"]);
}

/// Reads events from `stream` until `count` of kind `kind` were seen, or none came for
/// 10 s (a stream that skipped some never gets there); returns every event read
/// (index, kind, detail), in the order received.
async fn read_events_until(
    stream: &mut tonic::Streaming<pb::Event>,
    kind: &str,
    count: usize,
) -> Vec<(u64, String, String)> {
    let mut seen = 0;
    let mut events = Vec::new();
    while seen < count {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(10), stream.message()).await else {
            break;
        };
        let event = next
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        if event.kind == kind {
            seen += 1;
        }
        events.push((event.index, event.kind, event.detail));
    }
    events
}

/// A subscriber that stops reading falls behind the applied-event broadcast (1,024
/// entries) by far more than one catch-up batch (1,000 events): twelve SubmitJobs of
/// 1,000 fill its connection's buffers mid-way, then 1,100 single-write entries push
/// the rest of the submissions out of the broadcast. When it reads again it must
/// receive every event exactly once, in order: the sequence a fresh subscriber reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_lags_many_batches_misses_nothing() {
    const BATCHES: usize = 12;
    const TENANTS: usize = 1_100;
    let _machine = common::machine_shared().await;
    let (cluster, admin, world) = one_replica_world("memory").await;
    let tenant = cluster.client(0, &world.tenant_tokens[0]).await;
    // A small receive window, so the unread stream backs up into the server soon.
    let channel = common::tls::endpoint(admin.address(), common::tls::client_tls())
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut slow = pb::admin_client::AdminClient::new(channel)
        .watch(admin.request(pb::WatchRequest { from_index: 1 }))
        .await
        .expect("watch")
        .into_inner();
    for batch in 0..BATCHES {
        let specs: Vec<pb::JobSpec> = (0..1_000)
            .map(|number| training_spec(format!("lag-{batch}-{number}"), world.public_pool, 1))
            .collect();
        let results = submit_jobs_named(&tenant, specs, &format!("{:x}", 0x1a9_000 + batch)).await;
        assert!(results.iter().all(|result| result.error.is_empty()));
    }
    let mut client = admin.raw();
    for number in 0..TENANTS {
        client
            .create_tenant(admin.request(pb::CreateTenantRequest {
                name: format!("lag-{number:05}"),
                quota: Some(resources(1_000, 1_000, 1)),
                may_use_high_priority: false,
                max_active_jobs: 0,
            }))
            .await
            .expect("create tenant");
    }
    // The world's two tenants, then ours.
    let created = world.tenant_ids.len() + TENANTS;
    let slow_events = read_events_until(&mut slow, "TenantCreated", created).await;
    let mut fresh = admin
        .raw()
        .watch(admin.request(pb::WatchRequest { from_index: 1 }))
        .await
        .expect("watch")
        .into_inner();
    let fresh_events = read_events_until(&mut fresh, "TenantCreated", created).await;
    let created_seen = |events: &[(u64, String, String)]| {
        events
            .iter()
            .filter(|(_, kind, _)| kind == "TenantCreated")
            .count()
    };
    assert_eq!(created_seen(&fresh_events), created);
    assert_eq!(
        created_seen(&slow_events),
        created,
        "the lagging watcher missed events: it read {} in all, a fresh watcher {}",
        slow_events.len(),
        fresh_events.len()
    );
    let submitted = |events: &[(u64, String, String)]| {
        events
            .iter()
            .filter(|(_, kind, _)| kind == "JobSubmitted")
            .count()
    };
    assert_eq!(submitted(&fresh_events), BATCHES * 1_000);
    assert_eq!(
        submitted(&slow_events),
        BATCHES * 1_000,
        "the lagging watcher missed submissions"
    );
    assert_eq!(slow_events, fresh_events);
}
