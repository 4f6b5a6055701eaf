//! Request ids: the client's name for one logical write, the same on every retry, so
//! the state machine answers a retry with the first outcome instead of applying it
//! again (`corral_state::requests`). A client sends it as `x-corral-request-id`; a call
//! that carries several writes (`SubmitJobs`) derives one id per write from it.

use crate::replication::proposer::Proposer;
use corral_state::RequestId;
use corral_wire::headers::REQUEST_ID_HEADER;
use sha2::{Digest, Sha256};
use tonic::Status;

/// Separates derived slot ids from any other hash of a request id.
const SLOT_CONTEXT: &[u8] = b"corral request slot v1\0";

/// The client's request id (1 to 32 hex digits), if it sent one.
pub(crate) fn supplied_request_id(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<RequestId>, Status> {
    let Some(value) = metadata.get(REQUEST_ID_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.len() <= 32)
        .and_then(|text| u128::from_str_radix(text, 16).ok())
        .map(|id| Some(RequestId(id)))
        .ok_or_else(|| {
            Status::invalid_argument(format!("{REQUEST_ID_HEADER} must be 1 to 32 hex digits"))
        })
}

/// The client's request id, or a fresh one when it sent none.
pub(crate) fn client_request_id(
    metadata: &tonic::metadata::MetadataMap,
    proposer: &Proposer,
) -> Result<RequestId, Status> {
    Ok(supplied_request_id(metadata)?.unwrap_or_else(|| proposer.fresh_request_id()))
}

/// One id per write of a call carrying `count` writes: derived from the client's id
/// and the write's position, so a retried call proposes the same writes under the same
/// ids (and gets the first outcomes); fresh ones when the client sent no id.
pub(crate) fn slot_request_ids(
    metadata: &tonic::metadata::MetadataMap,
    count: usize,
    proposer: &Proposer,
) -> Result<Vec<RequestId>, Status> {
    let supplied = supplied_request_id(metadata)?;
    Ok((0..count)
        .map(|slot| match supplied {
            Some(call) => slot_request_id(call, slot),
            None => proposer.fresh_request_id(),
        })
        .collect())
}

/// The id of write `slot` of the call named `call`: the first 128 bits of
/// SHA-256(context, call, slot). Distinct slots (and calls) get distinct ids but for a
/// hash collision.
pub(crate) fn slot_request_id(call: RequestId, slot: usize) -> RequestId {
    let mut hasher = Sha256::new();
    hasher.update(SLOT_CONTEXT);
    hasher.update(call.0.to_le_bytes());
    hasher.update((slot as u64).to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    RequestId(u128::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_are_stable_and_distinct() {
        let call = RequestId(0x70ce);
        assert_eq!(slot_request_id(call, 3), slot_request_id(call, 3));
        assert_ne!(slot_request_id(call, 3), slot_request_id(call, 4));
        assert_ne!(
            slot_request_id(call, 0),
            slot_request_id(RequestId(0x70cf), 0)
        );
        assert_ne!(
            slot_request_id(call, 0),
            call,
            "a slot id is not the call's id"
        );
    }

    #[test]
    fn a_malformed_request_id_is_refused() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(REQUEST_ID_HEADER, "not-hex".parse().unwrap());
        let status = supplied_request_id(&metadata).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        metadata.insert(
            REQUEST_ID_HEADER,
            "0123456789abcdef0123456789abcdef0".parse().unwrap(),
        );
        assert!(supplied_request_id(&metadata).is_err(), "33 digits");
        metadata.insert(REQUEST_ID_HEADER, "ff".parse().unwrap());
        assert_eq!(
            supplied_request_id(&metadata).unwrap(),
            Some(RequestId(255))
        );
        assert_eq!(
            supplied_request_id(&tonic::metadata::MetadataMap::new()).unwrap(),
            None
        );
    }
}
