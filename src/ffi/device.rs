//! Devices (owners of ranges) and range registration.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use super::handles::Handles;
use super::{ffi_boundary, opt_string, status};
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

pub(crate) static DEVICES: Handles<Device> = Handles::new();

/// Creates a device. `name` may be NULL; it is copied.
///
/// Returns the device, to be freed with pfn_device_free, or NULL with errno ENOMEM.
/// Thread rules: any thread.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pfn_device_new(name: *const c_char) -> *mut pfn_device {
    ffi_boundary!(ptr::null_mut(), {
        super::fork_safe();
        let name = opt_string(name).unwrap_or_default();
        DEVICES.add(Device::new(&name)) as *mut pfn_device
    })
}

/// Unregisters every range of `dev` (waiting, once, until no kmap of any of them is held by any
/// thread), then frees `dev`. NULL is a no-op.
///
/// Returns 0; -EINVAL when `dev` is not a live device (already freed, or never one);
/// -EDEADLK when the calling thread holds a kmap (it would wait for itself): nothing is
/// removed and `dev` stays valid.
#[no_mangle]
pub extern "C" fn pfn_device_free(dev: *mut pfn_device) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        if dev.is_null() {
            return 0;
        }
        let Some(device) = DEVICES.get(dev as usize) else {
            return -libc::EINVAL;
        };
        if let Err(e) = device.unregister_all() {
            return -e.errno();
        }
        // A range registered by a racing call after this point is removed (again waiting for
        // readers) when the last reference to the device drops.
        match DEVICES.remove(dev as usize) {
            Some(_) => 0,
            None => -libc::EINVAL,
        }
    })
}

/// Registers physical range `res` (owned by `dev`) as mapped at virtual address `base`: from
/// now on, kmap_atomic_pfn_t of any frame in it returns `base + (phys - res->start)`. The
/// memory at `base` must stay mapped until the range is unregistered (pfn_unregister_range or
/// pfn_device_free). `*res` is copied; no pointer to it is kept.
///
/// Returns 0, or:
/// -EINVAL: `dev` not a live device, `res` or `base` NULL, `res->start`, `res->end + 1` or
///          `base` not page-aligned, `res->end < res->start`, or base + size past the end of
///          the address space;
/// -EBUSY:  the range overlaps a registered range (of any device);
/// -ENOMEM.
/// Thread rules: any thread, also one that holds kmaps.
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
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        let Some(device) = DEVICES.get(dev as usize) else {
            return -libc::EINVAL;
        };
        let Some(res) = res.as_ref() else {
            return -libc::EINVAL;
        };
        if base.is_null() {
            return -libc::EINVAL;
        }
        status(device.register(res.start, res.end, base as usize))
    })
}

/// Unregisters the range that `dev` registered at physical address `start`. It disappears from
/// lookups at once; the call then waits until every kmap that could see it (on any thread) has
/// been released, so when it returns the memory may be unmapped.
///
/// Returns 0, or -EINVAL when `dev` is not a live device; -ENOENT when `dev` registered no range
/// at `start`; -EDEADLK when the calling thread holds a kmap (nothing is removed).
#[no_mangle]
pub extern "C" fn pfn_unregister_range(dev: *mut pfn_device, start: u64) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        match DEVICES.get(dev as usize) {
            Some(device) => status(device.unregister(start)),
            None => -libc::EINVAL,
        }
    })
}
