//! Node groups: nodes of a pool that look the same to `static_fit` and `prefers_not`.
//!
//! Static fit is evaluated once per (group, job shape) on the group's first node
//! instead of once per (node, job). The key therefore holds every node field those two
//! functions read: pool (one per index), status, schedulable, standby, accelerator
//! type, labels and taints. If `corral_model::fit` ever reads another field, the final
//! `fit` check made on every chosen node (see `round`) still keeps plans correct, but a
//! group whose first node fails on that field hides its other nodes from the round:
//! add the field here.

use corral_model::{Node, NodeStatus, Taint};
use std::collections::BTreeMap;

/// The static attributes of a node, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NodeGroupKey<'a> {
    status: NodeStatus,
    schedulable: bool,
    standby: bool,
    accelerator_type: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    taints: &'a [Taint],
}

impl<'a> NodeGroupKey<'a> {
    pub(crate) fn of(node: &'a Node) -> NodeGroupKey<'a> {
        NodeGroupKey {
            status: node.status,
            schedulable: node.schedulable,
            standby: node.standby,
            accelerator_type: node.accelerator_type.as_deref(),
            labels: &node.labels,
            taints: &node.taints,
        }
    }
}
