//! `corral dev` as a user runs it: one process with three manager replicas and the
//! in-process node agents; a training job submitted with the CLI runs as real
//! processes, completes, is billed, and its output comes back with `corral job logs`.

use crate::common;

use common::corral_binary;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TENANT_TOKEN: &str = "corral-dev-demo-token";

fn base_port() -> u16 {
    // Three consecutive free ports are likely right below a fresh ephemeral port.
    let port = common::free_port();
    port.saturating_sub(3000).max(20_000)
}

/// What `corral dev` told the user to export.
struct Printed {
    address: String,
    ca_file: String,
}

fn corral(printed: &Printed, args: &[&str]) -> std::process::Output {
    Command::new(corral_binary())
        .args(args)
        .env("CORRAL_ADDR", &printed.address)
        .env("CORRAL_CA_FILE", &printed.ca_file)
        .env("CORRAL_TOKEN", TENANT_TOKEN)
        .output()
        .expect("run corral")
}

/// Kills `corral dev` when the test ends, passed or failed (the success path stops it
/// with SIGTERM first and checks its exit).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// Attempts at finding three free ports: another test's processes may take one
/// between choosing them and `corral dev` binding them.
const START_ATTEMPTS: u32 = 3;

/// Start `corral dev` on three consecutive ports and wait until it says it is ready
/// (with what it told the user to export); None when it exited first (it could not bind
/// a port).
fn start_dev(data: &std::path::Path, port: u16) -> Option<(KillOnDrop, Printed)> {
    let dev = Command::new(corral_binary())
        .args(["dev", "--port", &port.to_string(), "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start corral dev");
    let mut dev = KillOnDrop(dev);
    let stdout = dev.0.stdout.take().expect("stdout");
    let (ready_sender, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut exports = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(export) = line.trim().strip_prefix("export ") {
                let (assignment, _comment) = export.split_once('#').unwrap_or((export, ""));
                exports.push(assignment.trim().to_string());
            }
            let value = |name: &str| {
                exports
                    .iter()
                    .find_map(|export| export.strip_prefix(&format!("{name}=")))
                    .map(str::to_string)
            };
            if line.contains("Press Ctrl-C to stop") {
                let _ = ready_sender.send(Printed {
                    address: value("CORRAL_ADDR").expect("CORRAL_ADDR printed"),
                    ca_file: value("CORRAL_CA_FILE").expect("CORRAL_CA_FILE printed"),
                });
            }
        }
    });
    match ready.recv_timeout(Duration::from_secs(60)) {
        Ok(printed) => Some((dev, printed)),
        // The reader ended: the process closed its output, i.e. exited.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("corral dev did not say it is ready within 60 s")
        }
    }
}

#[test]
fn corral_dev_runs_a_training_job_with_real_processes() {
    let _machine = common::machine_shared_blocking();
    let (data, port, mut dev, printed) = (0..START_ATTEMPTS)
        .find_map(|_| {
            let data = tempfile::tempdir().expect("temporary directory");
            let port = base_port();
            start_dev(data.path(), port).map(|(dev, printed)| (data, port, dev, printed))
        })
        .expect("corral dev started and printed that it is ready");
    assert_eq!(printed.address, format!("127.0.0.1:{port}"));
    assert!(
        Path::new(&printed.ca_file).starts_with(data.path()),
        "the dev CA is in the data directory: {}",
        printed.ca_file
    );

    // TLS is on: without the CA the CLI refuses to speak (never plaintext by default),
    // and plaintext asked for explicitly is refused by the server.
    let without_ca = Command::new(corral_binary())
        .args(["pool", "list"])
        .env("CORRAL_ADDR", &printed.address)
        .env("CORRAL_TOKEN", TENANT_TOKEN)
        .env_remove("CORRAL_CA_FILE")
        .output()
        .expect("run corral");
    assert_eq!(without_ca.status.code(), Some(2), "{without_ca:?}");
    assert!(
        String::from_utf8_lossy(&without_ca.stderr).contains("--ca-file"),
        "{without_ca:?}"
    );
    let plaintext = Command::new(corral_binary())
        .args(["--timeout-ms", "3000", "pool", "list"])
        .env("CORRAL_ADDR", format!("http://{}", printed.address))
        .env("CORRAL_TOKEN", TENANT_TOKEN)
        .env_remove("CORRAL_CA_FILE")
        .output()
        .expect("run corral");
    assert!(!plaintext.status.success(), "{plaintext:?}");

    let pools = json(&corral(&printed, &["-o", "json", "pool", "list"]));
    let pools = pools["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 1, "the demo tenant sees the public pool");
    assert_eq!(pools[0]["kind"], "public");
    assert_eq!(pools[0]["node_count"], 5);
    let pool = pools[0]["id"].as_u64().expect("pool id").to_string();

    let submitted = json(&corral(
        &printed,
        &[
            "-o",
            "json",
            "job",
            "submit",
            "--name",
            "hello",
            "--pool",
            &pool,
            "--kind",
            "training",
            "--replicas",
            "2",
            "--accelerators",
            "4",
            "--accelerator-type",
            "nvidia-a100",
            "--",
            "sh",
            "-c",
            "echo rank $CORRAL_RANK of $CORRAL_WORLD_SIZE on $CUDA_VISIBLE_DEVICES; sleep 0.3",
        ],
    ));
    let job = submitted["job"].as_u64().expect("job id").to_string();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut states = Vec::new();
    loop {
        let found = json(&corral(&printed, &["-o", "json", "job", "get", &job]));
        let state = found["state"].as_str().unwrap_or_default().to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "Completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not complete; states seen: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(states.contains(&"Running".to_string()), "{states:?}");

    let logs = corral(&printed, &["job", "logs", &job, "--replica", "1"]);
    assert!(logs.status.success(), "{logs:?}");
    let text = String::from_utf8_lossy(&logs.stdout);
    let devices = text
        .trim()
        .strip_prefix("rank 1 of 2 on ")
        .unwrap_or_else(|| panic!("rank and world size in {text:?}"));
    assert_eq!(devices.split(',').count(), 4, "four GPUs: {text:?}");

    let bills = json(&corral(&printed, &["-o", "json", "bill", "list"]));
    assert!(
        bills["lifetime_total_micros"].as_u64().unwrap_or(0) > 0,
        "the public-pool job was billed: {bills}"
    );

    // SIGTERM stops it cleanly.
    let _ = Command::new("kill")
        .arg(dev.0.id().to_string())
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = dev.0.try_wait().expect("wait") {
            assert!(
                status.success(),
                "corral dev exits 0 on SIGTERM: {status:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "corral dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}
