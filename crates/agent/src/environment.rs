//! What a node agent takes from its machine besides its configuration, each behind a
//! small seam: how replica processes are started and adopted ([`Processes`]), the wall
//! clock ([`Clock`]), the processes' measured use ([`UsageSource`]), the driver-upgrade
//! hook ([`UpgradeHook`]), where blocking work runs ([`BlockingWork`]) and the jitter of
//! retry pauses ([`Jitter`]).
//!
//! A shipped agent uses the machine's (assembled in `machine.rs`): shim-supervised
//! child processes, the system clock, `/proc`, the configured hook as a child process,
//! Tokio's blocking threads and wall-clock jitter. The deterministic simulation (`simulations/`) passes
//! its own: simulated processes that outlive a crashed agent, simulated time, no
//! measured use, a hook that takes simulated time, blocking work run inline on the
//! calling task (turmoil runs every host on one thread, and a real thread's timing
//! would leak wall time into a run), and seeded jitter. The node loop's logic is the
//! same under both.
//!
//! The agent's small state files (records, exit codes, installed drivers, the trash)
//! are not behind a seam: they are read and written with `std::fs`, synchronously on
//! the node's loop or through [`BlockingWork`], in the node's work directory, which the
//! simulation places in a temporary directory of its own per node.

use crate::config::DriverVersions;
use crate::dirs::NodeDirs;
use crate::replica::{Adoption, LaunchSpec, ReplicaProcess, ReplicaRecord};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;

/// Starts replica processes and supervises recorded ones again.
pub trait Processes: Send + Sync + fmt::Debug + 'static {
    /// Starts `spec`'s process, writes its record (without one a restarted agent could
    /// not adopt it, so a process whose record cannot be written must not run) and
    /// supervises it. May block for milliseconds: the node calls it through
    /// [`BlockingWork`]. Called inside a Tokio runtime.
    fn spawn(&self, dirs: &NodeDirs, spec: &LaunchSpec, now_ms: u64) -> io::Result<ReplicaProcess>;

    /// Supervises a recorded replica again when its process still runs; otherwise says
    /// how it ended. Called inside a Tokio runtime.
    fn adopt(&self, dirs: &NodeDirs, record: ReplicaRecord) -> Adoption;

    /// How the processes are isolated, as the node registers it ("none", "users+cgroup
    /// v1", "users+cgroup v2").
    fn isolation(&self) -> String {
        "none".to_string()
    }

    /// Whether a replica could listen on `port` of this machine now (rank 0's
    /// rendezvous port is checked with it). A simulated machine has every port free.
    fn port_is_free(&self, port: u16) -> bool {
        let _ = port;
        true
    }
}

/// The wall clock: milliseconds since the Unix epoch (replica start times, max
/// runtimes, spawn retries).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

/// The resource use of the node's processes, by session.
pub trait UsageSource: Send + Sync + fmt::Debug + 'static {
    /// A recent snapshot (sources may share one among the nodes of a process).
    fn snapshot(&self) -> BoxFuture<'_, Arc<ProcSnapshot>>;
}

/// CPU ticks and resident pages of one session, summed over its processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionUse {
    pub cpu_ticks: u64,
    pub rss_pages: u64,
}

/// One scan of the machine's processes, by session (each replica's shim leads its own).
#[derive(Clone, Debug)]
pub struct ProcSnapshot {
    pub taken_at: Instant,
    pub sessions: HashMap<i32, SessionUse>,
    /// Mean utilisation of the machine's accelerators, 0-100, when something measures
    /// them (NVML); None: unmeasured.
    pub accelerator_utilization_percent: Option<u32>,
}

/// One run of the driver-upgrade hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// The configured hook (argv).
    pub hook: Vec<String>,
    /// The versions to install.
    pub versions: DriverVersions,
    /// The node's work directory (the hook's working directory and log).
    pub node_dir: PathBuf,
    pub node_name: String,
    /// The bound on the run.
    pub timeout: Duration,
}

/// Runs the driver-upgrade hook.
pub trait UpgradeHook: Send + Sync + fmt::Debug + 'static {
    /// Ok when the hook installed the versions.
    fn run(&self, run: HookRun) -> BoxFuture<'static, Result<(), String>>;
}

/// Where work that blocks its thread (process creation, file removal) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockingWork {
    /// On Tokio's blocking threads, so the node's loop goes on meanwhile.
    Threads,
    /// On the calling task: deterministic, for a simulation whose work does not block.
    Inline,
}

impl BlockingWork {
    /// Runs `work` as a task of `set`; returns the task's id.
    pub(crate) fn spawn_into<T: Send + 'static>(
        self,
        set: &mut JoinSet<T>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> task::Id {
        match self {
            BlockingWork::Threads => set.spawn_blocking(work).id(),
            BlockingWork::Inline => set.spawn(async move { work() }).id(),
        }
    }

    /// Runs `work` and waits for it.
    pub(crate) async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        match self {
            BlockingWork::Threads => task::spawn_blocking(work).await,
            BlockingWork::Inline => Ok(work()),
        }
    }
}

/// The jitter of retry pauses, as a fraction in thousandths: from the wall clock's
/// nanoseconds (enough to keep agents retrying after the same outage apart), or a
/// seeded sequence, so a simulated run replays.
#[derive(Clone, Debug, Default)]
pub struct Jitter(Option<Arc<Mutex<u64>>>);

impl Jitter {
    /// From the wall clock.
    pub fn wall_clock() -> Jitter {
        Jitter(None)
    }

    /// A seeded sequence (SplitMix64).
    pub fn seeded(seed: u64) -> Jitter {
        Jitter(Some(Arc::new(Mutex::new(seed))))
    }

    /// The next draw, in 0..1000.
    pub(crate) fn next_per_mille(&self) -> u32 {
        match &self.0 {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.subsec_nanos() % 1000),
            Some(state) => {
                let mut state = state
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut mixed = *state;
                mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_133f_11eb);
                ((mixed ^ (mixed >> 31)) % 1000) as u32
            }
        }
    }
}

/// An agent's surroundings; the machine's (assembled in `machine.rs`) in every shipped
/// agent.
#[derive(Clone, Debug)]
pub struct AgentEnvironment {
    pub processes: Arc<dyn Processes>,
    pub clock: Arc<dyn Clock>,
    pub usage: Arc<dyn UsageSource>,
    pub upgrade_hook: Arc<dyn UpgradeHook>,
    pub blocking: BlockingWork,
    pub jitter: Jitter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_jitter_replays_and_stays_in_range() {
        let draws = |seed| {
            let jitter = Jitter::seeded(seed);
            (0..64).map(|_| jitter.next_per_mille()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert!(draws(7).iter().all(|draw| *draw < 1000));
        assert!(Jitter::wall_clock().next_per_mille() < 1000);
    }

    #[tokio::test]
    async fn inline_work_runs_on_the_calling_task() {
        let mut set = JoinSet::new();
        let id = BlockingWork::Inline.spawn_into(&mut set, || 5);
        let (joined, value) = set.join_next_with_id().await.unwrap().unwrap();
        assert_eq!((joined, value), (id, 5));
        assert_eq!(BlockingWork::Inline.run(|| 6).await.unwrap(), 6);
        assert_eq!(BlockingWork::Threads.run(|| 7).await.unwrap(), 7);
    }
}
