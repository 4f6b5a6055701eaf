//! Tenants and tokens: the platform admin's requests as commands, and `Tenant` as the
//! API shows it.

use super::bounds::bounded_text;
use super::ids::{optional_id, required_id};
use super::resources::{resources_from_proto, resources_to_proto};
use corral_model::limits::{MAX_NAME_BYTES, MAX_TOKEN_HASH_BYTES};
use corral_model::{Command, Tenant, TenantId};
use corral_wire::pb;
use tonic::Status;

/// A missing quota is the zero quota.
pub fn command_from_create_tenant(request: &pb::CreateTenantRequest) -> Result<Command, Status> {
    Ok(Command::TenantCreate {
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
        quota: resources_from_proto(request.quota.as_ref()),
        may_use_high_priority: request.may_use_high_priority,
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
/// secret itself never enters the log. Tenant 0 asks for a platform admin token.
pub fn command_from_create_token(
    request: &pb::CreateTokenRequest,
    hash: String,
) -> Result<Command, Status> {
    let name = bounded_text("name", &request.name, MAX_NAME_BYTES)?;
    // The hash comes from the server, not the caller; still keep the log bounded.
    super::bounds::check_text("hash", &hash, MAX_TOKEN_HASH_BYTES)?;
    Ok(Command::TokenCreate {
        name,
        hash,
        tenant: optional_id(request.tenant, TenantId),
    })
}

pub fn command_from_revoke_token(request: &pb::RevokeTokenRequest) -> Result<Command, Status> {
    Ok(Command::TokenRevoke {
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
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
        };
        assert_eq!(
            command_from_create_tenant(&request).unwrap(),
            Command::TenantCreate {
                name: "team-a".into(),
                quota,
                may_use_high_priority: true
            }
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
    fn token_of_tenant_zero_is_an_admin_token() {
        let request = pb::CreateTokenRequest {
            name: "ops".into(),
            tenant: 0,
        };
        assert_eq!(
            command_from_create_token(&request, "abc".into()).unwrap(),
            Command::TokenCreate {
                name: "ops".into(),
                hash: "abc".into(),
                tenant: None
            }
        );
        let tenant_token = pb::CreateTokenRequest {
            name: "ci".into(),
            tenant: 7,
        };
        assert!(matches!(
            command_from_create_token(&tenant_token, "abc".into()).unwrap(),
            Command::TokenCreate {
                tenant: Some(TenantId(7)),
                ..
            }
        ));
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
        };
        let proto = tenant_to_proto(&tenant);
        assert_eq!(proto.id, 2);
        assert_eq!(proto.name, "team-b");
        assert_eq!(resources_from_proto(proto.quota.as_ref()), tenant.quota);
        assert_eq!(resources_from_proto(proto.used.as_ref()), tenant.used);
        assert_eq!(proto.created_at_ms, 99);
    }
}
