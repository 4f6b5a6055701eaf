//! A node's driver upgrades: what each target asks for (once per distinct target), the
//! hook run off the loop, the installed versions kept and reported.

use super::{Event, Node};
use crate::config::DriverVersions;
use crate::environment::HookRun;
use crate::managers::reports::Report;
use crate::upgrade::{self, UpgradeStep};
use crate::wire::pb;
use std::path::Path;
use std::time::Duration;
use tracing::{error, info};

/// The node's installed driver versions and the last target it acted on.
pub(super) struct Upgrades {
    installed: DriverVersions,
    /// None until a target is handled in this agent run.
    handled: Option<DriverVersions>,
}

impl Upgrades {
    /// The versions recorded in `node_dir` by an earlier upgrade, else `configured`.
    pub(super) fn load(node_dir: &Path, configured: &DriverVersions) -> Upgrades {
        Upgrades {
            installed: upgrade::load_installed(node_dir, configured),
            handled: None,
        }
    }

    pub(super) fn installed(&self) -> &DriverVersions {
        &self.installed
    }
}

impl Node {
    pub(super) fn consider_upgrade(&mut self, target: Option<&pb::DriverTarget>) {
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
                let Some(hook) = self.ctx.config.upgrade_hook.clone() else {
                    info!(
                        "{}: no upgrade hook; recording drivers {versions:?}",
                        self.name()
                    );
                    self.on_upgrade_finished(versions, Ok(()));
                    return;
                };
                info!("{}: upgrading drivers to {versions:?}", self.name());
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
        }
    }

    pub(super) fn on_upgrade_finished(
        &mut self,
        versions: DriverVersions,
        result: Result<(), String>,
    ) {
        if let Err(problem) = result {
            error!("{}: driver upgrade failed: {problem}", self.name());
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

    fn push_driver_report(&self, versions: &DriverVersions) {
        self.reports.push(Report::Driver(pb::DriverReport {
            node: self.node_id,
            gpu_driver_version: versions.gpu_driver_version.clone(),
            npu_driver_version: versions.npu_driver_version.clone(),
        }));
    }
}
