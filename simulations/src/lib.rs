//! A deterministic chaos simulation of corral: the real manager replicas (raft, state
//! machine, scheduler and leader loops, gRPC services) and the real node agents (on
//! simulated machines: processes, clock, upgrade hook) run as turmoil hosts in one
//! process, on turmoil's network and clock, while a seeded fault driver partitions,
//! delays, drops, crashes and restarts them and seeded clients drive a workload. A seed replays exactly (same trace hash); a run checks
//! invariants after every applied entry on every replica, digest agreement at every
//! index, acknowledged writes, progress after healing, and the linearizability of the
//! client history. See SIMULATION.md.

pub mod agents;
pub mod faults;
pub mod final_check;
pub mod history;
pub mod linearizability;
pub mod managers;
pub mod model;
pub mod network;
pub mod options;
pub mod recorder;
pub mod run;
pub mod task_ids;
pub mod time_check;
pub mod token_check;
pub mod token_workload;
pub mod workload;

pub use options::{Fault, FaultMode, RunOptions};
pub use run::{run, RunReport};
