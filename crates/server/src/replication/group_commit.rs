//! Group commit on the leader: client writes that arrive while earlier entries are
//! being committed are proposed together as one raft entry (`Proposal` with several
//! `Write`s). One entry means one log append and fsync on every replica, one
//! replication message per follower and one apply call, instead of one of each per
//! write; on two cores that per-entry work, not the state machine, is what limits the
//! write rate.
//!
//! At most `MAX_ENTRIES_IN_FLIGHT` entries are proposed and not yet applied at a time.
//! While they are in flight, new writes wait in the queue and become the next entry, so
//! the batch size follows the load by itself: a lone client's write is proposed at once
//! (no added latency), and under many clients each entry carries everything that
//! arrived during the previous commit. Entries are bounded by `MAX_WRITES_PER_ENTRY` and
//! `MAX_ENTRY_BYTES`; the queue by `QUEUE_CAPACITY` (a full queue makes callers wait).
//!
//! Writes keep their own principal, request id and outcome; a rejected write does not
//! affect the others in its entry (`State::apply_batch`). The group is only a transport.

use crate::replication::cluster_clock::ClusterClock;
use corral_store::{ApplyOutcome, Proposal, Raft, TypeConfig, Write};
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Writes in one raft entry. Bounds the entry, its apply time (the state lock is held
/// for one entry at a time) and the events it produces.
pub(crate) const MAX_WRITES_PER_ENTRY: usize = 512;
/// Encoded bytes of writes in one entry, far under the peer message limit
/// (`encoding::MAX_PEER_MESSAGE_BYTES`); a single larger write still goes, alone.
pub(crate) const MAX_ENTRY_BYTES: usize = 4 << 20;
/// Entries proposed and not yet applied. Two keep the log busy (the next append is
/// ready when the previous one is done) while still letting writes gather.
pub(crate) const MAX_ENTRIES_IN_FLIGHT: usize = 2;
/// Groups waiting to be proposed.
pub(crate) const QUEUE_CAPACITY: usize = 16_384;

/// What a failed proposal reports to every write in it.
pub(crate) type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// Writes proposed together and answered together (one client call's writes).
struct Group {
    writes: Vec<Write>,
    encoded_bytes: usize,
    reply: oneshot::Sender<Result<Vec<ApplyOutcome>, WriteError>>,
}

/// The sending side; clones share the queue.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Group>,
}

impl GroupCommit {
    /// Start the task that proposes queued writes through `raft`, stamping each entry
    /// with `clock`. The task ends when every `GroupCommit` is dropped.
    pub(crate) fn start(raft: Raft, clock: ClusterClock) -> (GroupCommit, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(propose_groups(receiver, raft, clock));
        (GroupCommit { queue }, task)
    }

    /// Propose `writes` (in at most as many entries as the bounds need; usually one,
    /// shared with other callers' writes) and wait until they are applied here. One
    /// outcome per write, in order; an error means the outcome of every write is
    /// whatever the error says (not proposed, or unknown).
    pub(crate) async fn write(&self, writes: Vec<Write>) -> Result<Vec<ApplyOutcome>, WriteError> {
        // Queued one after another, so the parts are proposed in order.
        let mut answers = Vec::new();
        for (writes, encoded_bytes) in split_to_entry_bounds(writes) {
            let (reply, answer) = oneshot::channel();
            let group = Group {
                writes,
                encoded_bytes,
                reply,
            };
            if self.queue.send(group).await.is_err() {
                return Err(stopped());
            }
            answers.push(answer);
        }
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.extend(answer.await.unwrap_or_else(|_| Err(stopped()))?);
        }
        Ok(outcomes)
    }
}

/// `writes` cut, in order, into parts that each fit one entry's bounds (a single write
/// larger than `MAX_ENTRY_BYTES` is a part of its own), with their encoded sizes.
fn split_to_entry_bounds(writes: Vec<Write>) -> Vec<(Vec<Write>, usize)> {
    let mut parts: Vec<(Vec<Write>, usize)> = Vec::new();
    for write in writes {
        let size = crate::replication::encoding::encoded_size(&write);
        match parts.last_mut() {
            Some((part, bytes))
                if part.len() < MAX_WRITES_PER_ENTRY && *bytes + size <= MAX_ENTRY_BYTES =>
            {
                part.push(write);
                *bytes += size;
            }
            _ => parts.push((vec![write], size)),
        }
    }
    parts
}

fn stopped() -> WriteError {
    RaftError::Fatal(openraft::error::Fatal::Stopped)
}

/// The proposing task: take the first waiting group, wait for room in flight, then add
/// every group already waiting that fits, and propose them as one entry.
async fn propose_groups(mut receiver: mpsc::Receiver<Group>, raft: Raft, clock: ClusterClock) {
    let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    let mut carried: Option<Group> = None;
    loop {
        let first = match carried.take() {
            Some(group) => group,
            None => match receiver.recv().await {
                Some(group) => group,
                None => return,
            },
        };
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut entry = PendingEntry::starting_with(first);
        while carried.is_none() {
            let Ok(next) = receiver.try_recv() else { break };
            carried = entry.add_if_it_fits(next);
        }
        clock.until_known_if_leading(&raft).await;
        let at_ms = clock.stamp();
        tokio::spawn(commit(raft.clone(), at_ms, entry.groups, permit));
    }
}

/// The groups of the entry being gathered, with their totals against the bounds.
struct PendingEntry {
    groups: Vec<Group>,
    writes: usize,
    encoded_bytes: usize,
}

impl PendingEntry {
    /// The first group always goes, however large.
    fn starting_with(first: Group) -> PendingEntry {
        PendingEntry {
            writes: first.writes.len(),
            encoded_bytes: first.encoded_bytes,
            groups: vec![first],
        }
    }

    /// Add `next` unless it would break a bound; then it is handed back.
    fn add_if_it_fits(&mut self, next: Group) -> Option<Group> {
        let writes = self.writes + next.writes.len();
        let encoded_bytes = self.encoded_bytes + next.encoded_bytes;
        if writes > MAX_WRITES_PER_ENTRY || encoded_bytes > MAX_ENTRY_BYTES {
            return Some(next);
        }
        self.writes = writes;
        self.encoded_bytes = encoded_bytes;
        self.groups.push(next);
        None
    }
}

/// Propose one entry of `groups` and hand each group its outcomes.
async fn commit(raft: Raft, at_ms: u64, groups: Vec<Group>, permit: OwnedSemaphorePermit) {
    let mut replies = Vec::with_capacity(groups.len());
    let mut writes = Vec::new();
    for group in groups {
        replies.push((group.writes.len(), group.reply));
        writes.extend(group.writes);
    }
    let write_count = writes.len();
    let result = raft.client_write(Proposal { at_ms, writes }).await;
    drop(permit);
    match result {
        Ok(response) => {
            let outcomes: Vec<ApplyOutcome> = response.data.into_outcomes().collect();
            assert_eq!(
                outcomes.len(),
                write_count,
                "the state machine answers every write of an entry"
            );
            let mut outcomes = outcomes.into_iter();
            for (count, reply) in replies {
                // A caller that gave up is not an error.
                let _ = reply.send(Ok(outcomes.by_ref().take(count).collect()));
            }
        }
        Err(error) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{Command, Principal};

    fn write_of(bytes: usize) -> Write {
        Write {
            principal: Principal::PlatformAdmin,
            credential: None,
            command: Command::TokenCreate {
                name: "t".repeat(bytes),
                hash: String::new(),
                scope: corral_model::TokenScope::PlatformAdmin,
                ttl_ms: None,
            },
            request_id: None,
        }
    }

    #[test]
    fn writes_are_cut_into_parts_within_the_entry_bounds_in_order() {
        let many: Vec<Write> = (0..MAX_WRITES_PER_ENTRY * 2 + 1)
            .map(|_| write_of(1))
            .collect();
        let parts = split_to_entry_bounds(many.clone());
        let counts: Vec<usize> = parts.iter().map(|(part, _)| part.len()).collect();
        assert_eq!(counts, [MAX_WRITES_PER_ENTRY, MAX_WRITES_PER_ENTRY, 1]);
        let rejoined: Vec<Write> = parts.into_iter().flat_map(|(part, _)| part).collect();
        assert_eq!(rejoined, many);

        let large = MAX_ENTRY_BYTES / 2;
        let parts = split_to_entry_bounds(vec![write_of(large), write_of(large), write_of(1)]);
        assert_eq!(parts.len(), 2, "two halves and a bit do not fit one entry");
        for (part, bytes) in &parts {
            assert!(*bytes <= MAX_ENTRY_BYTES || part.len() == 1);
            let total: usize = part
                .iter()
                .map(crate::replication::encoding::encoded_size)
                .sum();
            assert_eq!(*bytes, total);
        }

        let oversized = split_to_entry_bounds(vec![write_of(MAX_ENTRY_BYTES + 1), write_of(1)]);
        assert_eq!(oversized.len(), 2, "an oversized write goes alone");
        assert!(split_to_entry_bounds(Vec::new()).is_empty());
    }
}
