//! Tenant networks: create and delete, every rejection.

use corral_model::ids::{NetworkId, TenantId};
use corral_model::limits::MAX_NETWORKS_PER_TENANT;
use corral_model::{Cidr, Command, Event, Principal};
use corral_state::testing::*;
use corral_state::Created;

fn network_create(tenant: TenantId, name: &str, cidr: &str) -> Command {
    Command::NetworkCreate {
        tenant,
        name: name.into(),
        cidr: cidr.into(),
    }
}

#[test]
fn network_create_by_the_tenant_or_the_admin() {
    let mut w = World::new();
    let (beta, beta_user) = (w.beta, w.beta_user());
    let at = w.clock();
    let applied = w.ok(beta_user, network_create(beta, "second", "192.168.10.0/24"));
    let Some(Created::Network(id)) = applied.created else {
        panic!("no network created");
    };
    assert_eq!(
        events(&applied),
        vec![Event::NetworkCreated { network: id }]
    );
    assert_eq!(applied.events[0].tenant, Some(beta));
    let network = w.state.network(id).expect("stored");
    assert_eq!(network.tenant, beta);
    assert_eq!(network.name, "second");
    assert_eq!(network.cidr, Cidr::parse("192.168.10.0/24").unwrap());
    assert!(network.addresses.is_empty());
    assert_eq!(network.created_at_ms, at);
    w.admin(network_create(beta, "third", "192.168.11.0/24"));
    assert_eq!(
        w.state
            .networks()
            .filter(|network| network.tenant == beta)
            .count(),
        3
    );
}

#[test]
fn tenants_may_use_overlapping_ranges_with_each_other() {
    let mut w = World::new();
    let beta = w.beta;
    // alpha-net is 192.168.0.0/24; beta's own networks are what must not overlap.
    w.create_network(beta, "same-as-alpha", "192.168.0.0/24");
}

#[test]
fn network_create_for_another_tenant_is_not_found() {
    let mut w = World::new();
    let (beta, alpha_user) = (w.beta, w.alpha_user());
    let rejection = w.reject(alpha_user, network_create(beta, "x", "192.168.5.0/24"));
    expect_not_found(&rejection, "tenant");
    // A node's credential creates nothing at all.
    let node = w.alpha_gpus[0];
    let rejection = w.reject(
        Principal::Node(node),
        network_create(beta, "x", "192.168.5.0/24"),
    );
    expect_denied(&rejection);
}

#[test]
fn network_create_for_an_unknown_tenant_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::PlatformAdmin,
        network_create(TenantId(42), "x", "192.168.5.0/24"),
    );
    expect_not_found_id(&rejection, "tenant", "tenant-42");
}

#[test]
fn network_create_refuses_a_bad_name() {
    let mut w = World::new();
    let (beta, user) = (w.beta, w.beta_user());
    let rejection = w.reject(user, network_create(beta, "Net_1", "192.168.5.0/24"));
    expect_invalid(&rejection, "name");
}

#[test]
fn network_create_refuses_a_malformed_cidr() {
    let mut w = World::new();
    let (beta, user) = (w.beta, w.beta_user());
    for cidr in [
        "192.168.5.0",
        "192.168.5/24",
        "192.168.5.1/24",
        "192.168.5.0/33",
        "192.168.5.0/x",
        "300.168.5.0/24",
    ] {
        let rejection = w.reject(user.clone(), network_create(beta, "n", cidr));
        expect_invalid(&rejection, "cidr");
    }
}

#[test]
fn network_create_refuses_ranges_outside_the_allowed_private_ranges() {
    let mut w = World::new();
    let (beta, user) = (w.beta, w.beta_user());
    for cidr in [
        "10.0.0.0/16",
        "192.168.5.0/25",
        "172.16.0.0/11",
        "192.0.0.0/8",
    ] {
        let rejection = w.reject(user.clone(), network_create(beta, "n", cidr));
        expect_invalid(&rejection, "cidr");
    }
}

#[test]
fn network_create_refuses_the_platform_range() {
    let mut w = World::new();
    let (alpha, user) = (w.alpha, w.alpha_user());
    for cidr in ["172.31.4.0/24", "172.16.0.0/12"] {
        let rejection = w.reject(user.clone(), network_create(alpha, "n", cidr));
        expect_overlap(&rejection, "platform range");
    }
}

#[test]
fn network_create_refuses_a_taken_name() {
    let mut w = World::new();
    let (alpha, user) = (w.alpha, w.alpha_user());
    let rejection = w.reject(user, network_create(alpha, "alpha-net", "192.168.7.0/24"));
    expect_exists(&rejection, "network");
}

#[test]
fn network_create_refuses_beyond_the_per_tenant_limit() {
    let mut w = World::new();
    let alpha = w.alpha;
    for index in 1..MAX_NETWORKS_PER_TENANT {
        w.create_network(
            alpha,
            &format!("n{index}"),
            &format!("192.168.{index}.0/24"),
        );
    }
    let user = w.alpha_user();
    let rejection = w.reject(user, network_create(alpha, "extra", "192.168.200.0/24"));
    expect_limit(
        &rejection,
        "networks per tenant",
        MAX_NETWORKS_PER_TENANT as u64,
    );
}

#[test]
fn network_create_refuses_an_overlap_with_the_tenants_own_network() {
    let mut w = World::new();
    let (alpha, user) = (w.alpha, w.alpha_user());
    let rejection = w.reject(user, network_create(alpha, "wide", "192.168.0.0/16"));
    expect_overlap(&rejection, "alpha-net");
}

#[test]
fn network_delete_forgets_an_unused_network() {
    let mut w = World::new();
    let (beta, beta_net, user) = (w.beta, w.beta_net, w.beta_user());
    let applied = w.ok(user, Command::NetworkDelete { network: beta_net });
    assert_eq!(
        events(&applied),
        vec![Event::NetworkDeleted { network: beta_net }]
    );
    assert_eq!(applied.events[0].tenant, Some(beta));
    assert!(w.state.network(beta_net).is_none());
}

#[test]
fn network_delete_of_an_unknown_network_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::NetworkDelete {
            network: NetworkId(77),
        },
    );
    expect_not_found(&rejection, "network");
}

#[test]
fn network_delete_of_another_tenants_network_is_not_found() {
    let mut w = World::new();
    let (beta_net, alpha_user) = (w.beta_net, w.alpha_user());
    let rejection = w.reject(alpha_user, Command::NetworkDelete { network: beta_net });
    expect_not_found_id(&rejection, "network", &beta_net.to_string());
}

#[test]
fn network_delete_is_refused_while_a_pool_uses_it() {
    let mut w = World::new();
    let (alpha_net, alpha_pool, user) = (w.alpha_net, w.alpha_pool, w.alpha_user());
    let rejection = w.reject(user.clone(), Command::NetworkDelete { network: alpha_net });
    expect_in_use(&rejection, "network", &alpha_pool.to_string());
    // Once the pool is gone its addresses are given back and the network can go.
    w.ok(
        user.clone(),
        Command::PoolDelete {
            pool: alpha_pool,
            force: false,
        },
    );
    assert!(w.state.network(alpha_net).unwrap().addresses.is_empty());
    w.ok(user, Command::NetworkDelete { network: alpha_net });
}

fn set_storage(network: NetworkId, endpoints: &[&str]) -> Command {
    Command::NetworkSetStorage {
        network,
        endpoints: endpoints
            .iter()
            .map(|endpoint| endpoint.to_string())
            .collect(),
    }
}

#[test]
fn storage_endpoints_are_attached_replaced_and_detached_by_the_owner() {
    let mut w = World::new();
    let (network, alpha, alpha_user) = (w.alpha_net, w.alpha, w.alpha_user());
    let applied = w.ok(
        alpha_user.clone(),
        set_storage(network, &["sfs-turbo.alpha:2049", "https://obs.alpha"]),
    );
    assert_eq!(
        events(&applied),
        vec![Event::NetworkStorageChanged { network }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert_eq!(
        w.state.network(network).unwrap().storage_endpoints,
        ["sfs-turbo.alpha:2049", "https://obs.alpha"]
    );
    w.admin(set_storage(network, &["nfs.alpha:2049"]));
    assert_eq!(
        w.state.network(network).unwrap().storage_endpoints,
        ["nfs.alpha:2049"]
    );
    w.ok(alpha_user, set_storage(network, &[]));
    assert!(w
        .state
        .network(network)
        .unwrap()
        .storage_endpoints
        .is_empty());
}

#[test]
fn storage_endpoints_reject_strangers_bad_text_and_too_many() {
    let mut w = World::new();
    let (network, alpha_user, beta_user) = (w.alpha_net, w.alpha_user(), w.beta_user());
    let rejection = w.reject(beta_user, set_storage(network, &["x:1"]));
    expect_not_found(&rejection, "network");
    let rejection = w.reject(alpha_user.clone(), set_storage(NetworkId(99), &["x:1"]));
    expect_not_found(&rejection, "network");
    let rejection = w.reject(alpha_user.clone(), set_storage(network, &["a:1,b:2"]));
    assert_eq!(rejection.code(), "invalid_argument", "{rejection}");
    let rejection = w.reject(alpha_user.clone(), set_storage(network, &["has space"]));
    assert_eq!(rejection.code(), "invalid_argument", "{rejection}");
    let long = "h".repeat(corral_model::limits::MAX_STORAGE_ENDPOINT_BYTES + 1);
    let rejection = w.reject(alpha_user.clone(), set_storage(network, &[long.as_str()]));
    assert_eq!(rejection.code(), "invalid_argument", "{rejection}");
    let many: Vec<String> = (0..=corral_model::limits::MAX_STORAGE_ENDPOINTS)
        .map(|index| format!("nfs-{index}:2049"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let rejection = w.reject(alpha_user, set_storage(network, &many));
    assert_eq!(rejection.code(), "limit_exceeded", "{rejection}");
}
