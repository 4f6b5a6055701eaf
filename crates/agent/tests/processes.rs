//! Replica processes for real: the shim (this crate's `corral-agent-shim` binary) runs
//! `sh` workloads; spawning, environment, exit codes, SIGTERM forwarding, SIGKILL after
//! the grace period, adoption after the supervising object is gone, and log rotation
//! while the shim writes.

use corral_agent::logs::{rotate_if_needed, rotated_path};
use corral_agent::process::{is_alive, read_stat, signal_group};
use corral_agent::reconcile::ReplicaKey;
use corral_agent::supervisor::{
    Adoption, LaunchSpec, NodeDirs, ProcessExit, ReplicaProcess, ReplicaRecord, ShimProgram,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn shim() -> ShimProgram {
    ShimProgram {
        program: env!("CARGO_BIN_EXE_corral-agent-shim").into(),
        leading_args: Vec::new(),
    }
}

fn key(job: u64) -> ReplicaKey {
    ReplicaKey {
        job,
        rank: 1,
        generation: 2,
    }
}

fn spec(job: u64, script: &str) -> LaunchSpec {
    let mut environment = BTreeMap::new();
    environment.insert("CORRAL_RANK".to_string(), "1".to_string());
    LaunchSpec {
        key: key(job),
        command: vec!["sh".into(), "-c".into(), script.into()],
        environment,
        device_indices: vec![0],
    }
}

fn node_dirs() -> (tempfile::TempDir, NodeDirs) {
    let dir = tempfile::tempdir().unwrap();
    let dirs = NodeDirs::new(dir.path().join("node"));
    dirs.create().unwrap();
    (dir, dirs)
}

async fn wait(process: &ReplicaProcess) -> ProcessExit {
    tokio::time::timeout(Duration::from_secs(20), process.exit_watcher().wait())
        .await
        .expect("the process ends in time")
        .expect("supervised to the end")
}

/// Polls `condition` every 20 ms for at most 10 s.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn a_workload_runs_in_its_directory_with_its_environment_and_its_exit_code_is_kept() {
    let (_dir, dirs) = node_dirs();
    let process = ReplicaProcess::spawn(
        &dirs,
        &shim(),
        &spec(
            1,
            "echo rank=$CORRAL_RANK > seen; echo to stdout; echo to stderr >&2; exit 3",
        ),
        1_000,
    )
    .unwrap();
    let exit = wait(&process).await;
    assert_eq!(
        exit,
        ProcessExit {
            exit_code: 3,
            recorded: true,
            killed: false
        }
    );
    let replica_dir = dirs.replica_dir(key(1));
    assert_eq!(read(&replica_dir.join("seen")), "rank=1\n");
    let log = read(&dirs.log_path(key(1)));
    assert!(
        log.contains("to stdout") && log.contains("to stderr"),
        "{log:?}"
    );
    assert_eq!(read(&dirs.exit_path(key(1))), "3\n");
    let records = dirs.scan_records().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].shim_pid, process.pid());
    assert_eq!(records[0].started_at_ms, 1_000);
    assert_eq!(records[0].device_indices, vec![0]);
}

#[tokio::test]
async fn workloads_get_no_agent_token_nor_blocked_signals_and_missing_programs_exit_127() {
    let (_dir, dirs) = node_dirs();
    std::env::set_var("CORRAL_TOKEN", "secret-should-not-leak");
    let process = ReplicaProcess::spawn(
        &dirs,
        &shim(),
        &spec(1, "echo \"token=[$CORRAL_TOKEN]\" > seen"),
        0,
    )
    .unwrap();
    assert_eq!(wait(&process).await.exit_code, 0);
    assert_eq!(read(&dirs.replica_dir(key(1)).join("seen")), "token=[]\n");

    // Nothing blocked in the workload (the shim blocks what it waits for).
    let mask = LaunchSpec {
        command: vec!["grep".into(), "SigBlk".into(), "/proc/self/status".into()],
        ..spec(3, "")
    };
    let process = ReplicaProcess::spawn(&dirs, &shim(), &mask, 0).unwrap();
    assert_eq!(wait(&process).await.exit_code, 0);
    assert_eq!(
        read(&dirs.log_path(key(3))).trim(),
        "SigBlk:\t0000000000000000"
    );

    let missing = LaunchSpec {
        command: vec!["/nonexistent/program".into()],
        ..spec(2, "")
    };
    let process = ReplicaProcess::spawn(&dirs, &shim(), &missing, 0).unwrap();
    assert_eq!(wait(&process).await.exit_code, 127);
    assert!(read(&dirs.log_path(key(2))).contains("cannot start"));
}

#[tokio::test]
async fn sigterm_reaches_the_workload_once_and_its_own_exit_code_is_recorded() {
    let (_dir, dirs) = node_dirs();
    let script = "trap 'echo term >> terms; exit 7' TERM; echo ready > ready; while true; do sleep 0.05; done";
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(1, script), 0).unwrap();
    let replica_dir = dirs.replica_dir(key(1));
    until("the trap is installed", || {
        replica_dir.join("ready").exists()
    })
    .await;
    let started = Instant::now();
    process.terminate(Duration::from_secs(10));
    let exit = wait(&process).await;
    assert_eq!(
        exit,
        ProcessExit {
            exit_code: 7,
            recorded: true,
            killed: false
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(read(&replica_dir.join("terms")), "term\n", "one SIGTERM");
}

#[tokio::test]
async fn a_workload_ignoring_sigterm_is_killed_with_its_group_after_the_grace_period() {
    let (_dir, dirs) = node_dirs();
    // The background child is in the same process group and must die too.
    let script = "trap '' TERM; (trap '' TERM; while true; do sleep 0.05; done) & echo $! > child; while true; do sleep 0.05; done";
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(1, script), 0).unwrap();
    let child_file = dirs.replica_dir(key(1)).join("child");
    until("the background child runs", || {
        !read(&child_file).trim().is_empty()
    })
    .await;
    let child: u32 = read(&child_file).trim().parse().unwrap();
    let started = Instant::now();
    process.terminate(Duration::from_millis(400));
    let exit = wait(&process).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        exit,
        ProcessExit {
            exit_code: 137,
            recorded: false,
            killed: true
        }
    );
    until("the background child is gone", || {
        read_stat(child).is_none_or(|stat| stat.is_dead())
    })
    .await;
}

#[tokio::test]
async fn a_process_outlives_its_dropped_supervisor_and_is_adopted_again() {
    let (_dir, dirs) = node_dirs();
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(1, "exec sleep 30"), 5).unwrap();
    let pid = process.pid();
    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = dirs.scan_records().unwrap();
    assert_eq!(records.len(), 1);
    assert!(is_alive(pid, records[0].start_ticks), "still running");
    let adopted = match ReplicaProcess::adopt(&dirs, records[0].clone()) {
        Adoption::Running(process) => process,
        Adoption::Ended(exit) => panic!("ended: {exit:?}"),
    };
    assert_eq!(adopted.pid(), pid);
    assert_eq!(adopted.record().started_at_ms, 5);
    adopted.terminate(Duration::from_secs(10));
    let exit = wait(&adopted).await;
    // sleep dies of the forwarded SIGTERM: 128 + 15, written by the shim.
    assert_eq!(
        exit,
        ProcessExit {
            exit_code: 143,
            recorded: true,
            killed: false
        }
    );
}

#[tokio::test]
async fn an_adopted_process_that_ends_by_itself_is_noticed() {
    let (_dir, dirs) = node_dirs();
    let script = "while [ ! -f go ]; do sleep 0.05; done; exit 4";
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(1, script), 0).unwrap();
    drop(process);
    let record = dirs.scan_records().unwrap().remove(0);
    let adopted = match ReplicaProcess::adopt(&dirs, record) {
        Adoption::Running(process) => process,
        Adoption::Ended(exit) => panic!("ended: {exit:?}"),
    };
    std::fs::write(dirs.replica_dir(key(1)).join("go"), "").unwrap();
    assert_eq!(
        wait(&adopted).await,
        ProcessExit {
            exit_code: 4,
            recorded: true,
            killed: false
        }
    );
}

#[tokio::test]
async fn ended_records_give_the_recorded_code_or_137_when_the_shim_vanished() {
    let (_dir, dirs) = node_dirs();
    // Ended by itself while unsupervised: the exit file has its code.
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(1, "exit 9"), 0).unwrap();
    wait(&process).await;
    drop(process);
    // Killed with its shim (no exit file).
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(2, "exec sleep 30"), 0).unwrap();
    let pid = process.pid();
    drop(process);
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal_group(pid, libc::SIGKILL).unwrap();
    let records = dirs.scan_records().unwrap();
    until("the killed shim is gone", || {
        !is_alive(pid, records[1].start_ticks)
    })
    .await;
    let outcomes: Vec<ProcessExit> = records
        .into_iter()
        .map(|record| match ReplicaProcess::adopt(&dirs, record) {
            Adoption::Ended(exit) => exit,
            Adoption::Running(process) => panic!("{} runs", process.key()),
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ProcessExit {
                exit_code: 9,
                recorded: true,
                killed: false
            },
            ProcessExit {
                exit_code: 137,
                recorded: false,
                killed: false
            },
        ]
    );
}

#[tokio::test]
async fn a_reused_pid_is_not_adopted() {
    let (_dir, dirs) = node_dirs();
    let own = std::process::id();
    let record = ReplicaRecord {
        job: 1,
        rank: 0,
        generation: 1,
        shim_pid: own,
        start_ticks: read_stat(own).unwrap().start_ticks + 1,
        started_at_ms: 0,
        device_indices: Vec::new(),
        terminate_reason: String::new(),
    };
    match ReplicaProcess::adopt(&dirs, record) {
        Adoption::Ended(exit) => assert_eq!(exit.exit_code, 137),
        Adoption::Running(_) => panic!("adopted a process that merely has the same pid"),
    }
}

#[tokio::test]
async fn the_log_rotates_while_the_shim_keeps_appending() {
    let (_dir, dirs) = node_dirs();
    let script =
        "i=0; while [ ! -f stop ]; do echo line $i; i=$((i+1)); sleep 0.01; done; echo last";
    let process = ReplicaProcess::spawn(&dirs, &shim(), &spec(1, script), 0).unwrap();
    let log = dirs.log_path(key(1));
    until("the log grows", || {
        std::fs::metadata(&log).is_ok_and(|metadata| metadata.len() > 200)
    })
    .await;
    assert!(rotate_if_needed(&log, 100, 2).unwrap());
    let rotated = read(&rotated_path(&log, 1));
    assert!(rotated.starts_with("line 0\n"), "{rotated:?}");
    std::fs::write(dirs.replica_dir(key(1)).join("stop"), "").unwrap();
    assert_eq!(wait(&process).await.exit_code, 0);
    let current = read(&log);
    assert!(current.ends_with("last\n"), "{current:?}");
    assert!(
        !current.contains("line 0\n"),
        "the rotated part is gone: {current:?}"
    );
    assert!(
        !current.starts_with('\0'),
        "O_APPEND writes continue at the new end, no hole"
    );
}
