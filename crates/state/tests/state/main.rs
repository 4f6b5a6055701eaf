//! The state machine's integration tests, one binary (it links once): every command's
//! happy paths and rejections, queries, snapshots, and the property tests
//! (`cargo test -p corral-state --test state properties::`; their regression seeds are
//! in `tests/proptest-regressions/properties.txt`, where proptest looks for the seeds of
//! a test binary with a `main.rs`). Fixtures come from the crate's test kit,
//! `corral_state::testing`.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

mod alarms;
mod audit;
mod credentials;
mod jobs;
mod metering_and_billing;
mod networks;
mod node_loss;
mod nodes;
mod pools;
mod properties;
mod queries;
mod queues;
mod scheduling_plan_and_replicas;
mod snapshot;
mod standby_and_upgrades;
mod tenants_tokens_flavors;
mod workflows;
