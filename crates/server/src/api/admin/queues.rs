//! Queues inside a pool: create, update, delete (the state machine authorizes: the
//! platform admin for the public pool, the owner for a dedicated one) and list with
//! each queue's standing, as the caller may see the pool.

use super::{read_options, AdminService};
use crate::api::convert;
use corral_model::PoolId;
use corral_wire::pb;
use tonic::{Request, Response, Status};

pub(super) async fn create_queue(
    admin: &AdminService,
    request: Request<pb::QueueSpec>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_create_queue)
        .await
}

pub(super) async fn update_queue(
    admin: &AdminService,
    request: Request<pb::QueueSpec>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_update_queue)
        .await
}

pub(super) async fn delete_queue(
    admin: &AdminService,
    request: Request<pb::DeleteQueueRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, convert::command_from_delete_queue)
        .await
}

pub(super) async fn list_queues(
    admin: &AdminService,
    request: Request<pb::ListQueuesRequest>,
) -> Result<Response<pb::ListQueuesResponse>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    let message = request.into_inner();
    let pool = PoolId(super::id_or_invalid("pool", message.pool)?);
    let queues = admin
        .read(&caller, read_options(message.read.as_ref()), |state| {
            state
                .list_queues(&principal, pool)
                .map(|views| views.iter().map(convert::queue_view_to_proto).collect())
                .map_err(|error| convert::query_error_to_status(&error))
        })
        .await??;
    Ok(Response::new(pb::ListQueuesResponse { queues }))
}
