//! The raft log on sled 0.34 (the default engine).
//!
//! Two trees in one sled database: `raft_log` maps the big-endian index to the encoded
//! entry, `raft_meta` holds the vote, the committed log id and the last purged log id.
//! sled writes go to its in-memory page cache and reach the disk on `flush` (or on its
//! own 500 ms timer), so an append and a vote are acknowledged only after the flush has
//! returned and been completed with real syncs (`sled_durability`): openraft may count
//! this replica in a quorum or trust its vote only once they survive a crash, power
//! loss included. sled keeps one log for all trees and recovers a prefix of it, so a
//! flush also makes every earlier write durable, in order; the committed id, truncations
//! and purges therefore need no flush of their own.

use crate::codec::{decode, encode, index_from_log_key, log_key};
use crate::log_store::{
    acknowledge_append, log_state, AppendContinuity, ConsecutiveEntries, IndexRange,
};
use crate::sled_durability::SledSync;
use crate::types::{LogEntry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const LAST_PURGED_KEY: &str = "last_purged";

/// The raft log in a sled database. Clones share the database.
#[derive(Clone)]
pub struct SledLogStore {
    database: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    sync: Arc<SledSync>,
}

impl SledLogStore {
    /// Open (or create) the sled database in `directory`, and finish a purge that a
    /// crash interrupted.
    pub fn open(directory: &Path) -> io::Result<SledLogStore> {
        let database = sled::Config::new().path(directory).open()?;
        let log = database.open_tree(LOG_TREE)?;
        let meta = database.open_tree(META_TREE)?;
        let sync = Arc::new(SledSync::open(directory)?);
        let store = SledLogStore {
            database,
            log,
            meta,
            sync,
        };
        store.finish_purge()?;
        Ok(store)
    }

    /// Make every write so far durable: sled's flush, then the syncs it leaves out.
    /// Runs on tokio's blocking pool.
    pub async fn flush(&self) -> io::Result<()> {
        let database = self.database.clone();
        let sync = self.sync.clone();
        let task = tokio::task::spawn_blocking(move || {
            database.flush()?;
            sync.sync_after_flush()
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(io::Error::other(format!("sled flush task failed: {error}"))),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes, key)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        self.meta.insert(key, encode(value, key)?)?;
        Ok(())
    }

    fn last_purged(&self) -> io::Result<Option<LogId>> {
        self.read_meta(LAST_PURGED_KEY)
    }

    fn last_entry(&self) -> io::Result<Option<LogEntry>> {
        match self.log.last()? {
            Some((key, value)) => {
                let entry: LogEntry = decode(&value, "log entry")?;
                ConsecutiveEntries::default().check(index_from_log_key(&key)?, &entry)?;
                Ok(Some(entry))
            }
            None => Ok(None),
        }
    }

    /// Remove the entries up to `last_purged` inclusive. Purge records the id first and
    /// removes the entries second, so a crash between the two leaves entries that are
    /// already purged; this removes them.
    fn finish_purge(&self) -> io::Result<()> {
        let Some(last_purged) = self.last_purged()? else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        let mut removed: u64 = 0;
        for key in self.log.range(..=log_key(last_purged.index)).keys() {
            batch.remove(key?);
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(
                removed,
                up_to = last_purged.index,
                "sled log: finished an interrupted purge"
            );
            self.log.apply_batch(batch)?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, io::Error> {
        let Some(range) = IndexRange::from_bounds(&range) else {
            return Ok(Vec::new());
        };
        let end = match range.end {
            Some(end) => Bound::Excluded(log_key(end)),
            None => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        let mut consecutive = ConsecutiveEntries::default();
        for item in self.log.range((Bound::Included(log_key(range.start)), end)) {
            let (key, value) = item?;
            let entry: LogEntry = decode(&value, "log entry")?;
            consecutive.check(index_from_log_key(&key)?, &entry)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = SledLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_entry = self.last_entry()?.map(|entry| entry.log_id);
        Ok(log_state(last_entry, self.last_purged()?))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_meta(VOTE_KEY, vote)?;
        // A vote is a promise to the candidate: it must survive a crash before it is given.
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // No flush: a committed id lost in a crash only means re-applying fewer entries on
        // restart; the next append or vote flush makes it durable anyway.
        self.write_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
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
        let last_index = match self.last_entry()? {
            Some(entry) => Some(entry.log_id.index),
            None => self.last_purged()?.map(|log_id| log_id.index),
        };
        let mut continuity = AppendContinuity::after(last_index);
        let mut batch = sled::Batch::default();
        for entry in entries {
            continuity.check(&entry)?;
            batch.insert(&log_key(entry.log_id.index), encode(&entry, "log entry")?);
        }
        // One batch: the entries become visible to every reader together.
        self.log.apply_batch(batch)?;
        // Flushed before acknowledged: openraft counts this replica towards a commit only
        // after `io_completed`.
        acknowledge_append(callback, self.flush().await)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let range = IndexRange::after(last_log_id.as_ref());
        let mut batch = sled::Batch::default();
        for key in self.log.range(log_key(range.start)..).keys() {
            batch.remove(key?);
        }
        // One atomic batch, so no crash can leave a hole.
        self.log.apply_batch(batch)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        if let Some(last_purged) = self.last_purged()? {
            if log_id.index <= last_purged.index {
                // Already gone; moving the purge point back would claim entries that
                // are no longer there.
                return Ok(());
            }
        }
        // The id first: entries left behind by a crash are removed by `finish_purge`.
        self.write_meta(LAST_PURGED_KEY, &log_id)?;
        self.finish_purge()
    }
}
