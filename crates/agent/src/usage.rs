//! Resource use of replica processes, sampled from `/proc`: one bounded scan of
//! `/proc/<pid>/stat` per interval, shared by every node of the agent process, summed per
//! session (each replica's shim leads its own session, and the workload's processes
//! inherit it). CPU is the rate of CPU ticks between two samples, in millicores; memory
//! is resident set size in MiB. Also the simulated accelerator utilisation.
//!
//! [`UsageSampler`] is the shipped [`UsageSource`]; [`UsageTracker`] turns any source's
//! snapshots into rates.

use crate::environment::{ProcSnapshot, SessionUse, UsageSource};
use crate::process::{clock_ticks_per_second, page_size_bytes, parse_stat};
use crate::reconcile::ReplicaKey;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// At most this many `/proc` entries are read per scan.
pub(crate) const MAX_PROC_ENTRIES: usize = 32_768;
/// At most this many replicas are remembered between samples per node.
pub(crate) const MAX_TRACKED_REPLICAS: usize = 4096;

/// Reads every process's stat (at most [`MAX_PROC_ENTRIES`]). Blocking.
pub(crate) fn take_snapshot() -> ProcSnapshot {
    let mut sessions: HashMap<i32, SessionUse> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten().take(MAX_PROC_ENTRIES) {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(stat) = parse_stat(&text) {
                let session = sessions.entry(stat.session).or_default();
                session.cpu_ticks = session.cpu_ticks.saturating_add(stat.cpu_ticks);
                session.rss_pages = session.rss_pages.saturating_add(stat.rss_pages);
            }
        }
    }
    ProcSnapshot {
        taken_at: Instant::now(),
        sessions,
    }
}

/// Shares one `/proc` scan among the nodes of the process: a scan younger than
/// `max_age` is reused.
#[derive(Debug)]
pub(crate) struct UsageSampler {
    max_age: Duration,
    latest: tokio::sync::Mutex<Option<Arc<ProcSnapshot>>>,
}

impl UsageSampler {
    pub(crate) fn new(max_age: Duration) -> UsageSampler {
        UsageSampler {
            max_age,
            latest: tokio::sync::Mutex::new(None),
        }
    }

    /// A recent snapshot (taken now, off the async threads, when the last is too old).
    pub(crate) async fn snapshot(&self) -> Arc<ProcSnapshot> {
        let mut latest = self.latest.lock().await;
        if let Some(snapshot) = latest.as_ref() {
            if snapshot.taken_at.elapsed() < self.max_age {
                return snapshot.clone();
            }
        }
        let snapshot = Arc::new(
            tokio::task::spawn_blocking(take_snapshot)
                .await
                .unwrap_or_else(|_| ProcSnapshot {
                    taken_at: Instant::now(),
                    sessions: HashMap::new(),
                }),
        );
        *latest = Some(snapshot.clone());
        snapshot
    }
}

impl UsageSource for UsageSampler {
    fn snapshot(&self) -> BoxFuture<'_, Arc<ProcSnapshot>> {
        Box::pin(UsageSampler::snapshot(self))
    }
}

/// One replica's measured use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaUse {
    pub(crate) key: ReplicaKey,
    pub(crate) pid: u32,
    pub(crate) cpu_millicores: u64,
    pub(crate) memory_mib: u64,
}

/// Turns successive snapshots into per-replica rates for one node.
#[derive(Debug)]
pub(crate) struct UsageTracker {
    ticks_per_second: u64,
    page_bytes: u64,
    /// Per replica: when, its CPU ticks then, and the rate computed then.
    previous: Mutex<BTreeMap<ReplicaKey, (Instant, u64, u64)>>,
}

impl Default for UsageTracker {
    fn default() -> Self {
        UsageTracker::new(clock_ticks_per_second(), page_size_bytes())
    }
}

impl UsageTracker {
    pub(crate) fn new(ticks_per_second: u64, page_bytes: u64) -> UsageTracker {
        UsageTracker {
            ticks_per_second: ticks_per_second.max(1),
            page_bytes: page_bytes.max(1),
            previous: Mutex::new(BTreeMap::new()),
        }
    }

    /// The use of each `(replica, shim pid)` in `snapshot`. CPU is 0 on a replica's first
    /// sample. Replicas not passed are forgotten.
    pub(crate) fn measure(
        &self,
        snapshot: &ProcSnapshot,
        replicas: &[(ReplicaKey, u32)],
    ) -> Vec<ReplicaUse> {
        let Ok(mut previous) = self.previous.lock() else {
            return Vec::new();
        };
        let mut next = BTreeMap::new();
        let mut uses = Vec::with_capacity(replicas.len());
        for &(key, pid) in replicas.iter().take(MAX_TRACKED_REPLICAS) {
            let session = i32::try_from(pid)
                .ok()
                .and_then(|pid| snapshot.sessions.get(&pid))
                .copied()
                .unwrap_or_default();
            let (cpu_millicores, baseline) = match previous.get(&key) {
                Some(&(at, ticks, _)) if snapshot.taken_at > at => {
                    let elapsed_ms = (snapshot.taken_at - at).as_millis().max(1) as u64;
                    let used_ms = session.cpu_ticks.saturating_sub(ticks).saturating_mul(1000)
                        / self.ticks_per_second;
                    let rate = used_ms.saturating_mul(1000) / elapsed_ms;
                    (rate, (snapshot.taken_at, session.cpu_ticks, rate))
                }
                // The same snapshot as last time: the same rate.
                Some(&(at, ticks, rate)) => (rate, (at, ticks, rate)),
                None => (0, (snapshot.taken_at, session.cpu_ticks, 0)),
            };
            next.insert(key, baseline);
            uses.push(ReplicaUse {
                key,
                pid,
                cpu_millicores,
                memory_mib: session.rss_pages.saturating_mul(self.page_bytes) >> 20,
            });
        }
        *previous = next;
        uses
    }
}

/// Mean accelerator utilisation in percent with simulated devices: 100 per busy device.
/// `total` 0 means unknown: the highest busy index plus one is taken as the count.
pub(crate) fn simulated_accelerator_utilization(busy: &[u32], total: u32) -> u32 {
    let mut distinct: Vec<u32> = busy.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.is_empty() {
        return 0;
    }
    let highest = distinct.last().copied().unwrap_or(0);
    let total = if total == 0 {
        highest.saturating_add(1)
    } else {
        total
    };
    let busy = distinct.iter().filter(|&&index| index < total).count() as u64;
    (busy * 100 / u64::from(total.max(1))).min(100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(job: u64) -> ReplicaKey {
        ReplicaKey {
            job,
            rank: 0,
            generation: 1,
        }
    }

    fn snapshot(at: Instant, sessions: &[(i32, u64, u64)]) -> ProcSnapshot {
        ProcSnapshot {
            taken_at: at,
            sessions: sessions
                .iter()
                .map(|&(session, cpu_ticks, rss_pages)| {
                    (
                        session,
                        SessionUse {
                            cpu_ticks,
                            rss_pages,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn cpu_is_the_tick_rate_between_samples_and_memory_the_resident_size() {
        let tracker = UsageTracker::new(100, 4096);
        let start = Instant::now();
        let first = tracker.measure(&snapshot(start, &[(40, 1_000, 512)]), &[(key(1), 40)]);
        assert_eq!(first[0].cpu_millicores, 0);
        assert_eq!(first[0].memory_mib, 2);
        // 150 ticks at 100/s in 1 s = 1.5 cores.
        let later = start + Duration::from_secs(1);
        let second = tracker.measure(&snapshot(later, &[(40, 1_150, 256)]), &[(key(1), 40)]);
        assert_eq!(second[0].cpu_millicores, 1_500);
        assert_eq!(second[0].memory_mib, 1);
        // A replica without processes uses nothing.
        let gone = tracker.measure(&snapshot(later, &[]), &[(key(2), 41)]);
        assert_eq!((gone[0].cpu_millicores, gone[0].memory_mib), (0, 0));
    }

    #[test]
    fn a_real_scan_sees_this_process_session() {
        let snapshot = take_snapshot();
        let own = crate::process::read_stat(std::process::id()).unwrap();
        assert!(snapshot.sessions.get(&own.session).unwrap().rss_pages > 0);
    }

    #[test]
    fn simulated_utilisation_is_busy_devices_over_all() {
        assert_eq!(simulated_accelerator_utilization(&[], 8), 0);
        assert_eq!(simulated_accelerator_utilization(&[0, 1], 8), 25);
        assert_eq!(simulated_accelerator_utilization(&[0, 1, 1], 4), 50);
        assert_eq!(simulated_accelerator_utilization(&[0, 1, 2, 3], 4), 100);
        assert_eq!(simulated_accelerator_utilization(&[3], 0), 25);
    }
}
