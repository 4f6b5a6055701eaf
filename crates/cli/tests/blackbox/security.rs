//! What a replica keeps secret: a generated admin token is written to a private file
//! only (never to stdout or the log), and the data directory is private.

use crate::common;
use common::{Admin, Cluster, QUIET_LOOPS};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every directory under `root` (itself included).
fn directories(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![root.to_path_buf()];
    let mut index = 0;
    while index < found.len() {
        for item in std::fs::read_dir(&found[index]).expect("read dir") {
            let path = item.expect("dir entry").path();
            if std::fs::symlink_metadata(&path).expect("metadata").is_dir() {
                found.push(path);
            }
        }
        index += 1;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_token_is_only_in_a_private_file() {
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster {
        directory: tempfile::tempdir().expect("temporary directory"),
        replicas: Vec::new(),
        engine: "sled".into(),
        loops: QUIET_LOOPS.into(),
        tls_section: common::tls::pki().config_section(),
        raft_section: common::HARNESS_RAFT.into(),
    };
    let address = format!("127.0.0.1:{}", common::free_port());
    let replica = cluster.prepare_replica(1, &address, &[(1, address.clone())]);
    // No admin token in the configuration: the first leader generates one.
    let config = std::fs::read_to_string(&replica.config_path).expect("config");
    let without: String = config
        .lines()
        .filter(|line| !line.starts_with("admin_token"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(config, without, "the harness config names an admin token");
    std::fs::write(&replica.config_path, without).expect("rewrite config");
    let data_dir = replica.data_dir.clone();
    cluster.replicas.push(replica);
    cluster.spawn(0);

    let token_file = data_dir.join("admin-token");
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(&token_file) {
            if !token.is_empty() {
                break token;
            }
        }
        assert!(Instant::now() < deadline, "no admin-token file was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(mode(&token_file), 0o600, "the token file is private");
    // The token works, and it appears in neither stdout nor stderr.
    let admin = Admin::connect(&address, token.trim()).await;
    admin
        .status()
        .await
        .expect("the generated token is an admin's");
    let output = cluster.log_of(1);
    assert!(
        !output.contains(token.trim()),
        "the generated token was printed: {output}"
    );
    // The data directory is private to the replica's user: no directory in it can be
    // entered by anyone else, and the snapshot files are the owner's only.
    for directory in directories(&data_dir) {
        assert_eq!(mode(&directory), 0o700, "{}", directory.display());
    }
    let snapshots = data_dir.join("snapshots");
    for item in std::fs::read_dir(&snapshots).expect("snapshots") {
        let path = item.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// Resident memory of a process, from /proc.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// A SubmitJobs of about 15 MiB: one spec with a huge environment.
fn huge_submit() -> corral_client::pb::SubmitJobsRequest {
    use corral_client::pb;
    let spec = pb::JobSpec {
        name: "huge".into(),
        kind: "training".into(),
        replicas: 1,
        environment: (0..3_800)
            .map(|index| (format!("VAR_{index}"), "x".repeat(4_000)))
            .collect(),
        ..Default::default()
    };
    pb::SubmitJobsRequest { specs: vec![spec] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_before_they_cost_memory_or_log_entries() {
    use corral_client::pb;
    let _machine = common::machine_alone().await;
    let cluster = Cluster::start(1, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();
    let pid = cluster.replicas[0].child.as_ref().expect("running").id();
    let admin = Admin::connect(&address, common::ADMIN_TOKEN).await;
    let tenant = admin
        .raw()
        .create_tenant(admin.request(pb::CreateTenantRequest {
            name: "hostile".into(),
            ..Default::default()
        }))
        .await
        .expect("tenant")
        .into_inner();
    let tenant_token = admin
        .raw()
        .create_token(admin.request(pb::CreateTokenRequest {
            name: "hostile".into(),
            tenant: tenant.id,
            ..Default::default()
        }))
        .await
        .expect("token")
        .into_inner()
        .secret;
    let before = admin.status().await.expect("status");
    let resident_before = resident_mib(pid);

    // Unauthenticated: three at once, each ~15 MiB; refused from the headers.
    let outsider = Admin::connect(&address, "not-a-token-0123456789").await;
    let calls = (0..3).map(|_| {
        let outsider = outsider.clone();
        async move {
            outsider
                .raw()
                .submit_jobs(outsider.request(huge_submit()))
                .await
                .map(drop)
        }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unauthenticated);
    }
    // Authenticated, but larger than the call may carry: a 15 MiB network name and a
    // 15 MiB tenant name (the latter also not the tenant's to create).
    let tenant_client = Admin::connect(&address, &tenant_token).await;
    let oversize_network = tenant_client
        .raw()
        .create_network(tenant_client.request(pb::CreateNetworkRequest {
            name: "n".repeat(15 << 20),
            cidr: "10.1.0.0/16".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        oversize_network.code(),
        tonic::Code::ResourceExhausted,
        "{oversize_network}"
    );
    let oversize_tenant = admin
        .raw()
        .create_tenant(admin.request(pb::CreateTenantRequest {
            name: "t".repeat(200 << 10),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        oversize_tenant.code(),
        tonic::Code::InvalidArgument,
        "{oversize_tenant}"
    );

    let after = admin.status().await.expect("status");
    let resident_after = resident_mib(pid);
    assert_eq!(
        (after.term, after.last_applied),
        (before.term, before.last_applied),
        "no election, and nothing entered the log"
    );
    // Stated bound: the refused messages cost the replica less than 64 MiB (before the
    // gate, one such message cost about 2 GiB).
    assert!(
        resident_after < resident_before + 64,
        "resident memory grew from {resident_before} MiB to {resident_after} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_hold_every_watch_stream() {
    use corral_client::pb;
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(1, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();
    let admin = Admin::connect(&address, common::ADMIN_TOKEN).await;
    let mut tokens = Vec::new();
    for name in ["greedy", "patient"] {
        let tenant = admin
            .raw()
            .create_tenant(admin.request(pb::CreateTenantRequest {
                name: name.into(),
                ..Default::default()
            }))
            .await
            .expect("tenant")
            .into_inner();
        let token = admin
            .raw()
            .create_token(admin.request(pb::CreateTokenRequest {
                name: name.into(),
                tenant: tenant.id,
                ..Default::default()
            }))
            .await
            .expect("token")
            .into_inner()
            .secret;
        tokens.push(Admin::connect(&address, &token).await);
    }
    let (greedy, patient) = (&tokens[0], &tokens[1]);
    let watch = |client: &Admin| {
        let client = client.clone();
        async move {
            client
                .raw()
                .watch(client.request(pb::WatchRequest { from_index: 1 }))
                .await
                .map(|response| response.into_inner())
        }
    };
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(watch(greedy).await.expect("a watch within the limit"));
    }
    let refused = watch(greedy).await.expect_err("the 17th watch");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    let _other = watch(patient).await.expect("another tenant still watches");
    // Closing one gives its slot back (the server notices the client went away).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match watch(greedy).await {
            Ok(stream) => {
                held.push(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_submission_rate_is_refused_and_others_are_not() {
    use crate::cluster::{define_world, training_spec};
    use corral_client::pb;
    let _machine = common::machine_shared().await;
    let loops = format!(
        "{}\n[limits]\nsubmit_jobs_per_second = 1\nsubmit_jobs_burst = 3\n",
        common::QUIET_LOOPS
    );
    let cluster = Cluster::start_with_loops(1, "sled", &loops);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();
    let admin = Admin::connect(&address, common::ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    let alpha = Admin::connect(&address, &world.tenant_tokens[0]).await;
    let beta = Admin::connect(&address, &world.tenant_tokens[1]).await;
    let submit = |client: &Admin, name: &str| {
        let client = client.clone();
        let spec = training_spec(name.to_string(), world.public_pool, 0);
        async move {
            client
                .raw()
                .submit_job(client.request(pb::SubmitJobRequest { spec: Some(spec) }))
                .await
        }
    };
    let jobs = |client: &Admin| {
        let client = client.clone();
        async move {
            client
                .raw()
                .list_jobs(client.request(pb::ListJobsRequest::default()))
                .await
                .expect("list jobs")
                .into_inner()
                .jobs
                .len()
        }
    };
    // The burst, then refused until the bucket refills; nothing was proposed for it.
    for number in 0..3 {
        submit(&alpha, &format!("burst-{number}"))
            .await
            .expect("within the burst");
    }
    let refused = submit(&alpha, "over").await.expect_err("over the rate");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("retry in"), "{refused}");
    assert_eq!(jobs(&alpha).await, 3);
    // Another tenant has its own bucket; a batch larger than the burst is refused whole.
    submit(&beta, "beta").await.expect("beta is not held back");
    let batch = pb::SubmitJobsRequest {
        specs: (0..4)
            .map(|number| training_spec(format!("batch-{number}"), world.public_pool, 0))
            .collect(),
    };
    let too_many = beta
        .raw()
        .submit_jobs(beta.request(batch))
        .await
        .expect_err("more than the burst at once");
    assert_eq!(too_many.code(), tonic::Code::ResourceExhausted);
    assert!(too_many.message().contains("split the call"), "{too_many}");
    assert_eq!(jobs(&beta).await, 1);
    // A second later, one more.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    submit(&alpha, "later").await.expect("refilled");
}

/// SIGSTOP or SIGCONT a replica's process.
fn signal(cluster: &Cluster, index: usize, signal: &str) {
    let pid = cluster.replicas[index]
        .child
        .as_ref()
        .expect("the replica runs")
        .id();
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Authorization is decided at apply, in the leader's log order: a follower that has not
/// applied a token's revocation still believes in the token, lets its write through its
/// edge and forwards it, and the write is refused at apply all the same, changing nothing.
/// The follower is made to lag for certain: it is down while the revocation commits, and
/// comes back while the other two are stopped, so it hears of the revocation from no one
/// before it has authenticated the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_the_leader_writes_nothing_through_a_lagging_follower() {
    use crate::cluster::{define_world, training_spec};
    use corral_client::pb;
    use tonic::metadata::MetadataValue;
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster::start(3, "sled");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let leader_index = cluster.index_of(leader);
    let lagging = (leader_index + 1) % 3;
    let other = (leader_index + 2) % 3;
    let admin = cluster.client(leader_index, common::ADMIN_TOKEN).await;
    let world = define_world(&admin).await;
    cluster.wait_for_catch_up(Duration::from_secs(30)).await;
    let submit = |client: &Admin, name: &str, request_id: &str| {
        let mut request = client.request(pb::SubmitJobRequest {
            spec: Some(training_spec(name.into(), world.public_pool, 0)),
        });
        let value: MetadataValue<_> = request_id.parse().expect("request id header");
        request.metadata_mut().insert("x-corral-request-id", value);
        let mut client = client.raw();
        async move { client.submit_job(request).await }
    };
    let alpha = cluster.client(lagging, &world.tenant_tokens[0]).await;
    submit(&alpha, "before", "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f01")
        .await
        .expect("a live token writes through the follower");

    // The follower snapshots what it knows (so that it knows it again as soon as it
    // restarts, without a leader) and goes down; the revocation commits on the other two.
    let lagging_admin = cluster.client(lagging, common::ADMIN_TOKEN).await;
    lagging_admin
        .raw()
        .trigger_snapshot(lagging_admin.request(pb::Empty {}))
        .await
        .expect("a snapshot on the follower");
    cluster.kill(lagging);
    admin
        .raw()
        .revoke_token(admin.request(pb::RevokeTokenRequest {
            name: "alpha-token".into(),
        }))
        .await
        .expect("revoke on the leader");
    // The other two stop; the follower comes back with its log from before the
    // revocation, and nobody to learn it from.
    signal(&cluster, leader_index, "-STOP");
    signal(&cluster, other, "-STOP");
    cluster.spawn(lagging);
    let lagging_admin = cluster.client(lagging, common::ADMIN_TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while lagging_admin.status().await.is_err() {
        assert!(Instant::now() < deadline, "the follower did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alpha = cluster.client(lagging, &world.tenant_tokens[0]).await;
    let request_id = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f02";
    let pending = tokio::spawn(submit(&alpha, "after", request_id));
    // The follower authenticated the write with what it knows and waits for a leader
    // to forward it to (up to 5 s); then the others wake, a leader is elected and the
    // follower forwards the write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&cluster, leader_index, "-CONT");
    signal(&cluster, other, "-CONT");
    let mut outcome = pending.await.expect("the call task");
    // Should the election outlast the follower's wait, the same request id makes the
    // retry the same write, answered with the first outcome if there was one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(&outcome, Err(status) if status.code() == tonic::Code::Unavailable)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        outcome = submit(&alpha, "after", request_id).await;
    }
    let refused = outcome.expect_err("a revoked token wrote through a lagging follower");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");

    // Nothing was created, on any replica.
    cluster.wait_for_catch_up(Duration::from_secs(30)).await;
    for index in 0..3 {
        let reader = cluster.client(index, common::ADMIN_TOKEN).await;
        let jobs = reader
            .raw()
            .list_jobs(reader.request(pb::ListJobsRequest {
                read: Some(pb::ReadOptions { stale: true }),
                ..Default::default()
            }))
            .await
            .expect("list jobs")
            .into_inner()
            .jobs;
        let names: Vec<&str> = jobs
            .iter()
            .filter_map(|job| job.spec.as_ref().map(|spec| spec.name.as_str()))
            .collect();
        assert_eq!(names, ["before"], "replica {index}");
    }
    // The write passed the lagging follower's edge and was refused at apply: it is in
    // the log, and so in the audit trail, refused.
    let reader = cluster.client(leader_index, common::ADMIN_TOKEN).await;
    let audit = reader
        .raw()
        .list_audit(reader.request(pb::ListAuditRequest {
            principal: format!("tenant-{}/operator", world.tenant_ids[0]),
            kind: "job_submit".into(),
            ..Default::default()
        }))
        .await
        .expect("the audit trail")
        .into_inner()
        .records;
    let after: Vec<_> = audit
        .iter()
        .filter(|record| record.request_id == request_id)
        .collect();
    assert_eq!(after.len(), 1, "{refused} {audit:?}");
    assert_eq!(after[0].outcome, "refused", "{:?}", after[0]);
    assert!(after[0].reason.contains("revoked"), "{:?}", after[0]);
    assert!(after[0].token.starts_with("token-"), "{:?}", after[0]);
}
