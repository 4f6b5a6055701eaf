//! Spreading inference replicas: each replica goes to a node holding the fewest
//! replicas of the same service (its earlier replicas included), best fit among those,
//! preferred nodes before PreferNoSchedule ones. Replicas are placed one at a time and
//! a service may be placed partly.

use crate::node_search::best_fit_node;
use crate::placement_class::PlacementClass;
use crate::pool_nodes::{NodeSlot, PoolNodes};
use corral_model::Resources;
use std::collections::BTreeMap;

/// The node for the service's next replica, given how many of its replicas each node
/// already holds; `None` when no node can take one more.
pub(crate) fn next_spread_node(
    nodes: &PoolNodes,
    class: &PlacementClass,
    per_replica: &Resources,
    replicas_on_node: &BTreeMap<NodeSlot, u32>,
    usable: impl Fn(NodeSlot) -> Option<Resources>,
) -> Option<NodeSlot> {
    let most_on_one_node = replicas_on_node.values().copied().max().unwrap_or(0);
    let fallback_groups = &class.all[class.preferred.len()..];
    for level in 0..=most_on_one_node {
        let at_most_level = |slot: NodeSlot| {
            if replicas_on_node.get(&slot).copied().unwrap_or(0) > level {
                None
            } else {
                usable(slot)
            }
        };
        for groups in [class.preferred.as_slice(), fallback_groups] {
            if groups.is_empty() {
                continue;
            }
            if let Some(slot) = best_fit_node(nodes, groups, per_replica, 1, at_most_level) {
                return Some(slot);
            }
        }
    }
    None
}
