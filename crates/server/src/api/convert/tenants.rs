//! Tenants and tokens: the platform admin's requests as commands, and `Tenant` as the
//! API shows it.

use super::bounds::bounded_text;
use super::ids::{optional_id, required_id};
use super::resources::{resources_from_proto, resources_to_proto};
use super::status::invalid_argument;
use corral_model::limits::{
    MAX_ACTIVE_JOBS, MAX_NAME_BYTES, MAX_ROTATION_GRACE_MS, MAX_TOKEN_HASH_BYTES, MAX_TOKEN_TTL_MS,
};
use corral_model::{Command, Principal, Tenant, TenantId, TenantRole, Token, TokenScope};
use corral_wire::pb;
use tonic::Status;

/// A missing quota is the zero quota.
pub fn command_from_create_tenant(request: &pb::CreateTenantRequest) -> Result<Command, Status> {
    Ok(Command::TenantCreate {
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
        quota: resources_from_proto(request.quota.as_ref()),
        may_use_high_priority: request.may_use_high_priority,
        max_active_jobs: match request.max_active_jobs {
            0 => None,
            bound if bound > MAX_ACTIVE_JOBS as u64 => {
                return Err(invalid_argument(
                    "max_active_jobs",
                    format!("must be at most {MAX_ACTIVE_JOBS} (got {bound})"),
                ))
            }
            bound => Some(bound),
        },
    })
}

pub fn command_from_set_tenant_quota(
    request: &pb::SetTenantQuotaRequest,
) -> Result<Command, Status> {
    Ok(Command::TenantSetQuota {
        tenant: required_id("tenant", request.tenant, TenantId)?,
        quota: resources_from_proto(request.quota.as_ref()),
    })
}

pub fn command_from_delete_tenant(request: &pb::DeleteTenantRequest) -> Result<Command, Status> {
    Ok(Command::TenantDelete {
        tenant: required_id("tenant", request.tenant, TenantId)?,
    })
}

/// `hash` is the hash of the secret the server generated (`auth::hash_token`); the
/// secret itself never enters the log. The scope comes from the role and tenant asked
/// for, defaulting to what the caller may create (`token_scope`).
pub fn command_from_create_token(
    request: &pb::CreateTokenRequest,
    hash: String,
    caller: &Principal,
) -> Result<Command, Status> {
    let name = bounded_text("name", &request.name, MAX_NAME_BYTES)?;
    // The hash comes from the server, not the caller; still keep the log bounded.
    super::bounds::check_text("hash", &hash, MAX_TOKEN_HASH_BYTES)?;
    let ttl_ms = match request.ttl_seconds {
        0 => None,
        seconds => Some(
            seconds
                .checked_mul(1_000)
                .filter(|ttl_ms| *ttl_ms <= MAX_TOKEN_TTL_MS)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "ttl_seconds: at most {}",
                        MAX_TOKEN_TTL_MS / 1_000
                    ))
                })?,
        ),
    };
    Ok(Command::TokenCreate {
        name,
        hash,
        scope: token_scope(request, caller)?,
        ttl_ms,
    })
}

/// The scope a create-token request asks for. A tenant admin's request names its own
/// tenant when it names none; an unspecified role is an operator inside a tenant and
/// the platform admin outside one.
fn token_scope(request: &pb::CreateTokenRequest, caller: &Principal) -> Result<TokenScope, Status> {
    let tenant = optional_id(request.tenant, TenantId).or(caller.tenant());
    let role = pb::TokenRole::try_from(request.role)
        .map_err(|_| Status::invalid_argument(format!("role: unknown value {}", request.role)))?;
    let in_tenant = |role: TenantRole| match tenant {
        Some(tenant) => Ok(TokenScope::Tenant { tenant, role }),
        None => Err(Status::invalid_argument(format!(
            "role {}: a tenant is required",
            role.name()
        ))),
    };
    let platform = |scope: TokenScope| match tenant {
        None => Ok(scope),
        Some(_) => Err(Status::invalid_argument(format!(
            "role {}: a platform token names no tenant",
            scope.role_name()
        ))),
    };
    match role {
        pb::TokenRole::Unspecified if tenant.is_some() => in_tenant(TenantRole::Operator),
        pb::TokenRole::Unspecified | pb::TokenRole::PlatformAdmin => {
            platform(TokenScope::PlatformAdmin)
        }
        pb::TokenRole::PlatformAuditor => platform(TokenScope::PlatformAuditor),
        pb::TokenRole::Admin => in_tenant(TenantRole::Admin),
        pb::TokenRole::Operator => in_tenant(TenantRole::Operator),
        pb::TokenRole::Viewer => in_tenant(TenantRole::Viewer),
        pb::TokenRole::NodeBootstrap => platform(TokenScope::Bootstrap {
            uses_left: request.uses.max(1),
        }),
        pb::TokenRole::Node => Err(Status::invalid_argument(
            "role: node credentials are created by registering a node with a bootstrap token",
        )),
    }
}

pub fn command_from_rotate_token(
    request: &pb::RotateTokenRequest,
    hash: String,
) -> Result<Command, Status> {
    let grace_ms = request
        .grace_seconds
        .checked_mul(1_000)
        .filter(|grace_ms| *grace_ms <= MAX_ROTATION_GRACE_MS)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "grace_seconds: at most {}",
                MAX_ROTATION_GRACE_MS / 1_000
            ))
        })?;
    Ok(Command::TokenRotate {
        name: bounded_text("name", &request.name, MAX_NODE_TOKEN_NAME_BYTES)?,
        hash,
        grace_ms,
    })
}

/// A token as listings show it: never its secret or hash.
pub fn token_to_proto(token: &Token, last_used_ms: Option<u64>) -> pb::TokenInfo {
    let (role, node, uses_left) = match &token.scope {
        TokenScope::PlatformAdmin => (pb::TokenRole::PlatformAdmin, 0, 0),
        TokenScope::PlatformAuditor => (pb::TokenRole::PlatformAuditor, 0, 0),
        TokenScope::Tenant { role, .. } => (
            match role {
                TenantRole::Admin => pb::TokenRole::Admin,
                TenantRole::Operator => pb::TokenRole::Operator,
                TenantRole::Viewer => pb::TokenRole::Viewer,
            },
            0,
            0,
        ),
        TokenScope::Node(node) => (pb::TokenRole::Node, node.0, 0),
        TokenScope::Bootstrap { uses_left } => (pb::TokenRole::NodeBootstrap, 0, *uses_left),
    };
    pb::TokenInfo {
        name: token.name.clone(),
        role: role as i32,
        tenant: token.tenant().map_or(0, |tenant| tenant.0),
        node,
        created_at_ms: token.created_at_ms,
        expires_at_ms: token.expires_at_ms.unwrap_or(0),
        last_used_ms: last_used_ms.unwrap_or(0),
        uses_left,
        generation: token.generation,
        previous_valid_until_ms: token
            .previous
            .as_ref()
            .map_or(0, |previous| previous.valid_until_ms),
    }
}

/// Node credentials are named `node:<node name>`, a little longer than other names.
const MAX_NODE_TOKEN_NAME_BYTES: usize = MAX_NAME_BYTES + 8;

pub fn command_from_revoke_token(request: &pb::RevokeTokenRequest) -> Result<Command, Status> {
    Ok(Command::TokenRevoke {
        name: bounded_text("name", &request.name, MAX_NODE_TOKEN_NAME_BYTES)?,
    })
}

pub fn tenant_to_proto(tenant: &Tenant) -> pb::Tenant {
    pb::Tenant {
        id: tenant.id.0,
        name: tenant.name.clone(),
        quota: Some(resources_to_proto(&tenant.quota)),
        used: Some(resources_to_proto(&tenant.used)),
        may_use_high_priority: tenant.may_use_high_priority,
        created_at_ms: tenant.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::Resources;
    use tonic::Code;

    #[test]
    fn tenant_requests_become_commands() {
        let quota = Resources {
            cpu_millicores: 8_000,
            accelerators: 2,
            ..Resources::ZERO
        };
        let request = pb::CreateTenantRequest {
            name: "team-a".into(),
            quota: Some(resources_to_proto(&quota)),
            may_use_high_priority: true,
            max_active_jobs: 0,
        };
        assert_eq!(
            command_from_create_tenant(&request).unwrap(),
            Command::TenantCreate {
                name: "team-a".into(),
                quota,
                may_use_high_priority: true,
                max_active_jobs: None,
            }
        );
        let too_many = pb::CreateTenantRequest {
            max_active_jobs: MAX_ACTIVE_JOBS as u64 + 1,
            ..request.clone()
        };
        assert_eq!(
            command_from_create_tenant(&too_many).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let oversize = pb::CreateTenantRequest {
            name: "a".repeat(MAX_NAME_BYTES + 1),
            ..Default::default()
        };
        assert_eq!(
            command_from_create_tenant(&oversize).unwrap_err().code(),
            Code::InvalidArgument
        );
        let unset = pb::SetTenantQuotaRequest::default();
        assert!(command_from_set_tenant_quota(&unset)
            .unwrap_err()
            .message()
            .starts_with("invalid tenant:"));
        assert_eq!(
            command_from_delete_tenant(&pb::DeleteTenantRequest { tenant: 3 }).unwrap(),
            Command::TenantDelete {
                tenant: TenantId(3)
            }
        );
    }

    #[test]
    fn token_scopes_follow_role_tenant_and_caller() {
        let request = |tenant: u64, role: pb::TokenRole| pb::CreateTokenRequest {
            name: "ops".into(),
            tenant,
            role: role as i32,
            ..Default::default()
        };
        let scope =
            |request: &pb::CreateTokenRequest, caller: &Principal| match command_from_create_token(
                request,
                "abc".into(),
                caller,
            ) {
                Ok(Command::TokenCreate { scope, .. }) => Ok(scope),
                Ok(other) => panic!("{other:?}"),
                Err(status) => Err(status.code()),
            };
        let admin = Principal::PlatformAdmin;
        assert_eq!(
            scope(&request(0, pb::TokenRole::Unspecified), &admin),
            Ok(TokenScope::PlatformAdmin)
        );
        assert_eq!(
            scope(&request(7, pb::TokenRole::Unspecified), &admin),
            Ok(TokenScope::Tenant {
                tenant: TenantId(7),
                role: TenantRole::Operator
            })
        );
        assert_eq!(
            scope(
                &request(0, pb::TokenRole::Viewer),
                &Principal::TenantAdmin(TenantId(3))
            ),
            Ok(TokenScope::Tenant {
                tenant: TenantId(3),
                role: TenantRole::Viewer
            })
        );
        assert_eq!(
            scope(&request(0, pb::TokenRole::NodeBootstrap), &admin),
            Ok(TokenScope::Bootstrap { uses_left: 1 })
        );
        for refused in [
            request(0, pb::TokenRole::Viewer),
            request(7, pb::TokenRole::PlatformAuditor),
            request(0, pb::TokenRole::Node),
            pb::CreateTokenRequest {
                role: 99,
                ..request(0, pb::TokenRole::Unspecified)
            },
            pb::CreateTokenRequest {
                ttl_seconds: u64::MAX,
                ..request(0, pb::TokenRole::Unspecified)
            },
        ] {
            assert_eq!(scope(&refused, &admin), Err(Code::InvalidArgument));
        }
    }

    #[test]
    fn tenant_to_proto_copies_every_field() {
        let tenant = Tenant {
            id: TenantId(2),
            name: "team-b".into(),
            quota: Resources {
                memory_mib: 10,
                ..Resources::ZERO
            },
            used: Resources {
                memory_mib: 4,
                ..Resources::ZERO
            },
            may_use_high_priority: false,
            created_at_ms: 99,
            max_active_jobs: None,
        };
        let proto = tenant_to_proto(&tenant);
        assert_eq!(proto.id, 2);
        assert_eq!(proto.name, "team-b");
        assert_eq!(resources_from_proto(proto.quota.as_ref()), tenant.quota);
        assert_eq!(resources_from_proto(proto.used.as_ref()), tenant.used);
        assert_eq!(proto.created_at_ms, 99);
    }
}
