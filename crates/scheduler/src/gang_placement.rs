//! Placing identical replicas all at once on as few nodes as possible: a training gang,
//! a notebook, or any single replica. Either every replica gets a node or none does.
//!
//! The method: if one node holds every remaining replica, take the best fit among
//! such nodes; otherwise take the roomiest node and repeat. For identical replicas
//! this uses the fewest nodes, and fails only when the nodes together cannot hold the
//! replicas. Preferred nodes are tried alone first; PreferNoSchedule nodes join only
//! when the preferred ones cannot hold the whole gang.

use crate::node_search::{best_fit_node, roomiest_node};
use crate::placement_class::PlacementClass;
use crate::pool_nodes::{GroupId, NodeSlot, PoolNodes};
use corral_model::Resources;

/// Replicas per node, or `None` when the replicas cannot all be placed now.
pub(crate) fn plan_gang(
    nodes: &PoolNodes,
    class: &PlacementClass,
    per_replica: &Resources,
    replicas: u32,
    usable: impl Fn(NodeSlot) -> Option<Resources>,
) -> Option<Vec<(NodeSlot, u32)>> {
    plan_on_groups(nodes, &class.preferred, per_replica, replicas, &usable).or_else(|| {
        if class.has_fallback() {
            plan_on_groups(nodes, &class.all, per_replica, replicas, &usable)
        } else {
            None
        }
    })
}

fn plan_on_groups(
    nodes: &PoolNodes,
    groups: &[GroupId],
    per_replica: &Resources,
    replicas: u32,
    usable: &impl Fn(NodeSlot) -> Option<Resources>,
) -> Option<Vec<(NodeSlot, u32)>> {
    if groups.is_empty() || replicas == 0 {
        return None;
    }
    let mut chosen: Vec<(NodeSlot, u32)> = Vec::new();
    let mut remaining = replicas;
    loop {
        let not_chosen = |slot: NodeSlot| {
            if chosen.iter().any(|(taken, _)| *taken == slot) {
                None
            } else {
                usable(slot)
            }
        };
        if let Some(slot) = best_fit_node(nodes, groups, per_replica, remaining, not_chosen) {
            chosen.push((slot, remaining));
            return Some(chosen);
        }
        let (slot, slots) = roomiest_node(nodes, groups, per_replica, not_chosen)?;
        let taken = slots.min(remaining);
        chosen.push((slot, taken));
        remaining -= taken;
        if remaining == 0 {
            return Some(chosen);
        }
    }
}
