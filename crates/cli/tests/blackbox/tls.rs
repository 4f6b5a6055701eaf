//! TLS at every boundary, from outside: a plaintext client and a client trusting
//! another CA are refused by a TLS manager; peers' and agents' services refuse callers
//! without a client certificate (while a tenant's or an admin's call with a token and
//! no certificate works); an `https://` address without a CA is a clear error, never a
//! downgrade; a replica restarted with a new certificate from the same CA rejoins.

use crate::common;
use common::tls::{channel, client_tls, endpoint, new_ca, peer_channel, pki};
use common::{resources, Admin, Cluster, ADMIN_TOKEN, AGENT_TOKEN, SECRET};
use corral_client::pb;
use std::process::Command;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::Code;

fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

fn corral(args: &[&str], ca_file: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(common::corral_binary());
    command
        .args(args)
        .env("CORRAL_TOKEN", ADMIN_TOKEN)
        .env_remove("CORRAL_ADDR")
        .env_remove("CORRAL_CA_FILE")
        .env_remove("CORRAL_CERT_FILE")
        .env_remove("CORRAL_KEY_FILE");
    if let Some(ca_file) = ca_file {
        command.env("CORRAL_CA_FILE", ca_file);
    }
    command.output().expect("run corral")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_clients_and_clients_trusting_another_ca_are_refused() {
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(1, "memory");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();

    // The harness CA: the CLI and a raw client are served.
    let served = corral(
        &["--addr", &address, "cluster", "status"],
        Some(&pki().ca_file),
    );
    assert!(served.status.success(), "{served:?}");

    // Plaintext, asked for explicitly: the TLS port does not speak it.
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let refused = pb::admin_client::AdminClient::new(plaintext)
        .cluster_status(with_bearer(
            pb::ClusterStatusRequest { with_digest: false },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("a plaintext call to a TLS port");
    assert_ne!(refused.code(), Code::Ok);
    let cli = corral(
        &[
            "--addr",
            &format!("http://{address}"),
            "--timeout-ms",
            "3000",
            "cluster",
            "status",
        ],
        None,
    );
    assert!(!cli.status.success(), "{cli:?}");

    // A client trusting another CA does not accept the replica's certificate.
    let other = tempfile::tempdir().unwrap();
    let other_ca = new_ca(other.path());
    let cli = corral(
        &[
            "--addr",
            &address,
            "--timeout-ms",
            "3000",
            "cluster",
            "status",
        ],
        Some(&other_ca),
    );
    assert_eq!(cli.status.code(), Some(6), "unreachable: {cli:?}");
    assert!(stderr(&cli).contains("certificate"), "{cli:?}");
    let trusting_other = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&other_ca).unwrap()));
    let refused =
        pb::admin_client::AdminClient::new(endpoint(&address, trusting_other).connect_lazy())
            .cluster_status(with_bearer(
                pb::ClusterStatusRequest { with_digest: false },
                ADMIN_TOKEN,
            ))
            .await
            .expect_err("a server certificate from an untrusted CA");
    assert_ne!(refused.code(), Code::Ok);

    // A client certificate from another CA is refused in the handshake, even for the
    // Admin service that needs none.
    corral_cert_issue(other.path(), "outsider");
    let outsider = client_tls().identity(Identity::from_pem(
        std::fs::read(other.path().join("outsider.pem")).unwrap(),
        std::fs::read(other.path().join("outsider-key.pem")).unwrap(),
    ));
    let refused = pb::admin_client::AdminClient::new(endpoint(&address, outsider).connect_lazy())
        .cluster_status(with_bearer(
            pb::ClusterStatusRequest { with_digest: false },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("a client certificate from another CA");
    assert_ne!(refused.code(), Code::Ok);
}

fn corral_cert_issue(ca_dir: &std::path::Path, name: &str) {
    common::tls::corral_cert(&[
        "issue",
        "--ca-dir",
        &ca_dir.display().to_string(),
        "--name",
        name,
        "--out",
        &ca_dir.display().to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_and_agent_services_need_a_client_certificate_admin_calls_do_not() {
    let _machine = common::machine_shared().await;
    let cluster = Cluster::start(1, "memory");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let address = cluster.replicas[0].address.clone();

    // No client certificate, the right cluster secret: the Raft service refuses before
    // it reads the message.
    let mut raft = pb::raft_client::RaftClient::new(channel(&address));
    let refused = raft
        .vote(with_bearer(
            pb::RaftRequest {
                data: vec![1, 2, 3],
                ..Default::default()
            },
            SECRET,
        ))
        .await
        .expect_err("a peer call without a client certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );
    let refused = raft
        .forward(with_bearer(
            pb::RaftRequest {
                data: vec![1],
                ..Default::default()
            },
            SECRET,
        ))
        .await
        .expect_err("a forward without a client certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // No client certificate, the right agent token: the AgentService refuses too.
    let mut agents = pb::agent_service_client::AgentServiceClient::new(channel(&address));
    let register = pb::RegisterAgentNodeRequest {
        name: "certless".into(),
        flavor: "any".into(),
        ..Default::default()
    };
    let refused = agents
        .register_agent_node(with_bearer(register.clone(), AGENT_TOKEN))
        .await
        .expect_err("an agent call without a client certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );

    // With the node certificate the same calls get past TLS to the services' own
    // checks: a garbled vote is a decoding error, not an authentication failure.
    let mut raft = pb::raft_client::RaftClient::new(peer_channel(&address));
    let answered = raft
        .vote(with_bearer(
            pb::RaftRequest {
                data: vec![1, 2, 3],
                ..Default::default()
            },
            SECRET,
        ))
        .await
        .expect_err("a garbled vote");
    assert_ne!(answered.code(), Code::Unauthenticated, "{answered:?}");
    let mut agents = pb::agent_service_client::AgentServiceClient::new(peer_channel(&address));
    let answered = agents
        .register_agent_node(with_bearer(register, AGENT_TOKEN))
        .await
        .expect_err("an unknown flavor");
    assert_ne!(answered.code(), Code::Unauthenticated, "{answered:?}");
    // The certificate alone is not a credential: the token checks stay.
    let refused = agents
        .register_agent_node(pb::RegisterAgentNodeRequest {
            name: "tokenless".into(),
            flavor: "any".into(),
            ..Default::default()
        })
        .await
        .expect_err("an agent call without the token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A tenant's or an admin's client has no certificate: the token is enough.
    let admin = Admin::connect(&address, ADMIN_TOKEN).await;
    let tenant = admin
        .raw()
        .create_tenant(admin.request(pb::CreateTenantRequest {
            name: "certless-tenant".into(),
            quota: Some(resources(1_000, 1_024, 0)),
            may_use_high_priority: false,
            max_active_jobs: 0,
        }))
        .await
        .expect("an admin call with a token and no client certificate")
        .into_inner();
    assert_eq!(tenant.name, "certless-tenant");
}

#[test]
fn https_without_a_ca_and_bare_addresses_without_one_are_clear_errors() {
    let https = corral(
        &["--addr", "https://127.0.0.1:1", "cluster", "status"],
        None,
    );
    assert_eq!(https.status.code(), Some(2), "{https:?}");
    assert!(
        stderr(&https).contains("no CA is configured") && stderr(&https).contains("--ca-file"),
        "{https:?}"
    );
    let bare = corral(&["--addr", "127.0.0.1:1", "cluster", "status"], None);
    assert_eq!(bare.status.code(), Some(2), "{bare:?}");
    assert!(stderr(&bare).contains("--ca-file"), "{bare:?}");
    let missing = corral(
        &["--addr", "127.0.0.1:1", "cluster", "status"],
        Some(std::path::Path::new("/nonexistent/ca.pem")),
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(
        stderr(&missing).contains("--ca-file") && stderr(&missing).contains("/nonexistent/ca.pem"),
        "{missing:?}"
    );
}

#[test]
fn a_server_config_without_tls_is_refused_with_what_to_add() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("manager.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"data\"\n[cluster]\nsecret = \"{SECRET}\"\n\
             members = [{{ id = 1, address = \"127.0.0.1:1\" }}]\n"
        ),
    )
    .unwrap();
    let output = Command::new(common::corral_binary())
        .args(["server", "--config"])
        .arg(&config)
        .output()
        .expect("run corral server");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("[tls]") && stderr(&output).contains("insecure = true"),
        "{output:?}"
    );
}

/// A replica restarted with a new certificate from the same CA rejoins: peers check
/// it against the CA, not against the certificate they saw before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_restarted_with_a_new_certificate_rejoins() {
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster::start(3, "sled");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let index = cluster.index_of(3);
    cluster.kill(index);
    let (certificate, key) = pki().issue("rotated-3");
    let config_path = cluster.replicas[index].config_path.clone();
    let config = std::fs::read_to_string(&config_path).unwrap();
    let rotated = config
        .replace(
            &format!("cert_file = \"{}\"", pki().cert_file.display()),
            &format!("cert_file = \"{}\"", certificate.display()),
        )
        .replace(
            &format!("key_file = \"{}\"", pki().key_file.display()),
            &format!("key_file = \"{}\"", key.display()),
        );
    assert_ne!(config, rotated, "the certificate was replaced");
    std::fs::write(&config_path, rotated).unwrap();
    // Writes while it is away, which it must receive after the restart.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let admin = cluster.client(cluster.index_of(leader), ADMIN_TOKEN).await;
    for number in 0..3 {
        admin
            .raw()
            .create_tenant(admin.request(pb::CreateTenantRequest {
                name: format!("during-rotation-{number}"),
                quota: Some(resources(1_000, 1_024, 0)),
                may_use_high_priority: false,
                max_active_jobs: 0,
            }))
            .await
            .expect("create tenant");
    }
    cluster.spawn(index);
    let (applied, _) = cluster.wait_for_agreement(Duration::from_secs(60)).await;
    let rotated_admin = cluster.client(index, ADMIN_TOKEN).await;
    let status = rotated_admin.status().await.expect("status");
    assert!(status.last_applied >= applied, "{status:?}");
    let tenants = rotated_admin
        .raw()
        .list_tenants(rotated_admin.request(pb::ListTenantsRequest {
            read: Some(pb::ReadOptions { stale: true }),
        }))
        .await
        .expect("list tenants")
        .into_inner();
    assert_eq!(
        tenants
            .tenants
            .iter()
            .filter(|tenant| tenant.name.starts_with("during-rotation-"))
            .count(),
        3
    );
}

/// The address an agent's log says it serves logs on.
fn log_server_address(agents: &common::agents::Agents) -> Option<String> {
    agents.log_of(0).lines().find_map(|line| {
        let rest = line.split("agent serving logs on ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// An agent's log server takes only callers with a certificate the cluster CA signed
/// (the managers); a node's log key stays required on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_log_server_requires_a_client_certificate() {
    let _machine = common::machine_shared().await;
    let directory = tempfile::tempdir().unwrap();
    // No manager needs to answer: the log server listens from the agent's start.
    let managers = vec![format!("127.0.0.1:{}", common::free_port())];
    let agents = common::agents::Agents::start(
        directory.path(),
        1,
        &common::agents::AgentSettings {
            managers: &managers,
            flavor: "any",
            zone: "zone-a",
            gpu_driver_version: "1",
            heartbeat_interval_ms: 1_000,
            termination_grace_ms: 1_000,
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let address = loop {
        if let Some(address) = log_server_address(&agents) {
            break address;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not serve logs: {}",
            agents.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read = pb::ReadLogsRequest {
        node: 1,
        job: 1,
        rank: 0,
        ..Default::default()
    };
    let mut without = pb::agent_logs_client::AgentLogsClient::new(channel(&address));
    let refused = without
        .read_logs(with_bearer(read, AGENT_TOKEN))
        .await
        .expect_err("no client certificate");
    // Refused by the handshake, before the service could judge the key.
    assert!(!refused.message().contains("log key"), "{refused:?}");
    // With a certificate the call reaches the service, which wants the node's log key
    // (neither the bootstrap token nor nothing at all opens a node's logs).
    let mut with = pb::agent_logs_client::AgentLogsClient::new(peer_channel(&address));
    for answered in [
        with.read_logs(with_bearer(read, AGENT_TOKEN))
            .await
            .map(|_| ()),
        with.read_logs(read).await.map(|_| ()),
    ] {
        let answered = answered.expect_err("no log key");
        assert_eq!(answered.code(), Code::Unauthenticated, "{answered:?}");
        assert!(answered.message().contains("log key"), "{answered:?}");
    }
}
