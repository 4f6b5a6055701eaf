//! Tenants, their quotas and tokens, and the principals that propose commands.

use crate::ids::{NodeId, TenantId, TokenId};
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
    /// Unfinished jobs the tenant may hold at once (`None`: `MAX_ACTIVE_JOBS_PER_TENANT`),
    /// so that no tenant fills the cluster's `MAX_ACTIVE_JOBS` alone.
    pub max_active_jobs: Option<u64>,
}

impl Tenant {
    /// The tenant's bound on unfinished jobs.
    pub fn active_jobs_bound(&self) -> usize {
        self.max_active_jobs
            .map_or(crate::limits::MAX_ACTIVE_JOBS_PER_TENANT, |bound| {
                usize::try_from(bound).unwrap_or(usize::MAX)
            })
    }
}

/// What a tenant token may do inside its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TenantRole {
    /// Everything an operator may, and create, rotate and revoke the tenant's tokens.
    Admin,
    /// Submit and manage the tenant's jobs, networks and pools.
    Operator,
    /// Read the tenant's objects; change nothing.
    Viewer,
}

impl TenantRole {
    pub fn name(self) -> &'static str {
        match self {
            TenantRole::Admin => "admin",
            TenantRole::Operator => "operator",
            TenantRole::Viewer => "viewer",
        }
    }
}

/// Who proposed a command. The server maps a bearer token to one of these; the leader's
/// own loops propose as `System`; a node agent proposes as its own node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    PlatformAdmin,
    /// Reads everything, changes nothing.
    PlatformAuditor,
    /// A tenant token with the operator role (the name predates roles).
    TenantUser(TenantId),
    TenantAdmin(TenantId),
    TenantViewer(TenantId),
    /// The leader's loops: scheduler, liveness, metering, upgrades.
    System,
    /// A node agent holding its node's own credential: it may report about, and follow,
    /// that node only, and reads nothing else (Kubernetes' NodeRestriction).
    Node(NodeId),
    /// A node-bootstrap token: may only register a node, which yields the node's own
    /// credential.
    Bootstrap,
}

/// What a principal may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    Everything,
    Tenant(TenantId),
    Nothing,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::PlatformAdmin)
    }

    /// The tenant a tenant token stands for, whatever its role.
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Principal::TenantUser(tenant)
            | Principal::TenantAdmin(tenant)
            | Principal::TenantViewer(tenant) => Some(*tenant),
            _ => None,
        }
    }

    /// What this principal may read: the platform admin, the auditor and the system
    /// everything; a tenant token its tenant's objects; a node or a bootstrap token no
    /// tenant's objects at all (a node learns what it runs from its assignments only).
    pub fn reads(&self) -> Reads {
        match self {
            Principal::PlatformAdmin | Principal::PlatformAuditor | Principal::System => {
                Reads::Everything
            }
            Principal::TenantUser(tenant)
            | Principal::TenantAdmin(tenant)
            | Principal::TenantViewer(tenant) => Reads::Tenant(*tenant),
            Principal::Node(_) | Principal::Bootstrap => Reads::Nothing,
        }
    }

    /// Whether this principal may see objects owned by `owner`.
    pub fn may_read(&self, owner: TenantId) -> bool {
        match self.reads() {
            Reads::Everything => true,
            Reads::Tenant(tenant) => tenant == owner,
            Reads::Nothing => false,
        }
    }

    /// Read-only principals change nothing, whatever the command.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Principal::PlatformAuditor | Principal::TenantViewer(_)
        )
    }

    /// Whether this principal may change objects owned by `owner`.
    pub fn may_act_for(&self, owner: TenantId) -> bool {
        match self {
            Principal::PlatformAdmin | Principal::System => true,
            Principal::TenantUser(tenant) | Principal::TenantAdmin(tenant) => *tenant == owner,
            Principal::PlatformAuditor
            | Principal::TenantViewer(_)
            | Principal::Node(_)
            | Principal::Bootstrap => false,
        }
    }

    /// Whether this principal may create, rotate or revoke tokens of `scope`.
    pub fn may_manage_tokens_of(&self, scope: &TokenScope) -> bool {
        match (self, scope) {
            (Principal::PlatformAdmin, TokenScope::Node(_)) => false,
            (Principal::PlatformAdmin, _) => true,
            (Principal::TenantAdmin(own), TokenScope::Tenant { tenant, .. }) => own == tenant,
            _ => false,
        }
    }

    /// A short name for logs and the audit trail.
    pub fn describe(&self) -> String {
        match self {
            Principal::PlatformAdmin => "platform-admin".to_string(),
            Principal::PlatformAuditor => "platform-auditor".to_string(),
            Principal::TenantUser(tenant) => format!("{tenant}/operator"),
            Principal::TenantAdmin(tenant) => format!("{tenant}/admin"),
            Principal::TenantViewer(tenant) => format!("{tenant}/viewer"),
            Principal::System => "system".to_string(),
            Principal::Node(node) => format!("{node}"),
            Principal::Bootstrap => "node-bootstrap".to_string(),
        }
    }
}

/// What a token stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    PlatformAdmin,
    PlatformAuditor,
    Tenant {
        tenant: TenantId,
        role: TenantRole,
    },
    /// A node's own credential, created by its registration.
    Node(NodeId),
    /// Registers up to `uses_left` nodes; removed when used up.
    Bootstrap {
        uses_left: u32,
    },
}

impl TokenScope {
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            TokenScope::Tenant { tenant, .. } => Some(*tenant),
            _ => None,
        }
    }

    /// The principal a token of this scope authenticates as.
    pub fn principal(&self) -> Principal {
        match self {
            TokenScope::PlatformAdmin => Principal::PlatformAdmin,
            TokenScope::PlatformAuditor => Principal::PlatformAuditor,
            TokenScope::Tenant { tenant, role } => match role {
                TenantRole::Admin => Principal::TenantAdmin(*tenant),
                TenantRole::Operator => Principal::TenantUser(*tenant),
                TenantRole::Viewer => Principal::TenantViewer(*tenant),
            },
            TokenScope::Node(node) => Principal::Node(*node),
            TokenScope::Bootstrap { .. } => Principal::Bootstrap,
        }
    }

    /// The role's name as listings show it.
    pub fn role_name(&self) -> &'static str {
        match self {
            TokenScope::PlatformAdmin => "platform-admin",
            TokenScope::PlatformAuditor => "platform-auditor",
            TokenScope::Tenant { role, .. } => role.name(),
            TokenScope::Node(_) => "node",
            TokenScope::Bootstrap { .. } => "node-bootstrap",
        }
    }
}

/// A bearer token, stored only as a hash computed at the edge. The state machine never
/// sees the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: TokenId,
    pub name: String,
    pub hash: String,
    pub scope: TokenScope,
    pub created_at_ms: u64,
    /// Refused from this time on (the leader's clock at apply); `None` never expires.
    pub expires_at_ms: Option<u64>,
    /// Bumped by every rotation; an entry names the generation it was authorized with.
    pub generation: u32,
    /// The secret before the last rotation, still accepted for a grace period.
    pub previous: Option<PreviousSecret>,
}

/// A rotated-out secret's hash and the end of its grace period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub hash: String,
    pub valid_until_ms: u64,
}

impl Token {
    pub fn tenant(&self) -> Option<TenantId> {
        self.scope.tenant()
    }

    /// Whether the token is usable at `at_ms`.
    pub fn live_at(&self, at_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|expires| at_ms < expires)
    }

    /// The generation whose secret hashes to `hash` at `at_ms`, if any.
    pub fn generation_of(&self, hash: &str, at_ms: u64) -> Option<u32> {
        if !self.live_at(at_ms) {
            return None;
        }
        if self.hash == hash {
            return Some(self.generation);
        }
        match &self.previous {
            Some(previous) if previous.hash == hash && at_ms < previous.valid_until_ms => {
                Some(self.generation.saturating_sub(1))
            }
            _ => None,
        }
    }

    /// Whether an entry authorized with `generation` may still be applied at `at_ms`.
    pub fn accepts(&self, generation: u32, at_ms: u64) -> bool {
        if !self.live_at(at_ms) {
            return false;
        }
        if generation == self.generation {
            return true;
        }
        generation.saturating_add(1) == self.generation
            && self
                .previous
                .as_ref()
                .is_some_and(|previous| at_ms < previous.valid_until_ms)
    }
}

/// The token a write was authorized with, as the edge saw it: the state machine checks
/// at apply that it still exists, is unexpired and still grants the write's principal,
/// so a revocation is honoured by every replica from its log index on, whatever a
/// lagging replica believed when it forwarded the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Credential {
    pub token: TokenId,
    pub generation: u32,
}

/// A principal with the token it was authenticated by, as the edge hands it to the
/// proposer: every write it proposes carries both (`Entry::credential`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub credential: Option<Credential>,
}

impl Caller {
    /// A principal acting without a token: the leader's loops, and a program that runs
    /// a replica in its own process (`corral dev` seeding its cluster).
    pub fn trusted(principal: Principal) -> Caller {
        Caller {
            principal,
            credential: None,
        }
    }
}
