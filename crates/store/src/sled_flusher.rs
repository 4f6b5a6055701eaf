//! Group commit for the sled log. An append hands its completion callback to one
//! flusher thread and returns as soon as its batch is readable (openraft's contract for
//! `append`); the thread makes everything written so far durable with one flush and
//! completes the callbacks in the order they were handed over. So the leader sends
//! entries to its followers while its own flush runs, instead of after it, and appends
//! that arrive during a flush share the next one.
//!
//! Correctness rests on sled's single log: a flush makes every write issued before it
//! durable, in order. A callback is handed over after its batch was applied, so the
//! flush that completes it covers the batch.

use crate::sled_durability::SledSync;
use crate::types::TypeConfig;
use openraft::storage::IOFlushed;
use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Callbacks waiting for a flush. openraft bounds the appends in flight far below this;
/// reaching it means the disk has stalled, and an append then waits for room.
const MAX_WAITING_CALLBACKS: usize = 65_536;

/// One flush completes at most this many callbacks, so a flood of appends cannot
/// starve the first of them.
const MAX_CALLBACKS_PER_FLUSH: usize = 4_096;

/// The flusher thread and the way to it. Dropping it lets the thread finish what was
/// handed over and joins it, so the database is closed when the last store is dropped.
pub(crate) struct Flusher {
    sender: Option<SyncSender<IOFlushed<TypeConfig>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    pub(crate) fn start(database: sled::Db, sync: Arc<SledSync>) -> io::Result<Flusher> {
        let (sender, receiver) = mpsc::sync_channel(MAX_WAITING_CALLBACKS);
        let thread = std::thread::Builder::new()
            .name("corral-sled-flusher".into())
            .spawn(move || flush_until_closed(&receiver, &database, &sync))?;
        Ok(Flusher {
            sender: Some(sender),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Complete `callback` once everything written before this call is durable.
    pub(crate) fn complete_when_durable(&self, callback: IOFlushed<TypeConfig>) {
        let Some(sender) = &self.sender else {
            callback.io_completed(Err(flusher_gone()));
            return;
        };
        let callback = match sender.try_send(callback) {
            Ok(()) => return,
            Err(TrySendError::Full(callback)) => callback,
            Err(TrySendError::Disconnected(callback)) => {
                callback.io_completed(Err(flusher_gone()));
                return;
            }
        };
        // The disk has stalled behind MAX_WAITING_CALLBACKS appends: wait for room.
        if let Err(mpsc::SendError(callback)) = sender.send(callback) {
            callback.io_completed(Err(flusher_gone()));
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.sender = None;
        let thread = self
            .thread
            .lock()
            .map(|mut thread| thread.take())
            .unwrap_or(None);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn flusher_gone() -> io::Error {
    io::Error::other("the sled flusher thread has stopped")
}

fn flush_until_closed(
    receiver: &Receiver<IOFlushed<TypeConfig>>,
    database: &sled::Db,
    sync: &SledSync,
) {
    while let Ok(first) = receiver.recv() {
        let mut waiting = vec![first];
        while waiting.len() < MAX_CALLBACKS_PER_FLUSH {
            match receiver.try_recv() {
                Ok(callback) => waiting.push(callback),
                Err(_) => break,
            }
        }
        let result = flush(database, sync);
        for callback in waiting {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            };
            callback.io_completed(outcome);
        }
    }
}

/// sled's flush, then the syncs it leaves out (`sled_durability`).
fn flush(database: &sled::Db, sync: &SledSync) -> io::Result<()> {
    database.flush()?;
    sync.sync_after_flush()
}
