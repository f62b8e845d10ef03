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
