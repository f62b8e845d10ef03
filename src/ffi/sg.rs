//! Scatterlists for C: the entry, table and mapping-iterator structures, the list walk (with
//! its checks: links, loops, the end mark within `nents`), the walking helpers (which the
//! header also has as static inline functions of the same names), and the copies, zeroing,
//! mapping iterator and iovecs that `crate::sg` performs over the entries walked here.
#![allow(non_camel_case_types)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::{c_int, c_uint, c_void};
use std::fmt;
use std::ptr;

use super::encoding::{pfn_t, PFN_SG_CHAIN, PFN_SG_LAST};
use super::section::pfn_section;
use super::{fail, ffi_boundary, invalid, misuse, null_errno, setup_guard, status};
use crate::encoding::Pfn;
use crate::errmsg;
use crate::error::{Error, Result};
use crate::sg::{self, Entry, Transfer};
use crate::space::{self, Block};

/// pfn_sg_pcopy_from_buffer / pfn_sg_zero_buffer flag, and pfn_sg_miter_start flag (with
/// PFN_SG_MITER_TO_SG): the bytes written to the list are made durable, each by its mapping's
/// method (msync for a PFN_GRANULARITY_PAGE mapping of this library, cache-line flushes or
/// non-temporal stores and a drain elsewhere), before the call returns.
pub const PFN_SG_PERSIST: u32 = 1u32 << 0;
/// pfn_sg_miter_start flag: the caller writes to the chunks.
pub const PFN_SG_MITER_TO_SG: u32 = 1u32 << 1;
/// pfn_sg_miter_start flag: the caller reads the chunks.
pub const PFN_SG_MITER_FROM_SG: u32 = 1u32 << 2;
/// Entries in each array pfn_sg_alloc_table allocates: a table of more entries is several
/// arrays, the last entry of each but the last linking to the next (so PFN_SG_CHUNK_ENTRIES - 1
/// data entries an array).
pub const PFN_SG_CHUNK_ENTRIES: u32 = 255;

const SG_FLAGS: u64 = PFN_SG_CHAIN | PFN_SG_LAST;

/// One entry of a scatterlist: the kernel's struct scatterlist with a pfn_t in place of a
/// page. A data entry names `length` bytes starting `offset` bytes after the first byte of
/// frame `pfn` (the offset may pass the frame: the bytes then start in a later one); its
/// `pfn` keeps its own flags (PFN_DEV, ...), and PFN_SG_LAST marks the list's last entry. A
/// link entry (PFN_SG_CHAIN set, made by pfn_sg_chain) names no bytes: `pfn.val` without
/// PFN_SG_CHAIN and PFN_SG_LAST is the address of the entry the list goes on with (the first
/// of another array); its offset and length are 0. A list is one or more arrays of entries,
/// starting with a data entry and ending with the entry marked PFN_SG_LAST; the memory is the
/// caller's. 16 bytes, 8-aligned.
///
/// Extents across ranges: the calls below move an entry's bytes in pieces, each one
/// translation long. A piece ends at the entry's end or at the end of the run of ranges that
/// holds its first byte, as kmap_atomic_pfn_t_len reports it: two ranges continue each other
/// when the second's first frame follows the first's last and its base address is the first's
/// base plus its size (back to back physically and in memory), both registered and none being
/// unregistered; a run is a chain of such ranges. So an entry crossing into a range that
/// continues its first is one piece (one chunk of the mapping iterator, one iovec); crossing
/// into a range adjacent only physically, it is two. Whatever a call hands out (a chunk, an
/// iovec in a section) stays valid in every range of its run until released: unregistering
/// any of them waits for every kmap and read section on every thread (grace periods are
/// global), so unregistering the run's second range blocks until the holder lets go (and is
/// -EDEADLK on the holder's own thread); only then may its memory be unmapped.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pfn_sg {
    pub pfn: pfn_t,
    pub offset: u32,
    pub length: u32,
}

/// A scatterlist allocated by pfn_sg_alloc_table* (the kernel's struct sg_table): `sgl` is
/// its first entry, `nents` its data entries (the caller may lower it, e.g. after marking an
/// earlier end), `orig_nents` how many were allocated. Free it with pfn_sg_free_table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pfn_sg_table {
    pub sgl: *mut pfn_sg,
    pub nents: c_uint,
    pub orig_nents: c_uint,
}

/// The mapping iterator (the kernel's sg_miter): after pfn_sg_miter_next returns 1, `addr`
/// and `length` are the next chunk of the list's bytes, mapped: the longest piece that is
/// contiguous in virtual memory within one entry (across frames, and across ranges that
/// continue each other). `consumed` starts equal to `length`; lower it to say that only that
/// many bytes were used (the next chunk then starts right after them). The `priv_` fields are
/// the iterator's own. Caller-allocated; any alignment of a struct of this type will do.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pfn_sg_miter {
    pub addr: *mut c_void,
    pub length: usize,
    pub consumed: usize,
    pub priv_start: *const pfn_sg,
    pub priv_cur: *const pfn_sg,
    pub priv_pos: u64,
    pub priv_left: u64,
    pub priv_saved: *const pfn_sg,
    pub priv_power: u64,
    pub priv_lam: u64,
    pub priv_flags: u32,
    pub priv_state: u32,
    pub priv_error: i32,
    pub priv_reserved: u32,
}

/// struct iovec of <sys/uio.h> (named so in the header).
#[repr(C)]
pub struct iovec {
    pub iov_base: *mut c_void,
    pub iov_len: usize,
}

// ---- the walk ----

#[inline(always)]
fn misplaced(sg: *const pfn_sg) -> bool {
    sg.is_null() || sg as usize & 7 != 0
}

/// # Safety
/// `sg` points to a readable entry.
unsafe fn val(sg: *const pfn_sg) -> u64 {
    (*sg).pfn.val
}

fn is_link(v: u64) -> bool {
    v & PFN_SG_CHAIN != 0
}

fn is_end(v: u64) -> bool {
    v & SG_FLAGS == PFN_SG_LAST
}

// ---- the messages of broken lists and bad list arguments (pfn_errormsg) ----

/// A data entry named in a message: its index in the walk when known, and its address.
#[derive(Clone, Copy)]
struct At(Option<u64>, *const pfn_sg);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, "data entry {i} at {:p}", self.1),
            None => write!(f, "the data entry at {:p}", self.1),
        }
    }
}

/// `Invalid` for an entry argument `name` that is NULL or not 8-aligned, with its message.
#[cold]
#[inline(never)]
fn misplaced_arg(name: &str, p: *const pfn_sg) -> Error {
    if p.is_null() {
        errmsg::invalid(format_args!("{name} is NULL"))
    } else {
        errmsg::invalid(format_args!("{name} {p:p} is not 8-aligned"))
    }
}

/// `Invalid` for a list argument `name` that is a link entry, with its message.
#[cold]
#[inline(never)]
fn link_arg(name: &str, p: *const pfn_sg) -> Error {
    errmsg::invalid(format_args!(
        "{name} {p:p} is a link entry (PFN_SG_CHAIN), not a data entry"
    ))
}

/// The error of a link (at `link`, after data entry `at`) that leads to `t`, with its message:
/// `BadLink` (NULL or not 8-aligned), `Loop` (to itself) or `Invalid` (to another link).
#[cold]
#[inline(never)]
fn broken_link(at: At, link: *const pfn_sg, t: *const pfn_sg) -> Error {
    if misplaced(t) {
        errmsg::with(
            Error::BadLink,
            format_args!(
                "the link at {link:p}, after {at}, leads to {t:p}, which is NULL or not \
                 8-aligned"
            ),
        )
    } else if t == link {
        errmsg::with(
            Error::Loop,
            format_args!("the link at {link:p}, after {at}, leads to itself"),
        )
    } else {
        errmsg::invalid(format_args!(
            "the link at {link:p}, after {at}, leads to {t:p}, another link entry"
        ))
    }
}

/// The data entry after data entry `sg`, following a link (and whether it did); None after
/// the last. Errors: `Invalid` when `sg` is a link or the link leads to another link,
/// `BadLink` for a link that is NULL or not 8-aligned, `Loop` for a link to itself; each
/// with its message, which names `sg` by the index `index()` gives (asked only on an error).
///
/// # Safety
/// `sg`, and the entry after it unless `sg` is marked last, are readable; so is the entry a
/// link there leads to, when it is 8-aligned and not NULL.
#[inline(always)]
unsafe fn step(
    sg: *const pfn_sg,
    index: impl FnOnce() -> Option<u64>,
) -> Result<(Option<*const pfn_sg>, bool)> {
    let v = val(sg);
    if is_link(v) {
        return Err(link_arg("sg", sg));
    }
    if v & PFN_SG_LAST != 0 {
        return Ok((None, false));
    }
    let n = sg.add(1);
    let nv = val(n);
    if !is_link(nv) {
        return Ok((Some(n), false));
    }
    let t = (nv & !SG_FLAGS) as usize as *const pfn_sg;
    if misplaced(t) || is_link(val(t)) {
        return Err(broken_link(At(index(), sg), n, t));
    }
    Ok((Some(t), true))
}

/// Brent's cycle detection over the links a walk follows: a list that loops repeats a link
/// target, and is caught within a few times its number of links, whatever `nents` says.
#[derive(Clone, Copy)]
struct Brent {
    saved: *const pfn_sg,
    power: u64,
    lam: u64,
}

impl Brent {
    fn new(start: *const pfn_sg) -> Brent {
        Brent {
            saved: start,
            power: 1,
            lam: 0,
        }
    }

    /// False when the walk came back to a target it saw: the list loops.
    fn hop(&mut self, target: *const pfn_sg) -> bool {
        if target == self.saved {
            return false;
        }
        self.lam += 1;
        if self.lam == self.power {
            self.saved = target;
            self.power <<= 1;
            self.lam = 0;
        }
        true
    }
}

/// A walk over a list's data entries, at most `nents` of them: reaching the nents-th without
/// an end mark and needing more is `Invalid`, and nothing past it is read. Every error comes
/// with its message.
#[derive(Clone, Copy)]
struct Walk {
    start: *const pfn_sg,
    cur: *const pfn_sg,
    left: u64,
    brent: Brent,
    done: bool,
    /// The `nents` it started with, for messages (0: not known, in a resumed walk).
    budget: u64,
}

impl Walk {
    /// Errors: `Invalid` when `nents` > 0 and `sgl` is NULL, not 8-aligned or a link.
    ///
    /// # Safety
    /// The list's entries (as far as it is walked) are readable (the checks above aside).
    unsafe fn new(sgl: *const pfn_sg, nents: u64) -> Result<Walk> {
        if nents > 0 {
            if misplaced(sgl) {
                return Err(misplaced_arg("sgl", sgl));
            }
            if is_link(val(sgl)) {
                return Err(link_arg("sgl", sgl));
            }
        }
        Ok(Walk {
            start: sgl,
            cur: ptr::null(),
            left: nents,
            brent: Brent::new(sgl),
            done: nents == 0,
            budget: nents,
        })
    }

    /// The current entry, named for a message.
    fn at(&self) -> At {
        // `left` was counted down when `cur` was reached.
        At(
            (self.budget != 0).then(|| self.budget - self.left - 1),
            self.cur,
        )
    }

    #[cold]
    #[inline(never)]
    fn no_end_mark(&self) -> Error {
        let at = self.at();
        if self.budget != 0 {
            errmsg::invalid(format_args!(
                "{at} is the nents-th (nents = {}) and is not marked PFN_SG_LAST, but more \
                 bytes are wanted",
                self.budget
            ))
        } else {
            errmsg::invalid(format_args!(
                "{at} is the nents-th and is not marked PFN_SG_LAST, but more bytes are \
                 wanted"
            ))
        }
    }

    #[cold]
    #[inline(never)]
    fn looped(&self, target: *const pfn_sg) -> Error {
        errmsg::with(
            Error::Loop,
            format_args!(
                "the list loops: the link after {} leads back to {target:p}, an entry already \
                 walked",
                self.at()
            ),
        )
    }

    #[inline(always)]
    fn advance(&mut self) -> Result<Option<*const pfn_sg>> {
        if self.done {
            return Ok(None);
        }
        let next = if self.cur.is_null() {
            self.start
        } else {
            // SAFETY: the contract of `new`: `cur` is an entry of the list.
            if is_end(unsafe { val(self.cur) }) {
                self.done = true;
                return Ok(None);
            }
            if self.left == 0 {
                self.done = true;
                return Err(self.no_end_mark());
            }
            // SAFETY: as above.
            let stepped = unsafe { step(self.cur, || self.at().0) }.and_then(|(n, hop)| {
                let n = n.expect("an entry not marked last has a successor");
                if hop && !self.brent.hop(n) {
                    return Err(self.looped(n));
                }
                Ok(n)
            });
            match stepped {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        };
        self.left -= 1;
        self.cur = next;
        Ok(Some(next))
    }
}

impl Iterator for Walk {
    type Item = Result<Entry>;

    #[inline(always)]
    fn next(&mut self) -> Option<Result<Entry>> {
        match self.advance() {
            // SAFETY: an entry of the list (the contract of `new`).
            Ok(Some(sg)) => Some(Ok(unsafe { entry(sg) })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// # Safety
/// `sg` is a readable entry.
#[inline(always)]
unsafe fn entry(sg: *const pfn_sg) -> Entry {
    let s = *sg;
    Entry::new(s.pfn.val, s.offset, s.length)
}

// ---- the walking helpers: each also a static inline function of the same name in the header
// (its documentation is there; these are for callers that cannot use the header's).

/// True when `sg` is a link entry (PFN_SG_CHAIN); false for NULL.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_is_chain(sg: *const pfn_sg) -> bool {
    !misplaced(sg) && is_link(val(sg))
}

/// True when `sg` is a data entry marked last; false for NULL.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_is_last(sg: *const pfn_sg) -> bool {
    !misplaced(sg) && is_end(val(sg))
}

/// The entry a link entry leads to; NULL for a data entry or NULL.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_chain_ptr(sg: *const pfn_sg) -> *mut pfn_sg {
    if misplaced(sg) || !is_link(val(sg)) {
        return ptr::null_mut();
    }
    (val(sg) & !SG_FLAGS) as usize as *mut pfn_sg
}

/// A data entry's frame, with its flags but not the list's; 0 for a link entry or NULL.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_pfn(sg: *const pfn_sg) -> pfn_t {
    if misplaced(sg) || is_link(val(sg)) {
        return pfn_t { val: 0 };
    }
    pfn_t {
        val: val(sg) & !SG_FLAGS,
    }
}

/// Physical address of a data entry's first byte (wrapping); 0 for a link entry or NULL.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_phys(sg: *const pfn_sg) -> u64 {
    if misplaced(sg) || is_link(val(sg)) {
        return 0;
    }
    Pfn(val(sg)).phys().wrapping_add(u64::from((*sg).offset))
}

/// Points data entry `sg` at `len` bytes from `offset` bytes into frame `pfn`.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_set_pfn(
    sg: *mut pfn_sg,
    pfn: pfn_t,
    len: u32,
    offset: u32,
) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_set_pfn";
        if misplaced(sg) {
            return fail(CALL, misplaced_arg("sg", sg));
        }
        if is_link(val(sg)) {
            return fail(CALL, link_arg("sg", sg));
        }
        if is_link(pfn.val) {
            return fail(CALL, space::chain_err(Pfn(pfn.val)));
        }
        if let Err(e) = Entry::new(pfn.val, offset, len).start() {
            return fail(CALL, e);
        }
        (*sg).pfn.val = (pfn.val & !SG_FLAGS) | (val(sg) & PFN_SG_LAST);
        (*sg).offset = offset;
        (*sg).length = len;
        0
    })
}

/// Marks `sg` as the list's last entry (a link entry becomes a data entry).
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_mark_end(sg: *mut pfn_sg) {
    if !misplaced(sg) {
        (*sg).pfn.val = (val(sg) & !PFN_SG_CHAIN) | PFN_SG_LAST;
    }
}

/// Clears the end mark of `sg`.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_unmark_end(sg: *mut pfn_sg) {
    if !misplaced(sg) {
        (*sg).pfn.val = val(sg) & !PFN_SG_LAST;
    }
}

/// Zeroes `nents` entries from `sgl` and marks the last.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_init_table(sgl: *mut pfn_sg, nents: c_uint) {
    if misplaced(sgl) || nents == 0 {
        return;
    }
    for i in 0..nents as usize {
        *sgl.add(i) = pfn_sg {
            pfn: pfn_t { val: 0 },
            offset: 0,
            length: 0,
        };
    }
    (*sgl.add(nents as usize - 1)).pfn.val = PFN_SG_LAST;
}

/// Makes the last of `prv_nents` entries of `prv` a link to `sgl`.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_chain(
    prv: *mut pfn_sg,
    prv_nents: c_uint,
    sgl: *mut pfn_sg,
) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_chain";
        if misplaced(prv) {
            return fail(CALL, misplaced_arg("prv", prv));
        }
        if prv_nents < 2 {
            return invalid(
                CALL,
                format_args!(
                    "prv_nents {prv_nents} is less than 2 (its last entry becomes the link)"
                ),
            );
        }
        if misplaced(sgl) {
            return fail(CALL, misplaced_arg("sgl", sgl));
        }
        if sgl as u64 & SG_FLAGS != 0 {
            return invalid(
                CALL,
                format_args!("sgl {sgl:p} has bit 62 or 63 set: a link cannot hold it"),
            );
        }
        let link = prv.add(prv_nents as usize - 1);
        if sgl == link {
            return invalid(
                CALL,
                format_args!(
                    "sgl {sgl:p} is prv[{}], the entry that would become the link",
                    prv_nents - 1
                ),
            );
        }
        if is_link(val(sgl)) {
            return fail(CALL, link_arg("sgl", sgl));
        }
        *link = pfn_sg {
            pfn: pfn_t {
                val: sgl as u64 | PFN_SG_CHAIN,
            },
            offset: 0,
            length: 0,
        };
        0
    })
}

/// The data entry after `sg`: NULL at the end (errno unchanged) or with errno for a broken
/// link.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_next(sg: *mut pfn_sg) -> *mut pfn_sg {
    ffi_boundary!(ptr::null_mut(), {
        const CALL: &str = "pfn_sg_next";
        if misplaced(sg) {
            return null_errno(CALL, misplaced_arg("sg", sg));
        }
        match step(sg, || None) {
            Ok((n, _)) => n.map_or(ptr::null_mut(), |n| n as *mut pfn_sg),
            Err(e) => null_errno(CALL, e),
        }
    })
}

/// `Overflow` for a list of more than INT_MAX data entries, with its message.
#[cold]
#[inline(never)]
fn too_many_entries() -> Error {
    errmsg::with(
        Error::Overflow,
        format_args!(
            "the list has more than INT_MAX ({}) data entries",
            c_int::MAX
        ),
    )
}

/// Data entries of the list, up to and including the one marked last.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_nents(sgl: *mut pfn_sg) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_nents";
        if misplaced(sgl) {
            return fail(CALL, misplaced_arg("sgl", sgl));
        }
        let walk = match Walk::new(sgl, u64::MAX) {
            Ok(w) => w,
            Err(e) => return fail(CALL, e),
        };
        let mut n: c_int = 0;
        for e in walk {
            if let Err(e) = e {
                return fail(CALL, e);
            }
            if n == c_int::MAX {
                return fail(CALL, too_many_entries());
            }
            n += 1;
        }
        n
    })
}

/// Data entries needed to cover `len` bytes.
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_nents_for_len(sgl: *mut pfn_sg, len: u64) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_nents_for_len";
        if misplaced(sgl) {
            return fail(CALL, misplaced_arg("sgl", sgl));
        }
        if is_link(val(sgl)) {
            return fail(CALL, link_arg("sgl", sgl));
        }
        if len == 0 {
            return 0;
        }
        let walk = match Walk::new(sgl, u64::MAX) {
            Ok(w) => w,
            Err(e) => return fail(CALL, e),
        };
        let (mut n, mut total): (c_int, u64) = (0, 0);
        for e in walk {
            let e = match e {
                Ok(e) => e,
                Err(e) => return fail(CALL, e),
            };
            if n == c_int::MAX {
                return fail(CALL, too_many_entries());
            }
            n += 1;
            total += u64::from(e.len);
            if total >= len {
                return n;
            }
        }
        invalid(
            CALL,
            format_args!(
                "the list's {n} data entries hold {total:#x} bytes, fewer than len {len:#x}"
            ),
        )
    })
}

/// The last of the first `nents` data entries (or the one marked last, if earlier).
///
/// # Safety
/// As the header's inline function of the same name (entries it reads are readable).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_last(sgl: *mut pfn_sg, nents: c_uint) -> *mut pfn_sg {
    ffi_boundary!(ptr::null_mut(), {
        const CALL: &str = "pfn_sg_last";
        if misplaced(sgl) {
            return null_errno(CALL, misplaced_arg("sgl", sgl));
        }
        if nents == 0 {
            return null_errno(CALL, errmsg::invalid(format_args!("nents is 0")));
        }
        let mut walk = match Walk::new(sgl, u64::from(nents)) {
            Ok(w) => w,
            Err(e) => return null_errno(CALL, e),
        };
        let mut last = ptr::null();
        for _ in 0..nents {
            match walk.advance() {
                Ok(Some(sg)) => last = sg,
                Ok(None) => break,
                Err(e) => return null_errno(CALL, e),
            }
        }
        last as *mut pfn_sg
    })
}

// ---- tables ----

/// The hidden head of each array a table allocates: the arrays of a table are freed by
/// following these, whatever the caller did to the entries.
#[repr(C, align(16))]
struct ArrayHead {
    next: *mut ArrayHead,
    entries: u32,
    magic: u32,
}

const TABLE_MAGIC: u32 = 0x7367_7462;

/// The mark of a live array head: the magic mixed with a hash of the head's own address, so
/// that the 16 bytes before an entry in the middle of an array (the previous entry) pass for
/// one only by a 1 in 2^32 accident.
fn mark(head: *const ArrayHead) -> u32 {
    TABLE_MAGIC ^ (((head as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32)
}

fn array_layout(entries: usize) -> Layout {
    Layout::from_size_align(
        std::mem::size_of::<ArrayHead>() + entries * std::mem::size_of::<pfn_sg>(),
        std::mem::align_of::<ArrayHead>(),
    )
    .expect("at most 255 entries an array")
}

/// # Safety
/// `head` and the heads chained after it were allocated by `alloc_arrays`.
unsafe fn free_arrays(mut head: *mut ArrayHead) {
    while !head.is_null() {
        let next = (*head).next;
        (*head).magic = 0;
        dealloc(head as *mut u8, array_layout((*head).entries as usize));
        head = next;
    }
}

/// A zeroed list of `nents` data entries in arrays of at most PFN_SG_CHUNK_ENTRIES, linked
/// and with the end marked. Returns its first entry. Errors: `OutOfMemory` (nothing kept).
fn alloc_arrays(nents: u32) -> Result<*mut pfn_sg> {
    let per = PFN_SG_CHUNK_ENTRIES as usize;
    let mut left = nents as usize;
    let (mut first, mut prev): (*mut ArrayHead, *mut ArrayHead) =
        (ptr::null_mut(), ptr::null_mut());
    loop {
        let n = left.min(per);
        // SAFETY: a non-zero size.
        let head = unsafe { alloc_zeroed(array_layout(n)) } as *mut ArrayHead;
        if head.is_null() {
            // SAFETY: the arrays made so far.
            unsafe { free_arrays(first) };
            return Err(errmsg::with(
                Error::OutOfMemory,
                format_args!(
                    "no memory for an array of {n} entries ({} bytes) of a table of {nents}",
                    array_layout(n).size()
                ),
            ));
        }
        // SAFETY: fresh memory of this layout: the head, then n zeroed entries.
        unsafe {
            (*head).entries = n as u32;
            (*head).magic = mark(head);
            let entries = head.add(1) as *mut pfn_sg;
            if prev.is_null() {
                first = head;
            } else {
                (*prev).next = head;
                let prev_entries = prev.add(1) as *mut pfn_sg;
                let link = prev_entries.add(per - 1);
                (*link).pfn.val = entries as u64 | PFN_SG_CHAIN;
            }
            if left <= per {
                (*entries.add(n - 1)).pfn.val = PFN_SG_LAST;
                return Ok(first.add(1) as *mut pfn_sg);
            }
        }
        left -= per - 1;
        prev = head;
    }
}

/// A table holding `entries` (at least one; at most u32::MAX).
fn table_of(entries: &[Entry]) -> Result<pfn_sg_table> {
    let n = u32::try_from(entries.len()).map_err(|_| {
        errmsg::with(
            Error::OutOfMemory,
            format_args!(
                "{} entries are more than a table holds ({})",
                entries.len(),
                u32::MAX
            ),
        )
    })?;
    let sgl = alloc_arrays(n)?;
    // SAFETY: a list just made, of exactly `n` data entries.
    unsafe {
        let mut sg = sgl as *const pfn_sg;
        for (i, e) in entries.iter().enumerate() {
            let s = sg as *mut pfn_sg;
            (*s).pfn.val = e.pfn.0 | (val(s) & PFN_SG_LAST);
            (*s).offset = e.offset;
            (*s).length = e.len;
            if i + 1 < entries.len() {
                sg = step(sg, || Some(i as u64))?.0.expect("not the last");
            }
        }
    }
    Ok(pfn_sg_table {
        sgl,
        nents: n,
        orig_nents: n,
    })
}

/// Allocates a list of `nents` zeroed data entries, the last marked, in arrays of
/// PFN_SG_CHUNK_ENTRIES entries linked by pfn_sg_chain (the kernel's sg_alloc_table), and
/// writes it to `*t` (sgl, nents = orig_nents = `nents`). Fill the entries with
/// pfn_sg_set_pfn while walking them with pfn_sg_next or pfn_for_each_sg.
///
/// Returns 0; -EINVAL when `t` is NULL or `nents` is 0; -ENOMEM (nothing is kept). `*t` is
/// written only on success. Free with pfn_sg_free_table.
///
/// # Safety
/// `t` is NULL or points to a writable pfn_sg_table.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_alloc_table(t: *mut pfn_sg_table, nents: c_uint) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_alloc_table";
        let Some(t) = t.as_mut() else {
            return invalid(CALL, format_args!("t is NULL"));
        };
        if nents == 0 {
            return invalid(CALL, format_args!("nents is 0"));
        }
        match alloc_arrays(nents) {
            Ok(sgl) => {
                *t = pfn_sg_table {
                    sgl,
                    nents,
                    orig_nents: nents,
                };
                0
            }
            Err(e) => fail(CALL, e),
        }
    })
}

/// Frees the arrays of a table from pfn_sg_alloc_table* (found through their own hidden
/// bookkeeping, whatever was written to the entries) and zeroes `*t`. NULL, or a table whose
/// `sgl` is NULL (e.g. one already freed), is a no-op. Anything else that pfn_sg_alloc_table*
/// did not make is undefined, as for free(3) (a list not made here is usually left alone,
/// and reported when PFN_DEBUG is set).
///
/// # Safety
/// `t` is NULL or points to a pfn_sg_table.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_free_table(t: *mut pfn_sg_table) {
    ffi_boundary!((), {
        const CALL: &str = "pfn_sg_free_table";
        let Some(t) = t.as_mut() else {
            return;
        };
        if t.sgl.is_null() {
            return;
        }
        let head = (t.sgl as *mut ArrayHead).wrapping_sub(1);
        if misplaced(t.sgl)
            || (t.sgl as usize) % std::mem::align_of::<ArrayHead>() != 0
            || (*head).magic != mark(head)
            || !(1..=PFN_SG_CHUNK_ENTRIES).contains(&(*head).entries)
        {
            misuse(
                "pfn_sg_free_table of a list pfn_sg_alloc_table did not make (or freed already)",
            );
            invalid(
                CALL,
                format_args!(
                    "t->sgl {:p} is not a list pfn_sg_alloc_table* made (or it was freed \
                     already): left alone",
                    t.sgl
                ),
            );
            return;
        }
        free_arrays(head);
        *t = pfn_sg_table {
            sgl: ptr::null_mut(),
            nents: 0,
            orig_nents: 0,
        };
    })
}

fn put_table(call: &str, t: &mut pfn_sg_table, entries: Result<Vec<Entry>>) -> c_int {
    match entries.and_then(|e| table_of(&e)) {
        Ok(table) => {
            *t = table;
            0
        }
        Err(e) => fail(call, e),
    }
}

/// Allocates a table for `size` bytes that start `offset` bytes into the first of the
/// `n_pages` frames `pfns` (the kernel's sg_alloc_table_from_pages): frames that follow each
/// other physically, with the same flags, share one entry (of at most 4 GiB - 4 KiB); the
/// list's own flags in `pfns` (PFN_SG_LAST) are ignored. Only the frames the bytes need are
/// read. The frames need not be registered now (copies check).
///
/// Returns 0; -EINVAL when `t` is NULL, `size` is 0, `offset` >= PFN_PAGE_SIZE, the bytes
/// need more than `n_pages` frames, `pfns` is NULL, or a frame has PFN_SG_CHAIN; -EOVERFLOW
/// when the bytes pass the end of the physical space; -ENOMEM. `*t` is written only on
/// success; free with pfn_sg_free_table.
///
/// # Safety
/// `pfns` is NULL or points to `n_pages` readable pfn_t; `t` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_alloc_table_from_pfns(
    t: *mut pfn_sg_table,
    pfns: *const pfn_t,
    n_pages: c_uint,
    offset: c_uint,
    size: u64,
) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_alloc_table_from_pfns";
        let Some(t) = t.as_mut() else {
            return invalid(CALL, format_args!("t is NULL"));
        };
        if pfns.is_null() {
            return invalid(CALL, format_args!("pfns is NULL"));
        }
        // pfn_t is a repr(C) struct of one u64, Pfn a transparent u64.
        let frames = std::slice::from_raw_parts(pfns as *const Pfn, n_pages as usize);
        put_table(CALL, t, sg::entries_of_pfns(frames, offset, size))
    })
}

/// Allocates a table for the `len` bytes at `buf`, every page of which must lie in a
/// registered range: reverse translation (as pfn_virt_to_pfn_t, one O(1) lookup a page) gives
/// each page's frame, with the flags its range was registered with; pages that follow each
/// other physically share one entry (of at most 4 GiB - 4 KiB). The table describes the
/// frames, not the addresses: it stays valid across unregistering and registering the same
/// physical range elsewhere.
///
/// Returns 0; -EINVAL when `t` or `buf` is NULL, `len` is 0 or the bytes wrap; -ENXIO when a
/// page lies in no registered range; -ENOMEM; -EAGAIN as for a thread's first kmap. `*t` is
/// written only on success; free with pfn_sg_free_table.
///
/// # Safety
/// `t` is NULL or writable. `buf` is not read (only its address is used).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_alloc_table_from_buf(
    t: *mut pfn_sg_table,
    buf: *const c_void,
    len: usize,
) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_alloc_table_from_buf";
        let Some(t) = t.as_mut() else {
            return invalid(CALL, format_args!("t is NULL"));
        };
        if buf.is_null() {
            return invalid(CALL, format_args!("buf is NULL"));
        }
        put_table(
            CALL,
            t,
            setup_guard(|| sg::entries_of_buffer(buf as usize, len)),
        )
    })
}

// ---- copies ----

/// The checks of every copy, then the core's copy over the walked list; `call` names the
/// exported function for the message of a failure.
unsafe fn transfer(
    call: &str,
    sgl: *const pfn_sg,
    nents: c_uint,
    op: Transfer,
    len: usize,
    skip: u64,
    flags: u32,
) -> isize {
    let buf = match op {
        Transfer::ToList(p) => Some(p as usize),
        Transfer::FromList(p) => Some(p as usize),
        Transfer::Zero => None,
    };
    if flags & !PFN_SG_PERSIST != 0 {
        return invalid(
            call,
            format_args!("flags {flags:#x} has unknown bits (PFN_SG_PERSIST is the only flag)"),
        ) as isize;
    }
    if len > isize::MAX as usize {
        return invalid(call, format_args!("buflen {len:#x} is over PTRDIFF_MAX")) as isize;
    }
    if let Some(b) = buf.filter(|_| len > 0) {
        if b == 0 {
            return invalid(call, format_args!("buf is NULL with buflen {len:#x}")) as isize;
        }
        if b.checked_add(len).is_none() {
            return invalid(
                call,
                format_args!(
                    "buf {b:#x} + buflen {len:#x} wraps past the end of the address space"
                ),
            ) as isize;
        }
    }
    let walk = match Walk::new(sgl, u64::from(nents)) {
        Ok(w) => w,
        Err(e) => return fail(call, e) as isize,
    };
    let durable = flags & PFN_SG_PERSIST != 0;
    match setup_guard(|| sg::copy(walk, op, len, skip, durable)) {
        Ok(n) => n as isize,
        Err(e) => fail(call, e) as isize,
    }
}

/// Copies `buflen` bytes from `buf` into the bytes the list describes, from `skip` bytes into
/// them on (the kernel's sg_pcopy_from_buffer), through a read section of the calling thread
/// held for the call: each piece contiguous in virtual memory (an entry, or more of it across
/// frames and ranges that continue each other) costs one translation, then a memmove.
/// `flags`: 0, or PFN_SG_PERSIST to make the written bytes durable, each by its mapping's
/// method, before returning.
///
/// The list: `nents` is the most data entries it may have: the walk reads no entry past the
/// nents-th, and its end mark must come within them when the bytes go on past them.
///
/// Returns the bytes copied: `buflen`, or fewer when the list ends first (0 when `skip` is
/// past its end or `nents` is 0). Errors (negative errno), all found before anything is
/// written: -EINVAL: `sgl` NULL or not 8-aligned with `nents` > 0, a list that starts with a
/// link, a link to another link, no end mark within the first `nents` entries while bytes are
/// still wanted, `buf` NULL with `buflen` > 0, `buf + buflen` wrapping, `buflen` over
/// PTRDIFF_MAX, an unknown flag; -EFAULT: a link to NULL or to an address that is not
/// 8-aligned; -ELOOP: the list loops (a link leads back to entries already walked; found in
/// a few times the number of links walked, whatever `nents` is); -EOVERFLOW: an entry whose
/// offset + length passes the end of the physical space (checked for every entry walked,
/// skipped ones too), or past 16 million nested kmaps and sections on this thread; -ENXIO: a
/// frame holding some of the bytes lies in no registered range; -ENOMEM / -EAGAIN as for a
/// thread's first kmap; with PFN_SG_PERSIST, the errno of msync(2) (every byte was copied,
/// but some may not be durable). The addresses the check finds for the first 256 pieces
/// (contiguous runs of bytes) are the ones written, so such a copy completes even if another
/// thread unregisters one of its ranges meanwhile; a longer copy walks the list again, and if
/// a range it points into was unregistered since the check, it stops there with -ENXIO, the
/// bytes before it written.
///
/// Thread rules: any thread, also inside its own kmaps and sections; while it runs,
/// unregistering a range waits for it. `buf` may lie in the list's own memory (each piece is
/// copied as memmove would).
///
/// # Safety
/// The list's entries (the first `nents` data entries, the links among them) are readable;
/// `buf` is readable for `buflen` bytes.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_pcopy_from_buffer(
    sgl: *const pfn_sg,
    nents: c_uint,
    buf: *const c_void,
    buflen: usize,
    skip: u64,
    flags: u32,
) -> isize {
    ffi_boundary!(-libc::ENOTRECOVERABLE as isize, {
        const CALL: &str = "pfn_sg_pcopy_from_buffer";
        transfer(
            CALL,
            sgl,
            nents,
            Transfer::ToList(buf as *const u8),
            buflen,
            skip,
            flags,
        )
    })
}

/// pfn_sg_pcopy_from_buffer with `skip` 0 and no flags (the kernel's sg_copy_from_buffer).
///
/// # Safety
/// As pfn_sg_pcopy_from_buffer.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_copy_from_buffer(
    sgl: *const pfn_sg,
    nents: c_uint,
    buf: *const c_void,
    buflen: usize,
) -> isize {
    ffi_boundary!(-libc::ENOTRECOVERABLE as isize, {
        const CALL: &str = "pfn_sg_copy_from_buffer";
        transfer(
            CALL,
            sgl,
            nents,
            Transfer::ToList(buf as *const u8),
            buflen,
            0,
            0,
        )
    })
}

/// Copies `buflen` bytes of the list, from `skip` bytes into them on, to `buf` (the kernel's
/// sg_pcopy_to_buffer), as pfn_sg_pcopy_from_buffer does the other way.
///
/// Returns the bytes copied (fewer than `buflen` when the list ends first), or the errors of
/// pfn_sg_pcopy_from_buffer but PFN_SG_PERSIST's (there are no flags). They are found as the
/// copy goes: after an error, the bytes of `buf` are unspecified (the list is never written).
///
/// # Safety
/// As pfn_sg_pcopy_from_buffer; `buf` is writable for `buflen` bytes.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_pcopy_to_buffer(
    sgl: *const pfn_sg,
    nents: c_uint,
    buf: *mut c_void,
    buflen: usize,
    skip: u64,
) -> isize {
    ffi_boundary!(-libc::ENOTRECOVERABLE as isize, {
        const CALL: &str = "pfn_sg_pcopy_to_buffer";
        transfer(
            CALL,
            sgl,
            nents,
            Transfer::FromList(buf as *mut u8),
            buflen,
            skip,
            0,
        )
    })
}

/// pfn_sg_pcopy_to_buffer with `skip` 0 (the kernel's sg_copy_to_buffer).
///
/// # Safety
/// As pfn_sg_pcopy_to_buffer.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_copy_to_buffer(
    sgl: *const pfn_sg,
    nents: c_uint,
    buf: *mut c_void,
    buflen: usize,
) -> isize {
    ffi_boundary!(-libc::ENOTRECOVERABLE as isize, {
        const CALL: &str = "pfn_sg_copy_to_buffer";
        transfer(
            CALL,
            sgl,
            nents,
            Transfer::FromList(buf as *mut u8),
            buflen,
            0,
            0,
        )
    })
}

/// Zeroes `buflen` bytes of the list from `skip` bytes into them on (the kernel's
/// sg_zero_buffer), as pfn_sg_pcopy_from_buffer writes; `flags` 0 or PFN_SG_PERSIST.
///
/// Returns the bytes zeroed, or the errors of pfn_sg_pcopy_from_buffer (found before anything
/// is written; `buflen` over PTRDIFF_MAX is -EINVAL).
///
/// # Safety
/// As pfn_sg_pcopy_from_buffer (there is no buffer).
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_zero_buffer(
    sgl: *const pfn_sg,
    nents: c_uint,
    buflen: usize,
    skip: u64,
    flags: u32,
) -> isize {
    ffi_boundary!(-libc::ENOTRECOVERABLE as isize, {
        const CALL: &str = "pfn_sg_zero_buffer";
        transfer(CALL, sgl, nents, Transfer::Zero, buflen, skip, flags)
    })
}

// ---- the mapping iterator ----

const MITER_STARTED: u32 = 0x5347_4d01;
const MITER_MAPPED: u32 = 0x5347_4d02;
const MITER_ENDED: u32 = 0x5347_4d03;
const MITER_STOPPED: u32 = 0x5347_4d04;
const MITER_FLAGS: u32 = PFN_SG_MITER_TO_SG | PFN_SG_MITER_FROM_SG | PFN_SG_PERSIST;

impl pfn_sg_miter {
    fn walk(&self) -> Walk {
        Walk {
            start: self.priv_start,
            cur: self.priv_cur,
            left: self.priv_left,
            brent: Brent {
                saved: self.priv_saved,
                power: self.priv_power,
                lam: self.priv_lam,
            },
            done: false,
            budget: 0,
        }
    }

    fn set_walk(&mut self, w: &Walk) {
        self.priv_cur = w.cur;
        self.priv_left = w.left;
        self.priv_saved = w.brent.saved;
        self.priv_power = w.brent.power;
        self.priv_lam = w.brent.lam;
    }

    /// Ends the mapped chunk: makes its consumed bytes durable when asked, releases its kmap
    /// and moves the position past them. Errors (with their messages): `Invalid` when this
    /// thread holds no kmap of the chunk (another thread's iterator: the chunk stays mapped);
    /// an msync error (the chunk is released).
    fn unmap(&mut self) -> Result<()> {
        if self.priv_state != MITER_MAPPED {
            return Ok(());
        }
        let used = self.consumed.min(self.length);
        let addr = self.addr as usize;
        let mut result = Ok(());
        if self.priv_flags & (PFN_SG_MITER_TO_SG | PFN_SG_PERSIST)
            == PFN_SG_MITER_TO_SG | PFN_SG_PERSIST
        {
            // SAFETY: the chunk is still mapped by this iterator's kmap.
            result = unsafe { crate::pmem::persist(addr, used) }
                .map_err(|e| sg::msync_failed(e, addr, used));
        }
        if !space::kunmap(addr) {
            return Err(errmsg::invalid(format_args!(
                "this thread holds no kmap of the iterator's chunk at {addr:p} (another \
                 thread's iterator? the chunk stays mapped)",
                addr = self.addr
            )));
        }
        self.priv_pos += used as u64;
        self.priv_state = MITER_STARTED;
        self.addr = ptr::null_mut();
        self.length = 0;
        self.consumed = 0;
        result
    }

    /// Ends the iteration with error `e` (kept for later calls), from the call named `call`.
    fn end_with(&mut self, call: &str, e: Error) -> c_int {
        self.priv_state = MITER_ENDED;
        self.priv_error = fail(call, e);
        self.priv_error
    }

    /// For a call on an iterator in state `priv_state` that is neither started nor mapped:
    /// what it returns (0 at the end, the error an ended iterator keeps, -EINVAL when it
    /// is not started), with the message of a failure.
    #[cold]
    fn not_running(&self, call: &str) -> c_int {
        match self.priv_state {
            MITER_ENDED if self.priv_error == 0 => 0,
            MITER_ENDED => {
                let n = -self.priv_error;
                let kept = "(kept until it is started again)";
                let e = match errno_name(n) {
                    Some(name) => errmsg::with(
                        Error::Os(n),
                        format_args!("an earlier call ended the iteration with -{name} {kept}"),
                    ),
                    None => errmsg::with(
                        Error::Os(n),
                        format_args!("an earlier call ended the iteration with errno {n} {kept}"),
                    ),
                };
                fail(call, e)
            }
            MITER_STOPPED => invalid(call, format_args!("the iterator is stopped")),
            state => invalid(
                call,
                format_args!(
                    "the iterator is not started (state {state:#x}: never started, or not a \
                     pfn_sg_miter)"
                ),
            ),
        }
    }
}

/// The name of an errno the scatterlist calls return.
fn errno_name(n: c_int) -> Option<&'static str> {
    Some(match n {
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENXIO => "ENXIO",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::EIO => "EIO",
        _ => return None,
    })
}

fn miter_state_known(state: u32) -> bool {
    matches!(
        state,
        MITER_STARTED | MITER_MAPPED | MITER_ENDED | MITER_STOPPED
    )
}

/// Starts iterating over the list's bytes (the kernel's sg_miter_start); nothing is mapped
/// until pfn_sg_miter_next. `nents` bounds the walk as in pfn_sg_pcopy_from_buffer. `flags`:
/// PFN_SG_MITER_FROM_SG (the caller reads) and/or PFN_SG_MITER_TO_SG (the caller writes),
/// plus PFN_SG_PERSIST with PFN_SG_MITER_TO_SG to have the consumed bytes of each chunk made
/// durable (by their mapping's method) when the iterator leaves it.
///
/// Each chunk is one kmap of the calling thread (kmap_atomic_pfn_t_len), held from the
/// pfn_sg_miter_next that maps it to the next call on the iterator: unregistering its range
/// waits only for that chunk, and is -EDEADLK on this thread meanwhile. So start, next, skip
/// and stop one iterator on one thread; stop it before the thread ends (or the chunk stays
/// held until it does).
///
/// Returns 0; -EINVAL when `miter` is NULL, an unknown flag or PFN_SG_PERSIST without
/// PFN_SG_MITER_TO_SG, or `sgl` NULL, not 8-aligned or a link with `nents` > 0 (`*miter` is
/// then not started). `*miter` is not read: starting one that still has a chunk mapped
/// leaves that chunk's kmap held until the thread ends (stop it first).
///
/// # Safety
/// `miter` is NULL or points to a writable pfn_sg_miter; the list stays readable until the
/// iterator is stopped.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_miter_start(
    miter: *mut pfn_sg_miter,
    sgl: *const pfn_sg,
    nents: c_uint,
    flags: u32,
) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_miter_start";
        let Some(m) = miter.as_mut() else {
            return invalid(CALL, format_args!("miter is NULL"));
        };
        if flags & !MITER_FLAGS != 0 {
            return invalid(
                CALL,
                format_args!(
                    "flags {flags:#x} has unknown bits (known: PFN_SG_MITER_FROM_SG, \
                     PFN_SG_MITER_TO_SG, PFN_SG_PERSIST)"
                ),
            );
        }
        if flags & PFN_SG_PERSIST != 0 && flags & PFN_SG_MITER_TO_SG == 0 {
            return invalid(
                CALL,
                format_args!(
                    "flags {flags:#x} has PFN_SG_PERSIST without PFN_SG_MITER_TO_SG (only \
                     written bytes are made durable)"
                ),
            );
        }
        let w = match Walk::new(sgl, u64::from(nents)) {
            Ok(w) => w,
            Err(e) => return fail(CALL, e),
        };
        *m = pfn_sg_miter {
            addr: ptr::null_mut(),
            length: 0,
            consumed: 0,
            priv_start: w.start,
            priv_cur: w.cur,
            priv_pos: 0,
            priv_left: w.left,
            priv_saved: w.brent.saved,
            priv_power: w.brent.power,
            priv_lam: w.brent.lam,
            priv_flags: flags,
            priv_state: if w.done { MITER_ENDED } else { MITER_STARTED },
            priv_error: 0,
            priv_reserved: 0,
        };
        0
    })
}

/// Ends the current chunk (when one is mapped: its first `consumed` bytes count as used; with
/// PFN_SG_PERSIST they are made durable; the kmap is released) and maps the next one (the
/// kernel's sg_miter_next): `addr`, `length` and `consumed` (= `length`) describe it.
///
/// Returns 1 when a chunk is mapped; 0 at the end of the list (nothing mapped; again 0 after);
/// or a negative errno, nothing mapped, and the same error again on later calls: the list
/// errors of pfn_sg_pcopy_from_buffer (-EINVAL, -EFAULT, -ELOOP, -EOVERFLOW, -ENXIO for a
/// frame in no registered range), -ENOMEM / -EAGAIN as for a thread's first kmap, the errno
/// of msync(2) from making the last chunk durable (the next chunk is then not mapped); -EINVAL
/// when `miter` is NULL or not started, or its chunk was mapped by another thread (it stays
/// mapped).
///
/// # Safety
/// `miter` is NULL or points to a pfn_sg_miter.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_miter_next(miter: *mut pfn_sg_miter) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_miter_next";
        let Some(m) = miter.as_mut() else {
            return invalid(CALL, format_args!("miter is NULL"));
        };
        match m.priv_state {
            MITER_STARTED | MITER_MAPPED => {}
            _ => return m.not_running(CALL),
        }
        if let Err(e) = m.unmap() {
            if e == Error::Invalid {
                return fail(CALL, e);
            }
            return m.end_with(CALL, e);
        }
        let mut walk = m.walk();
        loop {
            // The current entry's length, or none before the first.
            let have = if walk.cur.is_null() {
                None
            } else {
                Some(entry(walk.cur))
            };
            match have {
                Some(e) if m.priv_pos < u64::from(e.len) => {
                    match setup_guard(|| sg::map_piece(&e, m.priv_pos)) {
                        Ok((addr, len)) => {
                            m.set_walk(&walk);
                            m.addr = addr as *mut c_void;
                            m.length = len;
                            m.consumed = len;
                            m.priv_state = MITER_MAPPED;
                            return 1;
                        }
                        Err(err) => {
                            m.set_walk(&walk);
                            return m.end_with(CALL, err);
                        }
                    }
                }
                Some(e) => m.priv_pos -= u64::from(e.len),
                None => {}
            }
            match walk.next() {
                Some(Ok(e)) => {
                    // Entries before the position are only checked.
                    if let Err(err) = e.start() {
                        m.set_walk(&walk);
                        return m.end_with(CALL, err);
                    }
                }
                Some(Err(err)) => {
                    m.set_walk(&walk);
                    return m.end_with(CALL, err);
                }
                None => {
                    m.set_walk(&walk);
                    m.priv_state = MITER_ENDED;
                    m.priv_error = 0;
                    return 0;
                }
            }
        }
    })
}

/// Ends the current chunk as pfn_sg_miter_next does, then moves `offset` bytes further (the
/// kernel's sg_miter_skip): the next pfn_sg_miter_next maps from there. Skipping past the end
/// is not an error (next then returns 0).
///
/// Returns 0; -EINVAL (NULL, not started, or the chunk was mapped by another thread);
/// -EOVERFLOW when the position passes 2^64 bytes; an msync error from making the chunk
/// durable; the error an ended iterator keeps.
///
/// # Safety
/// `miter` is NULL or points to a pfn_sg_miter.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_miter_skip(miter: *mut pfn_sg_miter, offset: u64) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_miter_skip";
        let Some(m) = miter.as_mut() else {
            return invalid(CALL, format_args!("miter is NULL"));
        };
        match m.priv_state {
            MITER_STARTED | MITER_MAPPED => {}
            _ => return m.not_running(CALL),
        }
        if let Err(e) = m.unmap() {
            if e == Error::Invalid {
                return fail(CALL, e);
            }
            return m.end_with(CALL, e);
        }
        match m.priv_pos.checked_add(offset) {
            Some(p) => {
                m.priv_pos = p;
                0
            }
            None => {
                let e = errmsg::with(
                    Error::Overflow,
                    format_args!(
                        "position {:#x} in the current entry + offset {offset:#x} passes 2^64 \
                         bytes",
                        m.priv_pos
                    ),
                );
                m.end_with(CALL, e)
            }
        }
    })
}

/// Ends the iteration (the kernel's sg_miter_stop): ends the current chunk as
/// pfn_sg_miter_next does (durable with PFN_SG_PERSIST) and releases its kmap. Stopping again,
/// or stopping a zeroed pfn_sg_miter that was never started, does nothing.
///
/// Returns 0; -EINVAL when `miter` is NULL or not a pfn_sg_miter (garbage), or its chunk was
/// mapped by another thread (it stays mapped: stop it there); the errno of msync(2) (the chunk
/// is released anyway).
///
/// # Safety
/// `miter` is NULL or points to a pfn_sg_miter.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_miter_stop(miter: *mut pfn_sg_miter) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_miter_stop";
        let Some(m) = miter.as_mut() else {
            return invalid(CALL, format_args!("miter is NULL"));
        };
        if m.priv_state == 0 {
            return 0;
        }
        if !miter_state_known(m.priv_state) {
            return invalid(
                CALL,
                format_args!("*miter is not a pfn_sg_miter (state {:#x})", m.priv_state),
            );
        }
        let result = m.unmap();
        if result == Err(Error::Invalid) {
            return fail(CALL, Error::Invalid);
        }
        m.priv_state = MITER_STOPPED;
        m.addr = ptr::null_mut();
        m.length = 0;
        m.consumed = 0;
        status(CALL, result)
    })
}

// ---- iovecs ----

/// Fills `iov` with the addresses of the list's bytes, from `skip` bytes into them on and at
/// most `len` bytes (UINT64_MAX: all), translated in the open read section `*s`, so that the
/// list feeds readv/writev/preadv2/io_uring directly. Pieces that continue each other in
/// virtual memory (within an entry across frames and ranges that continue each other, and
/// across entries) are merged into one iovec. The addresses stay valid until `*s` closes
/// (an object-bound section from pfn_section_open may outlive this thread: an I/O completion
/// elsewhere can close it). Writes nothing to `*s`, so other threads may translate in an
/// object-bound section at the same time.
///
/// Returns how many iovecs were filled (0 .. `iovcnt`), and writes to `*bytes` (when not
/// NULL) the bytes they cover: `len`, or fewer when the list ends or all `iovcnt` iovecs are
/// used (call again with `skip` + `*bytes` for the rest). Errors (negative errno): the list
/// errors of pfn_sg_pcopy_from_buffer (-EINVAL, -EFAULT, -ELOOP, -EOVERFLOW; -ENXIO for a
/// frame no range visible in the section holds); -EINVAL also when `s` is NULL or not open,
/// `iovcnt` < 0, or `iov` NULL with `iovcnt` > 0. On an error `*bytes` is not written and the
/// iovecs are unspecified. Async-signal-safe once the thread is set up (no lock, no
/// allocation; see pfn_thread_init).
///
/// # Safety
/// `*s` is an open section; the list is readable; `iov` is writable for `iovcnt` iovecs;
/// `bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pfn_sg_to_iovec(
    s: *mut pfn_section,
    sgl: *const pfn_sg,
    nents: c_uint,
    skip: u64,
    len: u64,
    iov: *mut iovec,
    iovcnt: c_int,
    bytes: *mut u64,
) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_sg_to_iovec";
        let Some(s) = s.as_ref() else {
            return invalid(CALL, format_args!("s is NULL"));
        };
        if s.reader.is_null() {
            return invalid(CALL, format_args!("the section *s is not open"));
        }
        if iovcnt < 0 {
            return invalid(CALL, format_args!("iovcnt {iovcnt} is negative"));
        }
        if iov.is_null() && iovcnt > 0 {
            return invalid(CALL, format_args!("iov is NULL with iovcnt {iovcnt}"));
        }
        let walk = match Walk::new(sgl, u64::from(nents)) {
            Ok(w) => w,
            Err(e) => return fail(CALL, e),
        };
        let seed = Block {
            first: s.cache_pfn,
            pages: s.cache_pages,
            addr: s.cache_addr,
        };
        let mut t = sg::Translator::new(s.root, seed);
        let result = sg::iovecs(&mut t, walk, skip, len, iovcnt as usize, |i, base, n| {
            *iov.add(i) = iovec {
                iov_base: base as *mut c_void,
                iov_len: n,
            };
        });
        match result {
            Ok((count, covered)) => {
                if let Some(b) = bytes.as_mut() {
                    *b = covered;
                }
                count as c_int
            }
            Err(e) => fail(CALL, e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pfn: u64, len: u32) -> pfn_sg {
        pfn_sg {
            pfn: pfn_t { val: pfn },
            offset: 0,
            length: len,
        }
    }

    #[test]
    fn the_walk_catches_loops_links_and_missing_ends() {
        unsafe {
            let mut a = [data(1, 10), data(2, 20), data(3, 0)];
            let mut b = [data(4, 40), data(5, 0)];
            pfn_sg_mark_end(&mut b[0]);
            assert_eq!(pfn_sg_chain(a.as_mut_ptr(), 3, b.as_mut_ptr()), 0);
            assert_eq!(pfn_sg_nents(a.as_mut_ptr()), 3);
            assert_eq!(pfn_sg_nents_for_len(a.as_mut_ptr(), 31), 3);
            assert_eq!(pfn_sg_nents_for_len(a.as_mut_ptr(), 71), -libc::EINVAL);
            assert_eq!(pfn_sg_last(a.as_mut_ptr(), 9), b.as_mut_ptr());
            assert_eq!(pfn_sg_last(a.as_mut_ptr(), 2), a.as_mut_ptr().add(1));
            // b links back to a: a loop.
            pfn_sg_unmark_end(&mut b[0]);
            assert_eq!(pfn_sg_chain(b.as_mut_ptr(), 2, a.as_mut_ptr()), 0);
            assert_eq!(pfn_sg_nents(a.as_mut_ptr()), -libc::ELOOP);
            let w = Walk::new(a.as_ptr(), 1000).unwrap();
            assert_eq!(w.take(10).last(), Some(Err(Error::Loop)));
            // The budget ends a walk that finds no end mark.
            let w = Walk::new(a.as_ptr(), 2).unwrap();
            let got: Vec<_> = w.map(|e| e.map(|e| e.len)).collect();
            assert_eq!(got, vec![Ok(10), Ok(20), Err(Error::Invalid)]);
            // A link to NULL, to itself, to another link.
            let (pa, pb) = (a.as_mut_ptr(), b.as_mut_ptr());
            (*pb.add(1)).pfn.val = PFN_SG_CHAIN;
            assert_eq!(pfn_sg_nents(pa), -libc::EFAULT);
            (*pb.add(1)).pfn.val = pb.add(1) as u64 | PFN_SG_CHAIN;
            assert_eq!(pfn_sg_nents(pa), -libc::ELOOP);
            (*pb.add(1)).pfn.val = pa.add(2) as u64 | PFN_SG_CHAIN;
            assert_eq!(pfn_sg_nents(pa), -libc::EINVAL);
        }
    }

    #[test]
    fn tables_chain_their_arrays() {
        unsafe {
            for n in [1u32, 254, 255, 256, 509, 510, 1000] {
                let mut t = pfn_sg_table {
                    sgl: ptr::null_mut(),
                    nents: 0,
                    orig_nents: 0,
                };
                assert_eq!(pfn_sg_alloc_table(&mut t, n), 0);
                assert_eq!(pfn_sg_nents(t.sgl), n as c_int);
                assert!(pfn_sg_is_last(pfn_sg_last(t.sgl, n)));
                pfn_sg_free_table(&mut t);
                assert!(t.sgl.is_null());
                pfn_sg_free_table(&mut t);
            }
        }
    }
}
