//! Page descriptors (the memmap): registration with one, pfn_t <-> descriptor, references.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::ptr;

use super::device::{device, pfn_device, pfn_resource};
use super::encoding::pfn_t;
use super::{fail, ffi_boundary, ffi_call, invalid, null_errno, setup_guard, status};
use crate::encoding::{PAGE_SHIFT, PAGE_SIZE};
use crate::error::Error;
use crate::memmap::{self, Placement};
use crate::space;

/// pfn_register_range_memmap: the descriptors live in memory the library maps (zeroed, freed
/// after the range is unregistered).
pub const PFN_MEMMAP_DRAM: u32 = 0;
/// pfn_register_range_memmap: the descriptors live at the head of the range itself (the
/// kernel's vmem_altmap): its first pfn_memmap_reserved_bytes() bytes hold them, so that their
/// flags and data persist with the range's bytes; those frames are not translatable.
pub const PFN_MEMMAP_IN_RANGE: u32 = 1;
/// Bytes of one page descriptor: the memmap costs 16 bytes per 4 KiB frame (0.39 %).
pub const PFN_PAGE_BYTES: u32 = 16;
/// The bits of pfn_page.flags that belong to the caller (bits 0..23). Bits 24..31 are reserved
/// for the library: it leaves them zero today; do not set them.
pub const PFN_PAGE_FLAGS_USER: u32 = (1u32 << 24) - 1;

/// A page descriptor (the kernel's `struct page`, cut to 16 bytes): one per translatable
/// frame of a range registered with pfn_register_range_memmap. Sizes: 16 bytes per 4 KiB frame
/// (the kernel's is 64).
///
/// - `refcount`: a reference count, changed only by pfn_get_page / pfn_put_page (atomically);
///   read it with pfn_page_ref_count. A nonzero count makes pfn_unregister_range and
///   pfn_device_free refuse with -EBUSY (see there). It starts at zero whenever the range is
///   registered.
/// - `flags`: bits PFN_PAGE_FLAGS_USER are the caller's (the library never reads or writes
///   them); the others are reserved.
/// - `data`: the caller's own word (the library never reads or writes it).
///
/// In a PFN_MEMMAP_DRAM memmap `flags` and `data` start at zero; in a PFN_MEMMAP_IN_RANGE one
/// they keep whatever the range's memory holds (they persist with it). Change `flags` and
/// `data` as you would any shared memory (atomics when threads race).
///
/// Lifetime: a descriptor, and the frame address it yields, stay valid while the caller holds
/// a kmap of the frame's range, a read section that found the range, or a pin of the range
/// (pfn_pin); after an unregister has returned they are gone. While an unregister waits for
/// the range's pins, the descriptors still answer every call by descriptor (pfn_page_to_pfn_t,
/// pfn_page_address, pfn_get_page, pfn_put_page, pfn_page_ref_count), though lookups by pfn
/// (pfn_t_to_page, kmaps, new pins) already miss the range.
#[repr(C)]
pub struct pfn_page {
    pub refcount: u32,
    pub flags: u32,
    pub data: u64,
}
const _: () = {
    assert!(std::mem::size_of::<pfn_page>() == PFN_PAGE_BYTES as usize);
    assert!(std::mem::size_of::<pfn_page>() == std::mem::size_of::<memmap::Page>());
    assert!(std::mem::offset_of!(pfn_page, flags) == std::mem::offset_of!(memmap::Page, flags));
    assert!(std::mem::offset_of!(pfn_page, data) == std::mem::offset_of!(memmap::Page, data));
};

fn placement(memmap: u32) -> Option<Placement> {
    match memmap {
        PFN_MEMMAP_DRAM => Some(Placement::Dram),
        PFN_MEMMAP_IN_RANGE => Some(Placement::InRange),
        _ => None,
    }
}

/// Registers physical range `res` (owned by `dev`) mapped at `base`, as
/// devm_register_kmap_pfn_range does, with a page descriptor (struct pfn_page) for every
/// translatable frame. `memmap` says where the descriptors live:
/// - PFN_MEMMAP_DRAM: memory the library maps (16 bytes per frame, zeroed; freed after the
///   range is unregistered); every frame of the range is translatable.
/// - PFN_MEMMAP_IN_RANGE: the head of the range itself (the kernel's vmem_altmap): its first
///   pfn_memmap_reserved_bytes(size, PFN_MEMMAP_IN_RANGE) bytes hold the descriptors of the
///   frames after them; those reserved frames are not translatable (kmap and pfn_t_to_page
///   of them fail with ENXIO) and belong to the range (no other range may overlap them). The
///   descriptors' flags and data are kept as the memory holds them (they persist with it);
///   their reference counts are set to zero, which writes the reserved bytes.
///
/// Reverse translation (pfn_virt_to_pfn_t) reports the range's frames with PFN_DEV | PFN_MAP
/// (an address in the reserved head included: it names a frame of the range, which kmap and
/// the lookups by pfn_t then refuse), and pfn_t_to_page finds the descriptor of a pfn_t carrying PFN_MAP (or no PFN_DEV).
/// Unregister as any range (pfn_unregister_range with `res->start`, or pfn_device_free).
///
/// Returns 0, or:
/// -EINVAL: as devm_register_kmap_pfn_range, or `memmap` is neither value, or an in-range
///          memmap would leave no frame to translate (a range of one frame);
/// -EBUSY:  as devm_register_kmap_pfn_range, or the in-range memmap's memory already holds
///          another range's memmap (two in-range memmaps sharing memory). Other ranges may
///          share the memory of an in-range memmap, as ranges may share virtual memory in
///          general: a kmap through such a range then reads and writes the descriptors;
///          do not.
/// -ENOMEM.
/// Thread rules: any thread.
///
/// # Safety
/// `res` is NULL or points to a readable pfn_resource; with PFN_MEMMAP_IN_RANGE, `base` maps
/// the range's memory writable.
#[no_mangle]
pub unsafe extern "C" fn pfn_register_range_memmap(
    dev: *mut pfn_device,
    res: *const pfn_resource,
    base: *mut c_void,
    memmap: u32,
) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_register_range_memmap";
        let Some(res) = res.as_ref() else {
            return invalid(CALL, format_args!("res is NULL"));
        };
        let Some(place) = placement(memmap) else {
            return invalid(
                CALL,
                format_args!(
                    "memmap {memmap} is neither PFN_MEMMAP_DRAM (0) nor PFN_MEMMAP_IN_RANGE (1)"
                ),
            );
        };
        match device(dev) {
            Ok(d) => status(
                CALL,
                d.register_memmap(res.start, res.end, base as usize, place),
            ),
            Err(e) => fail(CALL, e),
        }
    })
}

/// Bytes at the head of a range of `size` bytes that a memmap placed `memmap` takes: for
/// PFN_MEMMAP_IN_RANGE, whole frames enough to describe every frame after them (the first
/// translatable byte is then `res->start` plus this); 0 for PFN_MEMMAP_DRAM.
///
/// Returns the bytes (>= 0), or -EINVAL when `size` is 0 or not a page multiple, `memmap` is
/// neither value, or an in-range memmap would leave no frame to translate.
#[no_mangle]
pub extern "C" fn pfn_memmap_reserved_bytes(size: u64, memmap: u32) -> i64 {
    ffi_boundary!(-i64::from(libc::ENOTRECOVERABLE), {
        const CALL: &str = "pfn_memmap_reserved_bytes";
        if size == 0 || size % PAGE_SIZE != 0 {
            return i64::from(invalid(
                CALL,
                format_args!("size {size:#x} is not a positive multiple of the page size"),
            ));
        }
        let frames = size >> PAGE_SHIFT;
        match placement(memmap) {
            Some(Placement::Dram) => 0,
            Some(Placement::InRange) if memmap::reserved_frames(frames) < frames => {
                (memmap::reserved_frames(frames) << PAGE_SHIFT) as i64
            }
            Some(Placement::InRange) => i64::from(invalid(
                CALL,
                format_args!("a range of one frame has no frame left beside its own memmap"),
            )),
            None => i64::from(invalid(
                CALL,
                format_args!("memmap {memmap} is not a placement"),
            )),
        }
    })
}

/// The page descriptor of frame `pfn` (the kernel's pfn_t_to_page): O(1) whatever the number
/// of ranges, no lock, no shared write.
///
/// Returns the descriptor, or NULL with errno: EINVAL when `pfn` has no page
/// (pfn_t_has_page() is false: PFN_DEV without PFN_MAP) or has PFN_SG_CHAIN set; ENXIO when no
/// registered range holds the frame, or its range has no memmap (registered without one, or
/// the frame holds an in-range memmap); ENOMEM / EAGAIN as for a thread's first kmap.
/// Lifetime: see struct pfn_page (valid while a kmap, section or pin holds the range). The
/// lookup misses (ENXIO) once an unregister of the range has begun, pin or no pin: a pin
/// holder takes the descriptor with pfn_pin_frame.
/// Thread rules: any thread. Async-signal-safe once the thread is set up.
#[no_mangle]
pub extern "C" fn pfn_t_to_page(pfn: pfn_t) -> *mut pfn_page {
    match space::pfn_to_page_fast(pfn.into()) {
        Some(p) => p as *mut pfn_page,
        None => to_page_slow(pfn, "pfn_t_to_page"),
    }
}

#[inline(never)]
fn to_page_slow(pfn: pfn_t, call: &str) -> *mut pfn_page {
    ffi_boundary!(ptr::null_mut(), {
        match setup_guard(|| space::pfn_to_page(pfn.into())) {
            Ok(p) => p as *mut pfn_page,
            Err(e) => null_errno(call, e),
        }
    })
}

/// The seed's name for pfn_t_to_page (same function).
#[no_mangle]
pub extern "C" fn __pfn_t_to_page(pfn: pfn_t) -> *mut pfn_page {
    match space::pfn_to_page_fast(pfn.into()) {
        Some(p) => p as *mut pfn_page,
        None => to_page_slow(pfn, "__pfn_t_to_page"),
    }
}

/// The frame that descriptor `page` describes, with PFN_DEV | PFN_MAP (the kernel's
/// page_to_pfn_t): O(1), no lock. Any pointer may be passed: one that is not a descriptor of
/// a registered range's memmap is refused, never dereferenced.
///
/// Returns the pfn_t, or the value 0 (no frame has it: the flags are always set on success)
/// with errno EINVAL when `page` is NULL or no descriptor (also one inside a descriptor, or of
/// a range unregistered since, until its memory is used again: a pointer kept past the
/// unregister may then name a descriptor of whatever memmap now lies there, as any stale
/// pointer may); ENOMEM / EAGAIN as for a thread's first kmap.
/// Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_page_to_pfn_t(page: *const pfn_page) -> pfn_t {
    ffi_boundary!(pfn_t { val: 0 }, {
        match setup_guard(|| space::page_of(page as usize)) {
            Ok(of) => of.pfn.into(),
            Err(e) => {
                null_errno::<u8>("pfn_page_to_pfn_t", e);
                pfn_t { val: 0 }
            }
        }
    })
}

/// The address of the frame that descriptor `page` describes (the kernel's page_address): the
/// range's `base` plus the frame's offset, as a kmap of it would return. Valid while the
/// caller holds the range (see struct pfn_page); no kmap is taken.
///
/// Returns the address, or NULL with errno as pfn_page_to_pfn_t.
/// Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_page_address(page: *const pfn_page) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match setup_guard(|| space::page_of(page as usize)) {
            Ok(of) => of.addr as *mut c_void,
            Err(e) => null_errno("pfn_page_address", e),
        }
    })
}

/// The address of frame `pfn` without taking a kmap (the kernel's pfn_t_to_virt), for a frame
/// that has a page (pfn_t_has_page()); the range need not have a memmap. The address stays
/// valid while the caller holds the range by a kmap, a section or a pin; the lookup itself
/// misses (ENXIO) once an unregister of the range has begun, pin or no pin (see
/// pfn_pin_frame).
///
/// Returns the address, or NULL with errno: EINVAL when `pfn` has PFN_DEV without PFN_MAP
/// (use kmap_atomic_pfn_t) or PFN_SG_CHAIN; ENXIO when no registered range holds the frame;
/// ENOMEM / EAGAIN as for a thread's first kmap.
/// Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_t_to_virt(pfn: pfn_t) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match setup_guard(|| space::pfn_to_virt(pfn.into())) {
            Ok(a) => a as *mut c_void,
            Err(e) => null_errno("pfn_t_to_virt", e),
        }
    })
}

/// Takes a reference on descriptor `page` (the kernel's get_page). The caller holds the range
/// (a kmap, section or pin). While any descriptor of a range has a reference, unregistering
/// the range (or freeing its device) refuses with -EBUSY.
///
/// Returns the new count (> 0), or -EINVAL when `page` is not a descriptor (as
/// pfn_page_to_pfn_t), -EOVERFLOW when the count is INT_MAX (nothing changes).
/// Thread rules: any thread; atomic.
#[no_mangle]
pub extern "C" fn pfn_get_page(page: *mut pfn_page) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_get_page";
        match setup_guard(|| space::page_checked(page as usize)) {
            Ok(p) => match memmap::get(p) {
                Some(n) => n as c_int,
                None => fail(
                    CALL,
                    crate::errmsg::with(
                        Error::Overflow,
                        format_args!("the reference count is at INT_MAX"),
                    ),
                ),
            },
            Err(e) => fail(CALL, e),
        }
    })
}

/// Drops a reference on descriptor `page` (the kernel's put_page), taken by pfn_get_page on
/// any thread.
///
/// Returns the count left (>= 0), or -EINVAL when `page` is not a descriptor (as
/// pfn_page_to_pfn_t) or its count is already zero (nothing changes).
/// Thread rules: any thread; atomic.
#[no_mangle]
pub extern "C" fn pfn_put_page(page: *mut pfn_page) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_put_page";
        match setup_guard(|| space::page_checked(page as usize)) {
            Ok(p) => match memmap::put(p) {
                Some(n) => n as c_int,
                None => invalid(
                    CALL,
                    format_args!("the reference count of {page:p} is already zero"),
                ),
            },
            Err(e) => fail(CALL, e),
        }
    })
}

/// The reference count of descriptor `page` (the kernel's page_ref_count).
///
/// Returns the count (>= 0), or -EINVAL when `page` is not a descriptor (as
/// pfn_page_to_pfn_t).
/// Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_page_ref_count(page: *const pfn_page) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        match setup_guard(|| space::page_checked(page as usize)) {
            Ok(p) => p.refcount.load(std::sync::atomic::Ordering::Acquire) as c_int,
            Err(e) => fail("pfn_page_ref_count", e),
        }
    })
}

/// Diagnostics: the memmaps of the registered ranges. Writes (each pointer may be NULL) the
/// frames they describe, the bytes the library mapped for PFN_MEMMAP_DRAM memmaps (16 per
/// frame, rounded up to whole pages per range) and the bytes PFN_MEMMAP_IN_RANGE memmaps take
/// at the head of their ranges. Bytes per frame is (*dram_bytes + *in_range_bytes) / *frames.
/// Only live ranges count: the memmap of a range being unregistered (still answering calls by
/// descriptor while its pins are held) is not included.
///
/// Returns 0 (it cannot fail).
/// Thread rules: any thread; takes the registration lock briefly.
///
/// # Safety
/// Each pointer is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_memmap_usage(
    frames: *mut u64,
    dram_bytes: *mut u64,
    in_range_bytes: *mut u64,
) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        let (f, d, r) = space::memmap_usage();
        for (p, v) in [(frames, f), (dram_bytes, d), (in_range_bytes, r)] {
            if let Some(p) = p.as_mut() {
                *p = v;
            }
        }
        0
    })
}
