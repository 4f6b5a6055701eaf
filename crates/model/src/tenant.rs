//! Tenants, their quotas and tokens, and the principals that propose commands.

use crate::ids::TenantId;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Upper bound on what the tenant's running work may hold at once, over all pools.
    pub quota: Resources,
    /// What the tenant's running work holds now; always within `quota` (invariant 6).
    pub used: Resources,
    /// May submit training jobs with priority 3 (ModelArts: "3 needs a permission").
    pub may_use_high_priority: bool,
    pub created_at_ms: u64,
}

/// Who proposed a command. The server maps a bearer token to one of these; the leader's
/// own loops propose as `System`; node agents propose as `Agent`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    PlatformAdmin,
    TenantUser(TenantId),
    /// The leader's loops: scheduler, liveness, metering, upgrades.
    System,
    /// A node agent, authenticated with the cluster's agent credential.
    Agent,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::PlatformAdmin)
    }

    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Principal::TenantUser(tenant) => Some(*tenant),
            _ => None,
        }
    }

    /// Whether this principal may act on objects owned by `owner`.
    pub fn may_act_for(&self, owner: TenantId) -> bool {
        match self {
            Principal::PlatformAdmin | Principal::System => true,
            Principal::TenantUser(tenant) => *tenant == owner,
            Principal::Agent => false,
        }
    }
}

/// A bearer token, stored only as a hash computed at the edge. The state machine never
/// sees the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub hash: String,
    /// `None` for platform admin tokens.
    pub tenant: Option<TenantId>,
    pub created_at_ms: u64,
}
