//! Tenants, their tokens and their bills.

use super::{read_options, require_admin, AdminService};
use crate::api::auth::hash_token;
use crate::api::convert;
use corral_model::ids::TenantId;
use corral_model::Command;
use corral_state::{BillQuery, Created};
use corral_wire::headers::REQUEST_ID_HEADER;
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn create_tenant(
    admin: &AdminService,
    request: Request<pb::CreateTenantRequest>,
) -> Result<Response<pb::Tenant>, Status> {
    let written = admin
        .write(request, |_, message| {
            Ok(Command::TenantCreate {
                name: message.name.clone(),
                quota: convert::resources_from_proto(message.quota.as_ref()),
                may_use_high_priority: message.may_use_high_priority,
            })
        })
        .await?;
    let Created::Tenant(tenant) = super::created_id(&written.summary)? else {
        return Err(Status::internal("expected a tenant"));
    };
    admin.read_back(
        |state| state.tenant(tenant).map(convert::tenant_to_proto),
        "tenant vanished",
    )
}

pub(super) async fn set_tenant_quota(
    admin: &AdminService,
    request: Request<pb::SetTenantQuotaRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_set_tenant_quota)
        .await
}

pub(super) async fn delete_tenant(
    admin: &AdminService,
    request: Request<pb::DeleteTenantRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_delete_tenant)
        .await
}

pub(super) async fn list_tenants(
    admin: &AdminService,
    request: Request<pb::ListTenantsRequest>,
) -> Result<Response<pb::ListTenantsResponse>, Status> {
    let principal = admin.principal(&request).await?;
    let stale = read_options(request.get_ref().read.as_ref());
    let tenants = admin
        .read(stale, |state| {
            state
                .tenants()
                .filter(|tenant| principal.tenant().is_none_or(|own| own == tenant.id))
                .map(convert::tenant_to_proto)
                .collect()
        })
        .await?;
    Ok(Response::new(pb::ListTenantsResponse { tenants }))
}

/// Not `write`'s shape: the command holds the token's secret, derived from the client's
/// request id when it sent one.
pub(super) async fn create_token(
    admin: &AdminService,
    request: Request<pb::CreateTokenRequest>,
) -> Result<Response<pb::CreateTokenResponse>, Status> {
    let principal = admin.principal(&request).await?;
    require_admin(&principal)?;
    let named_by_client = request.metadata().contains_key(REQUEST_ID_HEADER);
    let request_id = admin.request_id(&request)?;
    let message = request.into_inner();
    let tenant = (message.tenant != 0).then_some(TenantId(message.tenant));
    // A call the client named can be retried: derive its secret so a retry is the
    // same command and gets the first outcome (`token_secret`).
    let secret = if named_by_client {
        admin
            .authenticator
            .derived_token_secret(request_id, tenant, &message.name)
    } else {
        admin.proposer.fresh_secret()
    };
    let command = Command::TokenCreate {
        name: message.name.clone(),
        hash: hash_token(&secret),
        tenant,
    };
    admin.apply(principal, command, request_id).await?;
    Ok(Response::new(pb::CreateTokenResponse {
        name: message.name,
        secret,
    }))
}

pub(super) async fn revoke_token(
    admin: &AdminService,
    request: Request<pb::RevokeTokenRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_revoke_token)
        .await
}

pub(super) async fn list_bills(
    admin: &AdminService,
    request: Request<pb::ListBillsRequest>,
) -> Result<Response<pb::ListBillsResponse>, Status> {
    let principal = admin.principal(&request).await?;
    let message = request.into_inner();
    let query = BillQuery {
        tenant: (message.tenant != 0).then_some(TenantId(message.tenant)),
        from_ms: message.from_ms,
        to_ms: (message.to_ms != 0).then_some(message.to_ms),
    };
    let summary = admin
        .read(read_options(message.read.as_ref()), |state| {
            state
                .bills(&principal, &query)
                .map(|summary| convert::bill_summary_to_proto(&summary))
                .map_err(|error| convert::query_error_to_status(&error))
        })
        .await??;
    Ok(Response::new(summary))
}
