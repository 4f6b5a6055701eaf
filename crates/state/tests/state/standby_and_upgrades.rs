//! Hot standby nodes (NodeSetStandby, promotion on NodeLost), node isolation for a
//! pool's driver upgrade (NodeUpgradeBegin, ended by NodeDriverReport), and agent
//! addresses (NodeRegister.agent_address, NodeSetAgentAddress): every happy path and
//! rejection, the secure and forcible upgrade flows, the batch bound.
//!
//! The fixture checks every invariant after every entry, and that a rejected entry
//! changes nothing but the applied index (content digest, time and events compared).

use corral_model::ids::{NodeId, PoolId};
use corral_model::node::NodeUpgrade;
use corral_model::pool::UpgradeMode;
use corral_model::{Command, DriverSpec, Event, JobKind, JobState, NodeStatus, Principal};
use corral_state::testing::*;
use corral_state::State;

const TARGET: &str = "550.2";
const OLD: &str = "535.1";

fn request_upgrade(pool: PoolId, mode: UpgradeMode, batch_size: u32) -> Command {
    Command::PoolRequestDriverUpgrade {
        pool,
        target: DriverSpec {
            gpu_driver_version: Some(TARGET.into()),
            npu_driver_version: None,
        },
        mode,
        batch_size,
    }
}

fn begin(node: NodeId) -> Command {
    Command::NodeUpgradeBegin { node }
}

fn report(node: NodeId, gpu: &str) -> Command {
    Command::NodeDriverReport {
        node,
        gpu_driver_version: Some(gpu.into()),
        npu_driver_version: None,
    }
}

fn standby(node: NodeId, standby: bool) -> Command {
    Command::NodeSetStandby { node, standby }
}

fn set_address(node: NodeId, address: &str) -> Command {
    Command::NodeSetAgentAddress {
        node,
        address: address.into(),
        isolation: None,
    }
}

/// The world with alpha's pool upgrading its GPU driver to `TARGET`.
fn upgrading_world(mode: UpgradeMode, batch_size: u32) -> World {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    w.ok(user, request_upgrade(pool, mode, batch_size));
    w
}

/// The world with alpha's pool grown to four GPU nodes (plus its CPU node).
fn four_gpu_world() -> (World, Vec<NodeId>) {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    w.ok(
        user,
        Command::PoolScale {
            pool,
            flavor: GPU.into(),
            zone: ZONE.into(),
            node_count: 4,
        },
    );
    let gpus: Vec<NodeId> = w
        .state
        .pool_nodes(pool)
        .filter(|node| node.flavor == GPU)
        .map(|node| node.id)
        .collect();
    assert_eq!(gpus.len(), 4);
    (w, gpus)
}

fn promotions(applied: &corral_state::Applied) -> Vec<(NodeId, NodeId)> {
    applied
        .events
        .iter()
        .filter_map(|record| match record.event {
            Event::NodeStandbyPromoted { node, replaced } => Some((node, replaced)),
            _ => None,
        })
        .collect()
}

// NodeSetStandby

#[test]
fn node_set_standby_makes_an_idle_dedicated_node_a_standby_and_back() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[1];
    let applied = w.ok(user.clone(), standby(node, true));
    assert_eq!(
        events(&applied),
        vec![Event::NodeStandbyChanged {
            node,
            standby: true
        }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert!(w.node(node).standby);
    // A standby stays available and schedulable; only the fit function keeps work off.
    assert_eq!(w.node(node).status, NodeStatus::Available);
    assert!(w.node(node).schedulable);
    let job = w.submit(alpha, training(pool, 1, 1));
    let reason = w.place_expecting_refusal(pool, job, &[(0, node)]);
    assert!(reason.contains("standby"), "{reason}");
    assert_eq!(w.queued(pool), vec![job]);
    // The platform admin may operate it too, and make it a regular node again.
    let applied = w.admin(standby(node, false));
    assert_eq!(
        events(&applied),
        vec![Event::NodeStandbyChanged {
            node,
            standby: false
        }]
    );
    assert!(!w.node(node).standby);
    w.place_on(job, &[node]);
}

#[test]
fn node_set_standby_without_change_is_refused() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.alpha_user());
    let rejection = w.reject(user.clone(), standby(node, false));
    expect_state(&rejection, "node", "Active", "set standby of");
    w.ok(user.clone(), standby(node, true));
    let rejection = w.reject(user, standby(node, true));
    expect_state(&rejection, "node", "Standby", "set standby of");
}

#[test]
fn node_set_standby_refuses_a_node_holding_work() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, inference(pool, 2, 1));
    w.place_on(job, &[node, node]);
    let rejection = w.reject(user.clone(), standby(node, true));
    expect_in_use(&rejection, "node", "2 replicas");
    // Once the work is gone it may become a standby.
    w.ok(user.clone(), Command::JobTerminate { job });
    assert!(w.node(node).is_idle());
    w.ok(user, standby(node, true));
}

#[test]
fn node_set_standby_refuses_free_and_public_nodes() {
    let mut w = World::new();
    let (public_node, free) = (w.public_gpus[0], w.free_node_ids(GPU)[0]);
    let rejection = w.reject(Principal::PlatformAdmin, standby(free, true));
    expect_invalid(&rejection, "node");
    let rejection = w.reject(Principal::PlatformAdmin, standby(public_node, true));
    expect_invalid(&rejection, "node");
}

#[test]
fn node_set_standby_of_an_unknown_or_foreign_node_is_not_found() {
    let mut w = World::new();
    let (alpha_node, public_node) = (w.alpha_gpus[0], w.public_gpus[0]);
    let free = w.free_node_ids(GPU)[0];
    let (alpha_user, beta_user) = (w.alpha_user(), w.beta_user());
    for node in [alpha_node, public_node, free, NodeId(999)] {
        let rejection = w.reject(beta_user.clone(), standby(node, true));
        expect_not_found(&rejection, "node");
    }
    for node in [public_node, free] {
        let rejection = w.reject(alpha_user.clone(), standby(node, true));
        expect_not_found(&rejection, "node");
    }
    let rejection = w.reject(Principal::PlatformAdmin, standby(NodeId(999), true));
    expect_not_found(&rejection, "node");
    // The leader's loops are not pool operators; a node's own credential may not
    // change even its own role.
    let rejection = w.reject(Principal::System, standby(alpha_node, true));
    expect_not_found(&rejection, "node");
    let rejection = w.reject(Principal::Node(alpha_node), standby(alpha_node, true));
    expect_denied(&rejection);
}

#[test]
fn a_standby_never_receives_a_placement() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let (active, spare) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    w.ok(user, standby(spare, true));
    // A gang with one rank on the standby is refused as a whole.
    let gang = w.submit(alpha, training(pool, 2, 2));
    let reason = w.place_expecting_refusal(pool, gang, &[(0, active), (1, spare)]);
    assert!(reason.contains("standby"), "{reason}");
    assert!(w.node(active).is_idle());
    assert_eq!(w.job_state(gang), JobState::Pending);
    // CPU-only work is refused too (the check does not depend on accelerators).
    let cpu_job = w.submit(alpha, inference(pool, 1, 0));
    let reason = w.place_expecting_refusal(pool, cpu_job, &[(0, spare)]);
    assert!(reason.contains("standby"), "{reason}");
    // The active node takes the gang.
    w.place_on(gang, &[active, active]);
    assert!(w.node(spare).is_idle());
}

#[test]
fn node_lost_promotes_the_lowest_id_standby_of_the_same_flavor() {
    let (mut w, gpus) = four_gpu_world();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let cpu = w.alpha_cpu;
    // Mark the higher id first: the choice is by id, not by order of marking.
    w.ok(user.clone(), standby(gpus[3], true));
    w.ok(user, standby(gpus[2], true));
    let gang = w.submit(alpha, training(pool, 1, 4));
    w.place_on(gang, &[gpus[0]]);
    w.start_all(gang);

    // A CPU node has no standby of its flavor: nothing is promoted.
    let applied = w.system(Command::NodeLost { node: cpu });
    assert!(promotions(&applied).is_empty());
    assert!(w.node(gpus[2]).standby && w.node(gpus[3]).standby);

    // The lost GPU node is replaced by the lowest-id GPU standby.
    let applied = w.system(Command::NodeLost { node: gpus[0] });
    assert_eq!(promotions(&applied), vec![(gpus[2], gpus[0])]);
    let record = applied
        .events
        .iter()
        .find(|record| matches!(record.event, Event::NodeStandbyPromoted { .. }))
        .expect("promotion event");
    assert_eq!(record.tenant, Some(alpha));
    assert!(!w.node(gpus[2]).standby);
    assert!(w.node(gpus[3]).standby);
    // The evicted gang can now run on the promoted node.
    assert_eq!(w.job_state(gang), JobState::Pending);
    w.place_on(gang, &[gpus[2]]);

    // The next loss takes the next standby; after that there is none left.
    let applied = w.system(Command::NodeLost { node: gpus[1] });
    assert_eq!(promotions(&applied), vec![(gpus[3], gpus[1])]);
    let applied = w.system(Command::NodeLost { node: gpus[2] });
    assert!(promotions(&applied).is_empty());
    assert!(w.state.nodes().all(|node| !node.standby));
}

#[test]
fn node_lost_promotes_only_an_available_standby() {
    let (mut w, gpus) = four_gpu_world();
    let user = w.alpha_user();
    w.ok(user.clone(), standby(gpus[2], true));
    w.ok(user, standby(gpus[3], true));
    // The lowest-id standby is itself down; the next one is promoted.
    w.system(Command::NodeLost { node: gpus[2] });
    assert!(w.node(gpus[2]).standby);
    let applied = w.system(Command::NodeLost { node: gpus[0] });
    assert_eq!(promotions(&applied), vec![(gpus[3], gpus[0])]);
    assert!(w.node(gpus[2]).standby);
}

#[test]
fn losing_a_standby_promotes_nothing() {
    let (mut w, gpus) = four_gpu_world();
    let user = w.alpha_user();
    w.ok(user.clone(), standby(gpus[2], true));
    w.ok(user, standby(gpus[3], true));
    // A lost standby held no work and replaced nothing: the other standby stays one.
    let applied = w.system(Command::NodeLost { node: gpus[3] });
    assert!(promotions(&applied).is_empty(), "{:?}", events(&applied));
    assert!(w.node(gpus[2]).standby);
}

#[test]
fn standbys_of_another_pool_are_not_promoted() {
    let mut w = World::new();
    let (beta, beta_net, alpha_node) = (w.beta, w.beta_net, w.alpha_gpus[0]);
    let beta_pool =
        w.create_dedicated_pool(beta, "beta-pool", beta_net, &[(GPU, 2)], prepaid(1, false));
    let spare = w.pool_node_ids(beta_pool)[1];
    let beta_user = w.beta_user();
    w.ok(beta_user, standby(spare, true));
    let applied = w.system(Command::NodeLost { node: alpha_node });
    assert!(promotions(&applied).is_empty());
    assert!(w.node(spare).standby);
    // A public node's loss promotes nothing either.
    let public_node = w.public_gpus[0];
    let applied = w.system(Command::NodeLost { node: public_node });
    assert!(promotions(&applied).is_empty());
    assert!(w.node(spare).standby);
}

#[test]
fn a_standby_leaving_its_pool_is_a_regular_free_node() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let spare = w.alpha_gpus[1];
    w.ok(user.clone(), standby(spare, true));
    // Scale-in takes idle nodes first by id; lock the other GPU node so the standby goes.
    let kept = w.alpha_gpus[0];
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock {
            node: kept,
            locked: true,
        },
    );
    w.ok(
        user,
        Command::PoolScale {
            pool,
            flavor: GPU.into(),
            zone: ZONE.into(),
            node_count: 1,
        },
    );
    let node = w.node(spare);
    assert_eq!(node.pool, None);
    assert!(!node.standby);
    assert!(node.schedulable);
}

// NodeSetAgentAddress and NodeRegister.agent_address

#[test]
fn node_register_records_the_agent_address() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let mut request = node_request("host-1", GPU, ZONE);
    request.agent_address = Some("10.0.0.7:7070".into());
    let id = fx.register_node(request);
    assert_eq!(fx.node(id).agent_address.as_deref(), Some("10.0.0.7:7070"));
    let id = fx.register_node(node_request("host-2", GPU, ZONE));
    assert_eq!(fx.node(id).agent_address, None);
}

#[test]
fn node_register_refuses_a_malformed_agent_address() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let long = format!("{}:1", "h".repeat(64));
    for address in ["", "no-port", "has space:80", "tab\t:80", long.as_str()] {
        let mut request = node_request("host-1", GPU, ZONE);
        request.agent_address = Some(address.to_string());
        let rejection = fx.reject(Principal::PlatformAdmin, Command::NodeRegister(request));
        expect_invalid(&rejection, "agent_address");
    }
    assert!(fx.state.node_by_name("host-1").is_none());
}

#[test]
fn node_set_agent_address_moves_the_agent() {
    let mut w = World::new();
    let (alpha, node, free) = (w.alpha, w.alpha_gpus[0], w.free_node_ids(CPU)[0]);
    let applied = w.agent(set_address(node, "10.1.2.3:7070"));
    assert_eq!(
        events(&applied),
        vec![Event::NodeAttributesChanged { node }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert_eq!(w.node(node).agent_address.as_deref(), Some("10.1.2.3:7070"));
    // The leader's loops may set it too; a free node's event is the platform's.
    let applied = w.system(set_address(free, "[fd00::1]:7070"));
    assert_eq!(applied.events[0].tenant, None);
    assert_eq!(
        w.node(free).agent_address.as_deref(),
        Some("[fd00::1]:7070")
    );
    // Moving again replaces it.
    w.agent(set_address(node, "10.1.2.3:7071"));
    assert_eq!(w.node(node).agent_address.as_deref(), Some("10.1.2.3:7071"));
}

#[test]
fn node_set_agent_address_to_the_same_address_is_refused() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    w.agent(set_address(node, "10.1.2.3:7070"));
    let rejection = w.reject(Principal::Node(node), set_address(node, "10.1.2.3:7070"));
    expect_state(&rejection, "node", "SameAddress", "move the agent of");
}

#[test]
fn node_set_agent_address_is_refused_to_people() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let user = w.alpha_user();
    for principal in [Principal::PlatformAdmin, user] {
        expect_denied(&w.reject(principal, set_address(node, "10.1.2.3:7070")));
    }
}

#[test]
fn node_set_agent_address_refuses_malformed_addresses() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let long = format!("{}:1", "h".repeat(64));
    for address in ["", "no-port", "a b:1", "é:1", long.as_str()] {
        let rejection = w.reject(Principal::Node(node), set_address(node, address));
        expect_invalid(&rejection, "agent_address");
    }
    assert_eq!(w.node(node).agent_address, None);
}

#[test]
fn node_set_agent_address_of_an_unknown_node_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::Node(NodeId(404)),
        set_address(NodeId(404), "h:1"),
    );
    expect_not_found_id(&rejection, "node", "node-404");
}

// NodeUpgradeBegin: rejections

#[test]
fn node_upgrade_begin_is_proposed_only_by_the_leader() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let node = w.alpha_gpus[0];
    let user = w.alpha_user();
    for principal in [Principal::PlatformAdmin, Principal::Node(node), user] {
        expect_denied(&w.reject(principal, begin(node)));
    }
    assert_eq!(w.node(node).upgrading, None);
}

#[test]
fn node_upgrade_begin_of_an_unknown_node_is_not_found() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let rejection = w.reject(Principal::System, begin(NodeId(404)));
    expect_not_found(&rejection, "node");
}

#[test]
fn node_upgrade_begin_of_a_free_node_is_refused() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let free = w.free_node_ids(GPU)[0];
    let rejection = w.reject(Principal::System, begin(free));
    expect_state(&rejection, "node", "Free", "upgrade");
}

#[test]
fn node_upgrade_begin_needs_a_pool_upgrade_under_way() {
    let mut w = World::new();
    let (alpha_node, public_node) = (w.alpha_gpus[0], w.public_gpus[0]);
    for node in [alpha_node, public_node] {
        let rejection = w.reject(Principal::System, begin(node));
        expect_state(&rejection, "pool", "NotUpgrading", "upgrade a node of");
    }
}

#[test]
fn node_upgrade_begin_refuses_a_node_already_upgrading() {
    let mut w = upgrading_world(UpgradeMode::Secure, 2);
    let node = w.alpha_gpus[0];
    w.system(begin(node));
    let rejection = w.reject(Principal::System, begin(node));
    expect_state(&rejection, "node", "Upgrading", "upgrade");
}

#[test]
fn node_upgrade_begin_refuses_a_node_that_is_not_available() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let node = w.alpha_gpus[0];
    w.system(Command::NodeLost { node });
    let rejection = w.reject(Principal::System, begin(node));
    expect_state(&rejection, "node", "Abnormal", "upgrade");
    w.agent(Command::NodeRecovered { node });
    w.system(begin(node));
}

#[test]
fn node_upgrade_begin_refuses_a_node_already_at_the_target() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let node = w.alpha_gpus[0];
    w.agent(report(node, TARGET));
    let rejection = w.reject(Principal::System, begin(node));
    expect_state(&rejection, "node", "Upgraded", "upgrade");
}

#[test]
fn node_upgrade_begin_isolates_at_most_batch_size_nodes() {
    let mut w = upgrading_world(UpgradeMode::Secure, 2);
    let (first, second, cpu) = (w.alpha_gpus[0], w.alpha_gpus[1], w.alpha_cpu);
    w.system(begin(first));
    w.system(begin(second));
    let rejection = w.reject(Principal::System, begin(cpu));
    expect_state(
        &rejection,
        "pool",
        "2 nodes upgrading (max 2)",
        "isolate one more node of",
    );
    assert_eq!(w.node(cpu).upgrading, None);
    // One isolated node finishing makes room for the next.
    w.agent(report(first, TARGET));
    w.system(begin(cpu));
    let isolated = w
        .state
        .pool_nodes(w.alpha_pool)
        .filter(|node| node.upgrading.is_some())
        .count();
    assert_eq!(isolated, 2);
}

#[test]
fn a_lost_node_under_upgrade_still_counts_against_the_batch() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    w.system(begin(first));
    w.system(Command::NodeLost { node: first });
    assert!(w.node(first).upgrading.is_some());
    let rejection = w.reject(Principal::System, begin(second));
    expect_state(
        &rejection,
        "pool",
        "1 nodes upgrading (max 1)",
        "isolate one more node of",
    );
    // It comes back, reports the target, and the batch has room again.
    w.agent(Command::NodeRecovered { node: first });
    w.agent(report(first, TARGET));
    assert_eq!(w.node(first).upgrading, None);
    assert!(w.node(first).schedulable);
    w.system(begin(second));
}

// NodeUpgradeBegin: flows

#[test]
fn secure_upgrade_waits_for_the_work_then_the_report_ends_isolation() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (busy, other, cpu) = (w.alpha_gpus[0], w.alpha_gpus[1], w.alpha_cpu);
    let job = w.submit(alpha, training(pool, 1, 4));
    w.place_on(job, &[busy]);
    w.start_all(job);

    let applied = w.system(begin(busy));
    assert_eq!(
        events(&applied),
        vec![Event::NodeUpgradeStarted { node: busy, pool }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    let node = w.node(busy);
    assert_eq!(
        node.upgrading,
        Some(NodeUpgrade {
            mode: UpgradeMode::Secure,
            was_schedulable: true
        })
    );
    assert!(!node.schedulable);
    // Its work keeps running; the agent must not upgrade yet.
    assert_eq!(w.job_state(job), JobState::Running);
    assert_eq!(w.node(busy).allocations.len(), 1);
    assert!(!w.node(busy).ready_to_upgrade());
    // No new work lands on it; other nodes still take work.
    let newcomer = w.submit(alpha, training(pool, 1, 2));
    let reason = w.place_expecting_refusal(pool, newcomer, &[(0, busy)]);
    assert!(reason.contains("cordoned"), "{reason}");
    w.place_on(newcomer, &[other]);
    // Operators may not cordon or uncordon it meanwhile.
    let user = w.alpha_user();
    expect_state(
        &w.reject(user.clone(), Command::NodeUncordon { node: busy }),
        "node",
        "Upgrading",
        "change schedulability of",
    );
    expect_state(
        &w.reject(user, Command::NodeCordon { node: busy }),
        "node",
        "Upgrading",
        "change schedulability of",
    );
    // Time passing changes nothing.
    w.advance(10 * 60_000);
    w.tick();
    assert_eq!(w.job_state(job), JobState::Running);
    assert!(w.node(busy).upgrading.is_some());

    // The work finishes: the node is ready for its upgrade hook.
    w.exit_all(job, 0);
    assert_eq!(w.job_state(job), JobState::Completed);
    assert!(w.node(busy).ready_to_upgrade());
    // A report of another version does not end the isolation.
    let applied = w.agent(report(busy, "540.0"));
    assert_eq!(
        events(&applied),
        vec![Event::NodeDriverChanged { node: busy }]
    );
    assert!(w.node(busy).upgrading.is_some());
    assert!(!w.node(busy).schedulable);
    // The target does.
    let applied = w.agent(report(busy, TARGET));
    assert_eq!(
        events(&applied),
        vec![
            Event::NodeDriverChanged { node: busy },
            Event::NodeUpgradeFinished { node: busy, pool }
        ]
    );
    assert_eq!(applied.events[1].tenant, Some(alpha));
    assert_eq!(w.node(busy).upgrading, None);
    assert!(w.node(busy).schedulable);
    assert!(w.pool(pool).pending_upgrade.is_some());
    let again = w.submit(alpha, training(pool, 1, 1));
    w.place_on(again, &[busy]);

    // The next nodes, one at a time; the second is still busy when isolated.
    w.system(begin(other));
    assert_eq!(w.job_state(newcomer), JobState::Running);
    expect_state(
        &w.reject(Principal::System, begin(cpu)),
        "pool",
        "1 nodes upgrading (max 1)",
        "isolate one more node of",
    );
    w.start_all(newcomer);
    w.exit_all(newcomer, 0);
    w.agent(report(other, TARGET));
    assert!(w.pool(pool).pending_upgrade.is_some());
    w.system(begin(cpu));
    let applied = w.agent(report(cpu, TARGET));
    assert!(has_event(
        &applied,
        &Event::NodeUpgradeFinished { node: cpu, pool }
    ));
    // Every node runs the target: the pool's upgrade is over.
    assert_eq!(w.pool(pool).pending_upgrade, None);
    assert!(w.state.pool_nodes(pool).all(|node| node.upgrading.is_none()
        && node.schedulable
        && node.gpu_driver_version.as_deref() == Some(TARGET)));
    assert_eq!(
        w.pool(pool).driver.gpu_driver_version.as_deref(),
        Some(TARGET)
    );
    let rejection = w.reject(Principal::System, begin(busy));
    expect_state(&rejection, "pool", "NotUpgrading", "upgrade a node of");
}

#[test]
fn forcible_upgrade_evicts_the_work_at_once_by_its_kind() {
    let mut w = upgrading_world(UpgradeMode::Forcible, 2);
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let gang = w.submit(alpha, training(pool, 2, 2));
    w.place_on(gang, &[first, second]);
    w.start_all(gang);
    let service = w.submit(alpha, inference(pool, 2, 1));
    w.place_on(service, &[first, second]);
    w.start_all(service);
    let notebook = w.submit(alpha, notebook(pool, None));
    w.place_on(notebook, &[first]);
    w.start_all(notebook);

    let applied = w.system(begin(first));
    assert!(has_event(
        &applied,
        &Event::NodeUpgradeStarted { node: first, pool }
    ));
    assert_eq!(
        w.node(first).upgrading,
        Some(NodeUpgrade {
            mode: UpgradeMode::Forcible,
            was_schedulable: true
        })
    );
    let changes = transitions(&applied);
    // The gang restarts as a whole, spending no retry (an upgrade is a disruption);
    // its other replica is released.
    assert!(changes.contains(&(gang, JobState::Running, JobState::Pending)));
    assert_eq!(w.job(gang).retries_used, 0);
    assert_eq!(w.job(gang).disruptions, 1);
    assert!(w.job(gang).placed_replicas().next().is_none());
    // The service replaces its replica on the node; the other keeps serving.
    assert_eq!(w.job_state(service), JobState::Concerning);
    assert_eq!(w.job(service).replicas[0].node, None);
    assert_eq!(w.job(service).replicas[1].node, Some(second));
    // The notebook goes back to the queue.
    assert!(changes.contains(&(notebook, JobState::Running, JobState::Pending)));
    assert_eq!(w.queued(pool), vec![gang, service, notebook]);
    // The node is empty at once and ready for its upgrade hook.
    assert!(w.node(first).allocations.is_empty());
    assert!(w.node(first).ready_to_upgrade());
    let only_service: Vec<_> = w.node(second).allocations.iter().map(|a| a.job).collect();
    assert_eq!(only_service, vec![service]);
    // The requeued work goes elsewhere, not back onto the isolated node.
    let reason = w.place_expecting_refusal(pool, gang, &[(0, first), (1, second)]);
    assert!(reason.contains("cordoned"), "{reason}");
    w.place_on(gang, &[second, second]);
    w.start_all(gang);

    // Isolating the second node restarts the gang once more.
    w.system(begin(second));
    assert_eq!(w.job_state(gang), JobState::Pending);
    assert_eq!(w.job(gang).retries_used, 0);
    assert_eq!(w.job(gang).disruptions, 2);
    assert_eq!(w.job_state(service), JobState::Deploying);
}

#[test]
fn forcible_upgrade_spends_no_retry_of_a_gang() {
    let mut w = upgrading_world(UpgradeMode::Forcible, 2);
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let mut spec = training(pool, 1, 1);
    spec.kind = JobKind::Training { retry_limit: 1 };
    let job = w.submit(alpha, spec);
    w.place_on(job, &[first]);
    w.start_all(job);
    let applied = w.system(begin(first));
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Pending)));
    assert_eq!(w.job(job).retries_used, 0);
    w.place_on(job, &[second]);
    w.start_all(job);
    let applied = w.system(begin(second));
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Pending)));
    assert_eq!((w.job(job).retries_used, w.job(job).disruptions), (0, 2));
    assert!(w.node(second).allocations.is_empty());
    assert_eq!(w.queued(pool), vec![job]);
}

#[test]
fn forcible_upgrade_of_an_idle_node_only_isolates_it() {
    let mut w = upgrading_world(UpgradeMode::Forcible, 1);
    let (pool, node) = (w.alpha_pool, w.alpha_gpus[0]);
    let applied = w.system(begin(node));
    assert_eq!(
        events(&applied),
        vec![Event::NodeUpgradeStarted { node, pool }]
    );
    assert!(w.node(node).ready_to_upgrade());
}

#[test]
fn an_upgrade_never_uncordons_a_cordoned_node() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    w.ok(user.clone(), Command::NodeCordon { node });
    w.system(begin(node));
    assert_eq!(
        w.node(node).upgrading,
        Some(NodeUpgrade {
            mode: UpgradeMode::Secure,
            was_schedulable: false
        })
    );
    w.agent(report(node, TARGET));
    assert_eq!(w.node(node).upgrading, None);
    assert!(!w.node(node).schedulable);
    let job = w.submit(alpha, training(pool, 1, 1));
    let reason = w.place_expecting_refusal(pool, job, &[(0, node)]);
    assert!(reason.contains("cordoned"), "{reason}");
    // The operator uncordons it when they choose to.
    w.ok(user, Command::NodeUncordon { node });
    w.place_on(job, &[node]);
}

#[test]
fn a_node_drained_while_upgrading_stays_unschedulable_after_the_upgrade() {
    let mut w = upgrading_world(UpgradeMode::Secure, 2);
    let (first, second, user) = (w.alpha_gpus[0], w.alpha_gpus[1], w.alpha_user());
    w.system(begin(first));
    w.system(begin(second));
    // Drained without a deadline during the upgrade.
    w.ok(
        user.clone(),
        Command::NodeDrain {
            node: first,
            deadline_ms: None,
        },
    );
    // Drained with a deadline that passes before the upgrade ends.
    let deadline = w.clock() + 60_000;
    w.ok(
        user,
        Command::NodeDrain {
            node: second,
            deadline_ms: Some(deadline),
        },
    );
    w.set_clock(deadline);
    w.tick();
    assert_eq!(w.node(second).drain_deadline_ms, None);
    w.agent(report(first, TARGET));
    w.agent(report(second, TARGET));
    assert_eq!(w.node(first).upgrading, None);
    assert_eq!(w.node(second).upgrading, None);
    assert!(!w.node(first).schedulable, "the drain was undone");
    assert!(!w.node(second).schedulable, "the drain was undone");
}

#[test]
fn a_node_leaving_its_pool_ends_its_isolation() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let (kept, leaving) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock {
            node: kept,
            locked: true,
        },
    );
    w.system(begin(leaving));
    w.ok(
        user,
        Command::PoolScale {
            pool,
            flavor: GPU.into(),
            zone: ZONE.into(),
            node_count: 1,
        },
    );
    let node = w.node(leaving);
    assert_eq!(node.pool, None);
    assert_eq!(node.upgrading, None);
    assert!(node.schedulable);
    // The batch has room again for the pool's remaining nodes.
    w.system(begin(kept));
}

#[test]
fn the_pool_upgrade_ends_when_the_last_node_still_behind_leaves() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let (upgraded, behind, cpu) = (w.alpha_gpus[0], w.alpha_gpus[1], w.alpha_cpu);
    for node in [upgraded, cpu] {
        w.system(begin(node));
        w.agent(report(node, TARGET));
    }
    assert!(w.pool(pool).pending_upgrade.is_some());
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock {
            node: upgraded,
            locked: true,
        },
    );
    w.ok(
        user.clone(),
        Command::PoolScale {
            pool,
            flavor: GPU.into(),
            zone: ZONE.into(),
            node_count: 1,
        },
    );
    assert_eq!(w.node(behind).pool, None);
    // Every remaining node runs the target: nothing is left to upgrade, and the pool
    // accepts a new upgrade request.
    assert_eq!(w.pool(pool).pending_upgrade, None);
    w.ok(user, request_upgrade(pool, UpgradeMode::Forcible, 1));
}

#[test]
fn a_report_completing_the_pool_from_outside_the_upgrade_loop_clears_it() {
    // Nodes upgraded out of band (never isolated) still complete the pool's upgrade.
    let mut w = upgrading_world(UpgradeMode::Forcible, 1);
    let pool = w.alpha_pool;
    let nodes = w.pool_node_ids(pool);
    for node in &nodes {
        let applied = w.agent(report(*node, TARGET));
        assert!(
            !applied
                .events
                .iter()
                .any(|record| matches!(record.event, Event::NodeUpgradeFinished { .. })),
            "no node was isolated"
        );
    }
    assert_eq!(w.pool(pool).pending_upgrade, None);
}

#[test]
fn standby_nodes_are_upgraded_and_stay_standby() {
    let mut w = upgrading_world(UpgradeMode::Forcible, 1);
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let spare = w.alpha_gpus[1];
    w.ok(user, standby(spare, true));
    w.system(begin(spare));
    assert!(w.node(spare).standby);
    assert!(w.node(spare).ready_to_upgrade());
    w.agent(report(spare, TARGET));
    assert!(w.node(spare).standby);
    assert!(w.node(spare).schedulable);
    assert_eq!(w.node(spare).upgrading, None);
    assert!(w.pool(pool).pending_upgrade.is_some());
}

#[test]
fn a_snapshot_keeps_standby_upgrade_and_address_state() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let user = w.alpha_user();
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    w.system(begin(first));
    w.ok(user, standby(second, true));
    w.agent(set_address(first, "10.0.0.1:7070"));
    let bytes = w.state.encode_snapshot();
    let restored = State::decode_snapshot(&bytes).expect("a snapshot decodes");
    assert_eq!(restored.digest(), w.state.digest());
    restored.check_invariants().unwrap();
    let node = restored.node(first).expect("node");
    assert!(node.upgrading.is_some());
    assert_eq!(node.agent_address.as_deref(), Some("10.0.0.1:7070"));
    assert!(restored.node(second).expect("node").standby);
    assert_eq!(
        w.node(second).gpu_driver_version.as_deref(),
        Some(OLD),
        "the standby was not upgraded"
    );
}

// A failing upgrade hook (NodeDriverUpgradeFailed) and a cancelled upgrade
// (PoolCancelDriverUpgrade)

fn failed(node: NodeId, attempt: u32, final_attempt: bool) -> Command {
    Command::NodeDriverUpgradeFailed {
        node,
        attempt,
        final_attempt,
        output_tail: format!("installer exited 3 (attempt {attempt})"),
    }
}

#[test]
fn a_node_whose_hook_fails_for_good_stays_isolated_and_the_pool_finishes_without_it() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let (broken, good, cpu) = (w.alpha_gpus[0], w.alpha_gpus[1], w.alpha_cpu);
    w.system(begin(broken));
    // A failed attempt the agent will retry: a condition, still isolated.
    let applied = w.agent(failed(broken, 1, false));
    assert!(has_event(
        &applied,
        &Event::NodeUpgradeFailed {
            node: broken,
            pool,
            attempt: 1,
            final_attempt: false
        }
    ));
    let failure = w.node(broken).upgrade_failure.clone().expect("a condition");
    assert_eq!((failure.attempt, failure.final_attempt), (1, false));
    assert!(w.node(broken).upgrading.is_some());
    // The last attempt: out of the upgrade's batch, kept out of scheduling.
    w.agent(failed(broken, 2, true));
    let node = w.node(broken);
    assert!(node.upgrading.is_none() && !node.schedulable);
    assert!(node.upgrade_failure.as_ref().unwrap().final_attempt);
    assert_eq!(
        node.upgrade_failure.as_ref().unwrap().output_tail,
        "installer exited 3 (attempt 2)"
    );
    // It is not isolated again for this upgrade; the others go on and finish it.
    let rejection = w.reject(Principal::System, begin(broken));
    expect_state(&rejection, "node", "UpgradeFailed", "upgrade");
    for node in [good, cpu] {
        w.system(begin(node));
        w.agent(report(node, TARGET));
    }
    assert_eq!(w.pool(pool).pending_upgrade, None);
    assert!(!w.node(broken).schedulable, "left isolated");
    // A new upgrade is accepted and may try the failed node again, which clears its
    // condition when it begins.
    w.ok(
        user,
        Command::PoolRequestDriverUpgrade {
            pool,
            target: DriverSpec {
                gpu_driver_version: Some("560.1".into()),
                npu_driver_version: None,
            },
            mode: UpgradeMode::Secure,
            batch_size: 1,
        },
    );
    w.system(begin(broken));
    assert_eq!(w.node(broken).upgrade_failure, None);
    w.agent(report(broken, "560.1"));
    assert!(
        !w.node(broken).schedulable,
        "an upgrade never makes schedulable a node that was not"
    );
}

#[test]
fn uncordoning_a_failed_node_clears_its_condition() {
    let mut w = upgrading_world(UpgradeMode::Secure, 1);
    let user = w.alpha_user();
    let broken = w.alpha_gpus[0];
    w.system(begin(broken));
    w.agent(failed(broken, 1, true));
    w.ok(user, Command::NodeUncordon { node: broken });
    let node = w.node(broken);
    assert!(node.schedulable && node.upgrade_failure.is_none());
}

#[test]
fn failure_reports_come_only_from_the_node_itself_while_it_upgrades_and_are_bounded() {
    let mut w = upgrading_world(UpgradeMode::Secure, 2);
    let (node, other) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    // Not isolated for the upgrade yet.
    let rejection = w.reject(Principal::Node(node), failed(node, 1, false));
    expect_state(&rejection, "node", "NotUpgrading", "fail the upgrade of");
    w.system(begin(node));
    let rejection = w.reject(Principal::Node(other), failed(node, 1, false));
    expect_denied(&rejection);
    let user = w.alpha_user();
    let rejection = w.reject(user, failed(node, 1, false));
    expect_denied(&rejection);
    let long = Command::NodeDriverUpgradeFailed {
        node,
        attempt: 1,
        final_attempt: false,
        output_tail: "x".repeat(2049),
    };
    expect_invalid(&w.reject(Principal::Node(node), long), "output_tail");
    expect_invalid(
        &w.reject(Principal::Node(node), failed(node, 0, false)),
        "attempt",
    );
}

#[test]
fn a_cancel_releases_the_isolated_nodes_and_restores_the_declared_drivers() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let before = w.pool(pool).driver.clone();
    w.ok(user.clone(), request_upgrade(pool, UpgradeMode::Secure, 1));
    let node = w.alpha_gpus[0];
    w.system(begin(node));
    assert!(!w.node(node).schedulable);
    // Neither another tenant nor a node may cancel it.
    let beta = w.beta_user();
    expect_not_found(
        &w.reject(beta, Command::PoolCancelDriverUpgrade { pool }),
        "pool",
    );
    let applied = w.ok(user.clone(), Command::PoolCancelDriverUpgrade { pool });
    assert!(has_event(
        &applied,
        &Event::PoolDriverUpgradeCancelled { pool }
    ));
    assert_eq!(w.pool(pool).pending_upgrade, None);
    assert_eq!(w.pool(pool).driver, before);
    assert!(w.node(node).upgrading.is_none() && w.node(node).schedulable);
    let rejection = w.reject(user.clone(), Command::PoolCancelDriverUpgrade { pool });
    expect_state(
        &rejection,
        "pool",
        "NotUpgrading",
        "cancel the driver upgrade of",
    );
    w.ok(user, request_upgrade(pool, UpgradeMode::Secure, 1));
}
