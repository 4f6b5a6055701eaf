//! What survives a restart: the log, the vote and the committed id (sled, redb, and the
//! memory engine's `MemoryDisk`); the newest durable snapshot, from which the state
//! machine is rebuilt with the same digest, and the committed tail openraft re-applies
//! on top. Corrupt data on disk is an `InvalidData` error or a skipped snapshot, never a
//! panic; a data directory of the other engine is refused.

use crate::common::*;
use corral_store::{
    open_memory_storage, open_storage, Engine, LogEntry, LogStore, MemoryDisk, Storage,
    StorageOptions, TypeConfig,
};
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, StorageHelper};
use std::io;
use std::path::{Path, PathBuf};

fn options(engine: Engine, directory: &Path) -> StorageOptions {
    StorageOptions {
        engine,
        data_dir: directory.join("data"),
    }
}

/// Opens storage of one engine, again and again over the same data.
enum Reopen {
    Disk(StorageOptions),
    Memory(MemoryDisk),
}

impl Reopen {
    fn open(&self) -> Storage {
        match self {
            Reopen::Disk(options) => open_storage(options).expect("open storage"),
            Reopen::Memory(disk) => open_memory_storage(disk).expect("open storage"),
        }
    }
}

/// A log of every entry kind as openraft writes it: the initial membership at index 0,
/// a leader's blank entry, then the cluster setup and job submissions.
fn mixed_log(submits: u64) -> Vec<LogEntry> {
    let mut entries = vec![membership(0, 0, &[0]), blank(1, 1)];
    let setup = setup_entries(2, 2);
    let first_submit = 2 + setup.len() as u64;
    entries.extend(setup);
    entries.extend(submit_entries(first_submit, submits));
    entries
}

async fn all_entries(log: &mut LogStore) -> Vec<LogEntry> {
    log.get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .unwrap()
}

async fn log_vote_and_committed_survive(reopen: Reopen) {
    let entries = mixed_log(20);
    let last = entries.last().unwrap().log_id;
    let vote = corral_store::Vote::new(3, 0);
    {
        let mut storage = reopen.open();
        for chunk in entries.chunks(7) {
            append(&mut storage.log, chunk.to_vec()).await;
        }
        storage.log.save_vote(&vote).await.unwrap();
        storage
            .log
            .save_committed(Some(entries[15].log_id))
            .await
            .unwrap();
        storage.log.purge(entries[4].log_id).await.unwrap();
        // Make the committed id durable the way a running replica does: the next
        // append or vote flushes it along.
        storage.log.save_vote(&vote).await.unwrap();
    }
    let mut storage = reopen.open();
    let mut reader = storage.log.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
    assert_eq!(
        storage.log.read_committed().await.unwrap(),
        Some(entries[15].log_id)
    );
    let state = storage.log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(entries[4].log_id));
    assert_eq!(state.last_log_id, Some(last));
    assert_eq!(all_entries(&mut storage.log).await, entries[5..].to_vec());

    // And the reopened log goes on where it stopped, and only there.
    let next = last.index + 1;
    append(&mut storage.log, vec![blank(3, next)]).await;
    let hole = storage
        .log
        .append(
            vec![blank(3, next + 2)],
            openraft::storage::IOFlushed::noop(),
        )
        .await
        .unwrap_err();
    assert_eq!(hole.kind(), io::ErrorKind::InvalidInput, "{hole}");
    storage
        .log
        .truncate_after(Some(entries[10].log_id))
        .await
        .unwrap();
    assert_eq!(
        all_entries(&mut storage.log).await,
        entries[5..=10].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_log_vote_and_committed_survive_restart() {
    let directory = tempfile::tempdir().unwrap();
    log_vote_and_committed_survive(Reopen::Disk(options(Engine::Sled, directory.path()))).await;
}

/// Many sled appends in a row: each callback completes, and every entry whose callback
/// completed survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_appends_in_a_row_are_each_acknowledged_durable() {
    let directory = tempfile::tempdir().unwrap();
    let reopen = Reopen::Disk(options(Engine::Sled, directory.path()));
    let entries = mixed_log(200);
    {
        let mut storage = reopen.open();
        let mut acknowledgements = Vec::new();
        for chunk in entries.chunks(3) {
            let (sender, receiver) = TypeConfig::oneshot();
            storage
                .log
                .append(chunk.to_vec(), openraft::storage::IOFlushed::signal(sender))
                .await
                .expect("append");
            acknowledgements.push(receiver);
        }
        for acknowledgement in acknowledgements {
            acknowledgement
                .await
                .expect("the flusher calls every callback")
                .expect("the append is durable");
        }
    }
    let mut storage = reopen.open();
    assert_eq!(all_entries(&mut storage.log).await, entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_log_vote_and_committed_survive_restart() {
    let directory = tempfile::tempdir().unwrap();
    log_vote_and_committed_survive(Reopen::Disk(options(Engine::Redb, directory.path()))).await;
}

#[tokio::test]
async fn memory_disk_keeps_log_vote_and_committed_across_reopen() {
    log_vote_and_committed_survive(Reopen::Memory(MemoryDisk::default())).await;
}

/// Apply a log, snapshot part way, apply the rest, commit; after a restart the state
/// machine comes back at the snapshot with the snapshot's digest, and openraft's
/// startup re-applies the committed tail to the digest before the restart.
async fn state_machine_recovers_from_snapshot_and_tail(reopen: Reopen) {
    let entries = mixed_log(40);
    let snapshot_at = 25;
    let last = entries.last().unwrap().log_id;
    let (snapshot_digest, final_digest) = {
        let mut storage = reopen.open();
        append(&mut storage.log, entries.clone()).await;
        apply(&mut storage.state_machine, entries[..snapshot_at].to_vec()).await;
        let snapshot_digest = storage.state_machine.read(|state| state.digest());
        let mut builder = storage
            .state_machine
            .try_create_snapshot_builder(true)
            .await
            .unwrap();
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(
            snapshot.meta.last_log_id,
            Some(entries[snapshot_at - 1].log_id)
        );
        apply(&mut storage.state_machine, entries[snapshot_at..].to_vec()).await;
        storage.log.save_committed(Some(last)).await.unwrap();
        storage
            .log
            .save_vote(&corral_store::Vote::new(1, 0))
            .await
            .unwrap();
        (
            snapshot_digest,
            storage.state_machine.read(|state| state.digest()),
        )
    };
    assert_ne!(snapshot_digest, final_digest, "the tail changes the state");

    let mut storage = reopen.open();
    let (last_applied, membership) = storage.state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(entries[snapshot_at - 1].log_id));
    assert_eq!(membership.log_id(), &Some(log_id(0, 0)));
    assert_eq!(
        storage.state_machine.read(|state| state.digest()),
        snapshot_digest
    );
    let current = storage
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(current.meta.last_log_id, last_applied);

    StorageHelper::new(&mut storage.log, &mut storage.state_machine)
        .with_id(0)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(storage.state_machine.last_applied(), Some(last));
    assert_eq!(
        storage.state_machine.read(|state| state.digest()),
        final_digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_state_machine_recovers_from_snapshot_and_tail() {
    let directory = tempfile::tempdir().unwrap();
    state_machine_recovers_from_snapshot_and_tail(Reopen::Disk(options(
        Engine::Sled,
        directory.path(),
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_state_machine_recovers_from_snapshot_and_tail() {
    let directory = tempfile::tempdir().unwrap();
    state_machine_recovers_from_snapshot_and_tail(Reopen::Disk(options(
        Engine::Redb,
        directory.path(),
    )))
    .await;
}

#[tokio::test]
async fn memory_state_machine_recovers_from_snapshot_and_tail() {
    state_machine_recovers_from_snapshot_and_tail(Reopen::Memory(MemoryDisk::default())).await;
}

fn snapshot_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("snapshots"))
        .unwrap()
        .map(|item| item.unwrap().path())
        .collect();
    files.sort();
    files
}

async fn build_snapshot(storage: &mut Storage) {
    let mut builder = storage
        .state_machine
        .try_create_snapshot_builder(true)
        .await
        .unwrap();
    builder.build_snapshot().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_newest_snapshot_falls_back_to_an_older_valid_one() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(Engine::Sled, directory.path());
    let entries = mixed_log(10);
    let older_digest;
    {
        let mut storage = open_storage(&options).unwrap();
        apply(&mut storage.state_machine, entries[..8].to_vec()).await;
        older_digest = storage.state_machine.read(|state| state.digest());
        build_snapshot(&mut storage).await;
        let older = snapshot_files(&options.data_dir);
        assert_eq!(older.len(), 1);
        let kept = directory.path().join("older.bin");
        std::fs::copy(&older[0], &kept).unwrap();

        apply(&mut storage.state_machine, entries[8..].to_vec()).await;
        build_snapshot(&mut storage).await;
        let newer = snapshot_files(&options.data_dir);
        assert_eq!(newer.len(), 1, "older snapshots are deleted: {newer:?}");
        assert_ne!(newer, older);
        // Put the older one back and flip a byte in the middle of the newer one.
        std::fs::copy(&kept, &older[0]).unwrap();
        let mut bytes = std::fs::read(&newer[0]).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&newer[0], bytes).unwrap();
    }
    let mut storage = open_storage(&options).unwrap();
    let (last_applied, _) = storage.state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(entries[7].log_id));
    assert_eq!(
        storage.state_machine.read(|state| state.digest()),
        older_digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_foreign_snapshot_files_are_skipped() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(Engine::Redb, directory.path());
    {
        let mut storage = open_storage(&options).unwrap();
        apply(&mut storage.state_machine, mixed_log(3)).await;
        build_snapshot(&mut storage).await;
        let files = snapshot_files(&options.data_dir);
        let bytes = std::fs::read(&files[0]).unwrap();
        std::fs::write(&files[0], &bytes[..bytes.len() - 9]).unwrap();
        std::fs::write(
            options
                .data_dir
                .join("snapshots/snapshot-99999999999999999999.bin"),
            b"hello",
        )
        .unwrap();
        std::fs::write(
            options.data_dir.join("snapshots/snapshot-7.bin.tmp"),
            b"half",
        )
        .unwrap();
    }
    let mut storage = open_storage(&options).unwrap();
    let (last_applied, _) = storage.state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, None, "no snapshot checks out: start empty");
    assert!(storage
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .is_none());
    assert!(
        !options
            .data_dir
            .join("snapshots/snapshot-7.bin.tmp")
            .exists(),
        "temporary files are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_sled_log_record_is_invalid_data() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(Engine::Sled, directory.path());
    {
        let mut storage = open_storage(&options).unwrap();
        append(&mut storage.log, mixed_log(5)).await;
    }
    {
        let database = sled::open(options.data_dir.join("sled")).unwrap();
        let log = database.open_tree("raft_log").unwrap();
        // The current format version, then a body that does not decode.
        log.insert(4u64.to_be_bytes(), &[2, 0xff, 0xff, 0xff][..])
            .unwrap();
        database.flush().unwrap();
    }
    let mut storage = open_storage(&options).unwrap();
    let error = storage
        .log
        .get_log_reader()
        .await
        .try_get_log_entries(1..10)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    // Entries around it still read.
    assert_eq!(
        storage
            .log
            .get_log_reader()
            .await
            .try_get_log_entries(1..4)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_redb_log_record_is_invalid_data() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(Engine::Redb, directory.path());
    {
        let mut storage = open_storage(&options).unwrap();
        append(&mut storage.log, mixed_log(5)).await;
        storage
            .log
            .save_vote(&corral_store::Vote::new(2, 0))
            .await
            .unwrap();
    }
    {
        let database = redb::Database::create(options.data_dir.join("raft-log.redb")).unwrap();
        let transaction = database.begin_write().unwrap();
        {
            let mut meta = transaction
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("raft_meta"))
                .unwrap();
            meta.insert("vote", &[255u8, 0][..]).unwrap();
        }
        transaction.commit().unwrap();
    }
    let mut storage = open_storage(&options).unwrap();
    let error = storage
        .log
        .get_log_reader()
        .await
        .read_vote()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("format version"), "{error}");
}

#[test]
fn a_data_directory_of_the_other_engine_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    drop(open_storage(&options(Engine::Sled, directory.path())).unwrap());
    let refused = open_storage(&options(Engine::Redb, directory.path()))
        .err()
        .expect("refused");
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
    assert!(
        refused.to_string().contains("holds a sled log"),
        "{refused}"
    );
    // The configured engine still opens it.
    drop(open_storage(&options(Engine::Sled, directory.path())).unwrap());
}

#[test]
fn engine_names_parse_and_serialize_lowercase() {
    for engine in Engine::ALL {
        assert_eq!(engine.name().parse::<Engine>().unwrap(), engine);
    }
    assert!("rocksdb".parse::<Engine>().is_err());
    assert_eq!(Engine::default(), Engine::Sled);
    let _ = TypeConfig::default();
}

/// An entry over sled's blob threshold (128 KiB) goes to a file of its own under
/// `blobs/`, which the store syncs along with the log; it reads back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_large_entries_survive_restart() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(Engine::Sled, directory.path());
    let mut large = proposal(TENANT_USER, START_MS, job_submit(1));
    if let corral_model::Command::JobSubmit(spec) = &mut large.writes[0].command {
        for variable in 0..64 {
            spec.environment
                .insert(format!("VARIABLE_{variable}"), "x".repeat(4_096));
        }
    }
    let entries = vec![
        membership(0, 0, &[0]),
        normal(1, 1, large.clone()),
        blank(1, 2),
    ];
    {
        let mut storage = open_storage(&options).unwrap();
        append(&mut storage.log, entries.clone()).await;
    }
    let blobs = std::fs::read_dir(options.data_dir.join("sled/blobs"))
        .unwrap()
        .count();
    assert!(blobs >= 1, "the large entry is a sled blob");
    let mut storage = open_storage(&options).unwrap();
    assert_eq!(all_entries(&mut storage.log).await, entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_is_cached_per_applied_index_and_a_loaded_snapshot_keeps_its_bytes() {
    let directory = tempfile::tempdir().unwrap();
    let options = options(Engine::Sled, directory.path());
    let entries = mixed_log(12);
    let (digest, encoded) = {
        let mut storage = open_storage(&options).unwrap();
        apply(&mut storage.state_machine, entries[..10].to_vec()).await;
        let digest = storage.state_machine.digest();
        assert_eq!(digest, storage.state_machine.read(|state| state.digest()));
        assert_eq!(storage.state_machine.digest(), digest, "cached");
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(storage.state_machine.digest_hex().await, hex);
        build_snapshot(&mut storage).await;
        let encoded = storage.state_machine.read(|state| state.encode_snapshot());
        // A blank entry changes nothing in the state: the cached digest still holds.
        apply(
            &mut storage.state_machine,
            vec![blank(2, entries.len() as u64)],
        )
        .await;
        assert_eq!(storage.state_machine.digest(), digest);
        (digest, encoded)
    };
    let mut storage = open_storage(&options).unwrap();
    assert_eq!(storage.state_machine.digest(), digest);
    let current = storage
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(
        &current.snapshot[..],
        &encoded[..],
        "the loaded snapshot's bytes"
    );
    apply(&mut storage.state_machine, entries[10..].to_vec()).await;
    let after = storage.state_machine.digest();
    assert_ne!(after, digest, "a new index, a new digest");
    assert_eq!(after, storage.state_machine.read(|state| state.digest()));
}
