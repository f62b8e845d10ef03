//! Devices (owners of ranges) and range registration.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use super::handles::Handles;
use super::{fail, ffi_call, invalid, null_errno, status};
use crate::encoding::DEV;
use crate::error::Error;
use crate::space::Device;

/// An owner of ranges (the seed's `struct device`). Opaque; from pfn_device_new.
pub struct pfn_device {
    _private: [u8; 0],
}

/// A physical range (the seed's `struct resource`).
#[repr(C)]
pub struct pfn_resource {
    /// First byte; page-aligned.
    pub start: u64,
    /// Last byte, inclusive: start + size - 1 (so end + 1 is page-aligned).
    pub end: u64,
    /// A label for the caller's own use; may be NULL; the library reads nothing through it and
    /// keeps no pointer to it.
    pub name: *const c_char,
}

pub(crate) static DEVICES: Handles<Device> = Handles::new(1);

/// The live device a handle names.
pub(crate) fn device(dev: *const pfn_device) -> crate::Result<super::handles::Ref<Device>> {
    DEVICES.get(dev as usize).map_err(|e| handle_error(dev, e))
}

/// `e`, described when it is the refusal of a dead handle.
fn handle_error(dev: *const pfn_device, e: Error) -> Error {
    match e {
        Error::Invalid => crate::errmsg::invalid(format_args!(
            "{dev:p} is not a live device (NULL, freed, or never one)"
        )),
        e => e,
    }
}

/// Creates a device. `name` may be NULL; it is not kept (kept for the seed's signature).
///
/// Returns the device, to be freed with pfn_device_free, or NULL with errno ENOMEM.
/// Device handles are never reused: after pfn_device_free, the old value stays invalid (EINVAL)
/// even when a new device is created.
/// Thread rules: any thread.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pfn_device_new(name: *const c_char) -> *mut pfn_device {
    let _ = name;
    ffi_call!(ptr::null_mut(), {
        match Device::new().and_then(|d| DEVICES.add(d)) {
            Ok(h) => h as *mut pfn_device,
            Err(e) => null_errno("pfn_device_new", e),
        }
    })
}

/// Unregisters every range of `dev` (waiting, once, until no kmap or section that could see
/// any of them is held by any thread, then until every pin of them is released), then frees
/// `dev`. NULL is a no-op. When two calls free the same device at once, one frees it and the
/// other returns -EINVAL; a registration racing with the free either completes before it (and
/// is unregistered by it) or fails with -EINVAL.
///
/// Returns 0; -EINVAL when `dev` is not a live device (already freed, or never one);
/// -EDEADLK when the calling thread holds a kmap or read section, or a pin it took of one of
/// the device's ranges (also one being unregistered) that nobody released (it would wait for
/// itself); -EBUSY when a page descriptor of one of its ranges has a nonzero reference count
/// (pfn_get_page); on these errors nothing is removed and `dev` stays valid; -ENOMEM /
/// -EAGAIN as for a thread's first use.
/// Not a cancellation point (cancellation is held off while it waits).
#[no_mangle]
pub extern "C" fn pfn_device_free(dev: *mut pfn_device) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        if dev.is_null() {
            return 0;
        }
        const CALL: &str = "pfn_device_free";
        if let Err(e) = crate::space::check_not_reading() {
            return fail(CALL, e);
        }
        // Refusals (own pins, referenced page descriptors) before the handle dies.
        if let Err(e) = device(dev).and_then(|d| d.check_kill()) {
            return fail(CALL, e);
        }
        let killed = match DEVICES.kill(dev as usize) {
            Ok(k) => k,
            Err(e) => return fail(CALL, handle_error(dev, e)),
        };
        // Waits for readers of the ranges and of the handle alike.
        let rc = status(CALL, killed.object().kill());
        drop(killed); // the grace period above covers lookups of the handle
        rc
    })
}

/// Registers physical range `res` (owned by `dev`) as mapped at virtual address `base`: from
/// now on, kmap_atomic_pfn_t of any frame in it returns `base + (phys - res->start)`. The
/// memory at `base` must stay mapped until the range is unregistered (pfn_unregister_range or
/// pfn_device_free). `*res` is copied; no pointer to it is kept. Reverse translation
/// (pfn_virt_to_pfn_t) reports its frames with PFN_DEV.
///
/// Returns 0, or:
/// -EINVAL: `dev` not a live device (freed, or being freed), `res` or `base` NULL,
///          `res->start`, `res->end + 1` or `base` not page-aligned, `res->end < res->start`,
///          or base + size past the end of the address space;
/// -EBUSY:  the range overlaps a registered range (of any device), including one still being
///          unregistered, or its memory lies in a pfn_pmem mapping being unmapped;
/// -ENOMEM.
/// Thread rules: any thread, also one that holds kmaps or sections.
///
/// # Safety
/// `res` is NULL or points to a readable pfn_resource. Handles are checked; other pointers
/// cannot be.
#[no_mangle]
pub unsafe extern "C" fn devm_register_kmap_pfn_range(
    dev: *mut pfn_device,
    res: *const pfn_resource,
    base: *mut c_void,
) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "devm_register_kmap_pfn_range";
        let Some(res) = res.as_ref() else {
            return invalid(CALL, format_args!("res is NULL"));
        };
        match device(dev) {
            Ok(d) => status(CALL, d.register(res.start, res.end, base as usize)),
            Err(e) => fail(CALL, e),
        }
    })
}

/// Registers `size` bytes mapped at `base` in physical space that no other range uses (the
/// kernel's request_free_mem_region): the library picks the start, aligned to `align` (a power
/// of two; 0 picks the largest power of two not above `size`, at most 1 GiB) and below 2^56
/// (so byte handles can name every byte), writes it to `*start` and registers the range as
/// devm_register_kmap_pfn_range would. The search and the registration are one step: racing
/// registrations never overlap. Use it for handles that are not stored on media; handles that
/// are stored need the same base on every run (see pfn_pmem_register and README).
///
/// Returns 0, or -EINVAL (`dev` not live, `base` or `start` NULL or `base` unaligned, `size` 0
/// or not a page multiple, `align` not a power of two), -ENOSPC (no free range that large),
/// -EBUSY (`base` lies in a mapping being unmapped), -ENOMEM. `*start` is written only on
/// success.
///
/// # Safety
/// `start` is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_register_free(
    dev: *mut pfn_device,
    size: u64,
    align: u64,
    base: *mut c_void,
    start: *mut u64,
) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_register_free";
        if start.is_null() {
            return invalid(CALL, format_args!("start is NULL"));
        }
        match device(dev).and_then(|d| d.register_free(size, align, base as usize, DEV)) {
            Ok(s) => {
                *start = s;
                0
            }
            Err(e) => fail(CALL, e),
        }
    })
}

/// Unregisters the range that `dev` registered at physical address `start`. It disappears from
/// lookups at once (new kmaps, lookups and pins miss it); the call then waits until every
/// kmap and read section that could see it (on any thread) has ended, then until every pin of
/// it (pfn_pin) has been released, however long that takes, so when it returns the memory
/// may be unmapped.
///
/// Returns 0, or -EINVAL when `dev` is not a live device; -ENOENT when `dev` has no range at
/// `start`, including one another call is unregistering (this call then returns only after
/// that call's grace period and the release of that range's pins: the memory may be unmapped
/// after either returns); -EDEADLK when the calling thread holds a kmap or read section, or a
/// pin it took of the range that nobody released (also when another call is unregistering
/// it); -EBUSY when a page descriptor of the range has a nonzero reference count
/// (pfn_get_page). On every error nothing is removed.
/// Not a cancellation point (cancellation is held off while it waits).
#[no_mangle]
pub extern "C" fn pfn_unregister_range(dev: *mut pfn_device, start: u64) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_unregister_range";
        match device(dev) {
            Ok(d) => status(CALL, d.unregister(start)),
            Err(e) => fail(CALL, e),
        }
    })
}
