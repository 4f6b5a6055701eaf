//! Encoding of openraft messages and proposals inside protobuf `bytes` fields: bincode 2
//! (serde, standard config) with a size limit, so a hostile peer cannot make a replica
//! allocate without bound.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

/// Largest message a replica accepts from a peer (an append batch or a snapshot chunk).
pub(crate) const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PEER_MESSAGE_BYTES>()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|error| Status::internal(format!("encode: {error}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|error| Status::invalid_argument(format!("undecodable peer message: {error}")))?;
    if used != bytes.len() {
        return Err(Status::invalid_argument("peer message has trailing bytes"));
    }
    Ok(value)
}

/// `value` encoded, or `None` once the encoding passes `budget_bytes` (it stops there:
/// an oversized value is never built in full).
pub(crate) fn encode_bounded<T: Serialize>(value: &T, budget_bytes: usize) -> Option<Vec<u8>> {
    let mut writer = BoundedWriter {
        bytes: Vec::new(),
        budget_bytes,
    };
    bincode::serde::encode_into_writer(value, &mut writer, bincode::config::standard())
        .ok()
        .map(|()| writer.bytes)
}

/// How many bytes `value` encodes to, without building the encoding (0 for a value
/// that does not encode; encoding it for real then fails with a clear error).
pub(crate) fn encoded_size<T: Serialize>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard()) {
        Ok(()) => size.bytes_written,
        Err(_) => 0,
    }
}

struct BoundedWriter {
    bytes: Vec<u8>,
    budget_bytes: usize,
}

impl bincode::enc::write::Writer for BoundedWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        if self.bytes.len() + bytes.len() > self.budget_bytes {
            return Err(bincode::error::EncodeError::Other("over the byte budget"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
}
