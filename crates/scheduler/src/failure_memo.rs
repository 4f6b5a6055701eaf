//! Remembering what did not fit. Within a round free capacity only shrinks, so once
//! `n` replicas of a request did not fit for a placement class, `n` or more of the
//! same request will not fit for the rest of the round. This makes the many jobs of a
//! full pool cost a map lookup each instead of a search.
//!
//! After a reservation is made, jobs that would outlast it see less capacity on the
//! reserved nodes than jobs that end in time, so each constraint has its own memo; a
//! failure without constraint is also a failure with it.

use crate::backfill::ReservationConstraint;
use crate::placement_class::ClassId;
use corral_model::Resources;
use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct FailureMemo {
    /// (class, request, constraint) -> the fewest replicas known not to fit.
    fewest_failing: BTreeMap<(ClassId, Resources, ReservationConstraint), u32>,
}

impl FailureMemo {
    pub(crate) fn known_not_to_fit(
        &self,
        class: ClassId,
        per_replica: Resources,
        constraint: ReservationConstraint,
        replicas: u32,
    ) -> bool {
        let failed_with = |constraint| {
            self.fewest_failing
                .get(&(class, per_replica, constraint))
                .is_some_and(|fewest| replicas >= *fewest)
        };
        failed_with(ReservationConstraint::Free)
            || (constraint != ReservationConstraint::Free && failed_with(constraint))
    }

    pub(crate) fn remember_failure(
        &mut self,
        class: ClassId,
        per_replica: Resources,
        constraint: ReservationConstraint,
        replicas: u32,
    ) {
        let fewest = self
            .fewest_failing
            .entry((class, per_replica, constraint))
            .or_insert(replicas);
        *fewest = (*fewest).min(replicas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(accelerators: u32) -> Resources {
        Resources {
            cpu_millicores: 1_000,
            memory_mib: 1_024,
            accelerators,
            disk_gib: 0,
            bandwidth_mbps: 0,
        }
    }

    #[test]
    fn a_failure_covers_larger_gangs_of_the_same_request() {
        let mut memo = FailureMemo::default();
        memo.remember_failure(0, request(8), ReservationConstraint::Free, 4);
        assert!(memo.known_not_to_fit(0, request(8), ReservationConstraint::Free, 4));
        assert!(memo.known_not_to_fit(0, request(8), ReservationConstraint::Free, 9));
        assert!(!memo.known_not_to_fit(0, request(8), ReservationConstraint::Free, 3));
        assert!(!memo.known_not_to_fit(0, request(4), ReservationConstraint::Free, 4));
        assert!(!memo.known_not_to_fit(1, request(8), ReservationConstraint::Free, 4));
    }

    #[test]
    fn a_free_failure_covers_constrained_jobs_but_not_the_reverse() {
        let mut memo = FailureMemo::default();
        memo.remember_failure(0, request(1), ReservationConstraint::SpareReservedNodes, 1);
        assert!(memo.known_not_to_fit(0, request(1), ReservationConstraint::SpareReservedNodes, 1));
        assert!(!memo.known_not_to_fit(0, request(1), ReservationConstraint::Free, 1));
        memo.remember_failure(0, request(2), ReservationConstraint::Free, 1);
        assert!(memo.known_not_to_fit(0, request(2), ReservationConstraint::SpareReservedNodes, 1));
    }
}
