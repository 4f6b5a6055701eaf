//! The storage layer's test kit (tests and benchmark), on the state layer's
//! (`corral_state::testing`): proposals that set up a small cluster through real
//! commands (a GPU flavor, one tenant, nodes, the public pool), job submissions of
//! about 256 encoded bytes, raft log entries around them, and helpers to append to a
//! log store and apply to a state machine.

#![allow(dead_code)]

use corral_model::command::PoolKindRequest;
use corral_model::ids::{JobId, PoolId, TenantId};
use corral_model::{BillingMode, Command, Principal};
use corral_state::testing::{
    gpu_flavor, node_request, pool_create, training, unlimited_quota, GPU, ZONE,
};
use corral_store::{
    LogEntry, LogId, LogStore, Membership, Proposal, StateMachineStore, TypeConfig,
};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;

pub use corral_state::testing::START_MS;

/// The first tenant and pool created get id 1.
pub const TENANT: TenantId = TenantId(1);
pub const PUBLIC_POOL: PoolId = PoolId(1);
pub const TENANT_USER: Principal = Principal::TenantUser(TENANT);

pub fn proposal(principal: Principal, at_ms: u64, command: Command) -> Proposal {
    Proposal::single(at_ms, principal, command, None)
}

/// The commands that set up the cluster: flavor, tenant `TENANT`, `node_count` GPU
/// nodes, and the public pool `PUBLIC_POOL` claiming them all.
pub fn setup_commands(node_count: u32) -> Vec<(Principal, Command)> {
    let mut commands = vec![
        (
            Principal::PlatformAdmin,
            Command::FlavorDefine(gpu_flavor()),
        ),
        (
            Principal::PlatformAdmin,
            Command::TenantCreate {
                name: "tenant-a".into(),
                quota: unlimited_quota(u32::MAX / 4),
                may_use_high_priority: false,
                max_active_jobs: None,
            },
        ),
    ];
    for node in 0..node_count {
        commands.push((
            Principal::PlatformAdmin,
            Command::NodeRegister(node_request(&format!("host-{node}"), GPU, ZONE)),
        ));
    }
    commands.push((
        Principal::PlatformAdmin,
        Command::PoolCreate(pool_create(
            "public",
            PoolKindRequest::Public,
            None,
            &[(GPU, node_count)],
            BillingMode::PayPerUse,
        )),
    ));
    commands
}

/// A one-replica training job in the public pool; `sequence` makes each one distinct.
/// Its log entry encodes to about 256 bytes.
pub fn job_submit(sequence: u64) -> Command {
    let mut spec = training(PUBLIC_POOL, 1, 1);
    spec.name = format!("train-{sequence:08}");
    spec.command = vec![
        "python".into(),
        "-m".into(),
        "torch.distributed.run".into(),
        "train.py".into(),
        format!("--run-name=experiment-{sequence:08}"),
        "--config=/workspace/configs/llama-7b-finetune.yaml".into(),
    ];
    spec.environment = [
        ("DATASET".to_string(), "s3://datasets/corpus-v3".to_string()),
        (
            "CHECKPOINTS".to_string(),
            "s3://checkpoints/run".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    Command::JobSubmit(spec)
}

pub fn job_terminate(job: u64) -> Command {
    Command::JobTerminate { job: JobId(job) }
}

pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 0, index)
}

pub fn normal(term: u64, index: u64, proposal: Proposal) -> LogEntry {
    LogEntry::new_normal(log_id(term, index), proposal)
}

pub fn blank(term: u64, index: u64) -> LogEntry {
    LogEntry::new_blank(log_id(term, index))
}

pub fn membership(term: u64, index: u64, voters: &[u64]) -> LogEntry {
    LogEntry::new_membership(log_id(term, index), voters_membership(voters))
}

pub fn voters_membership(voters: &[u64]) -> Membership {
    Membership::new_with_defaults(vec![voters.iter().copied().collect()], [])
}

/// Entries `first..first + count` of term 1: each a job submission by the tenant.
pub fn submit_entries(first: u64, count: u64) -> Vec<LogEntry> {
    (first..first + count)
        .map(|index| {
            normal(
                1,
                index,
                proposal(TENANT_USER, START_MS + index, job_submit(index)),
            )
        })
        .collect()
}

/// The setup commands as entries of term 1 starting at index `first`.
pub fn setup_entries(first: u64, node_count: u32) -> Vec<LogEntry> {
    setup_commands(node_count)
        .into_iter()
        .enumerate()
        .map(|(offset, (principal, command))| {
            let index = first + offset as u64;
            normal(1, index, proposal(principal, START_MS + index, command))
        })
        .collect()
}

/// Append `entries` and wait for the store to report them durable.
pub async fn append(log: &mut LogStore, entries: Vec<LogEntry>) {
    let (sender, receiver) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(sender))
        .await
        .expect("append");
    receiver
        .await
        .expect("the store calls the callback")
        .expect("the append is durable");
}

/// Apply `entries` to the state machine as a follower does (no responders).
pub async fn apply(state_machine: &mut StateMachineStore, entries: Vec<LogEntry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
    state_machine.apply(stream).await.expect("apply");
}
