//! The knobs of one scheduling round.

use corral_model::limits::MAX_PLACEMENTS_PER_PLAN;

/// Options of one round. `Default` gives the production values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundOptions {
    /// At most this many placements (jobs) in one plan; the state machine refuses a
    /// plan with more than `MAX_PLACEMENTS_PER_PLAN`, so larger values are clamped.
    pub max_placements: usize,
}

impl Default for RoundOptions {
    fn default() -> Self {
        RoundOptions {
            max_placements: MAX_PLACEMENTS_PER_PLAN,
        }
    }
}

impl RoundOptions {
    /// The placement limit actually used: the option, never above what a plan may hold.
    pub fn effective_max_placements(&self) -> usize {
        self.max_placements.min(MAX_PLACEMENTS_PER_PLAN)
    }
}
