//! Which nodes the driver-upgrade loop isolates next (`nodes_to_isolate`,
//! `nodes_to_isolate_in`): order per mode, the batch bound, the nodes it skips, and
//! agreement with the state machine (every chosen node is accepted by
//! `NodeUpgradeBegin`). Also: scheduling rounds never use a hot standby.

use crate::common::{inference, notebook, rejected_jobs, Cluster};
use corral_model::ids::{NodeId, PoolId, TenantId};
use corral_model::pool::UpgradeMode;
use corral_model::{Command, DriverSpec, NodeStatus, Placement, Principal};
use corral_scheduler::{nodes_to_isolate, nodes_to_isolate_in, plan_round, RoundOptions};
use corral_state::State;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const TARGET: &str = "550.2";

/// A dedicated pool of `nodes` eight-accelerator nodes, owned by a fresh tenant.
fn dedicated(cluster: &mut Cluster, name: &str, nodes: u32) -> (PoolId, TenantId, Vec<NodeId>) {
    let flavor = match cluster.state.flavor("gpu-8") {
        Some(defined) => defined.name.clone(),
        None => cluster.define_flavor(8),
    };
    let tenant = cluster.tenant(&format!("{name}-owner"), 10_000);
    cluster.register_nodes(&flavor, nodes, &BTreeMap::new(), &[]);
    let pool = cluster.dedicated_pool(name, tenant, &[(flavor.as_str(), nodes)]);
    let ids: Vec<NodeId> = cluster.state.pool_nodes(pool).map(|node| node.id).collect();
    (pool, tenant, ids)
}

fn request_upgrade(
    cluster: &mut Cluster,
    tenant: TenantId,
    pool: PoolId,
    mode: UpgradeMode,
    batch_size: u32,
) {
    cluster.must(
        Principal::TenantUser(tenant),
        Command::PoolRequestDriverUpgrade {
            pool,
            target: DriverSpec {
                gpu_driver_version: Some(TARGET.into()),
                npu_driver_version: None,
            },
            mode,
            batch_size,
        },
    );
}

fn begin(cluster: &mut Cluster, node: NodeId) {
    cluster.must(Principal::System, Command::NodeUpgradeBegin { node });
}

fn report(cluster: &mut Cluster, node: NodeId, version: &str) {
    cluster.must(
        Principal::Node(node),
        Command::NodeDriverReport {
            node,
            gpu_driver_version: Some(version.into()),
            npu_driver_version: None,
        },
    );
}

/// Place `replicas` one-accelerator notebooks on the node.
fn occupy(cluster: &mut Cluster, tenant: TenantId, pool: PoolId, node: NodeId, replicas: u32) {
    for _ in 0..replicas {
        let job = cluster.submit(tenant, notebook(pool, 1));
        let applied = cluster
            .apply_placements(
                pool,
                vec![Placement {
                    job,
                    assignments: vec![(0, node)],
                }],
            )
            .expect("plan accepted");
        assert!(rejected_jobs(&applied).is_empty(), "{:?}", applied.events);
    }
}

fn isolated(state: &State, pool: PoolId) -> usize {
    state
        .pool_nodes(pool)
        .filter(|node| node.upgrading.is_some())
        .count()
}

#[test]
fn nothing_is_isolated_without_a_pool_upgrade() {
    let mut cluster = Cluster::new();
    let (pool, _, _) = dedicated(&mut cluster, "owned", 3);
    let flavor = cluster.define_flavor(4);
    cluster.register_nodes(&flavor, 2, &BTreeMap::new(), &[]);
    let public = cluster.public_pool(&[(flavor.as_str(), 2)]);
    assert!(nodes_to_isolate(&cluster.state).is_empty());
    assert!(nodes_to_isolate_in(&cluster.state, pool).is_empty());
    assert!(nodes_to_isolate_in(&cluster.state, public).is_empty());
    assert!(nodes_to_isolate_in(&cluster.state, PoolId(999)).is_empty());
}

#[test]
fn secure_mode_takes_the_nodes_with_the_fewest_replicas_idle_first() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 5);
    for (node, replicas) in nodes.iter().zip([2, 0, 1, 0, 3]) {
        occupy(&mut cluster, tenant, pool, *node, replicas);
    }
    request_upgrade(&mut cluster, tenant, pool, UpgradeMode::Secure, 3);
    // Idle nodes by id, then the node with one replica.
    assert_eq!(
        nodes_to_isolate_in(&cluster.state, pool),
        vec![nodes[1], nodes[3], nodes[2]]
    );
    assert_eq!(
        nodes_to_isolate(&cluster.state),
        vec![nodes[1], nodes[3], nodes[2]]
    );
}

#[test]
fn forcible_mode_goes_in_node_order_whatever_runs_there() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 5);
    for (node, replicas) in nodes.iter().zip([2, 0, 1, 0, 3]) {
        occupy(&mut cluster, tenant, pool, *node, replicas);
    }
    request_upgrade(&mut cluster, tenant, pool, UpgradeMode::Forcible, 3);
    assert_eq!(
        nodes_to_isolate_in(&cluster.state, pool),
        nodes[..3].to_vec()
    );
}

#[test]
fn the_batch_bound_counts_nodes_already_isolated() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 4);
    request_upgrade(&mut cluster, tenant, pool, UpgradeMode::Forcible, 2);
    begin(&mut cluster, nodes[0]);
    assert_eq!(nodes_to_isolate_in(&cluster.state, pool), vec![nodes[1]]);
    begin(&mut cluster, nodes[1]);
    assert!(nodes_to_isolate_in(&cluster.state, pool).is_empty());
    // An isolated node that was lost still counts.
    cluster.must(Principal::System, Command::NodeLost { node: nodes[0] });
    assert!(nodes_to_isolate_in(&cluster.state, pool).is_empty());
    // One finishing makes room for exactly one more.
    report(&mut cluster, nodes[1], TARGET);
    assert_eq!(nodes_to_isolate_in(&cluster.state, pool), vec![nodes[2]]);
}

#[test]
fn nodes_at_the_target_not_available_or_already_upgrading_are_skipped() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 6);
    request_upgrade(&mut cluster, tenant, pool, UpgradeMode::Secure, 6);
    report(&mut cluster, nodes[0], TARGET);
    cluster.must(Principal::System, Command::NodeLost { node: nodes[1] });
    begin(&mut cluster, nodes[2]);
    // Another version than the target does not count as upgraded.
    report(&mut cluster, nodes[3], "540.0");
    assert_eq!(
        nodes_to_isolate_in(&cluster.state, pool),
        vec![nodes[3], nodes[4], nodes[5]]
    );
    // The lost node is a candidate again once it is back.
    cluster.must(
        Principal::Node(nodes[1]),
        Command::NodeRecovered { node: nodes[1] },
    );
    assert_eq!(
        nodes_to_isolate_in(&cluster.state, pool),
        vec![nodes[1], nodes[3], nodes[4], nodes[5]]
    );
}

#[test]
fn every_pool_with_an_upgrade_contributes_in_pool_order() {
    let mut cluster = Cluster::new();
    let (first, first_owner, first_nodes) = dedicated(&mut cluster, "first", 3);
    let (second, second_owner, second_nodes) = dedicated(&mut cluster, "second", 3);
    let (_quiet, _, _) = dedicated(&mut cluster, "quiet", 2);
    assert!(first < second);
    request_upgrade(&mut cluster, second_owner, second, UpgradeMode::Forcible, 2);
    request_upgrade(&mut cluster, first_owner, first, UpgradeMode::Secure, 1);
    let mut expected = vec![first_nodes[0]];
    expected.extend_from_slice(&second_nodes[..2]);
    assert_eq!(nodes_to_isolate(&cluster.state), expected);
}

#[test]
fn the_upgrade_loop_reaches_every_node_within_the_batch_bound() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 5);
    for (node, replicas) in nodes.iter().zip([1, 0, 2, 0, 1]) {
        occupy(&mut cluster, tenant, pool, *node, replicas);
    }
    cluster.start_all_replicas();
    request_upgrade(&mut cluster, tenant, pool, UpgradeMode::Secure, 2);
    let mut order = Vec::new();
    for _ in 0..20 {
        if cluster
            .state
            .pool(pool)
            .expect("pool")
            .pending_upgrade
            .is_none()
        {
            break;
        }
        // The leader proposes a begin per chosen node; each is accepted.
        for node in nodes_to_isolate(&cluster.state) {
            begin(&mut cluster, node);
            order.push(node);
        }
        assert!(isolated(&cluster.state, pool) <= 2);
        assert!(nodes_to_isolate(&cluster.state).is_empty());
        // Work on isolated nodes finishes; agents of empty isolated nodes upgrade.
        let isolated_nodes: Vec<NodeId> = cluster
            .state
            .pool_nodes(pool)
            .filter(|node| node.upgrading.is_some())
            .map(|node| node.id)
            .collect();
        let mut finishing = Vec::new();
        for node in &isolated_nodes {
            for allocation in &cluster.state.node(*node).expect("node").allocations {
                finishing.push((allocation.job, allocation.rank, *node));
            }
        }
        for (job, rank, node) in finishing.into_iter().take(1) {
            cluster.must(
                Principal::Node(node),
                Command::ReplicaExited {
                    job,
                    rank,
                    node,
                    exit_code: 0,
                    oom_killed: false,
                },
            );
        }
        let ready: Vec<NodeId> = cluster
            .state
            .pool_nodes(pool)
            .filter(|node| node.ready_to_upgrade())
            .map(|node| node.id)
            .collect();
        for node in ready {
            report(&mut cluster, node, TARGET);
        }
        cluster.assert_invariants();
    }
    assert_eq!(
        cluster.state.pool(pool).expect("pool").pending_upgrade,
        None
    );
    // Idle nodes went first (by id), then the busier ones as the batch freed up.
    assert_eq!(order[..2], [nodes[1], nodes[3]]);
    assert_eq!(
        order.iter().copied().collect::<BTreeSet<_>>(),
        nodes.iter().copied().collect::<BTreeSet<_>>()
    );
    assert_eq!(order.len(), nodes.len());
    assert!(cluster
        .state
        .pool_nodes(pool)
        .all(|node| node.schedulable && node.upgrading.is_none()));
}

// Hot standbys in scheduling rounds.

fn set_standby(cluster: &mut Cluster, tenant: TenantId, node: NodeId) {
    cluster.must(
        Principal::TenantUser(tenant),
        Command::NodeSetStandby {
            node,
            standby: true,
        },
    );
}

#[test]
fn a_standby_with_the_lowest_id_does_not_hide_the_other_nodes() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 3);
    set_standby(&mut cluster, tenant, nodes[0]);
    let job = cluster.submit(tenant, notebook(pool, 1));
    let plan = plan_round(&cluster.state, pool, &RoundOptions::default());
    assert_eq!(plan.placements.len(), 1, "{plan:?}");
    let placement = &plan.placements[0];
    assert_eq!(placement.job, job);
    assert!(placement
        .assignments
        .iter()
        .all(|(_, node)| *node != nodes[0]));
    let applied = cluster.apply_plan(&plan);
    assert!(rejected_jobs(&applied).is_empty());
    cluster.assert_invariants();
}

#[test]
fn a_round_never_places_on_a_standby() {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", 3);
    set_standby(&mut cluster, tenant, nodes[2]);
    // Three full-node replicas: only the two active nodes can take one each.
    let service = cluster.submit(tenant, inference(pool, 3, 8));
    let plan = plan_round(&cluster.state, pool, &RoundOptions::default());
    let used: BTreeSet<NodeId> = plan
        .placements
        .iter()
        .flat_map(|placement| placement.assignments.iter().map(|(_, node)| *node))
        .collect();
    assert_eq!(used, [nodes[0], nodes[1]].into_iter().collect());
    let applied = cluster.apply_plan(&plan);
    assert!(rejected_jobs(&applied).is_empty());
    assert!(cluster.state.node(nodes[2]).expect("node").is_idle());
    // Once the standby is promoted (a node was lost), the round uses it.
    cluster.must(Principal::System, Command::NodeLost { node: nodes[0] });
    assert!(!cluster.state.node(nodes[2]).expect("node").standby);
    let plan = plan_round(&cluster.state, pool, &RoundOptions::default());
    assert!(plan
        .placements
        .iter()
        .any(|placement| placement.job == service
            && placement
                .assignments
                .iter()
                .any(|(_, node)| *node == nodes[2])));
    let applied = cluster.apply_plan(&plan);
    assert!(rejected_jobs(&applied).is_empty());
    cluster.assert_invariants();
}

// Property.

#[derive(Clone, Debug)]
struct NodeSetup {
    replicas: u32,
    at_target: bool,
    lost: bool,
    isolate: bool,
    other_version: bool,
}

#[derive(Clone, Debug)]
struct Setup {
    nodes: Vec<NodeSetup>,
    forcible: bool,
    batch: u8,
}

fn node_setup() -> impl Strategy<Value = NodeSetup> {
    (0u32..4, 0u8..4, 0u8..5, 0u8..4, any::<bool>()).prop_map(
        |(replicas, at_target, lost, isolate, other_version)| NodeSetup {
            replicas,
            at_target: at_target == 0,
            lost: lost == 0,
            isolate: isolate == 0,
            other_version,
        },
    )
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::collection::vec(node_setup(), 1..9),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(nodes, forcible, batch)| Setup {
            nodes,
            forcible,
            batch,
        })
}

fn build(setup: &Setup) -> (Cluster, PoolId) {
    let mut cluster = Cluster::new();
    let (pool, tenant, nodes) = dedicated(&mut cluster, "owned", setup.nodes.len() as u32);
    for (node, choice) in nodes.iter().zip(&setup.nodes) {
        occupy(&mut cluster, tenant, pool, *node, choice.replicas);
    }
    cluster.start_all_replicas();
    let mode = if setup.forcible {
        UpgradeMode::Forcible
    } else {
        UpgradeMode::Secure
    };
    let batch = 1 + u32::from(setup.batch) % nodes.len() as u32;
    request_upgrade(&mut cluster, tenant, pool, mode, batch);
    for (node, choice) in nodes.iter().zip(&setup.nodes) {
        // The state machine may refuse some (batch full): that is part of the setup.
        if choice.isolate {
            let _ = cluster.apply(Principal::System, Command::NodeUpgradeBegin { node: *node });
        }
    }
    for (node, choice) in nodes.iter().zip(&setup.nodes) {
        if choice.other_version {
            report(&mut cluster, *node, "540.0");
        }
        if choice.at_target {
            report(&mut cluster, *node, TARGET);
        }
        if choice.lost {
            cluster.must(Principal::System, Command::NodeLost { node: *node });
        }
    }
    cluster.assert_invariants();
    (cluster, pool)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_choice_respects_the_bound_skips_what_it_must_and_is_deterministic(setup in setup()) {
        let (mut cluster, pool) = build(&setup);
        let state = &cluster.state;
        let chosen = nodes_to_isolate_in(state, pool);
        // Deterministic: the same answer twice, and on a restored snapshot.
        prop_assert_eq!(&chosen, &nodes_to_isolate_in(state, pool));
        let restored = State::decode_snapshot(&state.encode_snapshot()).expect("decodes");
        prop_assert_eq!(&chosen, &nodes_to_isolate_in(&restored, pool));
        prop_assert_eq!(&chosen, &nodes_to_isolate(state));

        let Some(upgrade) = state.pool(pool).expect("pool").pending_upgrade.clone() else {
            prop_assert!(chosen.is_empty());
            return Ok(());
        };
        let room = (upgrade.batch_size as usize).saturating_sub(isolated(state, pool));
        prop_assert!(chosen.len() <= room, "{} chosen, room {}", chosen.len(), room);
        let distinct: BTreeSet<NodeId> = chosen.iter().copied().collect();
        prop_assert_eq!(distinct.len(), chosen.len());
        let candidate = |node: &corral_model::Node| {
            node.upgrading.is_none()
                && node.status == NodeStatus::Available
                && !upgrade.target.is_run_by(node)
        };
        for id in &chosen {
            let node = state.node(*id).expect("chosen node exists");
            prop_assert_eq!(node.pool, Some(pool));
            prop_assert!(node.upgrading.is_none(), "{} already upgrading", id);
            prop_assert_eq!(node.status, NodeStatus::Available);
            prop_assert!(!upgrade.target.is_run_by(node), "{} already at the target", id);
        }
        // As many as fit, and the best ones by the mode's order.
        let key = |node: &corral_model::Node| match upgrade.mode {
            UpgradeMode::Secure => (node.allocations.len(), node.id),
            UpgradeMode::Forcible => (0, node.id),
        };
        let mut candidates: Vec<(usize, NodeId)> =
            state.pool_nodes(pool).filter(|node| candidate(node)).map(key).collect();
        candidates.sort_unstable();
        prop_assert_eq!(chosen.len(), room.min(candidates.len()));
        let expected: Vec<NodeId> = candidates.iter().take(room).map(|(_, id)| *id).collect();
        prop_assert_eq!(&chosen, &expected);

        // The state machine accepts every chosen node, and then there is no room left
        // or no candidate left.
        for node in &chosen {
            let result = cluster.apply(Principal::System, Command::NodeUpgradeBegin { node: *node });
            prop_assert!(result.is_ok(), "{} refused: {:?}", node, result);
        }
        cluster.assert_invariants();
        prop_assert!(nodes_to_isolate_in(&cluster.state, pool).is_empty());
        prop_assert!(isolated(&cluster.state, pool) <= upgrade.batch_size as usize);
    }
}
