//! The dev cluster in one process: three real replicas over real gRPC on loopback, the
//! seeded demo world, and a job driven to completion by the simulated agent.

use corral_client::pb;
use corral_client::pb::admin_client::AdminClient;
use corral_server::dev::{start_dev_cluster, DevOptions, DEV_ADMIN_TOKEN, DEV_TENANT_TOKEN};
use corral_server::dev_agent::run_simulated_agent;
use corral_server::ServerConfig;
use corral_store::Engine;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Request;

fn base_port() -> u16 {
    // Three consecutive free ports are likely right above a fresh ephemeral port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    port.saturating_sub(3000).max(20_000)
}

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn client(address: &str) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{address}"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_cluster_runs_a_training_job_to_completion() {
    let data = tempfile::tempdir().unwrap();
    let options = DevOptions {
        port: base_port(),
        data_dir: Some(data.path().to_path_buf()),
        replicas: 3,
        engine: Engine::Memory,
        training_run_ms: 300,
    };
    let cluster = start_dev_cluster(&options)
        .await
        .expect("dev cluster starts");
    let agent = tokio::spawn(run_simulated_agent(
        cluster.managers[0].state_machine.clone(),
        cluster.managers[0].proposer.clone(),
        options.training_run_ms,
    ));
    let mut admin = client(&cluster.address()).await;

    let pools = admin
        .list_pools(authorized(
            pb::ListPoolsRequest::default(),
            DEV_TENANT_TOKEN,
        ))
        .await
        .expect("list pools")
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1, "the demo tenant sees the public pool");
    let public = &pools[0];
    assert_eq!(public.kind, "public");
    assert_eq!(public.node_count, 5);

    let spec = pb::JobSpec {
        name: "hello".into(),
        pool: public.id,
        kind: "training".into(),
        replicas: 2,
        per_replica: Some(pb::Resources {
            cpu_millicores: 8_000,
            memory_mib: 65_536,
            accelerators: 4,
            disk_gib: 10,
            bandwidth_mbps: 100,
        }),
        accelerator_type: "nvidia-a100".into(),
        priority: 1,
        command: vec!["python".into(), "train.py".into()],
        retry_limit: 1,
        ..Default::default()
    };
    let job = admin
        .submit_job(authorized(
            pb::SubmitJobRequest { spec: Some(spec) },
            DEV_TENANT_TOKEN,
        ))
        .await
        .expect("submit")
        .into_inner()
        .job;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_states = Vec::new();
    loop {
        let found = admin
            .get_job(authorized(
                pb::GetJobRequest { job, read: None },
                DEV_TENANT_TOKEN,
            ))
            .await
            .expect("get job")
            .into_inner();
        if seen_states.last() != Some(&found.state) {
            seen_states.push(found.state.clone());
        }
        if found.state == "Completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not complete; states seen: {seen_states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every replica agrees on the state once writes settle.
    let digests_agree = async {
        loop {
            let mut seen = Vec::new();
            for manager in &cluster.managers {
                let mut replica = client(&manager.address.to_string()).await;
                let status = replica
                    .cluster_status(authorized(pb::Empty {}, DEV_ADMIN_TOKEN))
                    .await
                    .unwrap()
                    .into_inner();
                seen.push((status.last_applied, status.digest));
            }
            if seen.windows(2).all(|pair| pair[0] == pair[1]) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), digests_agree)
        .await
        .expect("replicas converge");

    let bills = admin
        .list_bills(authorized(
            pb::ListBillsRequest::default(),
            DEV_TENANT_TOKEN,
        ))
        .await
        .expect("bills")
        .into_inner();
    assert!(
        bills.lifetime_total_micros > 0,
        "the public-pool job was billed"
    );
    agent.abort();
    cluster.shutdown().await;
}

#[test]
fn every_config_in_the_repository_loads() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut loaded = 0;
    for name in [
        "dev.toml",
        "manager-1.toml",
        "manager-2.toml",
        "manager-3.toml",
    ] {
        let config = ServerConfig::load(&directory.join(name))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            config.data_dir.starts_with(&directory),
            "{name}: data_dir is resolved next to the config"
        );
        loaded += 1;
    }
    assert_eq!(loaded, 4);
}
