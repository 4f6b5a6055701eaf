//! The cluster itself: its status, its membership, snapshots on demand.

use super::{require_admin, AdminService};
use corral_wire::pb;
use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};

fn require_leader(admin: &AdminService) -> Result<(), Status> {
    crate::replication::proposer::leader_only(&admin.raft, "cluster changes are made on the leader")
}

pub(super) async fn cluster_status(
    admin: &AdminService,
    request: Request<pb::ClusterStatusRequest>,
) -> Result<Response<pb::ClusterStatus>, Status> {
    let caller = admin.caller(&request).await?;
    let with_digest = request.get_ref().with_digest;
    if with_digest {
        // Computing it holds this replica's state for a second at a million jobs.
        crate::api::auth::require_platform_reader(&caller.principal)?;
    }
    let metrics = admin.raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| pb::Member {
            id: *id,
            address: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let leader_address = metrics
        .current_leader
        .and_then(|leader| membership.get_node(&leader).map(|node| node.addr.clone()))
        .unwrap_or_default();
    // Only on request: it encodes the whole state, and applies wait meanwhile.
    let (digest, objects_digest) = if with_digest {
        (
            admin.state_machine.digest_hex().await,
            admin.state_machine.objects_digest_hex().await,
        )
    } else {
        (String::new(), String::new())
    };
    Ok(Response::new(pb::ClusterStatus {
        leader: metrics.current_leader.unwrap_or(0),
        leader_address,
        term: metrics.current_term,
        last_applied: metrics.last_applied.map_or(0, |log_id| log_id.index),
        committed: metrics.cluster_committed.map_or(0, |log_id| log_id.index),
        members,
        this_replica: admin.this_replica,
        digest,
        objects_digest,
        snapshot_index: metrics.snapshot.map_or(0, |log_id| log_id.index),
        healthy: admin.proposer.health().cannot_serve().is_none(),
        problems: admin.proposer.health().problems(),
        clock_offset_ms: admin.proposer.health().clock().own_offset_ms().unwrap_or(0),
        alarms: admin.state_machine.read(|state| {
            state
                .alarms()
                .iter()
                .map(|alarm| pb::Alarm {
                    replica: alarm.replica,
                    kind: alarm.kind.name().to_string(),
                    raised_at_ms: alarm.raised_at_ms,
                    detail: alarm.detail.clone(),
                })
                .collect()
        }),
    }))
}

pub(super) async fn add_replica(
    admin: &AdminService,
    request: Request<pb::AddReplicaRequest>,
) -> Result<Response<pb::Ack>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    require_admin(&principal)?;
    require_leader(admin)?;
    let message = request.into_inner();
    let id = super::id_or_invalid("id", message.id)?;
    if message.address.is_empty() || message.address.len() > 256 {
        return Err(Status::invalid_argument("address must be host:port"));
    }
    // A learner first, so it catches up (by snapshot if needed) before it votes.
    admin
        .raft
        .add_learner(
            id,
            BasicNode {
                addr: message.address,
            },
            true,
        )
        .await
        .map_err(|error| Status::failed_precondition(format!("adding learner {id}: {error}")))?;
    let response = admin
        .raft
        .change_membership(
            openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            false,
        )
        .await
        .map_err(|error| {
            Status::failed_precondition(format!("promoting {id} to voter: {error}"))
        })?;
    Ok(super::ack(response.log_id.index))
}

pub(super) async fn remove_replica(
    admin: &AdminService,
    request: Request<pb::RemoveReplicaRequest>,
) -> Result<Response<pb::Ack>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    require_admin(&principal)?;
    require_leader(admin)?;
    let id = super::id_or_invalid("id", request.get_ref().id)?;
    let response = admin
        .raft
        .change_membership(
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            false,
        )
        .await
        .map_err(|error| Status::failed_precondition(format!("removing {id}: {error}")))?;
    Ok(super::ack(response.log_id.index))
}

pub(super) async fn disarm_alarm(
    admin: &AdminService,
    request: Request<pb::DisarmAlarmRequest>,
) -> Result<Response<pb::Ack>, Status> {
    admin
        .command_ack(request, |message| {
            Ok(corral_model::Command::AlarmDisarm {
                replica: (message.replica != 0).then_some(message.replica),
            })
        })
        .await
}

pub(super) async fn trigger_snapshot(
    admin: &AdminService,
    request: Request<pb::Empty>,
) -> Result<Response<pb::Ack>, Status> {
    let caller = admin.caller(&request).await?;
    let principal = caller.principal.clone();
    require_admin(&principal)?;
    admin
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|error| Status::internal(error.to_string()))?;
    let applied = admin
        .raft
        .metrics()
        .borrow_watched()
        .last_applied
        .map_or(0, |log_id| log_id.index);
    Ok(super::ack(applied))
}
