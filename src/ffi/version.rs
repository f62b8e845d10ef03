use std::ffi::c_char;

static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The version of the library running, "MAJOR.MINOR.PATCH" (e.g. "0.1.0"): a static string,
/// never freed. It has the form of PFN_VERSION_STRING, the version of the header a program
/// was built with, so `strcmp(pfn_version(), PFN_VERSION_STRING) == 0` tells whether the two
/// are the same release (PFN_VERSION_MAJOR is also the soname's number: a library with
/// another major version is not loaded in its place).
#[no_mangle]
pub extern "C" fn pfn_version() -> *const c_char {
    VERSION.as_ptr() as *const c_char
}

/// Bytes of translation-table memory in use now (diagnostics; the range records and indexes
/// that registration also keeps are not counted). Takes the registration lock briefly.
#[no_mangle]
pub extern "C" fn pfn_table_bytes() -> u64 {
    super::ffi_call!(0, { crate::space::table_bytes() as u64 })
}

/// The message of the calling thread's last failing libpfn call: the call, the condition and
/// the values, e.g. "devm_register_kmap_pfn_range: end + 1 = 0x10001001 is not page-aligned
/// (end is the last byte, inclusive: start + size - 1)". Every exported call that fails sets
/// it (also the ones that return only -EINVAL or NULL; the header-inline functions do not); a
/// call that succeeds leaves it as it was. A static per-thread string, never NULL (empty
/// before any failure), valid until the thread's next failing call. Like errno, a signal
/// handler whose call fails overwrites it. One exception: on a thread that has never been set
/// up (no kmap, section, registration or pfn_thread_init yet), the persistence calls, which
/// never set a thread up, leave their messages in one buffer shared by all such threads.
/// Async-signal-safe. (PMDK's pmem_errormsg convention.)
#[no_mangle]
pub extern "C" fn pfn_errormsg() -> *const c_char {
    super::ffi_boundary!(c"".as_ptr(), { crate::errmsg::current() as *const c_char })
}
