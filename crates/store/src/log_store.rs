//! `LogStore`: the raft log of one replica on the configured engine (sled, redb or
//! memory), implementing openraft's `RaftLogStorage`/`RaftLogReader` by delegation,
//! plus the checks every engine shares: the normalized index range of a read, and the
//! rule that the log never has a hole (reads and appends are consecutive).

use crate::codec::invalid_data;
use crate::log_memory::MemoryLogStore;
use crate::log_redb::RedbLogStore;
use crate::log_sled::SledLogStore;
use crate::types::{LogEntry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

/// The raft log on one of the engines. Cloning gives another handle to the same log
/// (openraft's log readers are such clones).
#[derive(Clone)]
pub enum LogStore {
    Sled(SledLogStore),
    Redb(RedbLogStore),
    Memory(MemoryLogStore),
}

impl LogStore {
    pub fn engine_name(&self) -> &'static str {
        match self {
            LogStore::Sled(_) => "sled",
            LogStore::Redb(_) => "redb",
            LogStore::Memory(_) => "memory",
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, io::Error> {
        match self {
            LogStore::Sled(store) => store.try_get_log_entries(range).await,
            LogStore::Redb(store) => store.try_get_log_entries(range).await,
            LogStore::Memory(store) => store.try_get_log_entries(range).await,
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self {
            LogStore::Sled(store) => store.read_vote().await,
            LogStore::Redb(store) => store.read_vote().await,
            LogStore::Memory(store) => store.read_vote().await,
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        match self {
            LogStore::Sled(store) => store.get_log_state().await,
            LogStore::Redb(store) => store.get_log_state().await,
            LogStore::Memory(store) => store.get_log_state().await,
        }
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        match self {
            LogStore::Sled(store) => store.save_vote(vote).await,
            LogStore::Redb(store) => store.save_vote(vote).await,
            LogStore::Memory(store) => store.save_vote(vote).await,
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        match self {
            LogStore::Sled(store) => store.save_committed(committed).await,
            LogStore::Redb(store) => store.save_committed(committed).await,
            LogStore::Memory(store) => store.save_committed(committed).await,
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self {
            LogStore::Sled(store) => store.read_committed().await,
            LogStore::Redb(store) => store.read_committed().await,
            LogStore::Memory(store) => store.read_committed().await,
        }
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
        match self {
            LogStore::Sled(store) => store.append(entries, callback).await,
            LogStore::Redb(store) => store.append(entries, callback).await,
            LogStore::Memory(store) => store.append(entries, callback).await,
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        match self {
            LogStore::Sled(store) => store.truncate_after(last_log_id).await,
            LogStore::Redb(store) => store.truncate_after(last_log_id).await,
            LogStore::Memory(store) => store.truncate_after(last_log_id).await,
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        match self {
            LogStore::Sled(store) => store.purge(log_id).await,
            LogStore::Redb(store) => store.purge(log_id).await,
            LogStore::Memory(store) => store.purge(log_id).await,
        }
    }
}

/// A requested range of log indexes as `[start, end)`, `end == None` meaning unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl IndexRange {
    /// `None` when the range holds no index at all (so engines never see start > end,
    /// which some range APIs panic on).
    pub fn from_bounds<RB: RangeBounds<u64>>(range: &RB) -> Option<IndexRange> {
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            // An inclusive end of u64::MAX is the same as unbounded.
            Bound::Included(end) => end.checked_add(1),
            Bound::Excluded(end) => Some(*end),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| start >= end) {
            return None;
        }
        Some(IndexRange { start, end })
    }

    /// The index after the last one the range could hold: the start of what a
    /// `truncate_after(last_log_id)` removes.
    pub fn after(last_log_id: Option<&LogId>) -> IndexRange {
        IndexRange {
            start: last_log_id.map_or(0, |log_id| log_id.index + 1),
            end: None,
        }
    }
}

/// Checks entries read in key order: each carries the index of its key, and they are
/// consecutive. A hole in the middle of a read is corruption, not a purge.
#[derive(Debug, Default)]
pub(crate) struct ConsecutiveEntries {
    previous_index: Option<u64>,
}

impl ConsecutiveEntries {
    pub fn check(&mut self, key_index: u64, entry: &LogEntry) -> io::Result<()> {
        if entry.log_id.index != key_index {
            return Err(invalid_data(format!(
                "log entry stored under index {key_index} carries index {}",
                entry.log_id.index
            )));
        }
        if let Some(previous) = self.previous_index {
            if previous.checked_add(1) != Some(key_index) {
                return Err(invalid_data(format!(
                    "the log has a hole: entry {key_index} follows entry {previous}"
                )));
            }
        }
        self.previous_index = Some(key_index);
        Ok(())
    }
}

/// Checks a batch to append: it continues the log right after its last entry (or after
/// the last purged entry when the log is empty), and is itself consecutive. Openraft
/// truncates a conflicting suffix before it appends, so anything else is a bug that
/// would leave a hole or a stale suffix.
#[derive(Debug)]
pub(crate) struct AppendContinuity {
    previous_index: Option<u64>,
}

impl AppendContinuity {
    /// `last_index`: the last entry's index, else the last purged index, else `None`
    /// (a log that never held anything accepts any first index).
    pub fn after(last_index: Option<u64>) -> AppendContinuity {
        AppendContinuity {
            previous_index: last_index,
        }
    }

    pub fn check(&mut self, entry: &LogEntry) -> io::Result<()> {
        let index = entry.log_id.index;
        if let Some(previous) = self.previous_index {
            if previous.checked_add(1) != Some(index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append of entry {index} after entry {previous} would leave a hole"),
                ));
            }
        }
        self.previous_index = Some(index);
        Ok(())
    }
}

/// The log state from the last entry and the last purged id: an empty log's last id is
/// the last purged one.
pub(crate) fn log_state(
    last_entry: Option<LogId>,
    last_purged: Option<LogId>,
) -> LogState<TypeConfig> {
    let last_log_id = match (&last_entry, &last_purged) {
        (Some(entry), Some(purged)) if entry.index > purged.index => Some(*entry),
        (Some(entry), None) => Some(*entry),
        (_, Some(purged)) => Some(*purged),
        (None, None) => None,
    };
    LogState {
        last_purged_log_id: last_purged,
        last_log_id,
    }
}

/// Tell openraft how an append ended (its `IOFlushed` callback; io errors are not
/// `Clone`, so the callback gets a copy) and return the same result to the caller.
pub(crate) fn acknowledge_append(
    callback: IOFlushed<TypeConfig>,
    result: io::Result<()>,
) -> io::Result<()> {
    match result {
        Ok(()) => {
            callback.io_completed(Ok(()));
            Ok(())
        }
        Err(error) => {
            callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_ranges() {
        assert_eq!(
            IndexRange::from_bounds(&(3..7)),
            Some(IndexRange {
                start: 3,
                end: Some(7)
            })
        );
        assert_eq!(IndexRange::from_bounds(&(3..3)), None);
        assert_eq!(
            IndexRange::from_bounds(&(Bound::Included(5), Bound::Included(4))),
            None
        );
        assert_eq!(
            IndexRange::from_bounds(&(..=u64::MAX)),
            Some(IndexRange {
                start: 0,
                end: None
            })
        );
        assert_eq!(
            IndexRange::from_bounds(&(9..)),
            Some(IndexRange {
                start: 9,
                end: None
            })
        );
        assert_eq!(
            IndexRange::from_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
    }
}
