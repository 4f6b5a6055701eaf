//! Snapshot format and digest. A snapshot is one format-version byte followed by the
//! bincode 2 encoding (serde, standard config, size-limited decode) of the whole `State`.
//! The digest is the SHA-256 of the snapshot bytes, hashed while they are encoded (a
//! large state's bytes are never held for it), so equal digests mean byte-identical
//! state.

use crate::state::State;
use sha2::{Digest, Sha256};
use std::fmt;

/// Bump when the encoding of `State` changes; decoding refuses other versions rather
/// than misreading them.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 8;

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
                    "snapshot format version {version} is not {SNAPSHOT_FORMAT_VERSION} (written by another corral version)"
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

pub(crate) fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>()
}

/// Collects bincode's many small writes (a byte, a varint, a short string per call) in a
/// fixed buffer and hands them on to `sink` in large blocks. Small writes are copied
/// inline: through `Vec::extend_from_slice` or `Sha256::update` each such call cost a
/// `memcpy` call and most of the encoding time.
struct BlockWriter<Sink: FnMut(&[u8])> {
    buffer: Box<[u8; BLOCK_BYTES]>,
    length: usize,
    sink: Sink,
}

const BLOCK_BYTES: usize = 1 << 16;

impl<Sink: FnMut(&[u8])> BlockWriter<Sink> {
    fn new(sink: Sink) -> BlockWriter<Sink> {
        BlockWriter {
            buffer: Box::new([0; BLOCK_BYTES]),
            length: 0,
            sink,
        }
    }

    fn flush(&mut self) {
        (self.sink)(&self.buffer[..self.length]);
        self.length = 0;
    }

    /// Hands on what is still buffered.
    fn finish(mut self) {
        self.flush();
    }

    #[cold]
    fn write_large(&mut self, bytes: &[u8]) {
        self.flush();
        if bytes.len() >= BLOCK_BYTES {
            (self.sink)(bytes);
        } else {
            self.buffer[..bytes.len()].copy_from_slice(bytes);
            self.length = bytes.len();
        }
    }
}

impl<Sink: FnMut(&[u8])> bincode::enc::write::Writer for BlockWriter<Sink> {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        let start = self.length;
        let end = start + bytes.len();
        if end > BLOCK_BYTES {
            self.write_large(bytes);
            return Ok(());
        }
        let target = &mut self.buffer[start..end];
        // Fixed-size copies compile to plain moves.
        match bytes.len() {
            1 => target[0] = bytes[0],
            2 => target.copy_from_slice(&bytes[..2]),
            4 => target.copy_from_slice(&bytes[..4]),
            8 => target.copy_from_slice(&bytes[..8]),
            _ => target.copy_from_slice(bytes),
        }
        self.length = end;
        Ok(())
    }
}

impl State {
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_FORMAT_VERSION];
        let mut writer = BlockWriter::new(|block: &[u8]| bytes.extend_from_slice(block));
        // Encoding plain data structures cannot fail.
        bincode::serde::encode_into_writer(self, &mut writer, config()).expect("state encodes");
        writer.finish();
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

    /// SHA-256 of the snapshot bytes (`encode_snapshot`), computed without holding them.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update([SNAPSHOT_FORMAT_VERSION]);
        let mut writer = BlockWriter::new(|block: &[u8]| hasher.update(block));
        bincode::serde::encode_into_writer(self, &mut writer, config()).expect("state encodes");
        writer.finish();
        hasher.finalize().into()
    }

    /// Digest of everything but the applied index and the audit trail: equal before and
    /// after a rejected command, which changes nothing else (its refusal is audited).
    pub fn content_digest(&self) -> [u8; 32] {
        let mut copy = self.clone();
        copy.applied_index = 0;
        copy.audit = Default::default();
        copy.digest()
    }

    /// Digest of the objects alone: the state without its applied index, the
    /// remembered request outcomes and the audit trail, which a refused write does
    /// change (it takes a log index, its refusal is remembered for the client's retries
    /// and audited).
    pub fn objects_digest(&self) -> [u8; 32] {
        let mut copy = self.clone();
        copy.applied_index = 0;
        copy.audit = Default::default();
        copy.requests = Default::default();
        copy.digest()
    }

    /// Digest of the state with every log index in it zeroed: the applied index, the
    /// events', the placements' and the remembered requests'. Equal for two states that
    /// applied the same writes grouped into log entries differently (`apply_batch`).
    pub fn index_free_digest(&self) -> [u8; 32] {
        let mut copy = self.clone();
        copy.applied_index = 0;
        for event in copy.events.iter_mut() {
            event.index = 0;
        }
        for job in copy.jobs.values_mut() {
            for replica in job.replicas.iter_mut() {
                replica.placed_at_index = 0;
            }
        }
        for record in copy.requests.records_mut() {
            record.index = 0;
        }
        for record in copy.audit.records.iter_mut() {
            record.index = 0;
        }
        copy.digest()
    }

    /// SHA-256 of what the latest entry did: the applied index, the entry's time, the id
    /// counters, the count of active jobs, and the events and audit records under that
    /// index. Much
    /// cheaper than `digest` (it does not encode the whole state), so a checker can compare
    /// replicas after every entry and take the full digest only now and then. Equal full
    /// states give equal entry digests; the converse does not hold.
    pub fn entry_digest(&self) -> [u8; 32] {
        let entry_events: Vec<&corral_model::EventRecord> = self
            .events
            .iter()
            .rev()
            .take_while(|record| record.index == self.applied_index)
            .collect();
        let entry_audit: Vec<&corral_model::AuditRecord> = self
            .audit
            .records
            .iter()
            .rev()
            .take_while(|record| record.index == self.applied_index)
            .collect();
        let summary = (
            self.applied_index,
            self.now_ms,
            &self.counters,
            self.active_jobs as u64,
            entry_events,
            (self.audit.next_sequence, entry_audit),
        );
        // Small: encoded in one piece rather than through the 64 KiB block writer.
        let bytes = bincode::serde::encode_to_vec(summary, config()).expect("summary encodes");
        Sha256::digest(&bytes).into()
    }

    pub fn digest_hex(&self) -> String {
        self.digest()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}
