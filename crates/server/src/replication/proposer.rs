//! Proposing commands: client writes go through group commit (`group_commit`), the
//! leader loops' commands straight to raft, each entry stamped with the leader's time;
//! when this replica is not the leader, a write goes to the leader over the peer channel
//! (one hop; the leader never forwards again). Also the read barrier for linearizable
//! reads.

use crate::environment::Randomness;
use crate::replication::cluster_clock::ClusterClock;
use crate::replication::encoding;
use crate::replication::group_commit::{GroupCommit, WriteError};
use crate::replication::health::Health;
use crate::replication::peer_network::{decode_reply, PeerChannels};
use corral_model::{Caller, Command, Principal};
use corral_state::RequestId;
use corral_store::{ApplyOutcome, Proposal, Raft, Write};
use corral_wire::headers::{LEADER_HEADER, NOT_PROPOSED_HEADER};
use corral_wire::pb;
use openraft::async_runtime::WatchReceiver;
use openraft::ReadPolicy;
use std::time::Duration;
use tonic::Status;

const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write waits for a leader (an election, a dead leader's address) before
/// it gives up; long enough to ride out one failover.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between attempts while no leader takes the write; an attempt is made
/// at once when raft reports a new leader or term.
const LEADER_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// An Unavailable status saying the write was never proposed.
pub(crate) fn not_proposed(message: impl Into<String>) -> Status {
    let mut status = Status::unavailable(message.into());
    status.metadata_mut().insert(
        NOT_PROPOSED_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    status
}

fn was_not_proposed(status: &Status) -> bool {
    status.metadata().contains_key(NOT_PROPOSED_HEADER)
}

/// A call that failed to reach the peer at all (connection refused or reset before
/// sending): the request was not delivered.
fn is_connection_failure(status: &Status) -> bool {
    let message = status.message();
    status.code() == tonic::Code::Unavailable
        && (message.contains("tcp connect")
            || message.contains("Connection refused")
            || message.contains("error trying to connect"))
}

fn leader_and_term(
    metrics: &openraft::RaftMetrics<corral_store::TypeConfig>,
) -> (Option<u64>, u64) {
    (metrics.current_leader, metrics.current_term)
}

/// Resolves once raft names a leader or term other than `seen`; never if raft stops
/// (nothing will change then).
async fn leader_or_term_changes(
    metrics: &mut openraft::type_config::alias::WatchReceiverOf<
        corral_store::TypeConfig,
        openraft::RaftMetrics<corral_store::TypeConfig>,
    >,
    seen: (Option<u64>, u64),
) {
    loop {
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if leader_and_term(&metrics.borrow_watched()) != seen {
            return;
        }
    }
}

#[derive(Clone)]
pub(crate) struct Proposer {
    raft: Raft,
    group_commit: GroupCommit,
    peers: PeerChannels,
    clock: ClusterClock,
    health: Health,
    randomness: Randomness,
}

fn unavailable_with_leader(message: &str, leader_address: Option<&str>) -> Status {
    let mut status = not_proposed(message);
    if let Some(address) = leader_address.and_then(|address| address.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, address);
    }
    status
}

/// Wait until this replica's state reflects every write committed before the call
/// (openraft's read index: only the leader can confirm that). On a follower, an
/// `Unavailable` that says `not_leader` and names the leader; any other failure is
/// `Unavailable` with `failed` as its context.
pub(crate) async fn read_index(raft: &Raft, not_leader: &str, failed: &str) -> Result<(), Status> {
    match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        Ok(_) => Ok(()),
        Err(error) => match error.forward_to_leader() {
            Some(forward) => Err(unavailable_with_leader(
                not_leader,
                forward.leader_node.as_ref().map(|node| node.addr.as_str()),
            )),
            None => Err(Status::unavailable(format!("{failed}: {error}"))),
        },
    }
}

/// Ok on the leader; otherwise `Unavailable` naming the leader's address (when known)
/// in `x-corral-leader`, so clients move there.
pub(crate) fn leader_only(raft: &Raft, message: &str) -> Result<(), Status> {
    if raft.is_leader() {
        return Ok(());
    }
    let metrics = raft.metrics().borrow_watched().clone();
    let leader_address = metrics.current_leader.and_then(|leader| {
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())
    });
    let mut status = Status::unavailable(message.to_string());
    if let Some(address) = leader_address.and_then(|address| address.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, address);
    }
    Err(status)
}

/// The one outcome of a proposal of one write.
fn single_outcome(mut outcomes: Vec<ApplyOutcome>) -> Result<ApplyOutcome, Status> {
    match (outcomes.pop(), outcomes.is_empty()) {
        (Some(outcome), true) => Ok(outcome),
        _ => Err(Status::internal(
            "the state machine did not answer a write with exactly one outcome",
        )),
    }
}

/// A failed proposal on a replica that must not forward: `Unavailable` naming the
/// leader when this replica is not it, otherwise an unknown outcome.
fn not_leader_or_unknown(error: &WriteError) -> Status {
    match error.forward_to_leader() {
        Some(forward) => unavailable_with_leader(
            "not the leader",
            forward.leader_node.as_ref().map(|node| node.addr.as_str()),
        ),
        None => Status::unavailable(format!("write failed, outcome unknown: {error}")),
    }
}

impl Proposer {
    /// A proposer and its group commit task (which ends when every clone is dropped).
    pub(crate) fn new(
        raft: Raft,
        peers: PeerChannels,
        clock: ClusterClock,
        health: Health,
        randomness: Randomness,
    ) -> (Proposer, tokio::task::JoinHandle<()>) {
        let (group_commit, task) = GroupCommit::start(raft.clone(), clock.clone());
        let proposer = Proposer {
            raft,
            group_commit,
            peers,
            clock,
            health,
            randomness,
        };
        (proposer, task)
    }

    /// A fresh id for a write that has none from its client.
    pub(crate) fn fresh_request_id(&self) -> RequestId {
        self.randomness.request_id()
    }

    /// A fresh token secret.
    pub(crate) fn fresh_secret(&self) -> String {
        self.randomness.secret()
    }

    /// The cluster's time now, as this replica knows it (`ClusterClock::now_ms`); the
    /// next stamp is never earlier.
    pub(crate) fn cluster_now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The time the next entry proposed here is stamped with.
    fn stamp_ms(&self) -> u64 {
        self.clock.stamp()
    }

    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Propose under a fresh request id (see `propose_request`).
    pub(crate) async fn propose(
        &self,
        caller: &Caller,
        command: Command,
    ) -> Result<ApplyOutcome, Status> {
        self.propose_request(caller, command, self.fresh_request_id())
            .await
    }

    /// Propose on this replica if it leads, otherwise forward to the leader. Every
    /// attempt carries the same request id, and the state machine answers a repeat with
    /// the first outcome, so when a leader dies mid-call or an election is under way the
    /// write is simply tried again until a leader takes it (for a bounded time).
    pub(crate) async fn propose_request(
        &self,
        caller: &Caller,
        command: Command,
        request_id: RequestId,
    ) -> Result<ApplyOutcome, Status> {
        if let Some(refusal) = self.health.space_refusal(&command) {
            return Err(refusal);
        }
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut metrics = self.raft.metrics();
        loop {
            // A replica that cannot serve says so at once rather than wait out the
            // deadline: the client goes to another replica.
            if let Some(refusal) = self.health.refusal() {
                return Err(refusal);
            }
            // The leader this attempt is made under; the next one waits for another.
            let seen = leader_and_term(&metrics.borrow_watched());
            let attempt = self.propose_once(caller, command.clone(), request_id).await;
            match attempt {
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    let changed = leader_or_term_changes(&mut metrics, seen);
                    let _ = tokio::time::timeout(LEADER_RETRY_PAUSE, changed).await;
                }
                other => return other,
            }
        }
    }

    /// Propose several writes of one principal together. On the leader they go to group
    /// commit as one group, so they share entries (one, up to `MAX_WRITES_PER_ENTRY`)
    /// and cost one queue slot and one reply instead of one each. If the group fails
    /// (this replica does not lead, an election, an unknown outcome), every write is
    /// proposed on its own as `propose_request` does, under its same request id: one the
    /// failed group did commit is answered with its first outcome, not applied again.
    pub(crate) async fn propose_requests(
        &self,
        caller: &Caller,
        commands: Vec<(Command, RequestId)>,
    ) -> Vec<Result<ApplyOutcome, Status>> {
        if let Some(refusal) = commands
            .iter()
            .find_map(|(command, _)| self.health.space_refusal(command))
        {
            return commands.iter().map(|_| Err(refusal.clone())).collect();
        }
        let writes: Vec<Write> = commands
            .iter()
            .map(|(command, request_id)| Write {
                principal: caller.principal.clone(),
                credential: caller.credential,
                command: command.clone(),
                request_id: Some(*request_id),
            })
            .collect();
        // Group commit answers every write it was given (asserted where entries commit).
        if let Ok(outcomes) = self.group_commit.write(writes).await {
            return outcomes.into_iter().map(Ok).collect();
        }
        let one_by_one = commands
            .into_iter()
            .map(|(command, request_id)| self.propose_request(caller, command, request_id));
        futures::future::join_all(one_by_one).await
    }

    async fn propose_once(
        &self,
        caller: &Caller,
        command: Command,
        request_id: RequestId,
    ) -> Result<ApplyOutcome, Status> {
        let write = Write {
            principal: caller.principal.clone(),
            credential: caller.credential,
            command,
            request_id: Some(request_id),
        };
        match self.group_commit.write(vec![write.clone()]).await {
            Ok(outcomes) => single_outcome(outcomes),
            Err(error) => match error.forward_to_leader() {
                Some(forward) => match &forward.leader_node {
                    Some(node) if forward.leader_id != Some(self.peers.this_replica()) => {
                        self.forward_until_leader_changes(&node.addr, &write).await
                    }
                    _ => Err(not_proposed("no leader is known yet; retry shortly")),
                },
                None => Err(Status::unavailable(format!(
                    "write failed, outcome unknown: {error}"
                ))),
            },
        }
    }

    /// Propose a leader loop's command only if this replica leads, as an entry of its
    /// own: a scheduler plan is never grouped with other writes, so the entry's index
    /// names that one plan (`Replica::placed_at_index`).
    pub(crate) async fn propose_here(
        &self,
        principal: Principal,
        command: Command,
    ) -> Result<ApplyOutcome, Status> {
        self.clock.until_known_if_leading(&self.raft).await;
        let proposal = Proposal::single(self.stamp_ms(), principal, command, None);
        match self.raft.client_write(proposal).await {
            Ok(response) => single_outcome(response.data.into_outcomes().collect()),
            Err(error) => Err(not_leader_or_unknown(&error)),
        }
    }

    /// Propose a write forwarded by another replica, only if this replica leads; it
    /// keeps the forwarding replica's request id.
    pub(crate) async fn propose_forwarded_here(
        &self,
        write: Write,
    ) -> Result<ApplyOutcome, Status> {
        match self.group_commit.write(vec![write]).await {
            Ok(outcomes) => single_outcome(outcomes),
            Err(error) => Err(not_leader_or_unknown(&error)),
        }
    }

    /// Forward to the leader, but give up as soon as raft names another leader or term:
    /// a leader that stopped receiving (a one-way partition) would otherwise hold the
    /// write until the forward timeout. Retried by the caller under the same request
    /// id, so a write the old leader did commit is not applied twice.
    async fn forward_until_leader_changes(
        &self,
        leader_address: &str,
        write: &Write,
    ) -> Result<ApplyOutcome, Status> {
        let mut metrics = self.raft.metrics();
        let seen = leader_and_term(&metrics.borrow_watched());
        let changed = leader_or_term_changes(&mut metrics, seen);
        tokio::select! {
            outcome = self.forward(leader_address, write) => outcome,
            () = changed => Err(Status::unavailable(
                "the leader changed while the write was forwarded to it; retrying",
            )),
        }
    }

    async fn forward(&self, leader_address: &str, write: &Write) -> Result<ApplyOutcome, Status> {
        let mut client = self.peers.client(leader_address)?;
        let request = pb::RaftRequest {
            data: encoding::encode(write)?,
            sent_at_ms: self.peers.sent_at_ms(),
        };
        let reply = tokio::time::timeout(FORWARD_TIMEOUT, client.forward(request))
            .await
            .map_err(|_| Status::unavailable("forwarding to the leader timed out"))?
            .map_err(|status| {
                if was_not_proposed(&status) || is_connection_failure(&status) {
                    not_proposed(format!(
                        "the leader at {leader_address} did not take the write: {}",
                        status.message()
                    ))
                } else {
                    // Retried under the same request id, so a write the dead leader did
                    // commit is not applied twice.
                    Status::unavailable(format!(
                        "forwarding to the leader failed: {}",
                        status.message()
                    ))
                }
            })?;
        decode_reply(reply.into_inner())
    }

    /// Wait until this replica has applied `index` (read-your-writes after a forwarded
    /// write), for at most the forward timeout.
    pub(crate) async fn wait_applied(
        &self,
        applied: &mut tokio::sync::watch::Receiver<u64>,
        index: u64,
    ) -> Result<(), Status> {
        let waiting = applied.wait_for(|applied| *applied >= index);
        match tokio::time::timeout(FORWARD_TIMEOUT, waiting).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::unavailable(format!(
                "the write committed at index {index} but this replica has not applied it yet"
            ))),
        }
    }

    /// Wait until this replica's state reflects every write committed before the call
    /// (read index). A follower answers Unavailable naming the leader, unless the read
    /// accepts stale data.
    pub(crate) async fn read_barrier(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        read_index(
            &self.raft,
            "linearizable reads are served by the leader; retry there or ask for a stale read",
            "read barrier failed",
        )
        .await
    }
}
