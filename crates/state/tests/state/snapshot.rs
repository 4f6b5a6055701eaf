//! Snapshots and digests: encode/decode round trip, the format version byte, corrupt
//! input refused without panicking, and digests that depend only on the entries applied.

use corral_model::limits::HOUR_MS;
use corral_model::{Command, Principal};
use corral_state::testing::*;
use corral_state::{SnapshotError, State, SNAPSHOT_FORMAT_VERSION};
use sha2::Digest;

/// A world with something of everything: running and queued jobs, a workflow, bills,
/// meters, an auto-renewing prepaid pool, tokens and events.
fn busy_world() -> World {
    let mut w = World::new();
    let (alpha, beta, public, pool, net) = (w.alpha, w.beta, w.public, w.alpha_pool, w.beta_net);
    let (alpha_gpus, public_gpus) = (w.alpha_gpus.clone(), w.public_gpus.clone());
    w.admin(Command::TokenCreate {
        name: "alpha-ci".into(),
        hash: "h1".into(),
        scope: corral_model::TokenScope::Tenant {
            tenant: alpha,
            role: corral_model::TenantRole::Operator,
        },
        ttl_ms: None,
    });
    w.create_dedicated_pool(beta, "beta-prepaid", net, &[(GPU, 1)], prepaid(1, true));
    let gang = w.submit(alpha, training(pool, 2, 4));
    w.place_on(gang, &alpha_gpus);
    w.start_all(gang);
    w.submit(alpha, training(pool, 1, 8));
    let service = w.submit(beta, inference(public, 2, 1));
    w.place_on(service, &public_gpus);
    w.started(service, 0);
    w.submit(
        alpha,
        workflow(public, vec![step("a", &[], training(public, 1, 1))]),
    );
    w.advance(HOUR_MS);
    w.tick();
    w
}

#[test]
fn a_snapshot_decodes_to_the_same_state_and_digest() {
    let w = busy_world();
    let bytes = w.state.encode_snapshot();
    assert_eq!(bytes[0], SNAPSHOT_FORMAT_VERSION);
    let restored = State::decode_snapshot(&bytes).expect("decodes");
    assert_eq!(restored, w.state);
    assert_eq!(restored.digest(), w.state.digest());
    assert_eq!(restored.encode_snapshot(), bytes);
    restored.check_invariants().unwrap();
    assert_eq!(restored.applied_index(), w.state.applied_index());
    assert_eq!(restored.now_ms(), w.state.now_ms());
}

#[test]
fn the_digest_is_the_sha256_of_the_snapshot_bytes() {
    // Enough jobs that the encoding is many times the digest's hashing buffer.
    let mut w = busy_world();
    let (alpha, public) = (w.alpha, w.public);
    for _ in 0..9_000 {
        w.bulk(
            Principal::TenantUser(alpha),
            Command::JobSubmit(training(public, 1, 1)),
        );
    }
    w.check();
    let bytes = w.state.encode_snapshot();
    let restored = State::decode_snapshot(&bytes).expect("decodes");
    assert_eq!(restored, w.state);
    assert_eq!(restored.encode_snapshot(), bytes);
    let hashed: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    assert_eq!(
        w.state.digest(),
        hashed,
        "the digest is the SHA-256 of the bytes"
    );
    assert_eq!(restored.digest(), hashed);
    restored.check_invariants().unwrap();
}

#[test]
fn a_restored_state_applies_further_entries_like_the_original() {
    let mut original = busy_world();
    let mut restored = State::decode_snapshot(&original.state.encode_snapshot()).unwrap();
    // Continue both with the same entries at the same indexes and times, a rejected one
    // among them.
    let (alpha, pool) = (original.alpha, original.alpha_pool);
    let entries = vec![
        (
            Principal::TenantUser(alpha),
            Command::JobSubmit(training(pool, 1, 1)),
        ),
        (Principal::System, Command::MeterTick),
        (Principal::PlatformAdmin, Command::MeterTick),
        (
            Principal::System,
            Command::NodeLost {
                node: original.alpha_gpus[0],
            },
        ),
    ];
    for (principal, command) in entries {
        let index = original.next_index();
        let at = original.clock();
        let entry = corral_model::Entry {
            index,
            at_ms: at,
            principal: principal.clone(),
            credential: None,
            command: command.clone(),
        };
        let left = original.apply(principal, command);
        let right = restored.apply(&entry);
        assert_eq!(left, right);
        assert_eq!(original.state.digest(), restored.digest());
    }
}

#[test]
fn the_same_entries_give_the_same_digest() {
    let first = busy_world();
    let second = busy_world();
    assert_eq!(first.state.digest(), second.state.digest());
    assert_eq!(first.state.digest_hex(), second.state.digest_hex());
    let hex = first.state.digest_hex();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let expected: String = first
        .state
        .digest()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(hex, expected);
    assert_ne!(State::new().digest(), first.state.digest());
}

#[test]
fn a_rejected_entry_changes_the_digest_only_through_the_applied_index() {
    let mut w = World::new();
    let digest = w.state.digest();
    let content = w.state.content_digest();
    let (alpha, user) = (w.alpha, w.alpha_user());
    w.reject(user, Command::TenantDelete { tenant: alpha });
    assert_ne!(w.state.digest(), digest);
    assert_eq!(w.state.content_digest(), content);
}

#[test]
fn a_snapshot_of_another_format_version_is_refused() {
    let w = busy_world();
    let mut bytes = w.state.encode_snapshot();
    for version in [0, SNAPSHOT_FORMAT_VERSION + 1, 255] {
        bytes[0] = version;
        assert_eq!(
            State::decode_snapshot(&bytes),
            Err(SnapshotError::UnknownVersion(version))
        );
    }
}

#[test]
fn empty_truncated_padded_or_garbage_snapshots_are_refused() {
    let w = busy_world();
    let bytes = w.state.encode_snapshot();
    assert_eq!(State::decode_snapshot(&[]), Err(SnapshotError::Empty));
    assert!(matches!(
        State::decode_snapshot(&bytes[..bytes.len() / 2]),
        Err(SnapshotError::Corrupt(_))
    ));
    assert!(matches!(
        State::decode_snapshot(&[SNAPSHOT_FORMAT_VERSION]),
        Err(SnapshotError::Corrupt(_))
    ));
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        State::decode_snapshot(&padded),
        Err(SnapshotError::TrailingBytes(3))
    );
    // A length prefix claiming an enormous collection is refused, not allocated.
    let mut garbage = vec![SNAPSHOT_FORMAT_VERSION];
    garbage.extend_from_slice(&[0xFF; 64]);
    assert!(State::decode_snapshot(&garbage).is_err());
    let errors = [
        SnapshotError::Empty,
        SnapshotError::UnknownVersion(9),
        SnapshotError::Corrupt("x".into()),
        SnapshotError::TrailingBytes(1),
    ];
    for error in errors {
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn the_empty_state_round_trips() {
    let state = State::new();
    let restored = State::decode_snapshot(&state.encode_snapshot()).unwrap();
    assert_eq!(restored, state);
    restored.check_invariants().unwrap();
}

#[test]
fn the_entry_digest_follows_what_the_latest_entry_did() {
    let mut first = busy_world();
    let mut second = busy_world();
    assert_eq!(first.state.entry_digest(), second.state.entry_digest());
    let restored = State::decode_snapshot(&first.state.encode_snapshot()).expect("decodes");
    assert_eq!(restored.entry_digest(), first.state.entry_digest());

    // The same index, different work: a submit into another pool records other events.
    let (alpha, public, pool) = (first.alpha, first.public, first.alpha_pool);
    first.submit(alpha, training(public, 1, 1));
    second.submit(alpha, training(pool, 1, 1));
    assert_eq!(first.state.applied_index(), second.state.applied_index());
    assert_ne!(first.state.entry_digest(), second.state.entry_digest());

    // The same work at the next index: the index alone tells them apart.
    let before = first.state.entry_digest();
    first.submit(alpha, training(public, 1, 1));
    assert_ne!(first.state.entry_digest(), before);
}
