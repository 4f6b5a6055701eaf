//! Workflows: a DAG of steps driven inside the state machine. Steps start when their
//! dependencies complete, a failed step fails the workflow and ends its other steps, and
//! every validation of the DAG is refused with its reason.

use corral_model::ids::{JobId, PoolId};
use corral_model::limits::{
    HOUR_MS, MAX_WORKFLOW_DEPENDENCIES_PER_STEP, MAX_WORKFLOW_STEPS, MONTH_MS,
};
use corral_model::{
    BillingMode, Command, Event, JobKind, JobSpec, JobState, JobType, Principal, Rejection,
};
use corral_state::testing::*;

/// Run a step's job to completion on `node`.
fn complete(w: &mut World, job: JobId, node: corral_model::NodeId) {
    let nodes = vec![node; w.job(job).replicas.len()];
    w.place_on(job, &nodes);
    w.start_all(job);
    w.exit_all(job, 0);
    assert_eq!(w.job_state(job), JobState::Completed);
}

fn step_jobs(w: &World, flow: JobId) -> Vec<Option<JobId>> {
    w.job(flow).workflow.clone().expect("a workflow").step_jobs
}

/// A one-replica training step in the public pool; its own `spec.pool` names a pool that
/// does not exist, to show that `use_public_pool` substitutes the public pool.
fn public_step(name: &str, depends_on: &[usize]) -> corral_model::WorkflowStep {
    let mut step = step(name, depends_on, training(PoolId(999), 1, 1));
    step.spec.name = name.into();
    step.use_public_pool = true;
    step
}

#[test]
fn workflow_steps_start_when_their_dependencies_complete() {
    let mut w = World::new();
    let (alpha, public, pool) = (w.alpha, w.public, w.alpha_pool);
    let (public_node, alpha_node) = (w.public_gpus[0], w.alpha_gpus[0]);
    // a → {b, c} → d; b runs in alpha's dedicated pool, the others in the public pool.
    let steps = vec![
        public_step("a", &[]),
        step("b", &[0], training(pool, 1, 1)),
        public_step("c", &[0]),
        public_step("d", &[1, 2]),
    ];
    let at = w.clock();
    let flow = w.submit(alpha, workflow(public, steps));
    let stored = w.job(flow);
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(stored.spec.kind.label(), "workflow");
    assert_eq!(stored.submitted_at_ms, at);
    let jobs = step_jobs(&w, flow);
    let a = jobs[0].expect("a started");
    assert_eq!(jobs[1..], [None, None, None]);
    assert_eq!(w.job(a).parent_workflow, Some(flow));
    assert_eq!(
        w.job(a).spec.pool,
        public,
        "use_public_pool substitutes the public pool"
    );
    assert_eq!(w.queued(public), vec![a]);
    complete(&mut w, a, public_node);
    let jobs = step_jobs(&w, flow);
    let (b, c) = (jobs[1].expect("b started"), jobs[2].expect("c started"));
    assert_eq!(jobs[3], None);
    assert_eq!(w.job(b).spec.pool, pool);
    complete(&mut w, b, alpha_node);
    assert_eq!(step_jobs(&w, flow)[3], None, "d waits for c");
    complete(&mut w, c, public_node);
    let d = step_jobs(&w, flow)[3].expect("d started");
    assert_eq!(w.job_state(flow), JobState::Running);
    complete(&mut w, d, public_node);
    assert_eq!(w.job_state(flow), JobState::Completed);
    assert_eq!(w.job(flow).reason, "every step completed");
    assert_eq!(w.state.active_job_count(), 0);
}

#[test]
fn workflow_steps_without_dependencies_start_together() {
    let mut w = World::new();
    let (alpha, public) = (w.alpha, w.public);
    let flow = w.submit(
        alpha,
        workflow(
            public,
            vec![
                public_step("a", &[]),
                public_step("b", &[]),
                public_step("c", &[0, 1]),
            ],
        ),
    );
    let jobs = step_jobs(&w, flow);
    assert!(jobs[0].is_some() && jobs[1].is_some() && jobs[2].is_none());
}

#[test]
fn a_failed_step_fails_the_workflow_and_ends_the_other_steps() {
    let mut w = World::new();
    let (alpha, public) = (w.alpha, w.public);
    let nodes = w.public_gpus.clone();
    let mut failing = public_step("fails", &[]);
    failing.spec.kind = JobKind::Training { retry_limit: 1 };
    let steps = vec![
        failing,
        public_step("sibling", &[]),
        public_step("after", &[0, 1]),
    ];
    let flow = w.submit(alpha, workflow(public, steps));
    let jobs = step_jobs(&w, flow);
    let (fails, sibling) = (jobs[0].unwrap(), jobs[1].unwrap());
    w.place_on(sibling, &nodes[1..2]);
    w.start_all(sibling);
    w.place_on(fails, &nodes[..1]);
    w.start_all(fails);
    // The first non-zero exit restarts the gang; the second fails it.
    w.exited(fails, 0, 1);
    assert_eq!(w.job_state(fails), JobState::Pending);
    assert_eq!(w.job_state(flow), JobState::Running);
    w.place_on(fails, &nodes[..1]);
    w.start_all(fails);
    let applied = w.exited(fails, 0, 2);
    let changes = transitions(&applied);
    assert!(changes.contains(&(fails, JobState::Running, JobState::Failed)));
    assert!(changes.contains(&(flow, JobState::Running, JobState::Failed)));
    assert!(changes.contains(&(sibling, JobState::Running, JobState::Terminating)));
    assert!(
        w.job(flow).reason.contains(&fails.to_string()),
        "{}",
        w.job(flow).reason
    );
    // The running sibling is released when its agent reports the exit.
    w.exit_all(sibling, 143);
    assert_eq!(w.job_state(sibling), JobState::Terminated);
    assert_eq!(step_jobs(&w, flow)[2], None, "the last step never starts");
    assert_eq!(w.job_state(flow), JobState::Failed);
}

#[test]
fn terminating_a_step_fails_its_workflow() {
    let mut w = World::new();
    let (alpha, public, user) = (w.alpha, w.public, w.alpha_user());
    let flow = w.submit(alpha, workflow(public, vec![public_step("a", &[])]));
    let a = step_jobs(&w, flow)[0].unwrap();
    w.ok(user, Command::JobTerminate { job: a });
    assert_eq!(w.job_state(flow), JobState::Failed);
}

#[test]
fn terminating_a_workflow_terminates_its_steps() {
    let mut w = World::new();
    let (alpha, public, user) = (w.alpha, w.public, w.alpha_user());
    let node = w.public_gpus[0];
    let flow = w.submit(
        alpha,
        workflow(public, vec![public_step("a", &[]), public_step("b", &[])]),
    );
    let jobs = step_jobs(&w, flow);
    let (a, b) = (jobs[0].unwrap(), jobs[1].unwrap());
    w.place_on(a, &[node]);
    w.start_all(a);
    let applied = w.ok(user, Command::JobTerminate { job: flow });
    let changes = transitions(&applied);
    assert_eq!(changes[0], (flow, JobState::Running, JobState::Terminated));
    assert!(changes.contains(&(a, JobState::Running, JobState::Terminating)));
    assert!(changes.contains(&(b, JobState::Pending, JobState::Terminated)));
    w.exit_all(a, 143);
    assert_eq!(w.job_state(a), JobState::Terminated);
    assert_eq!(w.job_state(flow), JobState::Terminated);
}

#[test]
fn a_step_that_can_no_longer_start_fails_the_workflow() {
    let mut w = World::new();
    let (alpha, public, pool, user) = (w.alpha, w.public, w.alpha_pool, w.alpha_user());
    let node = w.public_gpus[0];
    let flow = w.submit(
        alpha,
        workflow(
            public,
            vec![public_step("a", &[]), step("b", &[0], training(pool, 1, 1))],
        ),
    );
    w.ok(
        user,
        Command::PoolSetJobTypes {
            pool,
            job_types: [JobType::Inference].into_iter().collect(),
        },
    );
    let a = step_jobs(&w, flow)[0].unwrap();
    complete(&mut w, a, node);
    assert_eq!(w.job_state(flow), JobState::Failed);
    assert!(
        w.job(flow).reason.contains("'b' could not start"),
        "{}",
        w.job(flow).reason
    );
    assert_eq!(step_jobs(&w, flow)[1], None);
}

// Parallel steps ending together: when one step's end fails the workflow, the workflow
// terminates its sibling in the same entry; the command that is still walking its list
// of jobs must then leave the already ended sibling alone.

#[test]
fn disabling_a_job_type_under_two_pending_steps_ends_each_once() {
    let mut w = World::new();
    let (alpha, public, pool, user) = (w.alpha, w.public, w.alpha_pool, w.alpha_user());
    let flow = w.submit(
        alpha,
        workflow(
            public,
            vec![
                step("a", &[], training(pool, 1, 1)),
                step("b", &[], training(pool, 1, 1)),
            ],
        ),
    );
    let jobs = step_jobs(&w, flow);
    w.ok(
        user,
        Command::PoolSetJobTypes {
            pool,
            job_types: [JobType::Notebook].into_iter().collect(),
        },
    );
    assert_eq!(w.job_state(jobs[0].unwrap()), JobState::Failed);
    assert_eq!(w.job_state(jobs[1].unwrap()), JobState::Terminated);
    assert_eq!(w.job_state(flow), JobState::Failed);
}

#[test]
fn freezing_a_pool_under_two_pending_steps_ends_each_once() {
    let mut w = World::new();
    let (beta, net, public) = (w.beta, w.beta_net, w.public);
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(1, false));
    let flow = w.submit(
        beta,
        workflow(
            public,
            vec![
                step("a", &[], training(pool, 1, 1)),
                step("b", &[], training(pool, 1, 1)),
            ],
        ),
    );
    w.advance(MONTH_MS);
    w.tick();
    let jobs = step_jobs(&w, flow);
    assert_eq!(w.job_state(jobs[0].unwrap()), JobState::Failed);
    assert_eq!(w.job_state(jobs[1].unwrap()), JobState::Terminated);
    assert_eq!(w.job_state(flow), JobState::Failed);
}

#[test]
fn max_runtime_of_two_placed_steps_ends_each_once() {
    let mut w = World::new();
    let (alpha, public, pool) = (w.alpha, w.public, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let mut spec = training(pool, 1, 1);
    spec.max_runtime_ms = Some(HOUR_MS);
    let flow = w.submit(
        alpha,
        workflow(
            public,
            vec![step("a", &[], spec.clone()), step("b", &[], spec)],
        ),
    );
    let jobs = step_jobs(&w, flow);
    let (a, b) = (jobs[0].unwrap(), jobs[1].unwrap());
    // Both placed, neither reported started yet.
    w.place_on(a, &[node]);
    w.place_on(b, &[node]);
    w.advance(2 * HOUR_MS);
    w.tick();
    assert_eq!(w.job_state(a), JobState::Failed);
    assert_eq!(w.job_state(b), JobState::Terminated);
    assert_eq!(w.job_state(flow), JobState::Failed);
    assert!(w.node(node).allocations.is_empty());
}

#[test]
fn losing_the_node_of_two_steps_ends_each_once() {
    let mut w = World::new();
    let (alpha, public, pool) = (w.alpha, w.public, w.alpha_pool);
    let (node, spare) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let mut spec = training(pool, 1, 1);
    spec.kind = JobKind::Training { retry_limit: 1 };
    let flow = w.submit(
        alpha,
        workflow(
            public,
            vec![step("a", &[], spec), step("b", &[], training(pool, 1, 1))],
        ),
    );
    let jobs = step_jobs(&w, flow);
    let (a, b) = (jobs[0].unwrap(), jobs[1].unwrap());
    // Use up a's disruptions: one more loss fails it.
    for _ in 0..corral_model::limits::MAX_DISRUPTIONS_PER_JOB {
        w.advance(corral_model::limits::MAX_DISRUPTION_BACKOFF_MS);
        w.place_on(a, &[spare]);
        w.system(Command::NodeLost { node: spare });
        w.system(Command::NodeRecovered { node: spare });
    }
    assert_eq!(w.job(a).retries_used, 0);
    w.advance(corral_model::limits::MAX_DISRUPTION_BACKOFF_MS);
    w.place_on(a, &[node]);
    w.place_on(b, &[node]);
    let applied = w.system(Command::NodeLost { node });
    let changes = transitions(&applied);
    assert!(changes.contains(&(a, JobState::Running, JobState::Failed)));
    assert!(changes.contains(&(b, JobState::Running, JobState::Terminated)));
    assert_eq!(w.job_state(b), JobState::Terminated);
    assert_eq!(w.job_state(flow), JobState::Failed);
}

// Rejections.

fn submit_flow(w: &mut World, spec: JobSpec) -> Rejection {
    let user = w.alpha_user();
    w.reject(user, Command::JobSubmit(spec))
}

#[test]
fn workflow_submit_refuses_a_bad_name_or_no_steps() {
    let mut w = World::new();
    let public = w.public;
    let mut spec = workflow(public, vec![public_step("a", &[])]);
    spec.name = "Flow".into();
    expect_invalid(&submit_flow(&mut w, spec), "name");
    expect_invalid(&submit_flow(&mut w, workflow(public, vec![])), "steps");
}

#[test]
fn workflow_submit_refuses_too_many_steps_or_dependencies() {
    let mut w = World::new();
    let public = w.public;
    let steps = (0..=MAX_WORKFLOW_STEPS)
        .map(|index| public_step(&format!("s{index}"), &[]))
        .collect();
    expect_limit(
        &submit_flow(&mut w, workflow(public, steps)),
        "workflow steps",
        MAX_WORKFLOW_STEPS as u64,
    );
    let mut steps: Vec<_> = (0..=MAX_WORKFLOW_DEPENDENCIES_PER_STEP)
        .map(|index| public_step(&format!("s{index}"), &[]))
        .collect();
    let all: Vec<usize> = (0..steps.len()).collect();
    steps.push(public_step("last", &all));
    expect_limit(
        &submit_flow(&mut w, workflow(public, steps)),
        "dependencies per step",
        MAX_WORKFLOW_DEPENDENCIES_PER_STEP as u64,
    );
}

#[test]
fn workflow_submit_refuses_bad_or_duplicate_step_names() {
    let mut w = World::new();
    let public = w.public;
    let bad = workflow(public, vec![public_step("Step", &[])]);
    expect_invalid(&submit_flow(&mut w, bad), "steps.name");
    let twice = workflow(public, vec![public_step("a", &[]), public_step("a", &[])]);
    expect_invalid(&submit_flow(&mut w, twice), "steps.name");
}

#[test]
fn workflow_submit_refuses_dependencies_on_itself_or_later_steps() {
    let mut w = World::new();
    let public = w.public;
    let on_itself = workflow(public, vec![public_step("a", &[0])]);
    expect_invalid(&submit_flow(&mut w, on_itself), "steps.depends_on");
    let forward = workflow(public, vec![public_step("a", &[1]), public_step("b", &[])]);
    expect_invalid(&submit_flow(&mut w, forward), "steps.depends_on");
}

#[test]
fn workflow_submit_refuses_nested_workflows() {
    let mut w = World::new();
    let public = w.public;
    let inner = workflow(public, vec![public_step("x", &[])]);
    let mut nested = step("inner", &[], inner);
    nested.use_public_pool = true;
    expect_invalid(
        &submit_flow(&mut w, workflow(public, vec![nested])),
        "steps.spec",
    );
}

#[test]
fn workflow_submit_with_public_steps_needs_a_public_pool() {
    let mut w = World::new();
    let public = w.public;
    w.admin(Command::PoolDelete {
        pool: public,
        force: true,
    });
    let rejection = submit_flow(&mut w, workflow(public, vec![public_step("a", &[])]));
    expect_not_found_id(&rejection, "pool", "public");
}

#[test]
fn workflow_submit_validates_every_step_like_a_job() {
    let mut w = World::new();
    let (public, beta_net, beta) = (w.public, w.beta_net, w.beta);
    let mut bad_shape = public_step("a", &[]);
    bad_shape.spec.kind = JobKind::Training { retry_limit: 0 };
    expect_invalid(
        &submit_flow(&mut w, workflow(public, vec![bad_shape])),
        "retry_limit",
    );
    let beta_pool = w.create_dedicated_pool(
        beta,
        "beta-pool",
        beta_net,
        &[(GPU, 1)],
        BillingMode::PayPerUse,
    );
    let foreign = step("a", &[], training(beta_pool, 1, 1));
    expect_not_found(
        &submit_flow(&mut w, workflow(public, vec![foreign])),
        "pool",
    );
    let mut greedy = public_step("a", &[]);
    greedy.spec = training(public, 9, 8);
    greedy.spec.name = "a".into();
    greedy.use_public_pool = true;
    assert!(matches!(
        submit_flow(&mut w, workflow(public, vec![greedy])),
        Rejection::QuotaExceeded { .. }
    ));
    assert_eq!(w.state.jobs().count(), 0);
}

#[test]
fn workflow_submit_needs_a_tenant_user() {
    let mut w = World::new();
    let public = w.public;
    let spec = workflow(public, vec![public_step("a", &[])]);
    expect_denied(&w.reject(Principal::PlatformAdmin, Command::JobSubmit(spec)));
}

#[test]
fn workflow_events_name_the_tenant() {
    let mut w = World::new();
    let (alpha, public) = (w.alpha, w.public);
    let before = w.next_index();
    let flow = w.submit(alpha, workflow(public, vec![public_step("a", &[])]));
    let a = step_jobs(&w, flow)[0].unwrap();
    let records: Vec<_> = w
        .state
        .events()
        .filter(|record| record.index >= before)
        .collect();
    assert!(records.iter().all(|record| record.tenant == Some(alpha)));
    assert!(records.iter().any(|record| record.event
        == Event::JobSubmitted {
            job: a,
            pool: public
        }));
}
