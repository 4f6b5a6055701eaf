//! The results: one line per run while the benchmark goes, then Markdown tables (the
//! format of BENCHMARKS.md) and optionally JSON.

use crate::failover::FailoverSample;
use crate::load::{percentile_of, LoadResult};
use crate::restart::RestartResult;
use crate::throughput::CorralLevelInfo;
use serde_json::json;
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Level {
    pub label: String,
    pub clients: usize,
    pub batch: usize,
    pub corral: LoadResult,
    pub corral_info: CorralLevelInfo,
    pub etcd: Option<LoadResult>,
    /// Diagnostic run: submits refused by the state machine (raft path only).
    pub raft_path: Option<LoadResult>,
}

#[derive(Debug, Default)]
pub struct Results {
    pub etcd_version: Option<String>,
    pub cores: usize,
    pub load_before: String,
    pub load_after: String,
    pub spec_bytes: usize,
    pub seconds: u64,
    pub warmup: u64,
    pub max_connections: usize,
    /// Raft timing and engine of the corral replicas.
    pub corral_setup: String,
    pub total_seconds: f64,
    pub levels: Vec<Level>,
    pub failover: Vec<FailoverSample>,
    pub restart: Option<RestartResult>,
}

pub fn load_line(
    system: &str,
    label: &str,
    result: &LoadResult,
    info: Option<&CorralLevelInfo>,
) -> String {
    let mut line = format!(
        "{system:>6} {label:>16} clients: {:>9.0} writes/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  ({} calls, {} errors)",
        result.items_per_second(),
        result.percentile_ms(50.0),
        result.percentile_ms(99.0),
        result.max_ms(),
        result.calls,
        result.errors
    );
    if let Some(info) = info {
        let _ = write!(
            line,
            "  [last applied {}, {} jobs queued]",
            info.last_applied, info.queued_jobs
        );
    }
    if let Some(error) = &result.first_error {
        let _ = write!(line, "\n         first error: {error}");
    }
    line
}

fn ratio(corral: &LoadResult, etcd: Option<&LoadResult>) -> Option<f64> {
    etcd.map(|etcd| corral.items_per_second() / etcd.items_per_second())
}

fn format_rate(rate: f64) -> String {
    let rounded = rate.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn sorted(samples: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut all: Vec<Duration> = samples.collect();
    all.sort_unstable();
    all
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[sorted.len() / 2]
    }
}

fn seconds_list(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run: {} cores, load average {} before and {} after; corral: {}; {}; job spec {} bytes, etcd value 256 bytes; \
         {} s warm-up + {} s measured per run; at most {} connections per run; whole run {:.0} s.\n",
        results.cores,
        results.load_before,
        results.load_after,
        results.corral_setup,
        results.etcd_version.as_deref().unwrap_or("etcd skipped"),
        results.spec_bytes,
        results.warmup,
        results.seconds,
        results.max_connections,
        results.total_seconds
    );

    if !results.levels.is_empty() {
        let _ = writeln!(
            out,
            "#### Committed writes per second and latency per call (closed loop, to the leader)\n"
        );
        let _ = writeln!(
            out,
            "| Clients | corral submits/s | corral p50 / p99 ms | etcd puts/s | etcd p50 / p99 ms | corral / etcd | errors (corral, etcd) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
        for level in &results.levels {
            let etcd = level.etcd.as_ref();
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} / {:.1} | {} | {} | {} | {}, {} |",
                level.label,
                format_rate(level.corral.items_per_second()),
                level.corral.percentile_ms(50.0),
                level.corral.percentile_ms(99.0),
                etcd.map_or("-".into(), |etcd| format_rate(etcd.items_per_second())),
                etcd.map_or("-".into(), |etcd| format!(
                    "{:.1} / {:.1}",
                    etcd.percentile_ms(50.0),
                    etcd.percentile_ms(99.0)
                )),
                ratio(&level.corral, etcd).map_or("-".into(), |ratio| format!("**{ratio:.2}×**")),
                level.corral.errors,
                etcd.map_or("-".into(), |etcd| etcd.errors.to_string()),
            );
        }
        let _ = writeln!(out);
        let batch_note = results.levels.iter().find(|level| level.batch > 1).map(|level| {
            format!(
                "The batch row counts jobs (corral: SubmitJobs of {} specs) and puts (etcd: one Txn of {} puts); latency is per call. ",
                level.batch, level.batch
            )
        });
        let _ = writeln!(
            out,
            "{}Jobs queued in the public pool at the end of each corral run: {}.\n",
            batch_note.unwrap_or_default(),
            results
                .levels
                .iter()
                .map(|level| format!("{} ({})", level.corral_info.queued_jobs, level.label))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let diagnostics: Vec<&Level> = results
        .levels
        .iter()
        .filter(|level| level.raft_path.is_some())
        .collect();
    if !diagnostics.is_empty() {
        let _ = writeln!(
            out,
            "#### Diagnostic: corral's raft write path alone (submits to a pool that does not exist: proposed, \
             replicated, fsynced, committed, applied and refused; nothing queued, so the scheduler never runs)\n"
        );
        let _ = writeln!(
            out,
            "| Clients | refused submits/s | p50 / p99 ms | vs real submits | vs etcd puts |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for level in diagnostics {
            let Some(raft_path) = &level.raft_path else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} / {:.1} | {:.2}× | {} |",
                level.label,
                format_rate(raft_path.items_per_second()),
                raft_path.percentile_ms(50.0),
                raft_path.percentile_ms(99.0),
                raft_path.items_per_second() / level.corral.items_per_second(),
                ratio(raft_path, level.etcd.as_ref())
                    .map_or("-".into(), |ratio| format!("{ratio:.2}×")),
            );
        }
        let _ = writeln!(out);
    }

    if !results.failover.is_empty() {
        let writes = sorted(results.failover.iter().map(|sample| sample.write));
        let scheduled = sorted(results.failover.iter().map(|sample| sample.scheduled));
        let _ = writeln!(
            out,
            "#### Leader failover ({} SIGKILLs of the leader)\n",
            results.failover.len()
        );
        let _ = writeln!(out, "| From the SIGKILL until | p50 ms | p99 ms | max ms |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for (what, samples) in [
            ("a submit is committed", &writes),
            ("that job is Running (placed by the new leader)", &scheduled),
        ] {
            let _ = writeln!(
                out,
                "| {what} | {:.0} | {:.0} | {:.0} |",
                percentile_of(samples, 50.0),
                percentile_of(samples, 99.0),
                percentile_of(samples, 100.0)
            );
        }
        let _ = writeln!(
            out,
            "\nAll samples (ms, kill to Running): {}.\n",
            results
                .failover
                .iter()
                .map(|sample| format!("{:.0}", sample.scheduled.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    if let Some(restart) = &results.restart {
        let _ = writeln!(
            out,
            "#### Restart of a replica holding {} jobs ({} from the snapshot, {} in the log tail)\n",
            format_rate(restart.total_jobs as f64),
            format_rate(restart.offline_jobs as f64),
            format_rate(restart.tail_jobs as f64)
        );
        let _ = writeln!(out, "| From spawn until | median s | each restart (s) |");
        let _ = writeln!(out, "|---|---:|---|");
        let rows = [
            (
                format!(
                    "ClusterStatus answers with last_applied ≥ {} (restarts A)",
                    restart.target_index
                ),
                &restart.status_s,
            ),
            (
                "the port accepts connections: snapshot loaded, log tail replayed, raft started (A and B)".to_string(),
                &restart.listen_s,
            ),
            (
                "a stale GetJob of the last tail job answers: serving reads (restarts B)"
                    .to_string(),
                &restart.read_s,
            ),
            (
                "a write is committed: elected, accepting writes (restarts B)".to_string(),
                &restart.write_s,
            ),
        ];
        for (what, values) in rows {
            let _ = writeln!(
                out,
                "| {what} | {:.2} | {} |",
                median(values),
                seconds_list(values)
            );
        }
        let _ = writeln!(
            out,
            "\nSnapshot file {:.0} MiB at index {}; one more ClusterStatus call with the state digest on the recovered replica took {} s; \
             peak RSS of the restarted replica {} MiB. Offline generation: {:.1} s to apply, {:.1} s to build and write \
             the snapshot; the {} tail jobs took {:.1} s to submit.\n",
            restart.snapshot_bytes as f64 / (1 << 20) as f64,
            restart.snapshot_index,
            seconds_list(&restart.status_call_s),
            restart.peak_rss_mib.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            restart.generate_apply_s,
            restart.snapshot_build_s,
            restart.tail_jobs,
            restart.tail_submit_s
        );
    }

    let _ = writeln!(out, "#### Targets\n");
    let _ = writeln!(out, "| Target | Measured | |");
    let _ = writeln!(out, "|---|---|---|");
    for level in results.levels.iter().filter(|level| level.batch <= 1) {
        if let Some(ratio) = ratio(&level.corral, level.etcd.as_ref()) {
            if level.clients >= 64 {
                let _ = writeln!(
                    out,
                    "| ≥ 3× etcd's writes/s at {} clients | {ratio:.2}× | {} |",
                    level.clients,
                    verdict(ratio >= 3.0)
                );
            }
            if level.clients == 1 {
                let (corral, etcd) = (
                    level.corral.percentile_ms(50.0),
                    level
                        .etcd
                        .as_ref()
                        .map_or(f64::NAN, |etcd| etcd.percentile_ms(50.0)),
                );
                let _ = writeln!(
                    out,
                    "| single-client p50 ≤ etcd's | {corral:.2} ms vs {etcd:.2} ms | {} |",
                    verdict(corral <= etcd)
                );
            }
        }
    }
    if !results.failover.is_empty() {
        let p99 = percentile_of(
            &sorted(results.failover.iter().map(|sample| sample.scheduled)),
            99.0,
        );
        let _ = writeln!(
            out,
            "| failover p99 < 1 s | {p99:.0} ms | {} |",
            verdict(p99 < 1000.0)
        );
    }
    if let Some(restart) = &results.restart {
        let status = median(&restart.status_s);
        let _ = writeln!(
            out,
            "| restart with {} jobs < 5 s | {status:.2} s (median, ClusterStatus) | {} |",
            format_rate(restart.total_jobs as f64),
            verdict(status < 5.0)
        );
    }
    out
}

fn load_json(result: &LoadResult) -> serde_json::Value {
    json!({
        "clients": result.clients,
        "seconds": result.seconds,
        "calls": result.calls,
        "items": result.items,
        "errors": result.errors,
        "first_error": result.first_error,
        "items_per_second": result.items_per_second(),
        "p50_ms": result.percentile_ms(50.0),
        "p99_ms": result.percentile_ms(99.0),
        "max_ms": result.max_ms(),
    })
}

pub fn json(results: &Results) -> serde_json::Value {
    json!({
        "cores": results.cores,
        "load_before": results.load_before,
        "load_after": results.load_after,
        "etcd_version": results.etcd_version,
        "spec_bytes": results.spec_bytes,
        "levels": results.levels.iter().map(|level| json!({
            "label": level.label,
            "clients": level.clients,
            "batch": level.batch,
            "corral": load_json(&level.corral),
            "corral_queued_jobs": level.corral_info.queued_jobs,
            "corral_last_applied": level.corral_info.last_applied,
            "etcd": level.etcd.as_ref().map(load_json),
            "corral_raft_path": level.raft_path.as_ref().map(load_json),
        })).collect::<Vec<_>>(),
        "failover_ms": results.failover.iter().map(|sample| json!({
            "old_leader": sample.old_leader,
            "write": sample.write.as_secs_f64() * 1000.0,
            "scheduled": sample.scheduled.as_secs_f64() * 1000.0,
            "failed_attempts": sample.failed_attempts,
        })).collect::<Vec<_>>(),
        "restart": results.restart.as_ref().map(|restart| json!({
            "total_jobs": restart.total_jobs,
            "tail_jobs": restart.tail_jobs,
            "snapshot_bytes": restart.snapshot_bytes,
            "snapshot_index": restart.snapshot_index,
            "target_index": restart.target_index,
            "status_s": restart.status_s,
            "status_call_s": restart.status_call_s,
            "listen_s": restart.listen_s,
            "read_s": restart.read_s,
            "write_s": restart.write_s,
            "peak_rss_mib": restart.peak_rss_mib,
            "generate_apply_s": restart.generate_apply_s,
            "snapshot_build_s": restart.snapshot_build_s,
            "tail_submit_s": restart.tail_submit_s,
        })),
        "total_seconds": results.total_seconds,
    })
}
