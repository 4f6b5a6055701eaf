//! What only the leader does: its loops (scheduler, metering, node liveness, driver
//! upgrades) and what it knows of node liveness from the agents' heartbeats.

pub(crate) mod liveness;
pub(crate) mod loops;
