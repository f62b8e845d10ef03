//! pmem files mapped shared.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use super::handles::Handles;
use super::{ffi_boundary, set_errno, status};
use crate::pmem::{MapOptions, PmemFile};
use crate::space;

/// A mapped pmem file. Opaque; from pfn_pmem_map.
pub struct pfn_pmem {
    _private: [u8; 0],
}

/// pfn_pmem_map flag: create the file if missing, and extend it to `size` if shorter.
pub const PFN_PMEM_CREATE: u32 = 1;

pub(crate) static MAPS: Handles<PmemFile> = Handles::new();

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
    ffi_boundary!(ptr::null_mut(), {
        if path.is_null() || flags & !PFN_PMEM_CREATE != 0 {
            set_errno(libc::EINVAL);
            return ptr::null_mut();
        }
        let path = Path::new(OsStr::from_bytes(CStr::from_ptr(path).to_bytes()));
        let opts = MapOptions {
            create: flags & PFN_PMEM_CREATE != 0,
            ..MapOptions::default()
        };
        super::fork_safe();
        match PmemFile::map(path, size, opts) {
            Ok(map) => MAPS.add(map) as *mut pfn_pmem,
            Err(e) => {
                set_errno(e.errno());
                ptr::null_mut()
            }
        }
    })
}

/// Address of the mapping's first byte (page-aligned), or NULL with errno EINVAL when `m` is
/// not a live mapping. Valid until pfn_pmem_unmap.
#[no_mangle]
pub extern "C" fn pfn_pmem_addr(m: *const pfn_pmem) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match MAPS.get(m as usize) {
            Some(map) => map.addr() as *mut c_void,
            None => {
                set_errno(libc::EINVAL);
                ptr::null_mut()
            }
        }
    })
}

/// Bytes mapped, or 0 with errno EINVAL when `m` is not a live mapping.
#[no_mangle]
pub extern "C" fn pfn_pmem_size(m: *const pfn_pmem) -> u64 {
    ffi_boundary!(0, {
        match MAPS.get(m as usize) {
            Some(map) => map.len() as u64,
            None => {
                set_errno(libc::EINVAL);
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
    ffi_boundary!(0, {
        match MAPS.get(m as usize).map(|map| map.backed_len()) {
            Some(Ok(n)) => n as u64,
            Some(Err(e)) => {
                set_errno(e.errno());
                0
            }
            None => {
                set_errno(libc::EINVAL);
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
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        match MAPS.get(m as usize) {
            Some(map) if !addr.is_null() => status(map.persist(addr as usize, len)),
            _ => -libc::EINVAL,
        }
    })
}

/// Unmaps `m` and frees it. NULL is a no-op.
///
/// Returns 0; -EINVAL when `m` is not a live mapping (e.g. already unmapped); -EBUSY while a
/// registered range still lies in the mapping's memory: nothing is unmapped and `m` stays
/// valid (unregister the ranges first).
#[no_mangle]
pub extern "C" fn pfn_pmem_unmap(m: *mut pfn_pmem) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        if m.is_null() {
            return 0;
        }
        // Take the handle out first (so no new user finds it), then check under the
        // registration lock that no range uses the memory; if one does, put the handle back.
        // The memory is unmapped when the last concurrent user lets go.
        let Some(map) = MAPS.remove(m as usize) else {
            return -libc::EINVAL;
        };
        let (addr, len) = (map.addr(), map.len());
        let mut kept = Some(map);
        match space::without_ranges_in(addr, len, || drop(kept.take())) {
            Ok(()) => 0,
            Err(e) => {
                if let Some(map) = kept.take() {
                    MAPS.restore(map);
                }
                -e.errno()
            }
        }
    })
}
