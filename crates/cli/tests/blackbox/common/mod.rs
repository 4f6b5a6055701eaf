//! Black-box harness: starts real `corral server` processes on loopback ports with their
//! own data directories, talks to them over real gRPC with TLS (the shipped path; the
//! test PKI is `tls`), kills them with SIGKILL and restarts them.

#![allow(dead_code)]

pub mod agents;
pub mod tls;

use corral_client::pb;
use corral_client::pb::admin_client::AdminClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

pub const ADMIN_TOKEN: &str = "blackbox-admin-token-0123456789";
pub const AGENT_TOKEN: &str = "blackbox-agent-token-0123456789";
pub const SECRET: &str = "blackbox-cluster-secret";

/// The machine as the tests of this binary share it: tests of agents take it alone
/// (each starts six processes and asserts on their timing, and the machine may have 2
/// cores), the others share it with each other, as when they were separate binaries.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// For a test that needs the machine to itself.
pub async fn machine_alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// For a test that may run beside others of its kind.
pub async fn machine_shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// `machine_shared` for a test outside an async runtime.
pub fn machine_shared_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.blocking_read()
}

/// The `corral` binary aimed at `address` (trusting the test CA) as `token`, for a
/// test to add its arguments and environment to.
pub fn corral_command(address: &str, token: &str) -> std::process::Command {
    let mut command = std::process::Command::new(corral_binary());
    command
        .env("CORRAL_ADDR", address)
        .env("CORRAL_CA_FILE", &tls::pki().ca_file)
        .env("CORRAL_TOKEN", token)
        .env_remove("CORRAL_TOKEN_FILE");
    command
}

pub fn corral_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corral"))
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local address")
        .port()
}

pub struct Replica {
    pub id: u64,
    pub address: String,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    /// Extra environment of its process (e.g. `CORRAL_CLOCK_OFFSET_FILE`).
    pub env: Vec<(String, String)>,
    /// A command its process runs under (e.g. `ip netns exec NAME`); empty for none.
    pub wrapper: Vec<String>,
}

pub struct Cluster {
    pub directory: tempfile::TempDir,
    pub replicas: Vec<Replica>,
    pub engine: String,
    /// The `[loops]` table of every replica's config.
    pub loops: String,
    /// The `[tls]` table of every replica's config.
    pub tls_section: String,
    /// The `[raft]` table of every replica's config.
    pub raft_section: String,
}

/// Raft timing of the harness: slower than the shipped defaults, so a loaded test
/// machine does not cause elections.
pub const HARNESS_RAFT: &str = "heartbeat_interval_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
";

/// Loops for tests without agents: no node is ever declared lost.
pub const QUIET_LOOPS: &str = "scheduler_interval_ms = 100
metering_interval_ms = 3600000
node_grace_ms = 60000
";

fn config_text(
    cluster: &Cluster,
    id: u64,
    address: &str,
    data_dir: &Path,
    members: &[(u64, String)],
) -> String {
    let Cluster {
        engine,
        loops,
        tls_section,
        raft_section,
        ..
    } = cluster;
    let members: Vec<String> = members
        .iter()
        .map(|(member, address)| format!("{{ id = {member}, address = \"{address}\" }}"))
        .collect();
    format!(
        r#"id = {id}
listen = "{address}"
data_dir = "{}"

[cluster]
secret = "{SECRET}"
members = [{}]

[storage]
engine = "{engine}"
snapshot_every_entries = 500
logs_kept_after_snapshot = 0

[auth]
admin_token = "{ADMIN_TOKEN}"
bootstrap_token = "{AGENT_TOKEN}"

[raft]
{raft_section}
[loops]
{loops}
{}"#,
        data_dir.display(),
        members.join(", "),
        tls_section
    )
}

impl Cluster {
    /// Start `count` replicas that form one cluster.
    pub fn start(count: u64, engine: &str) -> Cluster {
        Cluster::start_with_loops(count, engine, QUIET_LOOPS)
    }

    /// As `start`, with this `[loops]` table (e.g. short node grace periods).
    pub fn start_with_loops(count: u64, engine: &str, loops: &str) -> Cluster {
        let hosts = vec!["127.0.0.1".to_string(); count as usize];
        let mut cluster = Cluster::prepare(
            engine,
            loops,
            HARNESS_RAFT,
            &hosts,
            &tls::pki().config_section(),
        );
        for index in 0..cluster.replicas.len() {
            cluster.spawn(index);
        }
        cluster
    }

    /// Write the configs of one replica per host in `hosts` (ids from 1), each on a free
    /// port, with these `[raft]` and `[tls]` tables; start none (set `env` or `wrapper`
    /// first).
    pub fn prepare(
        engine: &str,
        loops: &str,
        raft_section: &str,
        hosts: &[String],
        tls_section: &str,
    ) -> Cluster {
        let directory = tempfile::tempdir().expect("temporary directory");
        let members: Vec<(u64, String)> = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| (index as u64 + 1, format!("{host}:{}", free_port())))
            .collect();
        let mut cluster = Cluster {
            directory,
            replicas: Vec::new(),
            engine: engine.to_string(),
            loops: loops.to_string(),
            tls_section: tls_section.to_string(),
            raft_section: raft_section.to_string(),
        };
        for (id, address) in &members {
            let replica = cluster.prepare_replica(*id, address, &members);
            cluster.replicas.push(replica);
        }
        cluster
    }

    /// Write the config of a replica (an extra one joins with `members` = the initial cluster).
    pub fn prepare_replica(&self, id: u64, address: &str, members: &[(u64, String)]) -> Replica {
        let data_dir = self.directory.path().join(format!("manager-{id}"));
        let config_path = self.directory.path().join(format!("manager-{id}.toml"));
        std::fs::write(
            &config_path,
            config_text(self, id, address, &data_dir, members),
        )
        .expect("write config");
        Replica {
            id,
            address: address.to_string(),
            config_path,
            data_dir,
            child: None,
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    pub fn spawn(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.directory
                    .path()
                    .join(format!("manager-{}.log", replica.id)),
            )
            .expect("log file");
        let mut command = match replica.wrapper.split_first() {
            None => Command::new(corral_binary()),
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(corral_binary());
                command
            }
        };
        let child = command
            .arg("server")
            .arg("--config")
            .arg(&replica.config_path)
            .env("RUST_LOG", "warn")
            .envs(replica.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start corral server");
        replica.child = Some(child);
    }

    /// SIGKILL a replica.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.replicas[index].child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.directory.path().join(format!("manager-{id}.log")))
            .unwrap_or_default()
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.replicas
            .iter()
            .position(|replica| replica.id == id)
            .expect("replica id")
    }

    pub async fn client(&self, index: usize, token: &str) -> Admin {
        Admin::connect(&self.replicas[index].address, token).await
    }

    /// Wait until some running replica reports a leader that is running, and return its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            for replica in self
                .replicas
                .iter()
                .filter(|replica| replica.child.is_some())
            {
                let admin = Admin::connect(&replica.address, ADMIN_TOKEN).await;
                if let Ok(status) = admin.status().await {
                    let leader_running = self.replicas.iter().any(|candidate| {
                        candidate.id == status.leader && candidate.child.is_some()
                    });
                    if status.leader != 0 && leader_running {
                        return status.leader;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {timeout:?}\n{}",
                self.log_of(1)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Under load, replicas are rarely at the same index at one instant: wait until every
    /// running replica has applied at least what was committed when the call began.
    pub async fn wait_for_catch_up(&self, timeout: Duration) -> u64 {
        let mut target = 0;
        for replica in self
            .replicas
            .iter()
            .filter(|replica| replica.child.is_some())
        {
            let admin = Admin::connect(&replica.address, ADMIN_TOKEN).await;
            if let Ok(status) = admin.status().await {
                target = target.max(status.committed);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut behind = Vec::new();
            for replica in self
                .replicas
                .iter()
                .filter(|replica| replica.child.is_some())
            {
                let admin = Admin::connect(&replica.address, ADMIN_TOKEN).await;
                match admin.status().await {
                    Ok(status) if status.last_applied >= target => {}
                    Ok(status) => behind.push((replica.id, status.last_applied)),
                    Err(error) => behind.push((replica.id, u64::from(error.code() as u8))),
                }
            }
            if behind.is_empty() {
                return target;
            }
            assert!(
                Instant::now() < deadline,
                "replicas {behind:?} did not apply index {target} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until every running replica has applied the same index with the same digest.
    pub async fn wait_for_agreement(&self, timeout: Duration) -> (u64, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for replica in self
                .replicas
                .iter()
                .filter(|replica| replica.child.is_some())
            {
                let admin = Admin::connect(&replica.address, ADMIN_TOKEN).await;
                if let Ok(status) = admin.status().await {
                    seen.push((status.last_applied, status.digest));
                }
            }
            let running = self
                .replicas
                .iter()
                .filter(|replica| replica.child.is_some())
                .count();
            if seen.len() == running
                && seen.windows(2).all(|pair| pair[0] == pair[1])
                && !seen.is_empty()
            {
                return seen.remove(0);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .replicas
                    .iter()
                    .map(|replica| {
                        let log = self.log_of(replica.id);
                        let panics: Vec<&str> = log
                            .lines()
                            .filter(|line| {
                                line.contains("panicked at") || line.contains("assertion")
                            })
                            .take(3)
                            .collect();
                        let tail: Vec<&str> = log.lines().rev().take(5).chain(panics).collect();
                        format!(
                            "--- replica {} ---\n{}",
                            replica.id,
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!("replicas did not converge: {seen:?}\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.replicas.len() {
            self.kill(index);
        }
    }
}

/// A raw admin client with a bearer token.
#[derive(Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    token: String,
    address: String,
}

impl Admin {
    /// Over TLS, checking the replica against the harness CA (no client certificate).
    pub async fn connect(address: &str, token: &str) -> Admin {
        let channel = tls::endpoint(address, tls::client_tls())
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Admin {
            client: AdminClient::new(channel),
            token: token.to_string(),
            address: address.to_string(),
        }
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if !self.token.is_empty() {
            let value: MetadataValue<_> = format!("Bearer {}", self.token)
                .parse()
                .expect("token metadata");
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn raw(&self) -> AdminClient<Channel> {
        self.client.clone()
    }

    pub async fn status(&self) -> Result<pb::ClusterStatus, tonic::Status> {
        self.raw()
            .cluster_status(self.request(pb::ClusterStatusRequest { with_digest: true }))
            .await
            .map(|response| response.into_inner())
    }
}

pub fn resources(cpu_millicores: u64, memory_mib: u64, accelerators: u32) -> pb::Resources {
    pb::Resources {
        cpu_millicores,
        memory_mib,
        accelerators,
        disk_gib: 10,
        bandwidth_mbps: 100,
    }
}
