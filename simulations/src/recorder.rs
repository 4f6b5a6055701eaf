//! What the simulation observes as it runs: every entry every replica applies (its
//! invariants are checked and a digest recorded at that index, so replicas that
//! applied the same index must agree: of the whole state at every eighth index, of what
//! the entry did at the others), every fault injected, and the trace hash that
//! proves a seed replays exactly. Shared by all hosts of one run; the simulation is
//! single-threaded, so the lock is never contended.

use crate::managers::simulated_now_ms;
use crate::time_check::{TimeBounds, TimeCheck};
use crate::token_check::{read_entry, TokenCheck};
use corral_state::State;
use corral_store::{EntryObserver, EntryPayload, LogStore};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Violations kept; a broken run stops being interesting after the first few.
const MAX_VIOLATIONS: usize = 32;

#[derive(Default)]
pub struct Recording {
    /// Raft index -> (the replica that first applied it, the state's digest after it).
    digests: BTreeMap<u64, (u64, [u8; 32])>,
    /// Highest index each replica applied (replica id -> index).
    applied: BTreeMap<u64, u64>,
    pub violations: Vec<String>,
    pub entries_applied: u64,
    trace: Sha256,
    pub trace_lines: Vec<String>,
    keep_trace_lines: bool,
    /// The token-lifecycle check (`token_check`), fed every applied entry.
    pub tokens: TokenCheck,
    /// The state's time against true time (`time_check`), fed every applied entry.
    pub time: TimeCheck,
    /// Revocations and rotations without grace the token client raced writes against
    /// and saw acknowledged (`token_workload`).
    pub token_changes_acknowledged: u64,
}

/// The full state digest (an encoding of the whole state) is taken at every index that
/// is a multiple of this, and the entry digest (what that one entry did) at the others.
/// The full digest after every entry was about 18% of a run's time. A divergence that
/// changes the state but not the entry's events is still found at the next multiple,
/// unless the entries in between happen to undo it.
const FULL_DIGEST_EVERY_ENTRIES: u64 = 8;

/// What replicas that applied `index` must agree on (both digests are deterministic
/// functions of the state after `index`, so equal states always agree).
fn digest_at(index: u64, state: &State) -> [u8; 32] {
    if index.is_multiple_of(FULL_DIGEST_EVERY_ENTRIES) {
        state.digest()
    } else {
        state.entry_digest()
    }
}

/// A handle all hosts share.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Recording>>);

impl Recorder {
    pub fn new(keep_trace_lines: bool, time_bounds: TimeBounds) -> Recorder {
        let recording = Recording {
            keep_trace_lines,
            time: TimeCheck::new(time_bounds),
            ..Recording::default()
        };
        Recorder(Arc::new(Mutex::new(recording)))
    }

    pub fn with<T>(&self, work: impl FnOnce(&mut Recording) -> T) -> T {
        // A panic while recording is a failed run anyway; keep what was recorded.
        let mut recording = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut recording)
    }

    /// The observer installed on replica `replica`'s state machine; `log` is that
    /// replica's raft log, where the token check reads each applied entry back.
    pub fn entry_observer(&self, replica: u64, log: LogStore) -> EntryObserver {
        let recorder = self.clone();
        Arc::new(move |index: u64, state: &State| {
            let invariants = state.check_invariants();
            let digest = digest_at(index, state);
            let (state_ms, true_ms) = (state.now_ms(), simulated_now_ms(0));
            recorder.with(|recording| {
                if let Err(violation) = invariants {
                    recording.violation(format!(
                        "replica {replica} after index {index}: invariant broken: {violation}"
                    ));
                }
                recording.applied_entry(replica, index, digest);
                for violation in recording.tokens.observe(replica, index, state, &log) {
                    recording.violation(violation);
                }
                if recording.time.judges(index) {
                    // The entry's own time, when it carries one (a write's; blank and
                    // membership entries carry none).
                    let entry_at_ms =
                        read_entry(&log, index).and_then(|entry| match entry.payload {
                            EntryPayload::Normal(proposal) => Some(proposal.at_ms),
                            _ => None,
                        });
                    let observed =
                        recording
                            .time
                            .observe(replica, index, state_ms, entry_at_ms, true_ms);
                    if let Some(violation) = observed {
                        recording.violation(violation);
                    }
                }
            });
        })
    }

    /// Note a line in the trace (faults, client operations).
    pub fn trace(&self, line: String) {
        let line = match turmoil::sim_elapsed() {
            Some(elapsed) => format!("{}ms {line}", elapsed.as_millis()),
            None => line,
        };
        self.with(|recording| recording.trace_line(line));
    }

    pub fn violation(&self, message: String) {
        self.with(|recording| recording.violation(message));
    }
}

impl Recording {
    pub fn violation(&mut self, message: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.trace_line(format!("VIOLATION {message}"));
            self.violations.push(message);
        }
    }

    fn applied_entry(&mut self, replica: u64, index: u64, digest: [u8; 32]) {
        self.entries_applied += 1;
        self.applied
            .entry(replica)
            .and_modify(|highest| *highest = (*highest).max(index))
            .or_insert(index);
        match self.digests.get(&index) {
            Some((first, expected)) if *expected != digest => {
                let message = format!(
                    "replicas {first} and {replica} disagree at index {index}: {} vs {}",
                    hex::encode(&expected[..6]),
                    hex::encode(&digest[..6])
                );
                self.violation(message);
            }
            Some(_) => {}
            None => {
                self.digests.insert(index, (replica, digest));
            }
        }
        self.trace_line(format!(
            "apply r{replica} i{index} {}",
            hex::encode(&digest[..8])
        ));
    }

    pub fn trace_line(&mut self, line: String) {
        self.trace.update(line.as_bytes());
        self.trace.update(b"\n");
        if self.keep_trace_lines {
            self.trace_lines.push(line);
        }
    }

    pub fn trace_hash(&self) -> String {
        hex::encode(self.trace.clone().finalize())
    }

    pub fn highest_applied(&self) -> u64 {
        self.applied.values().copied().max().unwrap_or(0)
    }

    pub fn applied_by(&self) -> &BTreeMap<u64, u64> {
        &self.applied
    }
}
