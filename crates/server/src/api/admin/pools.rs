//! Pools, the flavor catalogue they draw nodes from, and their driver upgrades.

use super::{page_limit, read_options, AdminService};
use crate::api::convert;
use corral_model::ids::{PoolId, TenantId};
use corral_model::Command;
use corral_state::{Created, PoolFilter};
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn define_flavor(
    admin: &AdminService,
    request: Request<pb::Flavor>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_define_flavor)
        .await
}

pub(super) async fn list_flavors(
    admin: &AdminService,
    request: Request<pb::ListTenantsRequest>,
) -> Result<Response<pb::ListFlavorsResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let stale = read_options(request.get_ref().read.as_ref());
    let flavors = admin
        .read(&caller, stale, |state| {
            state.flavors().map(convert::flavor_to_proto).collect()
        })
        .await?;
    Ok(Response::new(pb::ListFlavorsResponse { flavors }))
}

pub(super) async fn create_pool(
    admin: &AdminService,
    request: Request<pb::CreatePoolRequest>,
) -> Result<Response<pb::Pool>, Status> {
    let written = admin
        .write(request, |principal, message| {
            convert::pool_create_from_proto(message, principal).map(Command::PoolCreate)
        })
        .await?;
    let Created::Pool(pool) = super::created_id(&written.summary)? else {
        return Err(Status::internal("expected a pool"));
    };
    admin.read_back(
        |state| {
            state
                .get_pool(&written.principal, pool)
                .ok()
                .map(|pool| convert::pool_to_proto(pool, state))
        },
        "pool vanished",
    )
}

pub(super) async fn get_pool(
    admin: &AdminService,
    request: Request<pb::GetPoolRequest>,
) -> Result<Response<pb::Pool>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let pool = PoolId(super::id_or_invalid("pool", message.pool)?);
    let found = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .get_pool(&principal, pool)
                .map(|pool| convert::pool_to_proto(pool, state))
                .map_err(|error| convert::query_error_to_status(&error))
        })
        .await??;
    Ok(Response::new(found))
}

pub(super) async fn list_pools(
    admin: &AdminService,
    request: Request<pb::ListPoolsRequest>,
) -> Result<Response<pb::ListPoolsResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let filter = PoolFilter {
        owner: (message.owner != 0).then_some(TenantId(message.owner)),
        status: convert::optional_pool_status(&message.status)?,
    };
    let limit = page_limit(message.page.as_ref());
    let pools = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .list_pools(&principal, &filter, limit)
                .into_iter()
                .map(|pool| convert::pool_to_proto(pool, state))
                .collect()
        })
        .await?;
    Ok(Response::new(pb::ListPoolsResponse { pools }))
}

pub(super) async fn scale_pool(
    admin: &AdminService,
    request: Request<pb::ScalePoolRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_scale_pool)
        .await
}

pub(super) async fn delete_pool(
    admin: &AdminService,
    request: Request<pb::DeletePoolRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_delete_pool)
        .await
}

pub(super) async fn set_pool_job_types(
    admin: &AdminService,
    request: Request<pb::SetPoolJobTypesRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_set_pool_job_types)
        .await
}

/// A batch given as a percentage becomes a node count of the pool as it is now.
pub(super) async fn request_driver_upgrade(
    admin: &AdminService,
    request: Request<pb::RequestDriverUpgradeRequest>,
) -> Result<Response<pb::Ack>, Status> {
    let written = admin
        .write(request, |_, message| {
            let mut message = message.clone();
            if message.batch_percent > 0 {
                if message.batch_size > 0 || message.batch_percent > 100 {
                    return Err(Status::invalid_argument(
                        "give batch_size or batch_percent (1-100), not both",
                    ));
                }
                let node_count = admin
                    .state_machine
                    .read(|state| state.pool_nodes(PoolId(message.pool)).count() as u64);
                // Rounded up, so a small percentage of a small pool still upgrades a node.
                let batch = (node_count * u64::from(message.batch_percent)).div_ceil(100);
                message.batch_size = u32::try_from(batch.max(1)).unwrap_or(u32::MAX);
            }
            convert::command_from_request_driver_upgrade(&message)
        })
        .await?;
    Ok(super::ack(written.index))
}

pub(super) async fn cancel_driver_upgrade(
    admin: &AdminService,
    request: Request<pb::CancelDriverUpgradeRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_cancel_driver_upgrade)
        .await
}

pub(super) async fn renew_pool(
    admin: &AdminService,
    request: Request<pb::RenewPoolRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_renew_pool)
        .await
}
