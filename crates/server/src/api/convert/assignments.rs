//! A node's desired state for its agent (`NodeAssignments`), computed from the
//! replicated state: every replica placed on the node, with what its process needs
//! (command, environment, devices, rank 0's address), plus a driver upgrade to run.

use super::names::node_status_name;
use corral_model::node::device_indices;
use corral_model::{Event, Job, JobId, JobState, Node, NodeId};
use corral_state::State;
use corral_wire::pb;
use std::collections::BTreeMap;

/// The desired state of `node_id`; None when the node does not exist.
pub fn node_assignments(state: &State, node_id: NodeId) -> Option<pb::NodeAssignments> {
    let node = state.node(node_id)?;
    let mut replicas = Vec::with_capacity(node.allocations.len());
    // Each job's layout once, however many of its replicas the node runs.
    let mut layouts: BTreeMap<JobId, Layout> = BTreeMap::new();
    for allocation in &node.allocations {
        let Some(job) = state.job(allocation.job) else {
            continue;
        };
        let layout = layouts
            .entry(job.id)
            .or_insert_with(|| Layout::of(state, job));
        replicas.push(replica_assignment(state, job, allocation.rank, layout));
    }
    Some(pb::NodeAssignments {
        node: node_id.0,
        applied_index: state.applied_index(),
        replicas,
        upgrade: upgrade_target(state, node),
        status: node_status_name(node.status).to_string(),
    })
}

/// Where a job's replicas are: its nodes in the order of their lowest rank (the order
/// torchrun numbers nodes in), with how many replicas each runs.
struct Layout {
    /// (node, replicas on it), in node-rank order.
    nodes: Vec<(NodeId, u32)>,
    /// The hostfile lines, "host slots=N", in the same order.
    hosts: Vec<String>,
}

impl Layout {
    fn of(state: &State, job: &Job) -> Layout {
        let mut nodes: Vec<(NodeId, u32)> = Vec::new();
        for node in job.replicas.iter().filter_map(|replica| replica.node) {
            match nodes.iter_mut().find(|(known, _)| *known == node) {
                Some((_, count)) => *count += 1,
                None => nodes.push((node, 1)),
            }
        }
        let hosts = nodes
            .iter()
            .map(|(node, slots)| format!("{} slots={slots}", node_host(state, *node)))
            .collect();
        Layout { nodes, hosts }
    }

    /// (local rank, local world size, node rank) of `rank` of `job`.
    fn position(&self, job: &Job, rank: u32) -> (u32, u32, u32) {
        let Some(node) = job
            .replicas
            .get(rank as usize)
            .and_then(|replica| replica.node)
        else {
            return (0, 0, 0);
        };
        let node_rank = self.nodes.iter().position(|(known, _)| *known == node);
        let local_world_size = node_rank.map_or(0, |index| self.nodes[index].1);
        let local_rank = job.replicas[..rank as usize]
            .iter()
            .filter(|replica| replica.node == Some(node))
            .count();
        (
            u32::try_from(local_rank).unwrap_or(u32::MAX),
            local_world_size,
            node_rank.map_or(0, |index| u32::try_from(index).unwrap_or(u32::MAX)),
        )
    }
}

fn replica_assignment(
    state: &State,
    job: &Job,
    rank: u32,
    layout: &Layout,
) -> pb::ReplicaAssignment {
    let (local_rank, local_world_size, node_rank) = layout.position(job, rank);
    let replica = job.replicas.get(rank as usize);
    let device_mask = replica.map_or(0, |replica| replica.device_mask);
    let placement = replica.map_or(0, |replica| replica.placed_at_index);
    let started =
        replica.is_some_and(|replica| replica.state == corral_model::ReplicaState::Running);
    pb::ReplicaAssignment {
        job: job.id.0,
        rank,
        generation: placement,
        world_size: job.spec.replicas,
        command: job.spec.command.clone(),
        // The one place secret values leave the state: to the node that runs the replica.
        environment: job
            .spec
            .environment
            .iter()
            .chain(&job.spec.secret_environment)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        device_indices: device_indices(device_mask),
        accelerator_kind: accelerator_kind(job).to_string(),
        master_address: master_address(state, job),
        master_host: master_host(state, job),
        max_runtime_ms: job.spec.max_runtime_ms.unwrap_or(0),
        storage_endpoints: storage_endpoints(state, job),
        kind: job.spec.kind.label().to_string(),
        started,
        stop: job.shutdown_target.is_some(),
        tenant: job.tenant.0,
        cpu_millicores: job.spec.per_replica.cpu_millicores,
        memory_mib: job.spec.per_replica.memory_mib,
        local_rank,
        local_world_size,
        node_rank,
        hosts: layout.hosts.clone(),
    }
}

/// "npu" for Ascend accelerators, "gpu" for any other accelerator, "" without.
fn accelerator_kind(job: &Job) -> &'static str {
    if job.spec.per_replica.accelerators == 0 {
        return "";
    }
    match job.spec.accelerator_type.as_deref() {
        Some(kind)
            if kind.to_ascii_lowercase().contains("ascend")
                || kind.to_ascii_lowercase().contains("npu") =>
        {
            "npu"
        }
        _ => "gpu",
    }
}

/// Rank 0's host and the rendezvous port its agent allocated: "" while rank 0 is
/// unplaced or has not reported its start (the other ranks wait for it).
fn master_address(state: &State, job: &Job) -> String {
    let Some(rank_zero) = job.replicas.first() else {
        return String::new();
    };
    // Rank 0 may have finished (released) before the others started: its last node.
    match (
        rank_zero.node.or(rank_zero.last_node),
        rank_zero.master_port,
    ) {
        (Some(node), Some(port)) => format!("{}:{port}", node_host(state, node)),
        _ => String::new(),
    }
}

/// Rank 0's host ("" while it is unplaced).
fn master_host(state: &State, job: &Job) -> String {
    job.replicas
        .first()
        .and_then(|replica| replica.node)
        .map(|node| node_host(state, node))
        .unwrap_or_default()
}

/// The host of a node's agent (where its replicas listen), 127.0.0.1 when unknown.
fn node_host(state: &State, node: NodeId) -> String {
    state
        .node(node)
        .and_then(|node| node.agent_address.as_deref())
        .and_then(|address| address.rsplit_once(':').map(|(host, _)| host.to_string()))
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// The storage endpoints of the network of the job's pool.
fn storage_endpoints(state: &State, job: &Job) -> Vec<String> {
    state
        .pool(job.spec.pool)
        .and_then(|pool| pool.network)
        .and_then(|network| state.network(network))
        .map(|network| network.storage_endpoints.clone())
        .unwrap_or_default()
}

/// Set once the node is isolated for an upgrade and holds no work.
fn upgrade_target(state: &State, node: &Node) -> Option<pb::DriverTarget> {
    if !node.ready_to_upgrade() {
        return None;
    }
    let upgrade = state.pool(node.pool?)?.pending_upgrade.as_ref()?;
    Some(pb::DriverTarget {
        gpu_driver_version: upgrade
            .target
            .gpu_driver_version
            .clone()
            .unwrap_or_default(),
        npu_driver_version: upgrade
            .target
            .npu_driver_version
            .clone()
            .unwrap_or_default(),
    })
}

/// Whether an applied event may change the desired state of `node`. Recomputing a
/// node's view costs a pass over its replicas, so the assignment streams skip batches
/// about other nodes (a busy node hosts hundreds of replicas; most batches are not
/// about it).
pub fn may_change_assignments(event: &Event, node: NodeId) -> bool {
    match event {
        Event::NodeRegistered { node: subject }
        | Event::NodeJoinedPool { node: subject, .. }
        | Event::NodeLeftPool { node: subject, .. }
        | Event::NodeStatusChanged { node: subject, .. }
        | Event::NodeSchedulableChanged { node: subject, .. }
        | Event::NodeDraining { node: subject, .. }
        | Event::NodeDeletionLockChanged { node: subject, .. }
        | Event::NodeAttributesChanged { node: subject }
        | Event::NodeDriverChanged { node: subject }
        | Event::NodeDeleted { node: subject }
        | Event::NodeStandbyChanged { node: subject, .. }
        | Event::NodeUpgradeStarted { node: subject, .. }
        | Event::NodeUpgradeFinished { node: subject, .. }
        | Event::ReplicaAssigned { node: subject, .. }
        | Event::ReplicaReleased { node: subject, .. }
        | Event::ReplicaStarted { node: subject, .. }
        | Event::ReplicaExited { node: subject, .. }
        | Event::RendezvousReady { node: subject, .. }
        | Event::NodeUpgradeFailed { node: subject, .. } => *subject == node,
        Event::NodeStandbyPromoted {
            node: subject,
            replaced,
        } => *subject == node || *replaced == node,
        // A shutdown sets `stop` on the job's replicas wherever they run.
        Event::JobStateChanged { to, .. } => {
            matches!(to, JobState::Terminating | JobState::Stopping)
        }
        Event::NetworkStorageChanged { .. }
        | Event::PoolDriverUpgradeRequested { .. }
        | Event::PoolDriverUpgradeCancelled { .. }
        | Event::JobPriorityChanged { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::JobId;

    #[test]
    fn only_events_about_the_node_or_shutdowns_wake_its_stream() {
        let here = NodeId(1);
        let elsewhere = NodeId(2);
        let assigned = |node| Event::ReplicaAssigned {
            job: JobId(5),
            rank: 0,
            node,
        };
        assert!(may_change_assignments(&assigned(here), here));
        assert!(!may_change_assignments(&assigned(elsewhere), here));
        let changed = |to| Event::JobStateChanged {
            job: JobId(5),
            from: JobState::Running,
            to,
            reason: String::new(),
        };
        assert!(may_change_assignments(
            &changed(JobState::Terminating),
            here
        ));
        assert!(!may_change_assignments(&changed(JobState::Completed), here));
        assert!(may_change_assignments(
            &Event::NodeStandbyPromoted {
                node: elsewhere,
                replaced: here
            },
            here
        ));
        assert!(!may_change_assignments(
            &Event::JobSubmitted {
                job: JobId(6),
                pool: corral_model::PoolId(1)
            },
            here
        ));
    }
}
