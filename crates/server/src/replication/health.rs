//! Whether this replica can serve, and why not: what ClusterStatus reports, what the
//! gate refuses calls with, and what stops the process.
//!
//! - A **storage fault** (a log, vote or snapshot write failed: ENOSPC, EIO, a failed
//!   fsync) kills openraft's core. The replica never goes on as if alive: from the moment
//!   it is seen every Admin and Agent call is answered `Unavailable` with the reason (and
//!   `x-corral-unhealthy`, so clients try another replica and trust no leader it names),
//!   and the process exits for its supervisor to restart it from what is durable on disk
//!   (`manager::run`). A failed fsync is never retried: the page cache can no longer be
//!   trusted, only a fresh start can.
//! - A **leader without a quorum** (no follower acknowledged it within its lease:
//!   partitioned, or it can send but not receive) takes no writes (openraft's
//!   CheckQuorum refuses them, and its quorum-loss probe lets the followers elect); it
//!   says so rather than naming itself leader to clients.
//! - A **clock** off the cluster's time (`cluster_clock`) is reported; it does not stop
//!   the replica from serving.
//! - A **NOSPACE alarm** in force (some replica's disk fell below its free-space floor;
//!   `disk_floor`) refuses new work with RESOURCE_EXHAUSTED on every replica until an
//!   operator disarms it.

use crate::replication::cluster_clock::ClusterClock;
use corral_model::{Alarm, AlarmKind, Command};
use corral_store::{Raft, StateMachineStore};
use corral_wire::headers::{NOT_PROPOSED_HEADER, UNHEALTHY_HEADER};
use openraft::async_runtime::WatchReceiver;
use openraft::rt::Instant as _;
use std::sync::{Arc, Mutex};
use tonic::metadata::MetadataValue;
use tonic::Status;

#[derive(Clone)]
pub(crate) struct Health {
    raft: Raft,
    clock: ClusterClock,
    /// openraft's leader lease (`election_timeout_max`).
    lease_ms: u64,
    storage_fault: Arc<Mutex<Option<String>>>,
    state_machine: StateMachineStore,
    /// The NOSPACE alarm in force, as of the guard's last look (`refresh_alarms`): the
    /// write path reads this copy rather than wait for the state's lock behind an apply.
    nospace: Arc<Mutex<Option<Alarm>>>,
}

impl Health {
    pub(crate) fn new(
        raft: Raft,
        clock: ClusterClock,
        lease_ms: u64,
        state_machine: StateMachineStore,
    ) -> Health {
        Health {
            raft,
            clock,
            lease_ms,
            storage_fault: Arc::default(),
            state_machine,
            nospace: Arc::default(),
        }
    }

    /// Refresh the NOSPACE copy as soon as an applied entry raises or disarms an alarm
    /// (or this replica fell behind the event stream), until the replica ends.
    pub(crate) async fn follow_alarms(self) {
        use tokio::sync::broadcast::error::RecvError;
        let mut events = self.state_machine.subscribe();
        self.refresh_alarms();
        loop {
            let changed = match events.recv().await {
                Ok(batch) => batch.iter().any(|record| {
                    matches!(
                        record.event,
                        corral_model::Event::AlarmRaised { .. }
                            | corral_model::Event::AlarmDisarmed { .. }
                    )
                }),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            };
            if changed {
                self.refresh_alarms();
            }
        }
    }

    /// Copy the NOSPACE alarm in force from the state (on every alarm event, see
    /// `follow_alarms`, and every heartbeat interval from the guard as a backstop).
    pub(crate) fn refresh_alarms(&self) {
        let alarm = self
            .state_machine
            .read(|state| state.alarm_of_kind(AlarmKind::NoSpace).cloned());
        *self
            .nospace
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = alarm;
    }

    /// RESOURCE_EXHAUSTED for a command that adds work while a NOSPACE alarm is in
    /// force; checked before the write is proposed.
    pub(crate) fn space_refusal(&self, command: &Command) -> Option<Status> {
        if !command.adds_work() {
            return None;
        }
        let alarm = self
            .nospace
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()?;
        Some(Status::resource_exhausted(format!(
            "the cluster refuses new work: alarm {} raised by replica {} ({}); free space \
             there, then disarm it with `corral cluster alarm-disarm`",
            alarm.kind, alarm.replica, alarm.detail
        )))
    }

    pub(crate) fn clock(&self) -> &ClusterClock {
        &self.clock
    }

    /// Why raft's core stopped, once it has (read from raft's metrics, remembered).
    pub(crate) fn storage_fault(&self) -> Option<String> {
        let mut fault = self
            .storage_fault
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if fault.is_none() {
            if let Err(fatal) = &self.raft.metrics().borrow_watched().running_state {
                *fault = Some(fatal.to_string());
            }
        }
        fault.clone()
    }

    /// How long this leader has gone without a quorum's acknowledgement, when longer
    /// than its lease; None on a follower or a healthy leader.
    pub(crate) fn leader_without_quorum_ms(&self) -> Option<u64> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(metrics.id) {
            return None;
        }
        let voters = metrics.membership_config.membership().voter_ids().count();
        if voters <= 1 {
            return None;
        }
        let silent_ms = match metrics.last_quorum_acked {
            Some(acked) => acked.elapsed().as_millis() as u64,
            // Never acknowledged in this term: count from when the term's vote was
            // written is not exposed; treat as within the lease until one is.
            None => return None,
        };
        (silent_ms > self.lease_ms).then_some(silent_ms)
    }

    /// Whether this leader is in a quiet phase of openraft's quorum-loss probing: it has
    /// gone without a quorum's acknowledgement past its lease, and alternates phases of
    /// `probe_interval_ms`, quiet first, then sending (as openraft decides whether to send
    /// heartbeats: `quorum_loss_probe_interval`).
    pub(crate) fn in_quiet_phase(&self, probe_interval_ms: u64) -> bool {
        assert!(probe_interval_ms > 0, "a zero probe interval has no phases");
        self.leader_without_quorum_ms().is_some_and(|silent_ms| {
            ((silent_ms - self.lease_ms) / probe_interval_ms).is_multiple_of(2)
        })
    }

    /// Why this replica cannot serve at all, if it cannot.
    pub(crate) fn cannot_serve(&self) -> Option<String> {
        if let Some(fault) = self.storage_fault() {
            return Some(format!(
                "replica {} stopped: its raft storage failed ({fault}); it is exiting so \
                 its supervisor restarts it from what is durable on disk",
                self.raft.metrics().borrow_watched().id
            ));
        }
        self.leader_without_quorum_ms().map(|silent_ms| {
            format!(
                "this replica leads but no quorum has acknowledged it for {silent_ms} ms \
                 (partitioned, or its inbound traffic is lost); another replica is being \
                 elected"
            )
        })
    }

    /// Everything wrong with this replica, for ClusterStatus; empty when healthy.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.cannot_serve().into_iter().collect();
        problems.extend(self.clock.stepped().map(|alarm| alarm.to_string()));
        if self.raft.is_leader() {
            problems.extend(self.clock.peer_alarms().iter().map(ToString::to_string));
        }
        problems
    }

    /// The refusal for a call this replica cannot serve.
    pub(crate) fn refusal(&self) -> Option<Status> {
        self.cannot_serve().map(unhealthy)
    }
}

/// An `Unavailable` that tells the client to go elsewhere and to trust no leader hint.
pub(crate) fn unhealthy(message: String) -> Status {
    let mut status = Status::unavailable(message);
    let metadata = status.metadata_mut();
    metadata.insert(UNHEALTHY_HEADER, MetadataValue::from_static("true"));
    metadata.insert(NOT_PROPOSED_HEADER, MetadataValue::from_static("true"));
    status
}
