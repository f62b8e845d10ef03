//! Read sections: one lifetime guard shared by many translations.
#![allow(non_camel_case_types)]

use std::ffi::c_void;
use std::ptr;

use super::encoding::pfn_t;
use super::{ffi_boundary, set_errno};
use crate::space::{self, Block, ReadSection};

/// An open read section of the calling thread, from pfn_read_lock. Pass its address to
/// pfn_section_translate (or the header's inline pfn_section_translate_inline). `root` is the
/// translation table as the section saw it; `cache_*` the last block translated in it. Treat
/// the fields as opaque.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct pfn_section {
    pub root: usize,
    pub cache_pfn: u64,
    pub cache_pages: u64,
    pub cache_addr: usize,
}

impl pfn_section {
    const NONE: pfn_section = pfn_section {
        root: 0,
        cache_pfn: 0,
        cache_pages: 0,
        cache_addr: 0,
    };

    fn cache(&self) -> Block {
        Block {
            first_pfn: self.cache_pfn,
            pages: self.cache_pages,
            addr: self.cache_addr,
        }
    }

    fn set_cache(&mut self, b: Block) {
        self.cache_pfn = b.first_pfn;
        self.cache_pages = b.pages;
        self.cache_addr = b.addr;
    }
}

/// Opens a read section on the calling thread: until the matching pfn_read_unlock on this
/// thread, no range visible in it can finish unregistering, so every address translated in it
/// stays valid. Sections nest with each other and with kmaps; unregistering from inside one
/// returns -EDEADLK; a thread that exits closes its sections. The section sees the ranges
/// registered before it opened. Cost: like one kmap; translations in it then cost a table walk
/// and nothing else (no call when inlined).
///
/// Returns the section. On failure (errno ENOMEM, a thread's first use only) the section
/// translates nothing and pfn_read_unlock is still safe to call.
#[no_mangle]
pub extern "C" fn pfn_read_lock() -> pfn_section {
    ffi_boundary!(pfn_section::NONE, {
        match ReadSection::open() {
            Ok(section) => pfn_section {
                root: section.keep_open(),
                ..pfn_section::NONE
            },
            Err(e) => {
                set_errno(e.errno());
                pfn_section::NONE
            }
        }
    })
}

/// Closes the calling thread's innermost open read section. Addresses translated in it must no
/// longer be used. Without an open section it does nothing.
#[no_mangle]
pub extern "C" fn pfn_read_unlock() {
    ffi_boundary!((), {
        // SAFETY: the C contract: the caller stops using the section's addresses.
        unsafe { space::close_section() };
    })
}

/// Address of `pfn`'s frame (page-aligned), valid until the section `*s` is closed; no unmap
/// is needed. Remembers the block it found in `*s`. The same result as
/// pfn_section_translate_inline in the header.
///
/// Returns NULL with errno: ENXIO when no range visible in the section holds the frame;
/// EINVAL when PFN_SG_CHAIN is set or `s` is NULL.
///
/// # Safety
/// `*s` comes from pfn_read_lock on this thread and is still open.
#[no_mangle]
pub unsafe extern "C" fn pfn_section_translate(s: *mut pfn_section, pfn: pfn_t) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        let Some(s) = s.as_mut() else {
            set_errno(libc::EINVAL);
            return ptr::null_mut();
        };
        let mut cache = s.cache();
        let result = space::translate_in_section(s.root, &mut cache, pfn.into());
        s.set_cache(cache);
        match result {
            Ok(addr) => addr as *mut c_void,
            Err(e) => {
                set_errno(e.errno());
                ptr::null_mut()
            }
        }
    })
}
