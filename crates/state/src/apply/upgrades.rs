//! A node's part in its pool's driver upgrade: the leader's upgrade loop isolates a
//! node (`NodeUpgradeBegin`), the agent runs its upgrade hook once the node holds no
//! work, and its driver report (`NodeDriverReport` with the target versions) ends the
//! isolation. A hook that fails is reported (`NodeDriverUpgradeFailed`) on every
//! attempt; after the agent's last attempt the node stays out of scheduling, marked
//! failed, and no longer holds up its pool. The pool's upgrade ends when every node
//! runs the target or has failed it for good; a cancel ends it at once.

use super::{require_node_itself, require_system, Context, Handled};
use crate::state::State;
use corral_model::ids::{NodeId, PoolId};
use corral_model::limits::{MAX_UPGRADE_ATTEMPTS, MAX_UPGRADE_OUTPUT_TAIL_BYTES};
use corral_model::node::{NodeUpgrade, UpgradeFailure};
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
        if node.failed_upgrade(&upgrade) {
            return Err(Rejection::state(
                "node",
                node_id,
                "UpgradeFailed",
                "upgrade",
            ));
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
        // A schedulable node left failed by an earlier upgrade was put back by its
        // operator; a node failed for good stays out of scheduling afterwards.
        let was_schedulable = node.schedulable;
        node.upgrading = Some(NodeUpgrade {
            mode: upgrade.mode,
            was_schedulable,
        });
        node.upgrade_failure = None;
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
        node.upgrade_failure = None;
        node.schedulable = upgrading.was_schedulable && node.drain_deadline_ms.is_none();
        context.emit(
            tenant,
            Event::NodeUpgradeFinished {
                node: node_id,
                pool: pool_id,
            },
        );
    }

    /// The node's upgrade hook failed. Every attempt is recorded as the node's
    /// condition; after the final one the node leaves the upgrade, isolated (not
    /// schedulable), and its pool's upgrade completes if that node was the last.
    pub(super) fn node_driver_upgrade_failed(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        attempt: u32,
        final_attempt: bool,
        output_tail: &str,
    ) -> Handled {
        require_node_itself(context.principal, node_id)?;
        if output_tail.len() > MAX_UPGRADE_OUTPUT_TAIL_BYTES {
            return Err(Rejection::invalid(
                "output_tail",
                format!("at most {MAX_UPGRADE_OUTPUT_TAIL_BYTES} bytes"),
            ));
        }
        if attempt == 0 || attempt > MAX_UPGRADE_ATTEMPTS {
            return Err(Rejection::invalid(
                "attempt",
                format!("must be 1..={MAX_UPGRADE_ATTEMPTS}"),
            ));
        }
        let node = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| Rejection::not_found("node", node_id))?;
        let (Some(_), Some(pool_id)) = (node.upgrading, node.pool) else {
            return Err(Rejection::state(
                "node",
                node_id,
                "NotUpgrading",
                "fail the upgrade of",
            ));
        };
        let Some(upgrade) = self.pools[&pool_id].pending_upgrade.clone() else {
            return Err(Rejection::state(
                "pool",
                pool_id,
                "NotUpgrading",
                "fail an upgrade of",
            ));
        };
        let tenant = self.pools[&pool_id].owner();
        let node = self.nodes.get_mut(&node_id).expect("checked above");
        node.upgrade_failure = Some(UpgradeFailure {
            upgrade_requested_at_ms: upgrade.requested_at_ms,
            attempt,
            final_attempt,
            at_ms: context.at_ms,
            output_tail: output_tail.to_string(),
        });
        if final_attempt {
            // Left isolated: out of scheduling until an operator or a later upgrade
            // brings it back, but no longer part of this upgrade's batch.
            node.upgrading = None;
            node.schedulable = false;
        }
        context.emit(
            tenant,
            Event::NodeUpgradeFailed {
                node: node_id,
                pool: pool_id,
                attempt,
                final_attempt,
            },
        );
        if final_attempt {
            self.complete_upgrade_if_done(pool_id);
        }
        Ok(None)
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
