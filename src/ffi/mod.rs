//! The C ABI: the only layer that takes raw pointers from callers, catches panics and sets
//! errno. Every exported body runs inside `ffi_boundary!`, so a panic (a bug) becomes an error
//! return with errno `ENOTRECOVERABLE` instead of unwinding into C. Calls that may block or
//! reach a cancellation point run with cancellation held off (`no_cancel`), so that
//! pthread_cancel never unwinds through Rust frames (which would abort the process); a pending
//! cancel acts at the caller's next cancellation point.

use std::ffi::c_int;

pub mod daxdev;
pub mod device;
pub mod encoding;
mod handles;
pub mod kmap;
pub mod pages;
pub mod persist;
pub mod phys;
pub mod pin;
pub mod pmem;
pub mod section;
pub mod sg;
pub mod version;

/// Runs `$body`; if it panics, evaluates `$on_panic` instead (after setting errno and the
/// error message).
macro_rules! ffi_boundary {
    ($on_panic:expr, $body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(_) => {
                $crate::ffi::caught_panic();
                $on_panic
            }
        }
    };
}
pub(crate) use ffi_boundary;

/// `ffi_boundary!` for calls that may take a lock, block or do I/O: cancellation is held off
/// while the body runs (see `no_cancel`), so neither deferred nor asynchronous cancellation
/// can stop the thread with a lock held or unwind through Rust frames.
macro_rules! ffi_call {
    ($on_panic:expr, $body:block) => {
        $crate::ffi::ffi_boundary!($on_panic, { $crate::ffi::no_cancel(|| $body) })
    };
}
pub(crate) use ffi_call;

extern "C" {
    fn pthread_setcancelstate(state: c_int, old: *mut c_int) -> c_int;
}
const PTHREAD_CANCEL_DISABLE: c_int = 1;

/// Runs `f` with the calling thread's cancellation disabled (deferred and asynchronous), then
/// restores the state it had.
pub(crate) fn no_cancel<T>(f: impl FnOnce() -> T) -> T {
    let mut old: c_int = 0;
    // SAFETY: valid out-pointer.
    unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) };
    struct Restore(c_int);
    impl Drop for Restore {
        fn drop(&mut self) {
            let mut ignored: c_int = 0;
            // SAFETY: valid out-pointer; restores what the caller had.
            unsafe { pthread_setcancelstate(self.0, &mut ignored) };
        }
    }
    let _restore = Restore(old);
    f()
}

/// Runs `f` with cancellation held off when the calling thread is not set up yet (its set-up
/// takes a lock); a set-up thread's reader calls take none, and pay nothing.
pub(crate) fn setup_guard<T>(f: impl FnOnce() -> T) -> T {
    if crate::rcu::current().is_some() {
        f()
    } else {
        no_cancel(f)
    }
}

/// Runs once at load (see `lib.rs`).
pub(crate) fn on_load() {
    handles::install_fork_handlers();
}

pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

#[cold]
#[inline(never)]
pub(crate) fn caught_panic() {
    crate::errmsg::set(format_args!(
        "an internal error (a bug in libpfn) was caught at the boundary; please report it"
    ));
    crate::errmsg::finish("libpfn", crate::Error::Os(libc::ENOTRECOVERABLE));
    set_errno(libc::ENOTRECOVERABLE);
}

/// The negative errno of `e` from the call named `call`, with the thread's error message
/// finished (pfn_errormsg).
#[cold]
pub(crate) fn fail(call: &str, e: crate::Error) -> c_int {
    crate::errmsg::finish(call, e);
    -e.errno()
}

/// `fail` of an invalid argument, described by `args`.
#[cold]
pub(crate) fn invalid(call: &str, args: std::fmt::Arguments<'_>) -> c_int {
    fail(call, crate::errmsg::invalid(args))
}

/// 0, or `fail(call, e)`.
pub(crate) fn status(call: &str, result: crate::Result<()>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => fail(call, e),
    }
}

/// NULL with errno set to `e`'s, from the call named `call`, with the message finished.
#[cold]
pub(crate) fn null_errno<T>(call: &str, e: crate::Error) -> *mut T {
    crate::errmsg::finish(call, e);
    set_errno(e.errno());
    std::ptr::null_mut()
}

/// `null_errno` of an invalid argument, described by `args`.
#[cold]
pub(crate) fn null_invalid<T>(call: &str, args: std::fmt::Arguments<'_>) -> *mut T {
    null_errno(call, crate::errmsg::invalid(args))
}

/// Writes a misuse report and aborts, when the debug mode (PFN_DEBUG) is on.
#[cold]
pub(crate) fn misuse(what: &str) {
    if crate::rcu::debug() {
        crate::rcu::report(format_args!("misuse: {what} (PFN_DEBUG is set: aborting)"));
        std::process::abort();
    }
}
