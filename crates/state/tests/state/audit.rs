//! The audit trail (issue 15): every write a principal made is recorded with its
//! principal, token name, request id, time, target and outcome; refused writes with
//! the reason; bounded by count and age; readable by the platform admin and auditor in
//! full and by a tenant for its own tenant only.

use corral_model::ids::{JobId, NodeId, TenantId};
use corral_model::limits::{DAY_MS, MAX_AUDIT_AGE_MS, MAX_AUDIT_RECORDS};
use corral_model::{
    AuditOutcome, AuditRecord, Command, Credential, Principal, TenantRole, TokenScope,
};
use corral_state::testing::*;
use corral_state::{AuditFilter, RequestId, State, Write};

fn records(state: &State) -> Vec<AuditRecord> {
    state.audit_records().cloned().collect()
}

fn last(state: &State) -> AuditRecord {
    state.audit_records().last().cloned().expect("a record")
}

fn operator_token(world: &mut World, tenant: TenantId, name: &str) -> Credential {
    world.admin(Command::TokenCreate {
        name: name.into(),
        hash: format!("hash-{name}"),
        scope: TokenScope::Tenant {
            tenant,
            role: TenantRole::Operator,
        },
        ttl_ms: None,
    });
    let token = world.state.token(name).expect("created");
    Credential {
        token: token.id,
        generation: token.generation,
    }
}

fn seen_by(state: &State, reader: &Principal) -> Vec<AuditRecord> {
    state
        .list_audit(reader, &AuditFilter::default(), 10_000)
        .records
}

#[test]
fn an_applied_write_is_recorded_with_its_principal_token_request_target_and_time() {
    let mut world = World::new();
    let alpha = world.alpha;
    let public = world.public;
    let credential = operator_token(&mut world, alpha, "alpha-ci");
    let index = world.next_index();
    let at_ms = world.clock();
    let results = world.state.apply_batch(
        index,
        at_ms,
        vec![Write {
            principal: Principal::TenantUser(alpha),
            credential: Some(credential),
            command: Command::JobSubmit(training(public, 1, 1)),
            request_id: Some(RequestId(0xabc)),
        }],
    );
    let created = results[0].as_ref().expect("accepted").created;
    let Some(corral_state::Created::Job(job)) = created else {
        panic!("created {created:?}");
    };
    let record = last(&world.state);
    assert_eq!(record.index, index);
    assert_eq!(record.at_ms, at_ms);
    assert_eq!(record.principal, Principal::TenantUser(alpha));
    assert_eq!(record.token.as_deref(), Some("alpha-ci"));
    assert_eq!(record.request_id, Some(0xabc));
    assert_eq!(record.kind, "job_submit");
    assert_eq!(record.target, job.to_string());
    assert_eq!(record.tenant, Some(alpha));
    assert_eq!(record.outcome, AuditOutcome::Applied);
    // The events of the write name who caused them.
    assert!(world
        .state
        .events()
        .filter(|event| event.index == index)
        .all(|event| event.principal == Principal::TenantUser(alpha)));
}

#[test]
fn a_refused_write_is_recorded_with_the_reason_and_changes_no_object() {
    let mut world = World::new();
    let alpha = world.alpha;
    let beta = world.beta;
    let public = world.public;
    let job = world.submit(alpha, training(public, 1, 1));
    let before = world.state.objects_digest();
    // Beta may not touch alpha's job: NotFound, recorded under beta's tenant.
    world.reject(Principal::TenantUser(beta), Command::JobTerminate { job });
    assert_eq!(world.state.objects_digest(), before);
    let record = last(&world.state);
    assert_eq!(record.principal, Principal::TenantUser(beta));
    assert_eq!(record.kind, "job_terminate");
    assert_eq!(record.target, job.to_string());
    assert_eq!(
        record.tenant,
        Some(beta),
        "a refused probe belongs to the prober, never to the target's owner"
    );
    match &record.outcome {
        AuditOutcome::Refused { reason } => assert!(reason.contains("not found"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Alpha does not learn of beta's probe; beta sees its own refusal.
    assert!(!seen_by(&world.state, &Principal::TenantUser(alpha))
        .iter()
        .any(|record| record.principal == Principal::TenantUser(beta)));
    assert_eq!(
        seen_by(&world.state, &Principal::TenantViewer(beta))
            .last()
            .map(|record| record.kind.clone()),
        Some("job_terminate".to_string())
    );
    // A job refused at submission is named by its name.
    let mut too_big = training(public, 1, 1);
    too_big.name = "too-big".into();
    too_big.replicas = 100;
    world.reject(Principal::TenantUser(alpha), Command::JobSubmit(too_big));
    assert_eq!(last(&world.state).target, "job:too-big");
}

#[test]
fn tenants_see_their_own_records_and_the_platform_sees_all() {
    let mut world = World::new();
    let (alpha, beta, public) = (world.alpha, world.beta, world.public);
    let alpha_job = world.submit(alpha, training(public, 1, 1));
    let beta_job = world.submit(beta, training(public, 1, 1));
    // The platform admin's write on alpha's job belongs to alpha too.
    world.admin(Command::JobTerminate { job: alpha_job });
    let alpha_sees = seen_by(&world.state, &Principal::TenantAdmin(alpha));
    assert!(alpha_sees.iter().all(|record| record.tenant == Some(alpha)));
    assert!(alpha_sees
        .iter()
        .any(|record| record.principal == Principal::PlatformAdmin
            && record.target == alpha_job.to_string()));
    assert!(!alpha_sees
        .iter()
        .any(|record| record.target == beta_job.to_string()));
    let beta_sees = seen_by(&world.state, &Principal::TenantUser(beta));
    assert!(beta_sees
        .iter()
        .any(|record| record.target == beta_job.to_string()));
    assert!(beta_sees.iter().all(|record| record.tenant == Some(beta)));
    let everything = records(&world.state).len();
    assert_eq!(
        seen_by(&world.state, &Principal::PlatformAdmin).len(),
        everything
    );
    assert_eq!(
        seen_by(&world.state, &Principal::PlatformAuditor).len(),
        everything
    );
    assert!(seen_by(&world.state, &Principal::Node(NodeId(1))).is_empty());
    assert!(seen_by(&world.state, &Principal::Bootstrap).is_empty());
}

#[test]
fn the_loops_ticks_and_plans_are_not_recorded_but_their_decisions_about_nodes_are() {
    let mut world = World::new();
    let before = records(&world.state).len();
    world.tick();
    world.tick();
    assert_eq!(records(&world.state).len(), before, "ticks were recorded");
    let node = world.public_gpus[0];
    world.system(Command::NodeLost { node });
    let record = last(&world.state);
    assert_eq!(
        (record.principal, record.kind.as_str(), record.target),
        (Principal::System, "node_lost", node.to_string())
    );
}

#[test]
fn a_retry_is_not_a_second_record_but_a_reused_request_id_is_recorded_as_refused() {
    let mut world = World::new();
    let alpha = world.alpha;
    let public = world.public;
    let write = |spec| Write {
        principal: Principal::TenantUser(alpha),
        credential: None,
        command: Command::JobSubmit(spec),
        request_id: Some(RequestId(7)),
    };
    let before = records(&world.state).len();
    let index = world.next_index();
    world.state.apply_batch(
        index,
        START_MS * 2,
        vec![write(training(public, 1, 1)), write(training(public, 1, 1))],
    );
    assert_eq!(records(&world.state).len(), before + 1);
    let mut other = training(public, 1, 1);
    other.name = "other".into();
    world
        .state
        .apply_batch(index + 1, START_MS * 2, vec![write(other)]);
    let all = records(&world.state);
    assert_eq!(all.len(), before + 2);
    assert!(matches!(
        &all[all.len() - 1].outcome,
        AuditOutcome::Refused { reason } if reason.contains("request id")
    ));
}

#[test]
fn filters_and_pages_select_records() {
    let mut world = World::new();
    let (alpha, public) = (world.alpha, world.public);
    let jobs: Vec<JobId> = (0..5)
        .map(|_| world.submit(alpha, training(public, 1, 1)))
        .collect();
    let since_ms = world.state.audit_records().last().expect("some").at_ms;
    world.user(alpha, Command::JobTerminate { job: jobs[0] });
    let admin = Principal::PlatformAdmin;
    let by_kind = world.state.list_audit(
        &admin,
        &AuditFilter {
            kind: Some("job_submit".into()),
            ..AuditFilter::default()
        },
        100,
    );
    assert_eq!(by_kind.records.len(), 5);
    let by_object = world.state.list_audit(
        &admin,
        &AuditFilter {
            object: Some(jobs[0].to_string()),
            ..AuditFilter::default()
        },
        100,
    );
    let kinds: Vec<&str> = by_object.records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["job_submit", "job_terminate"]);
    let by_principal = world.state.list_audit(
        &admin,
        &AuditFilter {
            principal: Some(format!("{alpha}/operator")),
            since_ms: Some(since_ms),
            ..AuditFilter::default()
        },
        100,
    );
    assert_eq!(
        by_principal.records.len(),
        2,
        "the last submit and the terminate"
    );
    let until = world.state.list_audit(
        &admin,
        &AuditFilter {
            until_ms: Some(since_ms),
            kind: Some("job_submit".into()),
            ..AuditFilter::default()
        },
        100,
    );
    assert_eq!(until.records.len(), 4);
    // Pages of two, resumed after the last sequence, give the same records in order.
    let filter = AuditFilter {
        kind: Some("job_submit".into()),
        ..AuditFilter::default()
    };
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = world.state.list_audit(
            &admin,
            &AuditFilter {
                after_sequence: after,
                ..filter.clone()
            },
            2,
        );
        paged.extend(page.records);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, by_kind.records);
}

#[test]
fn the_trail_is_bounded_by_count_oldest_first() {
    let mut world = World::new();
    let alpha = world.alpha;
    let mut fx = world.fx.clone().without_checks();
    let first_before = records(&fx.state)[0].clone();
    for _ in 0..MAX_AUDIT_RECORDS + 5 {
        // Refused writes are recorded too: each a NotFound.
        let _ = fx.apply(
            Principal::TenantUser(alpha),
            Command::JobTerminate { job: JobId(999) },
        );
    }
    fx.check();
    let all = records(&fx.state);
    assert_eq!(all.len(), MAX_AUDIT_RECORDS);
    assert!(all[0].sequence > first_before.sequence, "the oldest stayed");
    assert!(all
        .windows(2)
        .all(|pair| pair[1].sequence == pair[0].sequence + 1 && pair[1].index >= pair[0].index));
    world.fx = fx;
}

#[test]
fn the_trail_is_bounded_by_age_by_entry_time() {
    let mut world = World::new();
    let (alpha, public) = (world.alpha, world.public);
    let before = records(&world.state).len();
    assert!(before > 0);
    world.advance(MAX_AUDIT_AGE_MS - DAY_MS);
    let job = world.submit(alpha, training(public, 1, 1));
    // A tick (not itself recorded) past the bound drops what is older.
    world.advance(2 * DAY_MS);
    world.tick();
    let all = records(&world.state);
    assert_eq!(all.len(), 1, "only the recent submit remains");
    assert_eq!(all[0].target, job.to_string());
    world.advance(MAX_AUDIT_AGE_MS);
    world.tick();
    assert!(records(&world.state).is_empty());
}

#[test]
fn the_trail_survives_a_snapshot() {
    let world = World::new();
    let bytes = world.state.encode_snapshot();
    let restored = State::decode_snapshot(&bytes).expect("decodes");
    assert_eq!(records(&restored), records(&world.state));
    assert!(!records(&restored).is_empty());
}

#[test]
fn a_write_under_a_revoked_token_is_recorded_with_the_tokens_id() {
    let mut world = World::new();
    let (alpha, public) = (world.alpha, world.public);
    let credential = operator_token(&mut world, alpha, "alpha-ci");
    world.admin(Command::TokenRevoke {
        name: "alpha-ci".into(),
    });
    let rejection = world
        .apply_with(
            Principal::TenantUser(alpha),
            credential,
            Command::JobSubmit(training(public, 1, 1)),
        )
        .expect_err("a revoked token writes nothing");
    assert!(matches!(
        rejection,
        corral_model::Rejection::Unauthenticated { .. }
    ));
    let record = last(&world.state);
    assert_eq!(record.token, Some(credential.token.to_string()));
    assert!(matches!(
        &record.outcome,
        AuditOutcome::Refused { reason } if reason.contains("revoked")
    ));
}
