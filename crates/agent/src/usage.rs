//! Resource use of replica processes, sampled from `/proc`: one bounded scan of
//! `/proc/<pid>/stat` per interval, shared by every node of the agent process, summed per
//! session (each replica's shim leads its own session, and the workload's processes
//! inherit it). CPU is the rate of CPU ticks between two samples, in millicores; memory
//! is resident set size in MiB. Also the simulated accelerator utilisation.
//!
//! [`UsageSampler`] is the shipped [`UsageSource`]; [`UsageTracker`] turns any source's
//! snapshots into rates.

use crate::environment::{ProcSnapshot, SessionUse, UsageSource};
use crate::isolation::cgroups::CgroupSample;
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
        accelerator_utilization_percent: None,
    }
}

/// Shares one `/proc` scan among the nodes of the process: a scan younger than
/// `max_age` is reused.
#[derive(Debug)]
pub(crate) struct UsageSampler {
    max_age: Duration,
    latest: tokio::sync::Mutex<Option<Arc<ProcSnapshot>>>,
    accelerators: Arc<AcceleratorMeter>,
}

impl UsageSampler {
    pub(crate) fn new(max_age: Duration) -> UsageSampler {
        UsageSampler {
            max_age,
            latest: tokio::sync::Mutex::new(None),
            accelerators: Arc::new(AcceleratorMeter::load()),
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
        let accelerators = self.accelerators.clone();
        let snapshot = Arc::new(
            tokio::task::spawn_blocking(move || ProcSnapshot {
                accelerator_utilization_percent: accelerators.utilization_percent(),
                ..take_snapshot()
            })
            .await
            .unwrap_or_else(|_| ProcSnapshot {
                taken_at: Instant::now(),
                sessions: HashMap::new(),
                accelerator_utilization_percent: None,
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
    pub(crate) memory_peak_mib: u64,
    pub(crate) oom_kills: u64,
}

/// One replica to measure: its shim's pid (its session in `/proc`) and, when it runs
/// in a cgroup, what the cgroup measured, which is used instead (it also counts
/// processes that left the session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Measured {
    pub(crate) key: ReplicaKey,
    pub(crate) pid: u32,
    pub(crate) cgroup: Option<CgroupSample>,
}

/// Turns successive snapshots into per-replica rates for one node.
#[derive(Debug)]
pub(crate) struct UsageTracker {
    ticks_per_second: u64,
    page_bytes: u64,
    /// Per replica: when, its CPU time then (µs), and the rate computed then.
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

    /// The use of each replica, from its cgroup's figures or its session in
    /// `snapshot`. CPU is 0 on a replica's first sample. Replicas not passed are
    /// forgotten.
    pub(crate) fn measure(
        &self,
        snapshot: &ProcSnapshot,
        replicas: &[Measured],
    ) -> Vec<ReplicaUse> {
        let Ok(mut previous) = self.previous.lock() else {
            return Vec::new();
        };
        let mut next = BTreeMap::new();
        let mut uses = Vec::with_capacity(replicas.len());
        for replica in replicas.iter().take(MAX_TRACKED_REPLICAS) {
            let (cpu_us, memory_bytes, memory_peak_bytes, oom_kills) = match replica.cgroup {
                Some(sample) => (
                    sample.cpu_us,
                    sample.memory_bytes,
                    sample.memory_peak_bytes,
                    sample.oom_kills,
                ),
                None => {
                    let session = i32::try_from(replica.pid)
                        .ok()
                        .and_then(|pid| snapshot.sessions.get(&pid))
                        .copied()
                        .unwrap_or_default();
                    let memory = session.rss_pages.saturating_mul(self.page_bytes);
                    let cpu_us =
                        session.cpu_ticks.saturating_mul(1_000_000) / self.ticks_per_second;
                    (cpu_us, memory, memory, 0)
                }
            };
            let (cpu_millicores, baseline) = match previous.get(&replica.key) {
                Some(&(at, before_us, _)) if snapshot.taken_at > at => {
                    let elapsed_us = (snapshot.taken_at - at).as_micros().max(1) as u64;
                    let rate = cpu_us.saturating_sub(before_us).saturating_mul(1000) / elapsed_us;
                    (rate, (snapshot.taken_at, cpu_us, rate))
                }
                // The same snapshot as last time: the same rate.
                Some(&(at, before_us, rate)) => (rate, (at, before_us, rate)),
                None => (0, (snapshot.taken_at, cpu_us, 0)),
            };
            next.insert(replica.key, baseline);
            uses.push(ReplicaUse {
                key: replica.key,
                pid: replica.pid,
                cpu_millicores,
                memory_mib: memory_bytes >> 20,
                memory_peak_mib: memory_peak_bytes >> 20,
                oom_kills,
            });
        }
        *previous = next;
        uses
    }
}

/// The machine's NVIDIA GPUs through NVML, when its library loads (nvml-wrapper opens
/// `libnvidia-ml.so` at run time, so an agent runs on machines without it): their
/// mean utilisation. Without NVML the accelerators are unmeasured, never "0 %".
pub(crate) struct AcceleratorMeter {
    nvml: Option<nvml_wrapper::Nvml>,
}

impl std::fmt::Debug for AcceleratorMeter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.nvml.is_some() {
            "AcceleratorMeter(NVML)"
        } else {
            "AcceleratorMeter(unmeasured)"
        })
    }
}

impl AcceleratorMeter {
    /// NVML if its library loads; otherwise a meter that measures nothing.
    pub(crate) fn load() -> AcceleratorMeter {
        match nvml_wrapper::Nvml::init() {
            Ok(nvml) => {
                tracing::info!("accelerators measured through NVML");
                AcceleratorMeter { nvml: Some(nvml) }
            }
            Err(error) => {
                tracing::info!("no NVML ({error}): accelerator utilisation is unmeasured");
                AcceleratorMeter { nvml: None }
            }
        }
    }

    /// Mean GPU utilisation over the machine's devices, 0-100; None when unmeasured.
    /// Blocking (a driver call per device).
    pub(crate) fn utilization_percent(&self) -> Option<u32> {
        let nvml = self.nvml.as_ref()?;
        let count = nvml.device_count().ok()?.min(64);
        if count == 0 {
            return None;
        }
        let mut total = 0u32;
        for index in 0..count {
            total += nvml
                .device_by_index(index)
                .ok()?
                .utilization_rates()
                .ok()?
                .gpu
                .min(100);
        }
        Some(total / count)
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
            accelerator_utilization_percent: None,
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
        let measured = |job: u64, pid: u32| Measured {
            key: key(job),
            pid,
            cgroup: None,
        };
        let first = tracker.measure(&snapshot(start, &[(40, 1_000, 512)]), &[measured(1, 40)]);
        assert_eq!(first[0].cpu_millicores, 0);
        assert_eq!(first[0].memory_mib, 2);
        // 150 ticks at 100/s in 1 s = 1.5 cores.
        let later = start + Duration::from_secs(1);
        let second = tracker.measure(&snapshot(later, &[(40, 1_150, 256)]), &[measured(1, 40)]);
        assert_eq!(second[0].cpu_millicores, 1_500);
        assert_eq!(second[0].memory_mib, 1);
        // A replica without processes uses nothing.
        let gone = tracker.measure(&snapshot(later, &[]), &[measured(2, 41)]);
        assert_eq!((gone[0].cpu_millicores, gone[0].memory_mib), (0, 0));
    }

    #[test]
    fn a_cgroups_figures_replace_the_sessions() {
        let tracker = UsageTracker::new(100, 4096);
        let start = Instant::now();
        let sample = |cpu_us: u64| Measured {
            key: key(1),
            pid: 40,
            cgroup: Some(CgroupSample {
                cpu_us,
                memory_bytes: 64 << 20,
                memory_peak_bytes: 100 << 20,
                oom_kills: 1,
            }),
        };
        // The session's figures (in the snapshot) are ignored.
        tracker.measure(
            &snapshot(start, &[(40, 9_999, 9_999)]),
            &[sample(2_000_000)],
        );
        let later = start + Duration::from_secs(2);
        let used = tracker.measure(&snapshot(later, &[(40, 0, 0)]), &[sample(3_000_000)]);
        assert_eq!(used[0].cpu_millicores, 500, "1 s of CPU in 2 s");
        assert_eq!(
            (
                used[0].memory_mib,
                used[0].memory_peak_mib,
                used[0].oom_kills
            ),
            (64, 100, 1)
        );
    }

    #[test]
    fn a_real_scan_sees_this_process_session() {
        let snapshot = take_snapshot();
        let own = crate::process::read_stat(std::process::id()).unwrap();
        assert!(snapshot.sessions.get(&own.session).unwrap().rss_pages > 0);
    }

    #[test]
    fn without_nvml_accelerators_are_unmeasured_not_idle() {
        let meter = AcceleratorMeter::load();
        if meter.nvml.is_none() {
            assert_eq!(meter.utilization_percent(), None);
        } else {
            assert!(meter
                .utilization_percent()
                .is_none_or(|percent| percent <= 100));
        }
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
