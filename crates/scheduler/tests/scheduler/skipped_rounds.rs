//! The leader skips a scheduling round after one in which nothing fit any node, when
//! since then only jobs that fit no node's free capacity were submitted
//! (`any_could_fit`). These tests check that such a round would indeed place nothing,
//! on random clusters (property) and on hand-made ones that show both answers.

use crate::common::random_cluster::{build, job_choice, scenario};
use crate::common::{training, Cluster};
use corral_model::ids::JobId;
use corral_scheduler::{any_could_fit, plan_all_pools, Plan, RoundOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Plan and apply rounds until one places nothing; returns that round's plans.
fn schedule_until_idle(cluster: &mut Cluster) -> Vec<Plan> {
    for _ in 0..50 {
        let plans = plan_all_pools(&cluster.state, &RoundOptions::default());
        if plans.iter().all(Plan::is_empty) {
            return plans;
        }
        for plan in plans.iter().filter(|plan| !plan.is_empty()) {
            cluster.apply_plan(plan);
        }
    }
    panic!("rounds kept placing work for 50 rounds");
}

fn jobs_after(cluster: &Cluster, last: Option<JobId>) -> Vec<JobId> {
    cluster
        .state
        .jobs()
        .map(|job| job.id)
        .filter(|job| Some(*job) > last)
        .collect()
}

fn last_job(cluster: &Cluster) -> Option<JobId> {
    cluster.state.jobs().map(|job| job.id).max()
}

fn placements(plans: &[Plan]) -> usize {
    plans.iter().map(|plan| plan.placements.len()).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_round_the_fit_check_skips_would_place_nothing(
        scenario in scenario(),
        new_wave in proptest::collection::vec(job_choice(), 1..8),
    ) {
        let mut built = build(&scenario);
        let idle = schedule_until_idle(&mut built.cluster);
        for plan in &idle {
            prop_assert!(
                !plan.diagnostics.nothing_fits_any_node || plan.is_empty(),
                "nothing fits, yet the plan places work"
            );
        }
        if !idle.iter().all(|plan| plan.diagnostics.nothing_fits_any_node) {
            // The check is not used after such a round.
            return Ok(());
        }
        let before = last_job(&built.cluster);
        built.submit_wave(&new_wave);
        let submitted = jobs_after(&built.cluster, before);
        if !any_could_fit(&built.cluster.state, submitted.iter().copied()) {
            let plans = plan_all_pools(&built.cluster.state, &RoundOptions::default());
            prop_assert_eq!(placements(&plans), 0, "a skipped round would have placed work");
        }
    }
}

/// A public pool of one 8-accelerator node, one tenant, and jobs asking for
/// `accelerators` each submitted in order.
fn one_node_pool(
    accelerators: &[u32],
) -> (
    Cluster,
    corral_model::ids::PoolId,
    corral_model::ids::TenantId,
) {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 10_000);
    cluster.register_nodes(&flavor, 1, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, 1)]);
    for count in accelerators {
        cluster.submit(tenant, training(pool, 1, *count));
    }
    (cluster, pool, tenant)
}

#[test]
fn a_full_pool_turns_new_jobs_away_without_a_round() {
    // The node runs one 8-accelerator job and another waits.
    let (mut cluster, pool, tenant) = one_node_pool(&[8, 8]);
    let idle = schedule_until_idle(&mut cluster);
    assert!(idle
        .iter()
        .all(|plan| plan.diagnostics.nothing_fits_any_node));
    let before = last_job(&cluster);
    cluster.submit(tenant, training(pool, 1, 1));
    let submitted = jobs_after(&cluster, before);
    assert_eq!(submitted.len(), 1);
    assert!(!any_could_fit(&cluster.state, submitted));
    assert_eq!(
        placements(&plan_all_pools(&cluster.state, &RoundOptions::default())),
        0
    );
}

#[test]
fn a_new_job_that_fits_free_room_needs_a_round() {
    let (mut cluster, pool, tenant) = one_node_pool(&[6, 4]);
    let idle = schedule_until_idle(&mut cluster);
    assert!(
        idle.iter()
            .all(|plan| plan.diagnostics.nothing_fits_any_node),
        "2 accelerators are free and the queued job asks for 4"
    );
    let before = last_job(&cluster);
    cluster.submit(tenant, training(pool, 1, 2));
    let submitted = jobs_after(&cluster, before);
    assert!(any_could_fit(&cluster.state, submitted.iter().copied()));
    assert_eq!(
        placements(&plan_all_pools(&cluster.state, &RoundOptions::default())),
        1,
        "the new job takes the 2 free accelerators"
    );
}
