//! Log entries that carry several writes. The leader groups the writes that arrive
//! while earlier ones are being committed into one log entry (group commit: one
//! append, one fsync and one replication message for all of them), so a replica
//! applies them together under one index. Each write is applied in order exactly as if
//! it were an entry of its own at that index: it has its own principal, request id and
//! outcome, and a rejected write changes nothing and does not affect the others.

use crate::requests::RequestId;
use crate::state::State;
use crate::Applied;
use corral_model::{Command, Credential, Entry, Principal, Rejection};
use serde::{Deserialize, Serialize};

/// One client write inside a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub principal: Principal,
    /// The token the principal was authenticated with (`Entry::credential`).
    pub credential: Option<Credential>,
    pub command: Command,
    /// The client's id for this write, the same on every retry; a repeat is answered
    /// with the first outcome (`State::apply_request`).
    pub request_id: Option<RequestId>,
}

impl State {
    /// Apply the writes of the log entry at `index`, stamped `at_ms` by the leader, in
    /// order; one outcome per write, in the same order. An entry without writes changes
    /// nothing (like raft's own entries, it leaves a gap in the applied indexes).
    pub fn apply_batch(
        &mut self,
        index: u64,
        at_ms: u64,
        writes: Vec<Write>,
    ) -> Vec<Result<Applied, Rejection>> {
        assert!(
            index > self.applied_index,
            "entries must be applied in log order: {index} after {}",
            self.applied_index
        );
        writes
            .into_iter()
            .map(|write| {
                let entry = Entry {
                    index,
                    at_ms,
                    principal: write.principal,
                    credential: write.credential,
                    command: write.command,
                };
                self.apply_request_within_entry(&entry, write.request_id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{Rejection, Resources};

    fn tenant_create(name: &str, request: u128) -> Write {
        Write {
            principal: Principal::PlatformAdmin,
            credential: None,
            command: Command::TenantCreate {
                name: name.into(),
                quota: Resources::ZERO,
                may_use_high_priority: false,
                max_active_jobs: None,
            },
            request_id: Some(RequestId(request)),
        }
    }

    #[test]
    fn a_rejected_write_leaves_the_others_of_its_entry_applied() {
        let mut state = State::new();
        let results = state.apply_batch(
            5,
            1_000,
            vec![
                tenant_create("alpha", 1),
                tenant_create("alpha", 2),
                tenant_create("beta", 3),
            ],
        );
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(Rejection::AlreadyExists { .. })));
        assert!(results[2].is_ok());
        assert_eq!(state.tenants().count(), 2);
        assert_eq!(state.applied_index(), 5);
        assert!(
            state.events().all(|record| record.index == 5),
            "every event of the entry carries its index"
        );
    }

    #[test]
    fn a_retry_in_the_same_entry_gets_the_first_outcome() {
        let mut state = State::new();
        let results = state.apply_batch(
            1,
            1_000,
            vec![tenant_create("alpha", 1), tenant_create("alpha", 1)],
        );
        let first = results[0].as_ref().expect("the first attempt applies");
        let retry = results[1].as_ref().expect("the retry gets its outcome");
        assert_eq!(retry.created, first.created);
        assert!(retry.events.is_empty(), "the retry changed something");
        assert_eq!(state.tenants().count(), 1);
    }

    #[test]
    fn an_entry_without_writes_changes_nothing() {
        let mut state = State::new();
        let before = state.digest();
        assert!(state.apply_batch(3, 1_000, Vec::new()).is_empty());
        assert_eq!(state.digest(), before);
    }

    #[test]
    #[should_panic(expected = "entries must be applied in log order")]
    fn an_entry_at_an_applied_index_is_refused() {
        let mut state = State::new();
        state.apply_batch(2, 1_000, vec![tenant_create("alpha", 1)]);
        state.apply_batch(2, 1_000, vec![tenant_create("beta", 2)]);
    }

    #[test]
    fn reading_events_never_splits_an_entry() {
        let mut state = State::new();
        let writes = (0..5)
            .map(|number| tenant_create(&format!("tenant-{number}"), number))
            .collect();
        state.apply_batch(1, 1_000, writes);
        state.apply_batch(2, 2_000, vec![tenant_create("later", 9)]);
        let first_entry = state.events().filter(|record| record.index == 1).count();
        assert!(first_entry >= 5, "each tenant creation is an event");
        let read = state
            .events_since(&Principal::PlatformAdmin, 1, 2)
            .expect("retained");
        assert_eq!(
            read.len(),
            first_entry,
            "a limit below the entry's events still returns the whole entry, and no more"
        );
        assert!(read.iter().all(|record| record.index == 1));
    }
}
