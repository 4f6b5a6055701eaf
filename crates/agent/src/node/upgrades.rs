//! A node's driver upgrades: what each target asks for (once per distinct target), the
//! hook run off the loop, the installed versions kept and reported. A failed hook is
//! reported to the managers with the end of its output, and run again after a pause
//! that doubles each time, up to `upgrade_attempts` runs; the last failure is reported
//! as final, and the managers then leave the node isolated and finish the pool's
//! upgrade without it.

use super::{Event, Node};
use crate::config::DriverVersions;
use crate::environment::HookRun;
use crate::managers::reports::Report;
use crate::upgrade::{self, UpgradeStep, UPGRADE_LOG_FILE_NAME};
use crate::wire::pb;
use std::path::Path;
use std::time::Duration;
use tracing::{error, info, warn};

/// At most this much of a failed hook's output (and why it failed) is reported.
const OUTPUT_TAIL_BYTES: usize = 2048;
/// The longest pause between two runs of a failing hook.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(600);

/// The node's installed driver versions and the last target it acted on.
pub(super) struct Upgrades {
    installed: DriverVersions,
    /// None until a target is handled in this agent run.
    handled: Option<DriverVersions>,
    /// Runs of the hook towards `handled` so far.
    attempts: u32,
    /// Whether the managers' latest view still asks for an upgrade.
    wanted: bool,
}

impl Upgrades {
    /// The versions recorded in `node_dir` by an earlier upgrade, else `configured`.
    pub(super) fn load(node_dir: &Path, configured: &DriverVersions) -> Upgrades {
        Upgrades {
            installed: upgrade::load_installed(node_dir, configured),
            handled: None,
            attempts: 0,
            wanted: false,
        }
    }

    pub(super) fn installed(&self) -> &DriverVersions {
        &self.installed
    }
}

impl Node {
    pub(super) fn consider_upgrade(&mut self, target: Option<&pb::DriverTarget>) {
        self.upgrades.wanted = target.is_some();
        match upgrade::decide(
            target,
            &self.upgrades.installed,
            self.upgrades.handled.as_ref(),
        ) {
            UpgradeStep::Nothing => {}
            UpgradeStep::Report(versions) => {
                self.upgrades.handled = Some(versions.clone());
                self.push_driver_report(&versions);
            }
            UpgradeStep::Install(versions) => {
                self.upgrades.handled = Some(versions.clone());
                self.upgrades.attempts = 0;
                self.run_upgrade_hook(versions);
            }
        }
    }

    fn run_upgrade_hook(&mut self, versions: DriverVersions) {
        let Some(hook) = self.ctx.config.upgrade_hook.clone() else {
            info!(
                "{}: no upgrade hook; recording drivers {versions:?}",
                self.name()
            );
            self.on_upgrade_finished(versions, Ok(()));
            return;
        };
        self.upgrades.attempts += 1;
        info!(
            "{}: upgrading drivers to {versions:?} (attempt {})",
            self.name(),
            self.upgrades.attempts
        );
        let events = self.events.clone();
        let run = self.ctx.environment.upgrade_hook.run(HookRun {
            hook,
            versions: versions.clone(),
            node_dir: self.ctx.dirs.root().to_path_buf(),
            node_name: self.ctx.name.clone(),
            timeout: Duration::from_millis(self.ctx.config.upgrade_timeout_ms),
        });
        tokio::spawn(async move {
            let result = run.await;
            let _ = events.send(Event::UpgradeFinished(versions, result)).await;
        });
    }

    /// A failed upgrade's pause ended: run the hook again, unless the managers no
    /// longer ask for it (the upgrade was cancelled or another target came).
    pub(super) fn retry_upgrade(&mut self, versions: DriverVersions) {
        if !self.upgrades.wanted || self.upgrades.handled.as_ref() != Some(&versions) {
            info!(
                "{}: no longer asked to upgrade to {versions:?}; not retrying",
                self.name()
            );
            return;
        }
        self.run_upgrade_hook(versions);
    }

    pub(super) fn on_upgrade_finished(
        &mut self,
        versions: DriverVersions,
        result: Result<(), String>,
    ) {
        if let Err(problem) = result {
            self.on_upgrade_failed(versions, &problem);
            return;
        }
        if let Err(error) = upgrade::store_installed(self.ctx.dirs.root(), &versions) {
            error!(
                "{}: cannot record the driver versions: {error}",
                self.name()
            );
            return;
        }
        info!("{}: drivers now {versions:?}", self.name());
        self.upgrades.installed = versions.clone();
        self.push_driver_report(&versions);
    }

    /// Reports the failure (with the end of the hook's output) and pauses before the
    /// next attempt, or gives up after the configured number of attempts.
    fn on_upgrade_failed(&mut self, versions: DriverVersions, problem: &str) {
        let attempt = self.upgrades.attempts.max(1);
        let final_attempt = attempt >= self.ctx.config.upgrade_attempts;
        error!(
            "{}: driver upgrade to {versions:?} failed (attempt {attempt} of {}): {problem}",
            self.name(),
            self.ctx.config.upgrade_attempts
        );
        let tail = output_tail(self.ctx.dirs.root(), problem);
        self.reports.push(Report::Driver(pb::DriverReport {
            node: self.node_id,
            gpu_driver_version: self.upgrades.installed.gpu_driver_version.clone(),
            npu_driver_version: self.upgrades.installed.npu_driver_version.clone(),
            failed_attempt: attempt,
            final_attempt,
            output_tail: tail,
        }));
        if final_attempt {
            warn!(
                "{}: giving up on drivers {versions:?}; the node stays isolated",
                self.name()
            );
            return;
        }
        let pause = retry_pause(self.ctx.config.upgrade_retry_backoff_ms, attempt);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let _ = events.send(Event::UpgradeRetry(versions)).await;
        });
    }

    fn push_driver_report(&self, versions: &DriverVersions) {
        self.reports.push(Report::Driver(pb::DriverReport {
            node: self.node_id,
            gpu_driver_version: versions.gpu_driver_version.clone(),
            npu_driver_version: versions.npu_driver_version.clone(),
            ..Default::default()
        }));
    }
}

/// The pause after failed attempt `attempt` (1, 2, ...): `base_ms`, doubled each time,
/// at most [`MAX_RETRY_PAUSE`].
fn retry_pause(base_ms: u64, attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(20);
    Duration::from_millis(base_ms.saturating_mul(factor)).min(MAX_RETRY_PAUSE)
}

/// Why the hook failed, after the end of its log, within [`OUTPUT_TAIL_BYTES`] (cut at
/// a character boundary).
fn output_tail(node_dir: &Path, problem: &str) -> String {
    let log = std::fs::read(node_dir.join(UPGRADE_LOG_FILE_NAME)).unwrap_or_default();
    let log = String::from_utf8_lossy(&log);
    let problem: String = problem.chars().take(OUTPUT_TAIL_BYTES / 4).collect();
    let room = OUTPUT_TAIL_BYTES.saturating_sub(problem.len() + 3);
    let mut start = log.len().saturating_sub(room);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    let tail = log[start..].trim();
    let text = if tail.is_empty() {
        problem
    } else {
        format!("{tail} | {problem}")
    };
    assert!(text.len() <= OUTPUT_TAIL_BYTES, "the tail is bounded");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_bound() {
        assert_eq!(retry_pause(1_000, 1), Duration::from_secs(1));
        assert_eq!(retry_pause(1_000, 2), Duration::from_secs(2));
        assert_eq!(retry_pause(1_000, 4), Duration::from_secs(8));
        assert_eq!(retry_pause(1_000, 40), MAX_RETRY_PAUSE);
    }

    #[test]
    fn the_output_tail_keeps_the_end_of_the_log_and_the_reason_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(output_tail(dir.path(), "exit 3"), "exit 3");
        let log = format!("{}é the last line\n", "x".repeat(5_000));
        std::fs::write(dir.path().join(UPGRADE_LOG_FILE_NAME), log).unwrap();
        let tail = output_tail(dir.path(), "the upgrade hook failed (exit status: 3)");
        assert!(tail.len() <= OUTPUT_TAIL_BYTES);
        assert!(
            tail.ends_with("the last line | the upgrade hook failed (exit status: 3)"),
            "{tail}"
        );
    }
}
