//! Property: on any cluster and queue, a freshly computed plan is accepted whole by
//! the plan applier (no `PlacementRejected`), and every invariant holds afterwards.

use crate::common::random_cluster::{build, scenario};
use crate::common::rejected_jobs;
use corral_scheduler::{plan_all_pools, RoundOptions};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_placement_of_a_fresh_plan_is_accepted(scenario in scenario()) {
        let mut built = build(&scenario);
        built.cluster.assert_invariants();
        let plans = plan_all_pools(&built.cluster.state, &RoundOptions::default());
        for plan in plans {
            prop_assert_eq!(plan.diagnostics.jobs_placed, plan.placements.len());
            let applied = built.cluster.apply_plan(&plan);
            let rejected = rejected_jobs(&applied);
            prop_assert!(rejected.is_empty(), "rejected {:?} of {:?}: {:?}", rejected, plan, applied.events);
            built.cluster.assert_invariants();
        }
        // A second round right after is accepted whole too.
        for plan in plan_all_pools(&built.cluster.state, &RoundOptions::default()) {
            let applied = built.cluster.apply_plan(&plan);
            prop_assert!(rejected_jobs(&applied).is_empty());
        }
        built.cluster.assert_invariants();
    }
}
