//! Storage engines compared: append+fsync throughput and restart time, sled vs redb
//! (memory as the no-disk ceiling). A plain timed loop that prints markdown tables.
//!
//! Append: a fresh store per run; batches of 1 and of 64 job-submission entries (256
//! encoded bytes each) appended one batch at a time, each `append` awaited until the
//! engine reports it durable (sled: `flush` plus the syncs corral-store adds; redb:
//! commit with `Durability::Immediate`), for `APPEND_BUDGET` of measured time after
//! a short warm-up; only the `append` calls are timed. Each configuration runs
//! `APPEND_PASSES` times, passes interleaved; the table gives the median pass and the
//! range. Reference rows: the same bytes written to a raw file with `fdatasync` (a
//! growing file, and a preallocated one: the device's flush alone), and sled's own
//! `flush_async` without corral-store's syncs.
//!
//! Restart: a `State` with the cluster setup and 1,000,000 submitted jobs is built once
//! through `State::apply`, then for each engine a data directory is prepared the way a
//! running replica leaves it: that snapshot installed (so persisted), the log purged
//! up to it, a 10,000-entry tail appended (alternating job terminations and
//! submissions), vote and committed id saved. Restart = `open_storage` (sled/redb open,
//! snapshot file read, checksum, state decode) + openraft's
//! `StorageHelper::get_initial_state` (re-applies the committed tail), the same work
//! `Raft::new` does. Each restart runs in a fresh child process (this binary again), as
//! a real restart does, `RESTART_RUNS` times on a warm page cache; the first run also
//! checks the recovered state's digest.
//!
//! Run: `cargo bench -p corral-store --bench storage`. Set `CORRAL_BENCH_DIR` to put
//! the data directories on another file system (default: the system temp directory),
//! `CORRAL_STORE_BENCH_ONLY=append` or `=restart` to run one part.
// Tests and benchmarks state their expectations with unwrap (the workspace lints forbid it
// in product code only).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/store/common/mod.rs"]
mod common;

use common::*;
use corral_model::{Command, Entry, Principal};
use corral_state::State;
use corral_store::{
    open_storage, Engine, LogEntry, LogId, Storage, StorageOptions, StoredMembership, Vote,
};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::StorageHelper;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const APPEND_BUDGET: Duration = Duration::from_secs(2);
const APPEND_PASSES: usize = 3;
const APPEND_WARMUP_BATCHES: u64 = 20;
/// Bounds the memory engine's run, whose log lives in RAM.
const APPEND_MAX_ENTRIES: u64 = 400_000;
const BATCH_SIZES: [u64; 2] = [1, 64];
const SNAPSHOT_JOBS: u64 = 1_000_000;
const SETUP_NODES: u32 = 8;
const TAIL_ENTRIES: u64 = 10_000;
const TAIL_BATCH_ENTRIES: usize = 64;
const RESTART_RUNS: usize = 5;
const MEGABYTE: f64 = 1_000_000.0;

fn bench_directory() -> tempfile::TempDir {
    match std::env::var_os("CORRAL_BENCH_DIR") {
        Some(directory) => tempfile::tempdir_in(directory).expect("CORRAL_BENCH_DIR is writable"),
        None => tempfile::tempdir().expect("temp directory"),
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    assert!(!sorted.is_empty());
    let position = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[position]
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// What is appended to in the append benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    /// `write` of the batch's encoded bytes at the end of a growing file, then
    /// `fdatasync`: what an append-only log without preallocation pays.
    RawGrowingFile,
    /// The same into a preallocated file: the device's flush latency alone.
    RawPreallocatedFile,
    Store(Engine),
    /// sled's own `flush_async` alone, without the syncs corral-store adds after it: the
    /// same tree, keys and encoding, through the plain sled API.
    SledFlushOnly,
}

impl Subject {
    const ALL: [Subject; 6] = [
        Subject::RawGrowingFile,
        Subject::RawPreallocatedFile,
        Subject::Store(Engine::Sled),
        Subject::SledFlushOnly,
        Subject::Store(Engine::Redb),
        Subject::Store(Engine::Memory),
    ];

    fn label(&self) -> String {
        match self {
            Subject::RawGrowingFile => "raw file, growing: write + fdatasync".into(),
            Subject::RawPreallocatedFile => "raw file, preallocated: write + fdatasync".into(),
            Subject::Store(engine) => format!("corral-store {engine}"),
            Subject::SledFlushOnly => "sled flush_async alone (no fdatasync)".into(),
        }
    }
}

enum Target {
    File {
        file: std::fs::File,
        offset: u64,
        wrap_bytes: Option<u64>,
    },
    Store(Storage),
    Sled {
        database: sled::Db,
        log: sled::Tree,
    },
}

const PREALLOCATED_FILE_BYTES: u64 = 64 << 20;

impl Target {
    async fn open(subject: Subject, path: &Path) -> Target {
        match subject {
            Subject::RawGrowingFile => Target::File {
                file: std::fs::File::create(path).unwrap(),
                offset: 0,
                wrap_bytes: None,
            },
            Subject::RawPreallocatedFile => {
                let mut file = std::fs::File::create(path).unwrap();
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..PREALLOCATED_FILE_BYTES >> 20 {
                    file.write_all(&zeros).unwrap();
                }
                file.sync_all().unwrap();
                Target::File {
                    file,
                    offset: 0,
                    wrap_bytes: Some(PREALLOCATED_FILE_BYTES),
                }
            }
            Subject::Store(engine) => {
                let mut storage = open_storage(&StorageOptions {
                    engine,
                    data_dir: path.to_path_buf(),
                })
                .expect("open storage");
                storage
                    .log
                    .append(vec![membership(0, 0, &[0])], IOFlushed::noop())
                    .await
                    .unwrap();
                Target::Store(storage)
            }
            Subject::SledFlushOnly => {
                let database = sled::open(path).unwrap();
                let log = database.open_tree("raft_log").unwrap();
                Target::Sled { database, log }
            }
        }
    }

    /// Append `batch` durably; returns how long that took.
    async fn append(&mut self, batch: Vec<LogEntry>) -> Duration {
        match self {
            Target::File {
                file,
                offset,
                wrap_bytes,
            } => {
                let bytes: Vec<u8> = batch.iter().flat_map(encode_record).collect();
                if wrap_bytes.is_some_and(|wrap| *offset + bytes.len() as u64 > wrap) {
                    *offset = 0;
                }
                let begin = Instant::now();
                file.write_all_at(&bytes, *offset).unwrap();
                file.sync_data().unwrap();
                *offset += bytes.len() as u64;
                begin.elapsed()
            }
            Target::Store(storage) => {
                let begin = Instant::now();
                storage
                    .log
                    .append(batch, IOFlushed::noop())
                    .await
                    .expect("append");
                begin.elapsed()
            }
            Target::Sled { database, log } => {
                let mut sled_batch = sled::Batch::default();
                for entry in &batch {
                    sled_batch.insert(&entry.log_id.index.to_be_bytes(), encode_record(entry));
                }
                let begin = Instant::now();
                log.apply_batch(sled_batch).unwrap();
                database.flush_async().await.unwrap();
                begin.elapsed()
            }
        }
    }
}

/// The codec's record: a version byte and the bincode (standard config) encoding.
fn encode_record(entry: &LogEntry) -> Vec<u8> {
    let mut record = vec![1u8];
    record.extend(
        bincode::serde::encode_to_vec(entry, bincode::config::standard()).expect("entry encodes"),
    );
    record
}

struct AppendRun {
    entries: u64,
    bytes: usize,
    measured: Duration,
    latencies: Vec<Duration>,
}

impl AppendRun {
    fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.measured.as_secs_f64()
    }

    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / MEGABYTE / self.measured.as_secs_f64()
    }
}

async fn append_run(
    subject: Subject,
    batch_entries: u64,
    directory: &Path,
    pass: usize,
) -> AppendRun {
    let path = directory.join(format!("append-{subject:?}-{batch_entries}-{pass}"));
    let mut target = Target::open(subject, &path).await;
    let mut next_index: u64 = 1;
    let mut run = AppendRun {
        entries: 0,
        bytes: 0,
        measured: Duration::ZERO,
        latencies: Vec::new(),
    };
    let mut batches: u64 = 0;
    while run.measured < APPEND_BUDGET && run.entries < APPEND_MAX_ENTRIES {
        let batch = submit_entries(next_index, batch_entries);
        let batch_bytes: usize = batch.iter().map(|entry| encode_record(entry).len()).sum();
        next_index += batch_entries;
        let latency = target.append(batch).await;
        batches += 1;
        if batches <= APPEND_WARMUP_BATCHES {
            continue;
        }
        run.measured += latency;
        run.latencies.push(latency);
        run.entries += batch_entries;
        run.bytes += batch_bytes;
    }
    drop(target);
    if path.is_dir() {
        std::fs::remove_dir_all(&path).unwrap();
    } else if path.exists() {
        std::fs::remove_file(&path).unwrap();
    }
    run
}

/// Every subject and batch size, `APPEND_PASSES` times, passes interleaved so a slow
/// spell of the (shared, virtual) disk does not land on one subject only.
async fn append_benchmark(directory: &Path) {
    let mut runs: Vec<((Subject, u64), Vec<AppendRun>)> = Subject::ALL
        .iter()
        .flat_map(|subject| {
            BATCH_SIZES
                .iter()
                .map(move |batch| ((*subject, *batch), Vec::new()))
        })
        .collect();
    for pass in 0..APPEND_PASSES {
        for ((subject, batch_entries), results) in runs.iter_mut() {
            results.push(append_run(*subject, *batch_entries, directory, pass).await);
        }
    }
    println!(
        "| subject | entries per append | entries/s (median of {APPEND_PASSES}) | range | MB/s | p50 append ms | p99 append ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for ((subject, batch_entries), mut results) in runs {
        results.sort_by(|left, right| {
            left.entries_per_second()
                .total_cmp(&right.entries_per_second())
        });
        let median = &results[results.len() / 2];
        let mut latencies: Vec<Duration> = results
            .iter()
            .flat_map(|run| run.latencies.iter().copied())
            .collect();
        latencies.sort();
        println!(
            "| {} | {batch_entries} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} | {:.2} |",
            subject.label(),
            median.entries_per_second(),
            results[0].entries_per_second(),
            results[results.len() - 1].entries_per_second(),
            median.megabytes_per_second(),
            milliseconds(percentile(&latencies, 0.5)),
            milliseconds(percentile(&latencies, 0.99)),
        );
    }
}

fn apply_command(state: &mut State, principal: Principal, command: Command, index: u64) {
    let entry = Entry {
        index,
        at_ms: START_MS + index,
        principal,
        credential: None,
        command,
    };
    if let Err(rejection) = state.apply(&entry) {
        panic!("entry {index} was rejected: {rejection}");
    }
}

/// The state the restart benchmark recovers: setup plus `SNAPSHOT_JOBS` queued jobs,
/// and the raft index of its last entry.
fn build_large_state() -> (State, u64) {
    let mut state = State::new();
    // Index 0 is openraft's initial membership, 1 the leader's blank entry; neither
    // reaches `State::apply`.
    let mut index: u64 = 1;
    for (principal, command) in setup_commands(SETUP_NODES) {
        index += 1;
        apply_command(&mut state, principal, command, index);
    }
    for sequence in 0..SNAPSHOT_JOBS {
        index += 1;
        apply_command(&mut state, TENANT_USER, job_submit(sequence), index);
    }
    assert_eq!(state.jobs().count() as u64, SNAPSHOT_JOBS);
    (state, index)
}

/// The tail after the snapshot: job terminations (of the oldest jobs) alternating with
/// submissions, so the active job count stays at its limit.
fn tail_entries(first_index: u64) -> Vec<LogEntry> {
    (0..TAIL_ENTRIES)
        .map(|offset| {
            let index = first_index + offset;
            let command = if offset % 2 == 0 {
                job_terminate(offset / 2 + 1)
            } else {
                job_submit(SNAPSHOT_JOBS + offset)
            };
            normal(1, index, proposal(TENANT_USER, START_MS + index, command))
        })
        .collect()
}

async fn prepare_restart_directory(
    engine: Engine,
    directory: &Path,
    snapshot: &[u8],
    snapshot_log_id: LogId,
    tail: &[LogEntry],
) -> (StorageOptions, u64) {
    let options = StorageOptions {
        engine,
        data_dir: directory.join(format!("restart-{engine}")),
    };
    let mut storage = open_storage(&options).expect("open storage");
    let meta = corral_store::SnapshotMeta {
        last_log_id: Some(snapshot_log_id),
        last_membership: StoredMembership::new(Some(log_id(0, 0)), voters_membership(&[0])),
    };
    storage
        .state_machine
        .install_snapshot(&meta, std::sync::Arc::new(snapshot.to_vec().into()))
        .await
        .unwrap();
    storage.log.purge(snapshot_log_id).await.unwrap();
    for chunk in tail.chunks(TAIL_BATCH_ENTRIES) {
        storage
            .log
            .append(chunk.to_vec(), IOFlushed::noop())
            .await
            .unwrap();
    }
    let last = tail.last().expect("a tail").log_id;
    storage.log.save_committed(Some(last)).await.unwrap();
    storage
        .log
        .save_vote(&Vote::new_committed(1, 0))
        .await
        .unwrap();
    drop(storage);
    let snapshot_file_bytes: u64 = std::fs::read_dir(options.data_dir.join("snapshots"))
        .unwrap()
        .map(|item| item.unwrap().metadata().unwrap().len())
        .sum();
    (options, snapshot_file_bytes)
}

const CHILD_DIRECTORY: &str = "CORRAL_STORE_BENCH_RESTART_DIRECTORY";
const CHILD_ENGINE: &str = "CORRAL_STORE_BENCH_RESTART_ENGINE";
const CHILD_EXPECTED_INDEX: &str = "CORRAL_STORE_BENCH_EXPECTED_INDEX";
const CHILD_EXPECTED_DIGEST: &str = "CORRAL_STORE_BENCH_EXPECTED_DIGEST";
const CHILD_RESULT: &str = "restart-result";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn peak_resident_megabytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kilobytes| kilobytes * 1024.0 / MEGABYTE)
}

/// The child side of a restart: a fresh process, as after a real restart (no memory
/// the allocator already holds), opens the storage and recovers the state machine.
fn restart_child(directory: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine: Engine = std::env::var(CHILD_ENGINE).unwrap().parse().unwrap();
    let expected_index: u64 = std::env::var(CHILD_EXPECTED_INDEX)
        .unwrap()
        .parse()
        .unwrap();
    let options = StorageOptions {
        engine,
        data_dir: directory.into(),
    };
    runtime.block_on(async {
        let begin = Instant::now();
        let mut storage: Storage = open_storage(&options).expect("open storage");
        let opened = begin.elapsed();
        StorageHelper::new(&mut storage.log, &mut storage.state_machine)
            .with_id(0)
            .get_initial_state()
            .await
            .expect("initial state");
        let recovered = begin.elapsed() - opened;
        // `get_initial_state` takes the current snapshot twice (it must be returned as
        // an owned `Vec<u8>`); time one such copy to split it from the re-apply.
        let copy_started = Instant::now();
        let current = storage.state_machine.get_current_snapshot().await.unwrap();
        let snapshot_copy = copy_started.elapsed();
        drop(current);
        let applied = storage
            .state_machine
            .last_applied()
            .map(|log_id| log_id.index);
        assert_eq!(applied, Some(expected_index));
        if let Ok(expected) = std::env::var(CHILD_EXPECTED_DIGEST) {
            let digest = storage.state_machine.read(|state| state.digest());
            assert_eq!(hex(&digest), expected, "recovered state differs");
        }
        println!(
            "{CHILD_RESULT} {} {} {} {}",
            opened.as_secs_f64(),
            recovered.as_secs_f64(),
            snapshot_copy.as_secs_f64(),
            peak_resident_megabytes()
        );
        // Exit without dropping a million jobs: not part of starting either.
        std::process::exit(0);
    });
}

struct RestartRun {
    open: Duration,
    recover: Duration,
    snapshot_copy: Duration,
    peak_resident_megabytes: f64,
}

/// Run one restart in a child process (this benchmark binary again).
fn restart(
    options: &StorageOptions,
    expected_index: u64,
    expected_digest: Option<[u8; 32]>,
) -> RestartRun {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .env(CHILD_DIRECTORY, &options.data_dir)
        .env(CHILD_ENGINE, options.engine.name())
        .env(CHILD_EXPECTED_INDEX, expected_index.to_string());
    if let Some(digest) = expected_digest {
        command.env(CHILD_EXPECTED_DIGEST, hex(&digest));
    }
    let output = command.output().expect("restart child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "restart child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fields: Vec<f64> = stdout
        .lines()
        .find_map(|line| line.strip_prefix(CHILD_RESULT))
        .expect("the child reports its result")
        .split_whitespace()
        .map(|field| field.parse().unwrap())
        .collect();
    assert_eq!(fields.len(), 4);
    RestartRun {
        open: Duration::from_secs_f64(fields[0]),
        recover: Duration::from_secs_f64(fields[1]),
        snapshot_copy: Duration::from_secs_f64(fields[2]),
        peak_resident_megabytes: fields[3],
    }
}

fn main() {
    if let Ok(directory) = std::env::var(CHILD_DIRECTORY) {
        restart_child(&directory);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let directory = bench_directory();
    println!("data directories under {}", directory.path().display());
    let sample = submit_entries(1_000_000, 1);
    println!(
        "one job-submission log entry encodes to {} bytes",
        encode_record(&sample[0]).len()
    );

    let only = std::env::var("CORRAL_STORE_BENCH_ONLY").unwrap_or_default();
    if only != "restart" {
        println!("\n### Append + fsync\n");
        runtime.block_on(append_benchmark(directory.path()));
    }
    if only == "append" {
        return;
    }

    println!("\n### Restart\n");
    let build_started = Instant::now();
    let (mut state, snapshot_index) = build_large_state();
    let build_time = build_started.elapsed();
    let encode_started = Instant::now();
    let snapshot = state.encode_snapshot();
    let encode_time = encode_started.elapsed();
    let decode_started = Instant::now();
    let decoded = State::decode_snapshot(&snapshot).expect("snapshot decodes");
    let decode_time = decode_started.elapsed();
    drop(decoded);
    let snapshot_log_id = log_id(1, snapshot_index);
    let tail = tail_entries(snapshot_index + 1);
    let tail_last = tail.last().unwrap().log_id;
    for entry in &tail {
        let openraft::EntryPayload::Normal(proposal) = &entry.payload else {
            unreachable!("the tail holds proposals");
        };
        let applied =
            state.apply_batch(entry.log_id.index, proposal.at_ms, proposal.writes.clone());
        assert!(
            applied.iter().all(Result::is_ok),
            "tail entry {} rejected: {applied:?}",
            entry.log_id.index
        );
    }
    let expected_digest = state.digest();
    drop(state);
    println!(
        "state of {SNAPSHOT_JOBS} jobs built in {:.1} s; snapshot {:.1} MB, encode {:.0} ms, decode {:.0} ms",
        build_time.as_secs_f64(),
        snapshot.len() as f64 / MEGABYTE,
        milliseconds(encode_time),
        milliseconds(decode_time),
    );
    println!();
    println!("| engine | snapshot file MB | open + load snapshot ms | openraft startup ms (re-apply {TAIL_ENTRIES} + 2 snapshot copies) | one snapshot copy ms | restart total ms (median of {RESTART_RUNS}) | range ms | peak RSS MB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for engine in [Engine::Sled, Engine::Redb] {
        let (options, file_bytes) = runtime.block_on(prepare_restart_directory(
            engine,
            directory.path(),
            &snapshot,
            snapshot_log_id,
            &tail,
        ));
        let mut runs: Vec<RestartRun> = (0..RESTART_RUNS)
            .map(|run| {
                restart(
                    &options,
                    tail_last.index,
                    (run == 0).then_some(expected_digest),
                )
            })
            .collect();
        runs.sort_by_key(|run| run.open + run.recover);
        let median = &runs[runs.len() / 2];
        println!(
            "| {engine} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}–{:.0} | {:.0} |",
            file_bytes as f64 / MEGABYTE,
            milliseconds(median.open),
            milliseconds(median.recover),
            milliseconds(median.snapshot_copy),
            milliseconds(median.open + median.recover),
            milliseconds(runs[0].open + runs[0].recover),
            milliseconds(runs[runs.len() - 1].open + runs[runs.len() - 1].recover),
            median.peak_resident_megabytes,
        );
        std::fs::remove_dir_all(&options.data_dir).unwrap();
    }
}
