//! Driver upgrades: deciding what to do with a `NodeAssignments.upgrade` target (once per
//! distinct target), running the configured upgrade hook with a time bound, and keeping
//! the node's installed driver versions in `drivers.json` in its work directory.
//! [`ProcessHook`] is the shipped [`UpgradeHook`].

use crate::config::DriverVersions;
use crate::environment::{HookRun, UpgradeHook};
use crate::files::{read_small, write_atomic};
use corral_wire::pb;
use futures::future::BoxFuture;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file, in a node's work directory, holding its installed driver versions.
pub const DRIVERS_FILE_NAME: &str = "drivers.json";
/// The hook's output, in a node's work directory (replaced on each run).
pub const UPGRADE_LOG_FILE_NAME: &str = "upgrade.log";

/// What an upgrade target asks of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Nothing new (no target, or this target was already handled in this run).
    Nothing,
    /// The versions are already installed: report them.
    Report(DriverVersions),
    /// Run the hook to install these versions, then report them.
    Install(DriverVersions),
}

/// The versions a target asks for: each kind named by the target, the installed one
/// otherwise. None when the target names no version at all.
pub fn target_versions(
    target: Option<&pb::DriverTarget>,
    installed: &DriverVersions,
) -> Option<DriverVersions> {
    let target = target?;
    if target.gpu_driver_version.is_empty() && target.npu_driver_version.is_empty() {
        return None;
    }
    let pick = |wanted: &str, current: &str| {
        if wanted.is_empty() {
            current.to_string()
        } else {
            wanted.to_string()
        }
    };
    Some(DriverVersions {
        gpu_driver_version: pick(&target.gpu_driver_version, &installed.gpu_driver_version),
        npu_driver_version: pick(&target.npu_driver_version, &installed.npu_driver_version),
    })
}

/// The step for `target` given what is installed and the last target acted on.
pub fn decide(
    target: Option<&pb::DriverTarget>,
    installed: &DriverVersions,
    last_handled: Option<&DriverVersions>,
) -> UpgradeStep {
    let Some(wanted) = target_versions(target, installed) else {
        return UpgradeStep::Nothing;
    };
    if last_handled == Some(&wanted) {
        UpgradeStep::Nothing
    } else if wanted == *installed {
        UpgradeStep::Report(wanted)
    } else {
        UpgradeStep::Install(wanted)
    }
}

/// The installed versions: `drivers.json` when an upgrade wrote one, else `configured`.
pub fn load_installed(node_dir: &Path, configured: &DriverVersions) -> DriverVersions {
    read_small(&node_dir.join(DRIVERS_FILE_NAME))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| configured.clone())
}

/// Records `versions` as installed.
pub fn store_installed(node_dir: &Path, versions: &DriverVersions) -> io::Result<()> {
    let bytes = serde_json::to_vec(versions).map_err(io::Error::other)?;
    write_atomic(&node_dir.join(DRIVERS_FILE_NAME), &bytes)
}

/// The shipped [`UpgradeHook`]: the configured program as a child process
/// ([`run_hook`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessHook;

impl UpgradeHook for ProcessHook {
    fn run(&self, run: HookRun) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            run_hook(
                &run.hook,
                &run.versions,
                &run.node_dir,
                &run.node_name,
                run.timeout,
            )
            .await
        })
    }
}

/// Runs the upgrade hook (argv) towards `versions`, its output to `upgrade.log` in
/// `node_dir`, killed after `timeout`. Ok when it exits with 0.
pub async fn run_hook(
    hook: &[String],
    versions: &DriverVersions,
    node_dir: &Path,
    node_name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let (program, arguments) = hook.split_first().ok_or("the upgrade hook is empty")?;
    let log_path: PathBuf = node_dir.join(UPGRADE_LOG_FILE_NAME);
    let log = std::fs::File::create(&log_path)
        .map_err(|error| format!("{}: {error}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|error| format!("{}: {error}", log_path.display()))?;
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .env_remove("CORRAL_TOKEN")
        .env("CORRAL_TARGET_GPU_DRIVER", &versions.gpu_driver_version)
        .env("CORRAL_TARGET_NPU_DRIVER", &versions.npu_driver_version)
        .env("CORRAL_NODE_NAME", node_name)
        .current_dir(node_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start the upgrade hook {program}: {error}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "the upgrade hook failed ({status}); see {}",
            log_path.display()
        )),
        Ok(Err(error)) => Err(format!("waiting for the upgrade hook: {error}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!("the upgrade hook ran longer than {timeout:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(gpu: &str, npu: &str) -> DriverVersions {
        DriverVersions {
            gpu_driver_version: gpu.into(),
            npu_driver_version: npu.into(),
        }
    }

    fn target(gpu: &str, npu: &str) -> pb::DriverTarget {
        pb::DriverTarget {
            gpu_driver_version: gpu.into(),
            npu_driver_version: npu.into(),
        }
    }

    #[test]
    fn a_target_is_handled_once_and_keeps_unnamed_kinds() {
        let installed = versions("535", "7.0");
        assert_eq!(decide(None, &installed, None), UpgradeStep::Nothing);
        assert_eq!(
            decide(Some(&target("", "")), &installed, None),
            UpgradeStep::Nothing
        );
        let wanted = versions("550", "7.0");
        assert_eq!(
            decide(Some(&target("550", "")), &installed, None),
            UpgradeStep::Install(wanted.clone())
        );
        assert_eq!(
            decide(Some(&target("550", "")), &installed, Some(&wanted)),
            UpgradeStep::Nothing
        );
        // Already installed (e.g. after a restart before the report was applied).
        assert_eq!(
            decide(Some(&target("550", "")), &wanted, None),
            UpgradeStep::Report(wanted)
        );
    }

    #[test]
    fn installed_versions_persist() {
        let dir = tempfile::tempdir().unwrap();
        let configured = versions("535", "");
        assert_eq!(load_installed(dir.path(), &configured), configured);
        store_installed(dir.path(), &versions("550", "")).unwrap();
        assert_eq!(load_installed(dir.path(), &configured), versions("550", ""));
    }

    #[tokio::test]
    async fn the_hook_sees_the_targets_and_is_bounded_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let hook: Vec<String> = [
            "sh",
            "-c",
            "echo $CORRAL_TARGET_GPU_DRIVER/$CORRAL_TARGET_NPU_DRIVER/$CORRAL_NODE_NAME",
        ]
        .map(String::from)
        .to_vec();
        run_hook(
            &hook,
            &versions("550", "8.0"),
            dir.path(),
            "n1",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(UPGRADE_LOG_FILE_NAME)).unwrap(),
            "550/8.0/n1\n"
        );
        let failing: Vec<String> = ["sh", "-c", "exit 3"].map(String::from).to_vec();
        assert!(run_hook(
            &failing,
            &versions("1", ""),
            dir.path(),
            "n1",
            Duration::from_secs(10)
        )
        .await
        .is_err());
        let slow: Vec<String> = ["sleep", "30"].map(String::from).to_vec();
        let started = std::time::Instant::now();
        let error = run_hook(
            &slow,
            &versions("1", ""),
            dir.path(),
            "n1",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(error.contains("longer than"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
