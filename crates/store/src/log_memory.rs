//! The raft log in memory, for the deterministic simulation and tests. Every write is
//! "durable" the moment it returns: there is no disk, so the store survives exactly as
//! long as some handle to it does (a simulation keeps one to restart a replica). It
//! never leaves the calling task, so it adds no scheduling nondeterminism.

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
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct MemoryLog {
    entries: BTreeMap<u64, LogEntry>,
    vote: Option<Vote>,
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
}

impl MemoryLogStore {
    pub fn new() -> MemoryLogStore {
        MemoryLogStore::default()
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
        self.lock()?.vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
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
        let appended = {
            let mut log = self.lock()?;
            let mut continuity = AppendContinuity::after(log.last_index());
            // Check the whole batch before inserting any of it, so a refused batch
            // leaves the log as it was.
            let entries: Vec<LogEntry> = entries.into_iter().collect();
            let checked: io::Result<()> =
                entries.iter().try_for_each(|entry| continuity.check(entry));
            if checked.is_ok() {
                for entry in entries {
                    log.entries.insert(entry.log_id.index, entry);
                }
            }
            checked
        };
        acknowledge_append(callback, appended)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let range = IndexRange::after(last_log_id.as_ref());
        let mut log = self.lock()?;
        drop(log.entries.split_off(&range.start));
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
