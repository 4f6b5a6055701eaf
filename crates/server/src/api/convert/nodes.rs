//! Nodes: registration, drain, cordon, deletion lock, taints, labels and delete
//! requests as commands; `Node` as the API shows it (status name, dotted IP address,
//! number of replicas on it).

use super::bounds::{bounded_map, bounded_text, check_count, optional_text};
use super::ids::{optional_id, required_id};
use super::names::{
    node_status_name, optional_node_status, taint_effect_from_name, taint_effect_name,
    upgrade_mode_name,
};
use super::resources::resources_to_proto;
use corral_model::command::NodeRegister;
use corral_model::limits::{
    MAX_DRIVER_VERSION_BYTES, MAX_LABELS_PER_NODE, MAX_LABEL_BYTES, MAX_NAME_BYTES,
    MAX_TAINTS_PER_NODE,
};
use corral_model::network::format_ipv4;
use corral_model::{Command, Node, NodeId, PoolId, Taint};
use corral_state::NodeFilter;
use corral_wire::pb;
use std::collections::BTreeMap;
use tonic::Status;

/// Empty driver versions are `None` (the node runs no such driver).
pub fn node_register_from_proto(request: &pb::RegisterNodeRequest) -> Result<NodeRegister, Status> {
    Ok(NodeRegister {
        name: bounded_text("name", &request.name, MAX_NAME_BYTES)?,
        flavor: bounded_text("flavor", &request.flavor, MAX_NAME_BYTES)?,
        zone: bounded_text("zone", &request.zone, MAX_NAME_BYTES)?,
        labels: labels_from_proto(&request.labels)?,
        taints: taints_from_proto(&request.taints)?,
        gpu_driver_version: optional_text(
            "gpu_driver_version",
            &request.gpu_driver_version,
            MAX_DRIVER_VERSION_BYTES,
        )?,
        npu_driver_version: optional_text(
            "npu_driver_version",
            &request.npu_driver_version,
            MAX_DRIVER_VERSION_BYTES,
        )?,
        agent_address: None,
        // Only an agent's registration installs a credential (`AgentService`), and
        // says how it isolates replicas.
        credential_hash: None,
        isolation: None,
    })
}

pub fn command_from_set_node_standby(
    request: &pb::SetNodeStandbyRequest,
) -> Result<Command, Status> {
    Ok(Command::NodeSetStandby {
        node: required_id("node", request.node, NodeId)?,
        standby: request.standby,
    })
}

pub fn command_from_register_node(request: &pb::RegisterNodeRequest) -> Result<Command, Status> {
    node_register_from_proto(request).map(Command::NodeRegister)
}

pub fn labels_from_proto(
    labels: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    bounded_map(
        "labels",
        labels,
        MAX_LABELS_PER_NODE,
        MAX_LABEL_BYTES,
        MAX_LABEL_BYTES,
    )
}

pub fn taints_from_proto(taints: &[pb::Taint]) -> Result<Vec<Taint>, Status> {
    check_count("taints", taints.len(), MAX_TAINTS_PER_NODE)?;
    taints
        .iter()
        .enumerate()
        .map(|(index, taint)| {
            Ok(Taint {
                key: bounded_text(&format!("taints[{index}].key"), &taint.key, MAX_LABEL_BYTES)?,
                value: bounded_text(
                    &format!("taints[{index}].value"),
                    &taint.value,
                    MAX_LABEL_BYTES,
                )?,
                effect: taint_effect_from_name(&format!("taints[{index}].effect"), &taint.effect)?,
            })
        })
        .collect()
}

pub fn taint_to_proto(taint: &Taint) -> pb::Taint {
    pb::Taint {
        key: taint.key.clone(),
        value: taint.value.clone(),
        effect: taint_effect_name(taint.effect).to_string(),
    }
}

/// A deadline of 0 drains without evicting running work.
pub fn command_from_drain_node(request: &pb::DrainNodeRequest) -> Result<Command, Status> {
    Ok(Command::NodeDrain {
        node: required_id("node", request.node, NodeId)?,
        deadline_ms: (request.deadline_ms != 0).then_some(request.deadline_ms),
    })
}

pub fn command_from_cordon_node(request: &pb::NodeRef) -> Result<Command, Status> {
    Ok(Command::NodeCordon {
        node: required_id("node", request.node, NodeId)?,
    })
}

pub fn command_from_uncordon_node(request: &pb::NodeRef) -> Result<Command, Status> {
    Ok(Command::NodeUncordon {
        node: required_id("node", request.node, NodeId)?,
    })
}

pub fn command_from_lock_node(request: &pb::NodeRef) -> Result<Command, Status> {
    Ok(Command::NodeSetDeletionLock {
        node: required_id("node", request.node, NodeId)?,
        locked: true,
    })
}

pub fn command_from_unlock_node(request: &pb::NodeRef) -> Result<Command, Status> {
    Ok(Command::NodeSetDeletionLock {
        node: required_id("node", request.node, NodeId)?,
        locked: false,
    })
}

pub fn command_from_delete_node(request: &pb::NodeRef) -> Result<Command, Status> {
    Ok(Command::NodeDelete {
        node: required_id("node", request.node, NodeId)?,
    })
}

pub fn command_from_set_node_taints(request: &pb::SetNodeTaintsRequest) -> Result<Command, Status> {
    Ok(Command::NodeSetTaints {
        node: required_id("node", request.node, NodeId)?,
        taints: taints_from_proto(&request.taints)?,
    })
}

pub fn command_from_set_node_labels(request: &pb::SetNodeLabelsRequest) -> Result<Command, Status> {
    Ok(Command::NodeSetLabels {
        node: required_id("node", request.node, NodeId)?,
        labels: labels_from_proto(&request.labels)?,
    })
}

/// Pool 0 and an empty status are no filter.
pub fn node_filter_from_proto(request: &pb::ListNodesRequest) -> Result<NodeFilter, Status> {
    Ok(NodeFilter {
        pool: optional_id(request.pool, PoolId),
        status: optional_node_status(&request.status)?,
        free_only: request.free_only,
    })
}

pub fn node_to_proto(node: &Node) -> pb::Node {
    pb::Node {
        id: node.id.0,
        name: node.name.clone(),
        flavor: node.flavor.clone(),
        zone: node.zone.clone(),
        capacity: Some(resources_to_proto(&node.capacity)),
        allocated: Some(resources_to_proto(&node.allocated)),
        accelerator_type: node.accelerator_type.clone().unwrap_or_default(),
        labels: node.labels.clone(),
        taints: node.taints.iter().map(taint_to_proto).collect(),
        gpu_driver_version: node.gpu_driver_version.clone().unwrap_or_default(),
        npu_driver_version: node.npu_driver_version.clone().unwrap_or_default(),
        deletion_locked: node.deletion_locked,
        status: node_status_name(node.status).to_string(),
        schedulable: node.schedulable,
        drain_deadline_ms: node.drain_deadline_ms.unwrap_or(0),
        pool: node.pool.map_or(0, |pool| pool.0),
        ip_address: node.ip_address.map(format_ipv4).unwrap_or_default(),
        replicas: u32::try_from(node.allocations.len()).unwrap_or(u32::MAX),
        standby: node.standby,
        upgrading: node
            .upgrading
            .map(|upgrade| upgrade_mode_name(upgrade.mode).to_string())
            .unwrap_or_default(),
        isolation: node
            .isolation
            .map(|isolation| isolation.label().to_string())
            .unwrap_or_default(),
        upgrade_failure: node
            .upgrade_failure
            .as_ref()
            .map(|failure| {
                format!(
                    "attempt {}{}: {}",
                    failure.attempt,
                    if failure.final_attempt { ", final" } else { "" },
                    failure.output_tail
                )
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::node::NodeAllocation;
    use corral_model::{JobId, NodeStatus, Resources, TaintEffect};
    use tonic::Code;

    fn taint(effect: &str) -> pb::Taint {
        pb::Taint {
            key: "gpu".into(),
            value: "reserved".into(),
            effect: effect.into(),
        }
    }

    #[test]
    fn taints_both_ways() {
        let taints = taints_from_proto(&[taint("NoSchedule"), taint("noexecute")]).unwrap();
        assert_eq!(taints[0].effect, TaintEffect::NoSchedule);
        assert_eq!(taints[1].effect, TaintEffect::NoExecute);
        assert_eq!(taint_to_proto(&taints[1]), taint("NoExecute"));
        let status = taints_from_proto(&[taint("NoSchedule"), taint("Never")]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid taints[1].effect:"),
            "{}",
            status.message()
        );
        let too_many = vec![taint("NoSchedule"); MAX_TAINTS_PER_NODE + 1];
        assert!(taints_from_proto(&too_many)
            .unwrap_err()
            .message()
            .starts_with("invalid taints:"));
    }

    #[test]
    fn registration_bounds_labels() {
        let labels: BTreeMap<String, String> = (0..=MAX_LABELS_PER_NODE)
            .map(|index| (format!("key-{index}"), "v".to_string()))
            .collect();
        let request = pb::RegisterNodeRequest {
            name: "host-1".into(),
            flavor: "cpu-16".into(),
            zone: "zone-a".into(),
            labels,
            ..Default::default()
        };
        assert!(node_register_from_proto(&request)
            .unwrap_err()
            .message()
            .starts_with("invalid labels:"));
        let fine = pb::RegisterNodeRequest {
            labels: BTreeMap::from([("rack".into(), "r1".into())]),
            gpu_driver_version: "535.104".into(),
            ..request
        };
        let register = node_register_from_proto(&fine).unwrap();
        assert_eq!(register.gpu_driver_version.as_deref(), Some("535.104"));
        assert_eq!(register.npu_driver_version, None);
        assert_eq!(register.labels.len(), 1);
    }

    #[test]
    fn node_commands() {
        assert_eq!(
            command_from_drain_node(&pb::DrainNodeRequest {
                node: 4,
                deadline_ms: 0
            })
            .unwrap(),
            Command::NodeDrain {
                node: NodeId(4),
                deadline_ms: None
            }
        );
        assert_eq!(
            command_from_lock_node(&pb::NodeRef { node: 4 }).unwrap(),
            Command::NodeSetDeletionLock {
                node: NodeId(4),
                locked: true
            }
        );
        assert_eq!(
            command_from_unlock_node(&pb::NodeRef { node: 4 }).unwrap(),
            Command::NodeSetDeletionLock {
                node: NodeId(4),
                locked: false
            }
        );
        assert!(command_from_cordon_node(&pb::NodeRef { node: 0 })
            .unwrap_err()
            .message()
            .starts_with("invalid node:"));
    }

    #[test]
    fn node_filters() {
        let request = pb::ListNodesRequest {
            pool: 2,
            status: "available".into(),
            free_only: true,
            ..Default::default()
        };
        assert_eq!(
            node_filter_from_proto(&request).unwrap(),
            NodeFilter {
                pool: Some(PoolId(2)),
                status: Some(NodeStatus::Available),
                free_only: true
            }
        );
        let bad = pb::ListNodesRequest {
            status: "gone".into(),
            ..Default::default()
        };
        assert!(node_filter_from_proto(&bad).is_err());
    }

    #[test]
    fn node_to_proto_renders_address_and_replicas() {
        let allocation = NodeAllocation {
            job: JobId(1),
            rank: 0,
            resources: Resources::ZERO,
            device_mask: 0b11,
        };
        let node = Node {
            id: NodeId(7),
            name: "host-7".into(),
            flavor: "gpu-a100-8".into(),
            zone: "zone-a".into(),
            capacity: Resources {
                accelerators: 8,
                ..Resources::ZERO
            },
            accelerator_type: Some("nvidia-a100".into()),
            labels: BTreeMap::new(),
            taints: vec![],
            gpu_driver_version: None,
            npu_driver_version: None,
            deletion_locked: true,
            status: NodeStatus::Checking,
            schedulable: false,
            drain_deadline_ms: Some(50),
            pool: Some(PoolId(3)),
            ip_address: Some(0xC0A8_0102),
            allocated: Resources {
                accelerators: 2,
                ..Resources::ZERO
            },
            devices_in_use: 0b11,
            allocations: vec![allocation, allocation],
            registered_at_ms: 1,
            joined_pool_at_ms: None,
            meter: None,
            standby: true,
            agent_address: Some("10.0.0.7:7400".into()),
            upgrade_failure: None,
            isolation: Some(corral_model::ReplicaIsolation::UsersCgroupV1),
            upgrading: Some(corral_model::node::NodeUpgrade {
                mode: corral_model::pool::UpgradeMode::Forcible,
                was_schedulable: true,
            }),
        };
        let proto = node_to_proto(&node);
        assert!(proto.standby);
        assert_eq!(proto.upgrading, "forcible");
        assert_eq!(proto.ip_address, "192.168.1.2");
        assert_eq!(proto.replicas, 2);
        assert_eq!(proto.status, "Checking");
        assert_eq!((proto.pool, proto.drain_deadline_ms), (3, 50));
        assert_eq!(proto.gpu_driver_version, "");
        let unplaced = Node {
            ip_address: None,
            pool: None,
            ..node
        };
        assert_eq!(node_to_proto(&unplaced).ip_address, "");
        assert_eq!(node_to_proto(&unplaced).pool, 0);
    }
}
