//! Searching the bucket index for a node: the best fit (the node left with the fewest
//! free accelerators) that holds a number of replicas, and the roomiest node (the one
//! holding the most replicas). Both look only at the given groups and only at what
//! `usable` says the job may use on a node (`None`: skip the node).

use crate::capacity::replica_slots;
use crate::pool_nodes::{GroupId, NodeSlot, PoolNodes};
use corral_model::Resources;

/// The usable node with the fewest free accelerators that holds `replicas` replicas
/// of `per_replica`; ties go to the earlier group, then the lower slot.
pub(crate) fn best_fit_node(
    nodes: &PoolNodes,
    groups: &[GroupId],
    per_replica: &Resources,
    replicas: u32,
    usable: impl Fn(NodeSlot) -> Option<Resources>,
) -> Option<NodeSlot> {
    let smallest_bucket = u64::from(per_replica.accelerators) * u64::from(replicas);
    let largest_bucket = u64::from(nodes.most_accelerators());
    if smallest_bucket > largest_bucket {
        return None;
    }
    for free_accelerators in smallest_bucket as u32..=largest_bucket as u32 {
        for group in groups {
            let found = nodes.bucket(*group, free_accelerators).find(|slot| {
                usable(*slot).is_some_and(|room| replica_slots(&room, per_replica) >= replicas)
            });
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// The usable node holding the most replicas of `per_replica` (at least one), and how
/// many. Searches from the fullest-free bucket down and stops as soon as no lower
/// bucket can beat the best found.
pub(crate) fn roomiest_node(
    nodes: &PoolNodes,
    groups: &[GroupId],
    per_replica: &Resources,
    usable: impl Fn(NodeSlot) -> Option<Resources>,
) -> Option<(NodeSlot, u32)> {
    let mut best: Option<(NodeSlot, u32)> = None;
    for free_accelerators in (per_replica.accelerators..=nodes.most_accelerators()).rev() {
        let bucket_bound = bucket_slot_bound(free_accelerators, per_replica);
        if best.is_some_and(|(_, slots)| slots >= bucket_bound) {
            break;
        }
        for group in groups {
            for slot in nodes.bucket(*group, free_accelerators) {
                let Some(room) = usable(slot) else {
                    continue;
                };
                let slots = replica_slots(&room, per_replica);
                if slots > best.map_or(0, |(_, most)| most) {
                    best = Some((slot, slots));
                    if slots >= bucket_bound {
                        break;
                    }
                }
            }
            if best.is_some_and(|(_, slots)| slots >= bucket_bound) {
                break;
            }
        }
    }
    best
}

/// The most replicas a node with `free_accelerators` free can hold, as far as
/// accelerators tell (unbounded for a request without accelerators).
fn bucket_slot_bound(free_accelerators: u32, per_replica: &Resources) -> u32 {
    match per_replica.accelerators {
        0 => u32::MAX,
        each => free_accelerators / each,
    }
}
