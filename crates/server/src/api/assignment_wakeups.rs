//! Which assignment streams an applied batch wakes. One task per replica follows the
//! state machine's applied batches, computes once per batch the nodes whose desired
//! state its events may change (`convert::BatchReach`), and bumps those nodes' version
//! counters; each `WatchAssignments` stream waits on its node's counter only. So a batch
//! costs one pass over its events plus one wake-up per affected stream, not one scan
//! per node, and an idle stream costs nothing.
//!
//! A wake-up means "re-read the node's whole view": counters coalesce (a stream that
//! was busy sees one change for many), which is safe because the view is recomputed
//! from the state. When the follower may have missed batches (it lagged behind the
//! broadcast, or a snapshot replaced the state) it wakes every stream.

use crate::api::convert::{AffectedNodes, BatchReach};
use corral_model::limits::MAX_NODES;
use corral_model::NodeId;
use corral_store::StateMachineStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tonic::Status;

/// Assignment streams one node may hold open at once: an agent holds one, and a
/// restarted agent briefly a second while the first is noticed gone.
pub(crate) const MAX_ASSIGNMENT_STREAMS_PER_NODE: usize = 8;

/// Node → the version counter its streams wait on. Clones share it.
#[derive(Clone, Default)]
pub(crate) struct AssignmentWakeups {
    nodes: Arc<Mutex<BTreeMap<NodeId, Watched>>>,
}

/// A node with open streams: its counter and how many streams wait on it.
struct Watched {
    version: watch::Sender<u64>,
    streams: usize,
}

/// One open stream's wait on its node; the node leaves the registry when its last
/// subscription is dropped.
pub(crate) struct Subscription {
    wakeups: AssignmentWakeups,
    node: NodeId,
    version: watch::Receiver<u64>,
}

impl AssignmentWakeups {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, Watched>> {
        // Nothing panics while holding the lock; recover the map rather than poison
        // every later stream.
        self.nodes.lock().unwrap_or_else(|error| error.into_inner())
    }

    /// Wait on `node`'s changes from now on. Subscribe before reading the first view,
    /// so no change between the two is missed.
    pub(crate) fn subscribe(&self, node: NodeId) -> Result<Subscription, Status> {
        let mut nodes = self.lock();
        if !nodes.contains_key(&node) && nodes.len() >= MAX_NODES {
            return Err(Status::resource_exhausted(format!(
                "assignment streams are open for {MAX_NODES} nodes already"
            )));
        }
        let watched = nodes.entry(node).or_insert_with(|| Watched {
            version: watch::channel(0).0,
            streams: 0,
        });
        if watched.streams >= MAX_ASSIGNMENT_STREAMS_PER_NODE {
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_ASSIGNMENT_STREAMS_PER_NODE} assignment streams per node; \
                 close one first"
            )));
        }
        watched.streams += 1;
        let version = watched.version.subscribe();
        Ok(Subscription {
            wakeups: self.clone(),
            node,
            version,
        })
    }

    /// Wake the streams of the affected nodes (those with none open cost a look-up).
    pub(crate) fn wake(&self, affected: &AffectedNodes) {
        let nodes = self.lock();
        let bump = |watched: &Watched| {
            watched
                .version
                .send_modify(|version| *version = version.wrapping_add(1));
        };
        match affected {
            AffectedNodes::All => nodes.values().for_each(bump),
            AffectedNodes::Some(affected) => affected
                .iter()
                .filter_map(|node| nodes.get(node))
                .for_each(bump),
        }
    }

    /// Follow the applied batches of `state_machine` and wake the streams of the nodes
    /// each affects, until the state machine goes away. Subscribed when called (before
    /// the returned task first runs), so no batch applied after the call is missed.
    pub(crate) fn follow(
        self,
        state_machine: StateMachineStore,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut applied = state_machine.subscribe();
        let mut installed = state_machine.installed_snapshots();
        async move {
            loop {
                tokio::select! {
                    batch = applied.recv() => match batch {
                        Ok(batch) => {
                            let reach = BatchReach::of(&batch);
                            let affected = if reach.needs_state() {
                                state_machine.read(|state| reach.resolve(Some(state)))
                            } else {
                                reach.resolve(None)
                            };
                            self.wake(&affected);
                        }
                        // Batches were missed: every view may have changed.
                        Err(RecvError::Lagged(_)) => self.wake(&AffectedNodes::All),
                        Err(RecvError::Closed) => return,
                    },
                    changed = installed.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        self.wake(&AffectedNodes::All);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    fn streams_of(&self, node: NodeId) -> usize {
        self.lock().get(&node).map_or(0, |watched| watched.streams)
    }

    #[cfg(test)]
    fn watched_nodes(&self) -> usize {
        self.lock().len()
    }
}

impl Subscription {
    /// Wait until the node's view may have changed since it was last marked seen.
    /// Never fails while the subscription lives (it keeps its node's counter).
    pub(crate) async fn changed(&mut self) {
        // The sender lives in the registry as long as this subscription does.
        let _ = self.version.changed().await;
    }

    /// Mark every change so far as seen: call it before reading the view, so a change
    /// applied after the read wakes the stream again.
    pub(crate) fn mark_seen(&mut self) {
        self.version.borrow_and_update();
    }

    #[cfg(test)]
    fn has_changed(&self) -> bool {
        self.version.has_changed().unwrap_or(false)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut nodes = self.wakeups.lock();
        let last = match nodes.get_mut(&self.node) {
            Some(watched) => {
                assert!(watched.streams > 0, "a subscription of a node with none");
                watched.streams -= 1;
                watched.streams == 0
            }
            None => false,
        };
        if last {
            nodes.remove(&self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn some(nodes: &[u64]) -> AffectedNodes {
        AffectedNodes::Some(
            nodes
                .iter()
                .map(|node| NodeId(*node))
                .collect::<BTreeSet<_>>(),
        )
    }

    #[test]
    fn a_batch_wakes_only_the_affected_nodes_streams() {
        let wakeups = AssignmentWakeups::default();
        let mut one = wakeups.subscribe(NodeId(1)).unwrap();
        let mut one_again = wakeups.subscribe(NodeId(1)).unwrap();
        let mut two = wakeups.subscribe(NodeId(2)).unwrap();
        assert!(!one.has_changed() && !two.has_changed());
        wakeups.wake(&some(&[1, 3]));
        assert!(one.has_changed() && one_again.has_changed());
        assert!(!two.has_changed());
        wakeups.wake(&some(&[]));
        assert!(!two.has_changed());
        one.mark_seen();
        one_again.mark_seen();
        wakeups.wake(&AffectedNodes::All);
        assert!(one.has_changed() && one_again.has_changed() && two.has_changed());
        // Nothing is kept for a node with no stream.
        assert_eq!(wakeups.watched_nodes(), 2);
        two.mark_seen();
        assert!(!two.has_changed());
    }

    #[test]
    fn changes_coalesce_and_none_is_missed_between_seen_and_read() {
        let wakeups = AssignmentWakeups::default();
        let mut stream = wakeups.subscribe(NodeId(1)).unwrap();
        wakeups.wake(&some(&[1]));
        wakeups.wake(&some(&[1]));
        stream.mark_seen();
        assert!(!stream.has_changed(), "two wake-ups are one re-read");
        // A change after the mark (while the view is read) wakes the stream again.
        wakeups.wake(&some(&[1]));
        assert!(stream.has_changed());
    }

    #[tokio::test]
    async fn a_woken_stream_returns_from_changed() {
        let wakeups = AssignmentWakeups::default();
        let mut stream = wakeups.subscribe(NodeId(4)).unwrap();
        let waker = wakeups.clone();
        let waiting = tokio::spawn(async move {
            stream.changed().await;
            stream
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        waker.wake(&some(&[4]));
        let stream = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("the task ended");
        drop(stream);
        assert_eq!(waker.watched_nodes(), 0);
    }

    #[test]
    fn a_node_leaves_the_registry_with_its_last_stream() {
        let wakeups = AssignmentWakeups::default();
        let first = wakeups.subscribe(NodeId(1)).unwrap();
        let second = wakeups.subscribe(NodeId(1)).unwrap();
        assert_eq!(wakeups.streams_of(NodeId(1)), 2);
        drop(first);
        assert_eq!(wakeups.streams_of(NodeId(1)), 1);
        assert_eq!(wakeups.watched_nodes(), 1);
        drop(second);
        assert_eq!(wakeups.watched_nodes(), 0);
        // Waking a node nobody watches is a no-op.
        wakeups.wake(&some(&[1]));
        assert_eq!(wakeups.watched_nodes(), 0);
    }

    #[test]
    fn streams_per_node_are_bounded() {
        let wakeups = AssignmentWakeups::default();
        let held: Vec<Subscription> = (0..MAX_ASSIGNMENT_STREAMS_PER_NODE)
            .map(|_| wakeups.subscribe(NodeId(1)).unwrap())
            .collect();
        let refused = wakeups.subscribe(NodeId(1)).err().expect("over the bound");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            wakeups.streams_of(NodeId(1)),
            MAX_ASSIGNMENT_STREAMS_PER_NODE
        );
        // Another node is not affected, and a closed stream frees a slot.
        drop(wakeups.subscribe(NodeId(2)).unwrap());
        drop(held);
        assert!(wakeups.subscribe(NodeId(1)).is_ok());
    }
}
