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
use corral_model::limits::{MAX_REMEMBERED_REQUESTS, MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL};
use corral_model::{Command, Entry, Principal, Rejection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A client-chosen id of one logical write, the same on every retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u128);

/// The remembered requests, kept per principal so that one principal's writes can never
/// make the state forget another's: each principal keeps at most
/// `MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL`, oldest forgotten first, and when all together
/// pass `MAX_REMEMBERED_REQUESTS` the principal that holds the most gives up its oldest.
/// A principal that floods therefore only ever evicts its own records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestLedger {
    pub(crate) records: BTreeMap<(Principal, RequestId), RequestRecord>,
    /// Each principal's request ids, oldest first.
    order: BTreeMap<Principal, VecDeque<RequestId>>,
    /// (records held, principal) for every principal in `order`: the largest is last.
    holdings: BTreeSet<(usize, Principal)>,
}

impl RequestLedger {
    fn get(&self, principal: &Principal, request: RequestId) -> Option<&RequestRecord> {
        self.records.get(&(principal.clone(), request))
    }

    /// Records `request`'s outcome (which must be new) and forgets what the bounds ask.
    fn remember(&mut self, principal: &Principal, request: RequestId, record: RequestRecord) {
        let previous = self.records.insert((principal.clone(), request), record);
        assert!(previous.is_none(), "a request is remembered once");
        let order = self.order.entry(principal.clone()).or_default();
        let held_before = order.len();
        order.push_back(request);
        self.holdings.remove(&(held_before, principal.clone()));
        self.holdings.insert((held_before + 1, principal.clone()));
        if held_before + 1 > MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL {
            self.forget_oldest(principal);
        }
        while self.records.len() > MAX_REMEMBERED_REQUESTS {
            let Some((_, largest)) = self.holdings.last().cloned() else {
                break;
            };
            self.forget_oldest(&largest);
        }
        debug_assert_eq!(
            self.records.len(),
            self.holdings.iter().map(|(held, _)| held).sum::<usize>()
        );
    }

    fn forget_oldest(&mut self, principal: &Principal) {
        let Some(order) = self.order.get_mut(principal) else {
            return;
        };
        let held_before = order.len();
        let Some(oldest) = order.pop_front() else {
            return;
        };
        self.records.remove(&(principal.clone(), oldest));
        self.holdings.remove(&(held_before, principal.clone()));
        if order.is_empty() {
            self.order.remove(principal);
        } else {
            self.holdings.insert((held_before - 1, principal.clone()));
        }
    }

    /// How many requests of `principal` are remembered.
    #[cfg(test)]
    pub(crate) fn held_by(&self, principal: &Principal) -> usize {
        self.order.get(principal).map_or(0, VecDeque::len)
    }

    /// Every record, for digests that zero their indexes.
    pub(crate) fn records_mut(&mut self) -> impl Iterator<Item = &mut RequestRecord> {
        self.records.values_mut()
    }
}

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
            return self.apply_audited(entry, None);
        };
        let fingerprint = command_fingerprint(&entry.command);
        if let Some(record) = self.requests.get(&entry.principal, request) {
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
                let rejection = reused_request_id(request);
                self.audit_refusal(entry, request, &rejection);
                return Err(rejection);
            }
            // A retry is not a new write: its first attempt's record stands.
            return record.outcome.clone().map(|created| Applied {
                events: Vec::new(),
                created,
            });
        }
        let result = self.apply_audited(entry, Some(request));
        let outcome = result
            .as_ref()
            .map(|applied| applied.created)
            .map_err(Clone::clone);
        self.requests.remember(
            &entry.principal,
            request,
            RequestRecord {
                index: entry.index,
                command_fingerprint: fingerprint,
                outcome,
            },
        );
        result
    }

    /// The outcome of a remembered request, if any.
    pub fn remembered_request(
        &self,
        principal: &Principal,
        request: RequestId,
    ) -> Option<Result<Option<Created>, Rejection>> {
        self.requests
            .get(principal, request)
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
            credential: None,
            command: Command::TenantCreate {
                name: name.into(),
                quota: Resources::ZERO,
                may_use_high_priority: false,
                max_active_jobs: None,
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

    fn tick(index: u64, principal: Principal) -> Entry {
        Entry {
            command: Command::MeterTick,
            principal,
            ..entry(index, "x")
        }
    }

    #[test]
    fn a_principal_keeps_at_most_its_bound_oldest_forgotten_first() {
        let mut state = State::new();
        let bound = MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL as u64;
        for index in 1..=bound + 1 {
            let _ = state.apply_request(
                &tick(index, Principal::System),
                Some(RequestId(u128::from(index))),
            );
        }
        assert!(state
            .remembered_request(&Principal::System, RequestId(1))
            .is_none());
        assert!(state
            .remembered_request(&Principal::System, RequestId(2))
            .is_some());
        assert_eq!(
            state.requests.held_by(&Principal::System),
            MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL
        );
    }

    #[test]
    fn one_principal_flooding_never_evicts_another_principals_requests() {
        let mut state = State::new();
        // A quiet principal's one request, then enough principals each at their own bound
        // to pass the global bound: the flooders give up their own oldest records.
        // (A refusal is remembered like any outcome; a node may not tick.)
        let quiet = Principal::Node(corral_model::ids::NodeId(1));
        let _ = state.apply_request(&tick(1, quiet.clone()), Some(RequestId(1)));
        let per = MAX_REMEMBERED_REQUESTS_PER_PRINCIPAL as u64;
        let flooders = (MAX_REMEMBERED_REQUESTS as u64 / per) + 2;
        let mut index = 1;
        for tenant in 1..=flooders {
            let principal = Principal::TenantUser(corral_model::ids::TenantId(tenant));
            for request in 1..=per {
                index += 1;
                let _ = state.apply_request(
                    &tick(index, principal.clone()),
                    Some(RequestId(u128::from(request))),
                );
            }
        }
        assert!(
            state.remembered_request(&quiet, RequestId(1)).is_some(),
            "the quiet principal's request was evicted by others"
        );
        assert!(state.requests.records.len() <= MAX_REMEMBERED_REQUESTS);
        // The latest flooder's newest request is still there.
        let last = Principal::TenantUser(corral_model::ids::TenantId(flooders));
        assert!(state
            .remembered_request(&last, RequestId(u128::from(per)))
            .is_some());
    }
}
