//! pmem files mapped shared.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use super::handles::Handles;
use super::{ffi_call, null_errno, set_errno, status};
use crate::pmem::{MapOptions, PmemFile};

/// A mapped pmem file. Opaque; from pfn_pmem_map.
pub struct pfn_pmem {
    _private: [u8; 0],
}

/// pfn_pmem_map flag: create the file if missing, and extend it to `size` if shorter.
pub const PFN_PMEM_CREATE: u32 = 1;

pub(crate) static MAPS: Handles<PmemFile> = Handles::new(2);

/// Maps `size` bytes of the file at `path` shared, read-write (size 0: the whole existing
/// file). With PFN_PMEM_CREATE the file is created (mode 0644) or extended, and its blocks are
/// reserved, so a full filesystem is an error now rather than SIGBUS later.
///
/// Returns the mapping, to be released with pfn_pmem_unmap, or NULL with errno:
/// EINVAL: `path` NULL, unknown `flags`, `size` not a multiple of PFN_PAGE_SIZE, the file
///         empty or not a page multiple long (size 0), or shorter than `size` without
///         PFN_PMEM_CREATE; ENOENT: no such file without PFN_PMEM_CREATE; EISDIR, EACCES,
///         ENOSPC and other errors of open(2), posix_fallocate(3) and mmap(2) as they come.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pfn_pmem_map(path: *const c_char, size: u64, flags: u32) -> *mut pfn_pmem {
    ffi_call!(ptr::null_mut(), {
        if path.is_null() || flags & !PFN_PMEM_CREATE != 0 {
            set_errno(libc::EINVAL);
            return ptr::null_mut();
        }
        let path = Path::new(OsStr::from_bytes(CStr::from_ptr(path).to_bytes()));
        let opts = MapOptions {
            create: flags & PFN_PMEM_CREATE != 0,
        };
        match PmemFile::map(path, size, opts).and_then(|m| MAPS.add(m)) {
            Ok(h) => h as *mut pfn_pmem,
            Err(e) => null_errno(e),
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
            Err(e) => null_errno(e),
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
                set_errno(e.errno());
                0
            }
        }
    })
}

/// Bytes of the mapping that the file still backs: pfn_pmem_size unless someone truncated
/// the file since it was mapped (then touching the bytes past this raises SIGBUS). Returns it,
/// or 0 with errno EINVAL when `m` is not a live mapping, or another fstat(2) errno.
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

/// Makes the bytes `addr .. addr + len` of mapping `m` durable (msync; see README on DAX).
/// Any thread may persist, also while others write elsewhere in the mapping.
///
/// Returns 0; -EINVAL when `m` is not a live mapping, `addr` is NULL or any byte lies outside
/// the mapping; -EFAULT when the file no longer covers those bytes (another process truncated
/// it: touching them would raise SIGBUS, see pfn_pmem_backed_size); or the negative errno of
/// msync(2) (e.g. -EIO).
#[no_mangle]
pub extern "C" fn pfn_pmem_persist(m: *const pfn_pmem, addr: *const c_void, len: usize) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        if addr.is_null() {
            return -libc::EINVAL;
        }
        status(
            MAPS.with(m as usize, |map| map.persist(addr as usize, len))
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
/// other threads' calls on `m` have finished). From the moment it succeeds, registering a range
/// in the mapping's memory fails with -EBUSY. Not a cancellation point.
#[no_mangle]
pub extern "C" fn pfn_pmem_unmap(m: *mut pfn_pmem) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        if m.is_null() {
            return 0;
        }
        if crate::rcu::current().is_some_and(crate::rcu::Reader::is_reading) {
            return -libc::EDEADLK;
        }
        let map = match MAPS.get(m as usize) {
            Ok(map) => map,
            Err(e) => return -e.errno(),
        };
        // Refused while busy, before the handle changes: a refusal is invisible.
        if let Err(e) = map.begin_unmap() {
            return -e.errno();
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
                -e.errno()
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
        let map = match MAPS.get(m as usize) {
            Ok(map) => map,
            Err(e) => return -e.errno(),
        };
        let Some(end) = phys.checked_add(map.len() as u64 - 1) else {
            return -libc::EINVAL;
        };
        match super::device::device(dev) {
            Ok(d) => status(d.register(phys, end, map.addr())),
            Err(e) => -e.errno(),
        }
    })
}
