//! The C ABI: the only layer that takes raw pointers from callers, catches panics and sets
//! errno. Every exported body runs inside `ffi_boundary!`, so a panic (a bug) becomes an error
//! return with errno `ENOTRECOVERABLE` instead of unwinding into C.

use std::ffi::{c_char, c_int, CStr};

pub mod device;
pub mod encoding;
mod handles;
pub mod kmap;
pub mod persist;
pub mod pmem;
pub mod section;
pub mod version;

/// Runs `$body`; if it panics, evaluates `$on_panic` instead (after setting errno).
macro_rules! ffi_boundary {
    ($on_panic:expr, $body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(_) => {
                $crate::ffi::set_errno(::libc::ENOTRECOVERABLE);
                $on_panic
            }
        }
    };
}
pub(crate) use ffi_boundary;

/// Keeps the handle tables usable in a child after fork(): they are held across the fork, so
/// no other thread can leave one locked there. Installed once, with the first handle.
pub(crate) fn fork_safe() {
    use std::cell::RefCell;
    use std::sync::OnceLock;

    type Guards = (
        Option<std::sync::MutexGuard<'static, handles::Table<crate::space::Device>>>,
        Option<std::sync::MutexGuard<'static, handles::Table<crate::pmem::PmemFile>>>,
    );
    thread_local! {
        static HELD: RefCell<Guards> = const { RefCell::new((None, None)) };
    }
    extern "C" fn prepare() {
        let guards = (
            Some(device::DEVICES.lock_for_fork()),
            Some(pmem::MAPS.lock_for_fork()),
        );
        HELD.with(|h| *h.borrow_mut() = guards);
    }
    extern "C" fn release() {
        HELD.with(|h| *h.borrow_mut() = (None, None));
    }
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: plain functions with the required signature.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
    });
}

pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// 0 or the negative errno of `result`.
pub(crate) fn status(result: crate::Result<()>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => -e.errno(),
    }
}

/// A C string argument that may be NULL, as owned UTF-8 (invalid bytes replaced).
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn opt_string(s: *const c_char) -> Option<String> {
    if s.is_null() {
        None
    } else {
        Some(CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}
