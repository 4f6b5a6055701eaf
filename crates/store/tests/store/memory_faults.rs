//! The memory disk's fault switch (`MemoryDisk::faults`), which the simulation flips: a
//! full disk refuses every write and changes nothing; a failed fsync fails one write,
//! whose data this incarnation still reads but a reopen (a restart) has lost, with
//! everything appended after it.

use crate::common::*;
use corral_store::{open_memory_storage, LogEntry, LogStore, MemoryDisk, TypeConfig, Vote};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::RaftLogReader;
use std::io;

async fn all_entries(log: &mut LogStore) -> Vec<LogEntry> {
    log.get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .unwrap()
}

async fn read_vote(log: &mut LogStore) -> Option<Vote> {
    log.get_log_reader().await.read_vote().await.unwrap()
}

/// An append that must fail: the error it returns and the one its callback got.
async fn failed_append(log: &mut LogStore, entries: Vec<LogEntry>) -> (io::Error, io::Error) {
    let (sender, receiver) = TypeConfig::oneshot();
    let returned = log
        .append(entries, IOFlushed::signal(sender))
        .await
        .expect_err("the append fails");
    let reported = receiver
        .await
        .expect("the store calls the callback")
        .expect_err("the callback reports the failure");
    (returned, reported)
}

fn log_entries(count: u64) -> Vec<LogEntry> {
    let mut entries = vec![membership(0, 0, &[0]), blank(1, 1)];
    entries.extend(submit_entries(2, count));
    entries
}

#[tokio::test]
async fn a_full_disk_refuses_every_write_and_changes_nothing() {
    let disk = MemoryDisk::default();
    let entries = log_entries(10);
    let mut storage = open_memory_storage(&disk).unwrap();
    append(&mut storage.log, entries[..6].to_vec()).await;
    storage.log.save_vote(&Vote::new(1, 0)).await.unwrap();
    apply(&mut storage.state_machine, entries[..6].to_vec()).await;

    disk.faults().set_full(true);
    assert!(disk.faults().is_full());
    let (returned, reported) = failed_append(&mut storage.log, entries[6..].to_vec()).await;
    assert_eq!(returned.kind(), io::ErrorKind::StorageFull, "{returned}");
    assert_eq!(reported.kind(), io::ErrorKind::StorageFull, "{reported}");
    let vote = storage.log.save_vote(&Vote::new(2, 0)).await.unwrap_err();
    assert_eq!(vote.kind(), io::ErrorKind::StorageFull, "{vote}");
    let committed = storage
        .log
        .save_committed(Some(entries[5].log_id))
        .await
        .unwrap_err();
    assert_eq!(committed.kind(), io::ErrorKind::StorageFull, "{committed}");
    let mut builder = storage
        .state_machine
        .try_create_snapshot_builder(true)
        .await
        .unwrap();
    let snapshot = builder.build_snapshot().await.unwrap_err();
    assert_eq!(snapshot.kind(), io::ErrorKind::StorageFull, "{snapshot}");
    assert_eq!(disk.faults().failures(), 4);

    // Nothing changed, in this incarnation or after a restart.
    assert_eq!(all_entries(&mut storage.log).await, entries[..6].to_vec());
    assert_eq!(read_vote(&mut storage.log).await, Some(Vote::new(1, 0)));
    assert_eq!(storage.log.read_committed().await.unwrap(), None);
    assert!(storage
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .is_none());
    let mut reopened = open_memory_storage(&disk).unwrap();
    assert_eq!(all_entries(&mut reopened.log).await, entries[..6].to_vec());
    // Removals need no space.
    reopened
        .log
        .truncate_after(Some(entries[4].log_id))
        .await
        .unwrap();

    // Freed, the disk takes writes again.
    disk.faults().set_full(false);
    append(&mut reopened.log, entries[5..].to_vec()).await;
    reopened.log.save_vote(&Vote::new(2, 0)).await.unwrap();
    assert_eq!(all_entries(&mut reopened.log).await, entries);
    assert_eq!(read_vote(&mut reopened.log).await, Some(Vote::new(2, 0)));
}

#[tokio::test]
async fn a_failed_fsync_loses_its_write_and_everything_after_it_at_the_next_open() {
    let disk = MemoryDisk::default();
    let entries = log_entries(10);
    let mut storage = open_memory_storage(&disk).unwrap();
    append(&mut storage.log, entries[..4].to_vec()).await;
    storage.log.save_vote(&Vote::new(1, 0)).await.unwrap();

    disk.faults().fail_next_sync();
    assert!(disk.faults().sync_failure_armed());
    let (returned, reported) = failed_append(&mut storage.log, entries[4..7].to_vec()).await;
    assert_eq!(returned.kind(), io::ErrorKind::Other, "{returned}");
    assert!(returned.to_string().contains("fsync failed"), "{returned}");
    assert_eq!(reported.kind(), io::ErrorKind::Other, "{reported}");
    assert!(
        !disk.faults().sync_failure_armed(),
        "one write only: the switch turns itself off"
    );
    // The page cache still shows the write, and a later flush succeeds...
    assert_eq!(all_entries(&mut storage.log).await, entries[..7].to_vec());
    append(&mut storage.log, entries[7..].to_vec()).await;
    disk.faults().fail_next_sync();
    let vote = storage.log.save_vote(&Vote::new(2, 0)).await.unwrap_err();
    assert_eq!(vote.kind(), io::ErrorKind::Other, "{vote}");
    assert_eq!(read_vote(&mut storage.log).await, Some(Vote::new(2, 0)));
    assert_eq!(disk.faults().failures(), 2);

    // ... but a restart finds only what was flushed before the failure: the log up to
    // the lost append, and the vote flushed last.
    let mut reopened = open_memory_storage(&disk).unwrap();
    assert_eq!(all_entries(&mut reopened.log).await, entries[..4].to_vec());
    let state = reopened.log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(entries[3].log_id));
    assert_eq!(read_vote(&mut reopened.log).await, Some(Vote::new(1, 0)));
    // The reopened log goes on from there, durably.
    append(&mut reopened.log, entries[4..].to_vec()).await;
    let mut again = open_memory_storage(&disk).unwrap();
    assert_eq!(all_entries(&mut again.log).await, entries);
}

#[tokio::test]
async fn a_truncated_lost_write_is_not_lost_twice() {
    let disk = MemoryDisk::default();
    let entries = log_entries(6);
    let mut storage = open_memory_storage(&disk).unwrap();
    append(&mut storage.log, entries[..3].to_vec()).await;
    disk.faults().fail_next_sync();
    failed_append(&mut storage.log, entries[3..5].to_vec()).await;
    // Openraft truncates a conflicting suffix and appends anew: the new entries are
    // flushed, so nothing of them is lost at the next open.
    storage
        .log
        .truncate_after(Some(entries[2].log_id))
        .await
        .unwrap();
    append(&mut storage.log, entries[3..].to_vec()).await;
    let mut reopened = open_memory_storage(&disk).unwrap();
    assert_eq!(all_entries(&mut reopened.log).await, entries);
}

#[tokio::test]
async fn a_failed_snapshot_fsync_keeps_the_snapshot_before() {
    let disk = MemoryDisk::default();
    let entries = log_entries(12);
    let mut storage = open_memory_storage(&disk).unwrap();
    append(&mut storage.log, entries.clone()).await;
    apply(&mut storage.state_machine, entries[..6].to_vec()).await;
    let mut builder = storage
        .state_machine
        .try_create_snapshot_builder(true)
        .await
        .unwrap();
    let first = builder.build_snapshot().await.unwrap();
    apply(&mut storage.state_machine, entries[6..].to_vec()).await;

    disk.faults().fail_next_sync();
    let mut builder = storage
        .state_machine
        .try_create_snapshot_builder(true)
        .await
        .unwrap();
    let error = builder.build_snapshot().await.unwrap_err();
    assert!(error.to_string().contains("fsync failed"), "{error}");
    let current = storage
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("the snapshot before");
    assert_eq!(current.meta.last_log_id, first.meta.last_log_id);
    let mut reopened = open_memory_storage(&disk).unwrap();
    let (last_applied, _) = reopened.state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, first.meta.last_log_id);
}
