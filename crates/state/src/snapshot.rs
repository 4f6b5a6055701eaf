//! Snapshot format and digest. A snapshot is one format-version byte followed by the
//! bincode 2 encoding (serde, standard config) of the whole `State`. The digest is the
//! SHA-256 of the snapshot bytes, so equal digests mean byte-identical state.

use crate::state::State;
use sha2::{Digest, Sha256};
use std::fmt;

/// Bump when the encoding of `State` changes; decoding refuses other versions rather
/// than misreading them.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

/// Upper bound on what decoding may allocate, so a corrupt or hostile snapshot cannot
/// exhaust memory.
const MAX_SNAPSHOT_BYTES: usize = 8 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    Empty,
    UnknownVersion(u8),
    Corrupt(String),
    TrailingBytes(usize),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Empty => write!(formatter, "snapshot is empty"),
            SnapshotError::UnknownVersion(version) => {
                write!(
                    formatter,
                    "snapshot format version {version} is not {SNAPSHOT_FORMAT_VERSION}"
                )
            }
            SnapshotError::Corrupt(reason) => {
                write!(formatter, "snapshot does not decode: {reason}")
            }
            SnapshotError::TrailingBytes(count) => {
                write!(formatter, "snapshot has {count} bytes after the state")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>()
}

impl State {
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_FORMAT_VERSION];
        // Encoding plain data structures into a Vec cannot fail.
        let body = bincode::serde::encode_to_vec(self, config()).expect("state encodes");
        bytes.extend_from_slice(&body);
        bytes
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        let (version, body) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if *version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnknownVersion(*version));
        }
        let (state, used): (State, usize) = bincode::serde::decode_from_slice(body, config())
            .map_err(|error| SnapshotError::Corrupt(error.to_string()))?;
        if used != body.len() {
            return Err(SnapshotError::TrailingBytes(body.len() - used));
        }
        Ok(state)
    }

    /// SHA-256 of the snapshot bytes.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encode_snapshot()).into()
    }

    /// Digest of everything but the applied index: equal before and after a rejected
    /// command, which changes nothing else.
    pub fn content_digest(&self) -> [u8; 32] {
        let mut copy = self.clone();
        copy.applied_index = 0;
        copy.digest()
    }

    pub fn digest_hex(&self) -> String {
        self.digest()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}
