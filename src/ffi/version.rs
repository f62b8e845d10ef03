use std::ffi::c_char;

static VERSION: &str = concat!("libpfn ", env!("CARGO_PKG_VERSION"), "\0");

/// The library's name and version, e.g. "libpfn 0.1.0": a static string, never freed.
/// It matches PFN_VERSION_STRING of the header the program was built with when the two agree.
#[no_mangle]
pub extern "C" fn pfn_version() -> *const c_char {
    VERSION.as_ptr() as *const c_char
}

/// Bytes of translation-table memory in use now (diagnostics; the range records and indexes
/// that registration also keeps are not counted). Takes the registration lock briefly.
#[no_mangle]
pub extern "C" fn pfn_table_bytes() -> u64 {
    super::ffi_boundary!(0, { crate::space::table_bytes() as u64 })
}
