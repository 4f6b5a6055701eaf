//! Node inventory and liveness: register, drain, cordon, lock, taints, labels, delete,
//! lost, recovered, driver reports; every happy path and rejection, eviction per kind.

use corral_model::ids::NodeId;
use corral_model::limits::{HOUR_MS, MAX_LABELS_PER_NODE, MAX_NODES, MAX_TAINTS_PER_NODE};
use corral_model::{
    Command, Event, JobState, NodeStatus, Principal, Rejection, ReplicaState, Resources, Taint,
    TaintEffect, Toleration,
};
use corral_state::testing::*;
use corral_state::Created;
use std::collections::BTreeMap;

fn taint(key: &str, effect: TaintEffect) -> Taint {
    Taint {
        key: key.into(),
        value: "yes".into(),
        effect,
    }
}

// NodeRegister

#[test]
fn node_register_adds_a_free_available_node_shaped_by_its_flavor() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let at = fx.clock();
    let mut request = node_request("host-1", GPU, ZONE);
    request.labels = [("rack".to_string(), "r1".to_string())].into();
    request.taints = vec![taint("gpu-burn", TaintEffect::PreferNoSchedule)];
    let applied = fx.admin(Command::NodeRegister(request));
    let Some(Created::Node(id)) = applied.created else {
        panic!("no node created")
    };
    assert_eq!(events(&applied), vec![Event::NodeRegistered { node: id }]);
    assert_eq!(applied.events[0].tenant, None);
    let node = fx.state.node_by_name("host-1").expect("by name");
    assert_eq!(node.id, id);
    assert_eq!(node.capacity, gpu_flavor().capacity);
    assert_eq!(node.accelerator_type.as_deref(), Some(ACCELERATOR));
    assert_eq!(node.status, NodeStatus::Available);
    assert!(node.schedulable);
    assert_eq!(node.pool, None);
    assert_eq!(node.allocated, Resources::ZERO);
    assert_eq!(node.registered_at_ms, at);
    assert_eq!(node.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(node.gpu_driver_version.as_deref(), Some("535.1"));
    // The platform admin and the leader's loops may register too.
    fx.ok(
        Principal::PlatformAdmin,
        Command::NodeRegister(node_request("host-2", CPU, ZONE)),
    );
    fx.ok(
        Principal::System,
        Command::NodeRegister(node_request("host-3", CPU, ZONE)),
    );
}

#[test]
fn node_register_is_refused_to_tenants() {
    let mut w = World::new();
    let user = w.alpha_user();
    let rejection = w.reject(user, Command::NodeRegister(node_request("mine", GPU, ZONE)));
    expect_denied(&rejection);
}

#[test]
fn node_register_refuses_malformed_requests() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let base = node_request("host-1", GPU, ZONE);
    let mut cases = Vec::new();
    for name in ["", "has space", &"h".repeat(65)] {
        let mut request = base.clone();
        request.name = name.to_string();
        cases.push((request, "name"));
    }
    let mut request = base.clone();
    request.zone = "Zone-A".into();
    cases.push((request, "zone"));
    let mut request = base.clone();
    request.labels = [("bad key".to_string(), "v".to_string())].into();
    cases.push((request, "labels.key"));
    let mut request = base.clone();
    request.labels = [("k".to_string(), String::new())].into();
    cases.push((request, "labels.value"));
    let mut request = base.clone();
    request.taints = vec![Taint {
        key: "k\t".into(),
        value: "v".into(),
        effect: TaintEffect::NoSchedule,
    }];
    cases.push((request, "taints.key"));
    let mut request = base.clone();
    request.taints = vec![Taint {
        key: "k".into(),
        value: "x".repeat(129),
        effect: TaintEffect::NoSchedule,
    }];
    cases.push((request, "taints.value"));
    let mut request = base.clone();
    request.gpu_driver_version = Some("535 1".into());
    cases.push((request, "gpu_driver_version"));
    let mut request = base;
    request.npu_driver_version = Some(String::new());
    cases.push((request, "npu_driver_version"));
    for (request, field) in cases {
        expect_invalid(
            &fx.reject(Principal::PlatformAdmin, Command::NodeRegister(request)),
            field,
        );
    }
}

#[test]
fn node_register_refuses_too_many_labels_or_taints() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let mut request = node_request("host-1", GPU, ZONE);
    request.labels = (0..=MAX_LABELS_PER_NODE)
        .map(|index| (format!("k{index}"), "v".to_string()))
        .collect();
    expect_limit(
        &fx.reject(Principal::PlatformAdmin, Command::NodeRegister(request)),
        "labels per node",
        MAX_LABELS_PER_NODE as u64,
    );
    let mut request = node_request("host-1", GPU, ZONE);
    request.taints = (0..=MAX_TAINTS_PER_NODE)
        .map(|index| taint(&format!("t{index}"), TaintEffect::NoSchedule))
        .collect();
    expect_limit(
        &fx.reject(Principal::PlatformAdmin, Command::NodeRegister(request)),
        "taints per node",
        MAX_TAINTS_PER_NODE as u64,
    );
}

#[test]
fn node_register_of_an_unknown_flavor_is_not_found() {
    let mut fx = Fx::new();
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        Command::NodeRegister(node_request("host-1", GPU, ZONE)),
    );
    expect_not_found_id(&rejection, "flavor", GPU);
}

#[test]
fn node_register_refuses_a_taken_name() {
    let mut fx = Fx::new();
    fx.define_catalog();
    fx.admin(Command::NodeRegister(node_request("host-1", GPU, ZONE)));
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        Command::NodeRegister(node_request("host-1", CPU, ZONE)),
    );
    expect_exists(&rejection, "node");
}

#[test]
fn node_register_refuses_beyond_the_inventory_limit() {
    let mut fx = Fx::new();
    fx.admin(Command::FlavorDefine(cpu_flavor()));
    for index in 0..MAX_NODES {
        fx.bulk(
            Principal::PlatformAdmin,
            Command::NodeRegister(node_request(&format!("h{index}"), CPU, ZONE)),
        );
    }
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        Command::NodeRegister(node_request("one-more", CPU, ZONE)),
    );
    expect_limit(&rejection, "nodes", MAX_NODES as u64);
}

// NodeDrain

#[test]
fn node_drain_stops_scheduling_and_evicts_at_the_deadline() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 4));
    w.place_on(job, &[node]);
    w.start_all(job);
    let deadline = w.clock() + HOUR_MS;
    let applied = w.ok(
        user,
        Command::NodeDrain {
            node,
            deadline_ms: Some(deadline),
        },
    );
    assert_eq!(
        events(&applied),
        vec![Event::NodeDraining {
            node,
            deadline_ms: Some(deadline)
        }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert!(!w.node(node).schedulable);
    assert_eq!(w.node(node).drain_deadline_ms, Some(deadline));
    // Nothing new lands on a draining node.
    let other = w.submit(alpha, training(pool, 1, 1));
    let reason = w.place_expecting_refusal(pool, other, &[(0, node)]);
    assert!(reason.contains("cordoned or draining"), "{reason}");
    // Before the deadline the work keeps running.
    w.set_clock(deadline - 1);
    w.tick();
    assert_eq!(w.job_state(job), JobState::Running);
    // At the deadline it is evicted; a training gang restarts elsewhere.
    w.set_clock(deadline);
    let applied = w.tick();
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Pending)));
    // A drain is a disruption: no retry spent.
    assert_eq!(w.job(job).retries_used, 0);
    assert_eq!(w.job(job).disruptions, 1);
    let drained = w.node(node);
    assert!(drained.allocations.is_empty());
    assert_eq!(drained.drain_deadline_ms, None);
    assert!(!drained.schedulable);
}

#[test]
fn node_drain_without_a_deadline_keeps_running_work() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 4));
    w.place_on(job, &[node]);
    w.admin(Command::NodeDrain {
        node,
        deadline_ms: None,
    });
    w.advance(100 * HOUR_MS);
    w.tick();
    assert_eq!(w.job_state(job), JobState::Running);
}

#[test]
fn node_drain_of_an_unknown_or_foreign_node_is_not_found() {
    let mut w = World::new();
    let (alpha_node, public_node, beta_user) = (w.alpha_gpus[0], w.public_gpus[0], w.beta_user());
    let free = w.free_node_ids(GPU)[0];
    for node in [alpha_node, public_node, free, NodeId(999)] {
        let rejection = w.reject(
            beta_user.clone(),
            Command::NodeDrain {
                node,
                deadline_ms: None,
            },
        );
        expect_not_found(&rejection, "node");
    }
}

#[test]
fn node_drain_refuses_a_deadline_in_the_past() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let past = w.state.now_ms() - 1;
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::NodeDrain {
            node,
            deadline_ms: Some(past),
        },
    );
    expect_invalid(&rejection, "deadline_ms");
}

// NodeCordon / NodeUncordon

#[test]
fn node_cordon_and_uncordon() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let applied = w.ok(user.clone(), Command::NodeCordon { node });
    assert_eq!(
        events(&applied),
        vec![Event::NodeSchedulableChanged {
            node,
            schedulable: false
        }]
    );
    let job = w.submit(alpha, training(pool, 1, 1));
    let reason = w.place_expecting_refusal(pool, job, &[(0, node)]);
    assert!(reason.contains("cordoned"), "{reason}");
    let applied = w.ok(user, Command::NodeUncordon { node });
    assert_eq!(
        events(&applied),
        vec![Event::NodeSchedulableChanged {
            node,
            schedulable: true
        }]
    );
    w.place_on(job, &[node]);
}

#[test]
fn node_cordon_twice_or_uncordon_a_schedulable_node_is_refused() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let rejection = w.reject(Principal::PlatformAdmin, Command::NodeUncordon { node });
    expect_state(&rejection, "node", "Schedulable", "uncordon");
    w.admin(Command::NodeCordon { node });
    let rejection = w.reject(Principal::PlatformAdmin, Command::NodeCordon { node });
    expect_state(&rejection, "node", "Cordoned", "cordon");
}

#[test]
fn node_cordon_of_a_draining_node_cancels_its_deadline() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let deadline = w.clock() + HOUR_MS;
    w.admin(Command::NodeDrain {
        node,
        deadline_ms: Some(deadline),
    });
    w.admin(Command::NodeCordon { node });
    assert_eq!(w.node(node).drain_deadline_ms, None);
    assert!(!w.node(node).schedulable);
}

#[test]
fn node_cordon_of_a_foreign_node_is_not_found() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.beta_user());
    expect_not_found(
        &w.reject(user.clone(), Command::NodeCordon { node }),
        "node",
    );
    expect_not_found(&w.reject(user, Command::NodeUncordon { node }), "node");
}

// NodeSetDeletionLock

#[test]
fn node_deletion_lock_and_unlock() {
    let mut w = World::new();
    let free = w.free_node_ids(CPU)[0];
    let applied = w.admin(Command::NodeSetDeletionLock {
        node: free,
        locked: true,
    });
    assert_eq!(
        events(&applied),
        vec![Event::NodeDeletionLockChanged {
            node: free,
            locked: true
        }]
    );
    assert!(w.node(free).deletion_locked);
    let rejection = w.reject(Principal::PlatformAdmin, Command::NodeDelete { node: free });
    expect_state(&rejection, "node", "DeletionLocked", "delete");
    w.admin(Command::NodeSetDeletionLock {
        node: free,
        locked: false,
    });
    w.admin(Command::NodeDelete { node: free });
}

#[test]
fn node_deletion_lock_without_change_is_refused() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.alpha_user());
    let rejection = w.reject(
        user.clone(),
        Command::NodeSetDeletionLock {
            node,
            locked: false,
        },
    );
    expect_state(&rejection, "node", "Unlocked", "unlock");
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock { node, locked: true },
    );
    let rejection = w.reject(user, Command::NodeSetDeletionLock { node, locked: true });
    expect_state(&rejection, "node", "Locked", "lock");
}

#[test]
fn node_deletion_lock_of_a_foreign_node_is_not_found() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.beta_user());
    let rejection = w.reject(user, Command::NodeSetDeletionLock { node, locked: true });
    expect_not_found(&rejection, "node");
}

// NodeSetTaints

#[test]
fn no_schedule_taints_keep_new_work_off_unless_tolerated() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let running = w.submit(alpha, training(pool, 1, 1));
    w.place_on(running, &[node]);
    let applied = w.ok(
        user,
        Command::NodeSetTaints {
            node,
            taints: vec![taint("maintenance", TaintEffect::NoSchedule)],
        },
    );
    assert_eq!(
        events(&applied),
        vec![Event::NodeAttributesChanged { node }]
    );
    assert_eq!(w.job_state(running), JobState::Running);
    let plain = w.submit(alpha, training(pool, 1, 1));
    let reason = w.place_expecting_refusal(pool, plain, &[(0, node)]);
    assert!(reason.contains("taint"), "{reason}");
    let mut spec = training(pool, 1, 1);
    spec.tolerations = vec![Toleration {
        key: "maintenance".into(),
        value: None,
    }];
    let tolerant = w.submit(alpha, spec);
    w.place_on(tolerant, &[node]);
}

#[test]
fn prefer_no_schedule_taints_do_not_refuse_placement() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    w.admin(Command::NodeSetTaints {
        node,
        taints: vec![taint("busy", TaintEffect::PreferNoSchedule)],
    });
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
}

#[test]
fn no_execute_taints_evict_intolerant_work_by_its_kind() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let gang = w.submit(alpha, training(pool, 2, 2));
    w.place_on(gang, &[first, second]);
    w.start_all(gang);
    let notebook = w.submit(alpha, notebook(pool, None));
    w.place_on(notebook, &[first]);
    w.start_all(notebook);
    let mut spec = inference(pool, 1, 1);
    spec.tolerations = vec![Toleration {
        key: "fault".into(),
        value: Some("yes".into()),
    }];
    let tolerant = w.submit(alpha, spec);
    w.place_on(tolerant, &[first]);
    w.start_all(tolerant);
    let applied = w.ok(
        user,
        Command::NodeSetTaints {
            node: first,
            taints: vec![taint("fault", TaintEffect::NoExecute)],
        },
    );
    let changes = transitions(&applied);
    // The gang restarts as a whole (its replica on the other node is released too).
    assert!(changes.contains(&(gang, JobState::Running, JobState::Pending)));
    // An eviction is a disruption: no retry spent.
    assert_eq!(w.job(gang).retries_used, 0);
    assert_eq!(w.job(gang).disruptions, 1);
    assert!(w.node(second).allocations.is_empty());
    // The notebook goes back to the queue to move.
    assert!(changes.contains(&(notebook, JobState::Running, JobState::Pending)));
    // The tolerating service stays.
    assert_eq!(w.job_state(tolerant), JobState::Running);
    let on_node: Vec<_> = w.node(first).allocations.iter().map(|a| a.job).collect();
    assert_eq!(on_node, vec![tolerant]);
    assert_eq!(w.queued(pool), vec![gang, notebook]);
}

#[test]
fn node_set_taints_refuses_too_many_or_malformed_taints() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.alpha_user());
    let taints = (0..=MAX_TAINTS_PER_NODE)
        .map(|index| taint(&format!("t{index}"), TaintEffect::NoSchedule))
        .collect();
    expect_limit(
        &w.reject(user.clone(), Command::NodeSetTaints { node, taints }),
        "taints per node",
        MAX_TAINTS_PER_NODE as u64,
    );
    let taints = vec![taint("", TaintEffect::NoExecute)];
    expect_invalid(
        &w.reject(user, Command::NodeSetTaints { node, taints }),
        "taints.key",
    );
}

#[test]
fn node_set_taints_of_a_foreign_node_is_not_found() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.beta_user());
    let rejection = w.reject(
        user,
        Command::NodeSetTaints {
            node,
            taints: vec![],
        },
    );
    expect_not_found(&rejection, "node");
}

// NodeSetLabels

#[test]
fn node_set_labels_replaces_the_labels_used_by_node_selectors() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let mut spec = training(pool, 1, 1);
    spec.node_selector = [("rack".to_string(), "r7".to_string())].into();
    let job = w.submit(alpha, spec);
    let reason = w.place_expecting_refusal(pool, job, &[(0, node)]);
    assert!(reason.contains("labels"), "{reason}");
    let labels: BTreeMap<String, String> = [("rack".to_string(), "r7".to_string())].into();
    let applied = w.ok(
        user,
        Command::NodeSetLabels {
            node,
            labels: labels.clone(),
        },
    );
    assert_eq!(
        events(&applied),
        vec![Event::NodeAttributesChanged { node }]
    );
    assert_eq!(w.node(node).labels, labels);
    w.place_on(job, &[node]);
}

#[test]
fn node_set_labels_refuses_too_many_or_malformed_labels() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.alpha_user());
    let labels = (0..=MAX_LABELS_PER_NODE)
        .map(|index| (format!("k{index}"), "v".to_string()))
        .collect();
    expect_limit(
        &w.reject(user.clone(), Command::NodeSetLabels { node, labels }),
        "labels per node",
        MAX_LABELS_PER_NODE as u64,
    );
    let labels = [("k".to_string(), "has space".to_string())].into();
    expect_invalid(
        &w.reject(user, Command::NodeSetLabels { node, labels }),
        "labels.value",
    );
}

#[test]
fn node_set_labels_of_a_foreign_node_is_not_found() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.beta_user());
    let rejection = w.reject(
        user,
        Command::NodeSetLabels {
            node,
            labels: BTreeMap::new(),
        },
    );
    expect_not_found(&rejection, "node");
}

// NodeDelete

#[test]
fn node_delete_removes_a_free_node() {
    let mut w = World::new();
    let free = w.free_node_ids(CPU)[0];
    let name = w.node(free).name.clone();
    let applied = w.admin(Command::NodeDelete { node: free });
    assert_eq!(events(&applied), vec![Event::NodeDeleted { node: free }]);
    assert!(w.state.node(free).is_none());
    assert!(w.state.node_by_name(&name).is_none());
    // The name can be registered again, under a new id.
    let again = w.register_node(node_request(&name, CPU, ZONE));
    assert_ne!(again, free);
}

#[test]
fn node_delete_needs_the_platform_admin() {
    let mut w = World::new();
    let (node, user) = (w.alpha_gpus[0], w.alpha_user());
    expect_denied(&w.reject(user, Command::NodeDelete { node }));
    expect_denied(&w.reject(Principal::Node(node), Command::NodeDelete { node }));
}

#[test]
fn node_delete_of_an_unknown_node_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::NodeDelete { node: NodeId(500) },
    );
    expect_not_found(&rejection, "node");
}

#[test]
fn node_delete_of_a_pool_member_is_refused() {
    let mut w = World::new();
    let (node, pool) = (w.alpha_gpus[0], w.alpha_pool);
    let rejection = w.reject(Principal::PlatformAdmin, Command::NodeDelete { node });
    expect_in_use(&rejection, "node", &pool.to_string());
}

// NodeLost

#[test]
fn node_lost_marks_the_node_abnormal_and_evicts_by_kind() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (lost, healthy) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let gang = w.submit(alpha, training(pool, 2, 2));
    w.place_on(gang, &[lost, healthy]);
    w.start_all(gang);
    let service = w.submit(alpha, inference(pool, 2, 1));
    w.place_on(service, &[lost, healthy]);
    w.start_all(service);
    assert_eq!(w.job_state(service), JobState::Running);
    let notebook = w.submit(alpha, notebook(pool, None));
    w.place_on(notebook, &[lost]);
    w.start_all(notebook);
    let applied = w.system(Command::NodeLost { node: lost });
    assert!(applied.events.iter().any(|record| record.event
        == Event::NodeStatusChanged {
            node: lost,
            from: NodeStatus::Available,
            to: NodeStatus::Abnormal
        }
        && record.tenant == Some(alpha)));
    assert_eq!(w.node(lost).status, NodeStatus::Abnormal);
    assert!(w.node(lost).allocations.is_empty());
    // Training: the whole gang restarts, spending no retry (a disruption).
    assert_eq!(w.job_state(gang), JobState::Pending);
    assert_eq!(w.job(gang).retries_used, 0);
    assert_eq!(w.job(gang).disruptions, 1);
    let reason = &w.job(gang).reason;
    assert!(
        reason.contains(&format!("node {lost} was lost")),
        "{reason}"
    );
    assert!(reason.contains("no retry spent"), "{reason}");
    assert!(w.job(gang).placed_replicas().next().is_none());
    // Inference: the lost replica is replaced, the other keeps serving.
    assert_eq!(w.job_state(service), JobState::Concerning);
    assert_eq!(w.job(service).replicas[0].state, ReplicaState::Unplaced);
    assert_eq!(w.job(service).replicas[1].state, ReplicaState::Running);
    // Notebook: back to the queue to move.
    assert_eq!(w.job_state(notebook), JobState::Pending);
    assert_eq!(w.queued(pool), vec![gang, service, notebook]);
    // A lost node takes no new work.
    let reason = w.place_expecting_refusal(pool, notebook, &[(0, lost)]);
    assert!(reason.contains("not available"), "{reason}");
}

#[test]
fn node_lost_spends_no_retry_even_of_a_gang_with_one_retry() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let mut spec = training(pool, 1, 1);
    spec.kind = corral_model::JobKind::Training { retry_limit: 1 };
    let job = w.submit(alpha, spec);
    w.place_on(job, &[first]);
    w.system(Command::NodeLost { node: first });
    assert_eq!(w.job_state(job), JobState::Pending);
    w.place_on(job, &[second]);
    w.start_all(job);
    let applied = w.system(Command::NodeLost { node: second });
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Pending)));
    assert_eq!(w.job(job).retries_used, 0);
    assert_eq!(w.job(job).disruptions, 2);
}

#[test]
fn node_lost_is_proposed_only_by_the_leader() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let user = w.alpha_user();
    for principal in [Principal::PlatformAdmin, Principal::Node(node), user] {
        expect_denied(&w.reject(principal, Command::NodeLost { node }));
    }
}

#[test]
fn node_lost_of_an_unknown_node_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(Principal::System, Command::NodeLost { node: NodeId(404) });
    expect_not_found(&rejection, "node");
}

#[test]
fn node_lost_twice_is_refused() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    w.system(Command::NodeLost { node });
    let rejection = w.reject(Principal::System, Command::NodeLost { node });
    expect_state(&rejection, "node", "Abnormal", "mark lost");
}

// NodeRecovered

#[test]
fn node_recovered_makes_the_node_available_again() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    w.system(Command::NodeLost { node });
    let applied = w.agent(Command::NodeRecovered { node });
    assert_eq!(
        events(&applied),
        vec![Event::NodeStatusChanged {
            node,
            from: NodeStatus::Abnormal,
            to: NodeStatus::Available
        }]
    );
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    // The leader's loops may report a recovery too.
    let other = w.alpha_gpus[1];
    w.system(Command::NodeLost { node: other });
    w.system(Command::NodeRecovered { node: other });
}

#[test]
fn node_recovered_is_reported_only_by_agents_or_the_leader() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    w.system(Command::NodeLost { node });
    let user = w.alpha_user();
    for principal in [Principal::PlatformAdmin, user] {
        expect_denied(&w.reject(principal, Command::NodeRecovered { node }));
    }
}

#[test]
fn node_recovered_of_an_unknown_node_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::Node(NodeId(404)),
        Command::NodeRecovered { node: NodeId(404) },
    );
    expect_not_found(&rejection, "node");
}

#[test]
fn node_recovered_of_an_available_node_is_refused() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let rejection = w.reject(Principal::Node(node), Command::NodeRecovered { node });
    expect_state(&rejection, "node", "Available", "recover");
}

// NodeDriverReport

#[test]
fn node_driver_report_records_the_versions() {
    let mut w = World::new();
    let (node, alpha) = (w.alpha_gpus[0], w.alpha);
    let applied = w.agent(Command::NodeDriverReport {
        node,
        gpu_driver_version: Some("550.2".into()),
        npu_driver_version: None,
    });
    assert_eq!(events(&applied), vec![Event::NodeDriverChanged { node }]);
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert_eq!(w.node(node).gpu_driver_version.as_deref(), Some("550.2"));
    // A free node reports too; its event is the platform's.
    let free = w.free_node_ids(NPU)[0];
    let applied = w.agent(Command::NodeDriverReport {
        node: free,
        gpu_driver_version: None,
        npu_driver_version: Some("23.0.rc1".into()),
    });
    assert_eq!(applied.events[0].tenant, None);
    assert_eq!(w.node(free).npu_driver_version.as_deref(), Some("23.0.rc1"));
    assert_eq!(w.node(free).gpu_driver_version, None);
}

#[test]
fn node_driver_report_is_refused_to_people() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let user = w.alpha_user();
    for principal in [Principal::PlatformAdmin, user] {
        let rejection = w.reject(
            principal,
            Command::NodeDriverReport {
                node,
                gpu_driver_version: None,
                npu_driver_version: None,
            },
        );
        expect_denied(&rejection);
    }
}

#[test]
fn node_driver_report_refuses_malformed_versions() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    let rejection = w.reject(
        Principal::Node(node),
        Command::NodeDriverReport {
            node,
            gpu_driver_version: Some("5\n".into()),
            npu_driver_version: None,
        },
    );
    expect_invalid(&rejection, "gpu_driver_version");
    let rejection = w.reject(
        Principal::Node(node),
        Command::NodeDriverReport {
            node,
            gpu_driver_version: None,
            npu_driver_version: Some("x".repeat(65)),
        },
    );
    expect_invalid(&rejection, "npu_driver_version");
}

#[test]
fn node_driver_report_of_an_unknown_node_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::Node(NodeId(404)),
        Command::NodeDriverReport {
            node: NodeId(404),
            gpu_driver_version: None,
            npu_driver_version: None,
        },
    );
    assert_eq!(
        rejection,
        Rejection::NotFound {
            kind: "node".into(),
            id: "node-404".into()
        }
    );
}
