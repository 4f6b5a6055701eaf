//! A 3-member etcd cluster on loopback, started from the `etcd` binary (Debian package
//! `etcd-server`), with etcd's defaults: every raft append and the backend commit are
//! fsynced, heartbeat 100 ms, election timeout 1 s.

use crate::corral_cluster::free_port;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

pub type KvClient = pb::kv_client::KvClient<Channel>;

pub struct Member {
    pub client_address: String,
    child: Option<Child>,
    log_path: PathBuf,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
}

pub fn channel(address: &str, timeout: Duration) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect_lazy()
}

impl EtcdCluster {
    pub fn start(binary: &Path, directory: &Path, count: usize) -> EtcdCluster {
        std::fs::create_dir_all(directory).expect("etcd directory");
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(index, (_, peer))| format!("m{}=http://127.0.0.1:{peer}", index + 1))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("bench-{}-{}", std::process::id(), ports[0].0);
        let members = ports
            .iter()
            .enumerate()
            .map(|(index, (client, peer))| {
                let name = format!("m{}", index + 1);
                let log_path = directory.join(format!("etcd-{name}.log"));
                let log = File::create(&log_path).expect("etcd log");
                let child = Command::new(binary)
                    .args(["--name", &name])
                    .arg("--data-dir")
                    .arg(directory.join(format!("etcd-{name}")))
                    .args([
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ])
                    .args([
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                    .args([
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                    ])
                    .args(["--initial-cluster", &initial_cluster])
                    .args(["--initial-cluster-token", &token])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--logger", "zap", "--log-level", "warn"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log handle"))
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
                Member {
                    client_address: format!("127.0.0.1:{client}"),
                    child: Some(child),
                    log_path,
                }
            })
            .collect();
        EtcdCluster { members }
    }

    /// Wait until every member answers Status and names the same leader; returns the
    /// index of the leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut member_ids = Vec::new();
            for member in &self.members {
                let mut client = pb::maintenance_client::MaintenanceClient::new(channel(
                    &member.client_address,
                    Duration::from_secs(2),
                ));
                if let Ok(status) = client.status(pb::StatusRequest {}).await {
                    let status = status.into_inner();
                    leaders.push(status.leader);
                    member_ids.push(status.header.map_or(0, |header| header.member_id));
                }
            }
            if leaders.len() == self.members.len()
                && leaders[0] != 0
                && leaders.iter().all(|leader| *leader == leaders[0])
            {
                if let Some(index) = member_ids.iter().position(|id| *id == leaders[0]) {
                    return Ok(index);
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.members[0].log_path).unwrap_or_default();
                return Err(format!(
                    "etcd elected no leader within {timeout:?}; member 1 log:\n{log}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
