//! Settings read from the environment: tests and benchmarks force paths with `PFN_*`
//! variables. Each is read once by its user. Like glibc's `secure_getenv`, they are ignored in
//! setuid programs (AT_SECURE), whose environment belongs to the caller and must not decide
//! how data is made durable.
//! Reading allocates nothing and takes no lock, so it may run before `main`.

use std::ffi::{c_char, CStr};

/// Calls `f` with the value of variable `name` (at most 63 bytes long), if set.
pub fn with_var<T>(name: &str, f: impl FnOnce(Option<&[u8]>) -> T) -> T {
    let mut cname = [0u8; 64];
    if name.len() >= cname.len() || name.as_bytes().contains(&0) {
        return f(None);
    }
    cname[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a NUL-terminated name; the value is a NUL-terminated string that stays valid
    // while nobody changes the environment, and `f` does not.
    unsafe {
        if libc::getauxval(libc::AT_SECURE) != 0 {
            return f(None);
        }
        let v = libc::getenv(cname.as_ptr() as *const c_char);
        if v.is_null() {
            f(None)
        } else {
            f(Some(CStr::from_ptr(v).to_bytes()))
        }
    }
}

/// Whether a switch variable is on: set to anything but "" or "0".
pub fn is_on(value: Option<&[u8]>) -> bool {
    matches!(value, Some(v) if !v.is_empty() && v != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_variables_and_switches() {
        assert!(with_var("PATH", |v| v.is_some()));
        assert!(with_var("PFN_SURELY_NOT_SET_ANYWHERE", |v| v.is_none()));
        assert!(with_var(&"X".repeat(100), |v| v.is_none()));
        assert!(with_var("A\0B", |v| v.is_none()));
        assert!(is_on(Some(b"1")) && is_on(Some(b"yes")));
        assert!(!is_on(None) && !is_on(Some(b"")) && !is_on(Some(b"0")));
    }
}
