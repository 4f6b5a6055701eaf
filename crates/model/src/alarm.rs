//! Cluster alarms (etcd's alarms): a condition one replica raised that changes what the
//! whole cluster accepts until an operator disarms it. Replicated, so every replica
//! refuses the same writes and a leader change forgets nothing.
//!
//! NOSPACE: a replica's data directory fell below its free-space floor
//! (`storage.min_free_disk_mib`). New work (creating objects, submitting or starting
//! jobs) is refused with RESOURCE_EXHAUSTED; what frees space or keeps running work
//! going (deletes, cancels, the agents' reports, the leader's loops) goes on, so the
//! replica's disk never fills under a write the cluster acknowledged.

use serde::{Deserialize, Serialize};

/// Alarms held at once: a few kinds for each of at most this many replicas.
pub const MAX_ALARMS: usize = 64;
/// The raising replica's description of the condition.
pub const MAX_ALARM_DETAIL_BYTES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmKind {
    NoSpace,
}

impl AlarmKind {
    pub fn name(&self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "NOSPACE",
        }
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The manager replica that raised it.
    pub replica: u64,
    pub kind: AlarmKind,
    pub raised_at_ms: u64,
    pub detail: String,
}
