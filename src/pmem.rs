//! Persistent memory mapped shared: regular files and device-DAX character devices, each
//! mapping knowing how its stores become durable.
//!
//! Granularity, in libpmem2's terms (decided once per mapping, see [`Granularity`]):
//! - a device-DAX device has no page cache: CPU-cache flushes make stores durable
//!   (`CacheLine`), or nothing at all when the region's persistence domain is the CPU cache
//!   (eADR: `Byte`);
//! - a regular file is mapped `MAP_SHARED_VALIDATE | MAP_SYNC` first, which only a DAX
//!   filesystem accepts; then the same holds (the region found from the filesystem's block
//!   device). When the kernel or filesystem refuses (EOPNOTSUPP, or EINVAL from a kernel
//!   without MAP_SYNC), as tmpfs does, the file is mapped plain `MAP_SHARED` and only msync
//!   makes stores durable (`Page`);
//! - `PFN_FORCE_GRANULARITY` (`page`, `cache_line` or `byte`; read once) overrides the choice
//!   for tests and benchmarks on tmpfs, as libpmem's `PMEM_IS_PMEM_FORCE` does.
//!
//! `Page` mappings are recorded in [`pagemaps`](crate::pagemaps) so that [`persist`] (by
//! address, with no mapping in hand) knows where msync is needed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::dax::{self, DevKind, Domain};
use crate::encoding::PAGE_SIZE;
use crate::env;
use crate::errmsg;
use crate::error::{Error, Result};
use crate::pagemaps;
use crate::persist;
use crate::space;

/// How stores to a mapping become durable (libpmem2's names; the numbers are the C ABI's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// The platform flushes CPU caches on power loss: a store is durable once visible (drain).
    Byte = 0,
    /// A store is durable once its cache line is flushed and drained.
    CacheLine = 1,
    /// A store is durable once msync has written its page back.
    Page = 2,
}

impl Granularity {
    /// For a mapping that is synchronous (device DAX, or MAP_SYNC accepted) or not, in a
    /// region with persistence domain `domain`.
    pub fn decide(synchronous: bool, domain: Domain) -> Granularity {
        match (synchronous, domain) {
            (false, _) => Granularity::Page,
            (true, Domain::CpuCache) => Granularity::Byte,
            (true, _) => Granularity::CacheLine,
        }
    }

    fn parse(value: &[u8]) -> Option<Granularity> {
        match value {
            b"page" | b"PAGE" => Some(Granularity::Page),
            b"cache_line" | b"CACHE_LINE" => Some(Granularity::CacheLine),
            b"byte" | b"BYTE" => Some(Granularity::Byte),
            _ => None,
        }
    }
}

/// `PFN_FORCE_GRANULARITY`, read once: None when unset, Err when set to something unknown.
fn forced_granularity() -> std::result::Result<Option<Granularity>, ()> {
    static FORCED: OnceLock<std::result::Result<Option<Granularity>, ()>> = OnceLock::new();
    *FORCED.get_or_init(|| {
        env::with_var("PFN_FORCE_GRANULARITY", |v| match v {
            None | Some(b"") => Ok(None),
            Some(v) => Granularity::parse(v).map(Some).ok_or(()),
        })
    })
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Create the file if it is missing, and extend it to offset + size if shorter. A call
    /// that fails removes a file it created and restores the length of one it extended.
    pub create: bool,
    /// Where the mapping starts in the file or device (page-aligned; the device's alignment
    /// for device DAX).
    pub offset: u64,
}

#[derive(Debug)]
enum Backing {
    /// A regular file, mapped from `offset`.
    File { offset: u64 },
    /// A device-DAX device: its size never changes.
    Device,
}

#[derive(Debug)]
pub struct PmemFile {
    addr: usize,
    len: usize,
    file: File,
    backing: Backing,
    granularity: Granularity,
    /// Bytes of the mapping the file backed when last looked at (mapping, backed_len, or a
    /// persist that reached past it): persist compares with this instead of asking the kernel.
    backed: AtomicU64,
    /// Present for `Page` mappings: what lets `persist` by address find them.
    page_entry: Option<pagemaps::Entry>,
    /// The mapping as the bookkeeping knows it (registration refuses it while it is unmapped).
    mapping: Option<space::MappingId>,
}

/// The file as opened for mapping, and what to undo if mapping fails.
struct Opened {
    file: File,
    /// This call created the file (O_EXCL succeeded): remove it on failure.
    created: bool,
    /// The length before this call extended it, if it did: restore it on failure.
    extended_from: Option<u64>,
}

const OPEN_FLAGS: i32 = libc::O_CLOEXEC | libc::O_NOCTTY;

/// Refuses what is neither a regular file nor a device-DAX device, by its metadata, before
/// opening it (opening a device can have side effects).
fn check_kind(meta: &std::fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        Ok(())
    } else if ft.is_dir() {
        Err(errmsg::with(
            Error::Os(libc::EISDIR),
            format_args!("the path is a directory"),
        ))
    } else if ft.is_char_device() {
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        match dax::device_dax(dax::sysfs_root(), major, minor)? {
            Some(_) => Ok(()),
            None => Err(errmsg::invalid(format_args!(
                "the path is character device {major}:{minor}, which is not a device-DAX device"
            ))),
        }
    } else {
        Err(errmsg::invalid(format_args!(
            "the path is neither a regular file nor a device-DAX device"
        )))
    }
}

fn open_existing(path: &Path) -> Result<File> {
    check_kind(&std::fs::metadata(path)?)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)?;
    // What was checked may have been replaced meanwhile: check what was opened.
    check_kind(&file.metadata()?)?;
    Ok(file)
}

impl Opened {
    fn open(path: &Path, create: bool) -> Result<Opened> {
        if !create {
            return Ok(Opened {
                file: open_existing(path)?,
                created: false,
                extended_from: None,
            });
        }
        // Exclusive creation tells a file this call made from one that existed, so that a
        // failure removes only the former. A file removed between the two opens is retried.
        for _ in 0..64 {
            let made = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(OPEN_FLAGS)
                .open(path);
            match made {
                Ok(file) => {
                    return Ok(Opened {
                        file,
                        created: true,
                        extended_from: None,
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match open_existing(path) {
                Ok(file) => {
                    return Ok(Opened {
                        file,
                        created: false,
                        extended_from: None,
                    })
                }
                // A dangling symbolic link exists but names nothing: its target is not
                // created (a link planted in a shared directory must not pick the file).
                Err(Error::NotFound) if std::fs::symlink_metadata(path).is_ok() => {
                    return Err(Error::NotFound)
                }
                Err(Error::NotFound) => continue,
                Err(e) => return Err(e),
            }
        }
        // Created and removed by someone else 64 times in a row.
        Err(Error::Os(libc::EAGAIN))
    }

    /// Leaves the file system as it was before this call, as far as this call changed it.
    fn undo(self, path: &Path) {
        if self.created {
            // Only if the path still names the file this call created.
            if let (Ok(ours), Ok(now)) = (self.file.metadata(), std::fs::symlink_metadata(path)) {
                if ours.dev() == now.dev() && ours.ino() == now.ino() {
                    let _ = std::fs::remove_file(path);
                }
            }
        } else if let Some(len) = self.extended_from {
            let _ = self.file.set_len(len);
        }
    }
}

/// A fresh mapping, unmapped on drop unless kept.
struct Mapped {
    addr: usize,
    len: usize,
}

impl Mapped {
    /// mmap(2) of `len` bytes from `offset` of `fd`, read-write, with `flags`.
    fn new(fd: i32, len: usize, offset: u64, flags: i32) -> Result<Mapped> {
        let offset = libc::off_t::try_from(offset).map_err(|_| Error::Invalid)?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh mapping where the kernel chooses; nothing is overwritten.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(Error::from(std::io::Error::last_os_error()));
        }
        Ok(Mapped {
            addr: p as usize,
            len,
        })
    }

    fn keep(self) -> (usize, usize) {
        let kept = (self.addr, self.len);
        std::mem::forget(self);
        kept
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made by new(), not handed out.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// msync(MS_SYNC) of the pages holding `addr .. addr + len`, as a raw system call: glibc's
/// msync is a cancellation point, and this may run in a signal handler, so errno is restored.
fn msync(addr: usize, len: usize) -> Result<()> {
    let start = addr & !(PAGE_SIZE as usize - 1);
    let len = addr + len - start;
    // SAFETY: errno is this thread's; msync only writes pages back.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        let rc = libc::syscall(libc::SYS_msync, start, len, libc::MS_SYNC);
        let err = *errno;
        *errno = saved;
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::Os(err))
        }
    }
}

impl PmemFile {
    /// Maps `size` bytes from `opts.offset` of the regular file or device-DAX device at `path`
    /// (size 0: up to the end of the file or device).
    ///
    /// Errors: `Invalid` when `size` or `offset` is not a multiple of the page size; the path
    /// is neither a regular file, a directory nor a device-DAX device (a FIFO, socket, block
    /// device, or another character device); `PFN_FORCE_GRANULARITY` has an unknown value;
    /// for a file: (size 0) it has no bytes past `offset` or a length that is not a page
    /// multiple, (without `create`) it is shorter than offset + size, or offset + size
    /// exceeds the largest file offset; for a device: `offset` or `size` is not a multiple
    /// of its alignment, offset + size is past its end, or its sysfs entry makes no sense.
    /// `NotFound` for a missing file without `create`; `Os(errno)` for what the system
    /// refuses (EISDIR for a directory, EACCES, ENOSPC or EFBIG when the space cannot be
    /// reserved, ENOMEM, ENODEV from mmap). A failed call leaves no file it created.
    pub fn map(path: &Path, size: u64, opts: MapOptions) -> Result<PmemFile> {
        if size % PAGE_SIZE != 0 {
            return Err(errmsg::invalid(format_args!(
                "size {size:#x} is not a multiple of the page size"
            )));
        }
        if opts.offset % PAGE_SIZE != 0 {
            return Err(errmsg::invalid(format_args!(
                "offset {:#x} is not a multiple of the page size",
                opts.offset
            )));
        }
        let forced = forced_granularity().map_err(|_| {
            errmsg::invalid(format_args!(
                "PFN_FORCE_GRANULARITY is set to something other than page, cache_line or byte"
            ))
        })?;
        let mut opened = Opened::open(path, opts.create)?;
        match Self::map_opened(&mut opened, size, opts, forced) {
            Ok(m) => Ok(m),
            Err(e) => {
                opened.undo(path);
                Err(e)
            }
        }
    }

    fn map_opened(
        opened: &mut Opened,
        size: u64,
        opts: MapOptions,
        forced: Option<Granularity>,
    ) -> Result<PmemFile> {
        let meta = opened.file.metadata()?;
        let file = opened.file.try_clone()?;
        let fd = file.as_raw_fd();
        let offset = opts.offset;
        let (mapped, backing, granularity) = if meta.file_type().is_char_device() {
            let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
            let geometry = dax::device_dax(dax::sysfs_root(), major, minor)?.ok_or_else(|| {
                errmsg::invalid(format_args!(
                    "device {major}:{minor} is not a device-DAX device"
                ))
            })?;
            let size = geometry
                .fit(offset, size)
                .map_err(|m| errmsg::invalid(format_args!("{m}")))?;
            let len = usize::try_from(size)
                .map_err(|_| errmsg::invalid(format_args!("size {size:#x} does not fit memory")))?;
            // Device DAX has no page cache: stores reach the device once out of the CPU.
            let mapped = Mapped::new(fd, len, offset, libc::MAP_SHARED)?;
            let domain = dax::persistence_domain(dax::sysfs_root(), DevKind::Char, major, minor);
            (mapped, Backing::Device, Granularity::decide(true, domain))
        } else {
            let current = meta.len();
            let size = if size == 0 {
                current.saturating_sub(offset)
            } else {
                size
            };
            if size == 0 {
                return Err(errmsg::invalid(format_args!(
                    "size 0 maps the whole file, and the file has no bytes past offset {offset:#x}"
                )));
            }
            if size % PAGE_SIZE != 0 {
                return Err(errmsg::invalid(format_args!(
                    "size 0 maps the whole file, whose length {current:#x} (past offset \
                     {offset:#x}) is not a multiple of the page size"
                )));
            }
            if size > isize::MAX as u64 {
                return Err(errmsg::invalid(format_args!(
                    "size {size:#x} is larger than PTRDIFF_MAX"
                )));
            }
            let end = offset
                .checked_add(size)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| {
                    errmsg::invalid(format_args!(
                        "offset {offset:#x} + size {size:#x} is beyond the largest file offset"
                    ))
                })?;
            if current < end {
                if !opts.create {
                    return Err(errmsg::invalid(format_args!(
                        "the file is {current:#x} bytes long, shorter than offset + size = \
                         {end:#x} (PFN_PMEM_CREATE extends it)"
                    )));
                }
                // Reserve the blocks now: a full tmpfs would otherwise raise SIGBUS on first
                // touch.
                opened.extended_from = Some(current);
                // SAFETY: valid descriptor; `end` fits off_t (checked above).
                let rc = unsafe { libc::posix_fallocate(fd, 0, end as libc::off_t) };
                if rc != 0 {
                    return Err(Error::Os(rc));
                }
            }
            let len = size as usize;
            let sync = libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC;
            let (mapped, synchronous) = match Mapped::new(fd, len, offset, sync) {
                Ok(mapped) => (mapped, true),
                Err(Error::Os(libc::EOPNOTSUPP | libc::EINVAL)) => {
                    (Mapped::new(fd, len, offset, libc::MAP_SHARED)?, false)
                }
                Err(e) => return Err(e),
            };
            let domain = if synchronous {
                let dev = meta.dev();
                let (major, minor) = (libc::major(dev), libc::minor(dev));
                dax::persistence_domain(dax::sysfs_root(), DevKind::Block, major, minor)
            } else {
                Domain::Unknown
            };
            (
                mapped,
                Backing::File { offset },
                Granularity::decide(synchronous, domain),
            )
        };
        let mut granularity = forced.unwrap_or(granularity);
        if persist::config().flush == persist::FlushInsn::None {
            granularity = Granularity::Page; // no way to flush a cache line here
        }
        let page_entry = match granularity {
            Granularity::Page => Some(pagemaps::insert(mapped.addr, mapped.addr + mapped.len)?),
            _ => None,
        };
        let mapping = Some(space::add_mapping(mapped.addr, mapped.len)?);
        let (addr, len) = mapped.keep();
        Ok(PmemFile {
            addr,
            len,
            file,
            backing,
            granularity,
            backed: AtomicU64::new(len as u64),
            page_entry,
            mapping,
        })
    }

    /// Address of the first mapped byte (page-aligned).
    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How stores to this mapping become durable.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// Whether the mapping is of a device-DAX device (else of a regular file).
    pub fn is_device(&self) -> bool {
        matches!(self.backing, Backing::Device)
    }

    /// Makes `addr .. addr + len` durable: msync for `Page`, flush and drain for
    /// `CacheLine`, drain for `Byte`. No lock, and no system call but `Page`'s msync.
    ///
    /// Errors: `Invalid` when any of it lies outside the mapping; `Os(EFAULT)` when the file
    /// no longer covers it as far as this mapping has seen (someone truncated the file: those
    /// bytes have no backing and touching them raises SIGBUS); `Os(errno)` when msync fails.
    /// A truncation by another process is seen at the latest by the next [`backed_len`]:
    /// persist does not ask the kernel each time, so a flush (`CacheLine`) of bytes truncated
    /// since raises SIGBUS, as the stores to them would.
    ///
    /// [`backed_len`]: PmemFile::backed_len
    pub fn persist(&self, addr: usize, len: usize) -> Result<()> {
        let outside = || {
            errmsg::invalid(format_args!(
                "{addr:#x} + {len:#x} bytes is not inside the mapping {:#x} + {:#x}",
                self.addr, self.len
            ))
        };
        let offset = addr.checked_sub(self.addr).ok_or_else(outside)?;
        let end = offset.checked_add(len).ok_or_else(outside)?;
        if end > self.len {
            return Err(outside());
        }
        if len == 0 {
            return Ok(());
        }
        if end as u64 > self.backed.load(Ordering::Relaxed) && end > self.backed_len()? {
            return Err(errmsg::with(
                Error::Os(libc::EFAULT),
                format_args!(
                    "the file no longer backs bytes {offset:#x}..{end:#x} of the mapping (it \
                     was truncated)"
                ),
            ));
        }
        match self.granularity {
            Granularity::Page => msync(addr, len),
            Granularity::CacheLine => {
                // SAFETY: inside this live mapping, backed by the file as far as seen.
                unsafe { persist::flush(addr as *const u8, len) };
                persist::drain();
                Ok(())
            }
            Granularity::Byte => {
                persist::drain();
                Ok(())
            }
        }
    }

    /// Bytes the file still has of the mapping: less than [`PmemFile::len`] after someone
    /// truncated it (the mapping's length for a device). Asks the kernel (fstat).
    pub fn backed_len(&self) -> Result<usize> {
        let backed = match self.backing {
            Backing::Device => self.len as u64,
            Backing::File { offset } => {
                let size = self.file.metadata()?.len();
                size.saturating_sub(offset).min(self.len as u64)
            }
        };
        self.backed.store(backed, Ordering::Relaxed);
        Ok(backed as usize)
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
        // Forget the record first, so that no persist by address msyncs memory that is gone.
        self.page_entry.take();
        // SAFETY: this mapping, made by map() and used by nobody now.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        // Only now may registration use this memory again.
        if let Some(id) = self.mapping.take() {
            space::remove_mapping(id);
        }
    }
}

/// Makes `addr .. addr + len` durable, finding how by address: msync for the parts in a
/// `Page` mapping of this library, CPU-cache flush and drain for everything else (pmem mapped
/// by this library or by any other means). No lock, no allocation; no system call unless a
/// `Page` mapping is involved. Errors: `Os(errno)` of msync.
///
/// # Safety
/// The bytes are mapped (a flush faults like a load).
#[inline]
pub unsafe fn persist(addr: usize, len: usize) -> Result<()> {
    if !pagemaps::any() {
        persist::flush(addr as *const u8, len);
        persist::drain();
        return Ok(());
    }
    persist_some_by_msync(addr, len)
}

#[cold]
unsafe fn persist_some_by_msync(addr: usize, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut covered = 0usize;
    let mut result = Ok(());
    pagemaps::for_each_overlap(addr, len, |start, end| {
        let lo = start.max(addr);
        let hi = end.min(addr.saturating_add(len));
        covered += hi - lo;
        if let Err(e) = msync(lo, hi - lo) {
            result = Err(e);
        }
    });
    if covered < len {
        persist::flush(addr as *const u8, len);
        persist::drain();
    }
    result
}

/// Whether any of `addr .. addr + len` lies in a `Page` mapping of this library (where a
/// copy should use plain stores and leave durability to msync).
#[inline]
pub fn needs_msync(addr: usize, len: usize) -> bool {
    pagemaps::overlaps(addr, len)
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
        let create = MapOptions {
            create: true,
            ..MapOptions::default()
        };
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
        assert_eq!(
            PmemFile::map(Path::new("/dev/null"), 0, none).unwrap_err(),
            Error::Invalid
        );
    }

    #[test]
    fn a_failed_create_leaves_nothing_it_made() {
        let create = MapOptions {
            create: true,
            ..MapOptions::default()
        };
        // Refused after the file was made (size 0 of a new file; more than any disk holds).
        let new = tmp("failed-new");
        assert_eq!(PmemFile::map(&new, 0, create).unwrap_err(), Error::Invalid);
        assert!(!new.exists());
        assert!(PmemFile::map(&new, 1 << 50, create).is_err());
        assert!(!new.exists());
        // A file that existed keeps its bytes and its length.
        let old = tmp("failed-old");
        std::fs::write(&old, [7u8; 4096]).unwrap();
        assert!(PmemFile::map(&old, 1 << 50, create).is_err());
        assert_eq!(std::fs::read(&old).unwrap(), vec![7u8; 4096]);
        std::fs::remove_file(&old).unwrap();
    }

    #[test]
    fn offsets_map_the_middle_of_a_file() {
        let path = tmp("offset.pmem");
        let at = MapOptions {
            create: true,
            offset: 8192,
        };
        let m = PmemFile::map(&path, 4096, at).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12288);
        // SAFETY: inside the mapping.
        unsafe { *(m.addr() as *mut u8) = 0x42 };
        m.persist(m.addr(), 1).unwrap();
        assert_eq!(m.backed_len().unwrap(), 4096);
        drop(m);
        assert_eq!(std::fs::read(&path).unwrap()[8192], 0x42);
        let whole_rest = PmemFile::map(
            &path,
            0,
            MapOptions {
                offset: 4096,
                ..MapOptions::default()
            },
        )
        .unwrap();
        assert_eq!(whole_rest.len(), 8192);
        drop(whole_rest);
        let none = MapOptions {
            offset: 12288,
            ..MapOptions::default()
        };
        assert_eq!(PmemFile::map(&path, 0, none).unwrap_err(), Error::Invalid);
        let odd = MapOptions {
            offset: 100,
            ..MapOptions::default()
        };
        assert_eq!(PmemFile::map(&path, 4096, odd).unwrap_err(), Error::Invalid);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn granularity_follows_synchrony_and_the_domain() {
        assert_eq!(
            Granularity::decide(false, Domain::CpuCache),
            Granularity::Page
        );
        assert_eq!(
            Granularity::decide(true, Domain::Unknown),
            Granularity::CacheLine
        );
        assert_eq!(
            Granularity::decide(true, Domain::MemoryController),
            Granularity::CacheLine
        );
        assert_eq!(
            Granularity::decide(true, Domain::CpuCache),
            Granularity::Byte
        );
        assert_eq!(
            Granularity::parse(b"cache_line"),
            Some(Granularity::CacheLine)
        );
        assert_eq!(Granularity::parse(b"BYTE"), Some(Granularity::Byte));
        assert_eq!(Granularity::parse(b"pages"), None);
    }

    #[test]
    fn page_mappings_are_found_by_address_until_unmapped() {
        let path = tmp("pagemap.pmem");
        let create = MapOptions {
            create: true,
            ..MapOptions::default()
        };
        let m = PmemFile::map(&path, 16384, create).unwrap();
        if forced_granularity() == Ok(None) {
            // tmpfs and ordinary disks refuse MAP_SYNC
            assert_eq!(m.granularity(), Granularity::Page);
        }
        let (a, n) = (m.addr(), m.len());
        assert_eq!(needs_msync(a, n), m.granularity() == Granularity::Page);
        // SAFETY: inside the mapping.
        unsafe {
            *((a + 5000) as *mut u8) = 1;
            persist(a + 5000, 1).unwrap();
            persist(a, n).unwrap();
        }
        m.unmap().unwrap();
        assert!(!needs_msync(a, n));
        std::fs::remove_file(&path).unwrap();
    }
}
