//! CPU-cache persistence: libpmem's primitives under the pfn_ prefix. Pointer and flag checks
//! and errno only; the work is in crate::persist and crate::pmem.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use super::{ffi_boundary, set_errno};
use crate::errmsg;
use crate::error::Error;
use crate::persist::{self, Flags};
use crate::pmem;

/// pfn_memcpy / pfn_memmove / pfn_memset flag: flush, but leave the final drain to the caller
/// (pfn_drain, or a later call that drains). libpmem's PMEM_F_MEM_NODRAIN.
pub const PFN_F_MEM_NODRAIN: u32 = 1u32 << 0;
/// Flag: non-temporal stores whatever the size (unless PFN_NO_MOVNT is set). A hint.
pub const PFN_F_MEM_NONTEMPORAL: u32 = 1u32 << 1;
/// Flag: ordinary stores followed by cache-line flushes whatever the size. A hint.
pub const PFN_F_MEM_TEMPORAL: u32 = 1u32 << 2;
/// Flag: stores only: nothing is flushed or drained (implies PFN_F_MEM_NODRAIN). For callers
/// that flush the whole of something later.
pub const PFN_F_MEM_NOFLUSH: u32 = 1u32 << 5;

const KNOWN_FLAGS: u32 =
    PFN_F_MEM_NODRAIN | PFN_F_MEM_NONTEMPORAL | PFN_F_MEM_TEMPORAL | PFN_F_MEM_NOFLUSH;

/// NULL with errno, and the failing call's message (without setting the thread up: these
/// calls are async-signal-safe on any thread).
#[cold]
fn fail_null(call: &str, e: Error) -> *mut c_void {
    errmsg::finish_no_setup(call, e);
    set_errno(e.errno());
    ptr::null_mut()
}

#[cold]
fn bad_flags(call: &str, bits: u32) -> *mut c_void {
    errmsg::set_no_setup(format_args!(
        "flags {bits:#x}: unknown bits, or both PFN_F_MEM_TEMPORAL and PFN_F_MEM_NONTEMPORAL"
    ));
    fail_null(call, Error::Invalid)
}

#[cold]
fn bad_range(call: &str, what: &str, p: *const c_void, len: usize) -> *mut c_void {
    errmsg::set_no_setup(format_args!(
        "{what} {p:p} with length {len:#x}: NULL, wrapping, or longer than PTRDIFF_MAX"
    ));
    fail_null(call, Error::Invalid)
}

fn flags_from(bits: u32) -> Option<Flags> {
    let both = PFN_F_MEM_NONTEMPORAL | PFN_F_MEM_TEMPORAL;
    if bits & !KNOWN_FLAGS != 0 || bits & both == both {
        return None;
    }
    Some(Flags {
        nodrain: bits & PFN_F_MEM_NODRAIN != 0,
        nontemporal: bits & PFN_F_MEM_NONTEMPORAL != 0,
        temporal: bits & PFN_F_MEM_TEMPORAL != 0,
        noflush: bits & PFN_F_MEM_NOFLUSH != 0,
    })
}

/// Whether `len` bytes from `p` are a range a caller could own: not NULL (unless empty), not
/// wrapping past the end of the address space, and no larger than any object can be
/// (isize::MAX: Rust's copies require it).
fn plausible(p: *const c_void, len: usize) -> bool {
    len == 0
        || (!p.is_null() && len <= isize::MAX as usize && (p as usize).checked_add(len).is_some())
}

/// Writes back the CPU cache lines holding `addr .. addr + len`, with the instruction
/// pfn_flush_method names, without waiting for them (pfn_drain waits). Nothing for `len` 0 or
/// a NULL `addr`. Bytes in a PFN_GRANULARITY_PAGE mapping need msync instead: see
/// pfn_persist. libpmem's pmem_flush.
///
/// Thread rules: any thread; async-signal-safe (no lock, no allocation, no system call).
/// The bytes must be mapped: like a load, a flush of an unmapped address faults.
#[no_mangle]
pub extern "C" fn pfn_flush(addr: *const c_void, len: usize) {
    ffi_boundary!((), {
        if plausible(addr, len) && !addr.is_null() {
            // SAFETY: the caller vouches that the bytes are mapped (documented).
            unsafe { persist::flush(addr as *const u8, len) };
        }
    })
}

/// Waits until every flush and non-temporal store this thread issued before it is durable
/// (SFENCE). libpmem's pmem_drain.
///
/// Thread rules: any thread; async-signal-safe.
#[no_mangle]
pub extern "C" fn pfn_drain() {
    ffi_boundary!((), { persist::drain() })
}

/// Makes `addr .. addr + len` durable, finding how by address: msync(2) for the bytes in a
/// PFN_GRANULARITY_PAGE mapping of this library, CPU-cache flush and drain for everything else
/// (a CACHE_LINE or BYTE mapping, or pmem mapped by any other means, as libpmem's pmem_persist
/// assumes). Memory that is neither pmem nor a PAGE mapping of this library (an ordinary file
/// mapped elsewhere) is not made durable by a flush: use msync for it.
///
/// Returns 0; -EINVAL when `addr` is NULL (with `len` > 0), `addr + len` wraps or `len`
/// exceeds PTRDIFF_MAX; or the negative errno of msync(2) (e.g. -EIO, or -ENOMEM when the
/// PAGE mapping was unmapped meanwhile).
///
/// Thread rules: any thread, concurrently; async-signal-safe (no lock, no allocation; no
/// system call unless PAGE-mapped bytes are involved, then msync without a cancellation
/// point). The bytes must be mapped: a flush faults like a load.
#[no_mangle]
pub extern "C" fn pfn_persist(addr: *const c_void, len: usize) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        if !plausible(addr, len) {
            bad_range("pfn_persist", "addr", addr, len);
            return -libc::EINVAL;
        }
        // SAFETY: the caller vouches that the bytes are mapped (documented).
        match unsafe { pmem::persist(addr as usize, len) } {
            Ok(()) => 0,
            Err(e) => {
                fail_null("pfn_persist", e);
                -e.errno()
            }
        }
    })
}

/// Copies (overlap allowed) and makes durable per `flags`. Inlined, so that the constant
/// flags of the _persist calls fold away.
///
/// # Safety
/// The caller vouches for the ranges (checked for NULL and wrap only).
#[inline(always)]
unsafe fn copy(
    call: &str,
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
    bits: u32,
) -> *mut c_void {
    let Some(flags) = flags_from(bits) else {
        return bad_flags(call, bits);
    };
    if !plausible(dst, len) {
        return bad_range(call, "dst", dst, len);
    }
    if !plausible(src, len) {
        return bad_range(call, "src", src, len);
    }
    let (d, s) = (dst as *mut u8, src as *const u8);
    if pmem::needs_msync(d as usize, len) {
        // Page-cache memory: plain stores, then msync writes the pages back.
        ptr::copy(s, d, len);
        if !flags.noflush {
            if let Err(e) = pmem::persist(d as usize, len) {
                return fail_null(call, e);
            }
        }
    } else {
        persist::copy(d, s, len, flags);
    }
    dst
}

/// Sets bytes and makes them durable per `flags`.
///
/// # Safety
/// As for `copy`.
#[inline(always)]
unsafe fn set(call: &str, dst: *mut c_void, c: c_int, len: usize, bits: u32) -> *mut c_void {
    let Some(flags) = flags_from(bits) else {
        return bad_flags(call, bits);
    };
    if !plausible(dst, len) {
        return bad_range(call, "dst", dst, len);
    }
    let d = dst as *mut u8;
    if pmem::needs_msync(d as usize, len) {
        ptr::write_bytes(d, c as u8, len);
        if !flags.noflush {
            if let Err(e) = pmem::persist(d as usize, len) {
                return fail_null(call, e);
            }
        }
    } else {
        persist::fill(d, c as u8, len, flags);
    }
    dst
}

/// Copies `len` bytes from `src` to `dst` and makes them durable before returning: at or above
/// pfn_movnt_threshold bytes with non-temporal stores of the widest vector unit
/// (pfn_movnt_method), below it with ordinary stores and cache-line flushes, then a drain; in
/// a PFN_GRANULARITY_PAGE mapping of this library, ordinary stores and msync(2). The ranges may
/// overlap (it copies as memmove does). libpmem's pmem_memcpy_persist.
///
/// Returns `dst`; or NULL with errno EINVAL when `dst` or `src` is NULL (with `len` > 0), a
/// range wraps past the end of the address space or `len` exceeds PTRDIFF_MAX (nothing is
/// copied), or with the errno of msync(2) (the bytes are copied but may not be durable).
///
/// Thread rules: any thread, concurrently; async-signal-safe (as pfn_persist).
///
/// # Safety
/// `src .. src + len` is readable and `dst .. dst + len` writable (as for memcpy; only NULL
/// and wrapping are caught).
#[no_mangle]
pub unsafe extern "C" fn pfn_memcpy_persist(
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        copy("pfn_memcpy_persist", dst, src, len, 0)
    })
}

/// pfn_memcpy_persist for ranges that overlap, either way (the two are the same function).
/// libpmem's pmem_memmove_persist.
///
/// # Safety
/// As pfn_memcpy_persist.
#[no_mangle]
pub unsafe extern "C" fn pfn_memmove_persist(
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        copy("pfn_memmove_persist", dst, src, len, 0)
    })
}

/// Sets `len` bytes at `dst` to `(unsigned char)c` and makes them durable before returning,
/// as pfn_memcpy_persist does. libpmem's pmem_memset_persist.
///
/// Returns `dst`; or NULL with errno EINVAL (`dst` NULL with `len` > 0, wrapping, or `len`
/// over PTRDIFF_MAX), or with the errno of msync(2).
///
/// Thread rules: any thread, concurrently; async-signal-safe.
///
/// # Safety
/// `dst .. dst + len` is writable.
#[no_mangle]
pub unsafe extern "C" fn pfn_memset_persist(dst: *mut c_void, c: c_int, len: usize) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        set("pfn_memset_persist", dst, c, len, 0)
    })
}

/// pfn_memcpy_persist steered by `flags` (0, or PFN_F_MEM_* or-ed): PFN_F_MEM_NODRAIN leaves
/// the drain to the caller, PFN_F_MEM_NOFLUSH leaves flush and drain to the caller,
/// PFN_F_MEM_NONTEMPORAL / PFN_F_MEM_TEMPORAL choose the stores whatever the size. In a
/// PFN_GRANULARITY_PAGE mapping the copy is followed by msync unless PFN_F_MEM_NOFLUSH.
/// libpmem's pmem_memcpy (same flag values).
///
/// Returns `dst`; or NULL with errno EINVAL for an unknown flag, PFN_F_MEM_NONTEMPORAL with
/// PFN_F_MEM_TEMPORAL, or a bad range (nothing is copied), or with the errno of msync(2).
///
/// Thread rules: any thread, concurrently; async-signal-safe.
///
/// # Safety
/// As pfn_memcpy_persist.
#[no_mangle]
pub unsafe extern "C" fn pfn_memcpy(
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
    flags: u32,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        copy("pfn_memcpy", dst, src, len, flags)
    })
}

/// pfn_memcpy for ranges that overlap, either way (the same function). libpmem's pmem_memmove.
///
/// # Safety
/// As pfn_memcpy_persist.
#[no_mangle]
pub unsafe extern "C" fn pfn_memmove(
    dst: *mut c_void,
    src: *const c_void,
    len: usize,
    flags: u32,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        copy("pfn_memmove", dst, src, len, flags)
    })
}

/// pfn_memset_persist steered by `flags`, as pfn_memcpy is. libpmem's pmem_memset.
///
/// Returns `dst`; or NULL with errno as pfn_memcpy.
///
/// # Safety
/// As pfn_memset_persist.
#[no_mangle]
pub unsafe extern "C" fn pfn_memset(
    dst: *mut c_void,
    c: c_int,
    len: usize,
    flags: u32,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), { set("pfn_memset", dst, c, len, flags) })
}

/// The flush instruction in use, chosen once at load time: "clwb", else "clflushopt", else
/// "clflush" (PFN_NO_CLWB and PFN_NO_CLFLUSHOPT take the first two away), or "none" on a CPU
/// without one. A static string. Async-signal-safe.
#[no_mangle]
pub extern "C" fn pfn_flush_method() -> *const c_char {
    ffi_boundary!(ptr::null(), {
        let name: &'static [u8] = match persist::config().flush {
            persist::FlushInsn::Clwb => b"clwb\0",
            persist::FlushInsn::Clflushopt => b"clflushopt\0",
            persist::FlushInsn::Clflush => b"clflush\0",
            persist::FlushInsn::None => b"none\0",
        };
        name.as_ptr() as *const c_char
    })
}

/// The vector unit non-temporal copies use, chosen once at load time: "avx512f", "avx2",
/// "sse2", or "none" when copies never use non-temporal stores (PFN_NO_MOVNT set, or no flush
/// instruction). PFN_NO_AVX512 and PFN_NO_AVX2 cap the width. A static string.
/// Async-signal-safe.
#[no_mangle]
pub extern "C" fn pfn_movnt_method() -> *const c_char {
    ffi_boundary!(ptr::null(), {
        let name: &'static [u8] = match persist::config().movnt {
            persist::Vector::Avx512 => b"avx512f\0",
            persist::Vector::Avx2 => b"avx2\0",
            persist::Vector::Sse2 => b"sse2\0",
            persist::Vector::None => b"none\0",
        };
        name.as_ptr() as *const c_char
    })
}

/// Copies and sets of at least this many bytes write their whole cache lines with
/// non-temporal stores (unless pfn_movnt_method is "none"): 1024 on Intel CPUs, 64 on others
/// (each measured best on a host of that kind, see README), unless PFN_MOVNT_THRESHOLD
/// (decimal bytes) says otherwise at load time.
/// Async-signal-safe.
#[no_mangle]
pub extern "C" fn pfn_movnt_threshold() -> usize {
    ffi_boundary!(0, { persist::config().movnt_threshold })
}
