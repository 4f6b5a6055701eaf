//! Queries as each principal may see them: pools, nodes, jobs (queue position, pending
//! and running durations), bills by window, and events since an index, filtered per
//! tenant. Other tenants' objects are NotFound.

use corral_model::ids::{JobId, NodeId, PoolId, TenantId};
use corral_model::limits::{HOUR_MS, MAX_EVENTS_RETAINED};
use corral_model::{
    BillSubject, BillingMode, Command, Event, JobState, NodeStatus, PoolStatus, Principal,
    Rejection,
};
use corral_state::testing::*;
use corral_state::{BillQuery, JobFilter, NodeFilter, PoolFilter, QueryError};

fn not_found(kind: &str, id: impl std::fmt::Display) -> QueryError {
    QueryError::Rejected(Rejection::NotFound {
        kind: kind.into(),
        id: id.to_string(),
    })
}

fn pool_ids(pools: Vec<&corral_model::Pool>) -> Vec<PoolId> {
    pools.into_iter().map(|pool| pool.id).collect()
}

fn node_ids(nodes: Vec<&corral_model::Node>) -> Vec<NodeId> {
    nodes.into_iter().map(|node| node.id).collect()
}

fn job_ids(views: Vec<corral_state::JobView>) -> Vec<JobId> {
    views.into_iter().map(|view| view.job.id).collect()
}

#[test]
fn tenants_see_the_public_pool_and_their_own_pools() {
    let mut w = World::new();
    let (alpha, beta, public, alpha_pool, net) =
        (w.alpha, w.beta, w.public, w.alpha_pool, w.beta_net);
    let beta_pool =
        w.create_dedicated_pool(beta, "beta-pool", net, &[(GPU, 1)], BillingMode::PayPerUse);
    let all = PoolFilter::default();
    assert_eq!(
        pool_ids(w.state.list_pools(&Principal::TenantUser(alpha), &all, 100)),
        vec![public, alpha_pool]
    );
    assert_eq!(
        pool_ids(w.state.list_pools(&Principal::TenantUser(beta), &all, 100)),
        vec![public, beta_pool]
    );
    assert_eq!(
        pool_ids(w.state.list_pools(&Principal::PlatformAdmin, &all, 100)),
        vec![public, alpha_pool, beta_pool]
    );
    let owned = PoolFilter {
        owner: Some(beta),
        status: None,
    };
    assert_eq!(
        pool_ids(w.state.list_pools(&Principal::PlatformAdmin, &owned, 100)),
        vec![beta_pool]
    );
    assert!(w
        .state
        .list_pools(&Principal::TenantUser(alpha), &owned, 100)
        .is_empty());
    let frozen = PoolFilter {
        owner: None,
        status: Some(PoolStatus::Frozen),
    };
    assert!(w
        .state
        .list_pools(&Principal::PlatformAdmin, &frozen, 100)
        .is_empty());
    // Lists are bounded; a limit of 0 still answers one item.
    assert_eq!(
        w.state.list_pools(&Principal::PlatformAdmin, &all, 2).len(),
        2
    );
    assert_eq!(
        w.state.list_pools(&Principal::PlatformAdmin, &all, 0).len(),
        1
    );
    assert_eq!(
        w.state
            .get_pool(&Principal::TenantUser(alpha), public)
            .unwrap()
            .id,
        public
    );
    assert_eq!(
        w.state.get_pool(&Principal::TenantUser(alpha), beta_pool),
        Err(not_found("pool", beta_pool))
    );
    assert_eq!(
        w.state.get_pool(&Principal::PlatformAdmin, PoolId(99)),
        Err(not_found("pool", PoolId(99)))
    );
}

#[test]
fn tenants_see_only_the_nodes_of_their_own_pools() {
    let w = World::new();
    let (alpha, alpha_pool, public) = (w.alpha, w.alpha_pool, w.public);
    let tenant = Principal::TenantUser(alpha);
    let all = NodeFilter::default();
    assert_eq!(
        node_ids(w.state.list_nodes(&tenant, &all, 100)),
        w.pool_node_ids(alpha_pool)
    );
    let in_public = NodeFilter {
        pool: Some(public),
        ..NodeFilter::default()
    };
    assert!(w.state.list_nodes(&tenant, &in_public, 100).is_empty());
    assert_eq!(
        node_ids(
            w.state
                .list_nodes(&Principal::PlatformAdmin, &in_public, 100)
        ),
        w.pool_node_ids(public)
    );
    let free = NodeFilter {
        free_only: true,
        ..NodeFilter::default()
    };
    assert_eq!(
        w.state
            .list_nodes(&Principal::PlatformAdmin, &free, 100)
            .len(),
        10
    );
    assert!(w.state.list_nodes(&tenant, &free, 100).is_empty());
    assert_eq!(
        w.state
            .list_nodes(&Principal::PlatformAdmin, &all, 100)
            .len(),
        16
    );
    let own = w.alpha_gpus[0];
    assert_eq!(w.state.get_node(&tenant, own).unwrap().id, own);
    let public_node = w.public_gpus[0];
    assert_eq!(
        w.state.get_node(&tenant, public_node),
        Err(not_found("node", public_node))
    );
    assert!(w
        .state
        .get_node(&Principal::PlatformAdmin, public_node)
        .is_ok());
}

#[test]
fn node_status_filter() {
    let mut w = World::new();
    let node = w.alpha_gpus[0];
    w.system(Command::NodeLost { node });
    let abnormal = NodeFilter {
        status: Some(NodeStatus::Abnormal),
        ..NodeFilter::default()
    };
    assert_eq!(
        node_ids(w.state.list_nodes(&Principal::PlatformAdmin, &abnormal, 10)),
        vec![node]
    );
}

#[test]
fn tenants_see_only_their_own_jobs() {
    let mut w = World::new();
    let (alpha, beta, public, alpha_pool) = (w.alpha, w.beta, w.public, w.alpha_pool);
    let mine = w.submit(alpha, training(alpha_pool, 1, 1));
    let shared = w.submit(alpha, notebook(public, None));
    let theirs = w.submit(beta, training(public, 1, 1));
    let alpha_user = Principal::TenantUser(alpha);
    let all = JobFilter::default();
    assert_eq!(
        job_ids(w.state.list_jobs(&alpha_user, &all, 100)),
        vec![mine, shared]
    );
    assert_eq!(
        job_ids(w.state.list_jobs(&Principal::PlatformAdmin, &all, 100)),
        vec![mine, shared, theirs]
    );
    // Asking for another tenant's jobs answers nothing rather than their jobs.
    let other = JobFilter {
        tenant: Some(beta),
        ..JobFilter::default()
    };
    assert!(w.state.list_jobs(&alpha_user, &other, 100).is_empty());
    assert_eq!(
        w.state.get_job(&alpha_user, theirs),
        Err(not_found("job", theirs))
    );
    assert_eq!(w.state.get_job(&alpha_user, mine).unwrap().job.id, mine);
    // Filters by pool, state and kind.
    let in_public = JobFilter {
        pool: Some(public),
        ..JobFilter::default()
    };
    assert_eq!(
        job_ids(
            w.state
                .list_jobs(&Principal::PlatformAdmin, &in_public, 100)
        ),
        vec![shared, theirs]
    );
    let notebooks = JobFilter {
        kind: Some("notebook".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        job_ids(w.state.list_jobs(&alpha_user, &notebooks, 100)),
        vec![shared]
    );
    w.ok(alpha_user.clone(), Command::JobTerminate { job: mine });
    let terminated = JobFilter {
        state: Some(JobState::Terminated),
        ..JobFilter::default()
    };
    assert_eq!(
        job_ids(w.state.list_jobs(&alpha_user, &terminated, 100)),
        vec![mine]
    );
    assert_eq!(
        w.state.list_jobs(&Principal::PlatformAdmin, &all, 1).len(),
        1
    );
}

#[test]
fn queue_positions_follow_priority_then_submission() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let first = w.submit(alpha, training(pool, 1, 1));
    let second = w.submit(alpha, training(pool, 1, 1));
    let third = w.submit(alpha, training(pool, 1, 1));
    let position = |w: &World, job| w.state.get_job(&user, job).unwrap().queue_position;
    assert_eq!(
        [
            position(&w, first),
            position(&w, second),
            position(&w, third)
        ],
        [Some(0), Some(1), Some(2)]
    );
    w.ok(
        user.clone(),
        Command::JobChangePriority {
            job: third,
            priority: 2,
        },
    );
    assert_eq!(
        [
            position(&w, first),
            position(&w, second),
            position(&w, third)
        ],
        [Some(1), Some(2), Some(0)]
    );
    w.place_on(third, &[node]);
    assert_eq!(position(&w, third), None);
    assert_eq!(position(&w, first), Some(0));
    let listed: Vec<_> = w
        .state
        .list_jobs(&user, &JobFilter::default(), 100)
        .into_iter()
        .map(|view| (view.job.id, view.queue_position))
        .collect();
    assert_eq!(
        listed,
        vec![(first, Some(0)), (second, Some(1)), (third, None)]
    );
}

#[test]
fn pending_and_running_durations_add_up_over_restarts() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let node = w.alpha_gpus[0];
    let submitted = w.clock();
    let job = w.submit(alpha, training(pool, 1, 1));
    w.set_clock(submitted + 5_000);
    w.tick();
    let view = w.state.get_job(&user, job).unwrap();
    assert_eq!((view.pending_ms, view.running_ms), (5_000, 0));
    w.set_clock(submitted + 7_000);
    w.place_on(job, &[node]);
    w.start_all(job);
    w.set_clock(submitted + 67_000);
    w.tick();
    let view = w.state.get_job(&user, job).unwrap();
    assert_eq!((view.pending_ms, view.running_ms), (7_000, 60_000));
    // A restart waits again; the totals keep the earlier run.
    w.set_clock(submitted + 70_000);
    w.exited(job, 0, 1);
    w.set_clock(submitted + 80_000);
    w.tick();
    let view = w.state.get_job(&user, job).unwrap();
    assert_eq!((view.pending_ms, view.running_ms), (17_000, 63_000));
    w.set_clock(submitted + 90_000);
    w.place_on(job, &[node]);
    w.start_all(job);
    w.set_clock(submitted + 100_000);
    w.exit_all(job, 0);
    w.advance(HOUR_MS);
    w.tick();
    let view = w.state.get_job(&user, job).unwrap();
    assert_eq!(view.job.state, JobState::Completed);
    assert_eq!((view.pending_ms, view.running_ms), (27_000, 73_000));
}

#[test]
fn bills_are_answered_per_tenant_and_window() {
    let mut w = World::new();
    let (alpha, beta, public) = (w.alpha, w.beta, w.public);
    let node = w.public_gpus[0];
    let start = w.state.now_ms();
    let job = w.submit(beta, training(public, 1, 8));
    w.place_on(job, &[node]);
    let placed = w.job(job).replicas[0].assigned_at_ms.unwrap();
    for hour in 1..=3 {
        w.set_clock(placed + hour * HOUR_MS);
        w.tick();
    }
    let beta_user = Principal::TenantUser(beta);
    let everything = BillQuery {
        tenant: None,
        from_ms: 0,
        to_ms: None,
    };
    let summary = w.state.bills(&beta_user, &everything).unwrap();
    assert_eq!(summary.lines.len(), 3);
    assert!(summary.lines.iter().all(|line| line.tenant == beta));
    assert_eq!(summary.window_total_micros, 3 * GPU_PRICE);
    assert_eq!(summary.lifetime_total_micros, 3 * GPU_PRICE);
    assert!(!summary.truncated);
    // The second hour only: lines touching the window's edges are left out.
    let second_hour = BillQuery {
        tenant: None,
        from_ms: placed + HOUR_MS,
        to_ms: Some(placed + 2 * HOUR_MS),
    };
    let summary = w.state.bills(&beta_user, &second_hour).unwrap();
    assert_eq!(summary.lines.len(), 1);
    assert_eq!(
        (summary.lines[0].from_ms, summary.lines[0].to_ms),
        (placed + HOUR_MS, placed + 2 * HOUR_MS)
    );
    assert_eq!(summary.window_total_micros, GPU_PRICE);
    assert_eq!(summary.lifetime_total_micros, 3 * GPU_PRICE);
    // A window overlapping two lines counts both, whole.
    let straddling = BillQuery {
        tenant: None,
        from_ms: placed + HOUR_MS / 2,
        to_ms: Some(placed + HOUR_MS + 1),
    };
    assert_eq!(
        w.state.bills(&beta_user, &straddling).unwrap().lines.len(),
        2
    );
    let before = BillQuery {
        tenant: None,
        from_ms: 0,
        to_ms: Some(start),
    };
    assert!(w.state.bills(&beta_user, &before).unwrap().lines.is_empty());
    // A tenant cannot read another tenant's bills.
    let alpha_user = Principal::TenantUser(alpha);
    let of_beta = BillQuery {
        tenant: Some(beta),
        ..everything.clone()
    };
    assert_eq!(
        w.state.bills(&alpha_user, &of_beta),
        Err(not_found("tenant", beta))
    );
    let alpha_bills = w.state.bills(&alpha_user, &everything).unwrap();
    assert!(alpha_bills.lines.iter().all(|line| line.tenant == alpha));
    assert!(alpha_bills
        .lines
        .iter()
        .all(|line| matches!(line.subject, BillSubject::Node { .. })));
    // The admin sees everyone's, or one tenant's.
    let all = w
        .state
        .bills(&Principal::PlatformAdmin, &everything)
        .unwrap();
    assert_eq!(
        all.lifetime_total_micros,
        alpha_bills.lifetime_total_micros + 3 * GPU_PRICE
    );
    let only_beta = w.state.bills(&Principal::PlatformAdmin, &of_beta).unwrap();
    assert_eq!(only_beta.lines.len(), 3);
    let nobody = BillQuery {
        tenant: Some(TenantId(77)),
        ..everything
    };
    assert_eq!(
        w.state
            .bills(&Principal::PlatformAdmin, &nobody)
            .unwrap()
            .lifetime_total_micros,
        0
    );
}

#[test]
fn events_since_an_index_are_filtered_per_tenant() {
    let mut w = World::new();
    let (alpha, beta, public, pool) = (w.alpha, w.beta, w.public, w.alpha_pool);
    let from = w.next_index();
    let alpha_job = w.submit(alpha, training(pool, 1, 1));
    let beta_job = w.submit(beta, training(public, 1, 1));
    w.admin(Command::NodeRegister(node_request("late", CPU, ZONE)));
    let alpha_user = Principal::TenantUser(alpha);
    let seen: Vec<_> = w
        .state
        .events_since(&alpha_user, from, 100)
        .unwrap()
        .into_iter()
        .map(|record| record.event.clone())
        .collect();
    assert_eq!(seen.len(), 2);
    assert!(seen.contains(&Event::JobSubmitted {
        job: alpha_job,
        pool
    }));
    let admin: Vec<_> = w
        .state
        .events_since(&Principal::PlatformAdmin, from, 100)
        .unwrap();
    assert_eq!(admin.len(), 5);
    assert!(admin.iter().any(|record| record.tenant.is_none()));
    assert!(admin.iter().any(|record| record.tenant == Some(beta)
        && record.event
            == Event::JobSubmitted {
                job: beta_job,
                pool: public
            }));
    assert!(admin.windows(2).all(|pair| pair[0].index <= pair[1].index));
    // From a later index only later events; a limit bounds the answer.
    let later = w
        .state
        .events_since(&Principal::PlatformAdmin, from + 1, 100)
        .unwrap();
    assert!(later.iter().all(|record| record.index > from));
    assert_eq!(later.len(), 3);
    assert_eq!(
        w.state
            .events_since(&Principal::PlatformAdmin, from, 2)
            .unwrap()
            .len(),
        2
    );
    assert!(w
        .state
        .events_since(&alpha_user, w.next_index(), 100)
        .unwrap()
        .is_empty());
}

#[test]
fn events_before_the_retained_window_are_reported_compacted() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let node = fx.register_node(node_request("n", CPU, ZONE));
    // Each lock or unlock adds one event.
    for round in 0..MAX_EVENTS_RETAINED {
        fx.bulk(
            Principal::PlatformAdmin,
            Command::NodeSetDeletionLock {
                node,
                locked: round % 2 == 0,
            },
        );
    }
    fx.check();
    assert_eq!(fx.state.events().count(), MAX_EVENTS_RETAINED);
    let oldest = fx.state.events().next().unwrap().index;
    assert!(oldest > 1);
    assert_eq!(
        fx.state.events_since(&Principal::PlatformAdmin, 1, 10),
        Err(QueryError::Compacted {
            oldest_index: oldest
        })
    );
    assert_eq!(
        fx.state
            .events_since(&Principal::PlatformAdmin, oldest, 10)
            .unwrap()
            .len(),
        10
    );
}
