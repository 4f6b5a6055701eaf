//! Queues inside a pool: create, update and delete requests as commands, and a queue
//! with its standing as the API shows it.

use super::bounds::{bounded_text, check_count};
use super::ids::required_id;
use super::resources::{resources_from_proto, resources_to_proto};
use corral_model::limits::{MAX_MEMBERS_PER_QUEUE, MAX_NAME_BYTES};
use corral_model::{Command, PoolId, QueueSpec, TenantId};
use corral_state::QueueView;
use corral_wire::pb;
use tonic::Status;

/// Bounds are checked here for an early error; the state machine checks the rest.
pub fn queue_spec_from_proto(spec: &pb::QueueSpec) -> Result<QueueSpec, Status> {
    check_count("members", spec.members.len(), MAX_MEMBERS_PER_QUEUE)?;
    Ok(QueueSpec {
        pool: required_id("pool", spec.pool, PoolId)?,
        name: bounded_text("name", &spec.name, MAX_NAME_BYTES)?,
        guarantee: resources_from_proto(spec.guarantee.as_ref()),
        limit: resources_from_proto(spec.limit.as_ref()),
        weight: spec.weight,
        members: spec
            .members
            .iter()
            .map(|member| TenantId(*member))
            .collect(),
        default: spec.is_default,
    })
}

pub fn command_from_create_queue(spec: &pb::QueueSpec) -> Result<Command, Status> {
    Ok(Command::QueueCreate(queue_spec_from_proto(spec)?))
}

pub fn command_from_update_queue(spec: &pb::QueueSpec) -> Result<Command, Status> {
    Ok(Command::QueueUpdate(queue_spec_from_proto(spec)?))
}

pub fn command_from_delete_queue(request: &pb::DeleteQueueRequest) -> Result<Command, Status> {
    Ok(Command::QueueDelete {
        pool: required_id("pool", request.pool, PoolId)?,
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
    })
}

pub fn queue_view_to_proto(view: &QueueView) -> pb::Queue {
    let queue = &view.queue;
    pb::Queue {
        spec: Some(pb::QueueSpec {
            pool: queue.pool.0,
            name: queue.name.clone(),
            guarantee: Some(resources_to_proto(&queue.guarantee)),
            limit: Some(resources_to_proto(&queue.limit)),
            weight: queue.weight,
            members: queue.members.iter().map(|member| member.0).collect(),
            is_default: queue.default,
        }),
        used: Some(resources_to_proto(&queue.used)),
        borrowed: Some(resources_to_proto(&view.borrowed)),
        lent: Some(resources_to_proto(&view.lent)),
        pending_jobs: view.pending_jobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_spec_needs_a_pool_and_bounded_members() {
        let mut spec = pb::QueueSpec {
            pool: 0,
            name: "team-a".to_string(),
            weight: 1,
            ..Default::default()
        };
        assert_eq!(
            queue_spec_from_proto(&spec).unwrap_err().code(),
            Code::InvalidArgument
        );
        spec.pool = 3;
        assert_eq!(queue_spec_from_proto(&spec).unwrap().pool, PoolId(3));
        spec.members = (1..=(MAX_MEMBERS_PER_QUEUE as u64 + 1)).collect();
        assert!(queue_spec_from_proto(&spec).is_err());
    }
}
