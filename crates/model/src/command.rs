//! Commands: every change to the cluster is one of these, wrapped in an `Entry` with
//! the proposer and the leader's timestamp, and applied in log order on every replica.

use crate::flavor::Flavor;
use crate::ids::{JobId, NetworkId, NodeId, PoolId, TenantId};
use crate::job::{JobSpec, JobType};
use crate::node::Taint;
use crate::pool::{BillingMode, DriverSpec, PoolFlavor, UpgradeMode};
use crate::resources::Resources;
use crate::tenant::{Credential, Principal, TokenScope};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One log entry: who proposed what, and when (the leader's clock at proposal time;
/// the only time the state machine ever sees).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub at_ms: u64,
    pub principal: Principal,
    /// The token the principal was authenticated with; `None` for the system's own
    /// writes (and tests). Checked again at apply (`Credential`).
    pub credential: Option<Credential>,
    pub command: Command,
}

/// Which pool kind to create. The public pool has no owner and at most one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolKindRequest {
    Dedicated { owner: TenantId },
    Public,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCreate {
    pub name: String,
    pub description: String,
    pub kind: PoolKindRequest,
    pub flavors: Vec<PoolFlavor>,
    pub job_types: BTreeSet<JobType>,
    pub network: Option<NetworkId>,
    pub driver: DriverSpec,
    pub billing: BillingMode,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegister {
    pub name: String,
    pub flavor: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub gpu_driver_version: Option<String>,
    pub npu_driver_version: Option<String>,
    /// host:port where the node's agent serves logs; also the host of CORRAL_MASTER_ADDR.
    pub agent_address: Option<String>,
    /// The hash of the node's own credential, computed at the edge: registration under
    /// a bootstrap token creates (or, for a replaced machine, replaces) the node's token.
    pub credential_hash: Option<String>,
    /// How the node's agent isolates replicas.
    pub isolation: Option<crate::node::ReplicaIsolation>,
}

/// One job's placement in a plan: a node for each replica rank that is to be placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub job: JobId,
    /// `(rank, node)`; a gang lists every rank.
    pub assignments: Vec<(u32, NodeId)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // Tenants and tokens (platform admin).
    TenantCreate {
        name: String,
        quota: Resources,
        may_use_high_priority: bool,
        /// The tenant's bound on unfinished jobs (`None`: `MAX_ACTIVE_JOBS_PER_TENANT`;
        /// at most `MAX_ACTIVE_JOBS`).
        max_active_jobs: Option<u64>,
    },
    TenantSetQuota {
        tenant: TenantId,
        quota: Resources,
    },
    TenantDelete {
        tenant: TenantId,
    },
    /// `hash` is computed at the edge; the secret never enters the log. The token
    /// expires `ttl_ms` after the entry's time (`None`: never; platform tokens only).
    TokenCreate {
        name: String,
        hash: String,
        scope: TokenScope,
        ttl_ms: Option<u64>,
    },
    /// A new secret for the token; the old one keeps working for `grace_ms`.
    TokenRotate {
        name: String,
        hash: String,
        grace_ms: u64,
    },
    TokenRevoke {
        name: String,
    },

    // Flavor catalogue (platform admin).
    FlavorDefine(Flavor),

    // Networks (owner or admin).
    NetworkCreate {
        tenant: TenantId,
        name: String,
        cidr: String,
    },
    NetworkDelete {
        network: NetworkId,
    },

    /// Replace the storage endpoints attached to a network (its owner).
    NetworkSetStorage {
        network: NetworkId,
        endpoints: Vec<String>,
    },

    // Pools.
    PoolCreate(PoolCreate),
    /// Set the node count of one flavor and zone of the pool (out or in, never both).
    PoolScale {
        pool: PoolId,
        flavor: String,
        zone: String,
        node_count: u32,
    },
    /// Delete a pool; with `force`, its active work is terminated first, otherwise the
    /// delete is refused while it has active work.
    PoolDelete {
        pool: PoolId,
        force: bool,
    },
    PoolSetJobTypes {
        pool: PoolId,
        job_types: BTreeSet<JobType>,
    },
    PoolRequestDriverUpgrade {
        pool: PoolId,
        target: DriverSpec,
        mode: UpgradeMode,
        batch_size: u32,
    },
    /// End a pool's driver upgrade where it stands: the nodes isolated for it are
    /// released, the pool's declared drivers return to what they were.
    PoolCancelDriverUpgrade {
        pool: PoolId,
    },
    /// Pay for `periods` more periods of a prepaid pool; unfreezes a frozen one.
    PoolRenew {
        pool: PoolId,
        periods: u32,
    },

    // Nodes.
    NodeRegister(NodeRegister),
    /// Stop scheduling onto the node; running work is evicted at `deadline_ms` if set.
    NodeDrain {
        node: NodeId,
        deadline_ms: Option<u64>,
    },
    NodeCordon {
        node: NodeId,
    },
    NodeUncordon {
        node: NodeId,
    },
    NodeSetDeletionLock {
        node: NodeId,
        locked: bool,
    },
    NodeSetTaints {
        node: NodeId,
        taints: Vec<Taint>,
    },
    NodeSetLabels {
        node: NodeId,
        labels: BTreeMap<String, String>,
    },
    NodeDelete {
        node: NodeId,
    },
    /// The node's agent moved (restarted on another port or host), or restarted with
    /// another isolation (None: unchanged).
    NodeSetAgentAddress {
        node: NodeId,
        address: String,
        isolation: Option<crate::node::ReplicaIsolation>,
    },
    /// Make a node of a dedicated pool a hot standby (it must be idle), or a regular node.
    NodeSetStandby {
        node: NodeId,
        standby: bool,
    },
    /// Proposed by the leader's upgrade loop: isolate the node for its pool's driver
    /// upgrade. Forcible upgrades evict its work at once (it restarts by its policy);
    /// secure ones wait for the work to finish.
    NodeUpgradeBegin {
        node: NodeId,
    },
    /// One node missed its grace period (the liveness loop proposes `NodesLost` now; this
    /// stays for entries already in logs and for tests). The same as `NodesLost` of it.
    NodeLost {
        node: NodeId,
    },
    NodeRecovered {
        node: NodeId,
    },
    /// The agent reports the driver versions it now runs.
    NodeDriverReport {
        node: NodeId,
        gpu_driver_version: Option<String>,
        npu_driver_version: Option<String>,
    },
    /// The agent's upgrade hook failed (attempt `attempt`); `final_attempt`: the agent
    /// gives up, and the node stays isolated, marked failed, so its pool's upgrade can
    /// finish with the other nodes.
    NodeDriverUpgradeFailed {
        node: NodeId,
        attempt: u32,
        final_attempt: bool,
        /// The end of the hook's output and why it failed.
        output_tail: String,
    },

    // Work.
    JobSubmit(JobSpec),
    JobTerminate {
        job: JobId,
    },
    JobStop {
        job: JobId,
    },
    JobStart {
        job: JobId,
    },
    JobChangePriority {
        job: JobId,
        priority: u8,
    },

    // Leader loops and agents.
    SchedulerPlan {
        pool: PoolId,
        placements: Vec<Placement>,
    },
    ReplicaStarted {
        job: JobId,
        rank: u32,
        node: NodeId,
        /// Rank 0 of a multi-replica job: the rendezvous port its agent allocated.
        master_port: Option<u16>,
    },
    ReplicaExited {
        job: JobId,
        rank: u32,
        node: NodeId,
        exit_code: i32,
        /// The kernel's OOM killer ended it (it passed its memory limit).
        oom_killed: bool,
    },
    /// Bill every open meter up to the entry's time, renew or freeze prepaid pools,
    /// enforce max runtimes, auto-stop notebooks, finish expired drains.
    MeterTick,

    // Cluster alarms (`alarm.rs`).
    /// A replica found a condition the cluster must react to (its own loops propose it).
    AlarmRaise {
        replica: u64,
        kind: crate::alarm::AlarmKind,
        detail: String,
    },
    /// The operator cleared the alarms of one replica, or all (`None`).
    AlarmDisarm {
        replica: Option<u64>,
    },

    // Added after the others (and the alarms), so that entries already in logs decode
    // unchanged (bincode numbers variants by position).
    /// Proposed by the leader's liveness loop: every node silent past its grace period
    /// in one pass, marked lost together (at most `MAX_NODES_LOST_PER_ENTRY`, no
    /// duplicates), so the work displaced from a dead rack or agent is re-queued at once
    /// and never re-placed on its still-unmarked neighbours. Listed nodes that are
    /// already lost (or gone) are skipped: the leader's view may lag by an entry.
    NodesLost {
        nodes: Vec<NodeId>,
    },
    /// The agent found the replica's process gone with no recorded exit (the machine or
    /// the agent restarted under it): an infrastructure disruption, not the job's own
    /// failure, so it spends no retry.
    ReplicaLost {
        job: JobId,
        rank: u32,
        node: NodeId,
    },
    /// Create a queue in a pool (platform admin for the public pool, the owner for a
    /// dedicated one).
    QueueCreate(crate::queue::QueueSpec),
    /// Replace a queue's guarantee, limit, weight, members and default mark.
    QueueUpdate(crate::queue::QueueSpec),
    /// Delete a queue; refused while it has active jobs.
    QueueDelete {
        pool: PoolId,
        name: String,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::TenantCreate { .. } => "tenant_create",
            Command::TenantSetQuota { .. } => "tenant_set_quota",
            Command::TenantDelete { .. } => "tenant_delete",
            Command::TokenCreate { .. } => "token_create",
            Command::TokenRotate { .. } => "token_rotate",
            Command::TokenRevoke { .. } => "token_revoke",
            Command::FlavorDefine(_) => "flavor_define",
            Command::NetworkCreate { .. } => "network_create",
            Command::NetworkDelete { .. } => "network_delete",
            Command::NetworkSetStorage { .. } => "network_set_storage",
            Command::PoolCreate(_) => "pool_create",
            Command::PoolScale { .. } => "pool_scale",
            Command::PoolDelete { .. } => "pool_delete",
            Command::PoolSetJobTypes { .. } => "pool_set_job_types",
            Command::PoolRequestDriverUpgrade { .. } => "pool_request_driver_upgrade",
            Command::PoolCancelDriverUpgrade { .. } => "pool_cancel_driver_upgrade",
            Command::PoolRenew { .. } => "pool_renew",
            Command::NodeRegister(_) => "node_register",
            Command::NodeDrain { .. } => "node_drain",
            Command::NodeCordon { .. } => "node_cordon",
            Command::NodeUncordon { .. } => "node_uncordon",
            Command::NodeSetDeletionLock { .. } => "node_set_deletion_lock",
            Command::NodeSetTaints { .. } => "node_set_taints",
            Command::NodeSetLabels { .. } => "node_set_labels",
            Command::NodeDelete { .. } => "node_delete",
            Command::NodeSetAgentAddress { .. } => "node_set_agent_address",
            Command::NodeSetStandby { .. } => "node_set_standby",
            Command::NodeUpgradeBegin { .. } => "node_upgrade_begin",
            Command::NodeLost { .. } => "node_lost",
            Command::NodeRecovered { .. } => "node_recovered",
            Command::NodesLost { .. } => "nodes_lost",
            Command::ReplicaLost { .. } => "replica_lost",
            Command::NodeDriverReport { .. } => "node_driver_report",
            Command::NodeDriverUpgradeFailed { .. } => "node_driver_upgrade_failed",
            Command::JobSubmit(_) => "job_submit",
            Command::JobTerminate { .. } => "job_terminate",
            Command::JobStop { .. } => "job_stop",
            Command::JobStart { .. } => "job_start",
            Command::JobChangePriority { .. } => "job_change_priority",
            Command::SchedulerPlan { .. } => "scheduler_plan",
            Command::ReplicaStarted { .. } => "replica_started",
            Command::ReplicaExited { .. } => "replica_exited",
            Command::MeterTick => "meter_tick",
            Command::AlarmRaise { .. } => "alarm_raise",
            Command::AlarmDisarm { .. } => "alarm_disarm",
            Command::QueueCreate(_) => "queue_create",
            Command::QueueUpdate(_) => "queue_update",
            Command::QueueDelete { .. } => "queue_delete",
        }
    }

    /// Whether the command adds work or objects the cluster must store: what a NOSPACE
    /// alarm refuses. Deletes, cancels, reports about running work and the leader's own
    /// loops are not, so a cluster short of disk can still shed load and finish.
    pub fn adds_work(&self) -> bool {
        matches!(
            self,
            Command::TenantCreate { .. }
                | Command::TokenCreate { .. }
                | Command::TokenRotate { .. }
                | Command::FlavorDefine(_)
                | Command::NetworkCreate { .. }
                | Command::NetworkSetStorage { .. }
                | Command::PoolCreate(_)
                | Command::PoolScale { .. }
                | Command::PoolRequestDriverUpgrade { .. }
                | Command::PoolRenew { .. }
                | Command::NodeRegister(_)
                | Command::NodeSetTaints { .. }
                | Command::NodeSetLabels { .. }
                | Command::JobSubmit(_)
                | Command::JobStart { .. }
                | Command::JobChangePriority { .. }
                | Command::QueueCreate(_)
                | Command::QueueUpdate(_)
        )
    }
}
