//! kmap_atomic_pfn_t / kunmap_atomic_pfn_t: the translation fast path, and thread set-up.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::ptr;

use super::encoding::pfn_t;
use super::{fail, ffi_boundary, ffi_call, invalid, misuse, null_errno, setup_guard};
use crate::rcu;
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
/// PFN_SG_CHAIN is set; ENOMEM when the thread's first kmap cannot allocate its state (or very
/// deep nesting its hold); EOVERFLOW past about 16 million nested kmaps and sections on the
/// thread; EAGAIN in a signal handler that interrupted this thread's own set-up (call
/// pfn_thread_init first).
/// Cost: O(1) whatever the number of ranges; no lock and no shared write. Async-signal-safe once
/// the thread is set up (see pfn_thread_init).
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
        crate::tls::publish_offset();
        match setup_guard(|| space::kmap(pfn.into())) {
            Ok(addr) => addr as *mut c_void,
            Err(e) => null_errno("kmap_atomic_pfn_t", e),
        }
    })
}

/// As kmap_atomic_pfn_t, and writes to `*len` (when the call succeeds and `len` is not NULL)
/// the bytes contiguous from the returned address: to the end of the range, or further when
/// the ranges after it continue it both physically and virtually (registered back to back, one
/// right after the other in physical space and in memory), so one translation can serve an
/// extent that spans ranges. Those ranges stay valid while the kmap is held (an unregister of
/// any of them waits for it). kunmap_atomic_pfn_t of any address in the extent releases it.
///
/// Returns NULL with errno as kmap_atomic_pfn_t; `*len` is then left unchanged.
/// Async-signal-safe once the thread is set up.
///
/// # Safety
/// `len` is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn kmap_atomic_pfn_t_len(pfn: pfn_t, len: *mut u64) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match setup_guard(|| space::kmap_len(pfn.into())) {
            Ok(m) => {
                if let Some(len) = len.as_mut() {
                    *len = m.len;
                }
                m.addr as *mut c_void
            }
            Err(e) => null_errno("kmap_atomic_pfn_t_len", e),
        }
    })
}

/// Ends one of the calling thread's kmaps: one that begins at `addr`'s page (the address a kmap
/// returned, or any address in that page), or else one whose extent contains `addr` (any
/// address inside the page kmap_atomic_pfn_t returned, or inside the extent
/// kmap_atomic_pfn_t_len returned). Which one, when several qualify, is unspecified (they are
/// alike for the lifetime rules). Release in any order. A signal handler must release only the
/// kmaps it took itself, by the addresses they returned.
///
/// Returns 0 when a kmap was released; -EINVAL when this thread holds no kmap containing
/// `addr` (another thread's, a stale one, NULL): nothing is released. With the environment
/// variable PFN_DEBUG set, that case prints a message and aborts instead.
/// Async-signal-safe.
#[no_mangle]
pub extern "C" fn kunmap_atomic_pfn_t(addr: *mut c_void) -> c_int {
    if space::kunmap_fast(addr as usize) {
        return 0;
    }
    kunmap_slow(addr)
}

#[inline(never)]
extern "C" fn kunmap_slow(addr: *mut c_void) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        if space::kunmap(addr as usize) {
            0
        } else {
            misuse("kunmap_atomic_pfn_t of an address this thread holds no kmap of");
            invalid(
                "kunmap_atomic_pfn_t",
                format_args!("this thread holds no kmap of {addr:p}"),
            )
        }
    })
}

/// Sets the calling thread up for libpfn ahead of time: afterwards kmap, kunmap, read
/// sections and their translations allocate nothing on this thread (up to 16 nested kmaps) and
/// are async-signal-safe, so a signal handler may use them. Calling it again does nothing.
///
/// Returns 0, -ENOMEM, or -EAGAIN when called from a signal handler that interrupted this
/// thread's own set-up.
#[no_mangle]
pub extern "C" fn pfn_thread_init() -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        match space::reader() {
            Ok(_) => 0,
            Err(e) => fail("pfn_thread_init", e),
        }
    })
}

/// Internal to the header's inline fast paths: wakes a writer that waits for `reader` (the
/// calling thread's reader, which has just left its outermost section). Not for direct use.
///
/// # Safety
/// `reader` is the calling thread's reader record (from the header's pfn_reader_self()).
#[no_mangle]
pub unsafe extern "C" fn pfn_reader_wake(reader: *mut c_void) {
    if let Some(r) = (reader as *const rcu::Reader).as_ref() {
        rcu::wake_writer(r);
    }
}
