//! Keeping an AppendEntries within one peer message. openraft batches up to
//! `max_payload_entries` log entries into one request without looking at their size,
//! and with group commit one entry can hold hundreds of writes; a follower catching up
//! under load could be sent more than a peer accepts (`encoding::MAX_PEER_MESSAGE_BYTES`),
//! and the same oversized request would be retried forever. Instead the request is cut
//! to its longest leading half-by-half prefix that fits, sent, and a success reported as
//! `PartialSuccess` up to its last entry, so openraft sends the rest next.

use corral_store::{LogId, TypeConfig};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};

/// Encoded bytes one AppendEntries may take: the peer's limit, less room for the
/// protobuf and gRPC framing around it.
pub(crate) const APPEND_BUDGET_BYTES: usize =
    crate::replication::encoding::MAX_PEER_MESSAGE_BYTES - (64 << 10);

/// The encoding of `request`, cut to a prefix of its entries if the whole does not fit
/// in `budget_bytes`; with the last entry sent when it was cut. `None` when even a
/// single entry does not fit (that entry cannot be replicated; openraft will retry and
/// the operator sees the error).
pub(crate) fn encode_within(
    mut request: AppendEntriesRequest<TypeConfig>,
    budget_bytes: usize,
) -> Option<(Vec<u8>, Option<LogId>)> {
    let mut cut_at: Option<LogId> = None;
    loop {
        if let Some(bytes) = crate::replication::encoding::encode_bounded(&request, budget_bytes) {
            return Some((bytes, cut_at));
        }
        if request.entries.len() <= 1 {
            return None;
        }
        let keep = request.entries.len() / 2;
        request.entries.truncate(keep);
        let last = request.entries.last().map(|entry| entry.log_id);
        // The follower may commit only what it has; never tell it more than was sent.
        request.leader_commit = request.leader_commit.min(last);
        cut_at = last;
    }
}

/// What to report to openraft for the answer to a request that was cut at `cut_at`.
pub(crate) fn answer_for_cut(
    response: AppendEntriesResponse<TypeConfig>,
    cut_at: Option<LogId>,
) -> AppendEntriesResponse<TypeConfig> {
    match (response, cut_at) {
        (AppendEntriesResponse::Success, Some(last)) => {
            AppendEntriesResponse::PartialSuccess(Some(last))
        }
        (response, _) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{Command, Principal};
    use corral_store::{LogEntry, Proposal};
    use openraft::entry::RaftEntry;

    fn log_id(index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(1, 1, index)
    }

    /// An entry of about `bytes` bytes.
    fn entry(index: u64, bytes: usize) -> LogEntry {
        let proposal = Proposal::single(
            0,
            Principal::PlatformAdmin,
            Command::TokenRevoke {
                name: "x".repeat(bytes),
            },
            None,
        );
        LogEntry::new_normal(log_id(index), proposal)
    }

    fn request(entries: Vec<LogEntry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: corral_store::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: Some(log_id(8)),
            entries,
        }
    }

    #[test]
    fn a_request_that_fits_is_sent_whole() {
        let whole = request((1..=8).map(|index| entry(index, 100)).collect());
        let (bytes, cut_at) = encode_within(whole.clone(), 1 << 20).expect("fits");
        assert_eq!(cut_at, None);
        let decoded: AppendEntriesRequest<TypeConfig> =
            crate::replication::encoding::decode(&bytes).unwrap();
        assert_eq!(decoded.entries, whole.entries);
    }

    #[test]
    fn an_oversized_request_is_cut_to_a_prefix_and_reported_partial() {
        let whole = request((1..=8).map(|index| entry(index, 1_000)).collect());
        let (bytes, cut_at) = encode_within(whole, 3_500).expect("two entries fit");
        assert!(bytes.len() <= 3_500);
        let decoded: AppendEntriesRequest<TypeConfig> =
            crate::replication::encoding::decode(&bytes).unwrap();
        assert_eq!(decoded.entries.len(), 2);
        assert_eq!(cut_at, Some(log_id(2)));
        assert_eq!(
            decoded.leader_commit,
            Some(log_id(2)),
            "the commit index sent is not beyond what was sent"
        );
        assert_eq!(
            answer_for_cut(AppendEntriesResponse::Success, cut_at),
            AppendEntriesResponse::PartialSuccess(Some(log_id(2)))
        );
        assert_eq!(
            answer_for_cut(AppendEntriesResponse::Conflict, cut_at),
            AppendEntriesResponse::Conflict
        );
    }

    #[test]
    fn a_single_entry_over_the_budget_cannot_be_sent() {
        assert!(encode_within(request(vec![entry(1, 10_000)]), 1_000).is_none());
    }
}
