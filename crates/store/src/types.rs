//! The types openraft is configured with: the log entry payload (`Proposal`), what
//! applying one entry produced (`ProposalOutcome`), the type config itself, and short
//! aliases for the openraft types that the rest of corral names.

use crate::state_machine::StateMachineStore;
use corral_model::{Command, Principal, Rejection};
use corral_state::Created;
pub use corral_state::Write;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The log entry payload (openraft `D`): one or more client writes that the leader
/// proposed together (`corral_state::apply_batch`). The leader stamps `at_ms` when it
/// proposes: it is the only clock the state machine ever sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub at_ms: u64,
    pub writes: Vec<Write>,
}

impl Proposal {
    /// A proposal of one write without a credential (the system's, or a test's).
    pub fn single(
        at_ms: u64,
        principal: Principal,
        command: Command,
        request_id: Option<corral_state::RequestId>,
    ) -> Proposal {
        Proposal {
            at_ms,
            writes: vec![Write {
                principal,
                credential: None,
                command,
                request_id,
            }],
        }
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.writes.as_slice() {
            [write] => write!(
                formatter,
                "{} by {:?}",
                write.command.name(),
                write.principal
            ),
            writes => write!(formatter, "{} writes", writes.len()),
        }
    }
}

/// What applying one entry produced (openraft `R`): one result per write, in order. A
/// rejected command is a normal outcome, the same on every replica, never a storage
/// error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalOutcome {
    /// The raft log index of the entry.
    pub index: u64,
    pub results: Vec<Result<AppliedSummary, Rejection>>,
}

impl ProposalOutcome {
    /// One outcome per write, in the order of the proposal's writes.
    pub fn into_outcomes(self) -> impl Iterator<Item = ApplyOutcome> {
        let index = self.index;
        self.results
            .into_iter()
            .map(move |result| ApplyOutcome { index, result })
    }
}

/// What applying one write produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// The raft log index of the entry that carried the write.
    pub index: u64,
    pub result: Result<AppliedSummary, Rejection>,
}

/// The part of a successful apply the proposer needs back; the events themselves go to
/// the subscribers of `StateMachineStore::subscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppliedSummary {
    /// The object the command created, if any.
    pub created: Option<Created>,
    pub event_count: u32,
}

openraft::declare_raft_types!(
    /// corral's openraft type config: `Proposal` entries, `ApplyOutcome` responses,
    /// `u64` node ids and `BasicNode { addr }` nodes; everything else is openraft's default
    /// (advanced leader ids, `openraft::Entry`) but the runtime: tokio with seedable
    /// randomness (`SeededRuntime`), so a simulation seed replays its elections.
    pub TypeConfig:
        D = Proposal,
        R = ProposalOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::runtime::SeededRuntime,
);

/// A raft replica over corral's storage.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
/// A snapshot travels and is stored as its bytes: a `State::encode_snapshot` encoding,
/// shared (openraft hands snapshots around by value; a large one is hundreds of MB), in
/// memory or mapped from its file (`SnapshotBytes`).
pub type SnapshotData = std::sync::Arc<crate::SnapshotBytes>;

pub type NodeId = u64;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// One raft log entry (`openraft::Entry`); named so it is not confused with
/// `corral_model::Entry`, which is what the state machine applies.
pub type LogEntry = openraft::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
