//! Reservations and EASY backfilling: the first job that does not fit gets a
//! reservation at its shadow time; later jobs are placed only if they end before it or
//! leave the reserved capacity alone; the head runs once its shadow time comes.

use crate::common::{rejected_jobs, training, training_for_hours, Cluster, START_MS};
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::limits::HOUR_MS;
use corral_model::JobState;
use corral_scheduler::{plan_round, reservation_for, ReservedNode, RoundOptions};
use std::collections::BTreeMap;

struct Scene {
    cluster: Cluster,
    pool: PoolId,
    tenant: TenantId,
    nodes: Vec<NodeId>,
}

/// Five 8-accelerator nodes: node 0 runs an 8 for 2 hours, node 1 a 4 for 10 hours,
/// node 2 an 8 with no limit; nodes 3 and 4 are free.
fn scene() -> Scene {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 1_000);
    let nodes = cluster.register_nodes(&flavor, 5, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, 5)]);
    cluster.submit(tenant, training_for_hours(pool, 1, 8, 2));
    cluster.submit(tenant, training_for_hours(pool, 1, 4, 10));
    cluster.submit(tenant, training(pool, 1, 8));
    let (plan, _) = cluster.run_round(pool);
    assert_eq!(plan.placements.len(), 3);
    let free: Vec<u32> = cluster
        .state
        .pool_nodes(pool)
        .map(|node| node.free().accelerators)
        .collect();
    assert_eq!(free, vec![0, 4, 0, 8, 8]);
    Scene {
        cluster,
        pool,
        tenant,
        nodes,
    }
}

fn placed_jobs(plan: &corral_scheduler::Plan) -> Vec<JobId> {
    plan.placements
        .iter()
        .map(|placement| placement.job)
        .collect()
}

#[test]
fn the_head_reserves_the_earliest_time_and_nodes_it_fits() {
    let Scene {
        mut cluster,
        pool,
        tenant,
        nodes,
    } = scene();
    let head = cluster.submit(tenant, training(pool, 3, 8));
    let plan = plan_round(&cluster.state, pool, &RoundOptions::default());
    assert!(plan.is_empty());
    let head_job = plan.diagnostics.head.expect("a head");
    assert_eq!(head_job.job, head);
    let reservation = head_job.reservation.expect("a reservation");
    assert_eq!(reservation.shadow_time_ms, START_MS + 2 * HOUR_MS);
    let one = |node| ReservedNode { node, replicas: 1 };
    assert_eq!(
        reservation.nodes,
        vec![one(nodes[0]), one(nodes[3]), one(nodes[4])]
    );
    assert_eq!(
        reservation_for(&cluster.state, pool, head),
        Some(reservation)
    );
}

#[test]
fn backfill_takes_only_what_does_not_delay_the_head() {
    let Scene {
        mut cluster,
        pool,
        tenant,
        nodes,
    } = scene();
    let head = cluster.submit(tenant, training(pool, 3, 8));
    let ends_in_time = cluster.submit(tenant, training_for_hours(pool, 1, 8, 1));
    let outlasts_on_reserved = cluster.submit(tenant, training(pool, 1, 8));
    let outlasts_elsewhere = cluster.submit(tenant, training(pool, 1, 4));
    let too_late = cluster.submit(tenant, training_for_hours(pool, 1, 1, 3));
    let shadow_before = reservation_for(&cluster.state, pool, head)
        .expect("a reservation")
        .shadow_time_ms;

    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert_eq!(placed_jobs(&plan), vec![ends_in_time, outlasts_elsewhere]);
    let node_of = |job: JobId| cluster.state.job(job).unwrap().replicas[0].node;
    assert_eq!(node_of(ends_in_time), Some(nodes[3]));
    assert_eq!(node_of(outlasts_elsewhere), Some(nodes[1]));
    for waiting in [head, outlasts_on_reserved, too_late] {
        assert_eq!(cluster.state.job(waiting).unwrap().state, JobState::Pending);
    }
    let shadow_after = reservation_for(&cluster.state, pool, head)
        .expect("still a reservation")
        .shadow_time_ms;
    assert_eq!(shadow_after, shadow_before);
    cluster.assert_invariants();
}

#[test]
fn the_head_runs_when_its_shadow_time_comes() {
    let Scene {
        mut cluster,
        pool,
        tenant,
        nodes,
    } = scene();
    let head = cluster.submit(tenant, training(pool, 3, 8));
    cluster.submit(tenant, training_for_hours(pool, 1, 8, 1));
    cluster.run_round(pool);
    cluster.advance_ms(2 * HOUR_MS);
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert_eq!(placed_jobs(&plan), vec![head]);
    let mut used: Vec<NodeId> = cluster
        .state
        .job(head)
        .unwrap()
        .replicas
        .iter()
        .filter_map(|replica| replica.node)
        .collect();
    used.sort();
    assert_eq!(used, vec![nodes[0], nodes[3], nodes[4]]);
}

#[test]
fn without_a_known_end_there_is_no_reservation_and_nothing_is_held_back() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 1_000);
    cluster.register_nodes(&flavor, 2, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, 2)]);
    cluster.submit(tenant, training(pool, 1, 8));
    cluster.run_round(pool);
    let head = cluster.submit(tenant, training(pool, 2, 8));
    let small = cluster.submit(tenant, training(pool, 1, 2));
    let (plan, _) = cluster.run_round(pool);
    let head_job = plan.diagnostics.head.as_ref().expect("a head");
    assert_eq!(head_job.job, head);
    assert_eq!(head_job.reservation, None);
    assert_eq!(placed_jobs(&plan), vec![small]);
}
