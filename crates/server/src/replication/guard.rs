//! The replica's guard: a task that watches what raft cannot see for itself and acts.
//! - raft's core died of a storage fault: report it (`Health`), and end the replica
//!   (`Manager::stopped` resolves; `manager::run` exits) rather than live on without a
//!   log. It is never restarted in place: a failed fsync leaves the page cache
//!   untrustworthy, so recovery is a new process reading what is durable.
//! - this replica leads with a wall clock off the cluster's time: hand leadership to the
//!   peer whose clock agrees best (at most once per `TRANSFER_PAUSE_MS`), so a stepped
//!   clock never leads for long; its stamps meanwhile come from the monotonic clock.

use crate::replication::health::Health;
use corral_store::Raft;
use openraft::async_runtime::WatchReceiver;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Pause between leadership transfers of one replica, so a transfer that did not take
/// is retried but never spins.
const TRANSFER_PAUSE_MS: u64 = 2_000;

/// Watch `raft` every `interval` until the process ends; `stopped` is set to the reason
/// once raft's core has died.
pub(crate) async fn guard(
    raft: Raft,
    health: Health,
    interval: Duration,
    stopped: watch::Sender<Option<String>>,
) {
    let mut last_transfer: Option<tokio::time::Instant> = None;
    let mut led_term: Option<u64> = None;
    let mut reported_step = false;
    loop {
        if let Some(fault) = health.storage_fault() {
            error!(
                "raft's core stopped: {fault}. This replica no longer leads, votes or \
                 serves; it exits so its supervisor restarts it from what is durable on disk"
            );
            let _ = stopped.send(Some(fault));
            return;
        }
        let metrics = raft.metrics().borrow_watched().clone();
        let leading = metrics.current_leader == Some(metrics.id);
        if leading && led_term != Some(metrics.current_term) {
            // A new term measures its peers afresh.
            health.clock().forget_peers();
            led_term = Some(metrics.current_term);
        }
        match health.clock().stepped() {
            Some(alarm) => {
                if !reported_step {
                    warn!("clock alarm: {alarm}");
                    reported_step = true;
                }
                let paused = last_transfer
                    .is_some_and(|at| at.elapsed() < Duration::from_millis(TRANSFER_PAUSE_MS));
                if leading && !paused {
                    if let Some(peer) = health.clock().agreeing_peers().first().copied() {
                        warn!("handing leadership to replica {peer}, whose clock agrees");
                        last_transfer = Some(tokio::time::Instant::now());
                        if let Err(fatal) = raft.trigger().transfer_leader(peer).await {
                            warn!("leadership transfer to {peer} failed: {fatal}");
                        }
                    }
                }
            }
            None => {
                if reported_step {
                    info!("clock alarm cleared: the wall clock agrees with the cluster's time");
                    reported_step = false;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}
