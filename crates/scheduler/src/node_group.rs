//! Node groups: nodes of a pool that look the same to `static_fit` and `prefers_not`.
//!
//! Static fit is evaluated once per (group, job shape) on the group's first node
//! instead of once per (node, job). The key therefore holds every node field those two
//! functions read: pool (one per index), status, schedulable, accelerator type, labels
//! and taints. If `corral_model::fit` ever reads another field, the final `fit` check
//! made on every chosen node (see `round`) still keeps plans correct.

use corral_model::{Node, NodeStatus, Taint};
use std::collections::BTreeMap;

/// The static attributes of a node, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NodeGroupKey<'a> {
    status: NodeStatus,
    schedulable: bool,
    accelerator_type: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    taints: &'a [Taint],
}

impl<'a> NodeGroupKey<'a> {
    pub(crate) fn of(node: &'a Node) -> NodeGroupKey<'a> {
        NodeGroupKey {
            status: node.status,
            schedulable: node.schedulable,
            accelerator_type: node.accelerator_type.as_deref(),
            labels: &node.labels,
            taints: &node.taints,
        }
    }
}
