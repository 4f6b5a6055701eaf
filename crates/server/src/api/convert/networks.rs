//! Tenant networks: create and delete requests as commands, `Network` as the API shows
//! it (CIDR as text, the number of addresses handed out).

use super::bounds::{bounded_text, check_count, check_text};
use super::ids::required_id;
use super::status::{invalid_argument, rejection_to_status};
use corral_model::limits::{MAX_NAME_BYTES, MAX_STORAGE_ENDPOINTS, MAX_STORAGE_ENDPOINT_BYTES};
use corral_model::{Cidr, Command, Network, NetworkId, Principal, TenantId};
use corral_wire::pb;
use tonic::Status;

/// The longest CIDR text, `255.255.255.255/32`.
const MAX_CIDR_BYTES: usize = 18;

/// Tenant 0 means the calling tenant; the platform admin must name the tenant. The CIDR
/// is parsed here for an early, precise error; the state machine checks its ranges.
pub fn command_from_create_network(
    request: &pb::CreateNetworkRequest,
    principal: &Principal,
) -> Result<Command, Status> {
    let tenant = match (request.tenant, principal.tenant()) {
        (0, Some(own)) => own,
        (0, None) => {
            return Err(invalid_argument(
                "tenant",
                "name the tenant that owns the network",
            ))
        }
        (tenant, _) => TenantId(tenant),
    };
    check_text("cidr", &request.cidr, MAX_CIDR_BYTES)?;
    Cidr::parse(&request.cidr).map_err(|rejection| rejection_to_status(&rejection))?;
    Ok(Command::NetworkCreate {
        tenant,
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
        cidr: request.cidr.clone(),
    })
}

pub fn command_from_delete_network(request: &pb::DeleteNetworkRequest) -> Result<Command, Status> {
    Ok(Command::NetworkDelete {
        network: required_id("network", request.network, NetworkId)?,
    })
}

/// Bounds are checked here for an early error; the state machine checks the text.
pub fn command_from_set_network_storage(
    request: &pb::SetNetworkStorageRequest,
) -> Result<Command, Status> {
    check_count("endpoints", request.endpoints.len(), MAX_STORAGE_ENDPOINTS)?;
    let endpoints = request
        .endpoints
        .iter()
        .map(|endpoint| bounded_text("endpoints", endpoint, MAX_STORAGE_ENDPOINT_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command::NetworkSetStorage {
        network: required_id("network", request.network, NetworkId)?,
        endpoints,
    })
}

pub fn network_to_proto(network: &Network) -> pb::Network {
    pb::Network {
        id: network.id.0,
        tenant: network.tenant.0,
        name: network.name.clone(),
        cidr: network.cidr.to_string(),
        addresses_in_use: u32::try_from(network.addresses.len()).unwrap_or(u32::MAX),
        storage_endpoints: network.storage_endpoints.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::NodeId;
    use std::collections::BTreeMap;
    use tonic::Code;

    fn request(tenant: u64, cidr: &str) -> pb::CreateNetworkRequest {
        pb::CreateNetworkRequest {
            tenant,
            name: "net-a".into(),
            cidr: cidr.into(),
        }
    }

    #[test]
    fn tenant_zero_is_the_caller() {
        let tenant = Principal::TenantUser(TenantId(4));
        assert_eq!(
            command_from_create_network(&request(0, "192.168.0.0/24"), &tenant).unwrap(),
            Command::NetworkCreate {
                tenant: TenantId(4),
                name: "net-a".into(),
                cidr: "192.168.0.0/24".into()
            }
        );
        let admin = Principal::PlatformAdmin;
        assert!(
            command_from_create_network(&request(0, "192.168.0.0/24"), &admin)
                .unwrap_err()
                .message()
                .starts_with("invalid tenant:")
        );
        assert!(matches!(
            command_from_create_network(&request(9, "192.168.0.0/24"), &admin).unwrap(),
            Command::NetworkCreate {
                tenant: TenantId(9),
                ..
            }
        ));
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        let admin = Principal::PlatformAdmin;
        for cidr in [
            "",
            "192.168.0.1/24",
            "192.168.0.0",
            "x".repeat(1_000).as_str(),
        ] {
            let status = command_from_create_network(&request(1, cidr), &admin).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(
                status.message().starts_with("invalid cidr:"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn network_to_proto_prints_the_cidr() {
        let network = Network {
            id: NetworkId(3),
            tenant: TenantId(1),
            name: "net-a".into(),
            cidr: Cidr::parse("172.16.4.0/24").unwrap(),
            addresses: BTreeMap::from([(0xAC10_0402, NodeId(1)), (0xAC10_0403, NodeId(2))]),
            created_at_ms: 5,
            storage_endpoints: vec!["sfs-turbo.example:2049".into()],
        };
        let proto = network_to_proto(&network);
        assert_eq!(proto.storage_endpoints, ["sfs-turbo.example:2049"]);
        assert_eq!(proto.cidr, "172.16.4.0/24");
        assert_eq!(proto.addresses_in_use, 2);
        assert_eq!((proto.id, proto.tenant), (3, 1));
    }
}
