//! Deduplication of client requests. A client (or a replica forwarding for one) may
//! retry a write whose outcome it does not know — the leader died mid-call, a timeout —
//! under the same request id. The state machine remembers the outcome of the most
//! recent requests per principal, and a repeat gets the first outcome back without
//! changing anything, so a retried submit never creates a second job.
//!
//! A request id names one command: the record keeps a fingerprint of it, and the same
//! id with a different command (a client bug, or two clients sharing an id sequence) is
//! refused rather than answered with another command's outcome.

use crate::state::State;
use crate::Applied;
use crate::Created;
use corral_model::{Command, Entry, Principal, Rejection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Requests remembered; older ones are forgotten first. Bounds memory; a retry arrives
/// within seconds, long before this many newer requests.
pub const MAX_REMEMBERED_REQUESTS: usize = 100_000;

/// A client-chosen id of one logical write, the same on every retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u128);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub index: u64,
    /// The command's fingerprint: a repeat must carry the same command.
    pub command_fingerprint: u128,
    pub outcome: Result<Option<Created>, Rejection>,
}

/// The first 128 bits of the SHA-256 of the command's bincode encoding (deterministic:
/// commands hold no hash maps). 128 bits make an accidental match impossible in
/// practice and encode as one integer in every snapshot (all 256 did not pay for
/// themselves: the records are a good part of a snapshot).
fn command_fingerprint(command: &Command) -> u128 {
    let bytes = bincode::serde::encode_to_vec(command, crate::snapshot::config())
        .expect("a command encodes");
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

fn reused_request_id(request: RequestId) -> Rejection {
    Rejection::invalid(
        "request id",
        format!(
            "{:032x} was already used for a different command; a retry must repeat the same command, a new command needs a new id",
            request.0
        ),
    )
}

impl State {
    /// `apply`, but a request id seen before (for the same principal) returns the first
    /// outcome and changes nothing but the applied index; with a different command it
    /// is refused (and changes nothing but the applied index).
    pub fn apply_request(
        &mut self,
        entry: &Entry,
        request: Option<RequestId>,
    ) -> Result<Applied, Rejection> {
        assert!(
            entry.index > self.applied_index,
            "entries must be applied in log order: {} after {}",
            entry.index,
            self.applied_index
        );
        self.apply_request_within_entry(entry, request)
    }

    /// `apply_request` for one of several writes that share a log entry: a repeat may
    /// come from the same entry (a retry batched with its first attempt) and gets the
    /// first attempt's outcome like any other repeat.
    pub(crate) fn apply_request_within_entry(
        &mut self,
        entry: &Entry,
        request: Option<RequestId>,
    ) -> Result<Applied, Rejection> {
        let Some(request) = request else {
            return self.apply_within_entry(entry);
        };
        let key = (entry.principal.clone(), request);
        let fingerprint = command_fingerprint(&entry.command);
        if let Some(record) = self.applied_requests.get(&key) {
            assert!(
                entry.index >= self.applied_index,
                "entries must be applied in log order"
            );
            assert!(
                record.index <= entry.index,
                "a remembered request comes from this entry or an earlier one"
            );
            self.applied_index = entry.index;
            if record.command_fingerprint != fingerprint {
                return Err(reused_request_id(request));
            }
            return record.outcome.clone().map(|created| Applied {
                events: Vec::new(),
                created,
            });
        }
        let result = self.apply_within_entry(entry);
        let outcome = result
            .as_ref()
            .map(|applied| applied.created)
            .map_err(Clone::clone);
        self.applied_requests.insert(
            key.clone(),
            RequestRecord {
                index: entry.index,
                command_fingerprint: fingerprint,
                outcome,
            },
        );
        self.request_order.push_back(key);
        while self.request_order.len() > MAX_REMEMBERED_REQUESTS {
            if let Some(oldest) = self.request_order.pop_front() {
                self.applied_requests.remove(&oldest);
            }
        }
        result
    }

    /// The outcome of a remembered request, if any.
    pub fn remembered_request(
        &self,
        principal: &Principal,
        request: RequestId,
    ) -> Option<Result<Option<Created>, Rejection>> {
        self.applied_requests
            .get(&(principal.clone(), request))
            .map(|record| record.outcome.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{Command, Resources};

    fn entry(index: u64, name: &str) -> Entry {
        Entry {
            index,
            at_ms: index,
            principal: Principal::PlatformAdmin,
            command: Command::TenantCreate {
                name: name.into(),
                quota: Resources::ZERO,
                may_use_high_priority: false,
            },
        }
    }

    #[test]
    fn a_repeated_request_returns_the_first_outcome_and_changes_nothing() {
        let mut state = State::new();
        let first = state
            .apply_request(&entry(1, "alpha"), Some(RequestId(7)))
            .unwrap();
        let before = state.content_digest();
        let again = state
            .apply_request(&entry(2, "alpha"), Some(RequestId(7)))
            .unwrap();
        assert_eq!(again.created, first.created);
        assert!(again.events.is_empty());
        assert_eq!(state.content_digest(), before);
        assert_eq!(state.tenants().count(), 1);
        // Without the id, the same command is a new request (and is refused as a duplicate name).
        assert!(matches!(
            state.apply_request(&entry(3, "alpha"), Some(RequestId(8))),
            Err(Rejection::AlreadyExists { .. })
        ));
        // A remembered rejection is returned again.
        assert!(matches!(
            state.apply_request(&entry(4, "alpha"), Some(RequestId(8))),
            Err(Rejection::AlreadyExists { .. })
        ));
        assert_eq!(state.applied_index(), 4);
    }

    #[test]
    fn a_request_id_reused_for_another_command_is_refused_and_changes_nothing() {
        let mut state = State::new();
        let first = state
            .apply_request(&entry(1, "alpha"), Some(RequestId(7)))
            .unwrap();
        let before = state.content_digest();
        let refused = state.apply_request(&entry(2, "beta"), Some(RequestId(7)));
        match refused {
            Err(Rejection::InvalidArgument { field, reason }) => {
                assert_eq!(field, "request id");
                assert!(reason.contains("different command"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            state.content_digest(),
            before,
            "the refusal changed the state"
        );
        assert_eq!(state.tenants().count(), 1, "beta was created");
        assert_eq!(state.applied_index(), 2);
        // The original command under its id still gets its first outcome.
        let again = state
            .apply_request(&entry(3, "alpha"), Some(RequestId(7)))
            .unwrap();
        assert_eq!(again.created, first.created);
        // Another principal's id space is separate: the same id is a new request there.
        let other_principal = Entry {
            principal: Principal::System,
            command: Command::MeterTick,
            ..entry(4, "x")
        };
        assert!(state
            .apply_request(&other_principal, Some(RequestId(7)))
            .is_ok());
    }

    #[test]
    fn old_requests_are_forgotten_beyond_the_bound() {
        let mut state = State::new();
        for index in 1..=(MAX_REMEMBERED_REQUESTS as u64 + 1) {
            let command_entry = Entry {
                command: Command::MeterTick,
                principal: Principal::System,
                ..entry(index, "x")
            };
            let _ = state.apply_request(&command_entry, Some(RequestId(u128::from(index))));
        }
        assert!(state
            .remembered_request(&Principal::System, RequestId(1))
            .is_none());
        assert!(state
            .remembered_request(&Principal::System, RequestId(2))
            .is_some());
    }
}
