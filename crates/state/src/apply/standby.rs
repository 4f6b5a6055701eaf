//! Hot standby nodes of dedicated pools: set and cleared by the pool's operator, never
//! scheduled onto, and promoted in place of a lost node of the same flavor.

use super::{Context, Handled};
use crate::state::State;
use corral_model::ids::NodeId;
use corral_model::{Event, NodeStatus, Rejection};

impl State {
    pub(super) fn node_set_standby(
        &mut self,
        context: &mut Context,
        node_id: NodeId,
        standby: bool,
    ) -> Handled {
        let node = self.node_for_operator(context.principal, node_id)?;
        let Some(pool_id) = node.pool else {
            return Err(Rejection::invalid(
                "node",
                "only a node in a dedicated pool can be a standby",
            ));
        };
        if self.pools[&pool_id].is_public() {
            return Err(Rejection::invalid(
                "node",
                "the public pool has no standby nodes",
            ));
        }
        if node.standby == standby {
            let state = if standby { "Standby" } else { "Active" };
            return Err(Rejection::state("node", node_id, state, "set standby of"));
        }
        if standby && !node.is_idle() {
            return Err(Rejection::in_use(
                "node",
                node_id,
                format!("{} replicas; drain it first", node.allocations.len()),
            ));
        }
        let tenant = self.pools[&pool_id].owner();
        self.node_mut(node_id).standby = standby;
        context.emit(
            tenant,
            Event::NodeStandbyChanged {
                node: node_id,
                standby,
            },
        );
        Ok(None)
    }

    /// A node was lost: an available standby of the same pool and flavor takes its place
    /// (the lowest id, so every replica picks the same one).
    pub(super) fn promote_standby_for(&mut self, context: &mut Context, lost: NodeId) {
        let lost_node = &self.nodes[&lost];
        // A lost standby held no work and stood in for no one: nothing to replace.
        if lost_node.standby {
            return;
        }
        let Some(pool_id) = lost_node.pool else {
            return;
        };
        let flavor = lost_node.flavor.clone();
        let Some(standby) = self
            .pool_nodes(pool_id)
            .filter(|node| {
                node.standby && node.flavor == flavor && node.status == NodeStatus::Available
            })
            .map(|node| node.id)
            .min()
        else {
            return;
        };
        let tenant = self.pools[&pool_id].owner();
        self.node_mut(standby).standby = false;
        context.emit(
            tenant,
            Event::NodeStandbyPromoted {
                node: standby,
                replaced: lost,
            },
        );
    }
}
