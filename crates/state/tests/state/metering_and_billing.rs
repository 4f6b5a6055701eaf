//! The metering tick and billing: node-time billing of pay-per-use dedicated pools,
//! per-replica billing in the public pool, both equal to the integral of price × share ×
//! time; prepaid pools charged up front, renewed, frozen at expiry and deleted after the
//! retention period.

use corral_model::ids::{NodeId, PoolId, TenantId};
use corral_model::limits::{
    DAY_MS, FROZEN_RETENTION_MS, HOUR_MS, MAX_PRICE_MICROS_PER_HOUR, MONTH_MS,
};
use corral_model::{
    BillSubject, BillingMode, Command, Event, JobState, PoolStatus, Principal, Resources,
};
use corral_state::testing::*;
use corral_state::BillQuery;

fn lines_of(w: &World, tenant: TenantId) -> Vec<corral_model::BillLine> {
    w.state
        .bills(
            &Principal::TenantUser(tenant),
            &BillQuery {
                tenant: None,
                from_ms: 0,
                to_ms: None,
            },
        )
        .unwrap()
        .lines
}

fn replica_meters(w: &World) -> Vec<corral_model::Meter> {
    w.state
        .meters()
        .filter(|meter| matches!(meter.subject, BillSubject::JobReplica { .. }))
        .cloned()
        .collect()
}

fn node_lines_total(w: &World, tenant: TenantId, node: NodeId) -> u64 {
    lines_of(w, tenant)
        .iter()
        .filter(|line| line.subject == BillSubject::Node { node })
        .map(|line| line.amount_micros)
        .sum()
}

#[test]
fn meter_tick_is_proposed_only_by_the_leader() {
    let mut w = World::new();
    let user = w.alpha_user();
    for principal in [
        Principal::PlatformAdmin,
        Principal::Node(w.alpha_gpus[0]),
        user,
    ] {
        expect_denied(&w.reject(principal, Command::MeterTick));
    }
}

#[test]
fn meter_tick_with_nothing_to_bill_changes_only_the_time() {
    let mut fx = Fx::new();
    fx.define_catalog();
    fx.advance(HOUR_MS);
    let at = fx.clock();
    let applied = fx.tick();
    assert!(applied.events.is_empty());
    assert_eq!(fx.state.now_ms(), at);
}

#[test]
fn pay_per_use_nodes_are_billed_for_their_time_in_the_pool() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let members = w.pool_node_ids(pool);
    let joined = w.node(members[0]).joined_pool_at_ms.unwrap();
    // Odd intervals, so every line rounds down; the lines still add up exactly.
    let mut at = joined;
    let mut billed_so_far = w.billed(alpha);
    for step in [1_234_567, 999, 3 * HOUR_MS + 17, 1] {
        at += step;
        w.set_clock(at);
        let applied = w.tick();
        // One Billed event per tenant and pool, for what the lines of this tick add.
        assert_eq!(applied.events.len(), 1);
        assert_eq!(applied.events[0].tenant, Some(alpha));
        let Event::Billed {
            tenant,
            pool: billed_pool,
            amount_micros,
        } = applied.events[0].event
        else {
            panic!("{:?}", applied.events[0]);
        };
        assert_eq!((tenant, billed_pool), (alpha, pool));
        let before = billed_so_far;
        billed_so_far = w.billed(alpha);
        assert_eq!(amount_micros, billed_so_far - before);
    }
    let elapsed = at - joined;
    for node in &members {
        let price = if w.node(*node).flavor == GPU {
            GPU_PRICE
        } else {
            CPU_PRICE
        };
        assert_eq!(node_lines_total(&w, alpha, *node), owed(price, elapsed));
    }
    let total = 2 * owed(GPU_PRICE, elapsed) + owed(CPU_PRICE, elapsed);
    assert_eq!(w.billed(alpha), total);
    // Work in a dedicated pool costs nothing extra: the node is what is billed.
    let job = w.submit(alpha, training(pool, 1, 8));
    let gpu = w.alpha_gpus[0];
    w.place_on(job, &[gpu]);
    assert_eq!(w.job(job).replicas[0].meter, None);
}

#[test]
fn a_node_leaving_a_pay_per_use_pool_is_billed_up_to_that_moment_and_no_further() {
    let mut w = World::new();
    let (alpha, pool, user) = (w.alpha, w.alpha_pool, w.alpha_user());
    let cpu = w.alpha_cpu;
    let joined = w.node(cpu).joined_pool_at_ms.unwrap();
    w.set_clock(joined + 2 * HOUR_MS + 5);
    let applied = w.ok(
        user,
        Command::PoolScale {
            pool,
            flavor: CPU.into(),
            zone: ZONE.into(),
            node_count: 0,
        },
    );
    assert_eq!(billed_in(&applied), owed(CPU_PRICE, 2 * HOUR_MS + 5));
    w.advance(10 * HOUR_MS);
    w.tick();
    assert_eq!(
        node_lines_total(&w, alpha, cpu),
        owed(CPU_PRICE, 2 * HOUR_MS + 5)
    );
    assert_eq!(w.node(cpu).meter, None);
}

#[test]
fn public_pool_replicas_are_billed_price_times_share_times_duration() {
    let mut w = World::new();
    let (beta, public) = (w.beta, w.public);
    let (gpus, cpu) = (w.public_gpus.clone(), w.public_cpu);
    // 2 of 8 accelerators is the dominant share: a quarter of the node's price.
    let job = w.submit(beta, training(public, 2, 2));
    w.place_on(job, &gpus);
    let placed_at = w.job(job).replicas[0].assigned_at_ms.unwrap();
    let meters: Vec<_> = replica_meters(&w);
    assert_eq!(meters.len(), 2);
    for (rank, meter) in meters.iter().enumerate() {
        assert_eq!(meter.tenant, beta);
        assert_eq!(meter.pool, public);
        assert_eq!(meter.rate_micros_per_hour, GPU_PRICE / 4);
        assert_eq!(
            meter.subject,
            BillSubject::JobReplica {
                job,
                rank: rank as u32,
                node: gpus[rank]
            }
        );
        assert_eq!(w.job(job).replicas[rank].meter, Some(meter.id));
    }
    // A CPU-only service on the CPU node: memory is its dominant share (all of it).
    let service = w.submit(beta, inference(public, 1, 0));
    w.place_on(service, &[cpu]);
    let service_at = w.job(service).replicas[0].assigned_at_ms.unwrap();
    let service_meter = w.job(service).replicas[0].meter.unwrap();
    let rate = w
        .state
        .meters()
        .find(|meter| meter.id == service_meter)
        .unwrap()
        .rate_micros_per_hour;
    assert_eq!(rate, CPU_PRICE);
    w.start_all(job);
    w.start_all(service);
    w.set_clock(placed_at + 5_555_555);
    w.tick();
    w.set_clock(placed_at + 7_777_777);
    w.exited(job, 0, 0);
    let end = placed_at + 9 * HOUR_MS + 1;
    w.set_clock(end);
    w.exited(job, 1, 0);
    w.advance(HOUR_MS);
    w.tick();
    let lines = lines_of(&w, beta);
    let replica_total = |rank: u32| -> u64 {
        lines
            .iter()
            .filter(|line| {
                line.subject
                    == BillSubject::JobReplica {
                        job,
                        rank,
                        node: gpus[rank as usize],
                    }
            })
            .map(|line| line.amount_micros)
            .sum()
    };
    assert_eq!(replica_total(0), owed(GPU_PRICE / 4, 7_777_777));
    assert_eq!(replica_total(1), owed(GPU_PRICE / 4, end - placed_at));
    let service_total: u64 = lines
        .iter()
        .filter(|line| matches!(line.subject, BillSubject::JobReplica { job: billed, .. } if billed == service))
        .map(|line| line.amount_micros)
        .sum();
    assert_eq!(
        service_total,
        owed(CPU_PRICE, w.state.now_ms() - service_at)
    );
    assert_eq!(
        w.billed(beta),
        replica_total(0) + replica_total(1) + service_total
    );
    // Finished replicas hold no meter; the running service still does.
    assert_eq!(replica_meters(&w).len(), 1);
}

#[test]
fn a_lost_node_stops_the_bill_of_its_public_replicas_at_once() {
    let mut w = World::new();
    let (beta, public) = (w.beta, w.public);
    let node = w.public_gpus[0];
    let job = w.submit(beta, training(public, 1, 8));
    w.place_on(job, &[node]);
    let placed_at = w.job(job).replicas[0].assigned_at_ms.unwrap();
    w.set_clock(placed_at + HOUR_MS);
    w.system(Command::NodeLost { node });
    w.advance(HOUR_MS);
    w.tick();
    assert_eq!(w.billed(beta), GPU_PRICE);
    assert!(replica_meters(&w).is_empty());
}

#[test]
fn entries_stamped_earlier_than_the_state_do_not_move_time_backwards() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    w.advance(HOUR_MS);
    w.tick();
    let now = w.state.now_ms();
    let billed = w.billed(alpha);
    // A new leader with a slower clock.
    w.set_clock(now - 30 * 60 * 1000);
    let applied = w.tick();
    assert!(applied.events.is_empty());
    assert_eq!(w.state.now_ms(), now);
    assert_eq!(w.billed(alpha), billed);
    let job = w.submit(alpha, training(pool, 1, 1));
    assert_eq!(w.job(job).submitted_at_ms, now);
}

// Prepaid pools.

fn prepaid_pool(w: &mut World, months: u32, auto_renew: bool) -> (PoolId, u64) {
    let (beta, net) = (w.beta, w.beta_net);
    let at = w.clock();
    let pool = w.create_dedicated_pool(
        beta,
        "beta-prepaid",
        net,
        &[(GPU, 2)],
        prepaid(months, auto_renew),
    );
    (pool, at)
}

#[test]
fn a_prepaid_pool_is_charged_for_its_period_at_creation() {
    let mut w = World::new();
    let beta = w.beta;
    let (pool, at) = prepaid_pool(&mut w, 3, false);
    let amount = 2 * GPU_PRICE * 3 * 720;
    let charged: Vec<_> = w
        .state
        .events()
        .filter(|record| matches!(record.event, Event::PrepaidCharged { .. }))
        .map(|record| (record.event.clone(), record.tenant))
        .collect();
    assert_eq!(
        charged,
        vec![(
            Event::PrepaidCharged {
                pool,
                amount_micros: amount,
                paid_until_ms: at + 3 * MONTH_MS
            },
            Some(beta)
        )]
    );
    let lines = lines_of(&w, beta);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].subject, BillSubject::PrepaidPeriod);
    assert_eq!((lines[0].from_ms, lines[0].to_ms), (at, at + 3 * MONTH_MS));
    assert_eq!(lines[0].amount_micros, amount);
    assert_eq!(lines[0].meter, None);
    // Prepaid nodes run no meter; ticks add nothing within the period.
    assert!(w.state.pool_nodes(pool).all(|node| node.meter.is_none()));
    w.advance(MONTH_MS);
    w.tick();
    assert_eq!(w.billed(beta), amount);
}

#[test]
fn a_prepaid_pool_without_auto_renew_freezes_at_expiry_and_stops_its_work() {
    let mut w = World::new();
    let (beta, user) = (w.beta, w.beta_user());
    let (pool, at) = prepaid_pool(&mut w, 1, false);
    let nodes = w.pool_node_ids(pool);
    let running = w.submit(beta, training(pool, 1, 4));
    w.place_on(running, &nodes[..1]);
    w.start_all(running);
    let pending = w.submit(beta, training(pool, 4, 8));
    let notebook = w.submit(beta, notebook(pool, None));
    w.place_on(notebook, &nodes[1..]);
    w.start_all(notebook);
    let service = w.submit(beta, inference(pool, 1, 1));
    w.set_clock(at + MONTH_MS - 1);
    w.tick();
    assert_eq!(w.pool(pool).status, PoolStatus::Running);
    w.set_clock(at + MONTH_MS);
    let applied = w.tick();
    assert!(has_event(
        &applied,
        &Event::PoolStatusChanged {
            pool,
            from: PoolStatus::Running,
            to: PoolStatus::Frozen
        }
    ));
    let frozen = w.pool(pool);
    assert_eq!(frozen.status, PoolStatus::Frozen);
    assert_eq!(frozen.frozen_at_ms, Some(at + MONTH_MS));
    assert_eq!(w.job_state(running), JobState::Terminating);
    assert_eq!(w.job(running).shutdown_target, Some(JobState::Failed));
    assert_eq!(w.job_state(pending), JobState::Failed);
    assert_eq!(w.job_state(notebook), JobState::Stopping);
    assert_eq!(w.job_state(service), JobState::Stopped);
    w.exit_all(running, 143);
    w.exit_all(notebook, 0);
    assert_eq!(w.job_state(running), JobState::Failed);
    assert_eq!(w.job_state(notebook), JobState::Stopped);
    let rejection = w.reject(user, Command::JobSubmit(training(pool, 1, 1)));
    expect_state(&rejection, "pool", "Frozen", "submit work to");
    // Nothing more is charged while frozen.
    w.advance(DAY_MS);
    w.tick();
    assert_eq!(w.billed(beta), 2 * GPU_PRICE * 720);
}

#[test]
fn a_renewed_frozen_pool_runs_again_and_is_not_deleted() {
    let mut w = World::new();
    let (beta, user) = (w.beta, w.beta_user());
    let (pool, at) = prepaid_pool(&mut w, 1, false);
    w.set_clock(at + MONTH_MS);
    w.tick();
    w.set_clock(at + MONTH_MS + 10 * DAY_MS);
    w.ok(user, Command::PoolRenew { pool, periods: 1 });
    assert_eq!(w.pool(pool).status, PoolStatus::Running);
    assert_eq!(w.billed(beta), 2 * 2 * GPU_PRICE * 720);
    w.set_clock(at + MONTH_MS + FROZEN_RETENTION_MS + 1);
    w.tick();
    assert!(w.state.pool(pool).is_some());
    assert_eq!(w.pool(pool).status, PoolStatus::Running);
}

#[test]
fn a_pool_frozen_for_the_retention_period_is_deleted() {
    let mut w = World::new();
    let beta = w.beta;
    let (pool, at) = prepaid_pool(&mut w, 1, false);
    let nodes = w.pool_node_ids(pool);
    let service = w.submit(beta, inference(pool, 1, 1));
    let frozen_at = at + MONTH_MS;
    w.set_clock(frozen_at);
    w.tick();
    assert_eq!(w.job_state(service), JobState::Stopped);
    w.set_clock(frozen_at + FROZEN_RETENTION_MS - 1);
    w.tick();
    assert_eq!(w.pool(pool).status, PoolStatus::Frozen);
    w.set_clock(frozen_at + FROZEN_RETENTION_MS);
    let applied = w.tick();
    assert!(has_event(&applied, &Event::PoolDeleted { pool }));
    assert!(transitions(&applied).contains(&(service, JobState::Stopped, JobState::Terminated)));
    assert!(w.state.pool(pool).is_none());
    assert!(nodes.iter().all(|node| w.node(*node).pool.is_none()));
    assert!(w.state.network(w.beta_net).unwrap().addresses.is_empty());
}

#[test]
fn an_auto_renewing_pool_is_charged_again_at_expiry_and_catches_up() {
    let mut w = World::new();
    let beta = w.beta;
    let (pool, at) = prepaid_pool(&mut w, 1, true);
    let period = 2 * GPU_PRICE * 720;
    w.set_clock(at + MONTH_MS);
    let applied = w.tick();
    assert!(has_event(
        &applied,
        &Event::PrepaidCharged {
            pool,
            amount_micros: period,
            paid_until_ms: at + 2 * MONTH_MS
        }
    ));
    assert_eq!(w.pool(pool).status, PoolStatus::Running);
    // A tick long after expiry renews period after period, from where it was paid.
    w.set_clock(at + 5 * MONTH_MS + 1);
    w.tick();
    assert_eq!(w.pool(pool).paid_until_ms, Some(at + 6 * MONTH_MS));
    assert_eq!(w.billed(beta), 6 * period);
    let lines = lines_of(&w, beta);
    for pair in lines.windows(2) {
        assert_eq!(pair[0].to_ms, pair[1].from_ms, "periods are contiguous");
    }
}

#[test]
fn scaling_out_a_prepaid_pool_charges_the_new_nodes_for_the_rest_of_the_period() {
    let mut w = World::new();
    let (beta, user) = (w.beta, w.beta_user());
    let (pool, at) = prepaid_pool(&mut w, 1, false);
    let billed = w.billed(beta);
    let scaled_at = at + 10 * DAY_MS + 12_345;
    w.set_clock(scaled_at);
    let applied = w.ok(
        user.clone(),
        Command::PoolScale {
            pool,
            flavor: GPU.into(),
            zone: ZONE.into(),
            node_count: 3,
        },
    );
    let remaining = at + MONTH_MS - scaled_at;
    assert!(has_event(
        &applied,
        &Event::PrepaidCharged {
            pool,
            amount_micros: owed(GPU_PRICE, remaining),
            paid_until_ms: at + MONTH_MS
        }
    ));
    assert_eq!(w.billed(beta) - billed, owed(GPU_PRICE, remaining));
    // The next period is charged for all three nodes.
    w.ok(user, Command::PoolRenew { pool, periods: 1 });
    assert_eq!(
        w.billed(beta) - billed - owed(GPU_PRICE, remaining),
        3 * GPU_PRICE * 720
    );
}

#[test]
fn billing_follows_the_tenant_quota_usage_back_to_zero() {
    let mut w = World::new();
    let (beta, public) = (w.beta, w.public);
    let node = w.public_gpus[0];
    let job = w.submit(beta, training(public, 1, 8));
    w.place_on(job, &[node]);
    assert_eq!(w.state.tenant(beta).unwrap().used.accelerators, 8);
    w.start_all(job);
    w.exit_all(job, 0);
    assert_eq!(w.state.tenant(beta).unwrap().used, Resources::ZERO);
    assert!(replica_meters(&w).is_empty());
}

#[test]
fn the_highest_price_bills_for_years_without_overflow() {
    let mut fx = Fx::new();
    let mut expensive = gpu_flavor();
    expensive.price_micros_per_hour = MAX_PRICE_MICROS_PER_HOUR;
    fx.admin(Command::FlavorDefine(expensive));
    let acme = fx.create_tenant("acme", quota(64), false);
    let net = fx.create_network(acme, "net", "172.16.0.0/16");
    for index in 0..200 {
        fx.bulk(
            Principal::PlatformAdmin,
            Command::NodeRegister(node_request(&format!("g{index}"), GPU, ZONE)),
        );
    }
    fx.create_dedicated_pool(acme, "prepaid", net, &[(GPU, 100)], prepaid(36, true));
    let metered =
        fx.create_dedicated_pool(acme, "metered", net, &[(GPU, 100)], BillingMode::PayPerUse);
    let joined = fx
        .state
        .pool_nodes(metered)
        .next()
        .unwrap()
        .joined_pool_at_ms
        .unwrap();
    let period = 100 * MAX_PRICE_MICROS_PER_HOUR * 36 * 720;
    for _ in 0..3 {
        fx.advance(36 * MONTH_MS);
        fx.tick();
    }
    // The creation charge and three renewals, plus the metered nodes' exact integral.
    let metered_total = 100 * owed(MAX_PRICE_MICROS_PER_HOUR, fx.state.now_ms() - joined);
    assert_eq!(fx.billed(acme), 4 * period + metered_total);
}
