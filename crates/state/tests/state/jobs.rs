//! Work commands: submit (every validation), terminate, stop, start and change priority;
//! every happy path and every rejection.

use corral_model::ids::{JobId, PoolId, TenantId};
use corral_model::limits::{
    DAY_MS, MAX_COMMAND_ARGUMENTS, MAX_ENVIRONMENT_VARIABLES, MAX_NODE_SELECTOR_LABELS,
    MAX_TOLERATIONS_PER_JOB, MONTH_MS,
};
use corral_model::{
    BillingMode, Command, Event, JobKind, JobSpec, JobState, JobType, Principal, Rejection,
    ReplicaState, Resources, Toleration,
};
use corral_state::testing::*;
use corral_state::Created;

fn beta_pool(w: &mut World) -> PoolId {
    let (beta, net) = (w.beta, w.beta_net);
    w.create_dedicated_pool(beta, "beta-pool", net, &[(GPU, 1)], BillingMode::PayPerUse)
}

fn submit_command(spec: JobSpec) -> Command {
    Command::JobSubmit(spec)
}

// JobSubmit

#[test]
fn job_submit_queues_training_as_pending() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let at = w.clock();
    let applied = w.ok(user, submit_command(training(pool, 3, 2)));
    let Some(Created::Job(job)) = applied.created else {
        panic!("no job created")
    };
    assert_eq!(
        events(&applied),
        vec![
            Event::JobSubmitted { job, pool },
            Event::JobStateChanged {
                job,
                from: JobState::Creating,
                to: JobState::Pending,
                reason: "submitted".into()
            }
        ]
    );
    assert!(applied
        .events
        .iter()
        .all(|record| record.tenant == Some(alpha)));
    let stored = w.job(job);
    assert_eq!(stored.tenant, alpha);
    assert_eq!(stored.state, JobState::Pending);
    assert_eq!(stored.submitted_at_ms, at);
    assert_eq!(stored.replicas.len(), 3);
    assert!(stored
        .replicas
        .iter()
        .all(|replica| replica.state == ReplicaState::Unplaced && replica.node.is_none()));
    assert_eq!(w.queued(pool), vec![job]);
    assert_eq!(w.state.active_job_count(), 1);
}

#[test]
fn job_submit_starts_each_kind_in_its_first_state() {
    let mut w = World::new();
    let (alpha, pool, public) = (w.alpha, w.alpha_pool, w.public);
    let service = w.submit(alpha, inference(pool, 2, 1));
    assert_eq!(w.job_state(service), JobState::Deploying);
    let notebook = w.submit(alpha, notebook(pool, Some(DAY_MS)));
    assert_eq!(w.job_state(notebook), JobState::Pending);
    let shared = w.submit(alpha, training(public, 1, 1));
    assert_eq!(w.job_state(shared), JobState::Pending);
    let mut urgent = training(pool, 1, 1);
    urgent.priority = 3;
    let urgent = w.submit(alpha, urgent);
    // Priority 3 goes to the head of the queue.
    assert_eq!(w.queued(pool), vec![urgent, service, notebook]);
    assert_eq!(w.queued(public), vec![shared]);
}

#[test]
fn job_submit_needs_a_tenant_user() {
    let mut w = World::new();
    let pool = w.alpha_pool;
    for principal in [
        Principal::PlatformAdmin,
        Principal::System,
        Principal::Node(w.alpha_gpus[0]),
    ] {
        expect_denied(&w.reject(principal, submit_command(training(pool, 1, 1))));
    }
    let rejection = w.reject(
        Principal::TenantUser(TenantId(99)),
        submit_command(training(pool, 1, 1)),
    );
    expect_not_found(&rejection, "tenant");
}

#[test]
fn job_submit_refuses_malformed_specs() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let base = training(pool, 1, 1);
    let mut cases: Vec<(JobSpec, &str)> = Vec::new();
    let mut spec = base.clone();
    spec.name = "Train".into();
    cases.push((spec, "name"));
    for retry_limit in [0, 129] {
        let mut spec = base.clone();
        spec.kind = JobKind::Training { retry_limit };
        cases.push((spec, "retry_limit"));
    }
    for after in [0, 31 * DAY_MS] {
        cases.push((notebook(pool, Some(after)), "auto_stop_after_ms"));
    }
    for replicas in [0, 1025] {
        let mut spec = base.clone();
        spec.replicas = replicas;
        cases.push((spec, "replicas"));
    }
    let mut spec = notebook(pool, None);
    spec.replicas = 2;
    cases.push((spec, "replicas"));
    let mut spec = base.clone();
    spec.per_replica.cpu_millicores = 0;
    cases.push((spec, "per_replica"));
    let mut spec = base.clone();
    spec.per_replica.memory_mib = 0;
    cases.push((spec, "per_replica"));
    let mut spec = base.clone();
    spec.accelerator_type = None;
    cases.push((spec, "accelerator_type"));
    let mut spec = base.clone();
    spec.accelerator_type = Some("nvidia a100".into());
    cases.push((spec, "accelerator_type"));
    for priority in [0, 4] {
        let mut spec = base.clone();
        spec.priority = priority;
        cases.push((spec, "priority"));
    }
    let mut spec = base.clone();
    spec.command.clear();
    cases.push((spec, "command"));
    let mut spec = base.clone();
    spec.command = vec!["x".repeat(4097)];
    cases.push((spec, "command"));
    let mut spec = base.clone();
    spec.command = vec!["run\u{0}".into()];
    cases.push((spec, "command"));
    for key in ["", "1ABC", "A-B", "CORRAL_RANK"] {
        let mut spec = base.clone();
        spec.environment = [(key.to_string(), "v".to_string())].into();
        cases.push((spec, "environment"));
    }
    let mut spec = base.clone();
    spec.environment = [("SEED".to_string(), "x".repeat(4097))].into();
    cases.push((spec, "environment"));
    let mut spec = base.clone();
    spec.node_selector = [("rack id".to_string(), "r1".to_string())].into();
    cases.push((spec, "labels.key"));
    let mut spec = base.clone();
    spec.tolerations = vec![Toleration {
        key: String::new(),
        value: None,
    }];
    cases.push((spec, "tolerations.key"));
    for runtime in [0, 366 * DAY_MS] {
        let mut spec = base.clone();
        spec.max_runtime_ms = Some(runtime);
        cases.push((spec, "max_runtime_ms"));
    }
    for (spec, field) in cases {
        expect_invalid(&w.reject(user.clone(), submit_command(spec)), field);
    }
    assert_eq!(w.state.jobs().count(), 0);
}

#[test]
fn job_submit_refuses_oversized_lists() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let base = training(pool, 1, 1);
    let mut spec = base.clone();
    spec.command = vec!["a".to_string(); MAX_COMMAND_ARGUMENTS + 1];
    expect_limit(
        &w.reject(user.clone(), submit_command(spec)),
        "command arguments",
        MAX_COMMAND_ARGUMENTS as u64,
    );
    let mut spec = base.clone();
    spec.environment = (0..=MAX_ENVIRONMENT_VARIABLES)
        .map(|index| (format!("V{index}"), "x".to_string()))
        .collect();
    expect_limit(
        &w.reject(user.clone(), submit_command(spec)),
        "environment variables",
        MAX_ENVIRONMENT_VARIABLES as u64,
    );
    let mut spec = base.clone();
    spec.node_selector = (0..=MAX_NODE_SELECTOR_LABELS)
        .map(|index| (format!("k{index}"), "v".to_string()))
        .collect();
    expect_limit(
        &w.reject(user.clone(), submit_command(spec)),
        "node selector labels",
        MAX_NODE_SELECTOR_LABELS as u64,
    );
    let mut spec = base;
    spec.tolerations = (0..=MAX_TOLERATIONS_PER_JOB)
        .map(|index| Toleration {
            key: format!("t{index}"),
            value: None,
        })
        .collect();
    expect_limit(
        &w.reject(user, submit_command(spec)),
        "tolerations",
        MAX_TOLERATIONS_PER_JOB as u64,
    );
}

#[test]
fn job_submit_to_an_unknown_or_foreign_pool_is_not_found() {
    let mut w = World::new();
    let (alpha_pool, beta_user) = (w.alpha_pool, w.beta_user());
    expect_not_found_id(
        &w.reject(
            beta_user.clone(),
            submit_command(training(alpha_pool, 1, 1)),
        ),
        "pool",
        &alpha_pool.to_string(),
    );
    expect_not_found(
        &w.reject(beta_user, submit_command(training(PoolId(99), 1, 1))),
        "pool",
    );
}

#[test]
fn job_submit_to_a_frozen_pool_is_refused() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(1, false));
    w.advance(MONTH_MS);
    w.tick();
    let rejection = w.reject(user, submit_command(training(pool, 1, 1)));
    expect_state(&rejection, "pool", "Frozen", "submit work to");
}

#[test]
fn job_submit_of_a_type_the_pool_does_not_run_is_refused() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    w.ok(
        user.clone(),
        Command::PoolSetJobTypes {
            pool,
            job_types: [JobType::Training].into_iter().collect(),
        },
    );
    expect_invalid(
        &w.reject(user.clone(), submit_command(notebook(pool, None))),
        "pool",
    );
    expect_invalid(
        &w.reject(user, submit_command(inference(pool, 1, 1))),
        "pool",
    );
}

#[test]
fn job_submit_with_a_priority_in_the_public_pool_is_refused() {
    let mut w = World::new();
    let (public, user) = (w.public, w.alpha_user());
    let mut spec = training(public, 1, 1);
    spec.priority = 2;
    expect_invalid(&w.reject(user, submit_command(spec)), "priority");
}

#[test]
fn job_submit_with_priority_three_needs_the_permission() {
    let mut w = World::new();
    let pool = beta_pool(&mut w);
    let user = w.beta_user();
    let mut spec = training(pool, 1, 1);
    spec.priority = 3;
    expect_denied(&w.reject(user.clone(), submit_command(spec.clone())));
    spec.priority = 2;
    w.ok(user, submit_command(spec));
}

#[test]
fn job_submit_that_no_node_of_the_pool_could_hold_is_refused() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let mut too_big = training(pool, 1, 16);
    too_big.per_replica.accelerators = 16;
    expect_invalid(
        &w.reject(user.clone(), submit_command(too_big)),
        "per_replica",
    );
    let mut wrong_type = training(pool, 1, 1);
    wrong_type.accelerator_type = Some("ascend-910b".into());
    expect_invalid(
        &w.reject(user.clone(), submit_command(wrong_type)),
        "per_replica",
    );
    let mut too_much_cpu = training(pool, 1, 0);
    too_much_cpu.per_replica.cpu_millicores = 65_000;
    expect_invalid(&w.reject(user, submit_command(too_much_cpu)), "per_replica");
}

#[test]
fn job_submit_beyond_the_quota_is_refused() {
    let mut w = World::new();
    let (public, beta, user) = (w.public, w.beta, w.beta_user());
    // beta may hold 32 accelerators; 5 × 8 is 40.
    let rejection = w.reject(user.clone(), submit_command(training(public, 5, 8)));
    assert_eq!(
        rejection,
        Rejection::QuotaExceeded {
            tenant: beta.to_string(),
            dimension: "accelerators".into()
        }
    );
    // What fits the quota as a whole is accepted even if not all at once.
    w.ok(user.clone(), submit_command(training(public, 4, 8)));
    w.ok(user, submit_command(training(public, 4, 8)));
}

#[test]
fn job_submit_whose_total_request_overflows_is_refused() {
    let mut w = World::new();
    let (alpha, net, user) = (w.alpha, w.alpha_net, w.alpha_user());
    let mut huge = cpu_flavor();
    huge.name = "huge".into();
    huge.capacity.cpu_millicores = u64::MAX;
    w.admin(Command::FlavorDefine(huge));
    w.register_node(node_request("huge-0", "huge", ZONE));
    let pool = w.create_dedicated_pool(
        alpha,
        "huge-pool",
        net,
        &[("huge", 1)],
        BillingMode::PayPerUse,
    );
    let mut spec = training(pool, 3, 0);
    spec.per_replica.cpu_millicores = u64::MAX / 2;
    expect_invalid(&w.reject(user, submit_command(spec)), "per_replica");
}

// JobTerminate

#[test]
fn job_terminate_of_a_pending_job_ends_it_at_once() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let job = w.submit(alpha, training(pool, 2, 1));
    let at = w.clock();
    let applied = w.ok(user, Command::JobTerminate { job });
    assert_eq!(
        transitions(&applied),
        vec![(job, JobState::Pending, JobState::Terminated)]
    );
    assert_eq!(w.job(job).finished_at_ms, Some(at));
    assert!(w.queued(pool).is_empty());
    assert_eq!(w.state.active_job_count(), 0);
}

#[test]
fn job_terminate_of_running_training_waits_for_the_replicas_to_exit() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 4));
    w.place_on(job, &nodes);
    w.started(job, 0);
    let applied = w.ok(user, Command::JobTerminate { job });
    // Rank 1 never started and is released at once; rank 0 is held until it exits.
    assert!(has_event(
        &applied,
        &Event::ReplicaReleased {
            job,
            rank: 1,
            node: nodes[1]
        }
    ));
    assert_eq!(w.job_state(job), JobState::Terminating);
    assert_eq!(w.job(job).shutdown_target, Some(JobState::Terminated));
    assert_eq!(
        w.state.tenant(alpha).unwrap().used,
        Resources::ZERO,
        "a tenant's own dedicated pool does not count against its quota"
    );
    assert!(w.node(nodes[1]).allocations.is_empty());
    let applied = w.exited(job, 0, 143);
    assert!(transitions(&applied).contains(&(job, JobState::Terminating, JobState::Terminated)));
    assert_eq!(w.state.tenant(alpha).unwrap().used, Resources::ZERO);
    assert!(w.node(nodes[0]).allocations.is_empty());
}

#[test]
fn job_terminate_of_training_that_never_started_ends_it_at_once() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 2, 4));
    w.place_on(job, &nodes);
    let applied = w.ok(user, Command::JobTerminate { job });
    assert!(transitions(&applied).contains(&(job, JobState::Running, JobState::Terminated)));
}

#[test]
fn job_terminate_of_other_kinds_and_by_the_admin() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let service = w.submit(alpha, inference(pool, 1, 1));
    w.admin(Command::JobTerminate { job: service });
    assert_eq!(w.job_state(service), JobState::Terminated);
    let notebook = w.submit(alpha, notebook(pool, None));
    w.ok(user.clone(), Command::JobStop { job: notebook });
    assert_eq!(w.job_state(notebook), JobState::Stopped);
    let applied = w.ok(user, Command::JobTerminate { job: notebook });
    assert_eq!(
        transitions(&applied),
        vec![(notebook, JobState::Stopped, JobState::Terminated)]
    );
}

#[test]
fn job_terminate_of_an_unknown_or_foreign_job_is_not_found() {
    let mut w = World::new();
    let (alpha, pool, beta_user) = (w.alpha, w.alpha_pool, w.beta_user());
    let job = w.submit(alpha, training(pool, 1, 1));
    expect_not_found_id(
        &w.reject(beta_user, Command::JobTerminate { job }),
        "job",
        &job.to_string(),
    );
    // A node's credential terminates nothing, its own replicas' jobs included.
    let node = w.alpha_gpus[0];
    expect_denied(&w.reject(Principal::Node(node), Command::JobTerminate { job }));
    expect_not_found(
        &w.reject(
            Principal::PlatformAdmin,
            Command::JobTerminate { job: JobId(77) },
        ),
        "job",
    );
}

#[test]
fn job_terminate_of_finished_or_terminating_training_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let nodes = w.alpha_gpus.clone();
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &nodes[..1]);
    w.start_all(job);
    w.ok(user.clone(), Command::JobTerminate { job });
    expect_state(
        &w.reject(user.clone(), Command::JobTerminate { job }),
        "job",
        "Terminating",
        "terminate",
    );
    w.exit_all(job, 0);
    expect_state(
        &w.reject(user.clone(), Command::JobTerminate { job }),
        "job",
        "Terminated",
        "terminate",
    );
    let done = w.submit(alpha, training(pool, 1, 1));
    w.place_on(done, &nodes[..1]);
    w.start_all(done);
    w.exit_all(done, 0);
    expect_state(
        &w.reject(user, Command::JobTerminate { job: done }),
        "job",
        "Completed",
        "terminate",
    );
}

#[test]
fn job_terminate_of_a_stopping_service_ends_it_terminated_and_twice_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let service = w.submit(alpha, inference(pool, 1, 1));
    w.place_on(service, &[node]);
    w.start_all(service);
    w.ok(user.clone(), Command::JobStop { job: service });
    assert_eq!(w.job_state(service), JobState::Stopping);
    // Terminating while stopping retargets the shutdown: it ends Terminated, not Stopped.
    w.ok(user.clone(), Command::JobTerminate { job: service });
    assert_eq!(w.job_state(service), JobState::Stopping);
    expect_state(
        &w.reject(user.clone(), Command::JobTerminate { job: service }),
        "job",
        "Stopping",
        "terminate",
    );
    w.exit_all(service, 0);
    assert_eq!(w.job_state(service), JobState::Terminated);
    expect_state(
        &w.reject(user, Command::JobTerminate { job: service }),
        "job",
        "Terminated",
        "terminate",
    );
}

// JobStop

#[test]
fn job_stop_of_a_running_service_releases_it_when_its_replicas_exit() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let nodes = w.alpha_gpus.clone();
    let service = w.submit(alpha, inference(pool, 2, 1));
    w.place_on(service, &nodes);
    w.start_all(service);
    let applied = w.ok(user, Command::JobStop { job: service });
    assert_eq!(
        transitions(&applied),
        vec![(service, JobState::Running, JobState::Stopping)]
    );
    assert_eq!(w.job(service).shutdown_target, Some(JobState::Stopped));
    w.exited(service, 0, 0);
    assert_eq!(w.job_state(service), JobState::Stopping);
    w.exited(service, 1, 0);
    assert_eq!(w.job_state(service), JobState::Stopped);
    assert!(w.job(service).placed_replicas().next().is_none());
    assert!(w.queued(pool).is_empty());
    assert_eq!(
        w.state.active_job_count(),
        1,
        "a stopped service is not finished"
    );
}

#[test]
fn job_stop_of_a_pending_notebook_stops_it_at_once() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let job = w.submit(alpha, notebook(pool, None));
    let applied = w.ok(user, Command::JobStop { job });
    assert_eq!(
        transitions(&applied),
        vec![(job, JobState::Pending, JobState::Stopped)]
    );
    assert!(w.queued(pool).is_empty());
}

#[test]
fn job_stop_of_an_unknown_or_foreign_job_is_not_found() {
    let mut w = World::new();
    let (alpha, pool, beta_user) = (w.alpha, w.alpha_pool, w.beta_user());
    let job = w.submit(alpha, notebook(pool, None));
    expect_not_found(&w.reject(beta_user, Command::JobStop { job }), "job");
    expect_not_found(
        &w.reject(
            Principal::PlatformAdmin,
            Command::JobStop { job: JobId(88) },
        ),
        "job",
    );
}

#[test]
fn job_stop_of_training_or_workflows_is_refused() {
    let mut w = World::new();
    let (alpha, pool, public, user) = (w.alpha, w.alpha_pool, w.public, w.alpha_user());
    let job = w.submit(alpha, training(pool, 1, 1));
    expect_invalid(&w.reject(user.clone(), Command::JobStop { job }), "job");
    let flow = w.submit(
        alpha,
        workflow(public, vec![step("only", &[], training(public, 1, 1))]),
    );
    expect_invalid(&w.reject(user, Command::JobStop { job: flow }), "job");
}

#[test]
fn job_stop_of_a_stopped_stopping_or_ended_job_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, notebook(pool, None));
    w.place_on(job, &[node]);
    w.start_all(job);
    w.ok(user.clone(), Command::JobStop { job });
    expect_state(
        &w.reject(user.clone(), Command::JobStop { job }),
        "job",
        "Stopping",
        "stop",
    );
    w.exit_all(job, 0);
    expect_state(
        &w.reject(user.clone(), Command::JobStop { job }),
        "job",
        "Stopped",
        "stop",
    );
    w.ok(user.clone(), Command::JobTerminate { job });
    expect_state(
        &w.reject(user, Command::JobStop { job }),
        "job",
        "Terminated",
        "stop",
    );
}

// JobStart

#[test]
fn job_start_requeues_a_stopped_notebook_or_service() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let notebook = w.submit(alpha, notebook(pool, None));
    w.place_on(notebook, &[node]);
    w.start_all(notebook);
    w.exit_all(notebook, 0);
    assert_eq!(w.job_state(notebook), JobState::Stopped);
    let applied = w.ok(user.clone(), Command::JobStart { job: notebook });
    assert_eq!(
        transitions(&applied),
        vec![(notebook, JobState::Stopped, JobState::Pending)]
    );
    assert_eq!(w.job(notebook).replicas[0].state, ReplicaState::Unplaced);
    assert_eq!(w.queued(pool), vec![notebook]);
    let service = w.submit(alpha, inference(pool, 1, 1));
    w.ok(user.clone(), Command::JobStop { job: service });
    let applied = w.ok(user, Command::JobStart { job: service });
    assert_eq!(
        transitions(&applied),
        vec![(service, JobState::Stopped, JobState::Deploying)]
    );
    assert_eq!(w.queued(pool), vec![notebook, service]);
}

#[test]
fn job_start_of_an_unknown_or_foreign_job_is_not_found() {
    let mut w = World::new();
    let (alpha, pool, user, beta_user) = (w.alpha, w.alpha_pool, w.alpha_user(), w.beta_user());
    let job = w.submit(alpha, notebook(pool, None));
    w.ok(user, Command::JobStop { job });
    expect_not_found(&w.reject(beta_user, Command::JobStart { job }), "job");
    expect_not_found(
        &w.reject(
            Principal::PlatformAdmin,
            Command::JobStart { job: JobId(5) },
        ),
        "job",
    );
}

#[test]
fn job_start_of_a_job_that_is_not_stopped_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let job = w.submit(alpha, notebook(pool, None));
    expect_state(
        &w.reject(user, Command::JobStart { job }),
        "job",
        "Pending",
        "start",
    );
}

#[test]
fn job_start_in_a_frozen_pool_is_refused() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(1, false));
    let job = w.submit(beta, notebook(pool, None));
    w.advance(MONTH_MS);
    w.tick();
    assert_eq!(w.job_state(job), JobState::Stopped);
    expect_state(
        &w.reject(user, Command::JobStart { job }),
        "pool",
        "Frozen",
        "start work in",
    );
}

#[test]
fn job_start_of_a_type_the_pool_no_longer_runs_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let job = w.submit(alpha, notebook(pool, None));
    w.ok(user.clone(), Command::JobStop { job });
    w.ok(
        user.clone(),
        Command::PoolSetJobTypes {
            pool,
            job_types: [JobType::Training].into_iter().collect(),
        },
    );
    expect_invalid(&w.reject(user, Command::JobStart { job }), "pool");
}

// JobChangePriority

#[test]
fn job_change_priority_reorders_the_queue() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let first = w.submit(alpha, training(pool, 1, 1));
    let second = w.submit(alpha, training(pool, 1, 1));
    assert_eq!(w.queued(pool), vec![first, second]);
    let generation = w.job(second).generation;
    let applied = w.ok(
        user.clone(),
        Command::JobChangePriority {
            job: second,
            priority: 2,
        },
    );
    assert_eq!(
        events(&applied),
        vec![Event::JobPriorityChanged {
            job: second,
            priority: 2
        }]
    );
    assert_eq!(w.job(second).spec.priority, 2);
    assert_eq!(w.job(second).generation, generation + 1);
    assert_eq!(w.queued(pool), vec![second, first]);
    // alpha may use priority 3.
    w.ok(
        user,
        Command::JobChangePriority {
            job: first,
            priority: 3,
        },
    );
    assert_eq!(w.queued(pool), vec![first, second]);
}

#[test]
fn job_change_priority_of_an_unknown_or_foreign_job_is_not_found() {
    let mut w = World::new();
    let (alpha, pool, beta_user) = (w.alpha, w.alpha_pool, w.beta_user());
    let job = w.submit(alpha, training(pool, 1, 1));
    expect_not_found(
        &w.reject(beta_user, Command::JobChangePriority { job, priority: 2 }),
        "job",
    );
    expect_not_found(
        &w.reject(
            Principal::PlatformAdmin,
            Command::JobChangePriority {
                job: JobId(9),
                priority: 2,
            },
        ),
        "job",
    );
}

#[test]
fn job_change_priority_refuses_out_of_range_or_unchanged_priorities() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let job = w.submit(alpha, training(pool, 1, 1));
    for priority in [0, 4, 1] {
        expect_invalid(
            &w.reject(user.clone(), Command::JobChangePriority { job, priority }),
            "priority",
        );
    }
}

#[test]
fn job_change_priority_of_other_kinds_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let job = w.submit(alpha, notebook(pool, None));
    expect_invalid(
        &w.reject(user, Command::JobChangePriority { job, priority: 2 }),
        "job",
    );
}

#[test]
fn job_change_priority_of_a_job_that_is_not_pending_is_refused() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    let rejection = w.reject(user, Command::JobChangePriority { job, priority: 2 });
    expect_state(&rejection, "job", "Running", "change the priority of");
}

#[test]
fn job_change_priority_in_the_public_pool_is_refused() {
    let mut w = World::new();
    let (alpha, public, user) = (w.alpha, w.public, w.alpha_user());
    let job = w.submit(alpha, training(public, 1, 1));
    expect_invalid(
        &w.reject(user, Command::JobChangePriority { job, priority: 2 }),
        "priority",
    );
}

#[test]
fn job_change_priority_to_three_needs_the_permission() {
    let mut w = World::new();
    let pool = beta_pool(&mut w);
    let (beta, user) = (w.beta, w.beta_user());
    let job = w.submit(beta, training(pool, 1, 1));
    expect_denied(&w.reject(
        user.clone(),
        Command::JobChangePriority { job, priority: 3 },
    ));
    w.ok(user, Command::JobChangePriority { job, priority: 2 });
}

#[test]
fn one_tenant_cannot_hold_more_than_its_share_of_active_jobs() {
    use corral_model::limits::MAX_ACTIVE_JOBS_PER_TENANT;
    let world = World::new();
    let (alpha, beta, public) = (world.alpha, world.beta, world.public);
    let mut fx = world.fx.clone().without_checks();
    let mut first = None;
    for _ in 0..MAX_ACTIVE_JOBS_PER_TENANT {
        let applied = fx.bulk(
            Principal::TenantUser(alpha),
            Command::JobSubmit(training(public, 1, 1)),
        );
        if first.is_none() {
            first = applied.created;
        }
    }
    assert_eq!(
        fx.state.tenant_active_job_count(alpha),
        MAX_ACTIVE_JOBS_PER_TENANT
    );
    let before = fx.state.objects_digest();
    let refused = fx
        .apply(
            Principal::TenantUser(alpha),
            Command::JobSubmit(training(public, 1, 1)),
        )
        .expect_err("past the tenant's bound");
    expect_limit(
        &refused,
        &format!("active jobs of {alpha}"),
        MAX_ACTIVE_JOBS_PER_TENANT as u64,
    );
    assert_eq!(
        fx.state.objects_digest(),
        before,
        "the refusal changed objects"
    );
    // Another tenant is not held back by alpha's jobs.
    fx.bulk(
        Principal::TenantUser(beta),
        Command::JobSubmit(training(public, 1, 1)),
    );
    // A finished job makes room again.
    let Some(corral_state::Created::Job(first)) = first else {
        panic!("the first submit created {first:?}");
    };
    fx.bulk(
        Principal::TenantUser(alpha),
        Command::JobTerminate { job: first },
    );
    fx.bulk(
        Principal::TenantUser(alpha),
        Command::JobSubmit(training(public, 1, 1)),
    );
    fx.check();
}

#[test]
fn secret_variables_are_named_apart_from_plain_ones_and_bounded_with_them() {
    use corral_model::limits::MAX_ENVIRONMENT_VARIABLES;
    let mut world = World::new();
    let (alpha, public) = (world.alpha, world.public);
    let mut both = training(public, 1, 1);
    both.environment.insert("TOKEN".into(), "a".into());
    both.secret_environment.insert("TOKEN".into(), "b".into());
    let rejection = world.reject(Principal::TenantUser(alpha), Command::JobSubmit(both));
    expect_invalid(&rejection, "secret_environment");
    let mut too_many = training(public, 1, 1);
    for number in 0..MAX_ENVIRONMENT_VARIABLES {
        too_many
            .environment
            .insert(format!("PLAIN_{number}"), "x".into());
    }
    too_many
        .secret_environment
        .insert("SECRET".into(), "x".into());
    let rejection = world.reject(Principal::TenantUser(alpha), Command::JobSubmit(too_many));
    expect_limit(
        &rejection,
        "environment variables",
        MAX_ENVIRONMENT_VARIABLES as u64,
    );
    let mut bad_name = training(public, 1, 1);
    bad_name
        .secret_environment
        .insert("CORRAL_RANK".into(), "x".into());
    world.reject(Principal::TenantUser(alpha), Command::JobSubmit(bad_name));
    let mut fine = training(public, 1, 1);
    fine.secret_environment
        .insert("HF_TOKEN".into(), "hf_secret".into());
    let job = world.submit(alpha, fine);
    assert_eq!(
        world.job(job).spec.secret_environment["HF_TOKEN"],
        "hf_secret"
    );
}

#[test]
fn a_tenant_may_be_given_its_own_active_job_bound() {
    use corral_model::limits::MAX_ACTIVE_JOBS;
    let mut world = World::new();
    let public = world.public;
    let rejection = world.reject(
        Principal::PlatformAdmin,
        Command::TenantCreate {
            name: "greedy".into(),
            quota: quota(8),
            may_use_high_priority: false,
            max_active_jobs: Some(MAX_ACTIVE_JOBS as u64 + 1),
        },
    );
    expect_invalid(&rejection, "max_active_jobs");
    let small = match world
        .admin(Command::TenantCreate {
            name: "small".into(),
            quota: quota(8),
            may_use_high_priority: false,
            max_active_jobs: Some(2),
        })
        .created
    {
        Some(Created::Tenant(id)) => id,
        other => panic!("created {other:?}"),
    };
    world.submit(small, training(public, 1, 1));
    world.submit(small, training(public, 1, 1));
    let rejection = world.reject(
        Principal::TenantUser(small),
        Command::JobSubmit(training(public, 1, 1)),
    );
    expect_limit(&rejection, &format!("active jobs of {small}"), 2);
}
