//! Where the current snapshot lives, and how it survives a restart.
//!
//! The state machine itself is in memory; a restart rebuilds it from the newest
//! snapshot plus the committed log tail, and the log is purged behind snapshots, so a
//! snapshot must be durable before openraft may purge. The sled and redb engines keep
//! each snapshot in `<data_dir>/snapshots/snapshot-<index>.bin`, written to a temporary
//! file, fsynced, renamed into place, and the directory fsynced; older files are then
//! deleted. A file is
//!
//! ```text
//! magic "CRLSNAP\0" | file format version u8 | header length u32 LE | header
//! | body length u64 LE | body | CRC-32 u32 LE of everything before it
//! ```
//!
//! where the header is the `codec` record of the `SnapshotMeta` and the body is the
//! `State::encode_snapshot` bytes. Opening loads the newest file that checks out and
//! skips (with a warning) one that does not. The memory engine keeps the snapshot in a
//! slot that outlives the state machine (`MemoryDisk`), so a simulated restart finds it.

use crate::codec::{decode, encode, invalid_data};
use crate::log_memory::DiskFaults;
use crate::snapshot_bytes::SnapshotBytes;
use crate::types::{LogId, SnapshotData, SnapshotMeta};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const MAGIC: [u8; 8] = *b"CRLSNAP\0";
/// Bump when the file layout (not the state encoding, which has its own version)
/// changes.
const SNAPSHOT_FILE_FORMAT_VERSION: u8 = 1;
const MAX_HEADER_BYTES: u32 = 16 << 20;
/// The state's own decoding limit; a larger body cannot be a snapshot this code wrote.
const MAX_BODY_BYTES: u64 = 8 << 30;
const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";
const TEMPORARY_SUFFIX: &str = ".tmp";
/// Bytes before the header: magic, version, header length.
const PREFIX_BYTES: usize = MAGIC.len() + 1 + 4;
const CHECKSUM_BYTES: usize = 4;

/// A snapshot held in memory: its meta and the encoded state.
#[derive(Clone, Debug)]
pub(crate) struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: SnapshotData,
}

/// The in-memory "disk" slot of the memory engine, on a disk whose faults `faults`
/// switches: while it is full, or when its next fsync fails, a snapshot is not stored
/// (the slot keeps the one before, as a failed write of a temporary file never renamed
/// into place does on a real disk).
#[derive(Clone, Debug, Default)]
pub(crate) struct MemorySnapshotSlot {
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    faults: DiskFaults,
}

impl MemorySnapshotSlot {
    pub fn with_faults(faults: DiskFaults) -> MemorySnapshotSlot {
        MemorySnapshotSlot {
            snapshot: Arc::default(),
            faults,
        }
    }
}

/// The current snapshot and where it is persisted.
pub(crate) struct SnapshotStore {
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// `None` for the memory engine.
    directory: Option<PathBuf>,
    /// The memory engine's fault switch (`None` for the disk engines).
    memory_faults: Option<DiskFaults>,
    /// Serializes persisting (held on a blocking thread while a file is written), so a
    /// slow older snapshot can never replace a newer one.
    persisting: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| io::Error::other("snapshot store: a writer panicked while holding the lock"))
}

fn is_newer(candidate: Option<&LogId>, than: Option<&LogId>) -> bool {
    candidate > than
}

impl SnapshotStore {
    /// The memory engine's store over `slot`.
    pub fn memory(slot: MemorySnapshotSlot) -> SnapshotStore {
        SnapshotStore {
            current: slot.snapshot,
            directory: None,
            memory_faults: Some(slot.faults),
            persisting: Mutex::new(()),
        }
    }

    /// Open the snapshot directory (creating it), remove leftover temporary files, and
    /// load the newest snapshot for which `accept` succeeds. `accept` sees the snapshot
    /// after its file checked out (it decodes the state); its result comes back with it.
    pub fn open_directory<T>(
        directory: &Path,
        mut accept: impl FnMut(&StoredSnapshot) -> io::Result<T>,
    ) -> io::Result<(SnapshotStore, Option<T>)> {
        crate::private_files::create_private_dir(directory)?;
        // The directory's own entry must be durable before files in it can be.
        if let Some(parent) = directory
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            File::open(parent)?.sync_all()?;
        }
        let mut files = Vec::new();
        for item in fs::read_dir(directory)? {
            let item = item?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TEMPORARY_SUFFIX) {
                // A write that a crash interrupted before its rename.
                fs::remove_file(item.path())?;
                continue;
            }
            if let Some(index) = index_of_file_name(name) {
                files.push((index, item.path()));
            }
        }
        files.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
        let mut loaded = None;
        for (index, path) in files {
            let checked = read_file(&path).and_then(|snapshot| {
                let found = snapshot.meta.last_log_id.map(|log_id| log_id.index);
                if found != Some(index) {
                    return Err(invalid_data(format!(
                        "snapshot file {} holds the snapshot of index {found:?}",
                        path.display()
                    )));
                }
                let accepted = accept(&snapshot)?;
                Ok((snapshot, accepted))
            });
            match checked {
                Ok(found) => {
                    loaded = Some(found);
                    break;
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping a snapshot that does not load");
                }
            }
        }
        let (current, accepted) = match loaded {
            Some((snapshot, accepted)) => (Some(snapshot), Some(accepted)),
            None => (None, None),
        };
        let store = SnapshotStore {
            current: Arc::new(Mutex::new(current)),
            directory: Some(directory.to_path_buf()),
            memory_faults: None,
            persisting: Mutex::new(()),
        };
        Ok((store, accepted))
    }

    /// Whether persisting does disk IO (and so belongs on a blocking thread).
    pub fn is_on_disk(&self) -> bool {
        self.directory.is_some()
    }

    pub fn current(&self) -> io::Result<Option<StoredSnapshot>> {
        Ok(lock(&self.current)?.clone())
    }

    /// Make `snapshot` durable and current, unless the current one is at least as new
    /// (then this returns `false` and changes nothing). Blocking: disk IO and fsync.
    pub fn persist(&self, snapshot: &StoredSnapshot) -> io::Result<bool> {
        let _persisting = lock(&self.persisting)?;
        let current_log_id = lock(&self.current)?
            .as_ref()
            .and_then(|current| current.meta.last_log_id);
        if !is_newer(snapshot.meta.last_log_id.as_ref(), current_log_id.as_ref()) {
            return Ok(false);
        }
        if let Some(faults) = &self.memory_faults {
            faults.check_space("a snapshot")?;
            faults.sync("a snapshot")?;
        }
        if let (Some(directory), Some(last_log_id)) = (&self.directory, snapshot.meta.last_log_id) {
            write_file(directory, last_log_id.index, snapshot)?;
            *lock(&self.current)? = Some(snapshot.clone());
            remove_older_files(directory, last_log_id.index)?;
        } else {
            // The memory engine, or a snapshot of nothing applied (there is nothing to
            // recover from it, so it needs no file).
            *lock(&self.current)? = Some(snapshot.clone());
        }
        Ok(true)
    }
}

fn file_name(index: u64) -> String {
    // Zero-padded so a directory listing sorts by index.
    format!("{FILE_PREFIX}{index:020}{FILE_SUFFIX}")
}

fn index_of_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn write_file(directory: &Path, index: u64, snapshot: &StoredSnapshot) -> io::Result<()> {
    let header = encode(&snapshot.meta, "snapshot meta")?;
    let header_length = u32::try_from(header.len())
        .ok()
        .filter(|length| *length <= MAX_HEADER_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "snapshot meta is too large"))?;
    let body_length = snapshot.data.len() as u64;
    if body_length > MAX_BODY_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("snapshot of {body_length} bytes exceeds {MAX_BODY_BYTES}"),
        ));
    }
    let mut prefix = Vec::with_capacity(PREFIX_BYTES + header.len() + 8);
    prefix.extend_from_slice(&MAGIC);
    prefix.push(SNAPSHOT_FILE_FORMAT_VERSION);
    prefix.extend_from_slice(&header_length.to_le_bytes());
    prefix.extend_from_slice(&header);
    prefix.extend_from_slice(&body_length.to_le_bytes());
    let mut checksum = crc32fast::Hasher::new();
    checksum.update(&prefix);
    checksum.update(&snapshot.data);

    let final_path = directory.join(file_name(index));
    let temporary_path = directory.join(format!("{}{TEMPORARY_SUFFIX}", file_name(index)));
    {
        let mut file = crate::private_files::create_private_file(&temporary_path)?;
        file.write_all(&prefix)?;
        file.write_all(&snapshot.data)?;
        file.write_all(&checksum.finalize().to_le_bytes())?;
        // The bytes must be on disk before the rename makes them the snapshot.
        file.sync_all()?;
    }
    fs::rename(&temporary_path, &final_path)?;
    // And the rename must be on disk before older snapshots (and logs) go.
    File::open(directory)?.sync_all()?;
    Ok(())
}

fn remove_older_files(directory: &Path, index: u64) -> io::Result<()> {
    for item in fs::read_dir(directory)? {
        let item = item?;
        let name = item.file_name();
        let Some(older) = name.to_str().and_then(index_of_file_name) else {
            continue;
        };
        if older < index {
            fs::remove_file(item.path())?;
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> io::Result<StoredSnapshot> {
    let started = std::time::Instant::now();
    let (meta, body) = read_parts(path)
        .map_err(|error| invalid_data(format!("snapshot file {}: {error}", path.display())))?;
    tracing::info!(
        path = %path.display(),
        bytes = body.len(),
        read_ms = started.elapsed().as_millis() as u64,
        "snapshot file read and checked"
    );
    Ok(StoredSnapshot {
        meta,
        data: Arc::new(body),
    })
}

/// Read a snapshot file's framing, map its body (`SnapshotBytes`: no copy, and the page
/// cache holds it), and check the checksum over all of it.
fn read_parts(path: &Path) -> io::Result<(SnapshotMeta, SnapshotBytes)> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    let largest = (PREFIX_BYTES as u64)
        + u64::from(MAX_HEADER_BYTES)
        + 8
        + MAX_BODY_BYTES
        + CHECKSUM_BYTES as u64;
    if length > largest {
        return Err(invalid_data(format!(
            "{length} bytes is more than any snapshot"
        )));
    }
    if length < (PREFIX_BYTES + 8 + CHECKSUM_BYTES) as u64 {
        return Err(invalid_data(format!("{length} bytes is too short")));
    }
    let mut prefix = [0u8; PREFIX_BYTES];
    file.read_exact(&mut prefix)?;
    if prefix[..MAGIC.len()] != MAGIC {
        return Err(invalid_data("not a corral snapshot (bad magic)"));
    }
    let version = prefix[MAGIC.len()];
    if version != SNAPSHOT_FILE_FORMAT_VERSION {
        return Err(invalid_data(format!(
            "snapshot file format version {version} is not {SNAPSHOT_FILE_FORMAT_VERSION}"
        )));
    }
    let header_length = u32::from_le_bytes(
        prefix[MAGIC.len() + 1..PREFIX_BYTES]
            .try_into()
            .expect("4 bytes"),
    );
    if header_length > MAX_HEADER_BYTES {
        return Err(invalid_data(format!(
            "header length {header_length} is too large"
        )));
    }
    // Everything but the body: prefix, header, body length, checksum.
    let framing = (PREFIX_BYTES + 8 + CHECKSUM_BYTES) as u64 + u64::from(header_length);
    if framing > length {
        return Err(invalid_data("header runs past the end of the file"));
    }
    let mut header = vec![0u8; header_length as usize];
    file.read_exact(&mut header)?;
    let mut body_length_bytes = [0u8; 8];
    file.read_exact(&mut body_length_bytes)?;
    let body_length = u64::from_le_bytes(body_length_bytes);
    if body_length != length - framing {
        return Err(invalid_data(format!(
            "body length {body_length} does not match the {} bytes present",
            length - framing
        )));
    }
    let body_start = framing as usize - CHECKSUM_BYTES;
    let body = SnapshotBytes::of_file(
        &file,
        length as usize,
        body_start..body_start + body_length as usize,
    )?;
    let mut checksum_bytes = [0u8; CHECKSUM_BYTES];
    file.seek(SeekFrom::Start(length - CHECKSUM_BYTES as u64))?;
    file.read_exact(&mut checksum_bytes)?;
    let mut checksum = crc32fast::Hasher::new();
    checksum.update(&prefix);
    checksum.update(&header);
    checksum.update(&body_length_bytes);
    checksum.update(&body[..]);
    if checksum.finalize() != u32::from_le_bytes(checksum_bytes) {
        return Err(invalid_data("checksum mismatch (torn or corrupted file)"));
    }
    let meta: SnapshotMeta = decode(&header, "snapshot meta")?;
    Ok((meta, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(index_of_file_name(&file_name(0)), Some(0));
        assert_eq!(index_of_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(index_of_file_name("snapshot-.bin"), None);
        assert_eq!(index_of_file_name("snapshot-12x.bin"), None);
        assert_eq!(index_of_file_name("snapshot-12.bin.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }
}
