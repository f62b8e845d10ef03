//! The C ABI: the only layer that takes raw pointers from callers, catches panics and sets
//! errno. Every exported body runs inside `ffi_boundary!`, so a panic (a bug) becomes an error
//! return with errno `ENOTRECOVERABLE` instead of unwinding into C.

use std::ffi::{c_char, c_int, CStr};

pub mod device;
pub mod encoding;
mod handles;
pub mod kmap;
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
