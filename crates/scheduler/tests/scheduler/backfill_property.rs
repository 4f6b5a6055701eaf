//! Property: backfill never delays the head job. On any cluster and queue, for each
//! pool whose round made a reservation:
//! - before the round, if nothing was placed ahead of the head, `reservation_for` on
//!   the unchanged state gives the same reservation;
//! - after applying only the placements decided before the head was found, the head's
//!   shadow time is the one the round reserved, or there is none when the round made
//!   none (the round and `reservation_for` agree);
//! - after applying the whole plan, backfill included, the shadow time is not later.

use crate::common::random_cluster::{build, scenario};
use crate::common::rejected_jobs;
use corral_scheduler::{plan_round, reservation_for, RoundOptions};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn backfill_never_delays_the_head(scenario in scenario()) {
        let built = build(&scenario);
        let pools: Vec<_> = built.cluster.state.pools_with_queued_work().collect();
        for pool in pools {
            let plan = plan_round(&built.cluster.state, pool, &RoundOptions::default());
            let Some(head) = plan.diagnostics.head.clone() else { continue };
            let mut ahead_only = built.cluster.clone();
            let ahead = plan.placements[..head.placements_before_head].to_vec();
            let applied = ahead_only.apply_placements(pool, ahead).expect("plan accepted");
            prop_assert!(rejected_jobs(&applied).is_empty());
            let at_head = reservation_for(&ahead_only.state, pool, head.job);
            let Some(reserved) = head.reservation.clone() else {
                prop_assert_eq!(at_head, None, "the round found no reservation");
                continue;
            };
            let at_head = at_head.expect("the head has a reservation at its turn");
            prop_assert_eq!(at_head.shadow_time_ms, reserved.shadow_time_ms);
            if head.placements_before_head == 0 {
                prop_assert_eq!(
                    reservation_for(&built.cluster.state, pool, head.job),
                    Some(reserved.clone())
                );
            }


            let mut whole = built.cluster.clone();
            let applied = whole.apply_plan(&plan);
            prop_assert!(rejected_jobs(&applied).is_empty());
            let after = reservation_for(&whole.state, pool, head.job)
                .expect("backfill must not take the head's reservation away");
            prop_assert!(
                after.shadow_time_ms <= reserved.shadow_time_ms,
                "shadow time moved from {} to {} (plan {:?})",
                reserved.shadow_time_ms, after.shadow_time_ms, plan
            );
            whole.assert_invariants();
        }
    }
}

/// Not a property: shows the generator exercises reservations and backfill, so the
/// property above is not vacuous. Run with `--ignored --nocapture` to see the counts.
#[test]
#[ignore]
fn generator_coverage() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut rounds, mut heads, mut reservations, mut backfilled, mut later_than_now) =
        (0, 0, 0, 0, 0);
    for _ in 0..128 {
        let scenario = scenario().new_tree(&mut runner).unwrap().current();
        let built = build(&scenario);
        for pool in built.cluster.state.pools_with_queued_work() {
            rounds += 1;
            let plan = plan_round(&built.cluster.state, pool, &RoundOptions::default());
            let Some(head) = plan.diagnostics.head else {
                continue;
            };
            heads += 1;
            let Some(reserved) = head.reservation else {
                continue;
            };
            reservations += 1;
            if reserved.shadow_time_ms > built.cluster.now_ms() {
                later_than_now += 1;
            }
            if plan.placements.len() > head.placements_before_head {
                backfilled += 1;
            }
        }
    }
    println!(
        "rounds {rounds}, heads {heads}, reservations {reservations} \
         (in the future {later_than_now}), with backfill {backfilled}"
    );
}
