//! The real machine's environment: the shipped implementation of each seam of
//! [`crate::environment`], assembled (kept apart so that the seams depend on none of
//! their implementations).

use crate::environment::{AgentEnvironment, BlockingWork, Jitter, SystemClock};
use crate::isolation::Sandbox;
use crate::supervisor::{ShimProcesses, ShimProgram};
use crate::upgrade::ProcessHook;
use crate::usage::UsageSampler;
use std::sync::Arc;
use std::time::Duration;

impl AgentEnvironment {
    /// The machine's: replicas under `shim`, confined by `sandbox`, the system clock, `/proc` scans shared by
    /// the process's nodes and reused while younger than `usage_max_age`, the hook as a
    /// child process, blocking threads, wall-clock jitter.
    pub(crate) fn real(shim: ShimProgram, sandbox: Sandbox, usage_max_age: Duration) -> Self {
        AgentEnvironment {
            processes: Arc::new(ShimProcesses::new(shim, sandbox)),
            clock: Arc::new(SystemClock),
            usage: Arc::new(UsageSampler::new(usage_max_age)),
            upgrade_hook: Arc::new(ProcessHook),
            blocking: BlockingWork::Threads,
            jitter: Jitter::wall_clock(),
        }
    }
}
