//! The storage layer's integration tests, one binary (it links once): applying entries
//! through the state-machine store, openraft's storage conformance suite, and restarts
//! of every engine. The kit is `common`, on the state layer's `corral_state::testing`.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

mod common;

mod apply;
mod conformance;
mod memory_faults;
mod restart;
