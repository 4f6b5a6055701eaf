//! Restart time of a replica holding a million jobs.
//!
//! Submitting a million jobs through a replicated cluster on this machine would take
//! longer than the whole benchmark, so the bulk of the state is made offline, through
//! the store's own code: `corral_store::open_storage` on the replica's data directory,
//! every command applied with `RaftStateMachine::apply` exactly as a follower applies
//! committed entries (the commands come from the same proto-to-command conversion the
//! server uses), then the store's snapshot builder writes the snapshot file and the log
//! store records the vote. A real `corral server` then starts on that directory as a
//! single-replica cluster, takes `tail_jobs` more submits through the admin API (they
//! stay in the raft log as the tail a restart must replay; fewer than the 10,000 entries
//! after which a snapshot is taken), and is SIGKILLed. Each restart is timed from spawn.

use crate::corral_cluster::{admin, free_port, CorralCluster, ADMIN_TOKEN, TENANT_TOKEN_NAME};
use crate::spec;
use corral_client::pb;
use corral_model::{Command, Principal, TenantRole, TokenScope};
use corral_server::convert;
use corral_server::hash_token;
use corral_store::{
    open_storage, Engine, LogEntry, LogId, Membership, Proposal, StateMachineStore, StorageOptions,
    TypeConfig, Vote,
};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::BasicNode;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TENANT_SECRET: &str = "cluster-bench-restart-tenant-secret";
const APPLY_CHUNK: u64 = 10_000;
/// Jobs per SubmitJobs call of the tail.
const TAIL_BATCH: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct RestartResult {
    pub total_jobs: u64,
    pub offline_jobs: u64,
    pub tail_jobs: u64,
    pub generate_apply_s: f64,
    pub snapshot_build_s: f64,
    pub snapshot_bytes: u64,
    pub tail_submit_s: f64,
    /// The last applied index before the kill; a restart is done at or beyond it.
    pub target_index: u64,
    pub snapshot_index: u64,
    /// From spawn until ClusterStatus answers with last_applied >= target (one sample per restart).
    pub status_s: Vec<f64>,
    /// Duration of one further ClusterStatus call asking for the full-state digest.
    pub status_call_s: Vec<f64>,
    /// From spawn until the replica accepts TCP connections (it binds its port after
    /// loading the snapshot, replaying the committed log tail and starting raft); two
    /// samples per restart round (before the ClusterStatus probe, before the read probe).
    pub listen_s: Vec<f64>,
    /// From spawn until a stale GetJob of the last tail job answers (state recovered, serving reads).
    pub read_s: Vec<f64>,
    /// From spawn until a write (SetTenantQuota) is committed (leader elected, accepting writes).
    pub write_s: Vec<f64>,
    /// Peak resident memory of the restarted process (VmHWM), MiB.
    pub peak_rss_mib: Vec<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

fn status_error(what: &str) -> impl Fn(tonic::Status) -> String + '_ {
    move |status| format!("{what}: {:?}: {}", status.code(), status.message())
}

async fn apply(
    state_machine: &mut StateMachineStore,
    entries: Vec<LogEntry>,
) -> Result<(), String> {
    let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
    state_machine
        .apply(stream)
        .await
        .map_err(|error| format!("apply: {error}"))
}

fn normal(index: u64, principal: Principal, at_ms: u64, command: Command) -> LogEntry {
    LogEntry::new_normal(
        log_id(index),
        Proposal::single(at_ms, principal, command, None),
    )
}

/// Build the offline part of the state in `data_dir`: membership {1 at `address`}, the
/// platform admin token, flavor, nodes, tenant and its token, the public pool, then
/// `jobs` submits; then the snapshot and the vote.
async fn generate(data_dir: &Path, address: &str, jobs: u64) -> Result<Generated, String> {
    let storage = open_storage(&StorageOptions {
        engine: Engine::Sled,
        data_dir: data_dir.to_path_buf(),
    })
    .map_err(|error| format!("open storage: {error}"))?;
    let (mut log, mut state_machine) = (storage.log, storage.state_machine);
    let started = Instant::now();
    let mut at_ms = now_ms();
    let membership = Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([(
            1,
            BasicNode {
                addr: address.to_string(),
            },
        )]),
    )
    .map_err(|error| format!("membership: {error}"))?;
    let admin_principal = Principal::PlatformAdmin;
    let mut setup = vec![
        Command::TokenCreate {
            name: "admin".into(),
            hash: hash_token(ADMIN_TOKEN),
            scope: TokenScope::PlatformAdmin,
            ttl_ms: None,
        },
        convert::command_from_define_flavor(&spec::flavor()).map_err(status_error("flavor"))?,
    ];
    for node in 0..spec::NODES {
        setup.push(
            convert::command_from_register_node(&spec::node(node)).map_err(status_error("node"))?,
        );
    }
    setup.push(
        convert::command_from_create_tenant(&spec::tenant()).map_err(status_error("tenant"))?,
    );
    setup.push(
        convert::command_from_create_pool(&spec::public_pool(), &admin_principal)
            .map_err(status_error("pool"))?,
    );
    let mut entries = vec![LogEntry::new_membership(log_id(1), membership)];
    let mut index = 1;
    for command in setup {
        index += 1;
        entries.push(normal(index, admin_principal.clone(), at_ms, command));
    }
    apply(&mut state_machine, entries).await?;
    let (tenant, pool) = state_machine.read(|state| {
        (
            state.tenant_by_name("bench").map(|tenant| tenant.id),
            state.public_pool(),
        )
    });
    let (Some(tenant), Some(pool)) = (tenant, pool) else {
        return Err("offline setup did not create the tenant and the public pool".into());
    };
    index += 1;
    let token = Command::TokenCreate {
        name: TENANT_TOKEN_NAME.into(),
        hash: hash_token(TENANT_SECRET),
        scope: TokenScope::Tenant {
            tenant,
            role: TenantRole::Operator,
        },
        ttl_ms: None,
    };
    apply(
        &mut state_machine,
        vec![normal(index, admin_principal, at_ms, token)],
    )
    .await?;

    let principal = Principal::TenantUser(tenant);
    let mut submitted = 0u64;
    while submitted < jobs {
        let chunk = APPLY_CHUNK.min(jobs - submitted);
        let mut entries = Vec::with_capacity(chunk as usize);
        for sequence in submitted..submitted + chunk {
            index += 1;
            let job_spec = convert::job_spec_from_proto(&spec::job_spec(pool.0, 0, sequence))
                .map_err(status_error("job spec"))?;
            entries.push(normal(
                index,
                principal.clone(),
                at_ms,
                Command::JobSubmit(job_spec),
            ));
        }
        apply(&mut state_machine, entries).await?;
        submitted += chunk;
        at_ms += 10;
    }
    let active = state_machine.read(|state| state.active_job_count());
    if active as u64 != jobs {
        return Err(format!(
            "offline state holds {active} active jobs, expected {jobs} (a submit was refused)"
        ));
    }
    let apply_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut builder = state_machine.get_snapshot_builder().await;
    let snapshot = builder
        .build_snapshot()
        .await
        .map_err(|error| format!("build snapshot: {error}"))?;
    let snapshot_s = started.elapsed().as_secs_f64();
    let snapshot_index = snapshot.meta.last_log_id.map_or(0, |log_id| log_id.index);
    log.save_vote(&Vote::new_committed(1, 1))
        .await
        .map_err(|error| format!("save vote: {error}"))?;
    drop(log);
    drop(state_machine);
    let snapshot_bytes = std::fs::read_dir(data_dir.join("snapshots"))
        .map_err(|error| format!("snapshot directory: {error}"))?
        .filter_map(Result::ok)
        .filter_map(|item| item.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    Ok(Generated {
        apply_s,
        snapshot_s,
        snapshot_bytes,
        snapshot_index,
        tenant: tenant.0,
        pool: pool.0,
    })
}

struct Generated {
    apply_s: f64,
    snapshot_s: f64,
    snapshot_bytes: u64,
    snapshot_index: u64,
    tenant: u64,
    pool: u64,
}

fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(
    binary: &Path,
    directory: &Path,
    total_jobs: u64,
    tail_jobs: u64,
    restarts: usize,
) -> Result<RestartResult, String> {
    let tail_jobs = tail_jobs.min(total_jobs);
    let offline_jobs = total_jobs - tail_jobs;
    let address = format!("127.0.0.1:{}", free_port());
    let members = vec![(1u64, address.clone())];
    let data_dir = directory.join("manager-1");
    println!(
        "  generating {offline_jobs} jobs offline in {} ...",
        data_dir.display()
    );
    let generated = generate(&data_dir, &address, offline_jobs).await?;
    let (generate_apply_s, snapshot_build_s, snapshot_bytes, snapshot_index) = (
        generated.apply_s,
        generated.snapshot_s,
        generated.snapshot_bytes,
        generated.snapshot_index,
    );
    println!(
        "  applied in {generate_apply_s:.1} s, snapshot of {:.0} MiB at index {snapshot_index} built in {snapshot_build_s:.1} s",
        snapshot_bytes as f64 / (1 << 20) as f64
    );
    let mut result = RestartResult {
        total_jobs,
        offline_jobs,
        tail_jobs,
        generate_apply_s,
        snapshot_build_s,
        snapshot_bytes,
        snapshot_index,
        ..RestartResult::default()
    };

    // First start: the tail of submits through the API.
    let mut cluster = CorralCluster::start_with_members(binary, directory, &members);
    cluster.wait_for_leader(RESTART_TIMEOUT).await?;
    let tenant = admin(&address, TENANT_SECRET, Duration::from_secs(120));
    let pool = generated.pool;
    let started = Instant::now();
    let mut last_job = 0;
    let mut sequence = offline_jobs;
    while sequence < total_jobs {
        let count = (total_jobs - sequence).min(TAIL_BATCH as u64);
        let specs = (sequence..sequence + count)
            .map(|number| spec::job_spec(pool, 1, number))
            .collect();
        let results = tenant
            .clone()
            .submit_jobs(pb::SubmitJobsRequest { specs })
            .await
            .map_err(status_error("tail submit"))?
            .into_inner()
            .results;
        if let Some(failed) = results.iter().find(|result| !result.error.is_empty()) {
            return Err(format!("tail submit refused: {}", failed.error));
        }
        last_job = results
            .iter()
            .map(|result| result.job)
            .max()
            .unwrap_or(last_job);
        sequence += count;
    }
    result.tail_submit_s = started.elapsed().as_secs_f64();
    let status = cluster
        .admin(0, ADMIN_TOKEN)
        .cluster_status(pb::ClusterStatusRequest::default())
        .await
        .map_err(status_error("status"))?
        .into_inner();
    result.target_index = status.last_applied;
    if status.snapshot_index != snapshot_index {
        println!(
            "  note: the replica took a new snapshot at {} during the tail",
            status.snapshot_index
        );
    }
    println!(
        "  {tail_jobs} tail jobs submitted in {:.1} s; last applied index {}; killing the replica",
        result.tail_submit_s, result.target_index
    );
    cluster.kill(0);

    for restart in 0..restarts {
        // A: ClusterStatus, as the issue defines restart time.
        cluster.spawn(0);
        let spawned = Instant::now();
        wait_for_port(&address, spawned).await?;
        result.listen_s.push(spawned.elapsed().as_secs_f64());
        let status_client = admin(&address, ADMIN_TOKEN, Duration::from_secs(120));
        loop {
            if let Ok(status) = status_client
                .clone()
                .cluster_status(pb::ClusterStatusRequest::default())
                .await
            {
                if status.into_inner().last_applied >= result.target_index {
                    break;
                }
            }
            if spawned.elapsed() > RESTART_TIMEOUT {
                return Err(format!(
                    "restart {restart}: no ClusterStatus at index {} within {RESTART_TIMEOUT:?}",
                    result.target_index
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result.status_s.push(spawned.elapsed().as_secs_f64());
        let call = Instant::now();
        status_client
            .clone()
            .cluster_status(pb::ClusterStatusRequest { with_digest: true })
            .await
            .map_err(status_error("status"))?;
        result.status_call_s.push(call.elapsed().as_secs_f64());
        cluster.kill(0);

        // B: serving reads, then accepting writes (no ClusterStatus involved).
        cluster.spawn(0);
        let spawned = Instant::now();
        wait_for_port(&address, spawned).await?;
        result.listen_s.push(spawned.elapsed().as_secs_f64());
        let reader = admin(&address, TENANT_SECRET, Duration::from_secs(120));
        loop {
            let read = reader
                .clone()
                .get_job(pb::GetJobRequest {
                    job: last_job,
                    read: Some(pb::ReadOptions { stale: true }),
                    reveal_secrets: false,
                })
                .await;
            if read.is_ok() {
                break;
            }
            if spawned.elapsed() > RESTART_TIMEOUT {
                return Err(format!(
                    "restart {restart}: job {last_job} not readable within {RESTART_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result.read_s.push(spawned.elapsed().as_secs_f64());
        let writer = admin(&address, ADMIN_TOKEN, Duration::from_secs(120));
        loop {
            let write = writer
                .clone()
                .set_tenant_quota(pb::SetTenantQuotaRequest {
                    tenant: generated.tenant,
                    quota: spec::tenant().quota,
                })
                .await;
            if write.is_ok() {
                break;
            }
            if spawned.elapsed() > RESTART_TIMEOUT {
                return Err(format!(
                    "restart {restart}: no write accepted within {RESTART_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result.write_s.push(spawned.elapsed().as_secs_f64());
        result
            .peak_rss_mib
            .push(cluster.pid(0).map_or(0, peak_rss_mib));
        cluster.kill(0);
        println!(
            "  restart {}: ClusterStatus at index after {:.2} s (one more ClusterStatus call: {:.2} s); port open after {:.2} s, reads after {:.2} s, writes after {:.2} s; peak RSS {} MiB",
            restart + 1,
            result.status_s[restart],
            result.status_call_s[restart],
            result.listen_s[2 * restart + 1],
            result.read_s[restart],
            result.write_s[restart],
            result.peak_rss_mib[restart]
        );
    }
    Ok(result)
}

async fn wait_for_port(address: &str, spawned: Instant) -> Result<(), String> {
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if spawned.elapsed() > RESTART_TIMEOUT {
            return Err(format!("{address} did not open within {RESTART_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
