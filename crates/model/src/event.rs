//! Events: what an applied command changed, kept with the log index for the Watch API
//! and the audit trail
//! (`audit.rs`).

use crate::ids::{JobId, NetworkId, NodeId, PoolId, TenantId};
use crate::job::JobState;
use crate::node::NodeStatus;
use crate::pool::PoolStatus;
use crate::tenant::Principal;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    TenantCreated {
        tenant: TenantId,
    },
    TenantQuotaChanged {
        tenant: TenantId,
    },
    TenantDeleted {
        tenant: TenantId,
    },
    TokenCreated {
        name: String,
    },
    TokenRotated {
        name: String,
    },
    TokenRevoked {
        name: String,
    },
    FlavorDefined {
        name: String,
    },
    NetworkCreated {
        network: NetworkId,
    },
    NetworkDeleted {
        network: NetworkId,
    },
    NetworkStorageChanged {
        network: NetworkId,
    },
    PoolCreated {
        pool: PoolId,
    },
    PoolStatusChanged {
        pool: PoolId,
        from: PoolStatus,
        to: PoolStatus,
    },
    PoolScaled {
        pool: PoolId,
        flavor: String,
        zone: String,
        from: u32,
        to: u32,
    },
    PoolJobTypesChanged {
        pool: PoolId,
    },
    PoolDriverUpgradeRequested {
        pool: PoolId,
    },
    PoolDeleted {
        pool: PoolId,
    },
    PrepaidCharged {
        pool: PoolId,
        amount_micros: u64,
        paid_until_ms: u64,
    },
    NodeRegistered {
        node: NodeId,
    },
    NodeJoinedPool {
        node: NodeId,
        pool: PoolId,
    },
    NodeLeftPool {
        node: NodeId,
        pool: PoolId,
    },
    NodeStatusChanged {
        node: NodeId,
        from: NodeStatus,
        to: NodeStatus,
    },
    NodeSchedulableChanged {
        node: NodeId,
        schedulable: bool,
    },
    NodeDraining {
        node: NodeId,
        deadline_ms: Option<u64>,
    },
    NodeDeletionLockChanged {
        node: NodeId,
        locked: bool,
    },
    NodeAttributesChanged {
        node: NodeId,
    },
    NodeDriverChanged {
        node: NodeId,
    },
    NodeDeleted {
        node: NodeId,
    },
    NodeStandbyChanged {
        node: NodeId,
        standby: bool,
    },
    /// A standby node took the place of a lost one.
    NodeStandbyPromoted {
        node: NodeId,
        replaced: NodeId,
    },
    NodeUpgradeStarted {
        node: NodeId,
        pool: PoolId,
    },
    NodeUpgradeFinished {
        node: NodeId,
        pool: PoolId,
    },
    /// The node's upgrade hook failed; after the final attempt the node stays isolated
    /// and its pool's upgrade goes on without it.
    NodeUpgradeFailed {
        node: NodeId,
        pool: PoolId,
        attempt: u32,
        final_attempt: bool,
    },
    PoolDriverUpgradeCancelled {
        pool: PoolId,
    },
    /// Rank 0 of the job reported its rendezvous port: `node`, which runs other ranks
    /// of the job, may start them now.
    RendezvousReady {
        job: JobId,
        node: NodeId,
    },
    JobSubmitted {
        job: JobId,
        pool: PoolId,
    },
    JobStateChanged {
        job: JobId,
        from: JobState,
        to: JobState,
        reason: String,
    },
    JobPriorityChanged {
        job: JobId,
        priority: u8,
    },
    ReplicaAssigned {
        job: JobId,
        rank: u32,
        node: NodeId,
    },
    ReplicaReleased {
        job: JobId,
        rank: u32,
        node: NodeId,
    },
    ReplicaStarted {
        job: JobId,
        rank: u32,
        node: NodeId,
    },
    ReplicaExited {
        job: JobId,
        rank: u32,
        node: NodeId,
        exit_code: i32,
        /// The kernel's OOM killer ended it (it passed its memory limit).
        oom_killed: bool,
    },
    /// A plan's placement for this job failed the re-check; the job stays queued.
    PlacementRejected {
        job: JobId,
        reason: String,
    },
    Billed {
        tenant: TenantId,
        pool: PoolId,
        amount_micros: u64,
    },
    AlarmRaised {
        replica: u64,
        kind: crate::alarm::AlarmKind,
    },
    AlarmDisarmed {
        replica: u64,
        kind: crate::alarm::AlarmKind,
    },
    QueueCreated {
        pool: PoolId,
        name: String,
    },
    QueueUpdated {
        pool: PoolId,
        name: String,
    },
    QueueDeleted {
        pool: PoolId,
        name: String,
    },
}

/// An event with where it came from in the log and whom it concerns. Events of one
/// tenant's objects carry that tenant; platform events carry `None` and are shown only
/// to the platform admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub index: u64,
    pub at_ms: u64,
    /// Who caused it: the principal of the write whose entry produced the event.
    pub principal: Principal,
    pub tenant: Option<TenantId>,
    pub event: Event,
}
