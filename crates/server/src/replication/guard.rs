//! The replica's guard: a task that watches what raft cannot see for itself and acts.
//! - raft's core died of a storage fault: report it (`Health`), and end the replica
//!   (`Manager::stopped` resolves; `manager::run` exits) rather than live on without a
//!   log. It is never restarted in place: a failed fsync leaves the page cache
//!   untrustworthy, so recovery is a new process reading what is durable.
//! - the NOSPACE alarm: its copy in `Health` is refreshed every interval.
//! - this replica leads with a wall clock off the cluster's time: hand leadership to the
//!   peer whose clock agrees best (at most once per `TRANSFER_PAUSE_MS`), so a stepped
//!   clock never leads for long; its stamps meanwhile come from the monotonic clock.
//! - this replica leads but no quorum has acknowledged it within its lease: in the quiet
//!   phases of openraft's quorum-loss probing, hold log entries back from the followers
//!   too (`AppendHold`), so they hear nothing and elect; in the sending phases entries
//!   go out with the probes, so a follower whose log must be repaired before it can
//!   acknowledge is repaired.

use crate::replication::health::Health;
use crate::replication::peer_network::AppendHold;
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
    probe_interval_ms: u64,
    append_hold: AppendHold,
    stopped: watch::Sender<Option<String>>,
) {
    let mut last_transfer: Option<tokio::time::Instant> = None;
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
        health.refresh_alarms();
        let quiet = health.in_quiet_phase(probe_interval_ms);
        if append_hold.set(quiet) != quiet {
            if quiet {
                warn!(
                    "no quorum has acknowledged this leader within its lease: holding log \
                     entries back so that its followers elect a leader they can reach"
                );
            } else {
                info!("log entries flow to the followers again");
            }
        }
        let metrics = raft.metrics().borrow_watched().clone();
        let leading = metrics.current_leader == Some(metrics.id);
        match health.clock().stepped() {
            Some(alarm) => {
                if !reported_step {
                    warn!("clock alarm: {alarm}");
                    reported_step = true;
                }
                let paused = last_transfer
                    .is_some_and(|at| at.elapsed() < Duration::from_millis(TRANSFER_PAUSE_MS));
                if leading && !paused {
                    // Only to a voter: a replica removed from the cluster may still
                    // have a fresh clock sample, and cannot take over.
                    let voters: Vec<u64> =
                        metrics.membership_config.membership().voter_ids().collect();
                    let peer = health
                        .clock()
                        .agreeing_peers()
                        .into_iter()
                        .find(|peer| voters.contains(peer));
                    if let Some(peer) = peer {
                        warn!("handing leadership to replica {peer}, whose clock agrees");
                        last_transfer = Some(tokio::time::Instant::now());
                        // Not campaigning again while the peer takes over; only for the
                        // pause, so a cluster whose clocks all stepped still elects.
                        raft.runtime_config().elect(false);
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
        let paused =
            last_transfer.is_some_and(|at| at.elapsed() < Duration::from_millis(TRANSFER_PAUSE_MS));
        if last_transfer.is_some() && !paused {
            raft.runtime_config().elect(true);
            last_transfer = None;
        }
        tokio::time::sleep(interval).await;
    }
}
