//! Node heartbeats, kept in the leader's memory only (never in the log). A new leader
//! gives every node a fresh grace period.

use corral_model::NodeId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodes tracked at most; heartbeats for more are ignored (every node registers first,
/// and the inventory itself is bounded).
const MAX_TRACKED_NODES: usize = corral_model::limits::MAX_NODES;

#[derive(Clone, Default)]
pub struct Liveness {
    last_heartbeat: Arc<Mutex<BTreeMap<NodeId, Instant>>>,
}

impl Liveness {
    pub fn record_heartbeat(&self, node: NodeId) {
        let mut last = self.last_heartbeat.lock().expect("liveness lock");
        if last.len() < MAX_TRACKED_NODES || last.contains_key(&node) {
            last.insert(node, Instant::now());
        }
    }

    /// Every tracked node starts a fresh grace period now.
    pub fn restart_grace(&self) {
        let now = Instant::now();
        for seen in self
            .last_heartbeat
            .lock()
            .expect("liveness lock")
            .values_mut()
        {
            *seen = now;
        }
    }

    pub fn silent_longer_than(&self, grace: Duration) -> Vec<NodeId> {
        let last = self.last_heartbeat.lock().expect("liveness lock");
        last.iter()
            .filter(|(_, seen)| seen.elapsed() > grace)
            .map(|(node, _)| *node)
            .collect()
    }

    /// Stop watching a node until it heartbeats again.
    pub fn forget(&self, node: NodeId) {
        self.last_heartbeat
            .lock()
            .expect("liveness lock")
            .remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_are_reported_and_grace_restarts() {
        let liveness = Liveness::default();
        liveness.record_heartbeat(NodeId(1));
        std::thread::sleep(Duration::from_millis(20));
        liveness.record_heartbeat(NodeId(2));
        assert_eq!(
            liveness.silent_longer_than(Duration::from_millis(10)),
            vec![NodeId(1)]
        );
        liveness.restart_grace();
        assert!(liveness
            .silent_longer_than(Duration::from_millis(10))
            .is_empty());
        liveness.forget(NodeId(1));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            liveness.silent_longer_than(Duration::from_millis(10)),
            vec![NodeId(2)]
        );
    }
}
