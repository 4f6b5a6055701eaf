//! corral's scheduler: pure placement and queue policy over a read-only `State`.
//!
//! `plan_round` reads one pool's queue and nodes and returns a `Plan`: the placements
//! to propose as one `Command::SchedulerPlan` (with `Principal::System`), plus
//! diagnostics. The state machine re-checks every placement with the same fit
//! functions (`corral_model::fit`) when it applies the plan, so a stale plan is
//! harmless.
//!
//! Policy, in the order a round applies it:
//! - queue order: priority, then submission time (`State::queue`); in the public pool
//!   the next job comes from the tenant with the lowest dominant share
//!   (`fair_share`);
//! - tenant quota: a job that would exceed it is skipped (`quota`); a tenant's own
//!   dedicated pool does not count against it;
//! - queues of the pool: first every job that fits within its queue's guarantee, then
//!   the jobs that must borrow, by the one borrowing rule (`queues`);
//! - placement: accelerators bin-packed best-fit, a gang all-or-nothing on as few
//!   nodes as possible (`gang_placement`), inference replicas spread
//!   (`spread_placement`), PreferNoSchedule nodes only when nothing else fits;
//! - EASY backfilling: the first job that cannot be placed is the head and gets a
//!   reservation (`reservation`); later jobs are placed only where they do not delay
//!   it (`backfill`);
//! - a round stops early once no node has room for the smallest queued request and the
//!   head is known: nothing else could be placed.
//!
//! The crate does no IO, reads no clock, draws no random numbers, iterates no hash
//! map and uses no floating point.

mod backfill;
mod capacity;
mod failure_memo;
mod fair_share;
mod fit_check;
mod gang_placement;
mod job_order;
mod node_group;
mod node_search;
mod options;
mod placement_class;
mod plan;
mod pool_nodes;
mod queues;
mod quota;
mod release_schedule;
mod reservation;
mod round;
mod spread_placement;
mod upgrade;

pub use fit_check::{any_could_fit, MAX_SHAPES_CHECKED};
pub use options::RoundOptions;
pub use plan::{HeadJob, Plan, RoundDiagnostics};
pub use release_schedule::{enforced_runtime_limit_ms, expected_release_ms};
pub use reservation::{reservation_for, Reservation, ReservedNode};
pub use round::{plan_all_pools, plan_round};
pub use upgrade::{nodes_to_isolate, nodes_to_isolate_in};
