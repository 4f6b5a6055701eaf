//! Encoding of what the log stores keep on disk: log entries, the vote, the committed
//! and purged log ids, and snapshot headers. Every record is one format-version byte
//! followed by the bincode 2 encoding (serde, standard config) of the value, so the
//! format can move later; a record of another version, a record that does not decode
//! and a record with trailing bytes are all refused as `InvalidData`, never a panic.
//!
//! Log keys are the index in big-endian bytes, so byte order is index order.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;

/// Bump when the encoding of any stored record changes. 2: a log entry's payload is a
/// group of writes (`Proposal { at_ms, writes }`), not one command.
pub(crate) const RECORD_FORMAT_VERSION: u8 = 2;

/// Upper bound on one record, so a corrupt length cannot make decoding allocate without
/// limit. The largest legitimate record is a log entry holding a scheduler plan of
/// `MAX_PLACEMENTS_PER_PLAN` placements, a few MiB.
pub(crate) const MAX_RECORD_BYTES: usize = 256 << 20;

/// Bytes of one log key.
pub(crate) const LOG_KEY_BYTES: usize = 8;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// An `InvalidData` error: what the disk holds is not what this code wrote.
pub(crate) fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

pub(crate) fn encode<T: Serialize>(value: &T, what: &str) -> io::Result<Vec<u8>> {
    let mut bytes = vec![RECORD_FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut bytes, config()).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} does not encode: {error}"),
        )
    })?;
    assert!(
        bytes.len() <= MAX_RECORD_BYTES + 1,
        "{what} exceeds the record bound"
    );
    Ok(bytes)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
    let Some((version, body)) = bytes.split_first() else {
        return Err(invalid_data(format!("{what}: the stored record is empty")));
    };
    if *version != RECORD_FORMAT_VERSION {
        return Err(invalid_data(format!(
            "{what}: stored record format version {version} is not {RECORD_FORMAT_VERSION}"
        )));
    }
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|error| invalid_data(format!("{what}: stored record does not decode: {error}")))?;
    if used != body.len() {
        return Err(invalid_data(format!(
            "{what}: stored record has {} bytes after the value",
            body.len() - used
        )));
    }
    Ok(value)
}

pub(crate) fn log_key(index: u64) -> [u8; LOG_KEY_BYTES] {
    index.to_be_bytes()
}

pub(crate) fn index_from_log_key(key: &[u8]) -> io::Result<u64> {
    let bytes: [u8; LOG_KEY_BYTES] = key.try_into().map_err(|_| {
        invalid_data(format!(
            "log key has {} bytes, not {LOG_KEY_BYTES}",
            key.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let bytes = encode(&(7u64, "seven".to_string()), "pair").unwrap();
        assert_eq!(bytes[0], RECORD_FORMAT_VERSION);
        let value: (u64, String) = decode(&bytes, "pair").unwrap();
        assert_eq!(value, (7, "seven".to_string()));

        let empty = decode::<u64>(&[], "pair").unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::InvalidData);

        let mut wrong_version = bytes.clone();
        wrong_version[0] = RECORD_FORMAT_VERSION + 1;
        let error = decode::<(u64, String)>(&wrong_version, "pair").unwrap_err();
        assert!(error.to_string().contains("format version"), "{error}");

        let mut trailing = bytes.clone();
        trailing.push(0);
        let error = decode::<(u64, String)>(&trailing, "pair").unwrap_err();
        assert!(error.to_string().contains("after the value"), "{error}");

        let truncated = &bytes[..bytes.len() - 2];
        let error = decode::<(u64, String)>(truncated, "pair").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn log_keys_sort_by_index() {
        assert!(log_key(255) < log_key(256));
        assert!(log_key(u64::MAX - 1) < log_key(u64::MAX));
        assert_eq!(index_from_log_key(&log_key(1234)).unwrap(), 1234);
        assert!(index_from_log_key(&[1, 2, 3]).is_err());
    }
}
