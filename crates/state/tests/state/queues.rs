//! Queues inside a pool: create, update, delete and their refusals; which queue a job
//! goes to at submission; the plan applier's borrowing rule; and a tenant's own
//! dedicated pool not counting against its tenant quota.

use corral_model::limits::MAX_QUEUES_PER_POOL;
use corral_model::queue::UNBOUNDED;
use corral_model::TenantId;
use corral_model::{Command, Event, JobState, PoolId, Principal, QueueSpec, Rejection, Resources};
use corral_state::testing::*;
use std::collections::BTreeSet;

fn accelerators(count: u32) -> Resources {
    Resources {
        accelerators: count,
        ..Resources::ZERO
    }
}

fn limit(count: u32) -> Resources {
    Resources {
        accelerators: count,
        ..UNBOUNDED
    }
}

fn spec(
    pool: PoolId,
    name: &str,
    guarantee: u32,
    limit_count: u32,
    members: &[TenantId],
) -> QueueSpec {
    QueueSpec {
        pool,
        name: name.to_string(),
        guarantee: accelerators(guarantee),
        limit: limit(limit_count),
        weight: 1,
        members: members.iter().copied().collect::<BTreeSet<_>>(),
        default: false,
    }
}

fn in_queue(mut job: corral_model::JobSpec, queue: &str) -> corral_model::JobSpec {
    job.queue = Some(queue.to_string());
    job
}

#[test]
fn the_platform_admin_creates_updates_lists_and_deletes_public_queues() {
    let mut world = World::new();
    let (public, alpha, beta) = (world.public, world.alpha, world.beta);
    let applied = world.admin(Command::QueueCreate(spec(
        public,
        "team-a",
        8,
        16,
        &[alpha],
    )));
    assert!(has_event(
        &applied,
        &Event::QueueCreated {
            pool: public,
            name: "team-a".into()
        }
    ));
    world.admin(Command::QueueCreate(spec(public, "team-b", 4, 8, &[beta])));
    let mut updated = spec(public, "team-b", 8, 16, &[beta, alpha]);
    updated.weight = 3;
    world.admin(Command::QueueUpdate(updated));
    let queue = world.state.queue_record(public, "team-b").unwrap();
    assert_eq!((queue.weight, queue.guarantee), (3, accelerators(8)));
    assert_eq!(queue.members.len(), 2);

    // A tenant sees the public pool's queues, and only itself among their members.
    let views = world
        .state
        .list_queues(&Principal::TenantUser(beta), public)
        .unwrap();
    let names: Vec<&str> = views.iter().map(|view| view.queue.name.as_str()).collect();
    assert_eq!(names, ["team-a", "team-b"]);
    assert!(views[0].queue.members.is_empty());
    assert_eq!(
        views[1].queue.members.iter().copied().collect::<Vec<_>>(),
        [beta]
    );

    world.admin(Command::QueueDelete {
        pool: public,
        name: "team-a".into(),
    });
    assert!(world.state.queue_record(public, "team-a").is_none());
    let missing = world.reject(
        Principal::PlatformAdmin,
        Command::QueueDelete {
            pool: public,
            name: "team-a".into(),
        },
    );
    expect_not_found(&missing, "queue");
}

#[test]
fn who_may_manage_queues() {
    let mut world = World::new();
    let (public, alpha_pool, alpha, beta) =
        (world.public, world.alpha_pool, world.alpha, world.beta);
    // Tenants may not manage the public pool's queues.
    let denied = world.reject(
        Principal::TenantUser(alpha),
        Command::QueueCreate(spec(public, "mine", 0, 4, &[alpha])),
    );
    expect_denied(&denied);
    // The owner manages its dedicated pool's queues (operator and admin roles) ...
    world.user(
        alpha,
        Command::QueueCreate(spec(alpha_pool, "research", 8, 16, &[])),
    );
    world.ok(
        Principal::TenantAdmin(alpha),
        Command::QueueCreate(spec(alpha_pool, "prod", 8, 16, &[])),
    );
    // ... a viewer cannot, and another tenant does not even find the pool.
    let viewer = world.reject(
        Principal::TenantViewer(alpha),
        Command::QueueDelete {
            pool: alpha_pool,
            name: "prod".into(),
        },
    );
    assert!(matches!(
        viewer,
        Rejection::NotFound { .. } | Rejection::PermissionDenied { .. }
    ));
    let hidden = world.reject(
        Principal::TenantUser(beta),
        Command::QueueCreate(spec(alpha_pool, "intruder", 0, 1, &[])),
    );
    expect_not_found(&hidden, "pool");
    let hidden_list = world
        .state
        .list_queues(&Principal::TenantUser(beta), alpha_pool);
    assert!(hidden_list.is_err());
}

#[test]
fn queue_validation_refuses_and_changes_nothing() {
    let mut world = World::new();
    let (public, alpha_pool, alpha, beta) =
        (world.public, world.alpha_pool, world.alpha, world.beta);
    let admin = Principal::PlatformAdmin;
    // Guarantee above limit.
    let refused = world.reject(
        admin.clone(),
        Command::QueueCreate(spec(public, "a", 8, 4, &[])),
    );
    expect_invalid(&refused, "guarantee");
    // Weight out of range, bad name.
    let mut bad = spec(public, "a", 0, 4, &[]);
    bad.weight = 0;
    expect_invalid(
        &world.reject(admin.clone(), Command::QueueCreate(bad)),
        "weight",
    );
    expect_invalid(
        &world.reject(
            admin.clone(),
            Command::QueueCreate(spec(public, "A_", 0, 4, &[])),
        ),
        "name",
    );
    // Guarantees together beyond what the pool's nodes offer (16 accelerators).
    world.admin(Command::QueueCreate(spec(public, "a", 10, 16, &[])));
    expect_invalid(
        &world.reject(
            admin.clone(),
            Command::QueueCreate(spec(public, "b", 7, 16, &[])),
        ),
        "guarantee",
    );
    // The same name twice.
    expect_exists(
        &world.reject(
            admin.clone(),
            Command::QueueCreate(spec(public, "a", 0, 16, &[])),
        ),
        "queue",
    );
    // Two default queues.
    let mut first = spec(public, "b", 0, 16, &[]);
    first.default = true;
    world.admin(Command::QueueCreate(first));
    let mut second = spec(public, "c", 0, 16, &[]);
    second.default = true;
    expect_invalid(
        &world.reject(admin.clone(), Command::QueueCreate(second)),
        "default",
    );
    // Members must exist, and a dedicated pool admits only its owner.
    expect_not_found(
        &world.reject(
            admin.clone(),
            Command::QueueCreate(spec(public, "d", 0, 16, &[TenantId(999)])),
        ),
        "tenant",
    );
    expect_invalid(
        &world.reject(
            Principal::TenantUser(alpha),
            Command::QueueCreate(spec(alpha_pool, "d", 0, 16, &[beta])),
        ),
        "members",
    );
    world.user(
        alpha,
        Command::QueueCreate(spec(alpha_pool, "d", 0, 16, &[alpha])),
    );
    // The bound on queues per pool.
    for index in 0..MAX_QUEUES_PER_POOL - 1 {
        world.user(
            alpha,
            Command::QueueCreate(spec(alpha_pool, &format!("q{index}"), 0, 16, &[])),
        );
    }
    let over = world.reject(
        Principal::TenantUser(alpha),
        Command::QueueCreate(spec(alpha_pool, "one-more", 0, 16, &[])),
    );
    expect_limit(&over, "queues per pool", MAX_QUEUES_PER_POOL as u64);
}

#[test]
fn a_job_goes_to_its_queue_or_the_pools_default_and_is_refused_otherwise() {
    let mut world = World::new();
    let (public, alpha, beta) = (world.public, world.alpha, world.beta);
    // A pool without queues knows no queue names.
    let unknown = world.reject(
        Principal::TenantUser(alpha),
        Command::JobSubmit(in_queue(training(public, 1, 1), "team-a")),
    );
    expect_not_found(&unknown, "queue");
    world.admin(Command::QueueCreate(spec(public, "team-a", 8, 8, &[alpha])));
    // Queues but no default: a job must name one.
    let unnamed = world.reject(
        Principal::TenantUser(alpha),
        Command::JobSubmit(training(public, 1, 1)),
    );
    expect_invalid(&unnamed, "queue");
    // Not a member.
    let outsider = world.reject(
        Principal::TenantUser(beta),
        Command::JobSubmit(in_queue(training(public, 1, 1), "team-a")),
    );
    expect_denied(&outsider);
    // More than the queue's limit could ever hold.
    let too_big = world.reject(
        Principal::TenantUser(alpha),
        Command::JobSubmit(in_queue(training(public, 2, 8), "team-a")),
    );
    expect_invalid(&too_big, "queue");
    // A member naming the queue, and a default queue for jobs naming none.
    let named = world.submit(alpha, in_queue(training(public, 1, 1), "team-a"));
    assert_eq!(world.job(named).spec.queue.as_deref(), Some("team-a"));
    let mut shared = spec(public, "shared", 0, 16, &[beta]);
    shared.default = true;
    world.admin(Command::QueueCreate(shared));
    let defaulted = world.submit(beta, training(public, 1, 1));
    assert_eq!(world.job(defaulted).spec.queue.as_deref(), Some("shared"));
}

#[test]
fn a_queue_with_active_jobs_is_not_deleted() {
    let mut world = World::new();
    let (public, alpha) = (world.public, world.alpha);
    world.admin(Command::QueueCreate(spec(public, "team-a", 8, 8, &[alpha])));
    let job = world.submit(alpha, in_queue(training(public, 1, 1), "team-a"));
    let refused = world.reject(
        Principal::PlatformAdmin,
        Command::QueueDelete {
            pool: public,
            name: "team-a".into(),
        },
    );
    expect_in_use(&refused, "queue", &job.to_string());
    world.user(alpha, Command::JobTerminate { job });
    assert_eq!(world.job_state(job), JobState::Terminated);
    world.admin(Command::QueueDelete {
        pool: public,
        name: "team-a".into(),
    });
}

#[test]
fn the_applier_holds_queue_limits_and_never_lends_unused_guarantee() {
    let mut world = World::new();
    let (public, alpha, beta) = (world.public, world.alpha, world.beta);
    let gpus = world.public_gpus.clone();
    // 16 accelerators: a and b are guaranteed 8 each.
    world.admin(Command::QueueCreate(spec(public, "a", 8, 16, &[alpha])));
    world.admin(Command::QueueCreate(spec(public, "b", 8, 16, &[beta])));
    let first = world.submit(alpha, in_queue(training(public, 1, 8), "a"));
    world.place_on(first, &[gpus[0]]);
    assert_eq!(
        world
            .state
            .queue_record(public, "a")
            .unwrap()
            .used
            .accelerators,
        8
    );
    // Beyond a's guarantee only what b is not guaranteed could be borrowed: nothing.
    let second = world.submit(alpha, in_queue(training(public, 1, 8), "a"));
    let reason = world.place_expecting_refusal(public, second, &[(0, gpus[1])]);
    assert!(
        reason.contains("queue a") && reason.contains("borrow"),
        "{reason}"
    );
    assert_eq!(world.job_state(second), JobState::Pending);
    // Once b is guaranteed nothing, a may borrow up to its limit.
    world.admin(Command::QueueUpdate(spec(public, "b", 0, 16, &[beta])));
    world.place_on(second, &[gpus[1]]);
    let status = world
        .state
        .list_queues(&Principal::PlatformAdmin, public)
        .unwrap();
    assert_eq!(status[0].borrowed.accelerators, 8);
    assert_eq!(status[0].lent.accelerators, 0);
    // The limit cannot be lowered below what the queue holds.
    let lowered = world.reject(
        Principal::PlatformAdmin,
        Command::QueueUpdate(spec(public, "a", 8, 8, &[alpha])),
    );
    expect_invalid(&lowered, "limit");
    // Releasing gives the use back.
    world.user(alpha, Command::JobTerminate { job: first });
    world.user(alpha, Command::JobTerminate { job: second });
    assert_eq!(
        world.state.queue_record(public, "a").unwrap().used,
        Resources::ZERO
    );
}

#[test]
fn the_applier_refuses_a_placement_over_the_queue_limit() {
    let mut world = World::new();
    let (public, alpha) = (world.public, world.alpha);
    let gpus = world.public_gpus.clone();
    world.admin(Command::QueueCreate(spec(public, "small", 0, 4, &[alpha])));
    let first = world.submit(alpha, in_queue(training(public, 1, 4), "small"));
    world.place_on(first, &[gpus[0]]);
    let second = world.submit(alpha, in_queue(training(public, 1, 4), "small"));
    let reason = world.place_expecting_refusal(public, second, &[(0, gpus[1])]);
    assert!(
        reason.contains("queue limit reached on accelerators"),
        "{reason}"
    );
}

#[test]
fn a_tenants_own_dedicated_pool_does_not_count_against_its_quota() {
    let mut world = World::new();
    let (public, alpha_pool, alpha) = (world.public, world.alpha_pool, world.alpha);
    let alpha_gpus = world.alpha_gpus.clone();
    world.admin(Command::TenantSetQuota {
        tenant: alpha,
        quota: quota(0),
    });
    // In its own pool the tenant quota does not apply, at submission or placement.
    let own = world.submit(alpha, training(alpha_pool, 2, 8));
    world.place_on(own, &alpha_gpus);
    assert_eq!(world.job_state(own), JobState::Running);
    assert_eq!(world.state.tenant(alpha).unwrap().used, Resources::ZERO);
    // In the public pool it does.
    let public_job = world.reject(
        Principal::TenantUser(alpha),
        Command::JobSubmit(training(public, 1, 1)),
    );
    assert!(
        matches!(public_job, Rejection::QuotaExceeded { .. }),
        "{public_job:?}"
    );
    // Releasing the dedicated pool's work leaves the tenant's use untouched.
    world.user(alpha, Command::JobTerminate { job: own });
    assert_eq!(world.state.tenant(alpha).unwrap().used, Resources::ZERO);
}
