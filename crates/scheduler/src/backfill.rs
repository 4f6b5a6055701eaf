//! The backfill rule of EASY backfilling: once the head job has a reservation, a later
//! job may take resources only where that does not delay the head. A job that will have
//! ended by the shadow time may use anything free now; any other job may use, on a
//! reserved node, only what the head leaves over at the shadow time (the node's
//! slack), and uses it up as it is placed. Nodes outside the reservation are free for
//! all.

use crate::capacity::{per_dimension_minimum, saturating_sub};
use crate::pool_nodes::NodeSlot;
use corral_model::Resources;
use std::collections::BTreeMap;

/// Which capacity a job may use while a reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReservationConstraint {
    /// No reservation, or the job ends by the shadow time: all free capacity.
    Free,
    /// The job would outlast the shadow time: only the slack of reserved nodes.
    SpareReservedNodes,
}

pub(crate) struct BackfillGuard {
    shadow_time_ms: u64,
    /// Per reserved node: what is left at the shadow time after the head's replicas.
    slack: BTreeMap<NodeSlot, Resources>,
}

impl BackfillGuard {
    pub(crate) fn new(shadow_time_ms: u64, slack: BTreeMap<NodeSlot, Resources>) -> Self {
        BackfillGuard {
            shadow_time_ms,
            slack,
        }
    }

    /// The constraint for a job placed at `now_ms` whose enforced runtime limit is
    /// `runtime_limit_ms` (see `release_schedule`).
    pub(crate) fn constraint_for(
        &self,
        runtime_limit_ms: Option<u64>,
        now_ms: u64,
    ) -> ReservationConstraint {
        match runtime_limit_ms.map(|limit_ms| now_ms.saturating_add(limit_ms)) {
            Some(end_ms) if end_ms <= self.shadow_time_ms => ReservationConstraint::Free,
            _ => ReservationConstraint::SpareReservedNodes,
        }
    }

    /// What a job under `constraint` may use of a node whose free capacity is `free`.
    pub(crate) fn usable(
        &self,
        slot: NodeSlot,
        free: &Resources,
        constraint: ReservationConstraint,
    ) -> Resources {
        match (constraint, self.slack.get(&slot)) {
            (ReservationConstraint::SpareReservedNodes, Some(slack)) => {
                per_dimension_minimum(free, slack)
            }
            _ => *free,
        }
    }

    /// Record that a job under `constraint` took `resources` on the node.
    pub(crate) fn consume(
        &mut self,
        slot: NodeSlot,
        resources: &Resources,
        constraint: ReservationConstraint,
    ) {
        if constraint != ReservationConstraint::SpareReservedNodes {
            return;
        }
        if let Some(slack) = self.slack.get_mut(&slot) {
            *slack = saturating_sub(slack, resources);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::limits::HOUR_MS;

    fn accelerators(count: u32) -> Resources {
        Resources {
            cpu_millicores: u64::from(count) * 1_000,
            memory_mib: u64::from(count) * 1_024,
            accelerators: count,
            disk_gib: 0,
            bandwidth_mbps: 0,
        }
    }

    #[test]
    fn only_jobs_ending_by_the_shadow_time_are_free() {
        let guard = BackfillGuard::new(10 * HOUR_MS, BTreeMap::new());
        let now = 2 * HOUR_MS;
        assert_eq!(
            guard.constraint_for(Some(8 * HOUR_MS), now),
            ReservationConstraint::Free
        );
        assert_eq!(
            guard.constraint_for(Some(8 * HOUR_MS + 1), now),
            ReservationConstraint::SpareReservedNodes
        );
        assert_eq!(
            guard.constraint_for(None, now),
            ReservationConstraint::SpareReservedNodes
        );
    }

    #[test]
    fn long_jobs_see_and_use_up_only_the_slack_of_reserved_nodes() {
        let mut guard = BackfillGuard::new(HOUR_MS, [(3, accelerators(2))].into());
        let free = accelerators(6);
        let long = ReservationConstraint::SpareReservedNodes;
        assert_eq!(guard.usable(3, &free, long), accelerators(2));
        assert_eq!(guard.usable(4, &free, long), free);
        assert_eq!(guard.usable(3, &free, ReservationConstraint::Free), free);
        guard.consume(3, &accelerators(1), ReservationConstraint::Free);
        assert_eq!(guard.usable(3, &free, long), accelerators(2));
        guard.consume(3, &accelerators(2), long);
        assert_eq!(guard.usable(3, &free, long), Resources::ZERO);
    }
}
