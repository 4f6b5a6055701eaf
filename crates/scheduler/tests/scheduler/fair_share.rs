//! Dominant-resource fair share in the public pool: tenants with equal demand end a
//! round with equal dominant shares, whatever order they submitted in and whatever
//! they held before.

use crate::common::{dominant_shares, notebook, training, Cluster};
use corral_model::ids::{PoolId, TenantId};
use std::collections::BTreeMap;

/// Dominant share of one 1-accelerator job in a pool of `nodes` 8-accelerator nodes.
fn one_job_share_ppm(nodes: u64) -> u64 {
    1_000_000 / (8 * nodes)
}

fn two_tenants(nodes: u32) -> (Cluster, PoolId, TenantId, TenantId) {
    let mut cluster = Cluster::new();
    let flavor = cluster.define_flavor(8);
    let first = cluster.tenant("first", 1_000);
    let second = cluster.tenant("second", 1_000);
    cluster.register_nodes(&flavor, nodes, &BTreeMap::new(), &[]);
    let pool = cluster.public_pool(&[(&flavor, nodes)]);
    (cluster, pool, first, second)
}

fn assert_shares_within_one_job(
    cluster: &Cluster,
    pool: PoolId,
    tenants: [TenantId; 2],
    nodes: u64,
) {
    let shares = dominant_shares(&cluster.state, pool);
    let [first, second] = tenants.map(|tenant| shares.get(&tenant).copied().unwrap_or(0));
    assert!(first > 0 && second > 0, "both tenants run work: {shares:?}");
    assert!(
        first.abs_diff(second) <= one_job_share_ppm(nodes),
        "shares differ by more than one job: {shares:?}"
    );
}

#[test]
fn equal_demand_gets_equal_shares_whatever_the_submission_order() {
    let (mut cluster, pool, first, second) = two_tenants(4);
    for _ in 0..40 {
        cluster.submit(first, notebook(pool, 1));
    }
    for _ in 0..40 {
        cluster.submit(second, notebook(pool, 1));
    }
    let (plan, _) = cluster.run_round(pool);
    assert_eq!(plan.placements.len(), 32, "the pool is filled");
    assert_shares_within_one_job(&cluster, pool, [first, second], 4);
    cluster.assert_invariants();
}

#[test]
fn a_tenant_that_already_holds_more_waits_until_the_other_catches_up() {
    let (mut cluster, pool, first, second) = two_tenants(4);
    for _ in 0..10 {
        cluster.submit(first, notebook(pool, 1));
    }
    cluster.run_round(pool);
    assert_eq!(
        dominant_shares(&cluster.state, pool).get(&first),
        Some(&(10 * one_job_share_ppm(4)))
    );
    for _ in 0..30 {
        cluster.submit(first, notebook(pool, 1));
        cluster.submit(second, notebook(pool, 1));
    }
    cluster.run_round(pool);
    assert_shares_within_one_job(&cluster, pool, [first, second], 4);
}

#[test]
fn equal_demand_of_gangs_gets_equal_shares() {
    let (mut cluster, pool, first, second) = two_tenants(6);
    for _ in 0..8 {
        cluster.submit(first, training(pool, 2, 2));
    }
    for _ in 0..8 {
        cluster.submit(second, training(pool, 2, 2));
    }
    cluster.run_round(pool);
    let shares = dominant_shares(&cluster.state, pool);
    assert_eq!(shares.get(&first), shares.get(&second), "{shares:?}");
}
