//! Which nodes the driver-upgrade loop isolates next. Pure: the leader proposes a
//! `NodeUpgradeBegin` per node returned, and the state machine re-checks each one
//! (pool upgrade under way, node available and not at the target, the batch bound).
//!
//! Policy: at most `batch_size` nodes of a pool are isolated at once (the bound on
//! nodes made unavailable by the upgrade). Secure upgrades take idle nodes first, then
//! the nodes with the fewest replicas, so running work is disturbed as little as
//! possible; forcible upgrades go in node order.

use corral_model::pool::UpgradeMode;
use corral_model::{NodeId, NodeStatus, PoolId};
use corral_state::State;

/// Nodes to isolate now, over every pool with an upgrade under way, in pool order.
pub fn nodes_to_isolate(state: &State) -> Vec<NodeId> {
    let mut chosen = Vec::new();
    for pool in state.pools() {
        if pool.pending_upgrade.is_some() {
            chosen.extend(nodes_to_isolate_in(state, pool.id));
        }
    }
    chosen
}

/// Nodes of one pool to isolate now.
pub fn nodes_to_isolate_in(state: &State, pool_id: PoolId) -> Vec<NodeId> {
    let Some(upgrade) = state
        .pool(pool_id)
        .and_then(|pool| pool.pending_upgrade.as_ref())
    else {
        return Vec::new();
    };
    let isolated = state
        .pool_nodes(pool_id)
        .filter(|node| node.upgrading.is_some())
        .count();
    let room = (upgrade.batch_size as usize).saturating_sub(isolated);
    if room == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<(usize, NodeId)> = state
        .pool_nodes(pool_id)
        .filter(|node| {
            node.upgrading.is_none()
                && node.status == NodeStatus::Available
                && !upgrade.target.is_run_by(node)
                && !node.failed_upgrade(upgrade)
        })
        .map(|node| {
            let disturbance = match upgrade.mode {
                UpgradeMode::Secure => node.allocations.len(),
                UpgradeMode::Forcible => 0,
            };
            (disturbance, node.id)
        })
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .take(room)
        .map(|(_, node)| node)
        .collect()
}
