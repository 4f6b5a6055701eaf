//! The knobs of one scheduling round.

use corral_model::ids::NodeId;
use corral_model::limits::MAX_PLACEMENTS_PER_PLAN;
use std::collections::BTreeSet;

/// Options of one round. `Default` gives the production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundOptions {
    /// At most this many placements (jobs) in one plan; the state machine refuses a
    /// plan with more than `MAX_PLACEMENTS_PER_PLAN`, so larger values are clamped.
    pub max_placements: usize,
    /// Nodes to place nothing new on although the state still calls them Available:
    /// the leader has not heard from them for a few heartbeat intervals (they are
    /// probably lost and will be marked so once their grace period ends). Their work
    /// stays where it is.
    pub unavailable_nodes: BTreeSet<NodeId>,
    /// The time jobs held back after a disruption are compared with (the leader's
    /// clock, which stamps the plan's entry); `None`: the state's time.
    pub now_ms: Option<u64>,
}

impl Default for RoundOptions {
    fn default() -> Self {
        RoundOptions {
            max_placements: MAX_PLACEMENTS_PER_PLAN,
            unavailable_nodes: BTreeSet::new(),
            now_ms: None,
        }
    }
}

impl RoundOptions {
    /// The placement limit actually used: the option, never above what a plan may hold.
    pub fn effective_max_placements(&self) -> usize {
        self.max_placements.min(MAX_PLACEMENTS_PER_PLAN)
    }
}
