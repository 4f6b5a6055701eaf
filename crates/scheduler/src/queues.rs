//! Queues of a pool during a round: each queue's use (from the state) plus what the
//! round placed for it, checked with the one borrowing rule
//! (`corral_model::queue::admits`) that the plan applier checks again.
//!
//! A round takes a pool's jobs in two passes when the pool has queues: first only
//! what fits within its queue's guarantee, then, for the jobs that would have to
//! borrow, what the other queues' unused guarantees leave. So a borrower is never
//! placed ahead of a job that fits within its queue's guarantee.

use crate::capacity::times;
use corral_model::ids::PoolId;
use corral_model::queue::{admits, QueueStanding};
use corral_model::Resources;
use corral_state::State;

/// Whether a pass may place beyond a queue's guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Borrowing {
    /// Only within the guarantee: the first pass.
    No,
    /// Up to the limit, borrowing by the rule: the second pass.
    Yes,
}

pub(crate) struct QueueLedger<'a> {
    names: Vec<&'a str>,
    standings: Vec<QueueStanding>,
    capacity: Resources,
}

impl<'a> QueueLedger<'a> {
    /// `None` for a pool without queues: its jobs are not limited by queues.
    pub(crate) fn build(state: &'a State, pool: PoolId) -> Option<QueueLedger<'a>> {
        if !state.pool_has_queues(pool) {
            return None;
        }
        let mut names = Vec::new();
        let mut standings = Vec::new();
        for queue in state.queues_of_pool(pool) {
            names.push(queue.name.as_str());
            standings.push(QueueStanding {
                guarantee: queue.guarantee,
                limit: queue.limit,
                used: queue.used,
            });
        }
        Some(QueueLedger {
            names,
            standings,
            capacity: state.queue_capacity(pool),
        })
    }

    /// The position of the queue `name`, if the pool has it.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|queue| *queue == name)
    }

    /// How many replicas of `per_replica`, at most `up_to`, the queue may take now.
    pub(crate) fn replicas_allowed(
        &self,
        position: usize,
        per_replica: &Resources,
        up_to: u32,
        borrowing: Borrowing,
    ) -> u32 {
        let admitted = |count: u32| {
            let request = times(per_replica, count);
            admits(&self.standings, position, &request, &self.capacity).is_ok()
                && (borrowing == Borrowing::Yes || !self.borrows(position, &request))
        };
        // `admitted` is monotone in the count: find the largest admitted one.
        if admitted(up_to) {
            return up_to;
        }
        let (mut low, mut high) = (0u32, up_to);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if admitted(middle) {
                low = middle;
            } else {
                high = middle;
            }
        }
        low
    }

    /// Whether taking `request` would put the queue beyond its guarantee.
    pub(crate) fn borrows(&self, position: usize, request: &Resources) -> bool {
        let standing = &self.standings[position];
        !standing
            .used
            .saturating_add(request)
            .fits_within(&standing.guarantee)
    }

    /// Count `resources` placed for the queue.
    pub(crate) fn record(&mut self, position: usize, resources: &Resources) {
        let standing = &mut self.standings[position];
        standing.used = standing.used.saturating_add(resources);
    }
}
