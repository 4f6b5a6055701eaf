//! Correlated node loss as the scheduler sees it: the gangs displaced by a rack lost in
//! one `NodesLost` entry are placed together on healthy nodes in priority order in the
//! next round; nodes the leader has not heard from lately (`unavailable_nodes`) get no
//! new placements; jobs held back after a disruption wait for their time.

use crate::common::{rejected_jobs, training, with_priority, Cluster};
use corral_model::ids::{JobId, NodeId};
use corral_model::limits::{DISRUPTIONS_WITHOUT_BACKOFF, MAX_DISRUPTION_BACKOFF_MS};
use corral_model::{Command, JobState, Placement, Principal};
use corral_scheduler::{plan_round, RoundOptions};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn a_lost_rack_is_replaced_in_one_round_in_priority_order() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 10_000);
    cluster.register_nodes(&flavor, 14, &BTreeMap::new(), &[]);
    let pool = cluster.dedicated_pool("alpha-pool", tenant, &[(&flavor, 14)]);
    let nodes: Vec<NodeId> = cluster.state.pool_nodes(pool).map(|node| node.id).collect();
    let (rack, healthy) = nodes.split_at(8);
    // Four 2-node gangs fill the rack; the healthy nodes have room for three of them.
    let mut gangs = Vec::new();
    for (pair, priority) in rack.chunks(2).zip([1, 3, 2, 1]) {
        let job = cluster.submit(tenant, with_priority(training(pool, 2, 8), priority));
        cluster
            .apply_placements(
                pool,
                vec![Placement {
                    job,
                    assignments: vec![(0, pair[0]), (1, pair[1])],
                }],
            )
            .unwrap();
        gangs.push(job);
    }
    cluster.start_all_replicas();
    cluster.must(
        Principal::System,
        Command::NodesLost {
            nodes: rack.to_vec(),
        },
    );
    assert_eq!(cluster.state.queue_length(pool), 4);
    let (plan, applied) = cluster.run_round(pool);
    assert!(rejected_jobs(&applied).is_empty());
    // Priority 3, then 2, then the older of the two priority-1 gangs; all on healthy
    // nodes, in one round.
    let placed: Vec<JobId> = plan
        .placements
        .iter()
        .map(|placement| placement.job)
        .collect();
    assert_eq!(placed, vec![gangs[1], gangs[2], gangs[0]]);
    for placement in &plan.placements {
        for (_, node) in &placement.assignments {
            assert!(healthy.contains(node), "{node} is on the lost rack");
        }
    }
    for gang in &placed {
        let job = cluster.state.job(*gang).unwrap();
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.retries_used, 0);
    }
    assert_eq!(
        cluster.state.job(gangs[3]).unwrap().state,
        JobState::Pending
    );
    cluster.assert_invariants();
}

#[test]
fn silent_nodes_get_no_new_placements() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 10_000);
    cluster.register_nodes(&flavor, 4, &BTreeMap::new(), &[]);
    let pool = cluster.dedicated_pool("alpha-pool", tenant, &[(&flavor, 4)]);
    let nodes: Vec<NodeId> = cluster.state.pool_nodes(pool).map(|node| node.id).collect();
    let silent: BTreeSet<NodeId> = nodes[..2].iter().copied().collect();
    // A gang of three cannot be placed on the two heard-from nodes: all or nothing.
    let wide = cluster.submit(tenant, training(pool, 3, 8));
    let singles: Vec<JobId> = (0..4)
        .map(|_| cluster.submit(tenant, training(pool, 1, 8)))
        .collect();
    let options = RoundOptions {
        unavailable_nodes: silent.clone(),
        ..RoundOptions::default()
    };
    let plan = plan_round(&cluster.state, pool, &options);
    let used: BTreeSet<NodeId> = plan
        .placements
        .iter()
        .flat_map(|placement| placement.assignments.iter().map(|(_, node)| *node))
        .collect();
    assert!(used.is_disjoint(&silent), "{used:?}");
    assert_eq!(used.len(), 2);
    assert!(plan
        .placements
        .iter()
        .all(|placement| placement.job != wide));
    assert_eq!(plan.placements.len(), 2);
    assert!(singles.contains(&plan.placements[0].job));
    // Without the liveness view, the same round uses every node.
    let unaware = plan_round(&cluster.state, pool, &RoundOptions::default());
    assert_eq!(unaware.placements.len(), 2);
    assert_eq!(unaware.placements[0].job, wide, "the wide gang goes first");
}

#[test]
fn a_job_held_back_after_disruptions_waits_for_its_time() {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let tenant = cluster.tenant("alpha", 10_000);
    cluster.register_nodes(&flavor, 2, &BTreeMap::new(), &[]);
    let pool = cluster.dedicated_pool("alpha-pool", tenant, &[(&flavor, 2)]);
    let nodes: Vec<NodeId> = cluster.state.pool_nodes(pool).map(|node| node.id).collect();
    let job = cluster.submit(tenant, training(pool, 1, 8));
    for _ in 0..=DISRUPTIONS_WITHOUT_BACKOFF {
        cluster.advance_ms(MAX_DISRUPTION_BACKOFF_MS);
        let (plan, _) = cluster.run_round(pool);
        assert_eq!(plan.placements.len(), 1);
        let node = plan.placements[0].assignments[0].1;
        cluster.must(Principal::System, Command::NodesLost { nodes: vec![node] });
        cluster.fx.agent(Command::NodeRecovered { node });
    }
    let until = cluster
        .state
        .job(job)
        .unwrap()
        .not_before_ms
        .expect("held back");
    let early = RoundOptions {
        now_ms: Some(until - 1),
        ..RoundOptions::default()
    };
    assert!(plan_round(&cluster.state, pool, &early).is_empty());
    let due = RoundOptions {
        now_ms: Some(until),
        ..RoundOptions::default()
    };
    let plan = plan_round(&cluster.state, pool, &due);
    assert_eq!(plan.placements.len(), 1);
    assert!(nodes.contains(&plan.placements[0].assignments[0].1));
}
