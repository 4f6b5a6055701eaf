//! The audit trail: one record per write a principal made (applied, or refused with
//! the reason), kept in the replicated state apart from the raft log, so it outlives log
//! compaction within its bounds (`MAX_AUDIT_RECORDS`, `MAX_AUDIT_AGE_MS`).

use crate::ids::TenantId;
use crate::tenant::Principal;
use serde::{Deserialize, Serialize};

/// What became of an audited write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    Applied,
    /// Refused by the state machine; nothing changed. The reason is the rejection's text.
    Refused {
        reason: String,
    },
}

/// One audited write. Never holds a secret: the token is named, not shown, and a job's
/// secret environment values are not part of any target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail, increasing by one per record: the paging cursor.
    pub sequence: u64,
    /// The log index of the entry that carried the write (writes grouped into one entry
    /// share it).
    pub index: u64,
    /// The entry's time as the state applied it (never before the previous entry's).
    pub at_ms: u64,
    pub principal: Principal,
    /// The name of the token the write was authenticated with, or its id (`token-7`)
    /// when the token no longer existed at the write's index (`None`: the leader's own
    /// loops, or a trusted in-process caller).
    pub token: Option<String>,
    /// The client's request id, if the write carried one.
    pub request_id: Option<u128>,
    /// The command's short stable name (`Command::name`), e.g. `job_submit`.
    pub kind: String,
    /// The object written, e.g. `job-7`, `pool-2`, `token:ci`, `tenant:alpha`.
    pub target: String,
    /// The tenant the write belongs to: the principal's own, or else the target's owner.
    /// A tenant reads the records of its own tenant only.
    pub tenant: Option<TenantId>,
    pub outcome: AuditOutcome,
}

impl AuditRecord {
    /// Whether `reader` may see this record: the platform admin and auditor see all;
    /// a tenant's roles the records of their tenant; nobody else any.
    pub fn visible_to(&self, reader: &Principal) -> bool {
        match reader {
            Principal::PlatformAdmin | Principal::PlatformAuditor | Principal::System => true,
            Principal::TenantAdmin(tenant)
            | Principal::TenantUser(tenant)
            | Principal::TenantViewer(tenant) => self.tenant == Some(*tenant),
            Principal::Node(_) | Principal::Bootstrap => false,
        }
    }
}
