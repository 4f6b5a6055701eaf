//! Test kit of the state layer, compiled only with the `testing` feature (enabled by the
//! dev-dependencies of the state, scheduler and store crates; product code never enables
//! it).
//!
//! - [`Fx`]: a driver that stamps entries with increasing indexes and times and, unless
//!   told otherwise, checks the invariants after every apply (and, for a rejected entry,
//!   that nothing but the applied index changed);
//! - ready-made flavors, quotas, nodes, networks, pools and job specs ([`fixtures`]);
//! - [`World`]: the standard world most state tests start from;
//! - helpers to read the events of an applied entry and to assert rejections.
//!
//! Test support panics on anything unexpected, by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod assertions;
mod driver;
pub mod fixtures;
mod world;

pub use assertions::*;
pub use driver::Fx;
pub use fixtures::*;
pub use world::World;
