//! The raft log in memory, for the deterministic simulation and tests. Every write is
//! "durable" the moment it returns: there is no disk, so the store survives exactly as
//! long as some handle to it does (a simulation keeps one to restart a replica). It
//! never leaves the calling task, so it adds no scheduling nondeterminism.
//!
//! The simulation can make its "disk" fail through [`DiskFaults`] (shared with the
//! memory snapshot slot of the same `MemoryDisk`):
//!
//! - **full**: while on, every write (log append, vote, committed id, snapshot) fails
//!   with `ErrorKind::StorageFull` (ENOSPC) before it changes anything. Removals
//!   (truncate, purge) still succeed: they need no space.
//! - **failed fsync**: the next flushed write (log append, vote, snapshot) fails after
//!   its data was written but before it was durable, as `fsync` returning EIO does: the
//!   write stays visible to this incarnation's readers (the page cache) but is not
//!   durable, and a later successful flush does not make it so (the kernel dropped the
//!   dirty pages). The next open of the disk (a restart) loses it, and with it
//!   everything appended after it, as recovering an append-only log file truncates it at
//!   its first lost record. The vote goes back to the last one flushed.
//!
//! The log tracks that with two fields: the vote last flushed, and the first index
//! appended without a successful flush; every successful append is flushed in full
//! before it returns, so those are all the "pending" state there is.

use crate::log_store::{
    acknowledge_append, log_state, AppendContinuity, ConsecutiveEntries, IndexRange,
};
use crate::types::{LogEntry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The fault switch of a memory "disk" (the simulation flips it; see the module
/// documentation). Clones share the switch.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults(Arc<FaultSwitch>);

#[derive(Debug, Default)]
struct FaultSwitch {
    full: AtomicBool,
    fail_next_sync: AtomicBool,
    /// Writes refused or lost so far (for tests and traces).
    failures: AtomicU64,
}

impl DiskFaults {
    /// Fill the disk (`true`: every write fails with `StorageFull`) or free it.
    pub fn set_full(&self, full: bool) {
        self.0.full.store(full, Ordering::Relaxed);
    }

    pub fn is_full(&self) -> bool {
        self.0.full.load(Ordering::Relaxed)
    }

    /// Make the next flushed write fail its fsync (its data is then lost at the next
    /// open). One write only: the switch turns itself off when it fires.
    pub fn fail_next_sync(&self) {
        self.0.fail_next_sync.store(true, Ordering::Relaxed);
    }

    /// Whether a failed fsync is armed and has not fired yet.
    pub fn sync_failure_armed(&self) -> bool {
        self.0.fail_next_sync.load(Ordering::Relaxed)
    }

    /// Free the disk and disarm a failed fsync that has not fired.
    pub fn heal(&self) {
        self.set_full(false);
        self.0.fail_next_sync.store(false, Ordering::Relaxed);
    }

    /// Writes refused (disk full) or lost (failed fsync) so far.
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::Relaxed)
    }

    /// Before a write changes anything: refused while the disk is full.
    pub(crate) fn check_space(&self, what: &str) -> io::Result<()> {
        if self.is_full() {
            self.0.failures.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("memory disk: no space left on device writing {what} (simulated ENOSPC)"),
            ));
        }
        Ok(())
    }

    /// After a write's data is in place: its flush, which fails once when armed.
    pub(crate) fn sync(&self, what: &str) -> io::Result<()> {
        if self.0.fail_next_sync.swap(false, Ordering::Relaxed) {
            self.0.failures.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "memory disk: fsync failed after writing {what}; the write is lost (simulated EIO)"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct MemoryLog {
    entries: BTreeMap<u64, LogEntry>,
    /// The vote readers see; `durable_vote` is the one last flushed.
    vote: Option<Vote>,
    durable_vote: Option<Vote>,
    /// The first index appended whose flush failed: it and everything after it are
    /// lost at the next open.
    unsynced_from: Option<u64>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl MemoryLog {
    fn last_index(&self) -> Option<u64> {
        match self.entries.last_key_value() {
            Some((index, _)) => Some(*index),
            None => self.last_purged.map(|log_id| log_id.index),
        }
    }
}

/// The raft log in memory. Clones share the log.
#[derive(Clone, Debug, Default)]
pub struct MemoryLogStore {
    log: Arc<Mutex<MemoryLog>>,
    faults: DiskFaults,
}

impl MemoryLogStore {
    pub fn new() -> MemoryLogStore {
        MemoryLogStore::default()
    }

    /// A log on a disk whose faults `faults` switches.
    pub(crate) fn with_faults(faults: DiskFaults) -> MemoryLogStore {
        MemoryLogStore {
            log: Arc::default(),
            faults,
        }
    }

    /// What a restart finds: the writes whose flush failed are gone (see the module
    /// documentation).
    pub(crate) fn recover(&self) -> io::Result<()> {
        let mut log = self.lock()?;
        if let Some(first_lost) = log.unsynced_from.take() {
            drop(log.entries.split_off(&first_lost));
        }
        log.vote = log.durable_vote;
        Ok(())
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, MemoryLog>> {
        // A panic while the lock was held may have left the log half-written.
        self.log
            .lock()
            .map_err(|_| io::Error::other("memory log: a writer panicked while holding the lock"))
    }
}

impl RaftLogReader<TypeConfig> for MemoryLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, io::Error> {
        let Some(range) = IndexRange::from_bounds(&range) else {
            return Ok(Vec::new());
        };
        let log = self.lock()?;
        let items = match range.end {
            Some(end) => log.entries.range(range.start..end),
            None => log.entries.range(range.start..),
        };
        let mut entries = Vec::new();
        let mut consecutive = ConsecutiveEntries::default();
        for (index, entry) in items {
            consecutive.check(*index, entry)?;
            entries.push(entry.clone());
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock()?.vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemoryLogStore {
    type LogReader = MemoryLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.lock()?;
        let last_entry = log.entries.last_key_value().map(|(_, entry)| entry.log_id);
        Ok(log_state(last_entry, log.last_purged))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.faults.check_space("the vote")?;
        let mut log = self.lock()?;
        log.vote = Some(*vote);
        self.faults.sync("the vote")?;
        log.durable_vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.faults.check_space("the committed log id")?;
        self.lock()?.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock()?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let appended = self.faults.check_space("log entries").and_then(|()| {
            let mut log = self.lock()?;
            let mut continuity = AppendContinuity::after(log.last_index());
            // Check the whole batch before inserting any of it, so a refused batch
            // leaves the log as it was.
            let entries: Vec<LogEntry> = entries.into_iter().collect();
            let checked: io::Result<()> =
                entries.iter().try_for_each(|entry| continuity.check(entry));
            checked?;
            let Some(first) = entries.first().map(|entry| entry.log_id.index) else {
                return Ok(());
            };
            for entry in entries {
                log.entries.insert(entry.log_id.index, entry);
            }
            self.faults.sync("log entries").inspect_err(|_| {
                let lost_from = log.unsynced_from.map_or(first, |from| from.min(first));
                log.unsynced_from = Some(lost_from);
            })
        });
        acknowledge_append(callback, appended)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let range = IndexRange::after(last_log_id.as_ref());
        let mut log = self.lock()?;
        drop(log.entries.split_off(&range.start));
        if log.unsynced_from.is_some_and(|from| from >= range.start) {
            // Every write that was not flushed is gone already.
            log.unsynced_from = None;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut log = self.lock()?;
        if log
            .last_purged
            .is_some_and(|last_purged| log_id.index <= last_purged.index)
        {
            // Already gone; moving the purge point back would claim entries that are no
            // longer there.
            return Ok(());
        }
        log.last_purged = Some(log_id);
        match log_id.index.checked_add(1) {
            Some(first_kept) => log.entries = log.entries.split_off(&first_kept),
            None => log.entries.clear(),
        }
        Ok(())
    }
}
