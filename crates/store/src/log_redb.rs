//! The raft log on redb 4 (the measured alternative to sled).
//!
//! Two tables in one redb file: `raft_log` maps the index to the encoded entry,
//! `raft_meta` holds the vote, the committed log id and the last purged log id. redb
//! is a copy-on-write B-tree with two commit slots: a commit with
//! `Durability::Immediate` returns after fsync, and after a crash the database opens at
//! the last such commit. Appends, votes and truncations commit that way before they are
//! acknowledged; the committed id and purges commit with `Durability::None` (made
//! durable, in order, by the next immediate commit), because losing them only means
//! re-applying or re-purging a little after a crash. Writes run on tokio's blocking
//! pool so an fsync never stalls a runtime thread.

use crate::codec::{decode, encode, invalid_data};
use crate::log_store::{
    acknowledge_append, log_state, AppendContinuity, ConsecutiveEntries, IndexRange,
};
use crate::types::{LogEntry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const LAST_PURGED_KEY: &str = "last_purged";

/// The raft log in a redb file. Clones share the database.
#[derive(Clone)]
pub struct RedbLogStore {
    database: Arc<Database>,
}

/// A redb error as an io error; corruption is `InvalidData`, as everywhere in this crate.
fn redb_error(error: impl Into<redb::Error>) -> io::Error {
    match error.into() {
        redb::Error::Io(error) => error,
        redb::Error::Corrupted(reason) => {
            invalid_data(format!("redb database is corrupted: {reason}"))
        }
        other => io::Error::other(format!("redb: {other}")),
    }
}

impl RedbLogStore {
    /// Open (or create) the redb database file at `path`.
    pub fn open(path: &Path) -> io::Result<RedbLogStore> {
        let database = Database::create(path).map_err(redb_error)?;
        // Create both tables up front, so readers never meet a missing table.
        let transaction = database.begin_write().map_err(redb_error)?;
        transaction.open_table(LOG_TABLE).map_err(redb_error)?;
        transaction.open_table(META_TABLE).map_err(redb_error)?;
        transaction.commit().map_err(redb_error)?;
        Ok(RedbLogStore {
            database: Arc::new(database),
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let transaction = self.database.begin_read().map_err(redb_error)?;
        let table = transaction.open_table(META_TABLE).map_err(redb_error)?;
        read_meta_in(&table, key)
    }

    fn last_entry(&self) -> io::Result<Option<LogEntry>> {
        let transaction = self.database.begin_read().map_err(redb_error)?;
        let table = transaction.open_table(LOG_TABLE).map_err(redb_error)?;
        last_entry_in(&table)
    }

    /// Run `write` in one write transaction committed with `durability`, on the blocking
    /// pool.
    async fn write<T, F>(&self, durability: Durability, write: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> io::Result<T> + Send + 'static,
    {
        let database = self.database.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut transaction = database.begin_write().map_err(redb_error)?;
            transaction.set_durability(durability).map_err(redb_error)?;
            let value = write(&transaction)?;
            transaction.commit().map_err(redb_error)?;
            Ok(value)
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(io::Error::other(format!("redb write task failed: {error}"))),
        }
    }
}

fn last_entry_in(table: &impl ReadableTable<u64, &'static [u8]>) -> io::Result<Option<LogEntry>> {
    match table.last().map_err(redb_error)? {
        Some((key, value)) => {
            let entry: LogEntry = decode(value.value(), "log entry")?;
            ConsecutiveEntries::default().check(key.value(), &entry)?;
            Ok(Some(entry))
        }
        None => Ok(None),
    }
}

fn read_meta_in<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> io::Result<Option<T>> {
    match table.get(key).map_err(redb_error)? {
        Some(value) => Ok(Some(decode(value.value(), key)?)),
        None => Ok(None),
    }
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, io::Error> {
        let Some(range) = IndexRange::from_bounds(&range) else {
            return Ok(Vec::new());
        };
        let transaction = self.database.begin_read().map_err(redb_error)?;
        let table = transaction.open_table(LOG_TABLE).map_err(redb_error)?;
        let items = match range.end {
            Some(end) => table.range(range.start..end),
            None => table.range(range.start..),
        }
        .map_err(redb_error)?;
        let mut entries = Vec::new();
        let mut consecutive = ConsecutiveEntries::default();
        for item in items {
            let (key, value) = item.map_err(redb_error)?;
            let entry: LogEntry = decode(value.value(), "log entry")?;
            consecutive.check(key.value(), &entry)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = RedbLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_entry = self.last_entry()?.map(|entry| entry.log_id);
        Ok(log_state(last_entry, self.read_meta(LAST_PURGED_KEY)?))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote, VOTE_KEY)?;
        // A vote is a promise to the candidate: it must survive a crash before it is given.
        self.write(Durability::Immediate, move |transaction| {
            let mut table = transaction.open_table(META_TABLE).map_err(redb_error)?;
            table
                .insert(VOTE_KEY, bytes.as_slice())
                .map_err(redb_error)?;
            Ok(())
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = encode(&committed, COMMITTED_KEY)?;
        self.write(Durability::None, move |transaction| {
            let mut table = transaction.open_table(META_TABLE).map_err(redb_error)?;
            table
                .insert(COMMITTED_KEY, bytes.as_slice())
                .map_err(redb_error)?;
            Ok(())
        })
        .await
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
        let mut encoded: Vec<(LogEntry, Vec<u8>)> = Vec::new();
        for entry in entries {
            let bytes = encode(&entry, "log entry")?;
            encoded.push((entry, bytes));
        }
        let written = self
            .write(Durability::Immediate, move |transaction| {
                let mut log = transaction.open_table(LOG_TABLE).map_err(redb_error)?;
                let last_index = match last_entry_in(&log)? {
                    Some(entry) => Some(entry.log_id.index),
                    None => {
                        let meta = transaction.open_table(META_TABLE).map_err(redb_error)?;
                        read_meta_in::<LogId>(&meta, LAST_PURGED_KEY)?.map(|log_id| log_id.index)
                    }
                };
                let mut continuity = AppendContinuity::after(last_index);
                for (entry, bytes) in &encoded {
                    continuity.check(entry)?;
                    log.insert(entry.log_id.index, bytes.as_slice())
                        .map_err(redb_error)?;
                }
                Ok(())
            })
            .await;
        // The commit above returned after fsync: the entries are durable and visible.
        acknowledge_append(callback, written)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let range = IndexRange::after(last_log_id.as_ref());
        // One transaction, so no crash can leave a hole.
        self.write(Durability::Immediate, move |transaction| {
            let mut log = transaction.open_table(LOG_TABLE).map_err(redb_error)?;
            log.retain_in(range.start.., |_, _| false)
                .map_err(redb_error)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = encode(&log_id, LAST_PURGED_KEY)?;
        // The id and the removal commit together.
        self.write(Durability::None, move |transaction| {
            let mut meta = transaction.open_table(META_TABLE).map_err(redb_error)?;
            let last_purged = read_meta_in::<LogId>(&meta, LAST_PURGED_KEY)?;
            if last_purged.is_some_and(|last_purged| log_id.index <= last_purged.index) {
                // Already gone; moving the purge point back would claim entries that are
                // no longer there.
                return Ok(());
            }
            meta.insert(LAST_PURGED_KEY, bytes.as_slice())
                .map_err(redb_error)?;
            let mut log = transaction.open_table(LOG_TABLE).map_err(redb_error)?;
            log.retain_in(..=log_id.index, |_, _| false)
                .map_err(redb_error)?;
            Ok(())
        })
        .await
    }
}
