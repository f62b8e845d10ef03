//! Persistent memory mapped shared: regular files and device-DAX devices.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use super::handles::Handles;
use super::{fail, ffi_call, invalid, null_errno, null_invalid, set_errno, status};
use crate::pmem::{MapOptions, PmemFile};

/// A mapped pmem file or device-DAX device. Opaque; from pfn_pmem_map.
pub struct pfn_pmem {
    _private: [u8; 0],
}

/// pfn_pmem_map flag: create the file if missing, and extend it to `size` if shorter.
pub const PFN_PMEM_CREATE: u32 = 1;

/// pfn_pmem_granularity: the platform flushes CPU caches on power loss (eADR); a store is
/// durable once visible, so persisting is a drain (fence) only. libpmem2's
/// PMEM2_GRANULARITY_BYTE.
pub const PFN_GRANULARITY_BYTE: c_int = 0;
/// pfn_pmem_granularity: a store is durable once its cache line is flushed and drained (real
/// pmem: device DAX, or a file on a DAX filesystem mapped with MAP_SYNC).
pub const PFN_GRANULARITY_CACHE_LINE: c_int = 1;
/// pfn_pmem_granularity: a store is durable once msync(2) has written its page back (page
/// cache: tmpfs, an ordinary disk, or a DAX filesystem that refused MAP_SYNC).
pub const PFN_GRANULARITY_PAGE: c_int = 2;

pub(crate) static MAPS: Handles<PmemFile> = Handles::new(2);

/// The refusal of a handle that names no live mapping.
fn not_a_mapping(m: *const pfn_pmem) -> crate::Error {
    crate::errmsg::invalid(format_args!(
        "{m:p} is not a live mapping (NULL, unmapped, or never one)"
    ))
}

/// `e`, described when it is the refusal of a dead handle.
fn handle_error(m: *const pfn_pmem, e: crate::Error) -> crate::Error {
    match e {
        crate::Error::Invalid => not_a_mapping(m),
        e => e,
    }
}

/// Maps `size` bytes of the regular file or device-DAX device at `path` shared, read-write
/// (size 0: the whole existing file or device). Same as pfn_pmem_map_range with offset 0.
///
/// A regular file is mapped MAP_SHARED_VALIDATE | MAP_SYNC when the filesystem allows it
/// (DAX), else MAP_SHARED; a device-DAX device (/dev/daxX.Y, recognised by its sysfs class)
/// MAP_SHARED, its size and alignment read from sysfs; pfn_pmem_granularity says which
/// persistence the mapping got. With PFN_PMEM_CREATE a file is created (mode 0644) or extended
/// to `size`, its blocks reserved (posix_fallocate), so a full filesystem is an error now
/// rather than SIGBUS later; a device is never extended, truncated or created. A call that
/// fails removes a file it created (never one that existed before) and gives a file it
/// extended back its length.
///
/// Returns the mapping, to be released with pfn_pmem_unmap, or NULL with errno:
/// EINVAL: `path` NULL; an unknown flag; `size` not a multiple of PFN_PAGE_SIZE; the path
///         names something that is neither a regular file, a directory nor a device-DAX
///         device (a FIFO, socket, block device, or another character device such as
///         /dev/null); for a file: size 0 and the file empty or not a page multiple long, or
///         (without PFN_PMEM_CREATE) the file shorter than `size`, or `size` beyond the
///         largest file offset or above PTRDIFF_MAX; for a device: `size` not a multiple of
///         the device's alignment, `size` larger than the device, or its sysfs entry
///         without a sensible size or alignment; PFN_FORCE_GRANULARITY set to a value other
///         than page, cache_line or byte;
/// ENOENT: no such file without PFN_PMEM_CREATE, a missing directory on the path, or (with
///         PFN_PMEM_CREATE) a dangling symbolic link, whose target is not created;
/// EISDIR: `path` is a directory;
/// ENOSPC, EFBIG: (PFN_PMEM_CREATE) the blocks cannot be reserved;
/// EAGAIN: (PFN_PMEM_CREATE) other processes created and removed the file 64 times while
///         this call tried to open it;
/// ENOMEM: the mapping (mmap) or the library's record of it could not be allocated;
/// EACCES, EPERM, EROFS, ETXTBSY, ELOOP, ENAMETOOLONG, ENOTDIR, EMFILE, ENFILE, ENODEV, EIO
/// and other errors of open(2), fstat(2), posix_fallocate(3), mmap(2) and of reading sysfs
/// (for a character device), as they come.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pfn_pmem_map(path: *const c_char, size: u64, flags: u32) -> *mut pfn_pmem {
    pfn_pmem_map_range(path, 0, size, flags)
}

/// pfn_pmem_map of the bytes from `offset` of the file or device: `size` bytes, or (size 0)
/// all from `offset` to the end. For a file `offset` is a multiple of PFN_PAGE_SIZE and
/// PFN_PMEM_CREATE extends the file to offset + size; for a device-DAX device `offset` and
/// `size` are multiples of its alignment (sysfs `align`, often 2 MiB).
///
/// Returns the mapping, or NULL with the errno of pfn_pmem_map, and also EINVAL when `offset`
/// is not a multiple of PFN_PAGE_SIZE (of the device's alignment for a device), when offset +
/// size overflows or lies past the end of a device, or (size 0) when a file has no byte past
/// `offset`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pfn_pmem_map_range(
    path: *const c_char,
    offset: u64,
    size: u64,
    flags: u32,
) -> *mut pfn_pmem {
    ffi_call!(ptr::null_mut(), {
        const CALL: &str = "pfn_pmem_map";
        if path.is_null() {
            return null_invalid(CALL, format_args!("path is NULL"));
        }
        if flags & !PFN_PMEM_CREATE != 0 {
            return null_invalid(CALL, format_args!("unknown flags {flags:#x}"));
        }
        let path = Path::new(OsStr::from_bytes(CStr::from_ptr(path).to_bytes()));
        let opts = MapOptions {
            create: flags & PFN_PMEM_CREATE != 0,
            offset,
        };
        match PmemFile::map(path, size, opts).and_then(|m| MAPS.add(m)) {
            Ok(h) => h as *mut pfn_pmem,
            Err(e) => null_errno(CALL, e),
        }
    })
}

/// How stores to mapping `m` become durable: PFN_GRANULARITY_PAGE (pfn_pmem_persist and
/// pfn_persist use msync), PFN_GRANULARITY_CACHE_LINE (they flush cache lines and drain, no
/// system call) or PFN_GRANULARITY_BYTE (they drain only). Decided at pfn_pmem_map: device
/// DAX, or MAP_SYNC accepted, is CACHE_LINE, or BYTE when the NVDIMM region's sysfs
/// persistence_domain is "cpu_cache"; anything else is PAGE. PFN_FORCE_GRANULARITY (page,
/// cache_line or byte), read once, forces it for every mapping, for tests and benchmarks.
///
/// Returns the granularity (>= 0), or -EINVAL when `m` is not a live mapping.
#[no_mangle]
pub extern "C" fn pfn_pmem_granularity(m: *const pfn_pmem) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        match MAPS.with(m as usize, |map| map.granularity() as c_int) {
            Ok(g) => g,
            Err(e) => fail("pfn_pmem_granularity", handle_error(m, e)),
        }
    })
}

/// Address of the mapping's first byte (page-aligned), or NULL with errno EINVAL when `m` is
/// not a live mapping. Valid until pfn_pmem_unmap.
#[no_mangle]
pub extern "C" fn pfn_pmem_addr(m: *const pfn_pmem) -> *mut c_void {
    ffi_call!(ptr::null_mut(), {
        match MAPS.with(m as usize, |map| map.addr()) {
            Ok(a) => a as *mut c_void,
            Err(e) => null_errno("pfn_pmem_addr", handle_error(m, e)),
        }
    })
}

/// Bytes mapped, or 0 with errno EINVAL when `m` is not a live mapping.
#[no_mangle]
pub extern "C" fn pfn_pmem_size(m: *const pfn_pmem) -> u64 {
    ffi_call!(0, {
        match MAPS.with(m as usize, |map| map.len()) {
            Ok(n) => n as u64,
            Err(e) => {
                null_errno::<u8>("pfn_pmem_size", handle_error(m, e));
                0
            }
        }
    })
}

/// Bytes of the mapping that the file still backs: pfn_pmem_size unless someone truncated
/// the file since it was mapped (then touching the bytes past this raises SIGBUS); always
/// pfn_pmem_size for a device. Asks the kernel (fstat), and tells pfn_pmem_persist what it
/// found. Returns it, or 0 with errno EINVAL when `m` is not a live mapping, or another
/// fstat(2) errno.
#[no_mangle]
pub extern "C" fn pfn_pmem_backed_size(m: *const pfn_pmem) -> u64 {
    ffi_call!(0, {
        match MAPS
            .with(m as usize, |map| map.backed_len())
            .and_then(|r| r)
        {
            Ok(n) => n as u64,
            Err(e) => {
                set_errno(e.errno());
                0
            }
        }
    })
}

/// Makes the bytes `addr .. addr + len` of mapping `m` durable, as its granularity needs:
/// msync(2) for PFN_GRANULARITY_PAGE, cache-line flush and drain for CACHE_LINE, a drain for
/// BYTE. No global lock, and no system call besides PAGE's msync. Any thread may persist,
/// also while others write elsewhere in the mapping.
///
/// Returns 0; -EINVAL when `m` is not a live mapping, `addr` is NULL or any byte lies outside
/// the mapping; -EFAULT when the bytes lie past the end of the file as this mapping last saw
/// it (at pfn_pmem_map, at pfn_pmem_backed_size, or when a persist reached past it and looked
/// again): another process truncated it, and touching them would raise SIGBUS; or the
/// negative errno of msync(2) (e.g. -EIO). Persist does not ask the kernel for the file's size
/// each time: after another process may have truncated the file, call pfn_pmem_backed_size
/// first. A PAGE persist of truncated bytes is harmless (msync touches nothing); a CACHE_LINE
/// one flushes them, which raises SIGBUS like the stores to them would.
#[no_mangle]
pub extern "C" fn pfn_pmem_persist(m: *const pfn_pmem, addr: *const c_void, len: usize) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_pmem_persist";
        if addr.is_null() {
            return invalid(CALL, format_args!("addr is NULL"));
        }
        status(
            CALL,
            MAPS.with(m as usize, |map| map.persist(addr as usize, len))
                .map_err(|e| handle_error(m, e))
                .and_then(|r| r),
        )
    })
}

/// Unmaps `m` and frees it. NULL is a no-op. A call that fails changes nothing and other
/// threads' calls on `m` see no difference while it runs.
///
/// Returns 0; -EINVAL when `m` is not a live mapping (e.g. already unmapped, or another call
/// is unmapping it); -EBUSY while a registered range, or one still being unregistered, lies in
/// the mapping's memory: nothing is unmapped and `m` stays valid (unregister the ranges
/// first); -EDEADLK when the calling thread holds a kmap or read section (unmapping waits until
/// other threads' calls on `m` have finished). While an unmap that will succeed runs,
/// registering a range in the mapping's memory fails with -EBUSY (so no range can slip in
/// under it); once it has returned the memory is unmapped, and the library no longer knows it
/// was a mapping: registering a range there is the caller's error, as with any unmapped
/// memory. Not a cancellation point.
#[no_mangle]
pub extern "C" fn pfn_pmem_unmap(m: *mut pfn_pmem) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        if m.is_null() {
            return 0;
        }
        const CALL: &str = "pfn_pmem_unmap";
        if let Err(e) = crate::space::check_not_reading() {
            return fail(CALL, e);
        }
        let map = match MAPS.get(m as usize) {
            Ok(map) => map,
            Err(e) => return fail(CALL, handle_error(m, e)),
        };
        // Refused while busy, before the handle changes: a refusal is invisible.
        if let Err(e) = map.begin_unmap() {
            return fail(CALL, e);
        }
        match MAPS.kill(m as usize) {
            Ok(killed) => {
                drop(map);
                // The mapping goes when the last reference does: after lookups in flight.
                killed.release();
                0
            }
            Err(e) => {
                map.abort_unmap();
                fail(CALL, handle_error(m, e))
            }
        }
    })
}

/// Registers the whole mapping `m` for `dev` at physical address `phys` (page-aligned): the
/// range `phys .. phys + pfn_pmem_size(m) - 1` at pfn_pmem_addr(m), as
/// devm_register_kmap_pfn_range would, without a pfn_resource to fill in. Unregister it with
/// pfn_unregister_range(dev, phys) or pfn_device_free.
///
/// Returns 0 or the errors of devm_register_kmap_pfn_range; -EINVAL also when `m` is not a
/// live mapping.
#[no_mangle]
pub extern "C" fn pfn_pmem_register(
    dev: *mut super::device::pfn_device,
    m: *const pfn_pmem,
    phys: u64,
) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_pmem_register";
        let map = match MAPS.get(m as usize) {
            Ok(map) => map,
            Err(e) => return fail(CALL, handle_error(m, e)),
        };
        let Some(end) = phys.checked_add(map.len() as u64 - 1) else {
            return invalid(
                CALL,
                format_args!("phys {phys:#x} + {:#x} bytes wraps around", map.len()),
            );
        };
        match super::device::device(dev) {
            Ok(d) => status(CALL, d.register(phys, end, map.addr())),
            Err(e) => fail(CALL, e),
        }
    })
}

/// Bytes at the start of a mapping that a pool label occupies (see pfn_pmem_label_get).
pub const PFN_LABEL_SIZE: usize = 64;
const _: () = assert!(PFN_LABEL_SIZE == crate::label::SIZE);

/// Reads the pool label of mapping `m`: the physical start its stored handles expect, kept in
/// the first PFN_LABEL_SIZE bytes of the mapping (offset 0 of what was mapped). The layout is
/// in README ("Pool labels"); pfn_pmem_register_labeled writes and follows it.
///
/// Returns 0 and writes the start to `*phys`; -ENODATA when those bytes are all zero (a new
/// pool: no label yet); -EILSEQ when they are neither blank nor a valid label (another
/// format, or a torn or damaged label): nothing is written; -EINVAL when `m` is not a live
/// mapping, `phys` is NULL or the mapping is smaller than a label; -EFAULT when the file no
/// longer backs those bytes (truncated). `*phys` is written only on success.
/// Thread rules: any thread; label writes by other threads or processes at the same time may
/// be seen torn (-EILSEQ).
///
/// # Safety
/// `phys` is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_pmem_label_get(m: *const pfn_pmem, phys: *mut u64) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_pmem_label_get";
        if phys.is_null() {
            return invalid(CALL, format_args!("phys is NULL"));
        }
        let map = match MAPS.get(m as usize) {
            Ok(map) => map,
            Err(e) => return fail(CALL, handle_error(m, e)),
        };
        match crate::label::get(&map) {
            Ok(Some(p)) => {
                // SAFETY: non-NULL, and the caller promises it is writable.
                unsafe { phys.write(p) };
                0
            }
            Ok(None) => fail(
                CALL,
                crate::errmsg::with(
                    crate::Error::Os(libc::ENODATA),
                    format_args!("the mapping's first bytes are blank: no label yet"),
                ),
            ),
            Err(e) => fail(CALL, e),
        }
    })
}

/// Writes a pool label recording physical start `phys` (page-aligned) over the first
/// PFN_LABEL_SIZE bytes of mapping `m`, whatever they held, and makes it durable (as
/// pfn_pmem_persist). For moving a pool, or labeling one by hand; pfn_pmem_register_labeled
/// labels new pools itself.
///
/// Returns 0; -EINVAL when `m` is not a live mapping, `phys` is not page-aligned, phys + the
/// mapping's size wraps, or the mapping is smaller than a label; -EFAULT as
/// pfn_pmem_label_get; the errors of pfn_pmem_persist. Not a cancellation point.
#[no_mangle]
pub extern "C" fn pfn_pmem_label_set(m: *const pfn_pmem, phys: u64) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_pmem_label_set";
        match MAPS.get(m as usize) {
            Ok(map) => status(CALL, crate::label::set(&map, phys)),
            Err(e) => fail(CALL, handle_error(m, e)),
        }
    })
}

/// Registers the whole mapping `m` for `dev` where its pool label says (see
/// pfn_pmem_label_get), so that handles stored in the pool on an earlier run name the same
/// bytes on this one. A new pool (blank label bytes) is first labeled with a random
/// page-aligned start between 2^40 and 2^55, aligned to its size rounded up to a power of
/// two (2 MiB .. 1 GiB), tried again elsewhere (32 times) when that is taken, and the label
/// made durable before the registration. Keep your own data after the first PFN_LABEL_SIZE
/// bytes. Unregister with pfn_unregister_range(dev, *phys) or pfn_device_free.
///
/// Returns 0 and writes the start to `*phys`; -EILSEQ when the bytes are neither blank nor a
/// valid label (nothing is written to the pool); -EINVAL when `phys` is NULL, and the errors
/// of pfn_pmem_register and pfn_pmem_label_set (-EBUSY: the labeled start overlaps a
/// registered range; for a new pool, all 32 places were taken). A call that fails leaves the
/// label bytes as it found them (a new pool blank again). `*phys` is written only on success.
/// Label a pool from one process at a time.
///
/// # Safety
/// `phys` is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_pmem_register_labeled(
    dev: *mut super::device::pfn_device,
    m: *const pfn_pmem,
    phys: *mut u64,
) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_pmem_register_labeled";
        if phys.is_null() {
            return invalid(CALL, format_args!("phys is NULL"));
        }
        let map = match MAPS.get(m as usize) {
            Ok(map) => map,
            Err(e) => return fail(CALL, handle_error(m, e)),
        };
        let d = match super::device::device(dev) {
            Ok(d) => d,
            Err(e) => return fail(CALL, e),
        };
        match crate::label::register(&d, &map) {
            Ok(p) => {
                // SAFETY: non-NULL, and the caller promises it is writable.
                unsafe { phys.write(p) };
                0
            }
            Err(e) => fail(CALL, e),
        }
    })
}
