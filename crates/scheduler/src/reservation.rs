//! The head job's reservation (EASY backfilling): the earliest time (shadow time) at
//! which the head would fit if running work ended when its enforced limit says
//! (`release_schedule`), and the nodes it would use then.
//!
//! Replicas of one job are identical, so the head fits at a time exactly when the
//! eligible nodes together hold enough of its replicas; the sweep over release events
//! keeps that sum up to date node by node. At the shadow time the nodes are chosen like
//! a gang's: as few as possible, the last one best fit.

use crate::backfill::BackfillGuard;
use crate::capacity::{replica_slots, saturating_sub, times};
use crate::placement_class::{PlacementClass, PlacementClasses};
use crate::pool_nodes::{NodeSlot, PoolNodes};
use crate::release_schedule::{releases_of_running_work, ReleaseEvent};
use corral_model::ids::{JobId, NodeId, PoolId};
use corral_model::Resources;
use corral_state::State;
use std::collections::BTreeMap;

/// Where and when the head job will run if nothing delays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub job: JobId,
    /// The earliest time the job fits; `now` when it fits already.
    pub shadow_time_ms: u64,
    /// The nodes it would use then, in node id order.
    pub nodes: Vec<ReservedNode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedNode {
    pub node: NodeId,
    pub replicas: u32,
}

/// The job a reservation is made for.
pub(crate) struct HeadRequest<'c> {
    pub job: JobId,
    pub class: &'c PlacementClass,
    pub per_replica: Resources,
    pub replicas: u32,
}

/// A reservation and what it leaves for backfill.
pub(crate) struct ReservationPlan {
    pub reservation: Reservation,
    pub guard: BackfillGuard,
}

/// The reservation `job` would get if it were the head of `pool` now, computed from
/// the state alone. `None` when the job is not waiting in the pool, or cannot fit even
/// after all work with a known end has ended.
pub fn reservation_for(state: &State, pool: PoolId, job: JobId) -> Option<Reservation> {
    let job = state.job(job).filter(|job| job.spec.pool == pool)?;
    let replicas = job.unplaced_count();
    if replicas == 0 {
        return None;
    }
    let now_ms = state.now_ms();
    let mut nodes = PoolNodes::build(state, pool, &std::collections::BTreeSet::new());
    nodes.fill_buckets(Resources::ZERO);
    let mut classes = PlacementClasses::default();
    let class = classes.class_for(&job.spec, &nodes);
    let request = HeadRequest {
        job: job.id,
        class: classes.class(class),
        per_replica: job.spec.per_replica,
        replicas,
    };
    let releases = releases_of_running_work(state, &nodes, now_ms);
    plan_reservation(&nodes, &request, releases, now_ms).map(|plan| plan.reservation)
}

/// Sweep the releases in time order until the head fits; then pick its nodes.
pub(crate) fn plan_reservation(
    nodes: &PoolNodes,
    head: &HeadRequest,
    mut releases: Vec<ReleaseEvent>,
    now_ms: u64,
) -> Option<ReservationPlan> {
    let mut eligible_group = vec![false; nodes.groups().len()];
    for group in &head.class.all {
        eligible_group[*group as usize] = true;
    }
    let eligible = |slot: NodeSlot| eligible_group[nodes.group_of(slot) as usize];
    let slots_in =
        |free: &Resources| u64::from(replica_slots(free, &head.per_replica).min(head.replicas));
    let wanted = u64::from(head.replicas);
    let mut future_free: BTreeMap<NodeSlot, Resources> = BTreeMap::new();
    let mut total_slots: u64 = (0..nodes.node_count() as NodeSlot)
        .filter(|slot| eligible(*slot))
        .map(|slot| slots_in(nodes.free(slot)))
        .sum();
    let mut shadow_time_ms = (total_slots >= wanted).then_some(now_ms);
    releases.sort_by_key(|release| (release.at_ms, release.slot));
    let mut position = 0;
    while shadow_time_ms.is_none() && position < releases.len() {
        let at_ms = releases[position].at_ms;
        while position < releases.len() && releases[position].at_ms == at_ms {
            let release = releases[position];
            position += 1;
            if !eligible(release.slot) {
                continue;
            }
            let before = *future_free
                .get(&release.slot)
                .unwrap_or(nodes.free(release.slot));
            let after = before.saturating_add(&release.resources);
            total_slots = total_slots + slots_in(&after) - slots_in(&before);
            future_free.insert(release.slot, after);
        }
        if total_slots >= wanted {
            shadow_time_ms = Some(at_ms.max(now_ms));
        }
    }
    let shadow_time_ms = shadow_time_ms?;
    let free_at_shadow = |slot: NodeSlot| *future_free.get(&slot).unwrap_or(nodes.free(slot));
    let candidates: Vec<Candidate> = (0..nodes.node_count() as NodeSlot)
        .filter(|slot| eligible(*slot))
        .map(|slot| {
            let free = free_at_shadow(slot);
            Candidate {
                slot,
                slots: replica_slots(&free, &head.per_replica),
                free_accelerators: free.accelerators,
            }
        })
        .filter(|candidate| candidate.slots > 0)
        .collect();
    let chosen = fewest_nodes(candidates, head.replicas);
    let slack = chosen
        .iter()
        .map(|(slot, replicas)| {
            let need = times(&head.per_replica, *replicas);
            (*slot, saturating_sub(&free_at_shadow(*slot), &need))
        })
        .collect();
    let mut reserved_nodes: Vec<ReservedNode> = chosen
        .iter()
        .map(|(slot, replicas)| ReservedNode {
            node: nodes.node(*slot).id,
            replicas: *replicas,
        })
        .collect();
    reserved_nodes.sort_by_key(|reserved| reserved.node);
    Some(ReservationPlan {
        reservation: Reservation {
            job: head.job,
            shadow_time_ms,
            nodes: reserved_nodes,
        },
        guard: BackfillGuard::new(shadow_time_ms, slack),
    })
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    slot: NodeSlot,
    slots: u32,
    free_accelerators: u32,
}

/// Replicas per node on as few nodes as possible: the roomiest nodes first, and the
/// last share on the best fit among the nodes that hold it. The candidates together
/// hold at least `replicas`.
fn fewest_nodes(mut candidates: Vec<Candidate>, replicas: u32) -> Vec<(NodeSlot, u32)> {
    candidates.sort_by_key(|candidate| (std::cmp::Reverse(candidate.slots), candidate.slot));
    let mut chosen = Vec::new();
    let mut remaining = replicas;
    let mut next = 0;
    while remaining > 0 && next < candidates.len() {
        let rest = &candidates[next..];
        let holders = rest.partition_point(|candidate| candidate.slots >= remaining);
        if let Some(best) = rest[..holders]
            .iter()
            .min_by_key(|candidate| (candidate.free_accelerators, candidate.slot))
        {
            chosen.push((best.slot, remaining));
            return chosen;
        }
        chosen.push((rest[0].slot, rest[0].slots));
        remaining -= rest[0].slots;
        next += 1;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(slot: NodeSlot, slots: u32, free_accelerators: u32) -> Candidate {
        Candidate {
            slot,
            slots,
            free_accelerators,
        }
    }

    #[test]
    fn one_node_when_one_holds_everything_and_best_fit_among_those() {
        let chosen = fewest_nodes(
            vec![candidate(0, 8, 8), candidate(1, 4, 4), candidate(2, 2, 2)],
            3,
        );
        assert_eq!(chosen, vec![(1, 3)]);
    }

    #[test]
    fn roomiest_first_when_no_node_holds_everything() {
        let chosen = fewest_nodes(
            vec![
                candidate(0, 1, 1),
                candidate(1, 4, 4),
                candidate(2, 4, 4),
                candidate(3, 2, 2),
            ],
            9,
        );
        assert_eq!(chosen, vec![(1, 4), (2, 4), (0, 1)]);
    }
}
