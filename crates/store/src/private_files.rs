//! Permissions of a replica's data directory. It holds every tenant's job commands and
//! environments and the hashes of every token, so nobody but the replica's own user may
//! read it: directories 0700, files 0600. Files that sled creates later (blobs) take the
//! process umask, but sit inside directories nobody else can enter.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory under a data directory.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file under a data directory.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// How deep `restrict_tree` walks: a data directory is at most a few levels deep
/// (`sled/blobs/…`); the bound keeps a symlink loop or a stray tree from taking the start.
const MAX_DEPTH: usize = 8;

/// Creates `directory` (and missing parents) as 0700, and narrows it to 0700 if it existed.
pub(crate) fn create_private_dir(directory: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(directory)?;
    fs::set_permissions(directory, Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// Creates (or truncates) a file readable and writable by the owner only.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

/// Makes every directory under `root` (itself included) 0700 and every file 0600.
/// Symlinks are left alone (and not followed).
pub(crate) fn restrict_tree(root: &Path) -> io::Result<()> {
    restrict(root, 0)
}

fn restrict(path: &Path, depth: usize) -> io::Result<()> {
    let metadata = fs::symlink_metadata(path)?;
    if metadata.is_dir() {
        if metadata.permissions().mode() & 0o777 != PRIVATE_DIR_MODE {
            fs::set_permissions(path, Permissions::from_mode(PRIVATE_DIR_MODE))?;
        }
        if depth < MAX_DEPTH {
            for item in fs::read_dir(path)? {
                restrict(&item?.path(), depth + 1)?;
            }
        }
    } else if metadata.is_file() && metadata.permissions().mode() & 0o777 != PRIVATE_FILE_MODE {
        fs::set_permissions(path, Permissions::from_mode(PRIVATE_FILE_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_wide_tree_is_narrowed_to_the_owner() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        fs::create_dir_all(data.join("sled/blobs")).unwrap();
        fs::write(data.join("sled/db"), b"x").unwrap();
        fs::write(data.join("sled/blobs/1"), b"x").unwrap();
        for path in [&data, &data.join("sled"), &data.join("sled/blobs")] {
            fs::set_permissions(path, Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(data.join("sled/db"), Permissions::from_mode(0o644)).unwrap();
        restrict_tree(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("sled")), 0o700);
        assert_eq!(mode(&data.join("sled/blobs")), 0o700);
        assert_eq!(mode(&data.join("sled/db")), 0o600);
        assert_eq!(mode(&data.join("sled/blobs/1")), 0o600);
    }

    #[test]
    fn private_directories_and_files_are_created_for_the_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let directory = root.path().join("a/b");
        create_private_dir(&directory).unwrap();
        assert_eq!(mode(&directory), 0o700);
        let file = directory.join("f");
        drop(create_private_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
    }
}
