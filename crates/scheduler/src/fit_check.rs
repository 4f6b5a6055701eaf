//! A cheap test of whether newly queued jobs could be placed at all, so the leader can
//! skip a round that would re-read a blocked queue for nothing.
//!
//! When a round found that nothing fits any node (`nothing_fits_any_node` for every
//! pool: no node has room for the smallest queued request, so no queued job fits
//! anywhere), and since then only new jobs have joined the queues (nothing released
//! capacity, no node, pool or quota changed), a round can place something only if one
//! of the new jobs fits the free capacity of some node of its pool. This checks that
//! necessary condition. It ignores node eligibility, gangs and reservations, so it may
//! say yes where the round then places nothing, never the reverse.
//!
//! It would not be enough after a round where some job fit but was held back: with
//! EASY backfilling a new job that fits nowhere can still become the head and move the
//! reservation that held an older job back.

use corral_model::ids::{JobId, PoolId};
use corral_model::Resources;
use corral_state::State;
use std::collections::BTreeSet;

/// Distinct (pool, request) pairs checked one by one; beyond this the answer is yes
/// (a full round is cheaper than many node scans).
pub const MAX_SHAPES_CHECKED: usize = 64;

/// Whether one replica of some still-queued job of `jobs` fits the free capacity of
/// some node of that job's pool. Decides whether a round is needed only after a round
/// in which nothing fit any node (see the module documentation).
pub fn any_could_fit(state: &State, jobs: impl IntoIterator<Item = JobId>) -> bool {
    let mut shapes: BTreeSet<(PoolId, Resources)> = BTreeSet::new();
    for job in jobs.into_iter().filter_map(|job| state.job(job)) {
        if job.state.is_terminal() || job.unplaced_count() == 0 {
            continue;
        }
        shapes.insert((job.spec.pool, job.spec.per_replica));
        if shapes.len() > MAX_SHAPES_CHECKED {
            return true;
        }
    }
    shapes.iter().any(|(pool, request)| {
        state
            .pool_nodes(*pool)
            .any(|node| request.fits_within(&node.free()))
    })
}
