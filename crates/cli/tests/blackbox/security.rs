//! What a replica keeps secret: a generated admin token is written to a private file
//! only (never to stdout or the log), and the data directory is private.

use crate::common;
use common::{Admin, Cluster, QUIET_LOOPS};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Every directory under `root` (itself included).
fn directories(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![root.to_path_buf()];
    let mut index = 0;
    while index < found.len() {
        for item in std::fs::read_dir(&found[index]).expect("read dir") {
            let path = item.expect("dir entry").path();
            if std::fs::symlink_metadata(&path).expect("metadata").is_dir() {
                found.push(path);
            }
        }
        index += 1;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_admin_token_is_only_in_a_private_file() {
    let _machine = common::machine_shared().await;
    let mut cluster = Cluster {
        directory: tempfile::tempdir().expect("temporary directory"),
        replicas: Vec::new(),
        engine: "sled".into(),
        loops: QUIET_LOOPS.into(),
    };
    let address = format!("127.0.0.1:{}", common::free_port());
    let replica = cluster.prepare_replica(1, &address, &[(1, address.clone())]);
    // No admin token in the configuration: the first leader generates one.
    let config = std::fs::read_to_string(&replica.config_path).expect("config");
    let without: String = config
        .lines()
        .filter(|line| !line.starts_with("admin_token"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(config, without, "the harness config names an admin token");
    std::fs::write(&replica.config_path, without).expect("rewrite config");
    let data_dir = replica.data_dir.clone();
    cluster.replicas.push(replica);
    cluster.spawn(0);

    let token_file = data_dir.join("admin-token");
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(&token_file) {
            if !token.is_empty() {
                break token;
            }
        }
        assert!(Instant::now() < deadline, "no admin-token file was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(mode(&token_file), 0o600, "the token file is private");
    // The token works, and it appears in neither stdout nor stderr.
    let admin = Admin::connect(&address, token.trim()).await;
    admin
        .status()
        .await
        .expect("the generated token is an admin's");
    let output = cluster.log_of(1);
    assert!(
        !output.contains(token.trim()),
        "the generated token was printed: {output}"
    );
    // The data directory is private to the replica's user: no directory in it can be
    // entered by anyone else, and the snapshot files are the owner's only.
    for directory in directories(&data_dir) {
        assert_eq!(mode(&directory), 0o700, "{}", directory.display());
    }
    let snapshots = data_dir.join("snapshots");
    for item in std::fs::read_dir(&snapshots).expect("snapshots") {
        let path = item.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}
