//! Placement behaviour of one round: gangs all-or-nothing on as few nodes as possible,
//! best-fit packing, PreferNoSchedule avoidance, selectors and taints, inference
//! spread, quotas, and dedicated pools hosting only their owner's work.

use crate::common::{
    inference, notebook, rejected_jobs, selecting, tolerating, training, with_priority, Cluster,
};
use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::{Command, JobState, Principal, Rejection, Taint, TaintEffect};
use corral_scheduler::{plan_all_pools, plan_round, Plan, RoundOptions};
use std::collections::{BTreeMap, BTreeSet};

/// A public pool of `nodes` nodes with 8 accelerators, and one tenant.
fn public_cluster(nodes: u32) -> (Cluster, PoolId, TenantId, Vec<NodeId>) {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 10_000);
    let node_ids = cluster.register_nodes(&flavor, nodes, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, nodes)]);
    (cluster, pool, tenant, node_ids)
}

fn nodes_of(plan: &Plan, job: JobId) -> Vec<NodeId> {
    plan.placements
        .iter()
        .filter(|placement| placement.job == job)
        .flat_map(|placement| placement.assignments.iter().map(|(_, node)| *node))
        .collect()
}

fn distinct(nodes: &[NodeId]) -> BTreeSet<NodeId> {
    nodes.iter().copied().collect()
}

#[test]
fn a_gang_that_cannot_fully_fit_gets_no_placement() {
    let (mut cluster, pool, tenant, _) = public_cluster(3);
    let gang = cluster.submit(tenant, training(pool, 4, 8));
    let (plan, applied) = cluster.run_round(pool);
    assert!(
        plan.is_empty(),
        "three nodes cannot hold four whole-node replicas"
    );
    assert!(rejected_jobs(&applied).is_empty());
    let head = plan
        .diagnostics
        .head
        .as_ref()
        .expect("the gang is the head");
    assert_eq!(head.job, gang);
    assert_eq!(head.reservation, None, "it can never fit in this pool");
    let job = cluster.state.job(gang).expect("job exists");
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.placed_replicas().count(), 0);
    assert!(cluster
        .state
        .nodes()
        .all(|node| node.allocations.is_empty()));
    cluster.assert_invariants();
}

#[test]
fn a_gang_that_fits_is_placed_whole_on_as_few_nodes_as_possible() {
    let (mut cluster, pool, tenant, nodes) = public_cluster(4);
    // Two services of 4 accelerators spread over the first two nodes: each keeps 4 free.
    let service = cluster.submit(tenant, inference(pool, 2, 4));
    let (first, _) = cluster.run_round(pool);
    assert_eq!(
        distinct(&nodes_of(&first, service)),
        [nodes[0], nodes[1]].into()
    );

    // Two replicas of 4 fit on one whole free node rather than on the two half-free ones.
    let pair = cluster.submit(tenant, training(pool, 2, 4));
    let (second, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert_eq!(nodes_of(&second, pair), vec![nodes[2], nodes[2]]);

    // Three replicas of 4: two on the last whole node, the third on a half-free node.
    let triple = cluster.submit(tenant, training(pool, 3, 4));
    let (third, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    let used = distinct(&nodes_of(&third, triple));
    assert_eq!(used.len(), 2, "fewest nodes: {used:?}");
    assert!(used.contains(&nodes[3]));
    let job = cluster.state.job(triple).expect("job exists");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.placed_replicas().count(), 3);
    cluster.assert_invariants();
}

#[test]
fn a_large_gang_takes_whole_nodes_and_every_rank_once() {
    let (mut cluster, pool, tenant, _) = public_cluster(20);
    let gang = cluster.submit(tenant, training(pool, 16, 8));
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    let placement = &plan.placements[0];
    assert_eq!(placement.job, gang);
    let ranks: BTreeSet<u32> = placement
        .assignments
        .iter()
        .map(|(rank, _)| *rank)
        .collect();
    assert_eq!(ranks, (0..16).collect());
    assert_eq!(distinct(&nodes_of(&plan, gang)).len(), 16);
}

#[test]
fn accelerators_are_bin_packed_best_fit() {
    let (mut cluster, pool, tenant, nodes) = public_cluster(3);
    let six = cluster.submit(tenant, notebook(pool, 6));
    let four = cluster.submit(tenant, notebook(pool, 4));
    cluster.run_round(pool);
    assert_eq!(
        cluster.state.job(six).unwrap().replicas[0].node,
        Some(nodes[0])
    );
    assert_eq!(
        cluster.state.job(four).unwrap().replicas[0].node,
        Some(nodes[1])
    );
    // Node 0 has 2 free, node 1 has 4, node 2 has 8: a 2 goes to node 0, a 3 to node 1.
    let two = cluster.submit(tenant, notebook(pool, 2));
    let three = cluster.submit(tenant, notebook(pool, 3));
    let (plan, _) = cluster.run_round(pool);
    assert_eq!(nodes_of(&plan, two), vec![nodes[0]]);
    assert_eq!(nodes_of(&plan, three), vec![nodes[1]]);
    assert!(cluster.state.node(nodes[2]).unwrap().allocations.is_empty());
}

#[test]
fn prefer_no_schedule_nodes_are_used_only_when_nothing_else_fits() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 1_000);
    let spot = Taint {
        key: "spot".into(),
        value: "yes".into(),
        effect: TaintEffect::PreferNoSchedule,
    };
    let tainted = cluster.register_nodes(&flavor, 1, &BTreeMap::new(), &[spot]);
    let plain = cluster.register_nodes(&flavor, 1, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, 2)]);
    let first = cluster.submit(tenant, notebook(pool, 4));
    let second = cluster.submit(tenant, notebook(pool, 4));
    let third = cluster.submit(tenant, notebook(pool, 4));
    let (plan, _) = cluster.run_round(pool);
    assert_eq!(nodes_of(&plan, first), plain);
    assert_eq!(nodes_of(&plan, second), plain);
    assert_eq!(nodes_of(&plan, third), tainted, "no other choice is left");

    // A job tolerating the taint is placed by best fit alone.
    let tolerant = cluster.submit(tenant, tolerating(notebook(pool, 2), "spot"));
    let (plan, _) = cluster.run_round(pool);
    assert_eq!(nodes_of(&plan, tolerant), tainted);
}

#[test]
fn node_selectors_and_no_schedule_taints_are_enforced() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 1_000);
    let rack: BTreeMap<String, String> = [("rack".to_string(), "r1".to_string())].into();
    let blocked = Taint {
        key: "maintenance".into(),
        value: "yes".into(),
        effect: TaintEffect::NoSchedule,
    };
    let plain = cluster.register_nodes(&flavor, 1, &BTreeMap::new(), &[]);
    let labelled = cluster.register_nodes(&flavor, 1, &rack, &[]);
    let tainted = cluster.register_nodes(&flavor, 1, &BTreeMap::new(), &[blocked]);
    let pool = cluster.public_pool(&[(&flavor, 3)]);
    let selective = cluster.submit(tenant, selecting(notebook(pool, 1), "rack", "r1"));
    let intolerant = cluster.submit(tenant, training(pool, 2, 8));
    let tolerant = cluster.submit(tenant, tolerating(training(pool, 2, 8), "maintenance"));
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert_eq!(nodes_of(&plan, selective), labelled);
    assert!(
        nodes_of(&plan, intolerant).is_empty(),
        "only one whole node is open to a job without the toleration"
    );
    assert_eq!(
        distinct(&nodes_of(&plan, tolerant)),
        [plain[0], tainted[0]].into()
    );
    cluster.assert_invariants();
}

#[test]
fn inference_replicas_spread_across_nodes() {
    let (mut cluster, pool, tenant, nodes) = public_cluster(3);
    let three = cluster.submit(tenant, inference(pool, 3, 1));
    let (plan, _) = cluster.run_round(pool);
    assert_eq!(
        distinct(&nodes_of(&plan, three)),
        nodes.iter().copied().collect()
    );

    let five = cluster.submit(tenant, inference(pool, 5, 1));
    let (plan, _) = cluster.run_round(pool);
    let placed = nodes_of(&plan, five);
    assert_eq!(placed.len(), 5);
    for node in &nodes {
        let on_node = placed.iter().filter(|placed| *placed == node).count();
        assert!((1..=2).contains(&on_node), "{on_node} replicas on {node}");
    }
}

#[test]
fn inference_may_be_placed_in_part_and_keeps_waiting_for_the_rest() {
    let (mut cluster, pool, tenant, _) = public_cluster(2);
    let service = cluster.submit(tenant, inference(pool, 3, 8));
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert_eq!(distinct(&nodes_of(&plan, service)).len(), 2);
    let job = cluster.state.job(service).unwrap();
    assert_eq!(job.placed_replicas().count(), 2);
    assert_eq!(job.unplaced_count(), 1);
    assert_eq!(cluster.state.queue_length(pool), 1);
    cluster.assert_invariants();
}

#[test]
fn a_job_beyond_the_tenant_quota_is_skipped() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("small", 8);
    let other = cluster.tenant("other", 100);
    cluster.register_nodes(&flavor, 4, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, 4)]);
    let first = cluster.submit(tenant, training(pool, 1, 6));
    let second = cluster.submit(tenant, training(pool, 1, 6));
    let third = cluster.submit(other, training(pool, 1, 8));
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    let placed: BTreeSet<JobId> = plan
        .placements
        .iter()
        .map(|placement| placement.job)
        .collect();
    assert_eq!(placed, [first, third].into());
    assert_eq!(plan.diagnostics.jobs_skipped_for_quota, 1);
    assert!(
        plan.diagnostics.head.is_none(),
        "a job held back by quota is not the head"
    );
    assert_eq!(cluster.state.job(second).unwrap().state, JobState::Pending);
    cluster.assert_invariants();
}

#[test]
fn a_dedicated_pool_never_hosts_another_tenants_work() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let owner = cluster.tenant("owner", 1_000);
    let stranger = cluster.tenant("stranger", 1_000);
    cluster.register_nodes(&flavor, 6, &BTreeMap::new(), &[]);
    let public = cluster.public_pool(&[(&flavor, 2)]);
    let dedicated = cluster.dedicated_pool("owned", owner, &[(&flavor, 4)]);

    let refused = cluster.apply(
        Principal::TenantUser(stranger),
        Command::JobSubmit(training(dedicated, 1, 1)),
    );
    assert!(matches!(refused, Err(Rejection::NotFound { .. })));
    for _ in 0..10 {
        cluster.submit(stranger, training(public, 1, 2));
        cluster.submit(owner, training(dedicated, 1, 2));
        cluster.submit(owner, inference(public, 2, 1));
    }
    for plan in plan_all_pools(&cluster.state, &RoundOptions::default()) {
        let applied = cluster.apply_plan(&plan);
        assert!(rejected_jobs(&applied).is_empty());
    }
    let dedicated_nodes: Vec<_> = cluster.state.pool_nodes(dedicated).collect();
    assert_eq!(dedicated_nodes.len(), 4);
    let mut hosted = 0;
    for node in dedicated_nodes {
        for allocation in &node.allocations {
            let job = cluster.state.job(allocation.job).unwrap();
            assert_eq!(job.tenant, owner, "{} hosts {}", node.id, job.id);
            assert_eq!(job.spec.pool, dedicated);
            hosted += 1;
        }
    }
    assert_eq!(hosted, 10, "all of the owner's dedicated work fits");
    for job in cluster.state.jobs().filter(|job| job.tenant == stranger) {
        for replica in job.placed_replicas() {
            let node = cluster.state.node(replica.node.unwrap()).unwrap();
            assert_eq!(node.pool, Some(public));
        }
    }
    cluster.assert_invariants();
}

#[test]
fn a_dedicated_pool_follows_priority_then_submission_order() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let owner = cluster.tenant("owner", 1_000);
    cluster.register_nodes(&flavor, 1, &BTreeMap::new(), &[]);
    let pool = cluster.dedicated_pool("owned", owner, &[(&flavor, 1)]);
    let low = cluster.submit(owner, with_priority(training(pool, 1, 8), 1));
    let high = cluster.submit(owner, with_priority(training(pool, 1, 8), 3));
    let plan = plan_round(&cluster.state, pool, &RoundOptions::default());
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].job, high);
    assert_eq!(
        plan.diagnostics.head.as_ref().map(|head| head.job),
        Some(low)
    );
}

#[test]
fn a_round_respects_the_placement_limit() {
    let (mut cluster, pool, tenant, _) = public_cluster(2);
    for _ in 0..10 {
        cluster.submit(tenant, notebook(pool, 1));
    }
    let options = RoundOptions {
        max_placements: 3,
        ..RoundOptions::default()
    };
    let plan = plan_round(&cluster.state, pool, &options);
    assert_eq!(plan.placements.len(), 3);
    assert_eq!(plan.diagnostics.jobs_placed, 3);
    assert_eq!(plan.diagnostics.replicas_placed, 3);
}

#[test]
fn a_round_stops_once_the_pool_is_full_and_the_head_is_known() {
    let (mut cluster, pool, tenant, _) = public_cluster(2);
    for _ in 0..4 {
        cluster.submit(tenant, notebook(pool, 4));
    }
    let head = cluster.submit(tenant, notebook(pool, 1));
    for _ in 0..20 {
        cluster.submit(tenant, notebook(pool, 1));
    }
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    assert_eq!(plan.placements.len(), 4);
    assert_eq!(
        plan.diagnostics.head.as_ref().map(|head| head.job),
        Some(head)
    );
    assert!(plan.diagnostics.stopped_with_pool_full);
    assert_eq!(
        plan.diagnostics.jobs_considered, 5,
        "nothing after the head is looked at"
    );
    assert_eq!(cluster.state.queue_length(pool), 21);

    // With room left somewhere, the round goes through the whole queue.
    let (mut cluster, pool, tenant, _) = public_cluster(2);
    cluster.submit(tenant, training(pool, 3, 8));
    for _ in 0..5 {
        cluster.submit(tenant, notebook(pool, 1));
    }
    let plan = plan_round(&cluster.state, pool, &RoundOptions::default());
    assert!(!plan.diagnostics.stopped_with_pool_full);
    assert_eq!(plan.diagnostics.jobs_considered, 6);
    assert_eq!(plan.placements.len(), 5);
}
