//! Real `corral server` processes on loopback (the approach of the black-box harness in
//! crates/cli/tests/blackbox/common): generated configs in a directory, one data directory and
//! log file per replica, SIGKILL and restart. The configs set only identity, members,
//! the sled engine and tokens; raft timing, snapshots and loop intervals are the
//! shipped defaults, and fsync is always on.

use crate::spec;
use corral_client::pb;
use corral_client::{AdminStub, AuthInterceptor};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

pub const ADMIN_TOKEN: &str = "cluster-bench-admin-token-0123456789";
pub const AGENT_TOKEN: &str = "cluster-bench-agent-token-0123456789";
pub const TENANT_TOKEN_NAME: &str = "bench-tenant";
const SECRET: &str = "cluster-bench-secret";

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("bind an ephemeral loopback port")
}

/// A client stub for one address with a bearer token. The channel connects lazily.
pub fn admin(address: &str, token: &str, timeout: Duration) -> AdminStub {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect_lazy();
    let interceptor = AuthInterceptor::new(Some(token)).expect("token metadata");
    pb::admin_client::AdminClient::with_interceptor(channel, interceptor)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub struct Replica {
    pub id: u64,
    pub address: String,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
}

pub struct CorralCluster {
    binary: PathBuf,
    pub replicas: Vec<Replica>,
}

/// The storage engine of every replica the benchmark starts: sled (fsync on every append
/// and vote) unless a diagnostic run chose another (`--diagnose-engine`).
pub static ENGINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn engine() -> &'static str {
    ENGINE.get().map_or("sled", String::as_str)
}

/// A `[raft]` section for every replica (`--raft-timing`); none means the defaults.
pub static RAFT_SECTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn config_text(id: u64, address: &str, data_dir: &Path, members: &[(u64, String)]) -> String {
    let extra = RAFT_SECTION.get().map_or("", String::as_str);
    let members: Vec<String> = members
        .iter()
        .map(|(member, address)| format!("{{ id = {member}, address = \"{address}\" }}"))
        .collect();
    format!(
        "id = {id}\nlisten = \"{address}\"\ndata_dir = \"{}\"\n\n[cluster]\nsecret = \"{SECRET}\"\nmembers = [{}]\n\n\
         [storage]\nengine = \"{}\"\n\n[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\nbootstrap_token = \"{AGENT_TOKEN}\"\n{extra}\n\
         # The benchmark measures the cluster, not the per-tenant submission guard.\n\
         [limits]\nsubmit_jobs_per_second = 1000000\nsubmit_jobs_burst = 1000000\n\
         # Plaintext, as the measurements so far (TLS on both sides is a separate run).\n\
         [tls]\ninsecure = true\n",
        data_dir.display(),
        members.join(", "),
        engine()
    )
}

impl CorralCluster {
    /// Write the configs of `count` replicas under `directory` (data directories that
    /// already exist are reused) and start them.
    pub fn start(binary: &Path, directory: &Path, count: u64) -> CorralCluster {
        let members: Vec<(u64, String)> = (1..=count)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        Self::start_with_members(binary, directory, &members)
    }

    pub fn start_with_members(
        binary: &Path,
        directory: &Path,
        members: &[(u64, String)],
    ) -> CorralCluster {
        std::fs::create_dir_all(directory).expect("cluster directory");
        let replicas = members
            .iter()
            .map(|(id, address)| {
                let data_dir = directory.join(format!("manager-{id}"));
                let config_path = directory.join(format!("manager-{id}.toml"));
                std::fs::write(&config_path, config_text(*id, address, &data_dir, members))
                    .expect("write config");
                Replica {
                    id: *id,
                    address: address.clone(),
                    config_path,
                    log_path: directory.join(format!("manager-{id}.log")),
                    child: None,
                }
            })
            .collect();
        let mut cluster = CorralCluster {
            binary: binary.to_path_buf(),
            replicas,
        };
        for index in 0..cluster.replicas.len() {
            cluster.spawn(index);
        }
        cluster
    }

    pub fn spawn(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&replica.log_path)
            .expect("log file");
        let child = Command::new(&self.binary)
            .arg("server")
            .arg("--config")
            .arg(&replica.config_path)
            .env(
                "RUST_LOG",
                std::env::var("CORRAL_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.binary.display()));
        replica.child = Some(child);
    }

    /// SIGKILL a replica and reap it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.replicas[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self, index: usize) -> Option<u32> {
        self.replicas[index].child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &Replica)> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, replica)| replica.child.is_some())
    }

    pub fn admin(&self, index: usize, token: &str) -> AdminStub {
        admin(
            &self.replicas[index].address,
            token,
            Duration::from_secs(10),
        )
    }

    pub fn log_tail(&self, index: usize) -> String {
        let text = std::fs::read_to_string(&self.replicas[index].log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Wait until a running replica is leader by its own account (and the admin token
    /// is installed, so calls authenticate); returns its index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            for (index, replica) in self.running() {
                let status = admin(&replica.address, ADMIN_TOKEN, Duration::from_secs(2))
                    .cluster_status(pb::ClusterStatusRequest::default())
                    .await;
                if let Ok(status) = status {
                    let status = status.into_inner();
                    if status.leader != 0 && status.leader == status.this_replica {
                        return Ok(index);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no leader within {timeout:?}; replica 1 log:\n{}",
                    self.log_tail(0)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until every running replica has applied the same index with the same digest.
    pub async fn wait_for_agreement(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for (_, replica) in self.running() {
                if let Ok(status) = admin(&replica.address, ADMIN_TOKEN, Duration::from_secs(5))
                    .cluster_status(pb::ClusterStatusRequest::default())
                    .await
                {
                    let status = status.into_inner();
                    seen.push((status.last_applied, status.digest));
                }
            }
            if !seen.is_empty()
                && seen.len() == self.running().count()
                && seen.windows(2).all(|pair| pair[0] == pair[1])
            {
                return Ok(seen[0].0);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "replicas did not converge within {timeout:?}: {seen:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CorralCluster {
    fn drop(&mut self) {
        for index in 0..self.replicas.len() {
            self.kill(index);
        }
    }
}

/// What `seed` created.
#[derive(Clone, Debug)]
pub struct World {
    pub tenant_token: String,
    pub public_pool: u64,
}

/// Through the admin API on `admin` (the leader): the flavor, `spec::NODES` nodes, the
/// tenant and its token, and the public pool claiming the nodes.
pub async fn seed(admin: &AdminStub) -> Result<World, tonic::Status> {
    let mut client = admin.clone();
    client.define_flavor(spec::flavor()).await?;
    for index in 0..spec::NODES {
        client.register_node(spec::node(index)).await?;
    }
    let tenant = client.create_tenant(spec::tenant()).await?.into_inner();
    let token = client
        .create_token(pb::CreateTokenRequest {
            name: TENANT_TOKEN_NAME.into(),
            tenant: tenant.id,
            ..Default::default()
        })
        .await?
        .into_inner();
    let pool = client.create_pool(spec::public_pool()).await?.into_inner();
    Ok(World {
        tenant_token: token.secret,
        public_pool: pool.id,
    })
}
