//! What sled 0.34's `flush` leaves out, and the syncs that complete it.
//!
//! On Linux, sled's flush writes its log buffers with `pwrite` and then calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the written range, not
//! `fsync`: the pages reach the device, but the device's volatile write cache is not
//! flushed and file metadata (the log file grows as it is appended to) is not written;
//! only sled's background thread calls `fsync`, every `flush_every_ms` (500 ms). A
//! process crash loses nothing that was flushed, a power loss or kernel crash may.
//! sled also writes any log message over `segment_size / 4` (128 KiB: a large entry, or a
//! tree node holding several large entries) to its own file under `blobs/` with no sync
//! of the file or of the directory at all.
//!
//! Raft needs an acknowledged append or vote to survive power loss too (a lost vote
//! lets a replica vote twice in a term), so after sled's flush the store syncs, on a
//! blocking thread: every blob file it has not synced yet and the `blobs/` directory
//! (first, so no durable log record can point at a lost blob), then `fdatasync` of the
//! main `db` file. `fsync` acts on the file, not the descriptor, so a read-only handle
//! of our own covers sled's writes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled 0.34's names inside its directory.
const SLED_DATA_FILE: &str = "db";
const SLED_BLOB_DIRECTORY: &str = "blobs";
const SLED_CONFIG_FILE: &str = "conf";

pub(crate) struct SledSync {
    data_file: File,
    blob_directory: PathBuf,
    /// Blob files already synced, with the length they had: a flush syncs only new
    /// ones, and one caught while sled was still writing it is synced again once its
    /// length changes (sled never rewrites a blob). Bounded by the number of live blobs
    /// (names sled deleted are dropped).
    synced_blobs: Mutex<BTreeMap<OsString, u64>>,
}

impl SledSync {
    /// For the sled database in `directory`, which sled has opened (so its files exist).
    /// Makes the database's creation durable too: the directory entries and config.
    pub fn open(directory: &Path) -> io::Result<SledSync> {
        let data_file = File::open(directory.join(SLED_DATA_FILE))?;
        let config_path = directory.join(SLED_CONFIG_FILE);
        if config_path.exists() {
            File::open(config_path)?.sync_all()?;
        }
        data_file.sync_all()?;
        File::open(directory)?.sync_all()?;
        if let Some(parent) = directory
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            File::open(parent)?.sync_all()?;
        }
        Ok(SledSync {
            data_file,
            blob_directory: directory.join(SLED_BLOB_DIRECTORY),
            synced_blobs: Mutex::new(BTreeMap::new()),
        })
    }

    /// Complete a sled flush that has returned: blocking, run it off the runtime.
    pub fn sync_after_flush(&self) -> io::Result<()> {
        self.sync_new_blobs()?;
        self.data_file.sync_data()
    }

    fn sync_new_blobs(&self) -> io::Result<()> {
        let mut synced = self
            .synced_blobs
            .lock()
            .map_err(|_| io::Error::other("sled sync: a sync panicked while holding the lock"))?;
        let items = match fs::read_dir(&self.blob_directory) {
            Ok(items) => items,
            // sled creates it on open; gone means nothing to sync.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let mut present = BTreeMap::new();
        let mut created = false;
        for item in items {
            let item = item?;
            let name = item.file_name();
            // sled deletes a blob once no tree node points at it, concurrently with
            // this walk: one gone since it was listed needs no sync (the directory
            // sync below makes the removal durable).
            let length = match item.metadata() {
                Ok(metadata) => metadata.len(),
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if synced.get(&name) != Some(&length) {
                match File::open(item.path()).and_then(|file| file.sync_all()) {
                    Ok(()) => created |= !synced.contains_key(&name),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                }
            }
            present.insert(name, length);
        }
        let removed = synced.keys().any(|name| !present.contains_key(name));
        if created || removed {
            // New names (and removals) must be durable in the directory as well.
            File::open(&self.blob_directory)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// sled creates and deletes blob files while a sync walks the directory; a blob
    /// deleted between the listing and its sync is not an error (it was once: a batched
    /// log entry large enough for blobs failed appends under load with ENOENT).
    #[test]
    fn blobs_deleted_during_a_sync_are_not_an_error() {
        let directory = tempfile::tempdir().unwrap();
        let database = sled::Config::new()
            .path(directory.path())
            .open()
            .expect("sled opens");
        let sync = SledSync::open(directory.path()).expect("sync opens");
        let blobs = directory.path().join(SLED_BLOB_DIRECTORY);
        fs::create_dir_all(&blobs).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (stop, blobs) = (stop.clone(), blobs.clone());
            std::thread::spawn(move || {
                let mut number = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let path = blobs.join(number.to_string());
                    fs::write(&path, b"blob").unwrap();
                    fs::remove_file(&path).unwrap();
                    number += 1;
                }
            })
        };
        for _ in 0..2_000 {
            sync.sync_after_flush()
                .expect("a sync racing blob deletion succeeds");
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        drop(database);
    }
}
