//! A node's file removal, off its event loop: the records and exit files of forgotten
//! replicas, and old replica directories.
//!
//! Removing a file can take milliseconds: freeing its blocks may wait for the disk (on
//! a file system mounted with `discard` the kernel trims them before `unlink` returns;
//! 3.4 ms per fsynced 200-byte file on the benchmark VM, against 33 µs for a rename).
//! A busy node forgets hundreds of replicas a second, so its loop only renames their
//! files into the node's trash directory ([`NodeDirs::discard_record`]) and asks this
//! task to remove them. Renaming at once, rather than removing later, also keeps a
//! replica started again under the same key safe from a late removal of its files.
//!
//! Chores are queued in a small bounded channel and done one at a time on a blocking
//! thread (inline on the task when the environment says so, see [`BlockingWork`]); a chore that does not fit is dropped, which loses nothing: every chore ends
//! by emptying the trash, and pruning is asked for again on the node's next prune tick.

use crate::dirs::{NodeDirs, MAX_TRASH_REMOVED};
use crate::environment::BlockingWork;
use crate::reconcile::ReplicaKey;
use std::collections::BTreeSet;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Chores waiting at most.
const CHORE_QUEUE: usize = 4;

enum Chore {
    EmptyTrash,
    /// [`NodeDirs::prune_replica_dirs`] with these arguments, then empty the trash.
    Prune {
        keep: BTreeSet<ReplicaKey>,
        retained: usize,
        modified_before: SystemTime,
    },
}

/// The node loop's handle on its janitor task; the task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Janitor {
    chores: mpsc::Sender<Chore>,
}

impl Janitor {
    /// Starts the task, which first empties what an earlier agent left in the trash;
    /// its removals run where `blocking` says. Must be called inside a Tokio runtime.
    pub(crate) fn start(dirs: NodeDirs, blocking: BlockingWork) -> Janitor {
        let (chores, receiver) = mpsc::channel(CHORE_QUEUE);
        let janitor = Janitor { chores };
        janitor.empty_trash();
        tokio::spawn(work(
            dirs,
            blocking,
            receiver,
            janitor.chores.clone().downgrade(),
        ));
        janitor
    }

    /// Asks for the trash to be emptied (see the module documentation for why a full
    /// queue may drop this).
    pub(crate) fn empty_trash(&self) {
        let _ = self.chores.try_send(Chore::EmptyTrash);
    }

    /// Asks for old replica directories to be removed (see
    /// [`NodeDirs::prune_replica_dirs`]).
    pub(crate) fn prune(
        &self,
        keep: BTreeSet<ReplicaKey>,
        retained: usize,
        modified_before: SystemTime,
    ) {
        let chore = Chore::Prune {
            keep,
            retained,
            modified_before,
        };
        if self.chores.try_send(chore).is_err() {
            debug!("the janitor is busy; pruning at the next tick");
        }
    }
}

async fn work(
    dirs: NodeDirs,
    blocking: BlockingWork,
    mut chores: mpsc::Receiver<Chore>,
    // Weak, so that dropping the node's [`Janitor`] ends this task.
    again: mpsc::WeakSender<Chore>,
) {
    while let Some(chore) = chores.recv().await {
        let dirs = dirs.clone();
        let done = blocking
            .run(move || {
                let pruned = match chore {
                    Chore::EmptyTrash => 0,
                    Chore::Prune {
                        keep,
                        retained,
                        modified_before,
                    } => dirs.prune_replica_dirs(&keep, retained, modified_before),
                };
                (pruned, dirs.empty_trash())
            })
            .await;
        match done {
            Ok((pruned, removed)) => {
                if pruned > 0 || removed > 0 {
                    debug!("removed {pruned} replica directories and {removed} trashed files");
                }
                // A full pass may have left more behind.
                if removed >= MAX_TRASH_REMOVED {
                    if let Some(again) = again.upgrade() {
                        let _ = again.try_send(Chore::EmptyTrash);
                    }
                }
            }
            Err(error) => warn!("removing files failed: {error}"),
        }
    }
}
