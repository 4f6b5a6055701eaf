//! The scheduler's integration tests, one binary (it links once): placement, fair
//! share, reservations and backfill, stale and fresh plans, skipped rounds, upgrade
//! choices, and their property tests. The cluster kit is `common`, on the state
//! layer's `corral_state::testing`.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

mod common;

mod backfill;
mod backfill_property;
mod fair_share;
mod fresh_plans;
mod node_loss;
mod placement;
mod queues_property;
mod skipped_rounds;
mod stale_plans;
mod upgrade_choice;
