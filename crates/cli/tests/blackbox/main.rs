//! The black-box tests of the `corral` binary, one test binary (it links once): a
//! replicated manager cluster (`cluster`), node agents running real replica processes
//! (`agents`), and `corral dev` as a user runs it (`dev`). They start real processes;
//! the harness is `common`.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used)]

mod common;

mod agents;
mod audit;
mod authz;
mod cluster;
mod dev;
mod gray;
mod secrets;
mod security;
mod tls;
