//! Credentials checked again at apply (issue 15): a write carries the token it was
//! authenticated with, and the state of the entry's index decides whether that token
//! still stands (revoked, expired, rotated out, or standing for another principal:
//! `Unauthenticated`, and nothing changes). Also the token lifecycle (create with a TTL,
//! rotate with a grace period, revoke; who may manage which scope), read-only roles,
//! node identities (a node reports only about itself and reads nothing) and node
//! bootstrap (a one-time, expiring token that installs the node's own credential).
//! The kit's driver checks every invariant, the token indexes included, after each
//! entry, and that a refused entry changed nothing.

use corral_model::command::NodeRegister;
use corral_model::ids::{JobId, NodeId, TenantId};
use corral_model::limits::{
    DEFAULT_BOOTSTRAP_TTL_MS, DEFAULT_TOKEN_TTL_MS, HOUR_MS, MAX_BOOTSTRAP_USES,
    MAX_ROTATION_GRACE_MS, MAX_TOKEN_TTL_MS,
};
use corral_model::{
    Command, Credential, Event, NodeStatus, Principal, Rejection, TenantRole, Token, TokenScope,
};
use corral_state::testing::*;
use corral_state::{
    node_token_name, BillQuery, Created, JobFilter, NodeFilter, PoolFilter, QueryError, State,
    Write,
};

const MINUTE_MS: u64 = 60_000;

fn tenant_scope(tenant: TenantId, role: TenantRole) -> TokenScope {
    TokenScope::Tenant { tenant, role }
}

fn token_create(name: &str, hash: &str, scope: TokenScope, ttl_ms: Option<u64>) -> Command {
    Command::TokenCreate {
        name: name.into(),
        hash: hash.into(),
        scope,
        ttl_ms,
    }
}

fn rotate(name: &str, hash: &str, grace_ms: u64) -> Command {
    Command::TokenRotate {
        name: name.into(),
        hash: hash.into(),
        grace_ms,
    }
}

fn revoke(name: &str) -> Command {
    Command::TokenRevoke { name: name.into() }
}

/// The credential of the token's current secret.
fn credential_of(fx: &Fx, name: &str) -> Credential {
    let token = fx.state.token(name).expect("the token exists");
    Credential {
        token: token.id,
        generation: token.generation,
    }
}

/// Create a token as the platform admin and return its credential.
fn create(
    fx: &mut Fx,
    name: &str,
    hash: &str,
    scope: TokenScope,
    ttl_ms: Option<u64>,
) -> Credential {
    fx.admin(token_create(name, hash, scope, ttl_ms));
    credential_of(fx, name)
}

fn expect_unauthenticated(rejection: &Rejection) {
    assert!(
        matches!(rejection, Rejection::Unauthenticated { .. }),
        "expected Unauthenticated, got {rejection:?}"
    );
}

/// `apply_with` that must be refused as unauthenticated.
#[track_caller]
fn refused_unauthenticated(
    fx: &mut Fx,
    principal: Principal,
    credential: Credential,
    command: Command,
) {
    match fx.apply_with(principal, credential, command) {
        Ok(applied) => panic!("accepted under a dead credential: {:?}", applied.events),
        Err(rejection) => expect_unauthenticated(&rejection),
    }
}

/// `apply_with` that must be accepted.
#[track_caller]
fn accepted(
    fx: &mut Fx,
    principal: Principal,
    credential: Credential,
    command: Command,
) -> corral_state::Applied {
    let name = command.name();
    match fx.apply_with(principal, credential, command) {
        Ok(applied) => applied,
        Err(rejection) => panic!("{name} was refused: {rejection}"),
    }
}

fn submit_to(pool: corral_model::PoolId) -> Command {
    Command::JobSubmit(training(pool, 1, 1))
}

fn created_job(applied: &corral_state::Applied) -> JobId {
    match applied.created {
        Some(Created::Job(job)) => job,
        ref other => panic!("expected a job, got {other:?}"),
    }
}

fn bootstrap_request(name: &str, hash: &str) -> NodeRegister {
    NodeRegister {
        credential_hash: Some(hash.into()),
        ..node_request(name, GPU, ZONE)
    }
}

fn register_as_bootstrap(
    fx: &mut Fx,
    bootstrap: Credential,
    request: NodeRegister,
) -> Result<corral_state::Applied, Rejection> {
    fx.apply_with(
        Principal::Bootstrap,
        bootstrap,
        Command::NodeRegister(request),
    )
}

fn created_node(applied: &corral_state::Applied) -> NodeId {
    match applied.created {
        Some(Created::Node(node)) => node,
        ref other => panic!("expected a node, got {other:?}"),
    }
}

fn set_address(node: NodeId, address: &str) -> Command {
    Command::NodeSetAgentAddress {
        node,
        address: address.into(),
        isolation: None,
    }
}

// Revocation

#[test]
fn a_write_under_a_token_revoked_at_an_earlier_index_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let operator = Principal::TenantUser(alpha);
    let ci = create(
        &mut w,
        "alpha-ci",
        "hash-ci",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    let job = created_job(&accepted(&mut w, operator.clone(), ci, submit_to(pool)));
    w.admin(revoke("alpha-ci"));
    let jobs_before = w.state.jobs().count();
    let digest_before = w.state.content_digest();
    refused_unauthenticated(&mut w, operator.clone(), ci, submit_to(pool));
    refused_unauthenticated(&mut w, operator.clone(), ci, Command::JobTerminate { job });
    assert_eq!(w.state.jobs().count(), jobs_before);
    assert_eq!(w.state.content_digest(), digest_before);
    assert_ne!(w.job_state(job), corral_model::JobState::Terminated);
    // The same principal authenticated otherwise (or the system's own write) still may:
    // it is the credential that is refused, not the principal.
    w.ok(operator, Command::JobTerminate { job });
}

#[test]
fn a_token_recreated_under_the_same_name_does_not_revive_the_old_credential() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let operator = Principal::TenantUser(alpha);
    let scope = tenant_scope(alpha, TenantRole::Operator);
    let old = create(&mut w, "alpha-ci", "hash-old", scope.clone(), None);
    w.admin(revoke("alpha-ci"));
    let new = create(&mut w, "alpha-ci", "hash-new", scope, None);
    assert_ne!(old.token, new.token, "token ids are never reused");
    refused_unauthenticated(&mut w, operator.clone(), old, submit_to(pool));
    accepted(&mut w, operator, new, submit_to(pool));
}

#[test]
fn a_revocation_earlier_in_the_same_entry_refuses_the_writes_after_it() {
    let mut state = State::new();
    let admin = |command: Command| Write {
        principal: Principal::PlatformAdmin,
        credential: None,
        command,
        request_id: None,
    };
    let setup = vec![
        admin(Command::TenantCreate {
            name: "acme".into(),
            quota: quota(8),
            may_use_high_priority: false,
            max_active_jobs: None,
        }),
        admin(token_create(
            "acme-admin",
            "hash-a",
            tenant_scope(TenantId(1), TenantRole::Admin),
            None,
        )),
    ];
    for outcome in state.apply_batch(1, START_MS, setup) {
        outcome.unwrap();
    }
    let token = state.token("acme-admin").unwrap();
    let credential = Credential {
        token: token.id,
        generation: token.generation,
    };
    let as_acme_admin = |name: &str, hash: &str| Write {
        principal: Principal::TenantAdmin(TenantId(1)),
        credential: Some(credential),
        command: token_create(
            name,
            hash,
            tenant_scope(TenantId(1), TenantRole::Viewer),
            None,
        ),
        request_id: None,
    };
    let entry = vec![
        as_acme_admin("before", "hash-b"),
        admin(revoke("acme-admin")),
        as_acme_admin("after", "hash-c"),
    ];
    let outcomes = state.apply_batch(2, START_MS + 1_000, entry);
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
    expect_unauthenticated(outcomes[2].as_ref().unwrap_err());
    assert!(state.token("before").is_some());
    assert!(state.token("after").is_none());
    state.check_invariants().unwrap();
}

// Expiry

#[test]
fn an_expired_tenant_token_is_refused_from_its_expiry_on() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let operator = Principal::TenantUser(alpha);
    let created_at = w.clock();
    let ttl = 10 * MINUTE_MS;
    let ci = create(
        &mut w,
        "alpha-ci",
        "hash-ci",
        tenant_scope(alpha, TenantRole::Operator),
        Some(ttl),
    );
    let expires = created_at + ttl;
    assert_eq!(
        w.state.token("alpha-ci").unwrap().expires_at_ms,
        Some(expires)
    );
    w.set_clock(expires - 1);
    accepted(&mut w, operator.clone(), ci, submit_to(pool));
    w.set_clock(expires);
    refused_unauthenticated(&mut w, operator.clone(), ci, submit_to(pool));
    w.set_clock(expires + HOUR_MS);
    refused_unauthenticated(&mut w, operator, ci, submit_to(pool));
    // Expiry refuses writes; the token stays listed until revoked.
    let token = w.state.token("alpha-ci").unwrap();
    assert!(!token.live_at(expires));
    assert!(token.live_at(expires - 1));
    assert_eq!(token.generation_of("hash-ci", expires), None);
    assert_eq!(token.generation_of("hash-ci", expires - 1), Some(0));
}

#[test]
fn a_leader_clock_behind_the_state_does_not_revive_an_expired_token() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let created_at = w.clock();
    let ci = create(
        &mut w,
        "alpha-ci",
        "hash-ci",
        tenant_scope(alpha, TenantRole::Operator),
        Some(MINUTE_MS),
    );
    w.set_clock(created_at + 2 * MINUTE_MS);
    w.tick();
    // A new leader stamps an earlier time; the state's time never goes back.
    w.set_clock(created_at + 1);
    refused_unauthenticated(&mut w, Principal::TenantUser(alpha), ci, submit_to(pool));
}

#[test]
fn token_lifetimes_default_by_scope_and_are_bounded() {
    let mut w = World::new();
    let alpha = w.alpha;
    let at = w.clock();
    w.admin(token_create(
        "t",
        "h-t",
        tenant_scope(alpha, TenantRole::Viewer),
        None,
    ));
    assert_eq!(
        w.state.token("t").unwrap().expires_at_ms,
        Some(at + DEFAULT_TOKEN_TTL_MS)
    );
    let at = w.clock();
    w.admin(token_create(
        "b",
        "h-b",
        TokenScope::Bootstrap { uses_left: 1 },
        None,
    ));
    assert_eq!(
        w.state.token("b").unwrap().expires_at_ms,
        Some(at + DEFAULT_BOOTSTRAP_TTL_MS)
    );
    // Platform tokens may live for ever (the break-glass admin token) or be given a TTL.
    w.admin(token_create(
        "root",
        "h-root",
        TokenScope::PlatformAdmin,
        None,
    ));
    assert_eq!(w.state.token("root").unwrap().expires_at_ms, None);
    let at = w.clock();
    w.admin(token_create(
        "audit",
        "h-audit",
        TokenScope::PlatformAuditor,
        Some(HOUR_MS),
    ));
    assert_eq!(
        w.state.token("audit").unwrap().expires_at_ms,
        Some(at + HOUR_MS)
    );
    let at = w.clock();
    w.admin(token_create(
        "long",
        "h-long",
        tenant_scope(alpha, TenantRole::Admin),
        Some(MAX_TOKEN_TTL_MS),
    ));
    assert_eq!(
        w.state.token("long").unwrap().expires_at_ms,
        Some(at + MAX_TOKEN_TTL_MS)
    );
    for (scope, ttl) in [
        (tenant_scope(alpha, TenantRole::Operator), 0),
        (
            tenant_scope(alpha, TenantRole::Operator),
            MAX_TOKEN_TTL_MS + 1,
        ),
        (TokenScope::Bootstrap { uses_left: 1 }, 0),
        (TokenScope::Bootstrap { uses_left: 1 }, MAX_TOKEN_TTL_MS + 1),
        (TokenScope::PlatformAdmin, 0),
        (TokenScope::PlatformAdmin, MAX_TOKEN_TTL_MS + 1),
    ] {
        let rejection = w.reject(
            Principal::PlatformAdmin,
            token_create("bad", "h-bad", scope, Some(ttl)),
        );
        expect_invalid(&rejection, "ttl_ms");
    }
    for uses_left in [0, MAX_BOOTSTRAP_USES + 1] {
        let rejection = w.reject(
            Principal::PlatformAdmin,
            token_create("bad", "h-bad", TokenScope::Bootstrap { uses_left }, None),
        );
        expect_invalid(&rejection, "uses");
    }
}

// Rotation

#[test]
fn a_rotated_out_secret_works_until_its_grace_ends_and_the_new_one_at_once() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let operator = Principal::TenantUser(alpha);
    let old = create(
        &mut w,
        "alpha-ci",
        "hash-0",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    let rotated_at = w.clock();
    let grace = 5 * MINUTE_MS;
    let applied = w.admin(rotate("alpha-ci", "hash-1", grace));
    assert_eq!(
        events(&applied),
        vec![Event::TokenRotated {
            name: "alpha-ci".into()
        }]
    );
    assert_eq!(applied.events[0].tenant, Some(alpha));
    let new = credential_of(&w, "alpha-ci");
    assert_eq!((old.token, old.generation + 1), (new.token, new.generation));
    // Both secrets find the token while the old one is in its grace.
    assert_eq!(w.state.token_by_hash("hash-0").unwrap().name, "alpha-ci");
    assert_eq!(w.state.token_by_hash("hash-1").unwrap().name, "alpha-ci");
    let token = w.state.token("alpha-ci").unwrap();
    assert_eq!(
        token.generation_of("hash-0", rotated_at + grace - 1),
        Some(old.generation)
    );
    assert_eq!(token.generation_of("hash-0", rotated_at + grace), None);
    assert_eq!(
        token.generation_of("hash-1", rotated_at + grace),
        Some(new.generation)
    );

    w.set_clock(rotated_at + grace - 1);
    accepted(&mut w, operator.clone(), old, submit_to(pool));
    accepted(&mut w, operator.clone(), new, submit_to(pool));
    w.set_clock(rotated_at + grace);
    refused_unauthenticated(&mut w, operator.clone(), old, submit_to(pool));
    accepted(&mut w, operator.clone(), new, submit_to(pool));
    // A credential of a generation the token never had is refused.
    let future = Credential {
        generation: new.generation + 1,
        ..new
    };
    refused_unauthenticated(&mut w, operator, future, submit_to(pool));
}

#[test]
fn a_rotation_without_grace_or_a_second_rotation_ends_the_old_secret_at_once() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let operator = Principal::TenantUser(alpha);
    let first = create(
        &mut w,
        "alpha-ci",
        "hash-0",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    w.admin(rotate("alpha-ci", "hash-1", 0));
    assert!(w.state.token_by_hash("hash-0").is_none());
    assert_eq!(w.state.token("alpha-ci").unwrap().previous, None);
    refused_unauthenticated(&mut w, operator.clone(), first, submit_to(pool));
    let second = credential_of(&w, "alpha-ci");
    w.admin(rotate("alpha-ci", "hash-2", HOUR_MS));
    let third = credential_of(&w, "alpha-ci");
    w.admin(rotate("alpha-ci", "hash-3", HOUR_MS));
    let fourth = credential_of(&w, "alpha-ci");
    // Only the last rotated-out secret is kept: generation 2 is in its grace, 1 is not.
    assert!(w.state.token_by_hash("hash-1").is_none());
    assert_eq!(w.state.token_by_hash("hash-2").unwrap().name, "alpha-ci");
    refused_unauthenticated(&mut w, operator.clone(), second, submit_to(pool));
    accepted(&mut w, operator.clone(), third, submit_to(pool));
    accepted(&mut w, operator, fourth, submit_to(pool));
    // A revocation drops every secret of the token, the one in its grace too.
    w.admin(revoke("alpha-ci"));
    for hash in ["hash-2", "hash-3"] {
        assert!(w.state.token_by_hash(hash).is_none(), "{hash} still found");
    }
}

#[test]
fn token_rotate_refuses_a_long_grace_a_taken_hash_or_an_unknown_token() {
    let mut w = World::new();
    let alpha = w.alpha;
    create(
        &mut w,
        "a",
        "hash-a",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    create(
        &mut w,
        "b",
        "hash-b",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    let rejection = w.reject(
        Principal::PlatformAdmin,
        rotate("a", "hash-new", MAX_ROTATION_GRACE_MS + 1),
    );
    expect_invalid(&rejection, "grace_ms");
    for taken in ["hash-a", "hash-b"] {
        let rejection = w.reject(Principal::PlatformAdmin, rotate("a", taken, 0));
        expect_invalid(&rejection, "hash");
    }
    expect_invalid(
        &w.reject(Principal::PlatformAdmin, rotate("a", "has space", 0)),
        "hash",
    );
    expect_not_found(
        &w.reject(Principal::PlatformAdmin, rotate("nope", "h", 0)),
        "token",
    );
    w.admin(rotate("a", "hash-new", MAX_ROTATION_GRACE_MS));
}

// The principal a credential stands for

#[test]
fn a_credential_that_stands_for_another_principal_is_refused() {
    let mut w = World::new();
    let (alpha, beta, pool) = (w.alpha, w.beta, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let operator = create(
        &mut w,
        "alpha-ci",
        "hash-ci",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    let viewer = create(
        &mut w,
        "alpha-view",
        "hash-v",
        tenant_scope(alpha, TenantRole::Viewer),
        None,
    );
    let root = create(&mut w, "root", "hash-root", TokenScope::PlatformAdmin, None);
    let beta_pool = w.public;
    // Another tenant, a higher role of the same tenant, the platform admin, a node.
    refused_unauthenticated(
        &mut w,
        Principal::TenantUser(beta),
        operator,
        submit_to(beta_pool),
    );
    refused_unauthenticated(
        &mut w,
        Principal::TenantAdmin(alpha),
        operator,
        submit_to(pool),
    );
    refused_unauthenticated(
        &mut w,
        Principal::TenantUser(alpha),
        viewer,
        submit_to(pool),
    );
    refused_unauthenticated(
        &mut w,
        Principal::PlatformAdmin,
        operator,
        Command::NodeCordon { node },
    );
    refused_unauthenticated(
        &mut w,
        Principal::Node(node),
        operator,
        set_address(node, "h:1"),
    );
    refused_unauthenticated(&mut w, Principal::TenantUser(alpha), root, submit_to(pool));
    // Each stands for its own principal.
    accepted(
        &mut w,
        Principal::TenantUser(alpha),
        operator,
        submit_to(pool),
    );
    accepted(
        &mut w,
        Principal::PlatformAdmin,
        root,
        Command::NodeCordon { node },
    );
}

// Read-only roles

#[test]
fn viewers_and_auditors_are_refused_every_write() {
    let mut w = World::new();
    let (alpha, pool, network) = (w.alpha, w.alpha_pool, w.alpha_net);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    create(
        &mut w,
        "ops",
        "hash-ops",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    let viewer = create(
        &mut w,
        "alpha-view",
        "hash-v",
        tenant_scope(alpha, TenantRole::Viewer),
        None,
    );
    let auditor = create(
        &mut w,
        "audit",
        "hash-audit",
        TokenScope::PlatformAuditor,
        None,
    );
    let commands = || {
        vec![
            submit_to(pool),
            Command::JobTerminate { job },
            Command::JobChangePriority { job, priority: 2 },
            Command::NetworkDelete { network },
            Command::PoolScale {
                pool,
                flavor: GPU.into(),
                zone: ZONE.into(),
                node_count: 1,
            },
            Command::NodeSetStandby {
                node,
                standby: true,
            },
            token_create(
                "mine",
                "hash-mine",
                tenant_scope(alpha, TenantRole::Admin),
                None,
            ),
            revoke("ops"),
            rotate("ops", "hash-ops-2", 0),
            Command::TenantCreate {
                name: "sneaky".into(),
                quota: quota(1),
                may_use_high_priority: false,
                max_active_jobs: None,
            },
            Command::NodeCordon { node },
            Command::MeterTick,
        ]
    };
    for (principal, credential) in [
        (Principal::TenantViewer(alpha), viewer),
        (Principal::PlatformAuditor, auditor),
    ] {
        for command in commands() {
            let name = command.name();
            let rejection = w.reject(principal.clone(), command.clone());
            expect_denied(&rejection);
            match w.apply_with(principal.clone(), credential, command) {
                Ok(_) => panic!("{principal:?} was allowed {name}"),
                Err(rejection) => expect_denied(&rejection),
            }
        }
    }
    assert_eq!(w.job_state(job), corral_model::JobState::Pending);
}

#[test]
fn viewers_and_auditors_read_what_their_scope_allows() {
    let mut w = World::new();
    let (alpha, beta, pool, public) = (w.alpha, w.beta, w.alpha_pool, w.public);
    let alpha_job = w.submit(alpha, training(pool, 1, 1));
    let beta_job = w.submit(beta, training(public, 1, 1));
    let viewer = Principal::TenantViewer(alpha);
    assert!(w.state.get_job(&viewer, alpha_job).is_ok());
    assert!(w.state.get_job(&viewer, beta_job).is_err());
    assert!(w.state.get_pool(&viewer, pool).is_ok());
    let auditor = Principal::PlatformAuditor;
    assert!(w.state.get_job(&auditor, alpha_job).is_ok());
    assert!(w.state.get_job(&auditor, beta_job).is_ok());
    assert_eq!(
        w.state
            .list_nodes(&auditor, &NodeFilter::default(), 1_000)
            .len(),
        w.state.nodes().count()
    );
    assert!(w.state.bills(&auditor, &BillQuery::default()).is_ok());
    assert!(w.state.bills(&viewer, &BillQuery::default()).is_ok());
}

// Who manages which tokens

#[test]
fn a_tenant_admin_manages_its_own_tenants_tokens_only() {
    let mut w = World::new();
    let (alpha, beta, pool) = (w.alpha, w.beta, w.alpha_pool);
    let admin = Principal::TenantAdmin(alpha);
    let cred = create(
        &mut w,
        "alpha-admin",
        "hash-aa",
        tenant_scope(alpha, TenantRole::Admin),
        None,
    );
    create(
        &mut w,
        "beta-ci",
        "hash-bc",
        tenant_scope(beta, TenantRole::Operator),
        None,
    );
    create(&mut w, "root", "hash-root", TokenScope::PlatformAdmin, None);
    // Its own tenant, every role.
    for (name, hash, role) in [
        ("alpha-ci", "hash-ac", TenantRole::Operator),
        ("alpha-view", "hash-av", TenantRole::Viewer),
        ("alpha-admin-2", "hash-aa2", TenantRole::Admin),
    ] {
        let applied = accepted(
            &mut w,
            admin.clone(),
            cred,
            token_create(name, hash, tenant_scope(alpha, role), None),
        );
        assert_eq!(
            events(&applied),
            vec![Event::TokenCreated { name: name.into() }]
        );
        assert_eq!(w.state.token(name).unwrap().tenant(), Some(alpha));
    }
    accepted(
        &mut w,
        admin.clone(),
        cred,
        rotate("alpha-ci", "hash-ac-2", MINUTE_MS),
    );
    accepted(&mut w, admin.clone(), cred, revoke("alpha-view"));
    assert!(w.state.token("alpha-view").is_none());
    // Not another tenant's, the platform's, or a node's.
    for scope in [
        tenant_scope(beta, TenantRole::Operator),
        TokenScope::PlatformAdmin,
        TokenScope::PlatformAuditor,
        TokenScope::Bootstrap { uses_left: 1 },
        TokenScope::Node(w.alpha_gpus[0]),
    ] {
        let rejection = w
            .apply_with(
                admin.clone(),
                cred,
                token_create("x", "hash-x", scope, None),
            )
            .unwrap_err();
        expect_denied(&rejection);
    }
    for command in [
        revoke("beta-ci"),
        rotate("beta-ci", "hash-x", 0),
        revoke("root"),
        rotate("root", "hash-x", 0),
    ] {
        let rejection = w.apply_with(admin.clone(), cred, command).unwrap_err();
        expect_not_found(&rejection, "token");
    }
    assert!(w.state.token("beta-ci").is_some());
    assert!(w.state.token("root").is_some());
    // It is also an operator of its tenant.
    accepted(&mut w, admin.clone(), cred, submit_to(pool));
    // It may revoke its own token, after which that credential authorizes nothing.
    accepted(&mut w, admin.clone(), cred, revoke("alpha-admin"));
    refused_unauthenticated(&mut w, admin, cred, revoke("alpha-ci"));
    assert!(w.state.token("alpha-ci").is_some());
}

#[test]
fn a_tenant_operator_cannot_manage_tokens() {
    let mut w = World::new();
    let alpha = w.alpha;
    let operator = Principal::TenantUser(alpha);
    let cred = create(
        &mut w,
        "alpha-ci",
        "hash-ac",
        tenant_scope(alpha, TenantRole::Operator),
        None,
    );
    create(
        &mut w,
        "alpha-view",
        "hash-av",
        tenant_scope(alpha, TenantRole::Viewer),
        None,
    );
    for role in [TenantRole::Viewer, TenantRole::Operator, TenantRole::Admin] {
        let command = token_create("mine", "hash-m", tenant_scope(alpha, role), None);
        expect_denied(&w.apply_with(operator.clone(), cred, command).unwrap_err());
    }
    for command in [
        revoke("alpha-view"),
        rotate("alpha-view", "hash-x", 0),
        revoke("alpha-ci"),
    ] {
        expect_denied(&w.apply_with(operator.clone(), cred, command).unwrap_err());
    }
    assert!(w.state.token("alpha-view").is_some());
    assert!(w.state.token("alpha-ci").is_some());
    assert!(w.state.token("mine").is_none());
}

#[test]
fn the_platform_admin_creates_every_scope_but_a_nodes_own() {
    let mut w = World::new();
    let (alpha, node) = (w.alpha, w.alpha_gpus[0]);
    for (name, scope) in [
        ("root", TokenScope::PlatformAdmin),
        ("audit", TokenScope::PlatformAuditor),
        ("boot", TokenScope::Bootstrap { uses_left: 3 }),
        ("alpha-admin", tenant_scope(alpha, TenantRole::Admin)),
        ("alpha-view", tenant_scope(alpha, TenantRole::Viewer)),
    ] {
        w.admin(token_create(
            name,
            &format!("hash-{name}"),
            scope.clone(),
            None,
        ));
        assert_eq!(w.state.token(name).unwrap().scope, scope);
    }
    // A node's credential comes only from its registration.
    let rejection = w.reject(
        Principal::PlatformAdmin,
        token_create("node-x", "hash-n", TokenScope::Node(node), None),
    );
    expect_denied(&rejection);
    let rejection = w.reject(
        Principal::PlatformAdmin,
        token_create("node:gpu-0", "hash-n", TokenScope::PlatformAdmin, None),
    );
    expect_invalid(&rejection, "name");
}

// Nodes: NodeRestriction

#[test]
fn a_node_reports_only_about_itself() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let (own, other) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[own]);
    let intruder = Principal::Node(other);
    let forged = [
        Command::ReplicaStarted {
            job,
            rank: 0,
            node: own,
            master_port: None,
        },
        Command::ReplicaExited {
            job,
            rank: 0,
            node: own,
            exit_code: 1,
            oom_killed: false,
        },
        set_address(own, "10.9.9.9:7070"),
        Command::NodeDriverReport {
            node: own,
            gpu_driver_version: Some("999.0".into()),
            npu_driver_version: None,
        },
    ];
    for command in forged {
        expect_denied(&w.reject(intruder.clone(), command));
    }
    assert_eq!(
        w.job(job).replicas[0].state,
        corral_model::ReplicaState::Assigned
    );
    assert_eq!(w.node(own).agent_address, None);
    assert_eq!(w.node(own).gpu_driver_version.as_deref(), Some("535.1"));
    // The node itself may.
    w.ok(
        Principal::Node(own),
        Command::ReplicaStarted {
            job,
            rank: 0,
            node: own,
            master_port: None,
        },
    );
    w.ok(Principal::Node(own), set_address(own, "10.0.0.1:7070"));
    w.ok(
        Principal::Node(own),
        Command::NodeDriverReport {
            node: own,
            gpu_driver_version: Some("550.2".into()),
            npu_driver_version: None,
        },
    );
    w.ok(
        Principal::Node(own),
        Command::ReplicaExited {
            job,
            rank: 0,
            node: own,
            exit_code: 0,
            oom_killed: false,
        },
    );
}

#[test]
fn a_node_reports_its_own_recovery_only() {
    let mut w = World::new();
    let (own, other) = (w.alpha_gpus[0], w.alpha_gpus[1]);
    w.system(Command::NodeLost { node: own });
    expect_denied(&w.reject(Principal::Node(other), Command::NodeRecovered { node: own }));
    assert_eq!(w.node(own).status, NodeStatus::Abnormal);
    w.ok(Principal::Node(own), Command::NodeRecovered { node: own });
    assert_eq!(w.node(own).status, NodeStatus::Available);
}

#[test]
fn a_node_may_not_act_as_a_tenant_an_operator_or_the_leader() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    let as_node = Principal::Node(node);
    for command in [
        submit_to(pool),
        Command::JobTerminate { job },
        Command::JobStop { job },
        Command::NodeCordon { node },
        Command::NodeLost { node },
        Command::NodeDelete { node },
        Command::NodeSetStandby {
            node,
            standby: true,
        },
        Command::NodeRegister(node_request("rogue", GPU, ZONE)),
        Command::NodeRegister(bootstrap_request("rogue", "hash-rogue")),
        token_create("x", "hash-x", TokenScope::Node(node), None),
        revoke("node:gpu-0"),
        Command::MeterTick,
    ] {
        expect_denied(&w.reject(as_node.clone(), command));
    }
    assert!(w.state.node_by_name("rogue").is_none());
}

#[test]
fn a_node_reads_no_tenants_objects_and_no_bills() {
    let mut w = World::new();
    let (alpha, beta, pool, public) = (w.alpha, w.beta, w.alpha_pool, w.public);
    let node = w.alpha_gpus[0];
    let job = w.submit(alpha, training(pool, 1, 1));
    w.place_on(job, &[node]);
    w.start_all(job);
    w.submit(beta, training(public, 1, 1));
    w.advance(HOUR_MS);
    w.tick();
    // What there is to see, as the admin sees it.
    let admin = Principal::PlatformAdmin;
    assert!(!w
        .state
        .list_jobs(&admin, &JobFilter::default(), 100)
        .is_empty());
    assert!(!w.state.events_since(&admin, 0, 100).unwrap().is_empty());
    for reader in [Principal::Node(node), Principal::Bootstrap] {
        assert!(w
            .state
            .list_jobs(&reader, &JobFilter::default(), 100)
            .is_empty());
        assert!(
            w.state.get_job(&reader, job).is_err(),
            "{reader:?} sees its own replica's job"
        );
        assert!(w
            .state
            .list_pools(&reader, &PoolFilter::default(), 100)
            .is_empty());
        assert!(w.state.get_pool(&reader, public).is_err());
        assert!(w
            .state
            .list_nodes(&reader, &NodeFilter::default(), 100)
            .is_empty());
        assert!(w.state.get_node(&reader, node).is_err());
        assert!(w.state.events_since(&reader, 0, 100).unwrap().is_empty());
        for query in [
            BillQuery::default(),
            BillQuery {
                tenant: Some(alpha),
                ..BillQuery::default()
            },
        ] {
            match w.state.bills(&reader, &query) {
                Err(QueryError::Rejected(rejection)) => expect_denied(&rejection),
                other => panic!("{reader:?} read bills: {other:?}"),
            }
        }
    }
}

// Nodes: bootstrap

#[test]
fn a_bootstrap_registration_installs_the_node_credential_and_uses_up_the_token() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let boot = create(
        &mut fx,
        "boot",
        "hash-boot",
        TokenScope::Bootstrap { uses_left: 2 },
        None,
    );
    let mut request = bootstrap_request("n1", "hash-n1");
    request.agent_address = Some("10.0.0.1:7070".into());
    let first = created_node(&register_as_bootstrap(&mut fx, boot, request).unwrap());
    assert_eq!(node_token_name("n1"), "node:n1");
    let token: &Token = fx.state.token("node:n1").expect("the node's credential");
    assert_eq!(token.scope, TokenScope::Node(first));
    assert_eq!(token.scope.principal(), Principal::Node(first));
    assert_eq!(token.expires_at_ms, None);
    assert_eq!(fx.state.token_by_hash("hash-n1").unwrap().name, "node:n1");
    assert_eq!(
        fx.state.token("boot").unwrap().scope,
        TokenScope::Bootstrap { uses_left: 1 }
    );
    assert_eq!(
        fx.node(first).agent_address.as_deref(),
        Some("10.0.0.1:7070")
    );
    // The node works under its own credential.
    let n1 = credential_of(&fx, "node:n1");
    accepted(
        &mut fx,
        Principal::Node(first),
        n1,
        set_address(first, "10.0.0.1:7071"),
    );
    // The second use removes the bootstrap token.
    let applied = register_as_bootstrap(&mut fx, boot, bootstrap_request("n2", "hash-n2")).unwrap();
    let second = created_node(&applied);
    assert!(events(&applied).contains(&Event::TokenRevoked {
        name: "boot".into()
    }));
    assert!(fx.state.token("boot").is_none());
    assert!(fx.state.token_by_hash("hash-boot").is_none());
    assert_eq!(
        fx.state.token("node:n2").unwrap().scope,
        TokenScope::Node(second)
    );
    // A third registration under it is refused.
    let rejection =
        register_as_bootstrap(&mut fx, boot, bootstrap_request("n3", "hash-n3")).unwrap_err();
    expect_unauthenticated(&rejection);
    assert!(fx.state.node_by_name("n3").is_none());
    // A node's credential does not stand for another node.
    refused_unauthenticated(
        &mut fx,
        Principal::Node(second),
        n1,
        set_address(second, "h:1"),
    );
}

#[test]
fn a_bootstrap_registration_needs_its_token_and_a_credential_hash() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let boot = create(
        &mut fx,
        "boot",
        "hash-boot",
        TokenScope::Bootstrap { uses_left: 5 },
        None,
    );
    // No credential to install.
    let rejection =
        register_as_bootstrap(&mut fx, boot, node_request("n1", GPU, ZONE)).unwrap_err();
    expect_invalid(&rejection, "credential_hash");
    // No bootstrap token named.
    let rejection = fx.reject(
        Principal::Bootstrap,
        Command::NodeRegister(bootstrap_request("n1", "hash-n1")),
    );
    expect_unauthenticated(&rejection);
    // A hash some token has already.
    let rejection =
        register_as_bootstrap(&mut fx, boot, bootstrap_request("n1", "hash-boot")).unwrap_err();
    expect_invalid(&rejection, "hash");
    // Another kind of token does not bootstrap.
    let root = create(
        &mut fx,
        "root",
        "hash-root",
        TokenScope::PlatformAdmin,
        None,
    );
    let rejection =
        register_as_bootstrap(&mut fx, root, bootstrap_request("n1", "hash-n1")).unwrap_err();
    expect_unauthenticated(&rejection);
    // A bootstrap token registers and does nothing else.
    let rejection = fx
        .apply_with(
            Principal::Bootstrap,
            boot,
            Command::FlavorDefine(cpu_flavor()),
        )
        .unwrap_err();
    expect_denied(&rejection);
    assert!(fx.state.node_by_name("n1").is_none());
    assert_eq!(
        fx.state.token("boot").unwrap().scope,
        TokenScope::Bootstrap { uses_left: 5 },
        "refused registrations used the token up"
    );
    // It expires after an hour by default.
    let created = fx.state.token("boot").unwrap().created_at_ms;
    fx.set_clock(created + DEFAULT_BOOTSTRAP_TTL_MS - 1);
    register_as_bootstrap(&mut fx, boot, bootstrap_request("n1", "hash-n1")).unwrap();
    let rejection =
        register_as_bootstrap(&mut fx, boot, bootstrap_request("n2", "hash-n2")).unwrap_err();
    expect_unauthenticated(&rejection);
    assert!(fx.state.node_by_name("n2").is_none());
}

#[test]
fn the_platform_admin_may_register_with_or_without_a_credential() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let plain = fx.register_node(node_request("plain", GPU, ZONE));
    assert!(fx.state.token("node:plain").is_none());
    let applied = fx.admin(Command::NodeRegister(bootstrap_request("keyed", "hash-k")));
    let keyed = created_node(&applied);
    assert_eq!(
        fx.state.token("node:keyed").unwrap().scope,
        TokenScope::Node(keyed)
    );
    assert_ne!(plain, keyed);
}

#[test]
fn a_rebind_by_a_new_bootstrap_replaces_the_nodes_credential() {
    let mut w = World::new();
    let first_boot = create(
        &mut w,
        "boot-1",
        "hash-boot-1",
        TokenScope::Bootstrap { uses_left: 1 },
        None,
    );
    let mut request = bootstrap_request("replaced", "hash-old");
    request.agent_address = Some("10.0.0.1:7070".into());
    let node = created_node(&register_as_bootstrap(&mut w, first_boot, request).unwrap());
    let old = credential_of(&w, "node:replaced");
    accepted(
        &mut w,
        Principal::Node(node),
        old,
        set_address(node, "10.0.0.1:7071"),
    );
    // The admin cordons it (the rebind must keep what the node is).
    w.admin(Command::NodeCordon { node });
    assert!(!w.node(node).schedulable);
    // Registering the name again without a credential is still a taken name.
    let rejection = w.reject(
        Principal::PlatformAdmin,
        Command::NodeRegister(node_request("replaced", GPU, ZONE)),
    );
    expect_exists(&rejection, "node");
    let second_boot = create(
        &mut w,
        "boot-2",
        "hash-boot-2",
        TokenScope::Bootstrap { uses_left: 1 },
        None,
    );
    // While the node is live with its own credential, no bootstrap token (perhaps one
    // shared by many machines) takes it over, and the refusal uses nothing up.
    let rejection = register_as_bootstrap(
        &mut w,
        second_boot,
        bootstrap_request("replaced", "hash-new"),
    )
    .unwrap_err();
    expect_state(
        &rejection,
        "node",
        "live with its own credential",
        "re-bootstrap",
    );
    assert_eq!(
        w.state.token("boot-2").unwrap().scope,
        TokenScope::Bootstrap { uses_left: 1 }
    );
    accepted(
        &mut w,
        Principal::Node(node),
        old,
        set_address(node, "10.0.0.1:7072"),
    );
    // The machine is lost; its replacement, bootstrapped again, becomes the node.
    w.system(Command::NodeLost { node });
    let mut request = bootstrap_request("replaced", "hash-new");
    request.agent_address = Some("10.0.0.2:7070".into());
    let applied = register_as_bootstrap(&mut w, second_boot, request).unwrap();
    assert_eq!(created_node(&applied), node, "a rebind keeps the node's id");
    assert!(events(&applied).contains(&Event::NodeAttributesChanged { node }));
    assert!(w.state.token_by_hash("hash-old").is_none());
    assert_eq!(
        w.state.token_by_hash("hash-new").unwrap().scope,
        TokenScope::Node(node)
    );
    assert!(
        w.state.token("boot-2").is_none(),
        "the bootstrap token was used up"
    );
    assert_eq!(w.node(node).agent_address.as_deref(), Some("10.0.0.2:7070"));
    assert!(!w.node(node).schedulable, "a rebind keeps the node's state");
    let new = credential_of(&w, "node:replaced");
    assert_ne!(old.token, new.token);
    // The old machine's credential stops working; the new one works.
    refused_unauthenticated(
        &mut w,
        Principal::Node(node),
        old,
        set_address(node, "10.0.0.1:7073"),
    );
    accepted(
        &mut w,
        Principal::Node(node),
        new,
        set_address(node, "10.0.0.2:7071"),
    );
    // A used-up bootstrap token cannot rebind again.
    let rejection =
        register_as_bootstrap(&mut w, second_boot, bootstrap_request("replaced", "hash-3"))
            .unwrap_err();
    expect_unauthenticated(&rejection);
}

#[test]
fn revoking_a_live_nodes_credential_frees_it_for_a_new_bootstrap() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let boot = create(
        &mut fx,
        "boot",
        "hash-boot",
        TokenScope::Bootstrap { uses_left: 3 },
        None,
    );
    let node = created_node(
        &register_as_bootstrap(&mut fx, boot, bootstrap_request("n1", "hash-1")).unwrap(),
    );
    let old = credential_of(&fx, "node:n1");
    // Not the platform admin either, while the node holds its credential.
    let rejection = fx.reject(
        Principal::PlatformAdmin,
        Command::NodeRegister(bootstrap_request("n1", "hash-2")),
    );
    expect_state(
        &rejection,
        "node",
        "live with its own credential",
        "re-bootstrap",
    );
    fx.admin(revoke("node:n1"));
    assert_eq!(fx.node(node).status, NodeStatus::Available);
    let applied = register_as_bootstrap(&mut fx, boot, bootstrap_request("n1", "hash-2")).unwrap();
    assert_eq!(created_node(&applied), node);
    let new = credential_of(&fx, "node:n1");
    refused_unauthenticated(
        &mut fx,
        Principal::Node(node),
        old,
        set_address(node, "h:1"),
    );
    accepted(
        &mut fx,
        Principal::Node(node),
        new,
        set_address(node, "h:2"),
    );
    assert_eq!(
        fx.state.token("boot").unwrap().scope,
        TokenScope::Bootstrap { uses_left: 1 }
    );
}

#[test]
fn an_expired_tokens_name_may_be_taken_again() {
    let mut w = World::new();
    let (alpha, pool) = (w.alpha, w.alpha_pool);
    let operator = Principal::TenantUser(alpha);
    let scope = tenant_scope(alpha, TenantRole::Operator);
    let created_at = w.clock();
    let old = create(&mut w, "ci", "hash-old", scope.clone(), Some(MINUTE_MS));
    let rejection = w.reject(
        Principal::PlatformAdmin,
        token_create("ci", "hash-new", scope.clone(), None),
    );
    expect_exists(&rejection, "token");
    w.set_clock(created_at + MINUTE_MS);
    let new = create(&mut w, "ci", "hash-new", scope, None);
    assert_ne!(old.token, new.token);
    assert!(w.state.token_by_hash("hash-old").is_none());
    refused_unauthenticated(&mut w, operator.clone(), old, submit_to(pool));
    accepted(&mut w, operator, new, submit_to(pool));
}

#[test]
fn deleting_or_revoking_a_node_removes_its_credential() {
    let mut fx = Fx::new();
    fx.define_catalog();
    let boot = create(
        &mut fx,
        "boot",
        "hash-boot",
        TokenScope::Bootstrap { uses_left: 2 },
        None,
    );
    let gone = created_node(
        &register_as_bootstrap(&mut fx, boot, bootstrap_request("gone", "hash-g")).unwrap(),
    );
    let kept = created_node(
        &register_as_bootstrap(&mut fx, boot, bootstrap_request("kept", "hash-k")).unwrap(),
    );
    let gone_credential = credential_of(&fx, "node:gone");
    let kept_credential = credential_of(&fx, "node:kept");
    let applied = fx.admin(Command::NodeDelete { node: gone });
    assert!(events(&applied).contains(&Event::TokenRevoked {
        name: "node:gone".into()
    }));
    assert!(fx.state.token("node:gone").is_none());
    assert!(fx.state.token_by_hash("hash-g").is_none());
    refused_unauthenticated(
        &mut fx,
        Principal::Node(gone),
        gone_credential,
        set_address(gone, "h:1"),
    );
    // The platform admin may revoke a node's credential; a tenant admin sees none.
    let acme = fx.create_tenant("acme", quota(1), false);
    let acme_admin = create(
        &mut fx,
        "acme-admin",
        "hash-aa",
        tenant_scope(acme, TenantRole::Admin),
        None,
    );
    let rejection = fx
        .apply_with(
            Principal::TenantAdmin(acme),
            acme_admin,
            revoke("node:kept"),
        )
        .unwrap_err();
    expect_not_found(&rejection, "token");
    accepted(
        &mut fx,
        Principal::Node(kept),
        kept_credential,
        set_address(kept, "h:1"),
    );
    fx.admin(revoke("node:kept"));
    assert!(fx.state.token_by_hash("hash-k").is_none());
    refused_unauthenticated(
        &mut fx,
        Principal::Node(kept),
        kept_credential,
        set_address(kept, "h:2"),
    );
    assert!(
        fx.state.node(kept).is_some(),
        "revoking the credential keeps the node"
    );
}

// Token indexes

#[test]
fn token_indexes_follow_every_change() {
    let mut fx = Fx::new();
    let acme = fx.create_tenant("acme", quota(1), false);
    let other = fx.create_tenant("other", quota(1), false);
    create(
        &mut fx,
        "a",
        "h-a",
        tenant_scope(acme, TenantRole::Operator),
        None,
    );
    create(
        &mut fx,
        "b",
        "h-b",
        tenant_scope(acme, TenantRole::Admin),
        None,
    );
    create(
        &mut fx,
        "c",
        "h-c",
        tenant_scope(other, TenantRole::Viewer),
        None,
    );
    fx.admin(rotate("a", "h-a2", HOUR_MS));
    fx.admin(rotate("b", "h-b2", 0));
    let found = |fx: &Fx, hash: &str| fx.state.token_by_hash(hash).map(|token| token.name.clone());
    assert_eq!(found(&fx, "h-a"), Some("a".into()));
    assert_eq!(found(&fx, "h-a2"), Some("a".into()));
    assert_eq!(found(&fx, "h-b"), None);
    assert_eq!(found(&fx, "h-b2"), Some("b".into()));
    // A rotated-out secret's hash may not be taken by another token while indexed.
    expect_invalid(
        &fx.reject(
            Principal::PlatformAdmin,
            token_create("d", "h-a", tenant_scope(other, TenantRole::Operator), None),
        ),
        "hash",
    );
    // A freed hash may be used again.
    create(
        &mut fx,
        "d",
        "h-b",
        tenant_scope(other, TenantRole::Operator),
        None,
    );
    // Deleting a tenant drops its tokens and every secret of theirs.
    let applied = fx.admin(Command::TenantDelete { tenant: acme });
    assert_eq!(
        events(&applied)
            .into_iter()
            .filter(|event| matches!(event, Event::TokenRevoked { .. }))
            .count(),
        2
    );
    for hash in ["h-a", "h-a2", "h-b2"] {
        assert_eq!(found(&fx, hash), None, "{hash}");
    }
    assert_eq!(found(&fx, "h-c"), Some("c".into()));
    assert_eq!(found(&fx, "h-b"), Some("d".into()));
    let ids: Vec<_> = fx.state.tokens().map(|token| token.id).collect();
    for id in ids {
        assert!(fx.state.token_by_id(id).is_some());
    }
    let bytes = fx.state.encode_snapshot();
    let restored = State::decode_snapshot(&bytes).unwrap();
    restored.check_invariants().unwrap();
    assert_eq!(restored.token_by_hash("h-c").unwrap().name, "c");
}
