//! The cluster's time, as this replica knows it: what the leader stamps entries with
//! (`at_ms`, from which every deadline, bill and timestamp is computed), kept true when
//! a replica's wall clock is stepped (an NTP step, an operator's `date -s`).
//!
//! Each replica keeps an *anchor*: a monotonic instant and the cluster's time at that
//! instant. The leader sets it whenever it stamps; a follower sets it from every append
//! its leader sends (`RaftRequest.sent_at_ms` carries the leader's view). From the
//! anchor, the monotonic clock tells the cluster's time now (`estimate_ms`), whatever the
//! wall clock says. The wall clock is believed while it stays within
//! `max_clock_offset_ms` of that estimate (so slow NTP slewing is followed); past that it
//! is *stepped*: the leader stamps the estimate instead, raises an alarm, and hands
//! leadership to a peer whose clock agrees (see `Manager`'s guard), and a follower shows
//! the alarm in its status. So a step of an hour on any replica moves no stamp by more
//! than the bound, and the cluster's time never freezes (it never waits for a clock that
//! ran ahead to come back).
//!
//! The leader also learns each peer's wall clock from its replies
//! (`RaftReply.replied_at_ms`) and reports a peer whose clock is off.
//!
//! A leader with no anchor (the first leader after a full restart, or of a new cluster)
//! has only clocks to go by: it takes the median of its own wall clock and its peers'
//! (measured from their vote and append replies), so a first leader whose clock is off
//! by an hour stamps the quorum's time, finds itself stepped and hands over.

use crate::environment::Clock;
use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// How long a peer's clock sample is shown and used.
const PEER_SAMPLE_FRESH_MS: u64 = 10_000;

/// The cluster's time at a monotonic instant.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    instant: Instant,
    cluster_ms: u64,
}

impl Anchor {
    fn estimate_ms(&self, now: Instant) -> u64 {
        let elapsed_ms = now.saturating_duration_since(self.instant).as_millis() as u64;
        self.cluster_ms.saturating_add(elapsed_ms)
    }
}

/// A peer's wall clock minus the cluster's time, as the leader last measured it.
#[derive(Clone, Copy, Debug)]
struct PeerSample {
    offset_ms: i64,
    /// Half the round trip: how far the measurement itself may be off.
    uncertainty_ms: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    anchor: Option<Anchor>,
    /// The latest stamp handed out: stamps never go backwards.
    last_stamp_ms: u64,
    peers: BTreeMap<u64, PeerSample>,
}

/// A clock problem, for the status, the health and the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClockAlarm {
    /// This replica's wall clock is `offset_ms` from the cluster's time.
    Stepped { offset_ms: i64 },
    /// Peer `replica`'s wall clock is `offset_ms` from the cluster's time.
    Peer { replica: u64, offset_ms: i64 },
}

impl std::fmt::Display for ClockAlarm {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClockAlarm::Stepped { offset_ms } => write!(
                formatter,
                "this replica's wall clock is {offset_ms:+} ms from the cluster's time \
                 (stepped?); it stamps from its monotonic clock and will not stay leader"
            ),
            ClockAlarm::Peer { replica, offset_ms } => write!(
                formatter,
                "replica {replica}'s wall clock is {offset_ms:+} ms from the cluster's time"
            ),
        }
    }
}

/// Shared by the proposer, the peer network and the raft service of one replica.
#[derive(Clone)]
pub(crate) struct ClusterClock {
    wall: Clock,
    max_offset_ms: u64,
    inner: Arc<Mutex<Inner>>,
}

impl ClusterClock {
    pub(crate) fn new(wall: Clock, max_offset_ms: u64) -> ClusterClock {
        assert!(
            max_offset_ms > 0,
            "a zero clock bound would refuse every clock"
        );
        ClusterClock {
            wall,
            max_offset_ms,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent, so a panic elsewhere cannot poison it.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn wall_ms(&self) -> u64 {
        self.wall.now_ms()
    }

    /// The time to stamp the next entry with, on the leader: the wall clock while it
    /// agrees with the anchor, otherwise the anchor's estimate; never before an earlier
    /// stamp.
    pub(crate) fn stamp(&self) -> u64 {
        let wall_ms = self.wall.now_ms();
        let now = Instant::now();
        let mut inner = self.lock();
        let chosen_ms = match inner.anchor {
            Some(anchor) if !self.agrees(wall_ms, anchor.estimate_ms(now)) => {
                anchor.estimate_ms(now)
            }
            Some(_) => wall_ms,
            None => wall_ms.saturating_add_signed(median_offset_ms(&inner.peers, now)),
        };
        let stamp_ms = chosen_ms.max(inner.last_stamp_ms);
        inner.last_stamp_ms = stamp_ms;
        inner.anchor = Some(Anchor {
            instant: now,
            cluster_ms: stamp_ms,
        });
        stamp_ms
    }

    /// Wait, on a leader with no anchor (the first leader after a full restart, which may
    /// have led the term before and so won no votes that told it its peers' clocks), until
    /// the clocks of a majority of the `voters` agree with their median, so its first
    /// stamp is the quorum's time and not its own wall clock's; at most
    /// `ANCHORLESS_WAIT_MS`, after which the median of what it knows is used. At once on
    /// a replica with an anchor. Nothing it stamps could commit sooner: that takes
    /// replies from a quorum, and each reply carries a clock.
    pub(crate) async fn until_known(&self, voters: impl Fn() -> usize) {
        let deadline = Instant::now() + std::time::Duration::from_millis(ANCHORLESS_WAIT_MS);
        loop {
            let now = Instant::now();
            {
                let inner = self.lock();
                if inner.anchor.is_some()
                    || agreeing_with_median(&inner.peers, now, self.max_offset_ms) > voters() / 2
                {
                    return;
                }
            }
            if now >= deadline {
                tracing::warn!(
                    "no majority of clocks agrees within {} ms after {ANCHORLESS_WAIT_MS} ms; \
                     stamping with the median of those known",
                    self.max_offset_ms
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(ANCHORLESS_POLL_MS)).await;
        }
    }

    /// `until_known` if `raft` says this replica leads (a follower's proposals are
    /// refused by raft, so it need not wait).
    pub(crate) async fn until_known_if_leading(&self, raft: &corral_store::Raft) {
        let leads = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            metrics.current_leader == Some(metrics.id)
        };
        if leads {
            self.until_known(|| {
                raft.metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .count()
            })
            .await;
        }
    }

    /// The cluster's time now, without stamping: the anchor's estimate when the wall
    /// clock disagrees with it, else the wall clock. For token expiry and rate limits.
    pub(crate) fn now_ms(&self) -> u64 {
        let wall_ms = self.wall.now_ms();
        match self.lock().anchor {
            Some(anchor) if !self.agrees(wall_ms, anchor.estimate_ms(Instant::now())) => {
                anchor.estimate_ms(Instant::now())
            }
            _ => wall_ms,
        }
    }

    /// What this replica tells a peer the cluster's time is (`sent_at_ms`).
    pub(crate) fn for_peers_ms(&self) -> u64 {
        self.now_ms()
    }

    /// A follower heard its leader's view of the cluster's time.
    pub(crate) fn observe_leader(&self, leader_ms: u64) {
        if leader_ms == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.anchor = Some(Anchor {
            instant: Instant::now(),
            cluster_ms: leader_ms,
        });
    }

    /// The leader heard from `replica`: its wall clock `replied_at_ms`, answering a call
    /// sent at cluster time `sent_ms` that took `round_trip_ms`.
    pub(crate) fn observe_peer(
        &self,
        replica: u64,
        sent_ms: u64,
        replied_at_ms: u64,
        round_trip_ms: u64,
    ) {
        if replied_at_ms == 0 || sent_ms == 0 {
            return;
        }
        let midpoint_ms = sent_ms.saturating_add(round_trip_ms / 2);
        let offset_ms = replied_at_ms as i64 - midpoint_ms as i64;
        self.lock().peers.insert(
            replica,
            PeerSample {
                offset_ms,
                uncertainty_ms: round_trip_ms / 2 + 1,
                at: Instant::now(),
            },
        );
    }

    fn agrees(&self, wall_ms: u64, estimate_ms: u64) -> bool {
        wall_ms.abs_diff(estimate_ms) <= self.max_offset_ms
    }

    /// This replica's wall clock minus the cluster's time, when it has an anchor.
    pub(crate) fn own_offset_ms(&self) -> Option<i64> {
        let wall_ms = self.wall.now_ms();
        let anchor = self.lock().anchor?;
        Some(wall_ms as i64 - anchor.estimate_ms(Instant::now()) as i64)
    }

    /// Whether this replica's wall clock is off the cluster's time by more than the bound.
    pub(crate) fn stepped(&self) -> Option<ClockAlarm> {
        self.own_offset_ms()
            .filter(|offset_ms| offset_ms.unsigned_abs() > self.max_offset_ms)
            .map(|offset_ms| ClockAlarm::Stepped { offset_ms })
    }

    /// Peers (fresh samples only) whose wall clock is off by more than the bound, in id
    /// order.
    pub(crate) fn peer_alarms(&self) -> Vec<ClockAlarm> {
        let now = Instant::now();
        self.fresh_peers(now)
            .into_iter()
            .filter(|(_, sample)| {
                sample.offset_ms.unsigned_abs() > self.max_offset_ms + sample.uncertainty_ms
            })
            .map(|(replica, sample)| ClockAlarm::Peer {
                replica,
                offset_ms: sample.offset_ms,
            })
            .collect()
    }

    /// Peers whose fresh sample agrees with the cluster's time, closest first: where
    /// leadership goes when this replica's clock is off.
    pub(crate) fn agreeing_peers(&self) -> Vec<u64> {
        let now = Instant::now();
        let mut agreeing: Vec<(u64, u64)> = self
            .fresh_peers(now)
            .into_iter()
            .filter(|(_, sample)| {
                sample.offset_ms.unsigned_abs() <= self.max_offset_ms + sample.uncertainty_ms
            })
            .map(|(replica, sample)| (replica, sample.offset_ms.unsigned_abs()))
            .collect();
        agreeing.sort_by_key(|(replica, offset)| (*offset, *replica));
        agreeing.into_iter().map(|(replica, _)| replica).collect()
    }

    fn fresh_peers(&self, now: Instant) -> Vec<(u64, PeerSample)> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, sample)| {
                now.saturating_duration_since(sample.at).as_millis() as u64 <= PEER_SAMPLE_FRESH_MS
            })
            .map(|(replica, sample)| (*replica, *sample))
            .collect()
    }
}

/// How long a leader with no anchor waits for its peers' clocks (`until_known`).
const ANCHORLESS_WAIT_MS: u64 = 2_000;
const ANCHORLESS_POLL_MS: u64 = 10;

/// How many clocks (this replica's and its peers' fresh samples) are within `bound_ms`
/// of their median.
fn agreeing_with_median(peers: &BTreeMap<u64, PeerSample>, now: Instant, bound_ms: u64) -> usize {
    let median_ms = median_offset_ms(peers, now);
    fresh_offsets(peers, now)
        .into_iter()
        .filter(|offset_ms| offset_ms.abs_diff(median_ms) <= bound_ms)
        .count()
}

/// This replica's clock (offset 0) and its peers' fresh samples, as offsets from its own.
fn fresh_offsets(peers: &BTreeMap<u64, PeerSample>, now: Instant) -> Vec<i64> {
    peers
        .values()
        .filter(|sample| {
            now.saturating_duration_since(sample.at).as_millis() as u64 <= PEER_SAMPLE_FRESH_MS
        })
        .map(|sample| sample.offset_ms)
        .chain(std::iter::once(0))
        .collect()
}

/// The median of this replica's wall clock (offset 0) and its peers' fresh samples, as
/// an offset from its own; of two middle values the one nearer its own clock, so one
/// peer alone never outvotes it.
fn median_offset_ms(peers: &BTreeMap<u64, PeerSample>, now: Instant) -> i64 {
    let mut offsets = fresh_offsets(peers, now);
    offsets.sort_unstable();
    let middle = offsets.len() / 2;
    if offsets.len() % 2 == 1 {
        offsets[middle]
    } else {
        let (low, high) = (offsets[middle - 1], offsets[middle]);
        if low.unsigned_abs() <= high.unsigned_abs() {
            low
        } else {
            high
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn clock_at(wall: &Arc<AtomicU64>) -> ClusterClock {
        let read = wall.clone();
        ClusterClock::new(Clock::from_fn(move || read.load(Ordering::SeqCst)), 500)
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_of_the_wall_clock_moves_no_stamp() {
        let wall = Arc::new(AtomicU64::new(5_000_000));
        let clock = clock_at(&wall);
        assert_eq!(clock.stamp(), 5_000_000);
        tokio::time::advance(std::time::Duration::from_millis(1_000)).await;
        wall.store(5_001_000, Ordering::SeqCst);
        assert_eq!(clock.stamp(), 5_001_000, "a true clock is followed");

        // An NTP step forward of an hour.
        wall.store(5_001_000 + 3_600_000, Ordering::SeqCst);
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            clock.stamp(),
            5_001_100,
            "the monotonic estimate is stamped"
        );
        assert!(matches!(
            clock.stepped(),
            Some(ClockAlarm::Stepped { offset_ms }) if offset_ms > 3_500_000
        ));

        // Stepped back too far: time goes on from the estimate, it does not freeze.
        wall.store(5_001_100 - 3_600_000, Ordering::SeqCst);
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert_eq!(clock.stamp(), 5_001_200);
        assert!(clock.stepped().is_some());

        // Corrected: followed again, and never backwards.
        wall.store(5_001_250, Ordering::SeqCst);
        tokio::time::advance(std::time::Duration::from_millis(50)).await;
        assert_eq!(clock.stamp(), 5_001_250);
        assert_eq!(clock.stepped(), None);
        wall.store(5_001_000, Ordering::SeqCst);
        assert_eq!(clock.stamp(), 5_001_250, "stamps never go backwards");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_anchors_on_its_leader_and_the_leader_sees_peers() {
        let wall = Arc::new(AtomicU64::new(5_000_000));
        let clock = clock_at(&wall);
        assert_eq!(clock.stepped(), None, "no anchor, no judgement");
        clock.observe_leader(5_000_000 - 3_600_000);
        assert!(clock.stepped().is_some(), "an hour from its leader's time");
        assert_eq!(clock.now_ms(), 5_000_000 - 3_600_000);

        clock.observe_peer(2, 1_000, 1_060, 100);
        clock.observe_peer(3, 1_000, 1_000 + 3_600_000, 100);
        assert_eq!(clock.agreeing_peers(), vec![2]);
        assert_eq!(
            clock.peer_alarms(),
            vec![ClockAlarm::Peer {
                replica: 3,
                offset_ms: 3_600_000 - 50
            }]
        );
        tokio::time::advance(std::time::Duration::from_millis(PEER_SAMPLE_FRESH_MS + 1)).await;
        assert!(clock.peer_alarms().is_empty(), "old samples are forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_leader_with_a_wrong_clock_stamps_the_quorums_time() {
        let true_ms = 5_000_000;
        let wall = Arc::new(AtomicU64::new(true_ms + 3_600_000));
        let clock = clock_at(&wall);
        // Its peers answered its votes with the true time (sent at its own wall time).
        clock.observe_peer(2, true_ms + 3_600_000, true_ms + 20, 40);
        clock.observe_peer(3, true_ms + 3_600_000, true_ms - 10, 40);
        let stamp_ms = clock.stamp();
        assert!(
            stamp_ms.abs_diff(true_ms) <= 500,
            "stamped {stamp_ms}, not within the bound of the quorum's {true_ms}"
        );
        assert!(
            matches!(clock.stepped(), Some(ClockAlarm::Stepped { offset_ms }) if offset_ms > 3_500_000),
            "and knows its own clock is the one off"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_without_an_anchor_waits_for_a_majority_of_clocks() {
        let wall = Arc::new(AtomicU64::new(5_000_000 + 3_600_000));
        let clock = clock_at(&wall);
        let started = Instant::now();
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.until_known(|| 3).await }
        });
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        // One peer disagrees: no majority yet.
        clock.observe_peer(2, 5_000_000 + 3_600_000, 5_000_000, 2);
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "one disagreeing peer settles nothing"
        );
        clock.observe_peer(3, 5_000_000 + 3_600_000, 5_000_100, 2);
        waiting.await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_millis(ANCHORLESS_WAIT_MS));
        assert!(clock.stamp().abs_diff(5_000_000) <= 500);

        // With an anchor, at once; with no peers at all, after the bound.
        clock.until_known(|| 3).await;
        let alone = clock_at(&wall);
        let started = Instant::now();
        alone.until_known(|| 3).await;
        assert!(started.elapsed() >= std::time::Duration::from_millis(ANCHORLESS_WAIT_MS));
        let single = clock_at(&wall);
        let started = Instant::now();
        single.until_known(|| 1).await;
        assert_eq!(
            started.elapsed(),
            std::time::Duration::ZERO,
            "a lone voter is a majority"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_peer_alone_never_outvotes_a_first_leader() {
        let wall = Arc::new(AtomicU64::new(5_000_000));
        let clock = clock_at(&wall);
        clock.observe_peer(2, 5_000_000, 5_000_000 + 3_600_000, 10);
        assert_eq!(clock.stamp(), 5_000_000);
        let clock = clock_at(&wall);
        clock.observe_peer(2, 5_000_000, 5_000_000 + 3_600_000, 10);
        clock.observe_peer(3, 5_000_000, 5_000_000 + 5, 10);
        assert_eq!(clock.stamp(), 5_000_000, "the median of three is its own");
    }
}
