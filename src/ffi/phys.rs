//! Byte handles (a physical byte address plus flags in one word) and reverse translation.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::ptr;

use super::encoding::pfn_t;
use super::{fail, ffi_boundary, invalid, null_errno, setup_guard};
use crate::encoding::{Pfn, FLAGS_MASK, PAGE_SIZE, SG_CHAIN};
use crate::error::Error;
use crate::space;

/// Bits of a byte handle that hold the physical byte address (bits 0..55).
pub const PFN_PHYS_ADDR_MASK: u64 = (1u64 << 56) - 1;
/// Bits of a byte handle that hold flags (bits 56..63): pfn_t's flags at pfn_t's positions
/// (PFN_DEV, PFN_MAP, ...); bits 56..58 are reserved and must be zero.
pub const PFN_PHYS_FLAGS_MASK: u64 = !((1u64 << 56) - 1);

/// A byte handle: the physical address of one byte (bits 0..55) plus pfn_t flags (bits
/// 56..63), in one 64-bit word, so a link to an object of any size is one word that can be
/// published with one atomic store (pfn_phys_store / pfn_phys_load in this header). The null
/// handle is 0 (`PFN_PHYS_NULL`): physical byte 0 without flags is never named by a handle.
/// Stable and position-independent like pfn_t: it may be stored on media. Adding a byte offset
/// to `val` (while it stays below 2^56) names the byte that far on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct pfn_phys_t {
    pub val: u64,
}

/// The refusal of the null handle or one with PFN_SG_CHAIN.
pub(crate) fn bad_handle(h: pfn_phys_t) -> Error {
    if h.val == 0 {
        crate::errmsg::invalid(format_args!("the null byte handle names no byte"))
    } else {
        crate::errmsg::invalid(format_args!(
            "byte handle {:#x} has PFN_SG_CHAIN set: it names no byte",
            h.val
        ))
    }
}

impl pfn_phys_t {
    /// The frame holding the byte, unless the handle is null or carries PFN_SG_CHAIN.
    pub(crate) fn page(self) -> Option<Pfn> {
        (self.val != 0 && self.val & SG_CHAIN == 0)
            .then(|| Pfn::from_phys(self.val & PFN_PHYS_ADDR_MASK, 0))
    }

    pub(crate) fn offset(self) -> usize {
        (self.val & (PAGE_SIZE - 1)) as usize
    }
}

/// Maps the page holding the byte `h` names and returns the byte's address; release with
/// kunmap_atomic_pfn_t of any address in that page. Returns NULL with errno: EINVAL for the
/// null handle or PFN_SG_CHAIN; otherwise as kmap_atomic_pfn_t. Async-signal-safe once the
/// thread is set up.
#[no_mangle]
pub extern "C" fn kmap_atomic_pfn_phys(h: pfn_phys_t) -> *mut c_void {
    if let Some(p) = h.page() {
        if let Some(addr) = space::kmap_fast(p) {
            return (addr + h.offset()) as *mut c_void;
        }
    }
    ffi_boundary!(ptr::null_mut(), {
        let page = h.page().ok_or_else(|| bad_handle(h));
        match setup_guard(|| page.and_then(space::kmap)) {
            Ok(addr) => (addr + h.offset()) as *mut c_void,
            Err(e) => null_errno("kmap_atomic_pfn_phys", e),
        }
    })
}

/// The handle of virtual address `addr`: when it lies in a registered range, writes the
/// pfn_t of its frame to `*out` (with the flags the range was registered with: PFN_DEV, plus
/// PFN_MAP for a range with page descriptors) and returns 0. When ranges share virtual memory,
/// one of them answers. O(1) and lock-free: a table walk like kmap's, inside a brief read
/// section of the calling thread.
///
/// Returns 0; -ENXIO when no registered range holds `addr`; -EINVAL when `out` is NULL;
/// -ENOMEM / -EAGAIN as for a thread's first kmap. `*out` is written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable pfn_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_virt_to_pfn_t(addr: *const c_void, out: *mut pfn_t) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_virt_to_pfn_t";
        let Some(out) = out.as_mut() else {
            return invalid(CALL, format_args!("out is NULL"));
        };
        match setup_guard(|| space::virt_to_phys(addr as usize)) {
            Ok((phys, flags)) => {
                *out = Pfn::from_phys(phys, flags).into();
                0
            }
            Err(e) => fail(CALL, e),
        }
    })
}

/// As pfn_virt_to_pfn_t, writing the byte handle of `addr` itself to `*out`. Returns -ERANGE
/// when the physical address is at or above 2^56 (a byte handle cannot name it), or is
/// physical byte 0 registered without flags (the null handle).
///
/// # Safety
/// `out` is NULL or points to a writable pfn_phys_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_virt_to_phys(addr: *const c_void, out: *mut pfn_phys_t) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_virt_to_phys";
        let Some(out) = out.as_mut() else {
            return invalid(CALL, format_args!("out is NULL"));
        };
        match setup_guard(|| space::virt_to_phys(addr as usize)) {
            Ok((phys, flags)) => {
                let val = phys | (flags & FLAGS_MASK);
                if phys > PFN_PHYS_ADDR_MASK || val == 0 {
                    crate::errmsg::set(format_args!(
                        "physical {phys:#x} cannot be named by a byte handle (below 2^56, not \
                         0 without flags)"
                    ));
                    return fail(CALL, Error::Os(libc::ERANGE));
                }
                *out = pfn_phys_t { val };
                0
            }
            Err(e) => fail(CALL, e),
        }
    })
}
