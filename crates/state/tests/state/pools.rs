//! Pools: create, scale, delete, switch job types, request a driver upgrade, renew; every
//! happy path and every rejection, plus scale-in victim order and forced deletion.

use corral_model::command::{PoolCreate, PoolKindRequest};
use corral_model::ids::{NetworkId, PoolId, TenantId};
use corral_model::limits::{
    MAX_DEDICATED_POOLS_PER_TENANT, MAX_FLAVORS_PER_POOL, MAX_TAGS_PER_POOL, MONTH_MS,
};
use corral_model::network::format_ipv4;
use corral_model::pool::UpgradeMode;
use corral_model::{
    BillSubject, BillingMode, Command, DriverSpec, Event, JobState, JobType, PoolFlavor, PoolKind,
    PoolStatus, Principal, Rejection,
};
use corral_state::testing::*;
use std::collections::BTreeSet;

const HOUR: u64 = corral_model::limits::HOUR_MS;

fn beta_request(
    name: &str,
    flavors: &[(&str, u32)],
    billing: BillingMode,
    net: NetworkId,
    beta: TenantId,
) -> PoolCreate {
    pool_create(
        name,
        PoolKindRequest::Dedicated { owner: beta },
        Some(net),
        flavors,
        billing,
    )
}

/// A one-month prepaid pool of beta without auto-renew, frozen by a tick after expiry.
fn frozen_beta_pool(w: &mut World) -> PoolId {
    let (beta, net) = (w.beta, w.beta_net);
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(1, false));
    w.advance(MONTH_MS);
    w.tick();
    assert_eq!(w.pool(pool).status, PoolStatus::Frozen);
    pool
}

fn types(list: &[JobType]) -> BTreeSet<JobType> {
    list.iter().copied().collect()
}

fn scale(pool: PoolId, flavor: &str, node_count: u32) -> Command {
    Command::PoolScale {
        pool,
        flavor: flavor.into(),
        zone: ZONE.into(),
        node_count,
    }
}

// PoolCreate

#[test]
fn pool_create_dedicated_claims_free_nodes_with_addresses_and_meters() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let free_before = w.free_node_ids(GPU);
    let at = w.clock();
    let mut request = beta_request("beta-pool", &[(GPU, 2)], BillingMode::PayPerUse, net, beta);
    request.description = "training\nteam".into();
    request.tags = [("team".to_string(), "ml".to_string())].into();
    let applied = w.ok(user, Command::PoolCreate(request));
    let Some(corral_state::Created::Pool(pool_id)) = applied.created else {
        panic!("no pool created");
    };
    let claimed = free_before[..2].to_vec();
    assert_eq!(
        events(&applied),
        vec![
            Event::PoolCreated { pool: pool_id },
            Event::NodeJoinedPool {
                node: claimed[0],
                pool: pool_id
            },
            Event::NodeJoinedPool {
                node: claimed[1],
                pool: pool_id
            },
        ]
    );
    assert!(applied
        .events
        .iter()
        .all(|record| record.tenant == Some(beta)));
    let pool = w.pool(pool_id);
    assert_eq!(pool.kind, PoolKind::Dedicated { owner: beta });
    assert_eq!(pool.status, PoolStatus::Running);
    assert_eq!(pool.network, Some(net));
    assert_eq!(pool.created_at_ms, at);
    assert_eq!(pool.wanted_nodes(), 2);
    assert_eq!(pool.tags.get("team").map(String::as_str), Some("ml"));
    assert_eq!(pool.pending_upgrade, None);
    assert_eq!(w.pool_node_ids(pool_id), claimed);
    let addresses: Vec<String> = claimed
        .iter()
        .map(|node| format_ipv4(w.node(*node).ip_address.unwrap()))
        .collect();
    assert_eq!(addresses, vec!["172.16.0.2", "172.16.0.3"]);
    for node in &claimed {
        let node = w.node(*node);
        assert_eq!(node.pool, Some(pool_id));
        assert_eq!(node.joined_pool_at_ms, Some(at));
        let meter = node.meter.expect("pay-per-use node meter");
        let meter = w.state.meters().find(|m| m.id == meter).unwrap();
        assert_eq!(meter.subject, BillSubject::Node { node: node.id });
        assert_eq!(meter.rate_micros_per_hour, GPU_PRICE);
        assert_eq!(meter.tenant, beta);
    }
    assert_eq!(w.state.network(net).unwrap().addresses.len(), 2);
}

#[test]
fn pool_create_public_by_the_admin() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let nodes = fx.register_nodes("gpu", GPU, ZONE, 3);
    let pool = fx.create_public_pool(&[(GPU, 2)]);
    assert_eq!(fx.state.public_pool(), Some(pool));
    assert_eq!(fx.pool(pool).kind, PoolKind::Public);
    assert_eq!(fx.pool_node_ids(pool), nodes[..2].to_vec());
    // The public pool bills per replica, not per node; it has no network.
    assert_eq!(fx.state.meters().count(), 0);
    assert!(fx
        .state
        .pool_nodes(pool)
        .all(|node| node.ip_address.is_none()));
    let events: Vec<_> = fx.state.events().collect();
    assert!(events
        .iter()
        .any(|record| record.event == Event::PoolCreated { pool } && record.tenant.is_none()));
}

#[test]
fn pool_create_with_a_custom_driver_requests_a_secure_upgrade() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let mut request = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    request.driver.gpu_driver_version = Some("550.2".into());
    let applied = w.ok(user.clone(), Command::PoolCreate(request));
    let Some(corral_state::Created::Pool(pool)) = applied.created else {
        panic!()
    };
    assert!(has_event(
        &applied,
        &Event::PoolDriverUpgradeRequested { pool }
    ));
    let upgrade = w
        .pool(pool)
        .pending_upgrade
        .clone()
        .expect("upgrade requested");
    assert_eq!(upgrade.mode, UpgradeMode::Secure);
    assert_eq!(upgrade.target.gpu_driver_version.as_deref(), Some("550.2"));
    // The same version as the nodes already run needs no upgrade.
    let mut request = beta_request(
        "beta-pool-2",
        &[(GPU, 1)],
        BillingMode::PayPerUse,
        net,
        beta,
    );
    request.driver.gpu_driver_version = Some("535.1".into());
    let applied = w.ok(user, Command::PoolCreate(request));
    let Some(corral_state::Created::Pool(second)) = applied.created else {
        panic!()
    };
    assert_eq!(w.pool(second).pending_upgrade, None);
}

#[test]
fn pool_create_public_is_refused_to_tenants_and_a_second_time() {
    let mut w = World::new();
    let user = w.alpha_user();
    let request = pool_create(
        "public-2",
        PoolKindRequest::Public,
        None,
        &[(GPU, 1)],
        BillingMode::PayPerUse,
    );
    expect_denied(&w.reject(user, Command::PoolCreate(request.clone())));
    expect_exists(
        &w.reject(Principal::PlatformAdmin, Command::PoolCreate(request)),
        "public pool",
    );
}

#[test]
fn pool_create_public_refuses_a_network_a_driver_or_prepaid_billing() {
    let mut fx = Fx::new();
    fx.define_catalog();
    fx.register_nodes("gpu", GPU, ZONE, 1);
    let base = pool_create(
        "public",
        PoolKindRequest::Public,
        None,
        &[(GPU, 1)],
        BillingMode::PayPerUse,
    );
    let mut request = base.clone();
    request.network = Some(NetworkId(1));
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, Command::PoolCreate(request)),
        "network",
    );
    let mut request = base.clone();
    request.driver.gpu_driver_version = Some("550".into());
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, Command::PoolCreate(request)),
        "driver",
    );
    let mut request = base;
    request.billing = prepaid(1, false);
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, Command::PoolCreate(request)),
        "billing",
    );
}

#[test]
fn pool_create_for_another_tenant_or_an_unknown_one_is_not_found() {
    let mut w = World::new();
    let (beta, net, alpha_user) = (w.beta, w.beta_net, w.alpha_user());
    let request = beta_request("stolen", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    expect_not_found(
        &w.reject(alpha_user, Command::PoolCreate(request.clone())),
        "tenant",
    );
    // A node's credential creates nothing at all.
    let node = w.alpha_gpus[0];
    expect_denied(&w.reject(Principal::Node(node), Command::PoolCreate(request)));
    let request = beta_request(
        "ghost",
        &[(GPU, 1)],
        BillingMode::PayPerUse,
        net,
        TenantId(9),
    );
    expect_not_found_id(
        &w.reject(Principal::PlatformAdmin, Command::PoolCreate(request)),
        "tenant",
        "tenant-9",
    );
}

#[test]
fn pool_create_dedicated_needs_a_network_of_its_owner() {
    let mut w = World::new();
    let (beta, alpha_net, user) = (w.beta, w.alpha_net, w.beta_user());
    let mut request = beta_request(
        "beta-pool",
        &[(GPU, 1)],
        BillingMode::PayPerUse,
        alpha_net,
        beta,
    );
    request.network = None;
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request.clone())),
        "network",
    );
    request.network = Some(alpha_net);
    expect_not_found(
        &w.reject(user.clone(), Command::PoolCreate(request.clone())),
        "network",
    );
    request.network = Some(NetworkId(99));
    expect_not_found(&w.reject(user, Command::PoolCreate(request)), "network");
}

#[test]
fn pool_create_refuses_beyond_the_dedicated_pool_limit() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let acme = fx.create_tenant("acme", quota(1), false);
    let net = fx.create_network(acme, "net", "172.16.0.0/16");
    for index in 0..=MAX_DEDICATED_POOLS_PER_TENANT {
        fx.bulk(
            Principal::PlatformAdmin,
            Command::NodeRegister(node_request(&format!("cpu-{index}"), CPU, ZONE)),
        );
    }
    for index in 0..MAX_DEDICATED_POOLS_PER_TENANT {
        fx.create_dedicated_pool(
            acme,
            &format!("p{index}"),
            net,
            &[(CPU, 1)],
            BillingMode::PayPerUse,
        );
    }
    let request = pool_create(
        "one-more",
        PoolKindRequest::Dedicated { owner: acme },
        Some(net),
        &[(CPU, 1)],
        BillingMode::PayPerUse,
    );
    let rejection = fx.reject(Principal::TenantUser(acme), Command::PoolCreate(request));
    expect_limit(
        &rejection,
        "dedicated pools per tenant",
        MAX_DEDICATED_POOLS_PER_TENANT as u64,
    );
}

#[test]
fn pool_create_refuses_a_bad_name_or_description_or_a_taken_name() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let base = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    let mut request = base.clone();
    request.name = "Beta".into();
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "name",
    );
    let mut request = base.clone();
    request.description = "bell\u{7}".into();
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "description",
    );
    let mut request = base.clone();
    request.description = "x".repeat(513);
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "description",
    );
    // Pool names are unique across the platform.
    let mut request = base;
    request.name = "alpha-pool".into();
    expect_exists(&w.reject(user, Command::PoolCreate(request)), "pool");
}

#[test]
fn pool_create_refuses_bad_flavor_lists() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let base = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    let entry = |flavor: &str, zone: &str, node_count: u32| PoolFlavor {
        flavor: flavor.into(),
        zone: zone.into(),
        node_count,
    };
    let mut request = base.clone();
    request.flavors.clear();
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "flavors",
    );
    let mut request = base.clone();
    request.flavors = (0..=MAX_FLAVORS_PER_POOL)
        .map(|index| entry(GPU, &format!("zone-{index}"), 1))
        .collect();
    expect_limit(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "flavors per pool",
        MAX_FLAVORS_PER_POOL as u64,
    );
    let mut request = base.clone();
    request.flavors = vec![entry("tpu-v5", ZONE, 1)];
    expect_not_found(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "flavor",
    );
    let mut request = base.clone();
    request.flavors = vec![entry(GPU, "Zone A", 1)];
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "zone",
    );
    for count in [0, 10_001] {
        let mut request = base.clone();
        request.flavors = vec![entry(GPU, ZONE, count)];
        expect_invalid(
            &w.reject(user.clone(), Command::PoolCreate(request)),
            "flavors.node_count",
        );
    }
    let mut request = base.clone();
    request.flavors = vec![entry(GPU, ZONE, 1), entry(GPU, ZONE, 1)];
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "flavors",
    );
    let mut request = base;
    request.flavors = vec![entry(GPU, ZONE, 1), entry(NPU, ZONE, 1)];
    expect_invalid(&w.reject(user, Command::PoolCreate(request)), "flavors");
}

#[test]
fn pool_create_refuses_no_job_types() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let mut request = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    request.job_types.clear();
    expect_invalid(&w.reject(user, Command::PoolCreate(request)), "job_types");
}

#[test]
fn pool_create_refuses_bad_tags() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let base = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    let mut request = base.clone();
    request.tags = (0..=MAX_TAGS_PER_POOL)
        .map(|index| (format!("k{index}"), "v".to_string()))
        .collect();
    expect_limit(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "tags per pool",
        MAX_TAGS_PER_POOL as u64,
    );
    let mut request = base.clone();
    request.tags = [(String::new(), "v".to_string())].into();
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "tags",
    );
    let mut request = base.clone();
    request.tags = [("k".repeat(129), "v".to_string())].into();
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "tags.key",
    );
    let mut request = base;
    request.tags = [("k".to_string(), "v\u{1}".to_string())].into();
    expect_invalid(&w.reject(user, Command::PoolCreate(request)), "tags.value");
}

#[test]
fn pool_create_refuses_bad_driver_versions_and_prepaid_periods() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let base = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    let mut request = base.clone();
    request.driver.gpu_driver_version = Some("5 50".into());
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "driver.gpu_driver_version",
    );
    let mut request = base.clone();
    request.driver.npu_driver_version = Some(String::new());
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request)),
        "driver.npu_driver_version",
    );
    for months in [0, 37] {
        let mut request = base.clone();
        request.billing = prepaid(months, false);
        expect_invalid(
            &w.reject(user.clone(), Command::PoolCreate(request)),
            "billing.period_months",
        );
    }
}

#[test]
fn pool_create_refuses_when_not_enough_nodes_are_free() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let request = beta_request("beta-pool", &[(GPU, 7)], BillingMode::PayPerUse, net, beta);
    let rejection = w.reject(user.clone(), Command::PoolCreate(request));
    assert_eq!(
        rejection,
        Rejection::InsufficientNodes {
            flavor: GPU.into(),
            zone: ZONE.into(),
            wanted: 7,
            free: 6
        }
    );
    let mut request = beta_request("beta-pool", &[(GPU, 1)], BillingMode::PayPerUse, net, beta);
    request.flavors[0].zone = ZONE_B.into();
    assert!(matches!(
        w.reject(user, Command::PoolCreate(request)),
        Rejection::InsufficientNodes { free: 0, .. }
    ));
}

#[test]
fn pool_create_refuses_when_the_network_has_no_room() {
    let mut w = World::new();
    let (alpha, net, user) = (w.alpha, w.alpha_net, w.alpha_user());
    for index in 0..251 {
        w.bulk(
            Principal::PlatformAdmin,
            Command::NodeRegister(node_request(&format!("extra-{index}"), CPU, ZONE)),
        );
    }
    // alpha-net is a /24 (253 host addresses) and already hands out 3.
    let request = pool_create(
        "big",
        PoolKindRequest::Dedicated { owner: alpha },
        Some(net),
        &[(CPU, 251)],
        BillingMode::PayPerUse,
    );
    expect_invalid(
        &w.reject(user.clone(), Command::PoolCreate(request.clone())),
        "network",
    );
    let mut request = request;
    request.flavors[0].node_count = 250;
    w.ok(user, Command::PoolCreate(request));
    assert_eq!(w.state.network(net).unwrap().addresses.len(), 253);
}

// PoolScale

#[test]
fn pool_scale_out_claims_free_nodes() {
    let mut w = World::new();
    let (pool, user, alpha) = (w.alpha_pool, w.alpha_user(), w.alpha);
    let free = w.free_node_ids(GPU);
    let applied = w.ok(user, scale(pool, GPU, 4));
    assert_eq!(
        events(&applied),
        vec![
            Event::NodeJoinedPool {
                node: free[0],
                pool
            },
            Event::NodeJoinedPool {
                node: free[1],
                pool
            },
            Event::PoolScaled {
                pool,
                flavor: GPU.into(),
                zone: ZONE.into(),
                from: 2,
                to: 4
            },
        ]
    );
    assert!(applied
        .events
        .iter()
        .all(|record| record.tenant == Some(alpha)));
    assert_eq!(w.pool(pool).wanted_nodes(), 5);
    assert_eq!(w.state.pool_nodes(pool).count(), 5);
    assert!(w.node(free[0]).meter.is_some() && w.node(free[0]).ip_address.is_some());
}

#[test]
fn pool_scale_in_removes_abnormal_then_idle_nodes_never_locked_ones_never_the_last() {
    let mut w = World::new();
    let (pool, user, alpha, net) = (w.alpha_pool, w.alpha_user(), w.alpha, w.alpha_net);
    w.ok(user.clone(), scale(pool, GPU, 5));
    let gpus: Vec<_> = w
        .state
        .pool_nodes(pool)
        .filter(|node| node.flavor == GPU)
        .map(|node| node.id)
        .collect();
    let (busy, locked, lost, idle_1, idle_2) = (gpus[0], gpus[1], gpus[2], gpus[3], gpus[4]);
    let job = w.submit(alpha, training(pool, 1, 8));
    w.place_on(job, &[busy]);
    w.start_all(job);
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock {
            node: locked,
            locked: true,
        },
    );
    w.system(Command::NodeLost { node: lost });
    w.advance(HOUR);
    let applied = w.ok(user.clone(), scale(pool, GPU, 2));
    let left: Vec<_> = events(&applied)
        .into_iter()
        .filter_map(|event| match event {
            Event::NodeLeftPool { node, .. } => Some(node),
            _ => None,
        })
        .collect();
    assert_eq!(left, vec![lost, idle_1, idle_2]);
    assert_eq!(w.pool_node_ids(pool).len(), 3);
    assert_eq!(w.job_state(job), JobState::Running);
    for node in [idle_1, idle_2] {
        let node = w.node(node);
        assert_eq!(node.pool, None);
        assert_eq!(node.ip_address, None);
        assert_eq!(node.meter, None);
        assert!(node.schedulable);
    }
    assert!(w
        .state
        .network(net)
        .unwrap()
        .addresses
        .values()
        .all(|node| ![lost, idle_1, idle_2].contains(node)));
    // The removed nodes were billed up to the scale-in.
    assert!(billed_in(&applied) >= 2 * owed(GPU_PRICE, HOUR));
    // Only the busy node can go now; its training gang is evicted and requeued.
    let applied = w.ok(user.clone(), scale(pool, GPU, 1));
    assert!(has_event(
        &applied,
        &Event::NodeLeftPool { node: busy, pool }
    ));
    assert_eq!(w.job_state(job), JobState::Pending);
    assert_eq!(w.node(locked).pool, Some(pool));
    // The locked node stays: removing it is refused.
    let rejection = w.reject(user.clone(), scale(pool, GPU, 0));
    expect_invalid(&rejection, "node_count");
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock {
            node: locked,
            locked: false,
        },
    );
    w.ok(user.clone(), scale(pool, CPU, 0));
    // The last node of the pool cannot be removed.
    let rejection = w.reject(user, scale(pool, GPU, 0));
    match rejection {
        Rejection::InvalidArgument { field, reason } => {
            assert_eq!(field, "node_count");
            assert!(reason.contains("last node"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pool_scale_of_an_unknown_or_foreign_pool_is_not_found() {
    let mut w = World::new();
    let (pool, beta_user, alpha_user) = (w.alpha_pool, w.beta_user(), w.alpha_user());
    expect_not_found(&w.reject(beta_user, scale(pool, GPU, 3)), "pool");
    expect_not_found(&w.reject(alpha_user, scale(PoolId(99), GPU, 3)), "pool");
}

#[test]
fn pool_scale_of_the_public_pool_needs_the_admin() {
    let mut w = World::new();
    let (public, user) = (w.public, w.alpha_user());
    expect_denied(&w.reject(user, scale(public, GPU, 3)));
    w.admin(scale(public, GPU, 3));
}

#[test]
fn pool_scale_of_a_frozen_pool_is_refused() {
    let mut w = World::new();
    let pool = frozen_beta_pool(&mut w);
    let user = w.beta_user();
    expect_state(
        &w.reject(user, scale(pool, GPU, 2)),
        "pool",
        "Frozen",
        "scale",
    );
}

#[test]
fn pool_scale_of_a_flavor_the_pool_lacks_is_not_found() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    expect_not_found(&w.reject(user.clone(), scale(pool, NPU, 1)), "pool flavor");
    let command = Command::PoolScale {
        pool,
        flavor: GPU.into(),
        zone: ZONE_B.into(),
        node_count: 1,
    };
    expect_not_found(&w.reject(user, command), "pool flavor");
}

#[test]
fn pool_scale_refuses_too_many_or_no_change() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    expect_invalid(
        &w.reject(user.clone(), scale(pool, GPU, 10_001)),
        "node_count",
    );
    expect_invalid(&w.reject(user, scale(pool, GPU, 2)), "node_count");
}

#[test]
fn pool_scale_out_refuses_when_not_enough_nodes_are_free() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let rejection = w.reject(user, scale(pool, GPU, 9));
    assert_eq!(
        rejection,
        Rejection::InsufficientNodes {
            flavor: GPU.into(),
            zone: ZONE.into(),
            wanted: 7,
            free: 6
        }
    );
}

#[test]
fn pool_scale_out_refuses_when_the_network_has_no_room() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    for index in 0..251 {
        w.bulk(
            Principal::PlatformAdmin,
            Command::NodeRegister(node_request(&format!("extra-{index}"), CPU, ZONE)),
        );
    }
    // 3 addresses in use, 251 more would need 254 of the /24's 253.
    expect_invalid(&w.reject(user.clone(), scale(pool, CPU, 252)), "network");
    w.ok(user, scale(pool, CPU, 251));
}

// PoolDelete

#[test]
fn pool_delete_gives_the_nodes_back_and_bills_them() {
    let mut w = World::new();
    let (pool, user, alpha, net) = (w.alpha_pool, w.alpha_user(), w.alpha, w.alpha_net);
    let members = w.pool_node_ids(pool);
    let billed_before = w.billed(alpha);
    w.advance(HOUR);
    let applied = w.ok(user, Command::PoolDelete { pool, force: false });
    let events = events(&applied);
    assert_eq!(
        events.first(),
        Some(&Event::PoolStatusChanged {
            pool,
            from: PoolStatus::Running,
            to: PoolStatus::Deleting
        })
    );
    assert_eq!(events.last(), Some(&Event::PoolDeleted { pool }));
    for node in &members {
        assert!(events.contains(&Event::NodeLeftPool { node: *node, pool }));
        assert_eq!(w.node(*node).pool, None);
    }
    assert!(w.state.pool(pool).is_none());
    assert_eq!(w.state.meters().count(), 0);
    assert!(w.state.network(net).unwrap().addresses.is_empty());
    let hour_of_three_nodes = 2 * owed(GPU_PRICE, HOUR) + owed(CPU_PRICE, HOUR);
    assert!(w.billed(alpha) - billed_before >= hour_of_three_nodes);
}

#[test]
fn pool_delete_with_force_ends_every_active_job() {
    let mut w = World::new();
    let (pool, user, alpha) = (w.alpha_pool, w.alpha_user(), w.alpha);
    let gpus = w.alpha_gpus.clone();
    let running = w.submit(alpha, training(pool, 1, 8));
    w.place_on(running, &gpus[..1]);
    w.start_all(running);
    let notebook = w.submit(alpha, notebook(pool, None));
    w.place_on(notebook, &gpus[1..2]);
    let pending = w.submit(alpha, training(pool, 2, 8));
    let service = w.submit(alpha, inference(pool, 1, 0));
    w.ok(user.clone(), Command::JobStop { job: service });
    let rejection = w.reject(user.clone(), Command::PoolDelete { pool, force: false });
    expect_in_use(&rejection, "pool", "4 active jobs");
    let applied = w.ok(user, Command::PoolDelete { pool, force: true });
    let ended = transitions(&applied);
    assert!(ended.contains(&(running, JobState::Running, JobState::Terminated)));
    assert!(ended.contains(&(notebook, JobState::Running, JobState::Terminated)));
    assert!(ended.contains(&(pending, JobState::Pending, JobState::Terminated)));
    assert!(ended.contains(&(service, JobState::Stopped, JobState::Terminated)));
    assert_eq!(
        w.state.tenant(alpha).unwrap().used,
        corral_model::Resources::ZERO
    );
    assert_eq!(w.state.active_job_count(), 0);
    assert!(w.state.pool(pool).is_none());
}

#[test]
fn pool_delete_of_the_public_pool_by_the_admin() {
    let mut w = World::new();
    let public = w.public;
    let user = w.alpha_user();
    expect_denied(&w.reject(
        user,
        Command::PoolDelete {
            pool: public,
            force: true,
        },
    ));
    w.admin(Command::PoolDelete {
        pool: public,
        force: false,
    });
    assert_eq!(w.state.public_pool(), None);
    // A new public pool can be created afterwards.
    w.create_public_pool(&[(GPU, 1)]);
}

#[test]
fn pool_delete_of_an_unknown_or_foreign_pool_is_not_found() {
    let mut w = World::new();
    let (pool, beta_user) = (w.alpha_pool, w.beta_user());
    expect_not_found(
        &w.reject(beta_user, Command::PoolDelete { pool, force: true }),
        "pool",
    );
    expect_not_found(
        &w.reject(
            Principal::PlatformAdmin,
            Command::PoolDelete {
                pool: PoolId(50),
                force: true,
            },
        ),
        "pool",
    );
}

#[test]
fn pool_delete_is_refused_while_a_node_is_deletion_locked() {
    let mut w = World::new();
    let (pool, user, node) = (w.alpha_pool, w.alpha_user(), w.alpha_cpu);
    w.ok(
        user.clone(),
        Command::NodeSetDeletionLock { node, locked: true },
    );
    let rejection = w.reject(user, Command::PoolDelete { pool, force: true });
    expect_in_use(&rejection, "pool", "deletion-locked");
}

// PoolSetJobTypes

#[test]
fn disabling_a_job_type_ends_its_jobs() {
    let mut w = World::new();
    let (pool, user, alpha) = (w.alpha_pool, w.alpha_user(), w.alpha);
    let gpus = w.alpha_gpus.clone();
    let running = w.submit(alpha, training(pool, 1, 4));
    w.place_on(running, &gpus[..1]);
    w.start_all(running);
    let pending = w.submit(alpha, training(pool, 3, 8));
    let notebook = w.submit(alpha, notebook(pool, None));
    w.place_on(notebook, &gpus[1..2]);
    w.start_all(notebook);
    let service = w.submit(alpha, inference(pool, 1, 1));
    let applied = w.ok(
        user.clone(),
        Command::PoolSetJobTypes {
            pool,
            job_types: types(&[JobType::Notebook]),
        },
    );
    assert!(has_event(&applied, &Event::PoolJobTypesChanged { pool }));
    assert_eq!(w.job_state(pending), JobState::Failed);
    assert_eq!(w.job_state(service), JobState::Failed);
    assert_eq!(w.job_state(running), JobState::Terminating);
    assert_eq!(w.job(running).shutdown_target, Some(JobState::Failed));
    assert_eq!(w.job_state(notebook), JobState::Running);
    w.exit_all(running, 137);
    assert_eq!(w.job_state(running), JobState::Failed);
    // New training work is refused now.
    let rejection = w.reject(user.clone(), Command::JobSubmit(training(pool, 1, 1)));
    expect_invalid(&rejection, "pool");
    // Disabling notebooks stops the notebook (it is not a failure).
    w.ok(
        user,
        Command::PoolSetJobTypes {
            pool,
            job_types: types(&[JobType::Training]),
        },
    );
    assert_eq!(w.job_state(notebook), JobState::Stopping);
    w.exit_all(notebook, 0);
    assert_eq!(w.job_state(notebook), JobState::Stopped);
    assert_eq!(w.pool(pool).job_types, types(&[JobType::Training]));
}

#[test]
fn pool_set_job_types_of_an_unknown_or_foreign_pool_is_not_found() {
    let mut w = World::new();
    let (pool, beta_user) = (w.alpha_pool, w.beta_user());
    let command = |pool| Command::PoolSetJobTypes {
        pool,
        job_types: types(&[JobType::Training]),
    };
    expect_not_found(&w.reject(beta_user, command(pool)), "pool");
    expect_not_found(
        &w.reject(Principal::PlatformAdmin, command(PoolId(99))),
        "pool",
    );
}

#[test]
fn pool_set_job_types_of_the_public_pool_needs_the_admin() {
    let mut w = World::new();
    let (public, user) = (w.public, w.alpha_user());
    let command = Command::PoolSetJobTypes {
        pool: public,
        job_types: types(&[JobType::Training]),
    };
    expect_denied(&w.reject(user, command.clone()));
    w.admin(command);
}

#[test]
fn pool_set_job_types_of_a_frozen_pool_is_refused() {
    let mut w = World::new();
    let pool = frozen_beta_pool(&mut w);
    let user = w.beta_user();
    let rejection = w.reject(
        user,
        Command::PoolSetJobTypes {
            pool,
            job_types: types(&[JobType::Training]),
        },
    );
    expect_state(&rejection, "pool", "Frozen", "change job types");
}

#[test]
fn pool_set_job_types_refuses_none_or_no_change() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    let rejection = w.reject(
        user.clone(),
        Command::PoolSetJobTypes {
            pool,
            job_types: BTreeSet::new(),
        },
    );
    expect_invalid(&rejection, "job_types");
    let rejection = w.reject(
        user,
        Command::PoolSetJobTypes {
            pool,
            job_types: all_job_types(),
        },
    );
    expect_invalid(&rejection, "job_types");
}

// PoolRequestDriverUpgrade

fn upgrade(pool: PoolId, gpu: Option<&str>, batch_size: u32) -> Command {
    Command::PoolRequestDriverUpgrade {
        pool,
        target: DriverSpec {
            gpu_driver_version: gpu.map(str::to_string),
            npu_driver_version: None,
        },
        mode: UpgradeMode::Forcible,
        batch_size,
    }
}

#[test]
fn driver_upgrade_is_recorded_and_completes_when_every_node_reports() {
    let mut w = World::new();
    let (pool, user, alpha) = (w.alpha_pool, w.alpha_user(), w.alpha);
    let at = w.clock();
    let applied = w.ok(user, upgrade(pool, Some("550.2"), 2));
    assert_eq!(
        events(&applied),
        vec![Event::PoolDriverUpgradeRequested { pool }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    let stored = w.pool(pool).clone();
    assert_eq!(stored.driver.gpu_driver_version.as_deref(), Some("550.2"));
    let pending = stored.pending_upgrade.expect("pending");
    assert_eq!(pending.mode, UpgradeMode::Forcible);
    assert_eq!(pending.batch_size, 2);
    assert_eq!(pending.requested_at_ms, at);
    let members = w.pool_node_ids(pool);
    for (index, node) in members.iter().enumerate() {
        w.agent(Command::NodeDriverReport {
            node: *node,
            gpu_driver_version: Some("550.2".into()),
            npu_driver_version: None,
        });
        let done = index + 1 == members.len();
        assert_eq!(w.pool(pool).pending_upgrade.is_none(), done);
    }
}

#[test]
fn driver_upgrade_of_an_unknown_or_foreign_pool_is_not_found() {
    let mut w = World::new();
    let (pool, beta_user) = (w.alpha_pool, w.beta_user());
    expect_not_found(&w.reject(beta_user, upgrade(pool, Some("550"), 1)), "pool");
    expect_not_found(
        &w.reject(Principal::PlatformAdmin, upgrade(PoolId(9), Some("550"), 1)),
        "pool",
    );
}

#[test]
fn driver_upgrade_of_the_public_pool_is_refused() {
    let mut w = World::new();
    let (public, user) = (w.public, w.alpha_user());
    expect_denied(&w.reject(user, upgrade(public, Some("550"), 1)));
    expect_invalid(
        &w.reject(Principal::PlatformAdmin, upgrade(public, Some("550"), 1)),
        "pool",
    );
}

#[test]
fn driver_upgrade_of_a_frozen_pool_is_refused() {
    let mut w = World::new();
    let pool = frozen_beta_pool(&mut w);
    let user = w.beta_user();
    expect_state(
        &w.reject(user, upgrade(pool, Some("550"), 1)),
        "pool",
        "Frozen",
        "upgrade drivers of",
    );
}

#[test]
fn driver_upgrade_is_refused_while_another_is_pending() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    w.ok(user.clone(), upgrade(pool, Some("550"), 1));
    let rejection = w.reject(user, upgrade(pool, Some("560"), 1));
    expect_state(
        &rejection,
        "pool",
        "Upgrading",
        "start another driver upgrade of",
    );
}

#[test]
fn driver_upgrade_refuses_a_bad_target_or_batch() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    expect_invalid(&w.reject(user.clone(), upgrade(pool, None, 1)), "target");
    expect_invalid(
        &w.reject(user.clone(), upgrade(pool, Some("5 50"), 1)),
        "target.gpu_driver_version",
    );
    let command = Command::PoolRequestDriverUpgrade {
        pool,
        target: DriverSpec {
            gpu_driver_version: None,
            npu_driver_version: Some("x".repeat(65)),
        },
        mode: UpgradeMode::Secure,
        batch_size: 1,
    };
    expect_invalid(
        &w.reject(user.clone(), command),
        "target.npu_driver_version",
    );
    expect_invalid(
        &w.reject(user.clone(), upgrade(pool, Some("550"), 0)),
        "batch_size",
    );
    expect_invalid(&w.reject(user, upgrade(pool, Some("550"), 4)), "batch_size");
}

// PoolRenew

#[test]
fn pool_renew_extends_a_running_prepaid_pool_from_its_paid_until() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let created_at = w.clock();
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 2)], prepaid(1, false));
    assert_eq!(w.pool(pool).paid_until_ms, Some(created_at + MONTH_MS));
    w.advance(corral_model::limits::DAY_MS);
    let applied = w.ok(user, Command::PoolRenew { pool, periods: 2 });
    let amount = 2 * GPU_PRICE * 2 * 720;
    assert_eq!(
        events(&applied),
        vec![Event::PrepaidCharged {
            pool,
            amount_micros: amount,
            paid_until_ms: created_at + 3 * MONTH_MS
        }]
    );
    assert_eq!(w.pool(pool).paid_until_ms, Some(created_at + 3 * MONTH_MS));
    assert_eq!(w.pool(pool).status, PoolStatus::Running);
}

#[test]
fn pool_renew_unfreezes_a_frozen_pool_from_now() {
    let mut w = World::new();
    let pool = frozen_beta_pool(&mut w);
    let (user, beta) = (w.beta_user(), w.beta);
    w.advance(corral_model::limits::DAY_MS);
    let at = w.clock();
    let applied = w.ok(user.clone(), Command::PoolRenew { pool, periods: 1 });
    assert!(has_event(
        &applied,
        &Event::PoolStatusChanged {
            pool,
            from: PoolStatus::Frozen,
            to: PoolStatus::Running
        }
    ));
    assert!(applied
        .events
        .iter()
        .all(|record| record.tenant == Some(beta)));
    let stored = w.pool(pool);
    assert_eq!(stored.status, PoolStatus::Running);
    assert_eq!(stored.frozen_at_ms, None);
    assert_eq!(stored.paid_until_ms, Some(at + MONTH_MS));
    // It takes work again.
    w.ok(user, Command::JobSubmit(training(pool, 1, 1)));
}

#[test]
fn pool_renew_of_an_unknown_or_foreign_pool_is_not_found() {
    let mut w = World::new();
    let pool = frozen_beta_pool(&mut w);
    let alpha_user = w.alpha_user();
    expect_not_found(
        &w.reject(alpha_user, Command::PoolRenew { pool, periods: 1 }),
        "pool",
    );
    expect_not_found(
        &w.reject(
            Principal::PlatformAdmin,
            Command::PoolRenew {
                pool: PoolId(70),
                periods: 1,
            },
        ),
        "pool",
    );
}

#[test]
fn pool_renew_of_a_pay_per_use_pool_is_refused() {
    let mut w = World::new();
    let (pool, user) = (w.alpha_pool, w.alpha_user());
    expect_invalid(
        &w.reject(user, Command::PoolRenew { pool, periods: 1 }),
        "pool",
    );
}

#[test]
fn pool_renew_refuses_zero_or_too_many_periods() {
    let mut w = World::new();
    let (beta, net, user) = (w.beta, w.beta_net, w.beta_user());
    let pool = w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(12, true));
    expect_invalid(
        &w.reject(user.clone(), Command::PoolRenew { pool, periods: 0 }),
        "periods",
    );
    expect_invalid(
        &w.reject(user.clone(), Command::PoolRenew { pool, periods: 4 }),
        "periods",
    );
    w.ok(user, Command::PoolRenew { pool, periods: 3 });
}
