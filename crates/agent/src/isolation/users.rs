//! A user per tenant: each tenant whose replicas run on this machine gets an
//! unprivileged uid (and the gid of the same number) from the configured range, the
//! lowest one free, recorded in `tenant-users.json` in the agent's work directory so
//! it stays the tenant's across agent restarts (a tenant's files left in work
//! directories must never become another tenant's). One table per machine, shared by
//! every node the process runs (`--simulate`), for the same reason.

use crate::files::{read_small, write_atomic};
use std::collections::BTreeMap;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;

/// The table's file name, in the agent's work directory.
const FILE_NAME: &str = "tenant-users.json";

/// The uid of each tenant seen on this machine.
#[derive(Debug)]
pub(crate) struct TenantUsers {
    path: PathBuf,
    range: RangeInclusive<u32>,
    uids: Mutex<BTreeMap<u64, u32>>,
}

impl TenantUsers {
    /// Loads the table kept in `work_dir` (none yet: empty). Entries outside `range`
    /// (the range was changed) are forgotten with a warning: their uids are no longer
    /// the agent's to give.
    pub(crate) fn load(work_dir: &Path, range: RangeInclusive<u32>) -> io::Result<TenantUsers> {
        let path = work_dir.join(FILE_NAME);
        let mut uids: BTreeMap<u64, u32> = match read_small(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {error}", path.display()),
                )
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => return Err(error),
        };
        uids.retain(|tenant, uid| {
            let kept = range.contains(uid);
            if !kept {
                warn!("tenant {tenant}'s uid {uid} is outside tenant_uid_range; forgotten");
            }
            kept
        });
        Ok(TenantUsers {
            path,
            range,
            uids: Mutex::new(uids),
        })
    }

    /// The uid of `tenant`, given now (and recorded durably before it is used) if the
    /// tenant has none. An error when the range is used up or the table cannot be
    /// written: the replica must not start under a uid that might not stay its own.
    pub(crate) fn uid_of(&self, tenant: u64) -> io::Result<u32> {
        let mut uids = self
            .uids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(uid) = uids.get(&tenant) {
            return Ok(*uid);
        }
        let taken: std::collections::BTreeSet<u32> = uids.values().copied().collect();
        let uid = self
            .range
            .clone()
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "every uid of tenant_uid_range {}..={} is taken by another tenant",
                    self.range.start(),
                    self.range.end()
                ))
            })?;
        uids.insert(tenant, uid);
        let bytes = serde_json::to_vec(&*uids).map_err(io::Error::other)?;
        if let Err(error) = write_atomic(&self.path, &bytes) {
            uids.remove(&tenant);
            return Err(error);
        }
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_keep_their_uids_across_restarts_and_never_share_one() {
        let dir = tempfile::tempdir().unwrap();
        let users = TenantUsers::load(dir.path(), 5000..=5002).unwrap();
        assert_eq!(users.uid_of(7).unwrap(), 5000);
        assert_eq!(users.uid_of(3).unwrap(), 5001);
        assert_eq!(users.uid_of(7).unwrap(), 5000);
        let users = TenantUsers::load(dir.path(), 5000..=5002).unwrap();
        assert_eq!(users.uid_of(3).unwrap(), 5001);
        assert_eq!(users.uid_of(9).unwrap(), 5002);
        let error = users.uid_of(10).unwrap_err();
        assert!(error.to_string().contains("taken"), "{error}");
        // A narrower range forgets the uids outside it and gives them to nobody.
        let users = TenantUsers::load(dir.path(), 5001..=5003).unwrap();
        assert_eq!(users.uid_of(3).unwrap(), 5001);
        assert_eq!(users.uid_of(7).unwrap(), 5003);
    }
}
