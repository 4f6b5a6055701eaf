//! What a replica takes from its surroundings besides its config: the wall clock its
//! proposals are stamped with, where fresh request ids come from, and (for the memory
//! engine) the "disk" that outlives a simulated crash, and where CPU-heavy work runs. A
//! real replica uses the system clock, the operating system's randomness and tokio's
//! blocking threads; the simulation passes each replica a skewed simulated clock, a
//! seeded generator and inline work so a seed replays exactly.

use corral_state::RequestId;
use corral_store::{EntryObserver, MemoryDisk};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as this replica sees them.
#[derive(Clone)]
pub struct Clock(Option<Arc<dyn Fn() -> u64 + Send + Sync>>);

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `now_ms` (the simulation's, with this host's skew).
    pub fn from_fn(now_ms: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now_ms)))
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(now_ms) => now_ms(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64),
        }
    }
}

/// Fresh request ids and token secrets: from the operating system's randomness (a
/// cryptographically secure generator), or a seeded sequence in the simulation.
#[derive(Clone)]
pub struct Randomness(Option<Arc<Mutex<StdRng>>>);

impl Randomness {
    pub fn random() -> Randomness {
        Randomness(None)
    }

    pub fn seeded(seed: u64) -> Randomness {
        Randomness(Some(Arc::new(Mutex::new(StdRng::seed_from_u64(seed)))))
    }

    pub fn request_id(&self) -> RequestId {
        RequestId(self.draw())
    }

    /// A token secret: 256 bits, hex.
    pub fn secret(&self) -> String {
        match &self.0 {
            None => hex::encode(rand::random::<[u8; 32]>()),
            Some(_) => format!("{:032x}{:032x}", self.draw(), self.draw()),
        }
    }

    fn draw(&self) -> u128 {
        match &self.0 {
            None => rand::random(),
            // A panic elsewhere cannot leave a random generator inconsistent.
            Some(seeded) => seeded
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .random(),
        }
    }
}

/// Where CPU-heavy work (checking a snapshot a peer sent decodes) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockingWork {
    /// On tokio's blocking threads, so the async runtime keeps serving meanwhile.
    Threads,
    /// On the calling task: the simulation's, where a real thread's timing would break
    /// determinism.
    Inline,
}

impl BlockingWork {
    /// Run `work` where this says; an error when its thread panicked or was cancelled.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        match self {
            BlockingWork::Threads => tokio::task::spawn_blocking(work).await,
            BlockingWork::Inline => Ok(work()),
        }
    }
}

/// A replica's surroundings; `Environment::real()` for every shipped replica.
#[derive(Clone)]
pub struct Environment {
    pub clock: Clock,
    pub randomness: Randomness,
    /// The memory engine's disk, kept by the simulation across a replica's restarts.
    /// None opens the engine the config names (a memory engine then starts empty).
    pub memory_disk: Option<MemoryDisk>,
    /// Installed on the state machine before raft starts, so it sees every entry,
    /// including those re-applied at start (the simulation's per-entry checks).
    pub entry_observer: Option<EntryObserver>,
    pub blocking_work: BlockingWork,
}

/// Names a file holding a signed number of milliseconds added to the system clock, read
/// again whenever it changes: the black-box tests' way to step a real replica's wall
/// clock (as NTP or `date -s` would) without changing the machine's.
pub const CLOCK_OFFSET_FILE_VARIABLE: &str = "CORRAL_CLOCK_OFFSET_FILE";

/// How often the offset file is read at most.
const OFFSET_FILE_READ_INTERVAL_MS: u64 = 20;

impl Clock {
    /// The system clock plus the offset in `path` (0 while it is missing or unreadable).
    pub fn system_with_offset_file(path: std::path::PathBuf) -> Clock {
        let cached: Mutex<Option<(std::time::Instant, i64)>> = Mutex::new(None);
        Clock::from_fn(move || {
            let mut cached = cached.lock().unwrap_or_else(|poison| poison.into_inner());
            let offset_ms = match *cached {
                Some((read_at, offset_ms))
                    if read_at.elapsed().as_millis() < u128::from(OFFSET_FILE_READ_INTERVAL_MS) =>
                {
                    offset_ms
                }
                _ => {
                    let offset_ms = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|text| text.trim().parse::<i64>().ok())
                        .unwrap_or(0);
                    *cached = Some((std::time::Instant::now(), offset_ms));
                    offset_ms
                }
            };
            Clock::system().now_ms().saturating_add_signed(offset_ms)
        })
    }
}

impl Environment {
    /// The real surroundings; the wall clock takes an offset file when
    /// `CORRAL_CLOCK_OFFSET_FILE` names one (tests only).
    pub fn real() -> Environment {
        let clock = match std::env::var_os(CLOCK_OFFSET_FILE_VARIABLE) {
            Some(path) => Clock::system_with_offset_file(path.into()),
            None => Clock::system(),
        };
        Environment {
            clock,
            randomness: Randomness::random(),
            memory_disk: None,
            entry_observer: None,
            blocking_work: BlockingWork::Threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_or_replayed() {
        let random = Randomness::random();
        assert_ne!(random.secret(), random.secret());
        assert_eq!(random.secret().len(), 64);
        assert_eq!(
            Randomness::seeded(7).secret(),
            Randomness::seeded(7).secret()
        );
    }
}
