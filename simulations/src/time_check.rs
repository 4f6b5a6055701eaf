//! The state's clock against true simulated time (issue 19: "time that survives
//! steps"). The state's time (`State::now_ms`, the latest entry time it applied) must
//!
//! - never run ahead of true time by more than [`TimeBounds::ahead_ms`]: the server's
//!   bound on a clock's offset (`raft.max_clock_offset_ms`), plus the largest skew the
//!   run gave a manager's clock, plus a margin. A leader that stamps entries from a
//!   wall clock stepped an hour forward breaks it at once (bills and deadlines jump);
//! - never freeze (stay where it is while writes are applied) for longer than
//!   [`TimeBounds::freeze_ms`] once no clock is stepped: the bound, plus twice the
//!   largest skew (a leader that far behind the one before may leave the state's time
//!   where it was that long), plus a margin. A state's time left an hour ahead by a
//!   stepped leader freezes for an hour after the clock is corrected. Only entries that
//!   carry a time (writes) stamped no later than the state's time are evidence: when no
//!   write is applied (no leader, no quorum; blank and membership entries carry none)
//!   or only refused ones (a refused write does not move the state's time) the state's
//!   time cannot move, and that is the liveness checks' business. And only fresh ones:
//!   stamped no more than [`TimeBounds::ahead_ms`] before they were applied (a write a
//!   failover kept from committing for seconds is applied with its old stamp).
//!
//! Each index is judged once, when the first replica applies it (replicas agree on the
//! state at every index: the digests), against true time then.

use crate::options::RunPlan;

/// `raft.max_clock_offset_ms` (the simulation runs the server's default, 500): how far
/// a replica's wall clock may be from the cluster's time before it is called stepped,
/// and the most a clock step may move a timestamp.
pub fn max_clock_offset_ms() -> u64 {
    corral_server::RaftConfig::default().max_clock_offset_ms
}
/// Room for what the bound does not cover: the time between a leader's stamp and the
/// first apply, and steps of the network.
pub const TIME_MARGIN_MS: u64 = 1_500;

/// How far the state's time may stray, for one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeBounds {
    pub ahead_ms: u64,
    pub freeze_ms: u64,
}

impl TimeBounds {
    pub fn of(plan: &RunPlan) -> TimeBounds {
        let skew = plan.largest_clock_skew_ms();
        TimeBounds {
            ahead_ms: max_clock_offset_ms() + skew + TIME_MARGIN_MS,
            freeze_ms: max_clock_offset_ms() + 2 * skew + TIME_MARGIN_MS,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TimeCheck {
    bounds: TimeBounds,
    /// The highest index judged.
    frontier: u64,
    /// The state's time at the frontier, and the true time it first reached it.
    state_ms: u64,
    reached_at_ms: u64,
    /// Clocks stepped now, and the true time the last step was undone.
    steps_active: u64,
    last_step_healed_at_ms: u64,
    /// Indexes at which the state's time was too far ahead, or frozen too long.
    pub ahead: u64,
    pub frozen: u64,
    /// The furthest ahead the state's time was, and the longest freeze.
    pub most_ahead_ms: i64,
    pub longest_freeze_ms: u64,
}

impl TimeCheck {
    pub fn new(bounds: TimeBounds) -> TimeCheck {
        TimeCheck {
            bounds,
            most_ahead_ms: i64::MIN,
            ..TimeCheck::default()
        }
    }

    pub fn bounds(&self) -> TimeBounds {
        self.bounds
    }

    /// A manager's clock was stepped.
    pub fn clock_stepped(&mut self) {
        self.steps_active += 1;
    }

    /// A stepped clock was set right, at true time `now_ms`.
    pub fn clock_healed(&mut self, now_ms: u64) {
        self.steps_active = self.steps_active.saturating_sub(1);
        self.last_step_healed_at_ms = now_ms;
    }

    /// Whether `index` is judged (the first application of it).
    pub fn judges(&self, index: u64) -> bool {
        index > self.frontier
    }

    /// Replica `replica` applied `index`, whose own time is `entry_at_ms` (`None`: it
    /// carries none), after which the state's time is `state_ms`, at true time `now_ms`:
    /// the violation this shows first, if any.
    pub fn observe(
        &mut self,
        replica: u64,
        index: u64,
        state_ms: u64,
        entry_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Option<String> {
        if !self.judges(index) {
            return None;
        }
        self.frontier = index;
        let mut violation = None;
        let ahead_ms = state_ms as i64 - now_ms as i64;
        self.most_ahead_ms = self.most_ahead_ms.max(ahead_ms);
        if ahead_ms > self.bounds.ahead_ms as i64 {
            self.ahead += 1;
            if self.ahead == 1 {
                violation = Some(format!(
                    "time: replica {replica} applied index {index} with the state's time {ahead_ms} ms ahead of true time (bound {} ms: the clock offset bound {} ms + the largest skew + {TIME_MARGIN_MS} ms)",
                    self.bounds.ahead_ms,
                    max_clock_offset_ms()
                ));
            }
        }
        if state_ms > self.state_ms {
            self.state_ms = state_ms;
            self.reached_at_ms = now_ms;
        } else if self.steps_active == 0
            && state_ms > 0
            && entry_at_ms.is_some_and(|at_ms| {
                at_ms <= state_ms && at_ms >= now_ms.saturating_sub(self.bounds.ahead_ms)
            })
        {
            // A fresh write stamped no later than the state's time: the cluster's clock
            // did not move. (One stamped later that left the state's time where it was
            // was refused: only applied writes move it. One stamped long before it was
            // applied waited for its commit, through a failover or a partition: its
            // stamp says when it was proposed, not that time stood still.)
            // (A state's time of 0: no write applied yet, so no clock to freeze.)
            let since = self.reached_at_ms.max(self.last_step_healed_at_ms);
            let frozen_ms = now_ms.saturating_sub(since);
            self.longest_freeze_ms = self.longest_freeze_ms.max(frozen_ms);
            if frozen_ms > self.bounds.freeze_ms {
                self.frozen += 1;
                if self.frozen == 1 && violation.is_none() {
                    violation = Some(format!(
                        "time: the state's time stayed at {state_ms} for {frozen_ms} ms of true time with no clock stepped (replica {replica} applied index {index}, a write stamped {}; bound {} ms: the clock offset bound + twice the largest skew + {TIME_MARGIN_MS} ms)",
                        entry_at_ms.unwrap_or_default(),
                        self.bounds.freeze_ms
                    ));
                }
            }
        }
        violation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: TimeBounds = TimeBounds {
        ahead_ms: 2_000,
        freeze_ms: 2_000,
    };
    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn time_that_follows_the_true_clock_passes() {
        let mut check = TimeCheck::new(BOUNDS);
        // Membership entries before the first write carry no time.
        assert_eq!(check.observe(1, 1, 0, None, 900_000), None);
        for index in 2..100 {
            let now = 1_000_000 + index * 100;
            assert_eq!(check.observe(1, index, now - 5, Some(now - 5), now), None);
            // Another replica applying the same index later is not judged again.
            assert_eq!(
                check.observe(2, index, now - 5, Some(now - 5), now + 10_000),
                None
            );
        }
        assert_eq!((check.ahead, check.frozen), (0, 0));
    }

    #[test]
    fn a_leader_an_hour_ahead_is_caught_and_so_is_the_freeze_after_it() {
        let mut check = TimeCheck::new(BOUNDS);
        assert_eq!(
            check.observe(1, 1, 1_000_000, Some(1_000_000), 1_000_000),
            None
        );
        check.clock_stepped();
        let ahead = check.observe(
            1,
            2,
            1_000_100 + HOUR_MS,
            Some(1_000_100 + HOUR_MS),
            1_000_100,
        );
        assert!(ahead.is_some_and(|message| message.contains("ahead")));
        // While the clock is stepped, a standing state's time is no freeze...
        assert_eq!(
            check.observe(2, 3, 1_000_100 + HOUR_MS, Some(1_004_000), 1_004_000),
            None
        );
        check.clock_healed(1_005_000);
        // ... nor within the bound after it is set right; beyond it, it is.
        assert_eq!(
            check.observe(2, 4, 1_000_100 + HOUR_MS, Some(1_006_000), 1_006_500),
            None
        );
        // A blank entry (no time of its own) is no evidence of a freeze...
        assert_eq!(
            check.observe(2, 5, 1_000_100 + HOUR_MS, None, 1_007_500),
            None
        );
        // ... nor is a write stamped later that was refused (the state's time stays)...
        assert_eq!(
            check.observe(
                2,
                6,
                1_000_100 + HOUR_MS,
                Some(1_000_200 + HOUR_MS),
                1_007_500
            ),
            None
        );
        // ... a write stamped no later than the state's time is.
        let frozen = check.observe(2, 7, 1_000_100 + HOUR_MS, Some(1_007_500), 1_007_500);
        assert!(frozen.is_some_and(|message| message.contains("stayed")));
        assert_eq!(check.frozen, 1);
        assert!(check.ahead >= 1);
    }

    #[test]
    fn a_write_applied_long_after_its_stamp_is_no_freeze() {
        let mut check = TimeCheck::new(BOUNDS);
        assert_eq!(
            check.observe(1, 1, 1_000_000, Some(1_000_000), 1_000_000),
            None
        );
        // Proposed with the same stamp, committed only after a 3 s failover.
        assert_eq!(
            check.observe(2, 2, 1_000_000, Some(1_000_000), 1_003_000),
            None
        );
        assert_eq!(check.frozen, 0);
    }

    #[test]
    fn a_leader_behind_the_one_before_may_hold_the_time_within_the_bound() {
        let mut check = TimeCheck::new(BOUNDS);
        assert_eq!(
            check.observe(1, 1, 1_001_000, Some(1_001_000), 1_000_000),
            None
        );
        assert_eq!(
            check.observe(2, 2, 1_001_000, Some(1_000_500), 1_001_500),
            None
        );
        assert_eq!(
            check.observe(2, 3, 1_001_000, Some(1_001_000), 1_002_000),
            None
        );
        assert_eq!(
            check.observe(2, 4, 1_003_000, Some(1_003_000), 1_003_000),
            None
        );
        assert_eq!(check.frozen, 0);
        assert_eq!(check.longest_freeze_ms, 2_000);
    }
}
