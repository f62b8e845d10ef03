//! Persistent-memory files, mapped shared.
//!
//! There is no pmem hardware on the machines this is built and tested on, so a "pmem file" is
//! any file (tmpfs, disk or a DAX filesystem) mapped `MAP_SHARED`, and persistence is `msync`.
//! On real DAX with `MAP_SYNC`, a cache-line flush would be enough; that path is not taken here.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

use crate::encoding::PAGE_SIZE;
use crate::error::{Error, Result};
use crate::space;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Create the file if it is missing, and extend it to the requested size if shorter.
    pub create: bool,
}

#[derive(Debug)]
pub struct PmemFile {
    /// Dropped by hand in `drop`: unmapped before the bookkeeping forgets the mapping.
    map: std::mem::ManuallyDrop<MmapRaw>,
    file: File,
    /// The mapping as the bookkeeping knows it (registration refuses it while it is unmapped).
    mapping: Option<space::MappingId>,
}

impl PmemFile {
    /// Maps `size` bytes of the file at `path` (size 0: the whole existing file).
    ///
    /// Errors: `Invalid` when `size` is not a multiple of the page size, or (size 0) the file
    /// is empty or not a page multiple long, or (without `create`) the file is shorter than
    /// `size`; `NotFound` for a missing file without `create`; `Os(errno)` for what the system
    /// refuses (EISDIR for a directory, EACCES, ENOSPC when the space cannot be reserved).
    pub fn map(path: &Path, size: u64, opts: MapOptions) -> Result<PmemFile> {
        if size % PAGE_SIZE != 0 {
            return Err(Error::Invalid);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(opts.create)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(Error::Invalid);
        }
        let current = meta.len();
        let size = if size == 0 { current } else { size };
        if size == 0 || size % PAGE_SIZE != 0 || usize::try_from(size).is_err() {
            return Err(Error::Invalid);
        }
        if current < size {
            if !opts.create {
                return Err(Error::Invalid);
            }
            // Reserve the blocks now: a full tmpfs would otherwise raise SIGBUS on first touch.
            // SAFETY: valid descriptor; offsets checked to fit.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
            if rc != 0 {
                return Err(Error::Os(rc));
            }
        }
        let map = MmapOptions::new().len(size as usize).map_raw(&file)?;
        let mapping = Some(space::add_mapping(map.as_ptr() as usize, map.len())?);
        Ok(PmemFile {
            map: std::mem::ManuallyDrop::new(map),
            file,
            mapping,
        })
    }

    /// Address of the first mapped byte (page-aligned).
    pub fn addr(&self) -> usize {
        self.map.as_ptr() as usize
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Makes `addr..addr + len` durable. Errors: `Invalid` when any of it lies outside the
    /// mapping; `Os(EFAULT)` when the file no longer covers it (someone truncated the file:
    /// those bytes have no backing and touching them raises SIGBUS); `Os(errno)` when msync
    /// fails.
    pub fn persist(&self, addr: usize, len: usize) -> Result<()> {
        let start = self.addr();
        let offset = addr.checked_sub(start).ok_or(Error::Invalid)?;
        let end = offset.checked_add(len).ok_or(Error::Invalid)?;
        if end > self.len() {
            return Err(Error::Invalid);
        }
        if len == 0 {
            return Ok(());
        }
        if self.file.metadata()?.len() < end as u64 {
            return Err(Error::Os(libc::EFAULT));
        }
        self.map.flush_range(offset, len).map_err(Error::from)
    }

    /// Bytes the file still has of the mapping: less than [`PmemFile::len`] after someone
    /// truncated it.
    pub fn backed_len(&self) -> Result<usize> {
        let size = self.file.metadata()?.len();
        Ok(size.min(self.len() as u64) as usize)
    }

    /// First step of an unmap that others may be racing: refused with `Busy` while a
    /// registered range (or one being unregistered) uses any of the mapping's memory, and with
    /// `Invalid` when another call is unmapping it. On success registration refuses the memory
    /// from now on; end with [`PmemFile::finish_unmap`] or [`PmemFile::abort_unmap`].
    pub fn begin_unmap(&self) -> Result<()> {
        match &self.mapping {
            Some(id) => space::begin_unmap(id),
            None => Err(Error::Invalid),
        }
    }

    /// Undoes [`PmemFile::begin_unmap`].
    pub fn abort_unmap(&self) {
        if let Some(id) = &self.mapping {
            space::abort_unmap(id);
        }
    }

    /// Unmaps after a successful [`PmemFile::begin_unmap`].
    pub fn finish_unmap(self) {
        drop(self);
    }

    /// Unmaps the file. Errors: `Busy` (and the mapping stays) while a registered range uses
    /// any of its memory.
    pub fn unmap(self) -> std::result::Result<(), (PmemFile, Error)> {
        match self.begin_unmap() {
            Ok(()) => {
                self.finish_unmap();
                Ok(())
            }
            Err(e) => Err((self, e)),
        }
    }
}

impl Drop for PmemFile {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; nothing uses it afterwards.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.map) };
        if let Some(id) = self.mapping.take() {
            space::remove_mapping(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("libpfn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn create_write_persist_remap() {
        let path = tmp("a.pmem");
        let create = MapOptions { create: true };
        let m = PmemFile::map(&path, 8192, create).unwrap();
        assert_eq!(m.len(), 8192);
        // SAFETY: inside the mapping.
        unsafe { *((m.addr() + 4100) as *mut u8) = 0xAB };
        m.persist(m.addr() + 4100, 1).unwrap();
        assert_eq!(m.persist(m.addr() + 8000, 500), Err(Error::Invalid));
        assert_eq!(m.persist(m.addr() - 1, 1), Err(Error::Invalid));
        m.unmap().unwrap();
        let m = PmemFile::map(&path, 0, MapOptions::default()).unwrap();
        assert_eq!(m.len(), 8192);
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { *((m.addr() + 4100) as *const u8) }, 0xAB);
        m.unmap().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_files_are_refused() {
        let none = MapOptions::default();
        assert_eq!(
            PmemFile::map(&tmp("missing"), 4096, none).unwrap_err(),
            Error::NotFound
        );
        assert_eq!(
            PmemFile::map(&tmp("x"), 100, none).unwrap_err(),
            Error::Invalid
        );
        let odd = tmp("odd");
        std::fs::write(&odd, [1u8; 100]).unwrap();
        assert_eq!(PmemFile::map(&odd, 0, none).unwrap_err(), Error::Invalid);
        let empty = tmp("empty");
        std::fs::write(&empty, []).unwrap();
        assert_eq!(PmemFile::map(&empty, 0, none).unwrap_err(), Error::Invalid);
        let dir = std::env::temp_dir();
        assert_eq!(
            PmemFile::map(&dir, 0, none).unwrap_err(),
            Error::Os(libc::EISDIR)
        );
    }
}
