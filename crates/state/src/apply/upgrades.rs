//! A node's part in its pool's driver upgrade: the leader's upgrade loop isolates a
//! node (`NodeUpgradeBegin`), the agent runs its upgrade hook once the node holds no
//! work, and its driver report (`NodeDriverReport` with the target versions) ends the
//! isolation. The pool's upgrade ends when every node runs the target.

use super::{require_system, Context, Handled};
use crate::state::State;
use corral_model::ids::{NodeId, PoolId};
use corral_model::node::NodeUpgrade;
use corral_model::pool::UpgradeMode;
use corral_model::{Event, NodeStatus, Rejection};

impl State {
    pub(super) fn node_upgrade_begin(&mut self, context: &mut Context, node_id: NodeId) -> Handled {
        require_system(context.principal)?;
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        let pool_id = node
            .pool
            .ok_or_else(|| Rejection::state("node", node_id, "Free", "upgrade"))?;
        let upgrade = self.pools[&pool_id]
            .pending_upgrade
            .clone()
            .ok_or_else(|| {
                Rejection::state("pool", pool_id, "NotUpgrading", "upgrade a node of")
            })?;
        if node.upgrading.is_some() {
            return Err(Rejection::state("node", node_id, "Upgrading", "upgrade"));
        }
        if node.status != NodeStatus::Available {
            return Err(Rejection::state("node", node_id, node.status, "upgrade"));
        }
        if upgrade.target.is_run_by(node) {
            return Err(Rejection::state("node", node_id, "Upgraded", "upgrade"));
        }
        let upgrading_now = self
            .pool_nodes(pool_id)
            .filter(|node| node.upgrading.is_some())
            .count() as u32;
        if upgrading_now >= upgrade.batch_size {
            return Err(Rejection::state(
                "pool",
                pool_id,
                format!(
                    "{upgrading_now} nodes upgrading (max {})",
                    upgrade.batch_size
                ),
                "isolate one more node of",
            ));
        }
        let tenant = self.pools[&pool_id].owner();
        let node = self.nodes.get_mut(&node_id).expect("checked above");
        node.upgrading = Some(NodeUpgrade {
            mode: upgrade.mode,
            was_schedulable: node.schedulable,
        });
        node.schedulable = false;
        context.emit(
            tenant,
            Event::NodeUpgradeStarted {
                node: node_id,
                pool: pool_id,
            },
        );
        if upgrade.mode == UpgradeMode::Forcible {
            self.evict_node(
                context,
                node_id,
                &format!("forcible driver upgrade of node {node_id}"),
            );
        }
        Ok(None)
    }

    /// After a driver report: end the node's isolation once it runs the target.
    pub(super) fn finish_node_upgrade_if_done(&mut self, context: &mut Context, node_id: NodeId) {
        let node = &self.nodes[&node_id];
        let (Some(upgrading), Some(pool_id)) = (node.upgrading, node.pool) else {
            return;
        };
        let Some(upgrade) = self.pools[&pool_id].pending_upgrade.as_ref() else {
            return;
        };
        if !upgrade.target.is_run_by(node) {
            return;
        }
        let tenant = self.pools[&pool_id].owner();
        let node = self.nodes.get_mut(&node_id).expect("checked above");
        node.upgrading = None;
        node.schedulable = upgrading.was_schedulable && node.drain_deadline_ms.is_none();
        context.emit(
            tenant,
            Event::NodeUpgradeFinished {
                node: node_id,
                pool: pool_id,
            },
        );
    }

    /// A node leaving its pool, or a pool whose upgrade ended, releases the isolation.
    pub(crate) fn clear_node_upgrade(&mut self, node_id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&node_id) {
            if let Some(upgrading) = node.upgrading.take() {
                node.schedulable = upgrading.was_schedulable && node.drain_deadline_ms.is_none();
            }
        }
    }

    /// Clear the isolation of every node of a pool (its upgrade finished or was
    /// replaced).
    pub(crate) fn clear_pool_upgrades(&mut self, pool_id: PoolId) {
        let nodes: Vec<NodeId> = self.pool_nodes(pool_id).map(|node| node.id).collect();
        for node_id in nodes {
            self.clear_node_upgrade(node_id);
        }
    }
}
