//! Long-lived pins on ranges (mainline's get_dev_pagemap / put_dev_pagemap).
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_uint, c_void};
use std::ptr;

use super::encoding::pfn_t;
use super::pages::pfn_page;
use super::{ffi_boundary, invalid, misuse, null_errno, setup_guard};
use crate::pin;
use crate::space;

/// A pin of a range (mainline's `struct dev_pagemap` reference). Opaque; from pfn_pin.
pub struct pfn_dev_pagemap {
    _private: [u8; 0],
}

/// Pins the registered range that holds frame `pfn` (mainline's get_dev_pagemap): until the
/// pin is released with pfn_unpin, the range stays registered and its memory in use. Unlike a
/// kmap or a section, a pin may be held for long (across blocking I/O, a queued request) and
/// belongs to no thread: any thread releases it, and it stays held when the thread that took
/// it exits. Unregistering the range (pfn_unregister_range, pfn_device_free) first makes new
/// pins of it fail, then waits until every pin of it is released; pfn_pmem_unmap refuses
/// (-EBUSY) until then. Addresses and page descriptors of the range's frames stay valid while
/// the pin is held; but once an unregister has begun, lookups by pfn (pfn_t_to_virt,
/// pfn_t_to_page, kmaps) miss the range: take the frame's address with the pin
/// (pfn_pin_frame) to use it for as long as the pin lasts. The pin covers the whole range,
/// not only `pfn`.
///
/// The value returned identifies a per-thread counter of the range: pins of one range taken
/// on one thread return the same value. Release each pin exactly once.
///
/// Returns the pin, or NULL with errno: ENXIO when no registered range holds the frame
/// (including one being unregistered); EINVAL when PFN_SG_CHAIN is set; ENOMEM when the
/// thread's pin counters cannot grow (4 KiB per 255 ranges, on the thread's first pin of a
/// range in that group); EOVERFLOW when over half a million ranges are registered at once (pins
/// count ranges by slot) or the thread's kmaps and sections are nested too deep; EAGAIN as
/// for a thread's first kmap.
/// Cost: O(1) whatever the number of ranges; no lock; in the common case it writes only the
/// calling thread's own counter (no shared cache line).
/// Thread rules: any thread. Not async-signal-safe (its first use on a range may allocate).
/// Not a cancellation point. After fork(), the child holds a copy of every pin the parent held
/// (of any thread): unregistering in the child waits for them, so release them in the child
/// (pfn_unpin from any thread) before unregistering there.
#[no_mangle]
pub extern "C" fn pfn_pin(pfn: pfn_t) -> *mut pfn_dev_pagemap {
    // The fast path cannot panic or allocate: outside the boundary, as kmap's.
    if let Some(p) = space::pin_fast(pfn.into()) {
        return p as *const pin::Cell as *mut pfn_dev_pagemap;
    }
    pin_slow(pfn)
}

#[inline(never)]
fn pin_slow(pfn: pfn_t) -> *mut pfn_dev_pagemap {
    ffi_boundary!(ptr::null_mut(), {
        match setup_guard(|| space::pin(pfn.into())) {
            Ok(p) => p as *const pin::Cell as *mut pfn_dev_pagemap,
            Err(e) => null_errno("pfn_pin", e),
        }
    })
}

/// As pfn_pin, and writes (when the call succeeds) the frame's address to `*addr` and its page
/// descriptor to `*page` (NULL when the range has no memmap, or when `pfn` has no page:
/// PFN_DEV without PFN_MAP, as pfn_t_to_page), each when not NULL, found in the
/// same lookup as the pin: they stay valid for as long as the pin is held, even after an
/// unregister of the range has begun (from then on lookups by pfn, such as pfn_t_to_virt and
/// pfn_t_to_page, miss the range, pin or no pin). Storage code that holds a pin across I/O
/// takes the address this way. On failure nothing is written.
///
/// Returns the pin, or NULL with errno as pfn_pin.
///
/// # Safety
/// `addr` and `page` are each NULL or point to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn pfn_pin_frame(
    pfn: pfn_t,
    addr: *mut *mut c_void,
    page: *mut *mut pfn_page,
) -> *mut pfn_dev_pagemap {
    ffi_boundary!(ptr::null_mut(), {
        match setup_guard(|| space::pin_frame(pfn.into())) {
            Ok((p, a, pg)) => {
                if let Some(addr) = addr.as_mut() {
                    *addr = a as *mut c_void;
                }
                if let Some(page) = page.as_mut() {
                    // As pfn_t_to_page: a pfn_t that says it has no page finds none.
                    let pfn: crate::encoding::Pfn = pfn.into();
                    *page = if pfn.has_page() {
                        pg as *mut pfn_page
                    } else {
                        ptr::null_mut()
                    };
                }
                p as *const pin::Cell as *mut pfn_dev_pagemap
            }
            Err(e) => null_errno("pfn_pin_frame", e),
        }
    })
}

/// The mainline name for pfn_pin (same function).
#[no_mangle]
pub extern "C" fn pfn_get_dev_pagemap(pfn: pfn_t) -> *mut pfn_dev_pagemap {
    pfn_pin(pfn)
}

/// Releases a pin taken by pfn_pin (mainline's put_dev_pagemap), on any thread; when it was
/// the last pin of a range being unregistered, the unregister completes. NULL is a no-op
/// (returns 0), as put_dev_pagemap(NULL) is.
///
/// Returns 0; -EINVAL when more pins are released than were taken of that counter (a pin
/// released twice): nothing changes (with PFN_DEBUG set, prints a message and aborts). `pin`
/// must be a value pfn_pin returned: any other non-NULL pointer is undefined behaviour, as
/// with free().
/// Cost: no lock; writes the pinning thread's counter only (the caller's own line when it
/// pinned itself), plus a wake-up when an unregister waits.
/// Thread rules: any thread. Async-signal-safe, with one exception: a signal handler must not
/// release a pin that its own thread took outside the handler (the thread's own count is a
/// plain load and store, which the interrupted code may be in the middle of); a handler may
/// release pins other threads took.
#[no_mangle]
pub extern "C" fn pfn_unpin(pin: *mut pfn_dev_pagemap) -> c_int {
    // SAFETY: NULL, or a counter pfn_pin returned (the caller's contract); counters are never
    // freed.
    let Some(p) = (unsafe { (pin as *const pin::Cell).as_ref() }) else {
        return 0;
    };
    if pin::unpin(p) {
        return 0;
    }
    unpin_refused(pin)
}

#[cold]
#[inline(never)]
fn unpin_refused(pin: *mut pfn_dev_pagemap) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        misuse("pfn_unpin of a pin released already");
        invalid(
            "pfn_unpin",
            format_args!("{pin:p}: more pins released than taken"),
        )
    })
}

/// The mainline name for pfn_unpin (same function).
#[no_mangle]
pub extern "C" fn pfn_put_dev_pagemap(pin: *mut pfn_dev_pagemap) -> c_int {
    pfn_unpin(pin)
}

/// Diagnostics and tests: how many unregisters (and device frees) are waiting right now for
/// pins to be released. A test can wait for it to become nonzero to know that an unregister on
/// another thread has stopped new pins and is waiting.
/// Thread rules: any thread; async-signal-safe.
#[no_mangle]
pub extern "C" fn pfn_pin_waiters() -> c_uint {
    pin::waiters()
}
