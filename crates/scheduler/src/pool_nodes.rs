//! The per-round index of one pool's nodes: each node's free capacity as the round
//! places replicas, its group (see `node_group`), and per group one bucket of nodes for
//! each count of free accelerators, so a best-fit search starts at the smallest bucket
//! that can hold the request instead of scanning every node.
//!
//! The index is built in two steps: `build` groups the nodes (so placement classes can
//! be computed while the queue is read), and `fill_buckets` then buckets every node
//! that can host something: a node whose free capacity is below the smallest request
//! of the pool's queue on some dimension can host nothing this round and is left out.

use crate::capacity::saturating_sub;
use crate::node_group::NodeGroupKey;
use corral_model::ids::{NodeId, PoolId};
use corral_model::{Node, Resources};
use corral_state::State;
use std::collections::{BTreeMap, BTreeSet};

/// A node's position in the index (dense, in node id order).
pub(crate) type NodeSlot = u32;
/// A node group's position in the index.
pub(crate) type GroupId = u32;

pub(crate) struct NodeGroup<'a> {
    /// The first node of the group; static fit of the group is static fit of it.
    pub representative: &'a Node,
    /// `buckets[free_accelerators]`: usable nodes of the group, in slot order.
    buckets: Vec<BTreeSet<NodeSlot>>,
}

pub(crate) struct PoolNodes<'a> {
    nodes: Vec<&'a Node>,
    free: Vec<Resources>,
    group_of: Vec<GroupId>,
    groups: Vec<NodeGroup<'a>>,
    slot_by_id: BTreeMap<NodeId, NodeSlot>,
    /// Nodes the leader has not heard from lately (`RoundOptions::unavailable_nodes`):
    /// indexed, so their work still counts, but with nothing free and never bucketed.
    unavailable: Vec<bool>,
    /// A node is usable while this fits within its free capacity.
    usable_floor: Resources,
    /// Nodes in some bucket: usable nodes.
    usable_node_count: usize,
    /// Sum of the capacity of every node of the pool.
    total_capacity: Resources,
    most_accelerators: u32,
}

impl<'a> PoolNodes<'a> {
    /// Index and group the nodes of `pool`; no node is in a bucket yet. Nodes in
    /// `unavailable` offer nothing this round.
    pub(crate) fn build(
        state: &'a State,
        pool: PoolId,
        unavailable: &BTreeSet<NodeId>,
    ) -> PoolNodes<'a> {
        let nodes: Vec<&Node> = state.pool_nodes(pool).collect();
        let most_accelerators = nodes
            .iter()
            .map(|node| node.capacity.accelerators)
            .max()
            .unwrap_or(0);
        let mut index = PoolNodes {
            free: Vec::with_capacity(nodes.len()),
            group_of: Vec::with_capacity(nodes.len()),
            groups: Vec::new(),
            slot_by_id: BTreeMap::new(),
            unavailable: Vec::with_capacity(nodes.len()),
            usable_floor: Resources::ZERO,
            usable_node_count: 0,
            total_capacity: Resources::ZERO,
            most_accelerators,
            nodes: Vec::new(),
        };
        let mut group_by_key: BTreeMap<NodeGroupKey<'a>, GroupId> = BTreeMap::new();
        for node in nodes {
            let slot = index.nodes.len() as NodeSlot;
            let group = *group_by_key
                .entry(NodeGroupKey::of(node))
                .or_insert_with(|| {
                    index.groups.push(NodeGroup {
                        representative: node,
                        buckets: vec![BTreeSet::new(); most_accelerators as usize + 1],
                    });
                    (index.groups.len() - 1) as GroupId
                });
            let silent = unavailable.contains(&node.id);
            index.nodes.push(node);
            index
                .free
                .push(if silent { Resources::ZERO } else { node.free() });
            index.unavailable.push(silent);
            index.group_of.push(group);
            index.slot_by_id.insert(node.id, slot);
            index.total_capacity = index.total_capacity.saturating_add(&node.capacity);
        }
        index
    }

    /// Bucket every node that has room for `usable_floor`, the per-dimension minimum of
    /// the requests that will be placed (zero buckets every node). Call once.
    pub(crate) fn fill_buckets(&mut self, usable_floor: Resources) {
        self.usable_floor = usable_floor;
        for slot in 0..self.nodes.len() as NodeSlot {
            self.insert_if_usable(slot);
        }
    }

    pub(crate) fn node(&self, slot: NodeSlot) -> &'a Node {
        self.nodes[slot as usize]
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn free(&self, slot: NodeSlot) -> &Resources {
        &self.free[slot as usize]
    }

    pub(crate) fn group_of(&self, slot: NodeSlot) -> GroupId {
        self.group_of[slot as usize]
    }

    pub(crate) fn groups(&self) -> &[NodeGroup<'a>] {
        &self.groups
    }

    pub(crate) fn slot_of(&self, node: NodeId) -> Option<NodeSlot> {
        self.slot_by_id.get(&node).copied()
    }

    pub(crate) fn total_capacity(&self) -> &Resources {
        &self.total_capacity
    }

    /// Whether some node still has room for the smallest request: when none has, no
    /// queued job can be placed any more this round.
    pub(crate) fn has_usable_node(&self) -> bool {
        self.usable_node_count > 0
    }

    pub(crate) fn most_accelerators(&self) -> u32 {
        self.most_accelerators
    }

    /// Usable nodes of `group` with exactly `free_accelerators` free, in slot order.
    pub(crate) fn bucket(
        &self,
        group: GroupId,
        free_accelerators: u32,
    ) -> impl Iterator<Item = NodeSlot> + '_ {
        self.groups[group as usize]
            .buckets
            .get(free_accelerators as usize)
            .into_iter()
            .flat_map(|bucket| bucket.iter().copied())
    }

    /// Take `resources` from the node's free capacity (checked by the caller).
    pub(crate) fn take(&mut self, slot: NodeSlot, resources: &Resources) {
        self.remove_from_bucket(slot);
        let free = &mut self.free[slot as usize];
        *free = saturating_sub(free, resources);
        self.insert_if_usable(slot);
    }

    fn bucket_mut(&mut self, slot: NodeSlot) -> &mut BTreeSet<NodeSlot> {
        let free_accelerators = self.free[slot as usize].accelerators as usize;
        let group = self.group_of[slot as usize] as usize;
        &mut self.groups[group].buckets[free_accelerators]
    }

    fn remove_from_bucket(&mut self, slot: NodeSlot) {
        if self.bucket_mut(slot).remove(&slot) {
            self.usable_node_count -= 1;
        }
    }

    fn insert_if_usable(&mut self, slot: NodeSlot) {
        if !self.unavailable[slot as usize]
            && self.usable_floor.fits_within(&self.free[slot as usize])
            && self.bucket_mut(slot).insert(slot)
        {
            self.usable_node_count += 1;
        }
    }
}
