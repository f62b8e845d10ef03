//! kmap_atomic_pfn_t / kunmap_atomic_pfn_t: the translation fast path.

use std::ffi::c_void;
use std::ptr;

use super::encoding::pfn_t;
use super::{ffi_boundary, set_errno};
use crate::space;

/// Maps `pfn` for the calling thread: returns `base + (phys - start)` of the registered range
/// holding the frame (page-aligned), whatever flags `pfn` carries.
///
/// The address stays valid until the matching kunmap_atomic_pfn_t on this same thread: until
/// then no unregister of the range can complete. kmaps nest: a thread may hold several, of one
/// or many ranges, and release them in any order. A thread that exits releases what it holds.
/// Hold kmaps briefly: unregistering waits for them.
///
/// Returns NULL with errno: ENXIO when no registered range holds the frame; EINVAL when
/// PFN_SG_CHAIN is set; ENOMEM when the thread's first kmap cannot allocate its state.
/// Cost: O(1) whatever the number of ranges; no lock and no shared write.
#[no_mangle]
pub extern "C" fn kmap_atomic_pfn_t(pfn: pfn_t) -> *mut c_void {
    // The fast path cannot panic (no allocation, no lock, no fallible arithmetic), so it runs
    // outside the panic boundary, which would otherwise cost a stack frame on every call.
    match space::kmap_fast(pfn.into()) {
        Some(addr) => addr as *mut c_void,
        None => kmap_slow(pfn),
    }
}

/// Everything else: the thread's first kmap, deep nesting, and every error.
#[inline(never)]
extern "C" fn kmap_slow(pfn: pfn_t) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match space::kmap(pfn.into()) {
            Ok(addr) => addr as *mut c_void,
            Err(e) => fail(e),
        }
    })
}

/// The error return, out of line so that the success path needs no stack frame.
#[cold]
#[inline(never)]
fn fail(e: crate::Error) -> *mut c_void {
    set_errno(e.errno());
    ptr::null_mut()
}

/// As kmap_atomic_pfn_t, and writes to `*len` (when the call succeeds and `len` is not NULL)
/// the bytes contiguous from the returned address to the end of the range, so a caller can
/// access a whole extent with one translation. Released with kunmap_atomic_pfn_t.
///
/// Returns NULL with errno as kmap_atomic_pfn_t; `*len` is then left unchanged.
///
/// # Safety
/// `len` is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn kmap_atomic_pfn_t_len(pfn: pfn_t, len: *mut u64) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match space::kmap_len(pfn.into()) {
            Ok((addr, bytes)) => {
                if let Some(len) = len.as_mut() {
                    *len = bytes;
                }
                addr as *mut c_void
            }
            Err(e) => fail(e),
        }
    })
}

/// Ends one kmap of the page holding `addr` taken by the calling thread. An address this
/// thread holds no kmap of (another thread's, a stale one, NULL) releases nothing.
#[no_mangle]
pub extern "C" fn kunmap_atomic_pfn_t(addr: *mut c_void) {
    ffi_boundary!((), {
        space::kunmap(addr as usize);
    })
}
