//! Resource pools: create, scale, delete, job types, driver upgrade and renewal
//! requests as commands; `Pool` as the API shows it, with its node count, queue length
//! and summed capacity and allocation taken from the state.

use super::bounds::{bounded_map, bounded_text, check_count, optional_text};
use super::ids::{optional_id, required_id};
use super::names::{
    billing_from_proto, billing_to_proto, job_types_from_proto, job_types_to_proto,
    optional_pool_status, pool_kind_from_name, pool_kind_name, pool_status_name,
    upgrade_mode_from_proto, upgrade_mode_name, PoolKindName,
};
use super::resources::resources_to_proto;
use super::status::invalid_argument;
use corral_model::command::{PoolCreate, PoolKindRequest};
use corral_model::limits::{
    MAX_DESCRIPTION_BYTES, MAX_DRIVER_VERSION_BYTES, MAX_FLAVORS_PER_POOL, MAX_NAME_BYTES,
    MAX_TAGS_PER_POOL, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES,
};
use corral_model::pool::DriverUpgrade;
use corral_model::{
    Command, DriverSpec, NetworkId, Pool, PoolFlavor, PoolId, Principal, Resources, TenantId,
};
use corral_state::{PoolFilter, State};
use corral_wire::pb;
use tonic::Status;

/// A dedicated pool with owner 0 belongs to the calling tenant (the platform admin must
/// name the owner); the public pool has no owner. Network 0 is none; empty driver
/// versions keep what the nodes run; a missing billing is pay-per-use.
pub fn pool_create_from_proto(
    request: &pb::CreatePoolRequest,
    principal: &Principal,
) -> Result<PoolCreate, Status> {
    let kind = match pool_kind_from_name("kind", &request.kind)? {
        PoolKindName::Public if request.owner != 0 => {
            return Err(invalid_argument("owner", "the public pool has no owner"))
        }
        PoolKindName::Public => PoolKindRequest::Public,
        PoolKindName::Dedicated => PoolKindRequest::Dedicated {
            owner: dedicated_owner(request.owner, principal)?,
        },
    };
    Ok(PoolCreate {
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
        description: bounded_text("description", &request.description, MAX_DESCRIPTION_BYTES)?,
        kind,
        flavors: pool_flavors_from_proto(&request.flavors)?,
        job_types: job_types_from_proto(&request.job_types)?,
        network: optional_id(request.network, NetworkId),
        driver: driver_spec_from_proto("driver", request.driver.as_ref())?,
        billing: billing_from_proto(request.billing.as_ref())?,
        tags: bounded_map(
            "tags",
            &request.tags,
            MAX_TAGS_PER_POOL,
            MAX_TAG_KEY_BYTES,
            MAX_TAG_VALUE_BYTES,
        )?,
    })
}

fn dedicated_owner(owner: u64, principal: &Principal) -> Result<TenantId, Status> {
    match (owner, principal.tenant()) {
        (0, Some(own)) => Ok(own),
        (0, None) => Err(invalid_argument(
            "owner",
            "name the tenant that owns the dedicated pool",
        )),
        (owner, _) => Ok(TenantId(owner)),
    }
}

pub fn command_from_create_pool(
    request: &pb::CreatePoolRequest,
    principal: &Principal,
) -> Result<Command, Status> {
    pool_create_from_proto(request, principal).map(Command::PoolCreate)
}

pub fn pool_flavors_from_proto(flavors: &[pb::PoolFlavor]) -> Result<Vec<PoolFlavor>, Status> {
    check_count("flavors", flavors.len(), MAX_FLAVORS_PER_POOL)?;
    flavors
        .iter()
        .enumerate()
        .map(|(index, flavor)| {
            Ok(PoolFlavor {
                flavor: bounded_text(
                    &format!("flavors[{index}].flavor"),
                    &flavor.flavor,
                    MAX_NAME_BYTES,
                )?,
                zone: bounded_text(
                    &format!("flavors[{index}].zone"),
                    &flavor.zone,
                    MAX_NAME_BYTES,
                )?,
                node_count: flavor.node_count,
            })
        })
        .collect()
}

/// Empty versions (or a missing message) are `None`: keep what the nodes run.
pub fn driver_spec_from_proto(
    field: &str,
    driver: Option<&pb::DriverSpec>,
) -> Result<DriverSpec, Status> {
    let Some(driver) = driver else {
        return Ok(DriverSpec::default());
    };
    Ok(DriverSpec {
        gpu_driver_version: optional_text(
            &format!("{field}.gpu_driver_version"),
            &driver.gpu_driver_version,
            MAX_DRIVER_VERSION_BYTES,
        )?,
        npu_driver_version: optional_text(
            &format!("{field}.npu_driver_version"),
            &driver.npu_driver_version,
            MAX_DRIVER_VERSION_BYTES,
        )?,
    })
}

pub fn driver_spec_to_proto(driver: &DriverSpec) -> pb::DriverSpec {
    pb::DriverSpec {
        gpu_driver_version: driver.gpu_driver_version.clone().unwrap_or_default(),
        npu_driver_version: driver.npu_driver_version.clone().unwrap_or_default(),
    }
}

pub fn command_from_scale_pool(request: &pb::ScalePoolRequest) -> Result<Command, Status> {
    Ok(Command::PoolScale {
        pool: required_id("pool", request.pool, PoolId)?,
        flavor: bounded_text("flavor", &request.flavor, MAX_NAME_BYTES)?,
        zone: bounded_text("zone", &request.zone, MAX_NAME_BYTES)?,
        node_count: request.node_count,
    })
}

pub fn command_from_delete_pool(request: &pb::DeletePoolRequest) -> Result<Command, Status> {
    Ok(Command::PoolDelete {
        pool: required_id("pool", request.pool, PoolId)?,
        force: request.force,
    })
}

pub fn command_from_set_pool_job_types(
    request: &pb::SetPoolJobTypesRequest,
) -> Result<Command, Status> {
    Ok(Command::PoolSetJobTypes {
        pool: required_id("pool", request.pool, PoolId)?,
        job_types: job_types_from_proto(&request.job_types)?,
    })
}

/// An empty mode is `secure`, the mode that interrupts no work.
pub fn command_from_cancel_driver_upgrade(
    request: &pb::CancelDriverUpgradeRequest,
) -> Result<Command, Status> {
    Ok(Command::PoolCancelDriverUpgrade {
        pool: required_id("pool", request.pool, PoolId)?,
    })
}

pub fn command_from_request_driver_upgrade(
    request: &pb::RequestDriverUpgradeRequest,
) -> Result<Command, Status> {
    Ok(Command::PoolRequestDriverUpgrade {
        pool: required_id("pool", request.pool, PoolId)?,
        target: driver_spec_from_proto("target", request.target.as_ref())?,
        mode: upgrade_mode_from_proto(&request.mode)?,
        batch_size: request.batch_size,
    })
}

pub fn command_from_renew_pool(request: &pb::RenewPoolRequest) -> Result<Command, Status> {
    Ok(Command::PoolRenew {
        pool: required_id("pool", request.pool, PoolId)?,
        periods: request.periods,
    })
}

/// Owner 0 and an empty status are no filter.
pub fn pool_filter_from_proto(request: &pb::ListPoolsRequest) -> Result<PoolFilter, Status> {
    Ok(PoolFilter {
        owner: optional_id(request.owner, TenantId),
        status: optional_pool_status(&request.status)?,
    })
}

pub fn pool_to_proto(pool: &Pool, state: &State) -> pb::Pool {
    let mut node_count = 0usize;
    let mut capacity = Resources::ZERO;
    let mut allocated = Resources::ZERO;
    for node in state.pool_nodes(pool.id) {
        node_count += 1;
        capacity = capacity.saturating_add(&node.capacity);
        allocated = allocated.saturating_add(&node.allocated);
    }
    pb::Pool {
        id: pool.id.0,
        name: pool.name.clone(),
        description: pool.description.clone(),
        kind: pool_kind_name(&pool.kind).to_string(),
        owner: pool.owner().map_or(0, |owner| owner.0),
        status: pool_status_name(pool.status).to_string(),
        flavors: pool.flavors.iter().map(pool_flavor_to_proto).collect(),
        job_types: job_types_to_proto(&pool.job_types),
        network: pool.network.map_or(0, |network| network.0),
        driver: Some(driver_spec_to_proto(&pool.driver)),
        billing: Some(billing_to_proto(&pool.billing)),
        paid_until_ms: pool.paid_until_ms.unwrap_or(0),
        tags: pool.tags.clone(),
        pending_upgrade: pool
            .pending_upgrade
            .as_ref()
            .map(pending_upgrade_text)
            .unwrap_or_default(),
        node_count: u32::try_from(node_count).unwrap_or(u32::MAX),
        queued_jobs: u32::try_from(state.queue_length(pool.id)).unwrap_or(u32::MAX),
        capacity: Some(resources_to_proto(&capacity)),
        allocated: Some(resources_to_proto(&allocated)),
        created_at_ms: pool.created_at_ms,
    }
}

fn pool_flavor_to_proto(flavor: &PoolFlavor) -> pb::PoolFlavor {
    pb::PoolFlavor {
        flavor: flavor.flavor.clone(),
        zone: flavor.zone.clone(),
        node_count: flavor.node_count,
    }
}

/// e.g. `secure upgrade to gpu 535.104, batches of 2`.
fn pending_upgrade_text(upgrade: &DriverUpgrade) -> String {
    let targets: Vec<String> = [
        ("gpu", &upgrade.target.gpu_driver_version),
        ("npu", &upgrade.target.npu_driver_version),
    ]
    .into_iter()
    .filter_map(|(kind, version)| version.as_ref().map(|version| format!("{kind} {version}")))
    .collect();
    format!(
        "{} upgrade to {}, batches of {}",
        upgrade_mode_name(upgrade.mode),
        targets.join(" and "),
        upgrade.batch_size
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::pool::UpgradeMode;
    use corral_model::{BillingMode, JobType};
    use std::collections::{BTreeMap, BTreeSet};
    use tonic::Code;

    fn request() -> pb::CreatePoolRequest {
        pb::CreatePoolRequest {
            name: "pool-a".into(),
            description: "training pool".into(),
            kind: "dedicated".into(),
            owner: 0,
            flavors: vec![pb::PoolFlavor {
                flavor: "gpu-a100-8".into(),
                zone: "zone-a".into(),
                node_count: 2,
            }],
            job_types: vec!["training".into()],
            network: 3,
            driver: Some(pb::DriverSpec {
                gpu_driver_version: "535.104".into(),
                npu_driver_version: String::new(),
            }),
            billing: None,
            tags: BTreeMap::from([("team".into(), "vision".into())]),
        }
    }

    #[test]
    fn tenant_creating_a_dedicated_pool_owns_it() {
        let principal = Principal::TenantUser(TenantId(5));
        let create = pool_create_from_proto(&request(), &principal).unwrap();
        assert_eq!(
            create,
            PoolCreate {
                name: "pool-a".into(),
                description: "training pool".into(),
                kind: PoolKindRequest::Dedicated { owner: TenantId(5) },
                flavors: vec![PoolFlavor {
                    flavor: "gpu-a100-8".into(),
                    zone: "zone-a".into(),
                    node_count: 2
                }],
                job_types: BTreeSet::from([JobType::Training]),
                network: Some(NetworkId(3)),
                driver: DriverSpec {
                    gpu_driver_version: Some("535.104".into()),
                    npu_driver_version: None
                },
                billing: BillingMode::PayPerUse,
                tags: BTreeMap::from([("team".into(), "vision".into())]),
            }
        );
    }

    #[test]
    fn owners_of_public_and_admin_created_pools() {
        let admin = Principal::PlatformAdmin;
        assert!(pool_create_from_proto(&request(), &admin)
            .unwrap_err()
            .message()
            .starts_with("invalid owner:"));
        let owned = pb::CreatePoolRequest {
            owner: 8,
            ..request()
        };
        assert_eq!(
            pool_create_from_proto(&owned, &admin).unwrap().kind,
            PoolKindRequest::Dedicated { owner: TenantId(8) }
        );
        let public = pb::CreatePoolRequest {
            kind: "public".into(),
            network: 0,
            driver: None,
            ..request()
        };
        let create = pool_create_from_proto(&public, &admin).unwrap();
        assert_eq!(create.kind, PoolKindRequest::Public);
        assert_eq!(
            (create.network, create.driver),
            (None, DriverSpec::default())
        );
        let public_with_owner = pb::CreatePoolRequest { owner: 8, ..public };
        assert!(pool_create_from_proto(&public_with_owner, &admin).is_err());
    }

    #[test]
    fn malformed_pool_requests_name_the_field() {
        let principal = Principal::TenantUser(TenantId(5));
        let cases: Vec<(pb::CreatePoolRequest, &str)> = vec![
            (
                pb::CreatePoolRequest {
                    kind: "shared".into(),
                    ..request()
                },
                "invalid kind:",
            ),
            (
                pb::CreatePoolRequest {
                    flavors: vec![pb::PoolFlavor::default(); MAX_FLAVORS_PER_POOL + 1],
                    ..request()
                },
                "invalid flavors:",
            ),
            (
                pb::CreatePoolRequest {
                    description: "d".repeat(MAX_DESCRIPTION_BYTES + 1),
                    ..request()
                },
                "invalid description:",
            ),
            (
                pb::CreatePoolRequest {
                    tags: (0..=MAX_TAGS_PER_POOL)
                        .map(|index| (format!("key-{index}"), String::new()))
                        .collect(),
                    ..request()
                },
                "invalid tags:",
            ),
            (
                pb::CreatePoolRequest {
                    job_types: vec!["batch".into()],
                    ..request()
                },
                "invalid job_types[0]:",
            ),
            (
                pb::CreatePoolRequest {
                    driver: Some(pb::DriverSpec {
                        gpu_driver_version: "9".repeat(MAX_DRIVER_VERSION_BYTES + 1),
                        npu_driver_version: String::new(),
                    }),
                    ..request()
                },
                "invalid driver.gpu_driver_version:",
            ),
        ];
        for (request, prefix) in cases {
            let status = pool_create_from_proto(&request, &principal).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with(prefix), "{}", status.message());
        }
    }

    #[test]
    fn pool_commands() {
        let upgrade = pb::RequestDriverUpgradeRequest {
            pool: 2,
            target: Some(pb::DriverSpec {
                gpu_driver_version: String::new(),
                npu_driver_version: "24.1".into(),
            }),
            mode: String::new(),
            batch_size: 1,
            batch_percent: 0,
        };
        assert_eq!(
            command_from_request_driver_upgrade(&upgrade).unwrap(),
            Command::PoolRequestDriverUpgrade {
                pool: PoolId(2),
                target: DriverSpec {
                    gpu_driver_version: None,
                    npu_driver_version: Some("24.1".into())
                },
                mode: UpgradeMode::Secure,
                batch_size: 1
            }
        );
        let forcible = pb::RequestDriverUpgradeRequest {
            mode: "forcible".into(),
            ..upgrade.clone()
        };
        assert!(matches!(
            command_from_request_driver_upgrade(&forcible).unwrap(),
            Command::PoolRequestDriverUpgrade {
                mode: UpgradeMode::Forcible,
                ..
            }
        ));
        let unknown = pb::RequestDriverUpgradeRequest {
            mode: "gentle".into(),
            ..upgrade
        };
        assert!(command_from_request_driver_upgrade(&unknown)
            .unwrap_err()
            .message()
            .starts_with("invalid mode:"));
        assert!(command_from_scale_pool(&pb::ScalePoolRequest::default())
            .unwrap_err()
            .message()
            .starts_with("invalid pool:"));
        assert_eq!(
            command_from_renew_pool(&pb::RenewPoolRequest {
                pool: 1,
                periods: 2
            })
            .unwrap(),
            Command::PoolRenew {
                pool: PoolId(1),
                periods: 2
            }
        );
    }

    #[test]
    fn pool_filters() {
        let request = pb::ListPoolsRequest {
            owner: 3,
            status: "frozen".into(),
            ..Default::default()
        };
        assert_eq!(
            pool_filter_from_proto(&request).unwrap(),
            PoolFilter {
                owner: Some(TenantId(3)),
                status: Some(corral_model::PoolStatus::Frozen)
            }
        );
        assert_eq!(
            pool_filter_from_proto(&pb::ListPoolsRequest::default()).unwrap(),
            PoolFilter::default()
        );
        let bad = pb::ListPoolsRequest {
            status: "asleep".into(),
            ..Default::default()
        };
        assert!(pool_filter_from_proto(&bad)
            .unwrap_err()
            .message()
            .starts_with("invalid status:"));
    }

    #[test]
    fn pending_upgrades_read_well() {
        let upgrade = DriverUpgrade {
            previous: DriverSpec::default(),
            target: DriverSpec {
                gpu_driver_version: Some("535.104".into()),
                npu_driver_version: Some("24.1".into()),
            },
            mode: UpgradeMode::Forcible,
            batch_size: 3,
            requested_at_ms: 0,
        };
        assert_eq!(
            pending_upgrade_text(&upgrade),
            "forcible upgrade to gpu 535.104 and npu 24.1, batches of 3"
        );
    }
}
