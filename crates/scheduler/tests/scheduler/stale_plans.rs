//! A stale plan is harmless: when the state changed between planning and applying,
//! the plan applier rejects exactly the placements that no longer fit
//! (`Event::PlacementRejected`), commits the others, and every invariant holds.

use crate::common::{notebook, rejected_jobs, training, Cluster};
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::{Command, JobState, Principal};
use corral_scheduler::{plan_round, Plan, RoundOptions};
use std::collections::{BTreeMap, BTreeSet};

fn cluster_with_queue() -> (Cluster, PoolId, TenantId) {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 1_000);
    cluster.register_nodes(&flavor, 4, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, 4)]);
    for accelerators in [8, 4, 4, 2, 2] {
        cluster.submit(tenant, notebook(pool, accelerators));
    }
    cluster.submit(tenant, training(pool, 2, 2));
    (cluster, pool, tenant)
}

fn plan(cluster: &Cluster, pool: PoolId) -> Plan {
    plan_round(&cluster.state, pool, &RoundOptions::default())
}

/// Jobs of the plan with a replica on `node`.
fn jobs_using(plan: &Plan, node: NodeId) -> BTreeSet<JobId> {
    plan.placements
        .iter()
        .filter(|placement| placement.assignments.iter().any(|(_, used)| *used == node))
        .map(|placement| placement.job)
        .collect()
}

#[test]
fn a_plan_applied_twice_is_rejected_the_second_time() {
    let (mut cluster, pool, _) = cluster_with_queue();
    let stale = plan(&cluster, pool);
    assert_eq!(stale.placements.len(), 6);
    let first = cluster.apply_plan(&stale);
    assert!(rejected_jobs(&first).is_empty());
    let holdings = |cluster: &Cluster| -> Vec<_> {
        cluster
            .state
            .nodes()
            .map(|node| node.allocations.clone())
            .collect()
    };
    let before = holdings(&cluster);
    let second = cluster.apply_plan(&stale);
    let all: Vec<JobId> = stale
        .placements
        .iter()
        .map(|placement| placement.job)
        .collect();
    assert_eq!(rejected_jobs(&second), all);
    assert_eq!(holdings(&cluster), before, "nothing was committed twice");
    cluster.assert_invariants();
}

#[test]
fn a_plan_computed_before_another_plan_loses_the_conflicts() {
    let (mut cluster, pool, _) = cluster_with_queue();
    let stale = plan(&cluster, pool);
    // Another plan, computed later, places a job of a second tenant first.
    let other = cluster.tenant("beta", 1_000);
    let rival = cluster.submit(other, training(pool, 1, 8));
    let competing = plan(&cluster, pool);
    let rival_plan = Plan {
        placements: competing
            .placements
            .into_iter()
            .filter(|placement| placement.job == rival)
            .collect(),
        ..competing
    };
    assert_eq!(rival_plan.placements.len(), 1);
    let rival_node = rival_plan.placements[0].assignments[0].1;
    assert!(
        !jobs_using(&stale, rival_node).is_empty(),
        "the rival lands where the stale plan placed work"
    );
    assert!(rejected_jobs(&cluster.apply_plan(&rival_plan)).is_empty());
    let applied = cluster.apply_plan(&stale);
    let rejected = rejected_jobs(&applied);
    assert!(
        !rejected.is_empty(),
        "the rival took room the stale plan counted on"
    );
    let conflicting = jobs_using(&stale, rival_node);
    assert!(rejected.iter().all(|job| conflicting.contains(job)));
    for job in &rejected {
        assert!(cluster.state.job(*job).unwrap().state.wants_placement());
    }
    assert_eq!(
        cluster.state.queue_length(pool),
        rejected.len(),
        "rejected jobs stay queued, the rest were placed"
    );
    cluster.assert_invariants();
}

#[test]
fn placements_on_a_lost_node_are_rejected_and_the_rest_committed() {
    let (mut cluster, pool, _) = cluster_with_queue();
    let stale = plan(&cluster, pool);
    let lost = stale.placements[0].assignments[0].1;
    let conflicting = jobs_using(&stale, lost);
    cluster.must(Principal::System, Command::NodeLost { node: lost });
    let applied = cluster.apply_plan(&stale);
    let rejected: BTreeSet<JobId> = rejected_jobs(&applied).into_iter().collect();
    assert_eq!(rejected, conflicting);
    for placement in &stale.placements {
        let state = cluster.state.job(placement.job).unwrap().state;
        if conflicting.contains(&placement.job) {
            assert_eq!(state, JobState::Pending);
        } else {
            assert_eq!(state, JobState::Running);
        }
    }
    assert!(cluster.state.node(lost).unwrap().allocations.is_empty());
    cluster.assert_invariants();
}

#[test]
fn placements_on_a_cordoned_node_are_rejected() {
    let (mut cluster, pool, _) = cluster_with_queue();
    let stale = plan(&cluster, pool);
    let cordoned = stale.placements.last().unwrap().assignments[0].1;
    let conflicting = jobs_using(&stale, cordoned);
    cluster.must(
        Principal::PlatformAdmin,
        Command::NodeCordon { node: cordoned },
    );
    let applied = cluster.apply_plan(&stale);
    let rejected: BTreeSet<JobId> = rejected_jobs(&applied).into_iter().collect();
    assert_eq!(rejected, conflicting);
    assert!(cluster.state.node(cordoned).unwrap().allocations.is_empty());
    cluster.assert_invariants();

    // The next round plans around the cordoned node and is accepted whole.
    let (fresh, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert!(jobs_using(&fresh, cordoned).is_empty());
    cluster.assert_invariants();
}
