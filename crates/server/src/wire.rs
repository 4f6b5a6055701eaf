//! Encoding of openraft messages and proposals inside protobuf `bytes` fields: bincode 2
//! (serde, standard config) with a size limit, so a hostile peer cannot make a replica
//! allocate without bound.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

/// Largest message a replica accepts from a peer (an append batch or a snapshot chunk).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PEER_MESSAGE_BYTES>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|error| Status::internal(format!("encode: {error}")))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|error| Status::invalid_argument(format!("undecodable peer message: {error}")))?;
    if used != bytes.len() {
        return Err(Status::invalid_argument("peer message has trailing bytes"));
    }
    Ok(value)
}
