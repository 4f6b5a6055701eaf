//! The plan applier and agent reports: hand-written `SchedulerPlan`s from the leader
//! (`Principal::System`), `ReplicaStarted`/`ReplicaExited` from agents, and the lifecycle
//! each kind goes through: training (completion, gang restarts, failure, terminate),
//! inference (deploy, degrade, move), notebooks (start, stop, exit, auto-stop).

use corral_model::ids::{JobId, NodeId, PoolId};
use corral_model::limits::{HOUR_MS, MAX_PLACEMENTS_PER_PLAN, MONTH_MS};
use corral_model::{Command, Event, JobState, Placement, Principal, ReplicaState, Resources};
use corral_state::testing::*;

type Assignments = Vec<(u32, NodeId)>;

fn plan(pool: PoolId, placements: Vec<Placement>) -> Command {
    Command::SchedulerPlan { pool, placements }
}

fn placement(job: JobId, assignments: &[(u32, NodeId)]) -> Placement {
    Placement {
        job,
        assignments: assignments.to_vec(),
    }
}

// SchedulerPlan

#[test]
fn a_plan_places_a_gang_all_at_once() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 4));
    let at = w.clock();
    let applied = w.place_on(job, &nodes);
    assert_eq!(
        events(&applied),
        vec![
            Event::ReplicaAssigned {
                job,
                rank: 0,
                node: nodes[0]
            },
            Event::ReplicaAssigned {
                job,
                rank: 1,
                node: nodes[1]
            },
            Event::JobStateChanged {
                job,
                from: JobState::Pending,
                to: JobState::Running,
                reason: "placed".into()
            },
        ]
    );
    let stored = w.job(job);
    assert_eq!(stored.started_at_ms, Some(at));
    for (rank, replica) in stored.replicas.iter().enumerate() {
        assert_eq!(replica.state, ReplicaState::Assigned);
        assert_eq!(replica.node, Some(nodes[rank]));
        assert_eq!(replica.device_mask, 0b1111);
        assert_eq!(replica.assigned_at_ms, Some(at));
        assert_eq!(
            replica.meter, None,
            "dedicated pools bill nodes, not replicas"
        );
    }
    let node = w.node(nodes[0]);
    assert_eq!(node.allocated, replica(4));
    assert_eq!(node.devices_in_use, 0b1111);
    assert_eq!(node.allocations.len(), 1);
    assert_eq!(
        w.state.tenant(alpha).unwrap().used,
        Resources::ZERO,
        "a tenant's own dedicated pool does not count against its quota"
    );
    assert!(w.queued(pool).is_empty());
}

#[test]
fn replicas_on_one_node_get_disjoint_devices() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 2, 3));
    w.place(job, &[(0, node), (1, node)]);
    let masks: Vec<u64> = w.job(job).replicas.iter().map(|r| r.device_mask).collect();
    assert_eq!(masks, vec![0b000_111, 0b111_000]);
    let other = w.submit(alpha, training(pool, 1, 2));
    w.place(other, &[(0, node)]);
    assert_eq!(w.job(other).replicas[0].device_mask, 0b1100_0000);
    assert_eq!(w.node(node).devices_in_use, 0xFF);
    // Released devices are handed out again.
    let user = w.alpha_user();
    w.ok(user, Command::JobTerminate { job });
    let third = w.submit(alpha, training(pool, 1, 3));
    w.place(third, &[(0, node)]);
    assert_eq!(w.job(third).replicas[0].device_mask, 0b111);
}

#[test]
fn a_plan_commits_per_job_and_refuses_the_rest() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let first = w.submit(alpha, training(pool, 1, 8));
    let second = w.submit(alpha, training(pool, 1, 8));
    let third = w.submit(alpha, training(pool, 1, 8));
    // The second placement conflicts with the first on node 0.
    let applied = w.system(plan(
        pool,
        vec![
            placement(first, &[(0, nodes[0])]),
            placement(second, &[(0, nodes[0])]),
            placement(third, &[(0, nodes[1])]),
        ],
    ));
    assert_eq!(w.job_state(first), JobState::Running);
    assert_eq!(w.job_state(second), JobState::Pending);
    assert_eq!(w.job_state(third), JobState::Running);
    let refused: Vec<_> = applied
        .events
        .iter()
        .filter_map(|record| match &record.event {
            Event::PlacementRejected { job, reason } => Some((*job, reason.clone(), record.tenant)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, second);
    assert!(
        refused[0].1.contains("not enough free accelerators"),
        "{}",
        refused[0].1
    );
    assert_eq!(refused[0].2, Some(alpha));
    assert_eq!(w.queued(pool), vec![second]);
}

#[test]
fn inference_replicas_can_be_placed_a_few_at_a_time() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, inference(pool, 2, 1));
    w.place(job, &[(1, nodes[1])]);
    assert_eq!(w.job_state(job), JobState::Deploying);
    assert_eq!(w.queued(pool), vec![job]);
    w.place(job, &[(0, nodes[0])]);
    assert_eq!(w.job_state(job), JobState::Deploying);
    assert!(w.queued(pool).is_empty());
}

#[test]
fn a_plan_is_proposed_only_by_the_leader() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    for principal in [Principal::PlatformAdmin, Principal::Node(node), user] {
        let rejection = w.reject(principal, plan(pool, vec![placement(job, &[(0, node)])]));
        expect_denied(&rejection);
    }
}

#[test]
fn a_plan_with_too_many_placements_is_refused() {
    let mut w = World::new();
    let pool = w.alpha_pool;
    let placements = vec![placement(JobId(1), &[]); MAX_PLACEMENTS_PER_PLAN + 1];
    let rejection = w.reject(Principal::System, plan(pool, placements));
    expect_limit(
        &rejection,
        "placements per plan",
        MAX_PLACEMENTS_PER_PLAN as u64,
    );
}

#[test]
fn a_plan_for_an_unknown_pool_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(Principal::System, plan(PoolId(99), vec![]));
    expect_not_found(&rejection, "pool");
}

#[test]
fn a_plan_for_a_frozen_pool_is_refused() {
    let mut w = World::new();
    let (beta, net) = (w.beta, w.beta_net);
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(1, false));
    w.advance(MONTH_MS);
    w.tick();
    let rejection = w.reject(Principal::System, plan(pool, vec![]));
    expect_state(&rejection, "pool", "Frozen", "place work in");
}

#[test]
fn each_stale_or_wrong_placement_is_refused_with_its_reason() {
    let mut w = World::new();
    let (alpha, pool, public) = (w.alpha, w.alpha_pool, w.public);
    let nodes = w.alpha_gpus.clone();
    let public_node = w.public_gpus[0];
    let gang = w.submit(alpha, training(pool, 2, 1));
    let service = w.submit(alpha, inference(pool, 2, 1));
    w.place(service, &[(0, nodes[0])]);
    let running = w.submit(alpha, training(pool, 1, 1));
    w.place(running, &[(0, nodes[0])]);
    let shared = w.submit(alpha, training(public, 1, 1));
    let big = w.submit(alpha, training(pool, 1, 8));
    let cases: Vec<(JobId, Assignments, &str)> = vec![
        (JobId(999), vec![(0, nodes[0])], "does not exist"),
        (shared, vec![(0, nodes[0])], "is not in pool"),
        (running, vec![(0, nodes[1])], "waits for no placement"),
        (gang, vec![], "at least one replica"),
        (gang, vec![(0, nodes[0]), (0, nodes[1])], "assigned twice"),
        (gang, vec![(0, nodes[0]), (2, nodes[1])], "has no rank 2"),
        (service, vec![(0, nodes[1])], "already placed"),
        (gang, vec![(0, nodes[0])], "is a gang"),
        (
            gang,
            vec![(0, nodes[0]), (1, NodeId(999))],
            "does not exist",
        ),
        (
            gang,
            vec![(0, nodes[0]), (1, public_node)],
            "not in the job's pool",
        ),
        (big, vec![(0, nodes[0])], "not enough free accelerators"),
    ];
    for (job, assignments, expected) in cases {
        let placed_before: Vec<_> = w
            .state
            .nodes()
            .map(|node| node.allocations.clone())
            .collect();
        let reason = w.place_expecting_refusal(pool, job, &assignments);
        assert!(reason.contains(expected), "{expected}: {reason}");
        // A refused placement commits nothing.
        let placed_after: Vec<_> = w
            .state
            .nodes()
            .map(|node| node.allocations.clone())
            .collect();
        assert_eq!(placed_before, placed_after);
    }
    assert_eq!(w.job_state(gang), JobState::Pending);
    assert_eq!(w.job(gang).placed_replicas().count(), 0);
    assert_eq!(w.node(nodes[1]).allocations.len(), 0);
}

#[test]
fn two_replicas_of_one_placement_share_the_node_s_free_capacity() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 2, 5));
    let reason = w.place_expecting_refusal(pool, job, &[(0, node), (1, node)]);
    assert!(reason.contains("rank 1"), "{reason}");
    assert!(w.node(node).allocations.is_empty());
}

#[test]
fn a_placement_beyond_the_tenant_quota_is_refused() {
    let mut w = World::new();
    let (beta, public) = (w.beta, w.public);
    let nodes = w.public_gpus.clone();
    w.admin(Command::TenantSetQuota {
        tenant: beta,
        quota: quota(10),
    });
    let first = w.submit(beta, training(public, 1, 8));
    let second = w.submit(beta, training(public, 1, 4));
    w.place(first, &[(0, nodes[0])]);
    let reason = w.place_expecting_refusal(public, second, &[(0, nodes[1])]);
    assert!(
        reason.contains("quota exceeded on accelerators"),
        "{reason}"
    );
    assert_eq!(w.state.tenant(beta).unwrap().used.accelerators, 8);
    // Once the first job ends the second fits.
    w.exit_all(first, 0);
    w.place(second, &[(0, nodes[1])]);
}

// ReplicaStarted

#[test]
fn replica_started_marks_the_replica_running() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    let applied = w.agent(Command::ReplicaStarted {
        job,
        rank: 0,
        node,
        master_port: None,
    });
    assert_eq!(
        events(&applied),
        vec![Event::ReplicaStarted { job, rank: 0, node }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert_eq!(w.job(job).replicas[0].state, ReplicaState::Running);
    // The leader's loops may report it as well.
    let other = w.submit(alpha, training(pool, 1, 1));
    w.place_on(other, &[node]);
    w.system(Command::ReplicaStarted {
        job: other,
        rank: 0,
        node,
        master_port: None,
    });
}

#[test]
fn replica_reports_come_only_from_agents() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    for principal in [Principal::PlatformAdmin, user] {
        expect_denied(&w.reject(
            principal.clone(),
            Command::ReplicaStarted {
                job,
                rank: 0,
                node,
                master_port: None,
            },
        ));
        let exited = Command::ReplicaExited {
            job,
            rank: 0,
            node,
            exit_code: 0,
            oom_killed: false,
        };
        expect_denied(&w.reject(principal, exited));
    }
}

#[test]
fn replica_reports_about_unknown_jobs_or_ranks_are_refused() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    expect_not_found(
        &w.reject(
            Principal::Node(node),
            Command::ReplicaStarted {
                job: JobId(99),
                rank: 0,
                node,
                master_port: None,
            },
        ),
        "job",
    );
    expect_not_found(
        &w.reject(
            Principal::Node(node),
            Command::ReplicaExited {
                job: JobId(99),
                rank: 0,
                node,
                exit_code: 0,
                oom_killed: false,
            },
        ),
        "job",
    );
    expect_invalid(
        &w.reject(
            Principal::Node(node),
            Command::ReplicaStarted {
                job,
                rank: 1,
                node,
                master_port: None,
            },
        ),
        "rank",
    );
    expect_invalid(
        &w.reject(
            Principal::Node(node),
            Command::ReplicaExited {
                job,
                rank: 7,
                node,
                exit_code: 0,
                oom_killed: false,
            },
        ),
        "rank",
    );
}

#[test]
fn replica_reports_from_another_node_are_stale() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (first, second) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[first]);
    w.start_all(job);
    w.exited(job, 0, 1);
    // The gang restarted; it now runs on the second node.
    w.place_on(job, &[second]);
    let stale = Command::ReplicaExited {
        job,
        rank: 0,
        node: first,
        exit_code: 1,
        oom_killed: false,
    };
    expect_state(
        &w.reject(Principal::Node(first), stale),
        "replica",
        "NotOnThisNode",
        "report",
    );
    let stale = Command::ReplicaStarted {
        job,
        rank: 0,
        node: first,
        master_port: None,
    };
    expect_state(
        &w.reject(Principal::Node(first), stale),
        "replica",
        "NotOnThisNode",
        "report",
    );
    // A report about a replica that is not placed at all is stale too.
    let queued = w.submit(alpha, training(pool, 1, 1));
    let stale = Command::ReplicaStarted {
        job: queued,
        rank: 0,
        node: first,
        master_port: None,
    };
    expect_state(
        &w.reject(Principal::Node(first), stale),
        "replica",
        "NotOnThisNode",
        "report",
    );
}

#[test]
fn replica_started_twice_is_refused() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    w.started(job, 0);
    let rejection = w.reject(
        Principal::Node(node),
        Command::ReplicaStarted {
            job,
            rank: 0,
            node,
            master_port: None,
        },
    );
    expect_state(&rejection, "replica", "Running", "start");
}

// ReplicaExited and the training lifecycle.

#[test]
fn training_completes_when_every_replica_exits_zero() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 4));
    w.place_on(job, &nodes);
    w.start_all(job);
    let applied = w.exited(job, 0, 0);
    assert_eq!(
        events(&applied),
        vec![
            Event::ReplicaExited {
                job,
                rank: 0,
                node: nodes[0],
                exit_code: 0,
                oom_killed: false,
            },
            Event::ReplicaReleased {
                job,
                rank: 0,
                node: nodes[0]
            },
        ]
    );
    assert_eq!(w.job_state(job), JobState::Running);
    assert_eq!(
        w.job(job).replicas[0].state,
        ReplicaState::Exited { exit_code: 0 }
    );
    assert_eq!(
        w.state.tenant(alpha).unwrap().used,
        Resources::ZERO,
        "a tenant's own dedicated pool does not count against its quota"
    );
    let at = w.clock();
    let applied = w.exited(job, 1, 0);
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Completed)));
    let stored = w.job(job);
    assert_eq!(stored.finished_at_ms, Some(at));
    assert_eq!(stored.reason, "every replica exited with code 0");
    assert_eq!(w.state.tenant(alpha).unwrap().used, Resources::ZERO);
    assert!(nodes
        .iter()
        .all(|node| w.node(*node).allocations.is_empty()));
    assert_eq!(w.state.active_job_count(), 0);
}

#[test]
fn training_restarts_as_a_gang_while_retries_remain_then_fails() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let earlier = w.submit(alpha, training(pool, 1, 8));
    let job = w.submit(alpha, training(pool, 2, 1));
    let later = w.submit(alpha, training(pool, 1, 8));
    for attempt in 1..=2 {
        w.place_on(job, &nodes);
        w.start_all(job);
        let applied = w.exited(job, 1, 3);
        // Both replicas are released, not only the one that failed.
        assert!(has_event(
            &applied,
            &Event::ReplicaReleased {
                job,
                rank: 0,
                node: nodes[0]
            }
        ));
        assert!(has_event(
            &applied,
            &Event::ReplicaReleased {
                job,
                rank: 1,
                node: nodes[1]
            }
        ));
        let stored = w.job(job);
        assert_eq!(stored.state, JobState::Pending);
        assert_eq!(stored.retries_used, attempt);
        assert!(
            stored.reason.contains(&format!("restart {attempt} of 2")),
            "{}",
            stored.reason
        );
        assert!(stored
            .replicas
            .iter()
            .all(|r| r.state == ReplicaState::Unplaced));
        // It keeps its place in the queue (submission time orders it).
        assert_eq!(w.queued(pool), vec![earlier, job, later]);
    }
    w.place_on(job, &nodes);
    w.start_all(job);
    let applied = w.exited(job, 0, 3);
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Failed)));
    assert!(w.job(job).reason.contains("no retries left"));
    assert_eq!(w.job(job).placed_replicas().count(), 0);
    assert_eq!(w.queued(pool), vec![earlier, later]);
}

#[test]
fn rank_zero_reports_its_rendezvous_port_which_lasts_one_placement() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 1));
    w.place_on(job, &nodes);
    let started = |rank: u32, node: NodeId, port: u16| Command::ReplicaStarted {
        job,
        rank,
        node,
        master_port: Some(port),
    };
    // Only rank 0 of a gang has one, and never a privileged port.
    expect_invalid(
        &w.reject(Principal::Node(nodes[1]), started(1, nodes[1], 29_500)),
        "master_port",
    );
    expect_invalid(
        &w.reject(Principal::Node(nodes[0]), started(0, nodes[0], 80)),
        "master_port",
    );
    let applied = w.agent(started(0, nodes[0], 29_501));
    assert_eq!(w.job(job).replicas[0].master_port, Some(29_501));
    // The node of rank 1 is told (its agent starts rank 1 now).
    assert!(has_event(
        &applied,
        &Event::RendezvousReady {
            job,
            node: nodes[1]
        }
    ));
    w.started(job, 1);
    // Known after rank 0 is released (it may finish before the others start); a gang
    // restart is a new placement, where the port is rank 0's to allocate again.
    w.exited(job, 1, 1);
    assert_eq!(w.job(job).replicas[0].node, None);
    assert_eq!(w.job(job).replicas[0].master_port, Some(29_501));
    w.place_on(job, &nodes);
    assert_eq!(w.job(job).replicas[0].master_port, None);
}

#[test]
fn an_oom_killed_replica_says_so_in_its_event_and_its_jobs_reason() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 1));
    w.place_on(job, &nodes);
    w.start_all(job);
    let applied = w.agent(Command::ReplicaExited {
        job,
        rank: 1,
        node: nodes[1],
        exit_code: 137,
        oom_killed: true,
    });
    assert!(has_event(
        &applied,
        &Event::ReplicaExited {
            job,
            rank: 1,
            node: nodes[1],
            exit_code: 137,
            oom_killed: true,
        }
    ));
    let memory_mib = w.job(job).spec.per_replica.memory_mib;
    let reason = w.job(job).reason.clone();
    assert!(
        reason.contains(&format!(
            "replica 1 was OOMKilled: it passed its memory limit of {memory_mib} MiB"
        )),
        "{reason}"
    );
    // The same exit without the OOM kill is a plain failure.
    w.place_on(job, &nodes);
    w.start_all(job);
    w.exited(job, 0, 137);
    assert!(
        w.job(job).reason.contains("exited with code 137"),
        "{}",
        w.job(job).reason
    );
}

#[test]
fn a_zero_exit_then_a_failure_restarts_the_whole_gang() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 1));
    w.place_on(job, &nodes);
    w.start_all(job);
    w.exited(job, 0, 0);
    w.exited(job, 1, 9);
    let stored = w.job(job);
    assert_eq!(stored.state, JobState::Pending);
    assert!(stored
        .replicas
        .iter()
        .all(|r| r.state == ReplicaState::Unplaced));
}

#[test]
fn terminating_running_training_ends_when_every_replica_exited() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 1));
    w.place_on(job, &nodes);
    w.start_all(job);
    w.ok(user, Command::JobTerminate { job });
    assert_eq!(w.job_state(job), JobState::Terminating);
    // Exit codes do not matter while shutting down: no restart.
    w.exited(job, 0, 137);
    assert_eq!(w.job_state(job), JobState::Terminating);
    assert_eq!(w.job(job).retries_used, 0);
    let applied = w.exited(job, 1, 0);
    assert_eq!(
        transitions(&applied),
        vec![(job, JobState::Terminating, JobState::Terminated)]
    );
}

#[test]
fn training_beyond_its_max_runtime_fails_at_a_tick() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let mut spec = training(pool, 1, 1);
    spec.max_runtime_ms = Some(HOUR_MS);
    let job = w.submit(alpha, spec);
    w.place_on(job, &[node]);
    w.start_all(job);
    let started = w.job(job).started_at_ms.unwrap();
    w.set_clock(started + HOUR_MS - 1);
    w.tick();
    assert_eq!(w.job_state(job), JobState::Running);
    w.set_clock(started + HOUR_MS);
    w.tick();
    assert_eq!(w.job_state(job), JobState::Terminating);
    assert_eq!(w.job(job).shutdown_target, Some(JobState::Failed));
    w.exit_all(job, 143);
    assert_eq!(w.job_state(job), JobState::Failed);
    assert_eq!(w.job(job).reason, "exceeded its max runtime");
}

// Inference lifecycle.

#[test]
fn inference_runs_when_every_replica_started_and_is_concerning_when_one_exits() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, inference(pool, 2, 1));
    w.place_on(job, &nodes);
    w.started(job, 0);
    assert_eq!(w.job_state(job), JobState::Deploying);
    let applied = w.started(job, 1);
    assert_eq!(
        transitions(&applied),
        vec![(job, JobState::Deploying, JobState::Running)]
    );
    // A replica exits: the service is degraded and the replica is queued to move.
    let applied = w.exited(job, 1, 1);
    assert_eq!(
        transitions(&applied),
        vec![(job, JobState::Running, JobState::Concerning)]
    );
    assert_eq!(w.job(job).replicas[1].state, ReplicaState::Unplaced);
    assert_eq!(w.queued(pool), vec![job]);
    // It moves to another node (here: the CPU node has no accelerator, so node 0).
    w.place(job, &[(1, nodes[0])]);
    assert_eq!(w.job_state(job), JobState::Concerning);
    w.started(job, 1);
    assert_eq!(w.job_state(job), JobState::Running);
    assert!(w.queued(pool).is_empty());
}

#[test]
fn inference_with_no_replica_left_is_deploying_again() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, inference(pool, 1, 1));
    w.place_on(job, &[node]);
    w.start_all(job);
    let applied = w.exited(job, 0, 0);
    assert_eq!(
        transitions(&applied),
        vec![(job, JobState::Running, JobState::Deploying)]
    );
    assert_eq!(w.queued(pool), vec![job]);
}

#[test]
fn inference_moves_off_a_lost_node() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, inference(pool, 2, 1));
    w.place_on(job, &nodes);
    w.start_all(job);
    w.system(Command::NodeLost { node: nodes[1] });
    assert_eq!(w.job_state(job), JobState::Concerning);
    w.place(job, &[(1, nodes[0])]);
    w.started(job, 1);
    assert_eq!(w.job_state(job), JobState::Running);
    assert!(w.job(job).replicas.iter().all(|r| r.node == Some(nodes[0])));
}

// Notebook lifecycle.

#[test]
fn notebook_runs_stops_and_starts_again() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, notebook(pool, None));
    let applied = w.place_on(job, &[node]);
    assert!(transitions(&applied).contains(&(job, JobState::Pending, JobState::Running)));
    w.start_all(job);
    w.ok(user.clone(), Command::JobStop { job });
    assert_eq!(w.job_state(job), JobState::Stopping);
    assert_eq!(
        w.state.tenant(alpha).unwrap().used,
        Resources::ZERO,
        "a tenant's own dedicated pool does not count against its quota"
    );
    w.exit_all(job, 0);
    assert_eq!(w.job_state(job), JobState::Stopped);
    assert_eq!(w.state.tenant(alpha).unwrap().used, Resources::ZERO);
    w.ok(user, Command::JobStart { job });
    assert_eq!(w.job_state(job), JobState::Pending);
    w.place_on(job, &[node]);
    assert_eq!(w.job_state(job), JobState::Running);
}

#[test]
fn notebook_exit_zero_stops_it_and_a_crash_fails_it() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let clean = w.submit(alpha, notebook(pool, None));
    w.place_on(clean, &[node]);
    w.start_all(clean);
    w.exited(clean, 0, 0);
    assert_eq!(w.job_state(clean), JobState::Stopped);
    let crash = w.submit(alpha, notebook(pool, None));
    w.place_on(crash, &[node]);
    w.start_all(crash);
    w.exited(crash, 0, 139);
    assert_eq!(w.job_state(crash), JobState::Failed);
}

#[test]
fn notebook_auto_stops_at_a_tick_after_its_idle_limit() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let nodes = w.alpha_gpus.clone();
    let started = w.submit(alpha, notebook(pool, Some(2 * HOUR_MS)));
    w.place_on(started, &nodes[..1]);
    w.start_all(started);
    let assigned = w.submit(alpha, notebook(pool, Some(2 * HOUR_MS)));
    w.place_on(assigned, &nodes[1..]);
    let forever = w.submit(alpha, notebook(pool, None));
    w.place_on(forever, &nodes[1..]);
    let since = w.job(started).started_at_ms.unwrap();
    w.set_clock(since + 2 * HOUR_MS - 1);
    w.tick();
    assert_eq!(w.job_state(started), JobState::Running);
    w.advance(10 * HOUR_MS);
    let applied = w.tick();
    let changes = transitions(&applied);
    // Running replicas stop when their agent reports; never-started ones at once.
    assert!(changes.contains(&(started, JobState::Running, JobState::Stopping)));
    assert!(changes.contains(&(assigned, JobState::Running, JobState::Stopped)));
    assert_eq!(w.job_state(forever), JobState::Running);
    w.exit_all(started, 0);
    assert_eq!(w.job_state(started), JobState::Stopped);
    assert_eq!(w.job(started).reason, "auto-stopped");
}
