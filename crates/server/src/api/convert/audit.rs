//! The audit trail's query and records (`ListAudit`).

use super::bounds::optional_text;
use super::status::invalid_argument;
use corral_model::limits::{MAX_LIST_PAGE, MAX_NAME_BYTES};
use corral_model::{AuditOutcome, AuditRecord};
use corral_state::AuditFilter;
use corral_wire::pb;
use tonic::Status;

/// Records one `ListAudit` answers when the request names no page size.
pub const DEFAULT_AUDIT_PAGE: usize = 1_000;

/// The filter and page size of a `ListAudit` request, after checking their bounds.
pub fn audit_filter_from_proto(
    request: &pb::ListAuditRequest,
) -> Result<(AuditFilter, usize), Status> {
    // A target is a prefix, a separator and a name (or an id).
    const MAX_FILTER_BYTES: usize = MAX_NAME_BYTES + 16;
    let nonzero = |value: u64| (value != 0).then_some(value);
    if let (Some(since), Some(until)) = (nonzero(request.since_ms), nonzero(request.until_ms)) {
        if until <= since {
            return Err(invalid_argument(
                "until_ms",
                format!("must be after since_ms ({since})"),
            ));
        }
    }
    let limit = match request.page.as_ref().map_or(0, |page| page.limit as usize) {
        0 => DEFAULT_AUDIT_PAGE,
        limit if limit > MAX_LIST_PAGE => {
            return Err(invalid_argument(
                "page.limit",
                format!("must be at most {MAX_LIST_PAGE} (got {limit})"),
            ))
        }
        limit => limit,
    };
    let filter = AuditFilter {
        principal: optional_text("principal", &request.principal, MAX_FILTER_BYTES)?,
        object: optional_text("object", &request.object, MAX_FILTER_BYTES)?,
        kind: optional_text("kind", &request.kind, MAX_FILTER_BYTES)?,
        since_ms: nonzero(request.since_ms),
        until_ms: nonzero(request.until_ms),
        after_sequence: nonzero(request.after_sequence),
    };
    Ok((filter, limit))
}

pub fn audit_record_to_proto(record: &AuditRecord) -> pb::AuditRecord {
    let (outcome, reason) = match &record.outcome {
        AuditOutcome::Applied => ("applied", String::new()),
        AuditOutcome::Refused { reason } => ("refused", reason.clone()),
    };
    pb::AuditRecord {
        sequence: record.sequence,
        index: record.index,
        at_ms: record.at_ms,
        principal: record.principal.describe(),
        token: record.token.clone().unwrap_or_default(),
        request_id: record
            .request_id
            .map(|id| format!("{id:032x}"))
            .unwrap_or_default(),
        kind: record.kind.clone(),
        target: record.target.clone(),
        tenant: record.tenant.map_or(0, |tenant| tenant.0),
        outcome: outcome.to_string(),
        reason,
    }
}
