//! The directories of one node and what the agent keeps in them.
//!
//! Layout of a node's work directory:
//! - `state/<job>-<rank>-<generation>.json`: the [`ReplicaRecord`] (shim pid and start
//!   time, start wall clock, devices), written atomically once the shim is spawned;
//! - `state/<job>-<rank>-<generation>.exit`: the exit code, written by the shim;
//! - `replicas/<job>-<rank>-<generation>/`: the agent's directory of the replica
//!   (mode 0711, the agent's), holding [`LOG_FILE_NAME`] (and its rotations, mode 0600,
//!   owned by the replica's user) and `work/`, the workload's working directory (mode
//!   0700, owned by the replica's user). The log sits outside the directory the
//!   workload may change, so the agent (root) never follows a link a tenant placed
//!   when it writes, rotates or serves the log;
//! - `trash/`: records and exit files of forgotten replicas, moved there by a rename on
//!   the node's loop and removed later by [`crate::janitor`] (a removal can take
//!   milliseconds, a rename does not);
//! - `drivers.json` and `upgrade.log`: see [`crate::upgrade`].
//!
//! The root and `replicas/` are 0711 (a replica's user passes through to its own work
//! directory but lists nothing); `state/`, `trash/` and the credential are the agent's
//! alone.

use crate::files::{read_small, replace_atomic};
use crate::reconcile::ReplicaKey;
use crate::replica::ReplicaRecord;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tracing::{debug, warn};

/// A replica's output, in its directory.
pub(crate) const LOG_FILE_NAME: &str = "output.log";
/// At most this many state records are read when a node starts.
pub(crate) const MAX_RECORDS_SCANNED: usize = 4096;
/// At most this many trash entries are removed by one [`NodeDirs::empty_trash`].
pub(crate) const MAX_TRASH_REMOVED: usize = 4096;

/// Makes the names of trashed files unique within this process (the process id makes
/// them unique across the agent's restarts).
static TRASHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The directories of one node.
#[derive(Clone, Debug)]
pub struct NodeDirs {
    root: PathBuf,
}

impl NodeDirs {
    pub(crate) fn new(root: impl Into<PathBuf>) -> NodeDirs {
        NodeDirs { root: root.into() }
    }

    /// Creates the node's directories with their modes (see the module's doc).
    pub(crate) fn create(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (dir, mode) in [
            (self.root.clone(), 0o711),
            (self.state_dir(), 0o700),
            (self.trash_dir(), 0o700),
            (self.replicas_dir(), 0o711),
        ] {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub(crate) fn replicas_dir(&self) -> PathBuf {
        self.root.join("replicas")
    }

    pub(crate) fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    pub(crate) fn record_path(&self, key: ReplicaKey) -> PathBuf {
        self.state_dir().join(format!("{}.json", file_stem(key)))
    }

    pub(crate) fn exit_path(&self, key: ReplicaKey) -> PathBuf {
        self.state_dir().join(format!("{}.exit", file_stem(key)))
    }

    pub(crate) fn replica_dir(&self, key: ReplicaKey) -> PathBuf {
        self.replicas_dir().join(file_stem(key))
    }

    /// The workload's working directory (and `HOME`).
    pub(crate) fn work_dir(&self, key: ReplicaKey) -> PathBuf {
        self.replica_dir(key).join("work")
    }

    pub(crate) fn log_path(&self, key: ReplicaKey) -> PathBuf {
        self.replica_dir(key).join(LOG_FILE_NAME)
    }

    /// Reads the replica records of the state directory (at most
    /// [`MAX_RECORDS_SCANNED`]); unreadable ones are removed with a warning.
    pub(crate) fn scan_records(&self) -> io::Result<Vec<ReplicaRecord>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.state_dir())?.take(MAX_RECORDS_SCANNED) {
            let path = entry?.path();
            if path.extension().and_then(|extension| extension.to_str()) != Some("json") {
                continue;
            }
            let record = read_small(&path).and_then(|bytes| {
                serde_json::from_slice::<ReplicaRecord>(&bytes)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
            });
            match record {
                Ok(record) if self.record_path(record.key()) == path => records.push(record),
                Ok(_) => {
                    warn!(
                        "{}: record does not match its name, removed",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
                Err(error) => {
                    warn!(
                        "{}: unreadable replica record, removed: {error}",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        records.sort_by_key(ReplicaRecord::key);
        Ok(records)
    }

    /// Writes (or replaces) a replica's record atomically (not durably: see
    /// `replace_atomic` for why a running process's record needs no fsync).
    pub fn write_record(&self, record: &ReplicaRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        replace_atomic(&self.record_path(record.key()), &bytes)
    }

    /// Removes the directories (logs, working files) of replicas not in `keep` and last
    /// modified before `modified_before`, beyond the `retained` most recently modified
    /// of those. Returns how many were removed. The time bound lets it run while the
    /// node starts replicas: a directory created after `keep` was taken is newer.
    pub(crate) fn prune_replica_dirs(
        &self,
        keep: &BTreeSet<ReplicaKey>,
        retained: usize,
        modified_before: SystemTime,
    ) -> usize {
        let Ok(entries) = std::fs::read_dir(self.replicas_dir()) else {
            return 0;
        };
        let mut finished: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .take(MAX_RECORDS_SCANNED)
            .filter_map(|entry| {
                let key = parse_file_stem(entry.file_name().to_str()?)?;
                if keep.contains(&key) {
                    return None;
                }
                let modified = entry.metadata().ok()?.modified().ok()?;
                (modified < modified_before).then(|| (modified, entry.path()))
            })
            .collect();
        if finished.len() <= retained {
            return 0;
        }
        finished.sort();
        let excess = finished.len() - retained;
        let mut removed = 0;
        for (_, path) in finished.into_iter().take(excess) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(error) => warn!("cannot remove {}: {error}", path.display()),
            }
        }
        removed
    }

    /// Moves a replica's record and exit file into the trash (its logs stay); true when
    /// something was moved, for [`NodeDirs::empty_trash`] to remove. A file that cannot
    /// be moved is removed at once.
    pub(crate) fn discard_record(&self, key: ReplicaKey) -> bool {
        let mut moved = false;
        for path in [self.record_path(key), self.exit_path(key)] {
            let Some(name) = path.file_name() else {
                continue;
            };
            let mut trashed_name = name.to_os_string();
            let unique = TRASHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            trashed_name.push(format!(".{}-{unique}", std::process::id()));
            match std::fs::rename(&path, self.trash_dir().join(trashed_name)) {
                Ok(()) => moved = true,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    debug!("cannot move {} to the trash: {error}", path.display());
                    if let Err(error) = std::fs::remove_file(&path) {
                        warn!("cannot remove {}: {error}", path.display());
                    }
                }
            }
        }
        moved
    }

    /// Removes what is in the trash, at most [`MAX_TRASH_REMOVED`] entries; returns how
    /// many were removed.
    pub(crate) fn empty_trash(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.trash_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten().take(MAX_TRASH_REMOVED) {
            let path = entry.path();
            let result = match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match result {
                Ok(()) => removed += 1,
                Err(error) => warn!("cannot remove {}: {error}", path.display()),
            }
        }
        removed
    }
}

pub(crate) fn file_stem(key: ReplicaKey) -> String {
    format!("{}-{}-{}", key.job, key.rank, key.generation)
}

/// Parses a replica directory or record name `<job>-<rank>-<generation>`.
pub(crate) fn parse_file_stem(stem: &str) -> Option<ReplicaKey> {
    let mut parts = stem.split('-');
    let key = ReplicaKey {
        job: parts.next()?.parse().ok()?,
        rank: parts.next()?.parse().ok()?,
        generation: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn file_stems_round_trip_and_reject_other_names() {
        let key = ReplicaKey {
            job: 12,
            rank: 3,
            generation: 7,
        };
        assert_eq!(parse_file_stem(&file_stem(key)), Some(key));
        assert_eq!(parse_file_stem("12-3"), None);
        assert_eq!(parse_file_stem("12-3-7-1"), None);
        assert_eq!(parse_file_stem("a-3-7"), None);
    }

    fn key(job: u64) -> ReplicaKey {
        ReplicaKey {
            job,
            rank: 0,
            generation: 1,
        }
    }

    #[test]
    fn discarded_records_wait_in_the_trash_until_it_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        for job in [1, 2] {
            std::fs::write(dirs.record_path(key(job)), "{}").unwrap();
            std::fs::write(dirs.exit_path(key(job)), "0\n").unwrap();
        }
        std::fs::create_dir(dirs.trash_dir().join("left-by-a-crash")).unwrap();
        assert!(dirs.discard_record(key(1)));
        assert!(!dirs.discard_record(key(3)), "nothing to move");
        assert!(!dirs.record_path(key(1)).exists() && !dirs.exit_path(key(1)).exists());
        assert!(dirs.record_path(key(2)).exists(), "others stay");
        // The same key again (started anew, forgotten again): its new files are moved
        // too, under other names.
        std::fs::write(dirs.record_path(key(1)), "{}").unwrap();
        assert!(dirs.discard_record(key(1)));
        assert_eq!(std::fs::read_dir(dirs.trash_dir()).unwrap().count(), 4);
        assert_eq!(dirs.empty_trash(), 4);
        assert_eq!(std::fs::read_dir(dirs.trash_dir()).unwrap().count(), 0);
        assert!(dirs.record_path(key(2)).exists());
    }

    #[test]
    fn pruning_keeps_listed_recent_and_too_new_directories() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        for job in 1..=5 {
            std::fs::create_dir(dirs.replica_dir(key(job))).unwrap();
            // Distinct modification times, job 1 the oldest.
            std::thread::sleep(Duration::from_millis(20));
        }
        let cutoff = SystemTime::now();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::create_dir(dirs.replica_dir(key(6))).unwrap();
        std::fs::create_dir(dirs.replicas_dir().join("not-a-replica")).unwrap();
        let keep: BTreeSet<ReplicaKey> = [key(1)].into();
        // Candidates: 2, 3, 4, 5 (1 is kept, 6 is newer than the cutoff); the newest
        // one of them is retained.
        assert_eq!(dirs.prune_replica_dirs(&keep, 1, cutoff), 3);
        let left: BTreeSet<String> = std::fs::read_dir(dirs.replicas_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["1-0-1", "5-0-1", "6-0-1", "not-a-replica"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn unreadable_records_are_removed_on_scan() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = NodeDirs::new(dir.path());
        dirs.create().unwrap();
        let record = ReplicaRecord {
            job: 1,
            rank: 0,
            generation: 1,
            shim_pid: 99,
            start_ticks: 5,
            started_at_ms: 10,
            device_indices: vec![2],
            terminate_reason: String::new(),
            cgroup: Default::default(),
            uid: None,
            master_port: None,
        };
        crate::files::write_atomic(
            &dirs.record_path(record.key()),
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let broken = dirs.state_dir().join("2-0-1.json");
        std::fs::write(&broken, "{").unwrap();
        assert_eq!(dirs.scan_records().unwrap(), vec![record]);
        assert!(!broken.exists());
    }
}
