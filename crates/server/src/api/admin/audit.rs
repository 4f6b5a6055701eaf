//! `ListAudit`: the audit trail, answered from this replica's state like every other
//! list (linearizable unless stale). The platform admin and auditor read every record,
//! a tenant's roles their tenant's; nodes and bootstrap tokens never reach here.

use super::{read_options, AdminService};
use crate::api::convert;
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn list_audit(
    admin: &AdminService,
    request: Request<pb::ListAuditRequest>,
) -> Result<Response<pb::ListAuditResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let (filter, limit) = convert::audit_filter_from_proto(&message)?;
    let page = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state.list_audit(&principal, &filter, limit)
        })
        .await?;
    Ok(Response::new(pb::ListAuditResponse {
        records: page
            .records
            .iter()
            .map(convert::audit_record_to_proto)
            .collect(),
        next_after: page.next_after.unwrap_or(0),
    }))
}
