//! Tenants, their tokens and their bills.

use super::{read_options, AdminService};
use crate::api::auth::hash_token;
use crate::api::convert;
use corral_model::ids::TenantId;
use corral_model::{Command, Principal};
use corral_state::{BillQuery, Created};
use corral_wire::headers::REQUEST_ID_HEADER;
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn create_tenant(
    admin: &AdminService,
    request: Request<pb::CreateTenantRequest>,
) -> Result<Response<pb::Tenant>, Status> {
    let written = admin
        // The bounded converter: a 15 MiB name once entered the log as it came.
        .write(request, |_, message| {
            convert::command_from_create_tenant(message)
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
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let stale = read_options(request.get_ref().read.as_ref());
    let tenants = admin
        .read(&caller, stale, |state| {
            state
                .tenants()
                .filter(|tenant| principal.may_read(tenant.id))
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
    let caller = admin.caller(&request).await?;
    let named_by_client = request.metadata().contains_key(REQUEST_ID_HEADER);
    let request_id = admin.request_id(&request)?;
    let message = request.into_inner();
    // The scope first (no secret is derived for a malformed request), then the secret.
    let placeholder = convert::command_from_create_token(&message, "-".into(), &caller.principal)?;
    let Command::TokenCreate { scope, .. } = &placeholder else {
        return Err(Status::internal("expected a token creation"));
    };
    if !caller.principal.may_manage_tokens_of(scope) {
        return Err(Status::permission_denied(format!(
            "{} may not create {} tokens",
            caller.principal.describe(),
            scope.role_name()
        )));
    }
    let secret = token_secret(
        admin,
        named_by_client,
        request_id,
        scope.tenant(),
        &message.name,
    );
    let command =
        convert::command_from_create_token(&message, hash_token(&secret), &caller.principal)?;
    admin.apply(&caller, command, request_id).await?;
    Ok(token_answer(admin, message.name, secret))
}

/// The answer to a creation or rotation: the secret, shown only here, and the expiry
/// the state gave the token.
fn token_answer(
    admin: &AdminService,
    name: String,
    secret: String,
) -> Response<pb::CreateTokenResponse> {
    let expires_at_ms = admin
        .state_machine
        .read(|state| state.token(&name).and_then(|token| token.expires_at_ms));
    Response::new(pb::CreateTokenResponse {
        name,
        secret,
        expires_at_ms: expires_at_ms.unwrap_or(0),
    })
}

/// A call the client named can be retried: derive its secret so a retry is the same
/// command and gets the first outcome (`token_secret`); otherwise a random one.
fn token_secret(
    admin: &AdminService,
    named_by_client: bool,
    request_id: corral_state::RequestId,
    tenant: Option<TenantId>,
    name: &str,
) -> String {
    if named_by_client {
        admin
            .authenticator
            .derived_token_secret(request_id, tenant, name)
    } else {
        admin.proposer.fresh_secret()
    }
}

/// A new secret for a token; the old one keeps working for the grace period.
pub(super) async fn rotate_token(
    admin: &AdminService,
    request: Request<pb::RotateTokenRequest>,
) -> Result<Response<pb::CreateTokenResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let named_by_client = request.metadata().contains_key(REQUEST_ID_HEADER);
    let request_id = admin.request_id(&request)?;
    let message = request.into_inner();
    // Rotation is derived under its own name, so it never repeats the creation's secret.
    let secret = token_secret(
        admin,
        named_by_client,
        request_id,
        None,
        &format!("rotate:{}", message.name),
    );
    let command = convert::command_from_rotate_token(&message, hash_token(&secret))?;
    admin.apply(&caller, command, request_id).await?;
    Ok(token_answer(admin, message.name, secret))
}

pub(super) async fn revoke_token(
    admin: &AdminService,
    request: Request<pb::RevokeTokenRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_revoke_token)
        .await
}

/// Tokens the caller may manage or audit: all of them for the platform admin and
/// auditor, the tenant's own for a tenant admin; nobody else lists tokens.
pub(super) async fn list_tokens(
    admin: &AdminService,
    request: Request<pb::ListTokensRequest>,
) -> Result<Response<pb::ListTokensResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let own_tenant = match &principal {
        Principal::PlatformAdmin | Principal::PlatformAuditor => None,
        Principal::TenantAdmin(tenant) => Some(*tenant),
        _ => {
            return Err(Status::permission_denied(
                "only the platform admin and auditor, and a tenant's admin, list tokens",
            ))
        }
    };
    let stale = read_options(request.get_ref().read.as_ref());
    let tokens = admin
        .read(&caller, stale, |state| {
            state
                .tokens()
                .filter(|token| own_tenant.is_none_or(|tenant| token.tenant() == Some(tenant)))
                .take(corral_model::limits::MAX_LIST_PAGE)
                .cloned()
                .collect::<Vec<_>>()
        })
        .await?;
    let tokens = tokens
        .iter()
        .map(|token| convert::token_to_proto(token, admin.authenticator.last_used_ms(token.id)))
        .collect();
    Ok(Response::new(pb::ListTokensResponse { tokens }))
}

pub(super) async fn list_bills(
    admin: &AdminService,
    request: Request<pb::ListBillsRequest>,
) -> Result<Response<pb::ListBillsResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let query = BillQuery {
        tenant: (message.tenant != 0).then_some(TenantId(message.tenant)),
        from_ms: message.from_ms,
        to_ms: (message.to_ms != 0).then_some(message.to_ms),
    };
    let summary = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .bills(&principal, &query)
                .map(|summary| convert::bill_summary_to_proto(&summary))
                .map_err(|error| convert::query_error_to_status(&error))
        })
        .await??;
    Ok(Response::new(summary))
}
