//! Submit throughput and latency: for one concurrency level, a fresh 3-replica corral
//! cluster (seeded through the admin API) or a fresh 3-member etcd cluster, and a
//! closed-loop load against its leader.

use crate::corral_cluster::{admin, seed, CorralCluster, ADMIN_TOKEN};
use crate::etcd_cluster::{self, EtcdCluster};
use crate::load::{self, LoadResult, Operation};
use crate::spec;
use corral_client::pb;
use futures::FutureExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct LevelOptions {
    pub clients: usize,
    /// 1 for single submits / puts; more for SubmitJobs / a Txn of that many puts.
    pub batch: usize,
    /// Clients share at most this many gRPC connections (HTTP/2), round-robin.
    pub max_connections: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Diagnostic, corral only: submit to a pool that does not exist. Each submit is
    /// still proposed, replicated, fsynced, committed and applied (the state machine
    /// refuses it with NotFound, which counts as a committed write here), but nothing is
    /// queued, so the leader's scheduler never wakes. Isolates the raft write path.
    pub rejected_submits: bool,
}

#[derive(Clone, Debug, Default)]
pub struct CorralLevelInfo {
    /// Last applied index and jobs queued in the public pool after the run.
    pub last_applied: u64,
    pub queued_jobs: u32,
}

/// A pool id no benchmark cluster has (the diagnostic run's target).
const NO_SUCH_POOL: u64 = 1 << 40;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

pub async fn corral_level(
    binary: &Path,
    directory: &Path,
    options: LevelOptions,
) -> Result<(LoadResult, CorralLevelInfo), String> {
    let cluster = CorralCluster::start(binary, directory, 3);
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let world = seed(&cluster.admin(leader, ADMIN_TOKEN))
        .await
        .map_err(|status| format!("seed: {}", status_text(&status)))?;
    let leader_address = cluster.replicas[leader].address.clone();
    let connections = options.clients.clamp(1, options.max_connections.max(1));
    let stubs: Arc<Vec<_>> = Arc::new(
        (0..connections)
            .map(|_| admin(&leader_address, &world.tenant_token, CALL_TIMEOUT))
            .collect(),
    );
    let pool = world.public_pool;
    let batch = options.batch;
    let rejected = options.rejected_submits;
    let operation: Operation = Arc::new(move |client, sequence| {
        let mut stub = stubs[client % stubs.len()].clone();
        if batch <= 1 {
            let target_pool = if rejected { NO_SUCH_POOL } else { pool };
            let spec = spec::job_spec(target_pool, client, sequence);
            async move {
                match stub
                    .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
                    .await
                {
                    Ok(_) => Ok(1),
                    Err(status) if rejected && status.code() == tonic::Code::NotFound => Ok(1),
                    Err(status) => Err(status_text(&status)),
                }
            }
            .boxed()
        } else {
            let first = sequence * batch as u64;
            let specs = (first..first + batch as u64)
                .map(|number| spec::job_spec(pool, client, number))
                .collect();
            async move {
                let results = stub
                    .submit_jobs(pb::SubmitJobsRequest { specs })
                    .await
                    .map_err(|status| status_text(&status))?
                    .into_inner()
                    .results;
                // A batch with a failed item counts as failed (none of its items count).
                match results.iter().find(|result| !result.error.is_empty()) {
                    Some(failed) => Err(format!("batch item: {}", failed.error)),
                    None => Ok(results.len() as u64),
                }
            }
            .boxed()
        }
    });
    let result = load::run(options.clients, options.warmup, options.window, operation).await;
    let mut info = CorralLevelInfo::default();
    let admin_stub = cluster.admin(leader, ADMIN_TOKEN);
    if let Ok(pool) = admin_stub
        .clone()
        .get_pool(pb::GetPoolRequest {
            pool,
            read: Some(pb::ReadOptions { stale: true }),
        })
        .await
    {
        info.queued_jobs = pool.into_inner().queued_jobs;
    }
    if let Ok(status) = admin_stub
        .clone()
        .cluster_status(pb::ClusterStatusRequest::default())
        .await
    {
        info.last_applied = status.into_inner().last_applied;
    }
    Ok((result, info))
}

pub async fn etcd_level(
    binary: &Path,
    directory: &Path,
    options: LevelOptions,
) -> Result<LoadResult, String> {
    let cluster = EtcdCluster::start(binary, directory, 3);
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let leader_address = cluster.members[leader].client_address.clone();
    let connections = options.clients.clamp(1, options.max_connections.max(1));
    let clients: Arc<Vec<_>> = Arc::new(
        (0..connections)
            .map(|_| {
                etcd_cluster::KvClient::new(etcd_cluster::channel(&leader_address, CALL_TIMEOUT))
            })
            .collect(),
    );
    let value = Arc::new(spec::etcd_value());
    let batch = options.batch;
    let operation: Operation = Arc::new(move |client, sequence| {
        let mut kv = clients[client % clients.len()].clone();
        if batch <= 1 {
            let put = etcd_cluster::pb::PutRequest {
                key: spec::etcd_key(client, sequence),
                value: value.as_ref().clone(),
                ..Default::default()
            };
            async move {
                kv.put(put)
                    .await
                    .map(|_| 1)
                    .map_err(|status| status_text(&status))
            }
            .boxed()
        } else {
            let first = sequence * batch as u64;
            let success = (first..first + batch as u64)
                .map(|number| etcd_cluster::pb::RequestOp {
                    request: Some(etcd_cluster::pb::request_op::Request::RequestPut(
                        etcd_cluster::pb::PutRequest {
                            key: spec::etcd_key(client, number),
                            value: value.as_ref().clone(),
                            ..Default::default()
                        },
                    )),
                })
                .collect();
            async move {
                let response = kv
                    .txn(etcd_cluster::pb::TxnRequest {
                        success,
                        failure: Vec::new(),
                    })
                    .await
                    .map_err(|status| status_text(&status))?;
                if response.into_inner().succeeded {
                    Ok(batch as u64)
                } else {
                    Err("txn did not succeed".to_string())
                }
            }
            .boxed()
        }
    });
    let result = load::run(options.clients, options.warmup, options.window, operation).await;
    drop(cluster);
    Ok(result)
}
