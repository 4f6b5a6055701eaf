//! `SnapshotBytes`: the bytes of a snapshot (a `State::encode_snapshot` encoding), either
//! in memory or, for a snapshot loaded from its file, the file's body mapped read-only.
//! Mapping instead of reading a large snapshot saves copying it into fresh memory on
//! every start, and the replica then keeps no private copy of it (the page cache holds
//! it, shared with the file).
//!
//! A mapped file must not change while it is mapped. Snapshot files never do: each is
//! written under a temporary name, fsynced and renamed into place, and later only
//! deleted, which leaves an existing mapping intact.

use std::fmt;
use std::ops::{Deref, Range};

pub struct SnapshotBytes(Inner);

enum Inner {
    Owned(Vec<u8>),
    #[cfg(unix)]
    Mapped(mapping::Mapping),
}

impl From<Vec<u8>> for SnapshotBytes {
    fn from(bytes: Vec<u8>) -> SnapshotBytes {
        SnapshotBytes(Inner::Owned(bytes))
    }
}

impl SnapshotBytes {
    /// The byte range `body` of `file` (of `length` bytes): mapped where the platform
    /// allows, else read.
    pub(crate) fn of_file(
        file: &std::fs::File,
        length: usize,
        body: Range<usize>,
    ) -> std::io::Result<SnapshotBytes> {
        #[cfg(unix)]
        {
            mapping::Mapping::new(file, length, body)
                .map(|mapped| SnapshotBytes(Inner::Mapped(mapped)))
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let _ = length;
            let mut file = file;
            file.seek(SeekFrom::Start(body.start as u64))?;
            let mut bytes = vec![0u8; body.len()];
            file.read_exact(&mut bytes)?;
            Ok(SnapshotBytes::from(bytes))
        }
    }
}

impl Deref for SnapshotBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::Owned(bytes) => bytes,
            #[cfg(unix)]
            Inner::Mapped(mapped) => mapped.body(),
        }
    }
}

impl AsRef<[u8]> for SnapshotBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for SnapshotBytes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Inner::Owned(_) => "in memory",
            #[cfg(unix)]
            Inner::Mapped(_) => "mapped",
        };
        write!(formatter, "SnapshotBytes({} bytes, {kind})", self.len())
    }
}

#[cfg(unix)]
mod mapping {
    use std::ops::Range;
    use std::os::fd::AsRawFd;

    /// A private read-only mapping of a whole file, unmapped on drop.
    pub(super) struct Mapping {
        address: *mut libc::c_void,
        length: usize,
        body: Range<usize>,
    }

    // SAFETY: the mapping is read-only and owned by this value until it is dropped, so
    // shared references to its bytes may cross threads like those of a `Vec<u8>`.
    unsafe impl Send for Mapping {}
    // SAFETY: as for `Send`: nothing writes through the mapping, so `&Mapping` may be
    // shared between threads.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        pub(super) fn new(
            file: &std::fs::File,
            length: usize,
            body: Range<usize>,
        ) -> std::io::Result<Mapping> {
            if length == 0 || body.start > body.end || body.end > length {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "snapshot body outside its file",
                ));
            }
            // SAFETY: a fresh private read-only mapping of an open file; the kernel picks
            // the address. Nothing else refers to it yet.
            let address = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    length,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if address == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            // Map the (cached) pages up front, in one call instead of a fault every few
            // pages; an older kernel without it faults them in as they are read.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // SAFETY: advice on the mapping just created; it changes no contents.
            unsafe {
                libc::madvise(address, length, libc::MADV_POPULATE_READ);
            }
            Ok(Mapping {
                address,
                length,
                body,
            })
        }

        pub(super) fn whole(&self) -> &[u8] {
            // SAFETY: `address` maps `length` readable bytes for as long as `self` lives,
            // and the file is never modified while mapped (see the module docs).
            unsafe { std::slice::from_raw_parts(self.address as *const u8, self.length) }
        }

        pub(super) fn body(&self) -> &[u8] {
            &self.whole()[self.body.clone()]
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping created in `new`; no reference to its
            // bytes outlives `self`.
            unsafe {
                libc::munmap(self.address, self.length);
            }
        }
    }
}
