//! The node inventory: one entry per compute node, with capacity from its flavor,
//! placement attributes, status, and what is allocated on it.

use crate::ids::{JobId, PoolId};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a node's agent isolates replicas, as the agent registered it (a node speaks
/// for itself here: the managers only show it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicaIsolation {
    /// Replicas run as the agent's user, unlimited (development only).
    None,
    /// A user per tenant and a cgroup v1 per replica.
    UsersCgroupV1,
    /// A user per tenant and a cgroup v2 per replica.
    UsersCgroupV2,
}

impl ReplicaIsolation {
    /// As the wire and `corral node get` write it.
    pub fn label(self) -> &'static str {
        match self {
            ReplicaIsolation::None => "none",
            ReplicaIsolation::UsersCgroupV1 => "users+cgroup v1",
            ReplicaIsolation::UsersCgroupV2 => "users+cgroup v2",
        }
    }

    /// The isolation written as [`ReplicaIsolation::label`] does; None for anything else.
    pub fn parse(text: &str) -> Option<ReplicaIsolation> {
        [
            ReplicaIsolation::None,
            ReplicaIsolation::UsersCgroupV1,
            ReplicaIsolation::UsersCgroupV2,
        ]
        .into_iter()
        .find(|isolation| isolation.label() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    Creating,
    Available,
    Abnormal,
    Deleting,
    /// Self-testing, e.g. after a driver upgrade.
    Checking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    /// New work without a toleration is not placed here.
    NoSchedule,
    /// New work avoids the node when it can.
    PreferNoSchedule,
    /// New work is not placed and running work without a toleration is evicted.
    NoExecute,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

/// Lets a job land on nodes with a matching taint. `value: None` matches any value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Toleration {
    pub key: String,
    pub value: Option<String>,
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.key == taint.key
            && self
                .value
                .as_ref()
                .is_none_or(|value| *value == taint.value)
    }
}

/// One replica's hold on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAllocation {
    pub job: JobId,
    pub rank: u32,
    pub resources: Resources,
    /// Bit i set: accelerator device i is held.
    pub device_mask: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: crate::ids::NodeId,
    /// Host name reported by the agent; unique.
    pub name: String,
    pub flavor: String,
    pub zone: String,
    pub capacity: Resources,
    pub accelerator_type: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub gpu_driver_version: Option<String>,
    pub npu_driver_version: Option<String>,
    /// A locked node is never removed by scale-in or delete.
    pub deletion_locked: bool,
    pub status: NodeStatus,
    /// False when cordoned or draining.
    pub schedulable: bool,
    /// Set while draining: running work is evicted at this time.
    pub drain_deadline_ms: Option<u64>,
    pub pool: Option<PoolId>,
    /// Address from the pool's network CIDR, as a u32 IPv4 value.
    pub ip_address: Option<u32>,
    pub allocated: Resources,
    /// Bit i set: accelerator device i is held by some replica.
    pub devices_in_use: u64,
    pub allocations: Vec<NodeAllocation>,
    pub registered_at_ms: u64,
    /// When the node joined its current pool (start of node-time billing).
    pub joined_pool_at_ms: Option<u64>,
    /// Node-time billing meter while in a pay-per-use dedicated pool.
    pub meter: Option<crate::ids::MeterId>,
    /// A hot standby of a dedicated pool: never scheduled onto, holds no work, and takes
    /// the place of a lost node of the same flavor.
    pub standby: bool,
    /// host:port of the node's agent, as it registered.
    pub agent_address: Option<String>,
    /// How its agent isolates replicas, as it registered (None: no agent said).
    pub isolation: Option<ReplicaIsolation>,
    /// Set while the node is isolated for a driver upgrade.
    pub upgrading: Option<NodeUpgrade>,
    /// The node's last driver upgrade failed (kept until a later upgrade of the node
    /// succeeds or an operator uncordons it).
    pub upgrade_failure: Option<UpgradeFailure>,
}

/// A failed driver upgrade of a node: a condition operators see in `node get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeFailure {
    /// Which pool upgrade (its `requested_at_ms`).
    pub upgrade_requested_at_ms: u64,
    pub attempt: u32,
    /// The agent gave up: the node stays isolated, its pool's upgrade went on.
    pub final_attempt: bool,
    pub at_ms: u64,
    /// The end of the hook's output and why it failed (bounded).
    pub output_tail: String,
}

/// A node's part in its pool's driver upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpgrade {
    pub mode: crate::pool::UpgradeMode,
    /// Whether the node was schedulable before it was isolated; restored afterwards so
    /// an upgrade never uncordons a node an operator had cordoned.
    pub was_schedulable: bool,
}

impl Node {
    /// Whether the node gave up on `upgrade` (its agent's final attempt failed).
    pub fn failed_upgrade(&self, upgrade: &crate::pool::DriverUpgrade) -> bool {
        self.upgrade_failure.as_ref().is_some_and(|failure| {
            failure.final_attempt && failure.upgrade_requested_at_ms == upgrade.requested_at_ms
        })
    }

    pub fn free(&self) -> Resources {
        // `allocated` never exceeds `capacity` (invariant 1), so this cannot underflow;
        // fall back to zero rather than panic if a bug ever broke that.
        self.capacity
            .checked_sub(&self.allocated)
            .unwrap_or(Resources::ZERO)
    }

    /// The agent should run its upgrade hook now: the node is isolated for an upgrade
    /// and holds no work any more.
    pub fn ready_to_upgrade(&self) -> bool {
        self.upgrading.is_some() && self.allocations.is_empty()
    }

    pub fn is_idle(&self) -> bool {
        self.allocations.is_empty()
    }

    pub fn has_running_work_of(&self, job: JobId) -> bool {
        self.allocations
            .iter()
            .any(|allocation| allocation.job == job)
    }

    /// Lowest-numbered free device indices, `count` of them, as a mask.
    pub fn pick_devices(&self, count: u32) -> Option<u64> {
        let mut mask = 0u64;
        let mut picked = 0;
        for index in 0..self.capacity.accelerators.min(64) {
            if picked == count {
                break;
            }
            if self.devices_in_use & (1 << index) == 0 {
                mask |= 1 << index;
                picked += 1;
            }
        }
        (picked == count).then_some(mask)
    }
}

/// Device indices of a mask, in order; for `CUDA_VISIBLE_DEVICES`.
pub fn device_indices(mask: u64) -> Vec<u32> {
    (0..64)
        .filter(|index| mask & (1u64 << index) != 0)
        .collect()
}
