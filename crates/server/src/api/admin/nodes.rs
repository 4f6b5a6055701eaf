//! Nodes: registration, queries, the operator's controls, and the usage the leader
//! hears in heartbeats.

use super::{page_limit, read_options, AdminService};
use crate::api::{convert, node_runtime};
use corral_model::ids::{NodeId, PoolId};
use corral_model::Command;
use corral_state::{Created, NodeFilter};
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn register_node(
    admin: &AdminService,
    request: Request<pb::RegisterNodeRequest>,
) -> Result<Response<pb::Node>, Status> {
    let written = admin
        .write(request, |_, message| {
            convert::node_register_from_proto(message).map(Command::NodeRegister)
        })
        .await?;
    let Created::Node(node) = super::created_id(&written.summary)? else {
        return Err(Status::internal("expected a node"));
    };
    admin.read_back(
        |state| state.node(node).map(convert::node_to_proto),
        "node vanished",
    )
}

pub(super) async fn get_node(
    admin: &AdminService,
    request: Request<pb::GetNodeRequest>,
) -> Result<Response<pb::Node>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let node = NodeId(super::id_or_invalid("node", message.node)?);
    let found = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .get_node(&principal, node)
                .map(convert::node_to_proto)
                .map_err(|error| convert::query_error_to_status(&error))
        })
        .await??;
    Ok(Response::new(found))
}

pub(super) async fn list_nodes(
    admin: &AdminService,
    request: Request<pb::ListNodesRequest>,
) -> Result<Response<pb::ListNodesResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let filter = NodeFilter {
        pool: (message.pool != 0).then_some(PoolId(message.pool)),
        status: convert::optional_node_status(&message.status)?,
        free_only: message.free_only,
    };
    let limit = page_limit(message.page.as_ref());
    let nodes = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .list_nodes(&principal, &filter, limit)
                .into_iter()
                .map(convert::node_to_proto)
                .collect()
        })
        .await?;
    Ok(Response::new(pb::ListNodesResponse { nodes }))
}

pub(super) async fn drain_node(
    admin: &AdminService,
    request: Request<pb::DrainNodeRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_drain_node)
        .await
}

pub(super) async fn cordon_node(
    admin: &AdminService,
    request: Request<pb::NodeRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_cordon_node)
        .await
}

pub(super) async fn uncordon_node(
    admin: &AdminService,
    request: Request<pb::NodeRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_uncordon_node)
        .await
}

pub(super) async fn lock_node(
    admin: &AdminService,
    request: Request<pb::NodeRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_lock_node)
        .await
}

pub(super) async fn unlock_node(
    admin: &AdminService,
    request: Request<pb::NodeRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_unlock_node)
        .await
}

pub(super) async fn delete_node(
    admin: &AdminService,
    request: Request<pb::NodeRef>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_delete_node)
        .await
}

pub(super) async fn set_node_taints(
    admin: &AdminService,
    request: Request<pb::SetNodeTaintsRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_set_node_taints)
        .await
}

pub(super) async fn set_node_labels(
    admin: &AdminService,
    request: Request<pb::SetNodeLabelsRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_set_node_labels)
        .await
}

pub(super) async fn set_node_standby(
    admin: &AdminService,
    request: Request<pb::SetNodeStandbyRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_set_node_standby)
        .await
}

pub(super) async fn node_metrics(
    admin: &AdminService,
    request: Request<pb::NodeMetricsRequest>,
) -> Result<Response<pb::NodeMetricsResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    crate::replication::proposer::leader_only(&admin.raft, "node metrics are kept by the leader")?;
    let message = request.into_inner();
    let pool = convert::optional_id(message.pool, PoolId);
    let node = convert::optional_id(message.node, NodeId);
    let metrics = admin
        .state_machine
        .read(|state| node_runtime::node_metrics(state, &admin.liveness, &principal, pool, node))?;
    Ok(Response::new(metrics))
}
