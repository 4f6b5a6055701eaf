//! `StateMachineStore`: openraft's state machine over corral's `State`.
//!
//! The state lives in memory behind a std `RwLock` (never held across an `.await`),
//! together with the last applied raft log id and the last applied membership, so a
//! reader and a snapshot always see the three agree. It is not written to disk on
//! every apply: durability comes from snapshots (see `snapshot_files`) plus the
//! committed log, which openraft re-applies on start (`save_committed` matters).
//!
//! Each applied batch's events go to a bounded broadcast channel (a lagging receiver
//! loses the oldest batches and is told so, the state machine never waits for it), and
//! the last applied index to a watch channel. Both are published before the
//! proposers' responders fire, so a client that got its answer can wait on either.
//!
//! The memory engine never leaves the calling task (determinism for the simulation);
//! the disk engines move decoding, encoding and file IO to tokio's blocking pool.

use crate::codec::invalid_data;
use crate::snapshot_files::{MemorySnapshotSlot, SnapshotStore, StoredSnapshot};
use crate::types::{
    AppliedSummary, EntryPayload, LogEntry, LogId, ProposalOutcome, Snapshot, SnapshotData,
    SnapshotMeta, StoredMembership, TypeConfig,
};
use corral_model::EventRecord;
use corral_state::State;
use futures::{Stream, TryStreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;
use tokio::sync::{broadcast, watch};

/// Applied batches a subscriber may fall behind by before it starts losing them.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// The replicated state machine of one replica. Clones share it.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

struct Shared {
    machine: RwLock<Machine>,
    snapshots: SnapshotStore,
    events: broadcast::Sender<Arc<Vec<EventRecord>>>,
    applied_index: watch::Sender<u64>,
    /// The state's digest and the applied index it was computed at: encoding a large
    /// state to hash it takes a while, and the state changes only with that index.
    /// Held while a digest is computed, so concurrent callers wait for it.
    digest: Mutex<Option<(u64, [u8; 32])>>,
    /// Called with every applied entry's index and the state right after it (the
    /// simulation checks invariants and records digests there); none in production.
    entry_observer: std::sync::OnceLock<EntryObserver>,
}

/// See `StateMachineStore::observe_entries`.
pub type EntryObserver = Arc<dyn Fn(u64, &State) + Send + Sync>;

/// What must change together: the state, how far the log has been applied to it, and
/// the membership as of that point.
struct Machine {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl Machine {
    fn empty() -> Machine {
        Machine {
            state: State::new(),
            last_applied: None,
            membership: StoredMembership::default(),
        }
    }

    /// Decode a snapshot into the machine it describes, checking it against its meta.
    fn from_snapshot(snapshot: &StoredSnapshot) -> io::Result<Machine> {
        let started = Instant::now();
        let state = State::decode_snapshot(&snapshot.data)
            .map_err(|error| invalid_data(format!("snapshot state: {error}")))?;
        let snapshot_index = snapshot.meta.last_log_id.map_or(0, |log_id| log_id.index);
        tracing::info!(
            index = snapshot_index,
            bytes = snapshot.data.len(),
            decode_ms = started.elapsed().as_millis() as u64,
            "snapshot decoded"
        );
        if state.applied_index() > snapshot_index {
            return Err(invalid_data(format!(
                "snapshot state has applied index {} beyond the snapshot's last log index {snapshot_index}",
                state.applied_index()
            )));
        }
        Ok(Machine {
            state,
            last_applied: snapshot.meta.last_log_id,
            membership: snapshot.meta.last_membership.clone(),
        })
    }

    /// Apply one raft entry; the events it produced are appended to `events`.
    fn apply(
        &mut self,
        entry: LogEntry,
        events: &mut Vec<EventRecord>,
    ) -> io::Result<ProposalOutcome> {
        let log_id = entry.log_id;
        if let Some(last_applied) = self.last_applied {
            if log_id.index <= last_applied.index {
                return Err(invalid_data(format!(
                    "entry {log_id} applied after entry {last_applied}: the log is applied out of order"
                )));
            }
        }
        let results = match entry.payload {
            EntryPayload::Blank => Vec::new(),
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                Vec::new()
            }
            EntryPayload::Normal(proposal) => {
                // `State::apply_batch` asserts this; here it is a clear error instead of a
                // panic.
                if log_id.index <= self.state.applied_index() {
                    return Err(invalid_data(format!(
                        "entry {log_id} is not after the state's applied index {}",
                        self.state.applied_index()
                    )));
                }
                self.state
                    .apply_batch(log_id.index, proposal.at_ms, proposal.writes)
                    .into_iter()
                    .map(|result| {
                        result.map(|applied| {
                            let event_count =
                                u32::try_from(applied.events.len()).unwrap_or(u32::MAX);
                            events.extend(applied.events);
                            AppliedSummary {
                                created: applied.created,
                                event_count,
                            }
                        })
                    })
                    .collect()
            }
        };
        self.last_applied = Some(log_id);
        Ok(ProposalOutcome {
            index: log_id.index,
            results,
        })
    }

    fn capture(&self) -> StoredSnapshot {
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            data: Arc::new(self.state.encode_snapshot().into()),
        }
    }
}

impl Shared {
    fn read_machine(&self) -> io::Result<RwLockReadGuard<'_, Machine>> {
        self.machine.read().map_err(|_| {
            io::Error::other("state machine: an apply panicked while holding the lock")
        })
    }

    fn write_machine(&self) -> io::Result<RwLockWriteGuard<'_, Machine>> {
        self.machine.write().map_err(|_| {
            io::Error::other("state machine: an apply panicked while holding the lock")
        })
    }

    fn install(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        // Decode first: a snapshot that does not decode changes nothing.
        let machine = Machine::from_snapshot(&snapshot)?;
        let index = machine.last_applied.map_or(0, |log_id| log_id.index);
        self.snapshots.persist(&snapshot)?;
        let replaced = {
            let mut current = self.write_machine()?;
            let replaced = std::mem::replace(&mut *current, machine);
            if let Some(observer) = self.entry_observer.get() {
                // The installed state stands for every entry up to its index.
                observer(index, &current.state);
            }
            replaced
        };
        *lock_digest(&self.digest) = None;
        self.applied_index.send_replace(index);
        // Dropped after the lock is released: freeing a large state takes a while and
        // readers need not wait for it.
        drop(replaced);
        Ok(())
    }
}

/// Run `work` on tokio's blocking pool when it does disk IO or heavy encoding for a
/// disk engine; inline for the memory engine, which must stay on its task.
async fn run_blocking<T, F>(on_disk: bool, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    if !on_disk {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(io::Error::other(format!("storage task failed: {error}"))),
    }
}

impl StateMachineStore {
    fn new(snapshots: SnapshotStore, machine: Machine) -> StateMachineStore {
        let index = machine.last_applied.map_or(0, |log_id| log_id.index);
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let (applied_index, _) = watch::channel(index);
        StateMachineStore {
            shared: Arc::new(Shared {
                machine: RwLock::new(machine),
                snapshots,
                events,
                applied_index,
                digest: Mutex::new(None),
                entry_observer: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Open the state machine of a disk engine: load the newest snapshot in
    /// `snapshot_directory` that checks out and decodes, or start empty.
    pub(crate) fn open_directory(snapshot_directory: &Path) -> io::Result<StateMachineStore> {
        let (snapshots, machine) =
            SnapshotStore::open_directory(snapshot_directory, Machine::from_snapshot)?;
        Ok(StateMachineStore::new(
            snapshots,
            machine.unwrap_or_else(Machine::empty),
        ))
    }

    /// Open the state machine of the memory engine over `slot`, recovering from the
    /// snapshot in it if any.
    pub(crate) fn open_memory(slot: MemorySnapshotSlot) -> io::Result<StateMachineStore> {
        let snapshots = SnapshotStore::memory(slot);
        let machine = match snapshots.current()? {
            Some(snapshot) => Machine::from_snapshot(&snapshot)?,
            None => Machine::empty(),
        };
        Ok(StateMachineStore::new(snapshots, machine))
    }

    /// Run `read` with a read lock on the replicated state (never hold it across
    /// `.await`: `read` is synchronous, so it cannot).
    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        let machine =
            self.shared.machine.read().expect(
                "state machine lock poisoned: an apply panicked, the state is not trustworthy",
            );
        read(&machine.state)
    }

    /// The digest of the state (`State::digest`), computed at most once per applied
    /// index: blocking, and under the state's read lock (applies wait) when it is not
    /// cached.
    pub fn digest(&self) -> [u8; 32] {
        let mut cached = lock_digest(&self.shared.digest);
        let machine = self.read_machine_or_panic();
        let index = machine.state.applied_index();
        if let Some((at, digest)) = *cached {
            if at == index {
                return digest;
            }
        }
        let digest = machine.state.digest();
        *cached = Some((index, digest));
        digest
    }

    /// `digest` in lower-case hex, computed off the async runtime for a disk engine.
    /// `State::objects_digest` of the current state, in hex.
    pub async fn objects_digest_hex(&self) -> String {
        let store = self.clone();
        let digest = run_blocking(self.on_disk(), move || {
            Ok(store.read_machine_or_panic().state.objects_digest())
        })
        .await
        .expect("computing a digest cannot fail");
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    pub async fn digest_hex(&self) -> String {
        let store = self.clone();
        let digest = run_blocking(self.on_disk(), move || Ok(store.digest()))
            .await
            .expect("computing a digest cannot fail");
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Every applied batch's events, for the Watch API and to wake the scheduler. A
    /// receiver more than `EVENT_CHANNEL_CAPACITY` batches behind gets `Lagged`.
    /// A snapshot install replaces the state without events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<EventRecord>>> {
        self.shared.events.subscribe()
    }

    /// Call `observer` after every entry this replica applies from now on, with the
    /// entry's index and the state right after it, under the state's lock. Only the
    /// first observer installed is kept; answers whether this one was.
    pub fn observe_entries(&self, observer: EntryObserver) -> bool {
        self.shared.entry_observer.set(observer).is_ok()
    }

    /// Last applied log index (raft index; includes blank and membership entries).
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    /// Current membership as last applied (for the cluster status call).
    pub fn membership(&self) -> StoredMembership {
        self.read_machine_or_panic().membership.clone()
    }

    /// The last applied raft log id, `None` before anything was applied.
    pub fn last_applied(&self) -> Option<LogId> {
        self.read_machine_or_panic().last_applied
    }

    fn read_machine_or_panic(&self) -> RwLockReadGuard<'_, Machine> {
        self.shared
            .machine
            .read()
            .expect("state machine lock poisoned: an apply panicked, the state is not trustworthy")
    }

    fn on_disk(&self) -> bool {
        self.shared.snapshots.is_on_disk()
    }
}

fn lock_digest(
    digest: &Mutex<Option<(u64, [u8; 32])>>,
) -> std::sync::MutexGuard<'_, Option<(u64, [u8; 32])>> {
    // A panic while computing leaves at worst no cached digest.
    digest
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies an io error (they are not `Clone`) so it can be both kept and returned.
fn copy_error(error: &io::Error) -> io::Error {
    io::Error::new(error.kind(), error.to_string())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachineSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let machine = self.shared.read_machine()?;
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<Entries>(&mut self, mut entries: Entries) -> Result<(), io::Error>
    where
        Entries:
            Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut events: Vec<EventRecord> = Vec::new();
        let mut replies: Vec<(ApplyResponder<TypeConfig>, ProposalOutcome)> = Vec::new();
        let mut last_index: Option<u64> = None;
        let mut failure: Option<io::Error> = None;
        loop {
            let (entry, responder) = match entries.try_next().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            // The lock is taken per entry and released before the next `.await`.
            let observer = self.shared.entry_observer.get();
            let applied = self.shared.write_machine().and_then(|mut machine| {
                let outcome = machine.apply(entry, &mut events)?;
                if let Some(observer) = observer {
                    observer(outcome.index, &machine.state);
                }
                Ok(outcome)
            });
            match applied {
                Ok(outcome) => {
                    last_index = Some(outcome.index);
                    if let Some(responder) = responder {
                        replies.push((responder, outcome));
                    }
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // Publish what was applied even when the batch stopped early: it did change the
        // state.
        if !events.is_empty() {
            // No receiver is not an error: nobody is watching.
            let _ = self.shared.events.send(Arc::new(events));
        }
        if let Some(index) = last_index {
            self.shared.applied_index.send_replace(index);
        }
        for (responder, outcome) in replies {
            responder.send(outcome);
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Openraft calls this on the state machine's task, between applies, so the
        // capture is a consistent view; `build_snapshot` then runs concurrently with
        // later applies and only persists.
        let shared = self.shared.clone();
        let captured =
            run_blocking(self.on_disk(), move || Ok(shared.read_machine()?.capture())).await;
        StateMachineSnapshotBuilder {
            shared: self.shared.clone(),
            captured,
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let snapshot = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        let shared = self.shared.clone();
        run_blocking(self.on_disk(), move || shared.install(snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        // The bytes are shared, not copied (openraft asks twice on every start).
        Ok(self.shared.snapshots.current()?.map(|current| Snapshot {
            meta: current.meta,
            snapshot: current.data,
        }))
    }
}

/// A snapshot captured by `get_snapshot_builder`, persisted by `build_snapshot`.
pub struct StateMachineSnapshotBuilder {
    shared: Arc<Shared>,
    captured: io::Result<StoredSnapshot>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let snapshot = self.captured.as_ref().map_err(copy_error)?.clone();
        let shared = self.shared.clone();
        let persisted = snapshot.clone();
        let on_disk = shared.snapshots.is_on_disk();
        run_blocking(on_disk, move || {
            shared.snapshots.persist(&persisted).map(|_| ())
        })
        .await?;
        Ok(Snapshot {
            meta: snapshot.meta,
            snapshot: snapshot.data,
        })
    }
}
