//! Node heartbeats and the usage they carry, kept in the leader's memory only (never in
//! the log: they change every second and matter only to the current leader). A new
//! leader gives every node a fresh grace period.

use corral_model::NodeId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock, not the system's: the simulation controls it.
use tokio::time::Instant;

/// Nodes tracked at most; heartbeats for more are ignored (every node registers first,
/// and the inventory itself is bounded).
const MAX_TRACKED_NODES: usize = corral_model::limits::MAX_NODES;

/// What an agent measured on its node, as of its last heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeUsage {
    pub(crate) cpu_used_millicores: u64,
    pub(crate) memory_used_mib: u64,
    pub(crate) accelerator_utilization_percent: u32,
    /// False when nothing measures the node's accelerators (the figure is unknown).
    pub(crate) accelerators_measured: bool,
    pub(crate) running_processes: u32,
}

#[derive(Clone, Debug)]
struct NodeReport {
    last_heartbeat: Instant,
    usage: NodeUsage,
}

/// A node's last report with its age.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeReportView {
    pub(crate) heartbeat_age: Duration,
    pub(crate) usage: NodeUsage,
}

#[derive(Clone, Default)]
pub(crate) struct Liveness {
    reports: Arc<Mutex<BTreeMap<NodeId, NodeReport>>>,
}

impl Liveness {
    pub(crate) fn record_report(&self, node: NodeId, usage: NodeUsage) {
        let mut reports = self.reports.lock().expect("liveness lock");
        if reports.len() < MAX_TRACKED_NODES || reports.contains_key(&node) {
            reports.insert(
                node,
                NodeReport {
                    last_heartbeat: Instant::now(),
                    usage,
                },
            );
        }
    }

    /// Every tracked node starts a fresh grace period now.
    pub(crate) fn restart_grace(&self) {
        let now = Instant::now();
        for report in self.reports.lock().expect("liveness lock").values_mut() {
            report.last_heartbeat = now;
        }
    }

    pub(crate) fn silent_longer_than(&self, grace: Duration) -> Vec<NodeId> {
        let reports = self.reports.lock().expect("liveness lock");
        reports
            .iter()
            .filter(|(_, report)| report.last_heartbeat.elapsed() > grace)
            .map(|(node, _)| *node)
            .collect()
    }

    /// Nodes heard from within `grace`.
    pub(crate) fn heard_within(&self, grace: Duration) -> Vec<NodeId> {
        let reports = self.reports.lock().expect("liveness lock");
        reports
            .iter()
            .filter(|(_, report)| report.last_heartbeat.elapsed() <= grace)
            .map(|(node, _)| *node)
            .collect()
    }

    pub(crate) fn report(&self, node: NodeId) -> Option<NodeReportView> {
        let reports = self.reports.lock().expect("liveness lock");
        reports.get(&node).map(|report| NodeReportView {
            heartbeat_age: report.last_heartbeat.elapsed(),
            usage: report.usage.clone(),
        })
    }

    /// Stop watching a node until it heartbeats again.
    pub(crate) fn forget(&self, node: NodeId) {
        self.reports.lock().expect("liveness lock").remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_are_reported_and_grace_restarts() {
        let liveness = Liveness::default();
        liveness.record_report(NodeId(1), NodeUsage::default());
        std::thread::sleep(Duration::from_millis(20));
        liveness.record_report(NodeId(2), NodeUsage::default());
        assert_eq!(
            liveness.silent_longer_than(Duration::from_millis(10)),
            vec![NodeId(1)]
        );
        assert_eq!(
            liveness.heard_within(Duration::from_millis(10)),
            vec![NodeId(2)]
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

    #[test]
    fn the_last_usage_is_kept_per_node() {
        let liveness = Liveness::default();
        let usage = NodeUsage {
            cpu_used_millicores: 1500,
            memory_used_mib: 300,
            accelerator_utilization_percent: 50,
            accelerators_measured: true,
            running_processes: 2,
        };
        liveness.record_report(NodeId(4), usage.clone());
        assert_eq!(
            liveness.report(NodeId(4)).map(|view| view.usage),
            Some(usage)
        );
        assert!(liveness.report(NodeId(5)).is_none());
    }
}
