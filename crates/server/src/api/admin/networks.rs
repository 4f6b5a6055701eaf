//! Tenants' networks and their storage endpoints.

use super::{read_options, AdminService};
use crate::api::convert;
use corral_state::Created;
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn create_network(
    admin: &AdminService,
    request: Request<pb::CreateNetworkRequest>,
) -> Result<Response<pb::Network>, Status> {
    let written = admin
        // The bounded converter: a 15 MiB name once entered the log as it came.
        .write(request, |principal, message| {
            convert::command_from_create_network(message, principal)
        })
        .await?;
    let Created::Network(network) = super::created_id(&written.summary)? else {
        return Err(Status::internal("expected a network"));
    };
    admin.read_back(
        |state| state.network(network).map(convert::network_to_proto),
        "network vanished",
    )
}

pub(super) async fn delete_network(
    admin: &AdminService,
    request: Request<pb::DeleteNetworkRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_delete_network)
        .await
}

pub(super) async fn set_network_storage(
    admin: &AdminService,
    request: Request<pb::SetNetworkStorageRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_set_network_storage)
        .await
}

pub(super) async fn list_networks(
    admin: &AdminService,
    request: Request<pb::ListNetworksRequest>,
) -> Result<Response<pb::ListNetworksResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let stale = read_options(request.get_ref().read.as_ref());
    let networks = admin
        .read(&caller, stale, |state| {
            state
                .networks()
                .filter(|network| principal.may_read(network.tenant))
                .map(convert::network_to_proto)
                .collect()
        })
        .await?;
    Ok(Response::new(pb::ListNetworksResponse { networks }))
}
