//! openraft storage for corral: the raft log, the vote and the committed log id on one
//! of three engines (sled, the default; redb; memory for the simulation), and the state
//! machine over `corral_state::State`, recovered at start from the newest durable
//! snapshot plus the committed log tail.
//!
//! A data directory holds
//!
//! ```text
//! <data_dir>/sled/            the sled database (engine = "sled")
//! <data_dir>/raft-log.redb    the redb database (engine = "redb")
//! <data_dir>/snapshots/       snapshot-<index>.bin, the newest durable snapshot
//! ```
//!
//! `open_storage` refuses a data directory written by the other disk engine rather than
//! start with an empty log next to old snapshots.

mod codec;
mod log_memory;
mod log_redb;
mod log_sled;
mod log_store;
mod private_files;
mod runtime;
mod sled_durability;
mod snapshot_bytes;
mod snapshot_files;
mod state_machine;
mod types;

pub use log_memory::{DiskFaults, MemoryLogStore};
pub use log_redb::RedbLogStore;
pub use log_sled::SledLogStore;
pub use log_store::LogStore;
pub use runtime::{unseeded_uses, SeededRuntime};
pub use snapshot_bytes::SnapshotBytes;
pub use state_machine::{
    EntryObserver, StateMachineSnapshotBuilder, StateMachineStore, EVENT_CHANNEL_CAPACITY,
};
pub use types::{
    AppliedSummary, ApplyOutcome, EntryPayload, LogEntry, LogId, Membership, NodeId, Proposal,
    ProposalOutcome, Raft, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
    Vote, Write,
};

use serde::{Deserialize, Serialize};
use snapshot_files::MemorySnapshotSlot;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

const SLED_DIRECTORY: &str = "sled";
const REDB_FILE: &str = "raft-log.redb";
const SNAPSHOT_DIRECTORY: &str = "snapshots";

/// Which storage engine holds the raft log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// sled 0.34: the design's store; every append and vote is flushed (fsync) before
    /// it is acknowledged.
    #[default]
    Sled,
    /// redb 4: every append and vote commits with `Durability::Immediate` (fsync).
    Redb,
    /// In memory, nothing survives the process: tests and the simulation.
    Memory,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Sled, Engine::Redb, Engine::Memory];

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
            Engine::Memory => "memory",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(text: &str) -> Result<Engine, String> {
        Engine::ALL
            .into_iter()
            .find(|engine| engine.name() == text)
            .ok_or_else(|| {
                format!("unknown storage engine {text:?}; expected sled, redb or memory")
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    pub engine: Engine,
    /// Created if missing; unused by the memory engine.
    pub data_dir: PathBuf,
}

/// One replica's storage: hand both to `Raft::new`, keep clones of the state machine
/// to read the state and follow applied events.
pub struct Storage {
    pub log: LogStore,
    pub state_machine: StateMachineStore,
}

/// Open the replica's storage on the configured engine, creating `data_dir` (disk
/// engines) and recovering the state machine from the newest durable snapshot. Openraft
/// re-applies the committed log tail when the `Raft` starts.
pub fn open_storage(options: &StorageOptions) -> io::Result<Storage> {
    let data_dir = &options.data_dir;
    match options.engine {
        Engine::Memory => open_memory_storage(&MemoryDisk::default()),
        Engine::Sled => {
            refuse_other_engine(data_dir, REDB_FILE, Engine::Redb, Engine::Sled)?;
            create_data_dir(data_dir)?;
            let log = SledLogStore::open(&data_dir.join(SLED_DIRECTORY))?;
            let state_machine =
                StateMachineStore::open_directory(&data_dir.join(SNAPSHOT_DIRECTORY))?;
            // sled creates its files with the process umask; narrow what it made.
            private_files::restrict_tree(data_dir)?;
            Ok(Storage {
                log: LogStore::Sled(log),
                state_machine,
            })
        }
        Engine::Redb => {
            refuse_other_engine(data_dir, SLED_DIRECTORY, Engine::Sled, Engine::Redb)?;
            create_data_dir(data_dir)?;
            let log = RedbLogStore::open(&data_dir.join(REDB_FILE))?;
            let state_machine =
                StateMachineStore::open_directory(&data_dir.join(SNAPSHOT_DIRECTORY))?;
            private_files::restrict_tree(data_dir)?;
            Ok(Storage {
                log: LogStore::Redb(log),
                state_machine,
            })
        }
    }
}

/// Create the data directory and make its entry durable, so a power loss right after
/// the first start cannot lose the whole directory. It holds every tenant's jobs and
/// environments, so it is private to the replica's user: the directory tree is made
/// 0700 and its files 0600, also when an older build left them wider.
fn create_data_dir(data_dir: &Path) -> io::Result<()> {
    private_files::create_private_dir(data_dir)?;
    if let Some(parent) = data_dir
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::File::open(parent)?.sync_all()?;
    }
    private_files::restrict_tree(data_dir)
}

fn refuse_other_engine(
    data_dir: &Path,
    other_path: &str,
    other: Engine,
    configured: Engine,
) -> io::Result<()> {
    let path = data_dir.join(other_path);
    if path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "data directory {} holds a {other} log ({}) but the configured engine is {configured}; \
                 configure engine = \"{other}\" or use another data directory",
                data_dir.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The memory engine's "disk": what a replica keeps across a simulated restart (the log,
/// vote, committed id and current snapshot). Clones share it; the state machine itself
/// is rebuilt on every open, as after a real restart. Its fault switch (`faults`) makes
/// it full or fail an fsync (`DiskFaults`; the writes a failed fsync lost are gone at
/// the next open).
#[derive(Clone, Debug)]
pub struct MemoryDisk {
    log: MemoryLogStore,
    snapshot: MemorySnapshotSlot,
    faults: DiskFaults,
}

impl Default for MemoryDisk {
    fn default() -> MemoryDisk {
        let faults = DiskFaults::default();
        MemoryDisk {
            log: MemoryLogStore::with_faults(faults.clone()),
            snapshot: MemorySnapshotSlot::with_faults(faults.clone()),
            faults,
        }
    }
}

impl MemoryDisk {
    /// The disk's fault switch (shared by its log and its snapshot slot).
    pub fn faults(&self) -> &DiskFaults {
        &self.faults
    }
}

/// Open storage on the memory engine over `disk`: a fresh disk gives empty storage, a
/// disk of an earlier open gives that replica back after a "restart", without the
/// writes whose fsync failed.
pub fn open_memory_storage(disk: &MemoryDisk) -> io::Result<Storage> {
    disk.log.recover()?;
    Ok(Storage {
        log: LogStore::Memory(disk.log.clone()),
        state_machine: StateMachineStore::open_memory(disk.snapshot.clone())?,
    })
}
