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
            let length = item.metadata()?.len();
            if synced.get(&name) != Some(&length) {
                File::open(item.path())?.sync_all()?;
                created |= !synced.contains_key(&name);
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
