//! Read sections: one lifetime guard shared by many translations.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::ptr;

use super::encoding::pfn_t;
use super::phys::pfn_phys_t;
use super::{fail, ffi_boundary, invalid, misuse, no_cancel, null_errno};
use crate::encoding::Pfn;
use crate::rcu::{self, ObjectSection, Reader, KIND_OBJECT};
use crate::space::{self, Block};

/// An open read section. Two kinds share this type:
/// - thread-bound, from pfn_read_lock (or pfn_read_lock_inline): it belongs to the calling
///   thread and is closed on that thread, innermost first, by pfn_read_unlock or
///   pfn_section_close;
/// - object-bound, from pfn_section_open: it belongs to this value, which may move between
///   threads (a transaction handed to another worker, an I/O completion); any thread closes it,
///   exactly once, with pfn_section_close.
///
/// Translate with pfn_section_translate* (exported) or pfn_section_translate*_inline (in this
/// header, no call). `root` is the translation table as the section saw it; `cache_*` the
/// run that every live range formed when it opened, if they formed one (one pool, however
/// split into ranges): a frame in it translates with one comparison, any other with a table
/// walk; translating writes nothing to the section. `reader` and `token` identify the section;
/// `prev` links scopes (PFN_SECTION_SCOPE). Treat the fields as opaque; copies of the value
/// translate alike but close once.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct pfn_section {
    pub root: usize,
    pub cache_pfn: u64,
    pub cache_pages: u64,
    pub cache_addr: usize,
    pub reader: *mut c_void,
    pub token: u64,
    pub prev: *mut pfn_section,
}

impl pfn_section {
    const NONE: pfn_section = pfn_section {
        root: 0,
        cache_pfn: 0,
        cache_pages: 0,
        cache_addr: 0,
        reader: ptr::null_mut(),
        token: 0,
        prev: ptr::null_mut(),
    };

    fn cache(&self) -> Block {
        Block {
            first: self.cache_pfn,
            pages: self.cache_pages,
            addr: self.cache_addr,
        }
    }

    /// A section of `root` that starts with the sole run cached (see `space::SoleRun`).
    fn opened(root: usize, reader: *mut c_void, token: u64) -> pfn_section {
        let run = space::sole_run();
        pfn_section {
            root,
            cache_pfn: run.first,
            cache_pages: run.pages,
            cache_addr: run.addr,
            reader,
            token,
            prev: ptr::null_mut(),
        }
    }

    fn record(&self) -> Option<&'static Reader> {
        // SAFETY: null or a reader record, which lives for the whole process.
        unsafe { (self.reader as *const Reader).as_ref() }
    }
}

/// Opens a thread-bound read section on the calling thread: until it is closed on this thread,
/// no range visible in it can finish unregistering, so every address translated in it stays
/// valid. Sections nest with each other and with kmaps; unregistering from inside one returns
/// -EDEADLK; a thread that exits closes its sections. The section sees the ranges registered
/// before it opened (a range registered or unregistered meanwhile may or may not be seen; an
/// address it translates stays valid until it closes). Cost: like one kmap; translations in it
/// then cost one comparison when all live ranges formed one run as it opened (one pool,
/// however split into ranges), a table walk otherwise.
///
/// Returns the section. Fails only on the thread's first use (errno ENOMEM, or EAGAIN in a
/// signal handler that interrupted the thread's own set-up), or past 16 million nested
/// sections (EOVERFLOW): the section then has `reader == NULL`, translates nothing, and must
/// not be closed (pfn_section_close returns -EINVAL for it; pfn_read_unlock would close an
/// outer section). Async-signal-safe once the thread is set up.
#[no_mangle]
pub extern "C" fn pfn_read_lock() -> pfn_section {
    ffi_boundary!(pfn_section::NONE, {
        const CALL: &str = "pfn_read_lock";
        let r = match super::setup_guard(space::reader) {
            Ok(r) => r,
            Err(e) => {
                null_errno::<u8>(CALL, e);
                return pfn_section::NONE;
            }
        };
        if !r.has_room(1) {
            crate::errmsg::set(format_args!("more than 16 million nested holds"));
            null_errno::<u8>(CALL, crate::Error::Os(libc::EOVERFLOW));
            return pfn_section::NONE;
        }
        let depth = r.open_section();
        pfn_section::opened(space::root_word(), r as *const Reader as *mut c_void, depth)
    })
}

/// Closes the calling thread's innermost open thread-bound section. Addresses translated in it
/// must no longer be used. Without an open section it does nothing (with PFN_DEBUG set it
/// prints a message and aborts). Async-signal-safe.
#[no_mangle]
pub extern "C" fn pfn_read_unlock() {
    ffi_boundary!((), {
        if !rcu::current().is_some_and(|r| r.close_section(None)) {
            misuse("pfn_read_unlock on a thread with no open read section");
            invalid(
                "pfn_read_unlock",
                format_args!("no read section is open on this thread"),
            );
        }
    })
}

/// Opens an object-bound read section in `*s`: it guards translations exactly like a
/// thread-bound one, but belongs to `*s` instead of the calling thread, so it may be closed on
/// any thread (the kernel's srcu_down_read/srcu_up_read). Every grace period waits for it until
/// it is closed; close it exactly once with pfn_section_close. It costs no shared write when
/// the thread has opened and closed one before. Not async-signal-safe.
///
/// Returns 0; -EINVAL when `s` is NULL; -ENOMEM (then `*s` translates nothing).
///
/// # Safety
/// `s` is NULL or points to a writable pfn_section.
#[no_mangle]
pub unsafe extern "C" fn pfn_section_open(s: *mut pfn_section) -> c_int {
    // Not ffi_call!: the common case (a record this thread keeps cached) takes no lock and
    // reaches no cancellation point; the rest holds cancellation off itself.
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_section_open";
        let Some(s) = s.as_mut() else {
            return invalid(CALL, format_args!("s is NULL"));
        };
        *s = pfn_section::NONE;
        let opened = match rcu::open_object_section_cached() {
            Some(o) => Ok(o),
            None => no_cancel(rcu::open_object_section),
        };
        match opened {
            Ok(o) => {
                *s = pfn_section::opened(
                    space::root_word(),
                    o.record as *const Reader as *mut c_void,
                    o.token,
                );
                0
            }
            Err(rcu::SetupError::OutOfMemory) => fail(
                CALL,
                crate::errmsg::with(
                    crate::Error::OutOfMemory,
                    format_args!("no memory for the section's reader state"),
                ),
            ),
            Err(rcu::SetupError::Interrupted) => fail(CALL, crate::Error::Again),
        }
    })
}

/// Closes exactly the section `*s`: an object-bound one from any thread; a thread-bound one on
/// its own thread, when it is the innermost open section there. Addresses translated in it must
/// no longer be used. Afterwards `*s` translates nothing.
///
/// Returns 0; -EINVAL when `*s` is not open (closed already, failed to open, zero-filled and
/// never opened, a thread-bound section of another thread or one that is not the innermost; a
/// thread-bound section closed and reopened at the same depth counts as open): nothing is
/// closed. With PFN_DEBUG set, -EINVAL prints a message and aborts instead. Async-signal-safe
/// for thread-bound sections.
///
/// # Safety
/// `s` is NULL or points to a pfn_section that pfn_read_lock or pfn_section_open filled in (a
/// copy of one counts), or that the caller zero-filled (`pfn_section s = {0};`). An
/// uninitialised one is undefined behaviour: its bytes cannot be told from a section's.
#[no_mangle]
pub unsafe extern "C" fn pfn_section_close(s: *mut pfn_section) -> c_int {
    // Not ffi_call!: closing a thread-bound section is async-signal-safe (no lock); an
    // object-bound one may take the pool lock, with cancellation held off.
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_section_close";
        let Some(sec) = s.as_mut() else {
            misuse("pfn_section_close(NULL)");
            return invalid(CALL, format_args!("s is NULL"));
        };
        let closed = match sec.record() {
            Some(r) if r.kind == KIND_OBJECT => match rcu::close_object_section(ObjectSection {
                record: r,
                token: sec.token,
            }) {
                rcu::Closed::Cached => true,
                rcu::Closed::Release(record) => {
                    no_cancel(|| rcu::release_object_record(record));
                    true
                }
                rcu::Closed::NotOpen => false,
            },
            Some(r) => {
                rcu::current().is_some_and(|me| ptr::eq(me, r)) && r.close_section(Some(sec.token))
            }
            None => false,
        };
        if !closed {
            misuse("pfn_section_close of a section that is not open (or not the innermost)");
            return invalid(
                CALL,
                format_args!(
                    "the section is not open (closed already, never opened, another thread's, \
                     or not the innermost)"
                ),
            );
        }
        let prev = sec.prev;
        *sec = pfn_section::NONE;
        sec.prev = prev;
        0
    })
}

/// Runs a translation on `*s` through its cache. NULL `s` is EINVAL.
unsafe fn translate(
    s: *mut pfn_section,
    pfn: Pfn,
    f: impl FnOnce(usize, &Block, Pfn) -> crate::Result<space::Mapped>,
) -> crate::Result<space::Mapped> {
    let s = s
        .as_ref()
        .ok_or_else(|| crate::errmsg::invalid(format_args!("s is NULL")))?;
    f(s.root, &s.cache(), pfn)
}

/// Address of `pfn`'s frame (page-aligned), valid until the section `*s` is closed; no unmap
/// is needed. Writes nothing to `*s`. The same result as pfn_section_translate_inline in this
/// header.
///
/// Returns NULL with errno: ENXIO when no range visible in the section holds the frame;
/// EINVAL when PFN_SG_CHAIN is set or `s` is NULL. Async-signal-safe.
///
/// # Safety
/// `*s` is an open section (any thread may translate in an object-bound one).
#[no_mangle]
pub unsafe extern "C" fn pfn_section_translate(s: *mut pfn_section, pfn: pfn_t) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match translate(s, pfn.into(), |root, cache, p| {
            space::translate_in_section(root, cache, p).map(|addr| space::Mapped { addr, len: 0 })
        }) {
            Ok(m) => m.addr as *mut c_void,
            Err(e) => null_errno("pfn_section_translate", e),
        }
    })
}

/// As pfn_section_translate, and writes to `*len` (when it succeeds and `len` is not NULL) the
/// bytes contiguous from the returned address, as kmap_atomic_pfn_t_len reports them (to the
/// end of the range, or of the run of ranges that continue it). The section's counterpart of
/// kmap_atomic_pfn_t_len; pfn_section_translate_len_inline is the header-inline one.
///
/// # Safety
/// As pfn_section_translate; `len` is NULL or points to a writable uint64_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_section_translate_len(
    s: *mut pfn_section,
    pfn: pfn_t,
    len: *mut u64,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        match translate(s, pfn.into(), |root, cache, p| {
            space::translate_len_in_section(root, cache, p)
        }) {
            Ok(m) => {
                if let Some(len) = len.as_mut() {
                    *len = m.len;
                }
                m.addr as *mut c_void
            }
            Err(e) => null_errno("pfn_section_translate_len", e),
        }
    })
}

/// Address of the byte a byte handle names, valid until the section closes. Returns NULL with
/// errno EINVAL for the null handle, PFN_SG_CHAIN or a NULL `s`; ENXIO as
/// pfn_section_translate. Header-inline: pfn_section_translate_phys_inline.
///
/// # Safety
/// As pfn_section_translate.
#[no_mangle]
pub unsafe extern "C" fn pfn_section_translate_phys(
    s: *mut pfn_section,
    h: pfn_phys_t,
) -> *mut c_void {
    ffi_boundary!(ptr::null_mut(), {
        let Some(pfn) = h.page() else {
            return null_errno("pfn_section_translate_phys", super::phys::bad_handle(h));
        };
        match translate(s, pfn, |root, cache, p| {
            space::translate_in_section(root, cache, p).map(|addr| space::Mapped { addr, len: 0 })
        }) {
            Ok(m) => (m.addr + h.offset()) as *mut c_void,
            Err(e) => null_errno("pfn_section_translate_phys", e),
        }
    })
}

/// The innermost section bound to the calling thread by PFN_SECTION_SCOPE, so that helper functions reach it without a parameter; NULL when none.
/// The header's pfn_section_current_inline is the same without a call.
#[no_mangle]
pub extern "C" fn pfn_section_current() -> *mut pfn_section {
    rcu::current().map_or(ptr::null_mut(), |r| {
        r.current.load(std::sync::atomic::Ordering::Relaxed) as *mut pfn_section
    })
}
