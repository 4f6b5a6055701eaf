//! Small-file helpers: atomic replacement (temporary file, rename; durable with fsyncs
//! of the file and the directory, or not) and size-bounded reads of the agent's own
//! small files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// The agent's own state files (records, exit codes, driver versions) are never larger.
pub(crate) const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;

/// Replaces `path` with `contents` so that a reader (or a crash, even of the machine)
/// sees either the old file or the whole new one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace(path, contents, true)
}

/// As [`write_atomic`], without the fsyncs: a reader or a crashed and restarted agent
/// sees the old file or the whole new one, but a machine crash may lose the change.
/// For the records of running processes, which a machine crash ends anyway (the
/// restarted agent then reports them lost whether or not their record survived), so
/// two fsyncs per started process would buy nothing. And for the shim's exit codes: a
/// code matters until its report is acknowledged, normally milliseconds; a machine
/// crash in between loses it, and the replica is reported lost (137), as it is when
/// the crash lost its record. In exchange a replica's files cost the disk nothing when
/// they are removed before writeback: with the fsyncs, each job cost two cache
/// flushes and, at removal, a synchronous trim of the freed block (on a file system
/// mounted with `discard`), about 2 ms of disk time per job on the benchmark VM,
/// shared with the managers' own fsyncs.
pub(crate) fn replace_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace(path, contents, false)
}

fn replace(path: &Path, contents: &[u8], durable: bool) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        if let (true, Some(parent)) = (durable, path.parent()) {
            // Make the rename itself durable.
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Reads a small file whole; a file larger than [`MAX_SMALL_FILE_BYTES`] is an error.
pub(crate) fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut contents = Vec::new();
    file.take(MAX_SMALL_FILE_BYTES + 1)
        .read_to_end(&mut contents)?;
    if contents.len() as u64 > MAX_SMALL_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {MAX_SMALL_FILE_BYTES} bytes",
                path.display()
            ),
        ));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_whole_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        write_atomic(&path, b"first, longer contents\n").unwrap();
        write_atomic(&path, b"0\n").unwrap();
        assert_eq!(read_small(&path).unwrap(), b"0\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit")]);
    }

    #[test]
    fn oversized_small_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; MAX_SMALL_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(
            read_small(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
