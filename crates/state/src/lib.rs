//! corral's deterministic state machine.
//!
//! `State::apply` takes one log `Entry` and either changes the state and returns the
//! events it produced, or refuses with a typed `Rejection` and changes nothing (but the
//! applied index). Every replica applying the same entries reaches the same bytes, which
//! `State::digest` makes checkable. The crate owns the invariants listed in ARCHITECTURE.md and checks
//! them in `check_invariants`; it does no IO, reads no clock and draws no random numbers.

mod apply;
mod audit;
mod batch;
mod invariants;
mod queries;
mod queue_queries;
mod requests;
mod snapshot;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use apply::{node_token_name, Applied, Created};
pub use audit::{AuditFilter, AuditPage};
pub use batch::Write;
pub use invariants::InvariantViolation;
pub use queries::{BillQuery, BillSummary, JobFilter, JobView, NodeFilter, PoolFilter, QueryError};
pub use queue_queries::QueueView;
pub use requests::RequestId;
pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT_VERSION};
pub use state::{QueueKey, State};
