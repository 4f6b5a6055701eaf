//! Resource pools: dedicated pools owned by one tenant, and the public pool.

use crate::ids::{NetworkId, PoolId, TenantId};
use crate::job::JobType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PoolKind {
    Dedicated { owner: TenantId },
    Public,
}

/// The pool states of ModelArts, plus `Frozen` for an expired prepaid pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PoolStatus {
    Creating,
    Running,
    Abnormal,
    Deleting,
    Error,
    CreationFailed,
    ScalingFailed,
    Waiting,
    /// A yearly/monthly pool whose period expired without renewal: takes no work and
    /// is deleted after the retention period.
    Frozen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BillingMode {
    PayPerUse,
    /// Prepaid for `period_months` at creation; renewed at expiry when `auto_renew`.
    Prepaid {
        period_months: u32,
        auto_renew: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolFlavor {
    pub flavor: String,
    pub zone: String,
    pub node_count: u32,
}

/// Target driver versions; `None` keeps what the node has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverSpec {
    pub gpu_driver_version: Option<String>,
    pub npu_driver_version: Option<String>,
}

impl DriverSpec {
    /// Whether the node already runs every version this spec names.
    pub fn is_run_by(&self, node: &crate::Node) -> bool {
        let gpu_done = self
            .gpu_driver_version
            .as_ref()
            .is_none_or(|version| node.gpu_driver_version.as_ref() == Some(version));
        let npu_done = self
            .npu_driver_version
            .as_ref()
            .is_none_or(|version| node.npu_driver_version.as_ref() == Some(version));
        gpu_done && npu_done
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UpgradeMode {
    /// Isolate a node, wait for its work to finish, then upgrade; idle nodes first.
    Secure,
    /// Upgrade at once; interrupted work restarts by its policy.
    Forcible,
}

/// A driver upgrade asked for on a pool; the leader's upgrade loop carries it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverUpgrade {
    pub target: DriverSpec,
    /// The pool's declared drivers before the upgrade (restored by a cancel).
    pub previous: DriverSpec,
    pub mode: UpgradeMode,
    /// Nodes upgraded at once.
    pub batch_size: u32,
    pub requested_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: PoolId,
    pub name: String,
    pub description: String,
    pub kind: PoolKind,
    pub status: PoolStatus,
    pub flavors: Vec<PoolFlavor>,
    pub job_types: BTreeSet<JobType>,
    pub network: Option<NetworkId>,
    pub driver: DriverSpec,
    pub billing: BillingMode,
    /// For prepaid pools: paid up to this time.
    pub paid_until_ms: Option<u64>,
    pub frozen_at_ms: Option<u64>,
    pub tags: BTreeMap<String, String>,
    pub pending_upgrade: Option<DriverUpgrade>,
    pub created_at_ms: u64,
}

impl Pool {
    pub fn owner(&self) -> Option<TenantId> {
        match self.kind {
            PoolKind::Dedicated { owner } => Some(owner),
            PoolKind::Public => None,
        }
    }

    pub fn is_public(&self) -> bool {
        matches!(self.kind, PoolKind::Public)
    }

    /// Whether `tenant` may run work here: anyone in the public pool, only the owner in
    /// a dedicated pool.
    pub fn admits_tenant(&self, tenant: TenantId) -> bool {
        match self.kind {
            PoolKind::Public => true,
            PoolKind::Dedicated { owner } => owner == tenant,
        }
    }

    pub fn takes_work(&self) -> bool {
        self.status == PoolStatus::Running
    }

    pub fn wanted_nodes(&self) -> u32 {
        self.flavors.iter().map(|flavor| flavor.node_count).sum()
    }
}
