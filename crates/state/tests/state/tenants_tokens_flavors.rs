//! Tenants, tokens and the flavor catalogue: every happy path and every rejection.

use corral_model::ids::TenantId;
use corral_model::limits::{
    MAX_FLAVORS, MAX_PRICE_MICROS_PER_HOUR, MAX_TENANTS, MAX_TOKENS_PER_TENANT,
};
use corral_model::{Command, Event, Principal, Resources, TenantRole, TokenScope};
use corral_state::testing::*;
use corral_state::Created;

fn tenant_create(name: &str) -> Command {
    Command::TenantCreate {
        name: name.into(),
        quota: quota(8),
        may_use_high_priority: false,
        max_active_jobs: None,
    }
}

/// A tenant's operator token, or a platform admin token when `tenant` is `None`.
fn token(name: &str, hash: &str, tenant: Option<TenantId>) -> Command {
    let scope = match tenant {
        Some(tenant) => TokenScope::Tenant {
            tenant,
            role: TenantRole::Operator,
        },
        None => TokenScope::PlatformAdmin,
    };
    Command::TokenCreate {
        name: name.into(),
        hash: hash.into(),
        scope,
        ttl_ms: None,
    }
}

// TenantCreate

#[test]
fn tenant_create_registers_the_tenant() {
    let mut fx = Fx::new();
    let at = fx.clock();
    let applied = fx.admin(Command::TenantCreate {
        name: "acme".into(),
        quota: quota(16),
        may_use_high_priority: true,
        max_active_jobs: None,
    });
    let Some(Created::Tenant(id)) = applied.created else {
        panic!("no tenant created: {:?}", applied.created);
    };
    assert_eq!(events(&applied), vec![Event::TenantCreated { tenant: id }]);
    assert_eq!(applied.events[0].tenant, Some(id));
    let tenant = fx.state.tenant_by_name("acme").expect("by name");
    assert_eq!(tenant.id, id);
    assert_eq!(tenant.quota, quota(16));
    assert_eq!(tenant.used, Resources::ZERO);
    assert!(tenant.may_use_high_priority);
    assert_eq!(tenant.created_at_ms, at);
    // Ids come from a counter.
    let second = fx.create_tenant("other", quota(1), false);
    assert_eq!(second.0, id.0 + 1);
}

#[test]
fn tenant_create_needs_the_platform_admin() {
    let mut w = World::new();
    let alpha_user = w.alpha_user();
    for principal in [
        alpha_user,
        Principal::System,
        Principal::Node(w.alpha_gpus[0]),
    ] {
        let rejection = w.reject(principal, tenant_create("sneaky"));
        expect_denied(&rejection);
    }
}

#[test]
fn tenant_create_refuses_a_bad_name() {
    let mut fx = Fx::new();
    for name in ["", "Acme", "1acme", "acme-", "ac_me"] {
        expect_invalid(
            &fx.reject(Principal::PlatformAdmin, tenant_create(name)),
            "name",
        );
    }
}

#[test]
fn tenant_create_refuses_a_taken_name() {
    let mut fx = Fx::new();
    fx.admin(tenant_create("acme"));
    expect_exists(
        &fx.reject(Principal::PlatformAdmin, tenant_create("acme")),
        "tenant",
    );
}

#[test]
fn tenant_create_refuses_beyond_the_tenant_limit() {
    let mut fx = Fx::new();
    for index in 0..MAX_TENANTS {
        fx.bulk(
            Principal::PlatformAdmin,
            tenant_create(&format!("t{index}")),
        );
    }
    fx.check();
    let rejection = fx.reject(Principal::PlatformAdmin, tenant_create("one-more"));
    expect_limit(&rejection, "tenants", MAX_TENANTS as u64);
}

// TenantSetQuota

#[test]
fn tenant_set_quota_changes_the_quota() {
    let mut w = World::new();
    let alpha = w.alpha;
    let applied = w.admin(Command::TenantSetQuota {
        tenant: alpha,
        quota: quota(3),
    });
    assert_eq!(
        events(&applied),
        vec![Event::TenantQuotaChanged { tenant: alpha }]
    );
    assert_eq!(w.state.tenant(alpha).unwrap().quota, quota(3));
}

#[test]
fn tenant_set_quota_needs_the_platform_admin() {
    let mut w = World::new();
    let (alpha, alpha_user) = (w.alpha, w.alpha_user());
    let rejection = w.reject(
        alpha_user,
        Command::TenantSetQuota {
            tenant: alpha,
            quota: quota(1000),
        },
    );
    expect_denied(&rejection);
}

#[test]
fn tenant_set_quota_of_an_unknown_tenant_is_not_found() {
    let mut w = World::new();
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::TenantSetQuota {
            tenant: TenantId(99),
            quota: quota(1),
        },
    );
    expect_not_found_id(&rejection, "tenant", "tenant-99");
}

#[test]
fn tenant_set_quota_below_current_use_is_refused() {
    let mut w = World::new();
    // Work in the public pool counts against the quota (a tenant's own pool does not).
    let (alpha, pool, nodes) = (w.alpha, w.public, w.public_gpus.clone());
    let job = w.submit(alpha, training(pool, 1, 4));
    w.place_on(job, &nodes[..1]);
    assert_eq!(w.state.tenant(alpha).unwrap().used, replica(4));
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::TenantSetQuota {
            tenant: alpha,
            quota: quota(3),
        },
    );
    expect_invalid(&rejection, "quota");
    // Exactly what is used is fine.
    w.admin(Command::TenantSetQuota {
        tenant: alpha,
        quota: replica(4),
    });
}

// TenantDelete

#[test]
fn tenant_delete_removes_the_tenant_and_revokes_its_tokens() {
    let mut fx = Fx::new();
    let acme = fx.create_tenant("acme", quota(1), false);
    fx.admin(token("acme-ci", "hash-1", Some(acme)));
    fx.admin(token("root", "hash-2", None));
    let applied = fx.admin(Command::TenantDelete { tenant: acme });
    assert_eq!(
        events(&applied),
        vec![
            Event::TokenRevoked {
                name: "acme-ci".into()
            },
            Event::TenantDeleted { tenant: acme },
        ]
    );
    assert!(fx.state.tenant(acme).is_none());
    assert!(fx.state.tenant_by_name("acme").is_none());
    assert!(fx.state.token_by_hash("hash-1").is_none());
    assert!(fx.state.token_by_hash("hash-2").is_some());
    // The name is free again and the new tenant gets a new id.
    let again = fx.create_tenant("acme", quota(1), false);
    assert_ne!(again, acme);
}

#[test]
fn tenant_delete_needs_the_platform_admin() {
    let mut w = World::new();
    let (beta, beta_user) = (w.beta, w.beta_user());
    expect_denied(&w.reject(beta_user, Command::TenantDelete { tenant: beta }));
}

#[test]
fn tenant_delete_of_an_unknown_tenant_is_not_found() {
    let mut fx = Fx::new();
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        Command::TenantDelete {
            tenant: TenantId(7),
        },
    );
    expect_not_found(&rejection, "tenant");
}

#[test]
fn tenant_delete_is_refused_while_it_owns_a_pool() {
    let mut w = World::new();
    let alpha = w.alpha;
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::TenantDelete { tenant: alpha },
    );
    expect_in_use(&rejection, "tenant", "pool");
}

#[test]
fn tenant_delete_is_refused_while_it_owns_a_network() {
    let mut w = World::new();
    let beta = w.beta;
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::TenantDelete { tenant: beta },
    );
    expect_in_use(&rejection, "tenant", "network");
}

#[test]
fn tenant_delete_is_refused_while_it_has_active_jobs_but_not_finished_ones() {
    let mut w = World::new();
    let gamma = w.create_tenant("gamma", quota(8), false);
    let public = w.public;
    let job = w.submit(gamma, training(public, 1, 1));
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::TenantDelete { tenant: gamma },
    );
    expect_in_use(&rejection, "tenant", "job");
    w.user(gamma, Command::JobTerminate { job });
    w.admin(Command::TenantDelete { tenant: gamma });
    // The finished job is still there for the record.
    assert!(w.state.job(job).is_some());
}

// TokenCreate

#[test]
fn token_create_stores_only_the_hash() {
    let mut w = World::new();
    let alpha = w.alpha;
    let at = w.clock();
    let applied = w.admin(token("alpha-ci", "sha256:abc", Some(alpha)));
    assert_eq!(
        events(&applied),
        vec![Event::TokenCreated {
            name: "alpha-ci".into()
        }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    let stored = w.state.token_by_hash("sha256:abc").expect("by hash");
    assert_eq!(stored.name, "alpha-ci");
    assert_eq!(stored.tenant(), Some(alpha));
    assert_eq!(stored.created_at_ms, at);
    let applied = w.admin(token("root", "sha256:def", None));
    assert_eq!(applied.events[0].tenant, None);
    assert_eq!(w.state.tokens().count(), 2);
}

#[test]
fn token_create_needs_the_platform_admin() {
    let mut w = World::new();
    let (alpha, alpha_user) = (w.alpha, w.alpha_user());
    expect_denied(&w.reject(alpha_user, token("mine", "h", Some(alpha))));
}

#[test]
fn token_create_refuses_a_bad_name_or_hash() {
    let mut fx = Fx::new();
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, token("Bad Name", "h", None)),
        "name",
    );
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, token("ok", "has space", None)),
        "hash",
    );
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, token("ok", "", None)),
        "hash",
    );
    expect_invalid(
        &fx.reject(
            Principal::PlatformAdmin,
            token("ok", &"x".repeat(129), None),
        ),
        "hash",
    );
}

#[test]
fn token_create_refuses_a_taken_name_or_hash() {
    let mut fx = Fx::new();
    fx.admin(token("one", "hash-1", None));
    expect_exists(
        &fx.reject(Principal::PlatformAdmin, token("one", "hash-2", None)),
        "token",
    );
    expect_invalid(
        &fx.reject(Principal::PlatformAdmin, token("two", "hash-1", None)),
        "hash",
    );
}

#[test]
fn token_create_for_an_unknown_tenant_is_not_found() {
    let mut fx = Fx::new();
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        token("ghost", "h", Some(TenantId(5))),
    );
    expect_not_found(&rejection, "tenant");
}

#[test]
fn token_create_refuses_beyond_the_per_tenant_limit() {
    let mut fx = Fx::new();
    let acme = fx.create_tenant("acme", quota(1), false);
    for index in 0..MAX_TOKENS_PER_TENANT {
        fx.admin(token(
            &format!("t{index}"),
            &format!("h{index}"),
            Some(acme),
        ));
    }
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        token("extra", "h-extra", Some(acme)),
    );
    expect_limit(
        &rejection,
        "tokens per tenant",
        MAX_TOKENS_PER_TENANT as u64,
    );
    // Admin tokens do not count against a tenant.
    fx.admin(token("root", "h-root", None));
}

// TokenRevoke

#[test]
fn token_revoke_forgets_the_token() {
    let mut w = World::new();
    let alpha = w.alpha;
    w.admin(token("alpha-ci", "hash", Some(alpha)));
    let applied = w.admin(Command::TokenRevoke {
        name: "alpha-ci".into(),
    });
    assert_eq!(
        events(&applied),
        vec![Event::TokenRevoked {
            name: "alpha-ci".into()
        }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    assert!(w.state.token_by_hash("hash").is_none());
}

#[test]
fn token_revoke_needs_the_platform_admin() {
    let mut w = World::new();
    let alpha = w.alpha;
    w.admin(token("root", "hash", None));
    w.admin(token("alpha-ci", "hash-2", Some(alpha)));
    let alpha_user = w.alpha_user();
    // A tenant operator does not see the platform's tokens...
    let rejection = w.reject(
        alpha_user.clone(),
        Command::TokenRevoke {
            name: "root".into(),
        },
    );
    expect_not_found(&rejection, "token");
    // ... and may not manage its own tenant's (that takes the tenant's admin role).
    let rejection = w.reject(
        alpha_user,
        Command::TokenRevoke {
            name: "alpha-ci".into(),
        },
    );
    expect_denied(&rejection);
    assert!(w.state.token("root").is_some());
    assert!(w.state.token("alpha-ci").is_some());
}

#[test]
fn token_revoke_of_an_unknown_token_is_not_found() {
    let mut fx = Fx::new();
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        Command::TokenRevoke {
            name: "nope".into(),
        },
    );
    expect_not_found(&rejection, "token");
}

// FlavorDefine

#[test]
fn flavor_define_adds_to_the_catalogue() {
    let mut fx = Fx::new();
    let applied = fx.admin(Command::FlavorDefine(gpu_flavor()));
    assert_eq!(
        events(&applied),
        vec![Event::FlavorDefined { name: GPU.into() }]
    );
    assert_eq!(applied.events[0].tenant, None);
    assert_eq!(fx.state.flavor(GPU), Some(&gpu_flavor()));
    fx.admin(Command::FlavorDefine(cpu_flavor()));
    assert_eq!(fx.state.flavors().count(), 2);
}

#[test]
fn flavor_define_needs_the_platform_admin() {
    let mut w = World::new();
    let mut flavor = gpu_flavor();
    flavor.name = "mine".into();
    let alpha_user = w.alpha_user();
    expect_denied(&w.reject(alpha_user, Command::FlavorDefine(flavor)));
}

#[test]
fn flavor_define_refuses_malformed_flavors() {
    let mut fx = Fx::new();
    let mut cases = Vec::new();
    let mut flavor = gpu_flavor();
    flavor.name = "GPU".into();
    cases.push((flavor, "name"));
    let mut flavor = gpu_flavor();
    flavor.capacity.cpu_millicores = 0;
    cases.push((flavor, "capacity"));
    let mut flavor = gpu_flavor();
    flavor.capacity.memory_mib = 0;
    cases.push((flavor, "capacity"));
    let mut flavor = gpu_flavor();
    flavor.capacity.accelerators = 65;
    cases.push((flavor, "capacity.accelerators"));
    let mut flavor = gpu_flavor();
    flavor.accelerator_type = None;
    cases.push((flavor, "accelerator_type"));
    let mut flavor = cpu_flavor();
    flavor.accelerator_type = Some("nvidia-a100".into());
    cases.push((flavor, "accelerator_type"));
    let mut flavor = gpu_flavor();
    flavor.accelerator_type = Some("nvidia a100".into());
    cases.push((flavor, "accelerator_type"));
    let mut flavor = gpu_flavor();
    flavor.price_micros_per_hour = MAX_PRICE_MICROS_PER_HOUR + 1;
    cases.push((flavor, "price_micros_per_hour"));
    let mut flavor = gpu_flavor();
    flavor.cpu_architecture = "riscv64".into();
    cases.push((flavor, "cpu_architecture"));
    for (flavor, field) in cases {
        let rejection = fx.reject(Principal::PlatformAdmin, Command::FlavorDefine(flavor));
        expect_invalid(&rejection, field);
    }
    assert_eq!(fx.state.flavors().count(), 0);
}

#[test]
fn flavor_define_refuses_a_taken_name() {
    let mut fx = Fx::new();
    fx.admin(Command::FlavorDefine(gpu_flavor()));
    let mut changed = gpu_flavor();
    changed.price_micros_per_hour = 1;
    let rejection = fx.reject(Principal::PlatformAdmin, Command::FlavorDefine(changed));
    expect_exists(&rejection, "flavor");
    assert_eq!(fx.state.flavor(GPU), Some(&gpu_flavor()));
}

#[test]
fn flavor_define_refuses_beyond_the_catalogue_limit() {
    let mut fx = Fx::new();
    for index in 0..MAX_FLAVORS {
        let mut flavor = cpu_flavor();
        flavor.name = format!("f{index}");
        fx.bulk(Principal::PlatformAdmin, Command::FlavorDefine(flavor));
    }
    let mut flavor = cpu_flavor();
    flavor.name = "extra".into();
    let rejection = fx.reject(Principal::PlatformAdmin, Command::FlavorDefine(flavor));
    expect_limit(&rejection, "flavors", MAX_FLAVORS as u64);
}
