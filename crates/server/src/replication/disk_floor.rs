//! The free-space floor (etcd's NOSPACE alarm): every `CHECK_INTERVAL_MS` the replica
//! reads how much space its data directory's file system has left, and below
//! `storage.min_free_disk_mib` it raises the cluster's NOSPACE alarm (a replicated
//! `AlarmRaise`, proposed as the system). From then on every replica refuses new work
//! (`Health::space_refusal`) while writes that free space or finish running work go on,
//! until an operator frees space and disarms it; an alarm disarmed while the disk is
//! still low is raised again at the next check.
//!
//! The floor is what keeps acknowledged writes off a full disk: a full disk stops the
//! replica (`guard`), and the floor is meant to be reached long before that.

use crate::environment::BlockingWork;
use crate::replication::proposer::Proposer;
use corral_model::{AlarmKind, Caller, Command, Principal};
use corral_store::StateMachineStore;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

const CHECK_INTERVAL_MS: u64 = 1_000;
const MIB: u64 = 1 << 20;

/// Free bytes for an unprivileged writer on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a data directory path holds a NUL byte"))?;
    // SAFETY: statvfs is a plain C struct of integers, for which all zeros is valid.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a valid, writable
    // statvfs that outlives the call.
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Check the floor of `data_dir` until the replica ends.
pub(crate) async fn watch(
    this_replica: u64,
    data_dir: PathBuf,
    floor_mib: u64,
    state_machine: StateMachineStore,
    proposer: Proposer,
    blocking_work: BlockingWork,
) {
    assert!(floor_mib > 0, "a zero floor means the check is off");
    let mut low = false;
    loop {
        tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS)).await;
        let path = data_dir.clone();
        let free = match blocking_work.run(move || free_bytes(&path)).await {
            Ok(Ok(free)) => free,
            Ok(Err(error)) => {
                warn!(
                    "cannot read the free space of {}: {error}",
                    data_dir.display()
                );
                continue;
            }
            Err(_) => continue,
        };
        let free_mib = free / MIB;
        if free_mib >= floor_mib {
            if low {
                info!(
                    "{} has {free_mib} MiB free again (floor {floor_mib} MiB); an operator \
                     disarms the NOSPACE alarm",
                    data_dir.display()
                );
                low = false;
            }
            continue;
        }
        let raised = state_machine.read(|state| {
            state
                .alarms()
                .iter()
                .any(|alarm| alarm.replica == this_replica && alarm.kind == AlarmKind::NoSpace)
        });
        if raised {
            continue;
        }
        // No path: the detail reaches every caller that is refused.
        let detail = format!("{free_mib} MiB free in its data directory (floor {floor_mib} MiB)");
        if !low {
            warn!("raising the NOSPACE alarm: {detail}");
            low = true;
        }
        let command = Command::AlarmRaise {
            replica: this_replica,
            kind: AlarmKind::NoSpace,
            detail,
        };
        if let Err(status) = proposer
            .propose(&Caller::trusted(Principal::System), command)
            .await
        {
            warn!("the NOSPACE alarm was not raised yet: {}", status.message());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_free_space_of_a_real_file_system() {
        let directory = tempfile::tempdir().expect("directory");
        let free = free_bytes(directory.path()).expect("statvfs");
        assert!(free > 0, "a writable temporary directory has room");
        assert!(free_bytes(&directory.path().join("missing")).is_err());
    }
}
