//! DAX devices: direct_access under a read section, kill, and the durable I/O path.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::ptr;

use super::device::{device, pfn_device};
use super::encoding::pfn_t;
use super::handles::{Handles, Ref};
use super::{fail, ffi_boundary, ffi_call, null_errno, setup_guard};
use crate::daxdev::{DaxDev, Io};
use crate::error::Error;

/// A DAX device: one registered range, or a physically contiguous run of ranges of one
/// device, exposed by page offset (mainline's `struct dax_device` with the pmem driver's
/// direct_access). Opaque; from pfn_dax_create, freed by
/// pfn_dax_destroy. Handles are checked on every call and never reused.
pub struct pfn_dax {
    _private: [u8; 0],
}

pub(crate) static DAXES: Handles<DaxDev> = Handles::new(7);

/// The refusal of a handle that names no live DAX device.
fn not_a_dax(dax: *const pfn_dax) -> Error {
    crate::errmsg::invalid(format_args!(
        "{dax:p} is not a live DAX device (NULL, destroyed, or never one)"
    ))
}

fn handle_error(dax: *const pfn_dax, e: Error) -> Error {
    match e {
        Error::Invalid => not_a_dax(dax),
        e => e,
    }
}

/// A counted reference to a live DAX device, for calls that copy or wait.
fn get(dax: *const pfn_dax) -> crate::Result<Ref<DaxDev>> {
    DAXES.get(dax as usize).map_err(|e| handle_error(dax, e))
}

/// A byte count or a negative errno, from the call named `call`.
fn count(call: &str, r: crate::Result<u64>) -> i64 {
    match r {
        // At most the device's size, below 2^63.
        Ok(n) => n as i64,
        Err(e) => i64::from(fail(call, e)),
    }
}

/// Creates a DAX device over the range that `dev` registered at physical address `start`
/// (the pmem driver's role): page offset 0 is the range's first frame, and the device has as
/// many pages as the range; for a range whose page descriptors sit at its head
/// (PFN_MEMMAP_IN_RANGE), its first frame after them (the pmem driver's data offset: the
/// descriptors are not the device's). The range stays `dev`'s: the DAX device does not keep it
/// registered, and unregistering it (or freeing `dev`) makes every later access fail with
/// ENXIO; kill or destroy the DAX device before, as a driver kills its dax_device before it
/// releases the memory. Several DAX devices may wrap one range.
///
/// Returns the device, to be destroyed with pfn_dax_destroy, or NULL with errno: EINVAL when
/// `dev` is not a live device; ENOENT when `dev` has no registered range at `start` (none, or
/// one being unregistered); ENOMEM.
/// Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_dax_create(dev: *mut pfn_device, start: u64) -> *mut pfn_dax {
    ffi_call!(ptr::null_mut(), {
        match device(dev)
            .and_then(|d| DaxDev::new(&d, start))
            .and_then(|dax| DAXES.add(dax))
        {
            Ok(h) => h as *mut pfn_dax,
            Err(e) => null_errno("pfn_dax_create", e),
        }
    })
}

/// Creates a DAX device over physical bytes `start .. start + size` that several ranges of
/// `dev` cover (the pmem driver's namespace made of several registrations: a pool mapped as
/// several files, or one mapping registered as several ranges): a range of `dev` starts at
/// `start`, each next one starts where the previous one ends, and the last one ends at
/// `start + size`. The ranges may lie anywhere in virtual memory (they need not be adjacent
/// there). Page offset 0 is the frame at `start`; the device has `size / PFN_PAGE_SIZE` pages
/// (less the frames of page descriptors kept at the first range's head, where page offset 0
/// is the first frame after them; only the first range of a span may keep them there). A span of one range is what pfn_dax_create(dev, start) makes.
///
/// The ranges are recorded as they are at creation; each stays `dev`'s, as for
/// pfn_dax_create: unregistering one of them (or freeing `dev`) makes every later access to
/// its pages fail with ENXIO, while the pages of the others are still served (a read or write
/// that reaches it stops there with a short count). pfn_dax_direct_access reports contiguous
/// pages up to the end of the range holding `pgoff` at most (even when the next range
/// continues it in memory); reads, writes and zeroes cross from range to range.
///
/// Returns the device, to be destroyed with pfn_dax_destroy, or NULL with errno:
/// EINVAL: `dev` is not a live device; `size` is 0 or not a multiple of PFN_PAGE_SIZE;
///         `start + size` passes 2^64; the ranges do not cover the span exactly: a gap (no
///         range where the previous one ends, a range of another device there, one being
///         unregistered, or a later range that keeps page descriptors at its head) or a span that ends inside a range (pfn_errormsg names the address);
/// ENOENT: `dev` has no registered range starting at `start` (none, one being unregistered,
///         or `start` lies inside a range);
/// ENOMEM.
/// Lookup of the range holding an offset is a binary search (O(log ranges)).
/// Thread rules: any thread; concurrent registrations and unregistrations on `dev` are
/// seen or not, each range on its own.
#[no_mangle]
pub extern "C" fn pfn_dax_create_span(dev: *mut pfn_device, start: u64, size: u64) -> *mut pfn_dax {
    ffi_call!(ptr::null_mut(), {
        match device(dev)
            .and_then(|d| DaxDev::span(&d, start, size))
            .and_then(|dax| DAXES.add(dax))
        {
            Ok(h) => h as *mut pfn_dax,
            Err(e) => null_errno("pfn_dax_create_span", e),
        }
    })
}

/// Kills `dax` (if it is alive) and frees it: as pfn_dax_kill, then the handle is invalid
/// (EINVAL) for every later call, also once other DAX devices are created. NULL is a no-op.
/// When two calls destroy the same device at once, one destroys it and the other returns
/// -EINVAL. The range under it stays registered.
///
/// Returns 0; -EINVAL when `dax` is not a live DAX device; -EDEADLK when the calling thread
/// holds a kmap or read section (it would wait for itself): nothing changes and `dax` stays
/// valid; -ENOMEM / -EAGAIN as for a thread's first use.
/// Thread rules: any thread, concurrently with every other call on `dax` (those in flight
/// finish or fail with ENXIO; later ones get EINVAL). Not a cancellation point (cancellation
/// is held off while it waits).
#[no_mangle]
pub extern "C" fn pfn_dax_destroy(dax: *mut pfn_dax) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_dax_destroy";
        if dax.is_null() {
            return 0;
        }
        if let Err(e) = crate::space::check_not_reading() {
            return fail(CALL, e);
        }
        let killed = match DAXES.kill(dax as usize) {
            Ok(k) => k,
            Err(e) => return fail(CALL, handle_error(dax, e)),
        };
        killed.object().mark_dead();
        // One grace period covers the sections that saw the device alive and the lookups of
        // the handle in flight.
        killed.release();
        0
    })
}

/// Mainline's kill_dax (the "unbind" of the seed thread): from the moment it is called, every
/// new pfn_dax_direct_access and every I/O chunk on `dax` fails with ENXIO (pfn_dax_alive
/// returns 0); then it waits until every read section that could have seen `dax` alive, on
/// any thread, has closed (a grace period), so addresses from direct_access are no longer in
/// use when it returns, and the range may be unregistered and unmapped (grace periods are
/// global: it also waits for unrelated kmaps and sections open when it began, as
/// pfn_unregister_range does). I/O calls in flight stop at their next chunk (they return the
/// bytes done so far). Killing a dead device waits the same way and returns 0. A killed
/// device cannot be revived; destroy it.
///
/// Returns 0; -EINVAL when `dax` is not a live DAX device; -EDEADLK when the calling thread
/// holds a kmap or read section (nothing changes: `dax` stays alive); -ENOMEM / -EAGAIN as
/// for a thread's first use.
/// Thread rules: any thread; concurrent kills all wait and all return 0. Not a cancellation
/// point (cancellation is held off while it waits).
#[no_mangle]
pub extern "C" fn pfn_dax_kill(dax: *mut pfn_dax) -> c_int {
    ffi_call!(-libc::ENOTRECOVERABLE, {
        const CALL: &str = "pfn_dax_kill";
        match get(dax).and_then(|d| d.kill()) {
            Ok(()) => 0,
            Err(e) => fail(CALL, e),
        }
    })
}

/// Mainline's dax_alive: 1 while `dax` is alive, 0 once pfn_dax_kill has begun on it (also
/// while the kill still waits for sections), -EINVAL when `dax` is not a live DAX device
/// (destroyed, or never one). Takes no lock. Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_dax_alive(dax: *const pfn_dax) -> c_int {
    ffi_boundary!(-libc::ENOTRECOVERABLE, {
        match setup_guard(|| DAXES.with(dax as usize, |d| d.alive())) {
            Ok(alive) => c_int::from(alive),
            Err(e) => fail("pfn_dax_alive", handle_error(dax, e)),
        }
    })
}

/// The number of pages `dax` exposes (page offsets 0 .. pages - 1; bytes: pages *
/// PFN_PAGE_SIZE), also after a kill; or -EINVAL when `dax` is not a live DAX device.
/// Takes no lock. Thread rules: any thread.
#[no_mangle]
pub extern "C" fn pfn_dax_pages(dax: *const pfn_dax) -> i64 {
    ffi_boundary!(-i64::from(libc::ENOTRECOVERABLE), {
        match setup_guard(|| DAXES.with(dax as usize, |d| d.pages())) {
            Ok(pages) => pages as i64,
            Err(e) => i64::from(fail("pfn_dax_pages", handle_error(dax, e))),
        }
    })
}

/// Mainline's dax_direct_access: how many pages from page offset `pgoff` are contiguous in
/// memory and mapped, at most `nr_pages` (the rest of the range holding `pgoff` at most: a
/// frame past the device's end is not the device's, and a device over several ranges
/// (pfn_dax_create_span) reports each range on its own, even when the next one continues it
/// in memory); the first one's address in `*kaddr` and its pfn_t in
/// `*pfn`, with PFN_DEV, and PFN_MAP when the range was registered with page descriptors
/// (pfn_t_devmap is then true). `nr_pages` 0 returns 0 and still fills both. `kaddr` and
/// `pfn` may be NULL (not wanted); they are written only on success.
///
/// Valid only inside a read section of the calling thread, as mainline requires
/// dax_read_lock(): open one with pfn_read_lock (or PFN_SECTION_SCOPE) first. The address
/// stays valid until that section closes; pfn_dax_kill and unregistering the range wait for it.
/// Object-bound sections (pfn_section_open) are not accepted: the call cannot see them.
///
/// Returns the page count (>= 0), or:
/// -EINVAL: `dax` not a live DAX device, or no thread-bound read section open on this thread;
/// -ERANGE: `pgoff` at or beyond the device's pages;
/// -ENXIO:  the device has been killed (or a kill has begun), or the range holding `pgoff` is
///          no longer registered (or is registered again at another address).
/// Takes no lock and writes nothing shared. Thread rules: any thread, inside its own section.
///
/// # Safety
/// `kaddr` is NULL or points to a writable `void *`; `pfn` is NULL or points to a writable
/// pfn_t.
#[no_mangle]
pub unsafe extern "C" fn pfn_dax_direct_access(
    dax: *const pfn_dax,
    pgoff: u64,
    nr_pages: u64,
    kaddr: *mut *mut c_void,
    pfn: *mut pfn_t,
) -> i64 {
    ffi_boundary!(-i64::from(libc::ENOTRECOVERABLE), {
        const CALL: &str = "pfn_dax_direct_access";
        let found = setup_guard(|| DAXES.with(dax as usize, |d| d.direct_access(pgoff, nr_pages)))
            .map_err(|e| handle_error(dax, e))
            .and_then(|r| r);
        match found {
            Ok(a) => {
                if let Some(k) = kaddr.as_mut() {
                    *k = a.addr as *mut c_void;
                }
                if let Some(p) = pfn.as_mut() {
                    *p = a.pfn.into();
                }
                a.pages as i64
            }
            Err(e) => i64::from(fail(CALL, e)),
        }
    })
}

/// Runs one copy through the caller's buffer: buffer and handle checks, then the copy.
///
/// # Safety
/// As for [`DaxDev::io`].
unsafe fn io(call: &str, dax: *const pfn_dax, off: u64, len: u64, op: Io, buf_null: bool) -> i64 {
    if buf_null && len != 0 {
        return i64::from(fail(
            call,
            crate::errmsg::invalid(format_args!("buf is NULL and len is {len:#x}")),
        ));
    }
    count(call, get(dax).and_then(|d| d.io(off, len, op)))
}

/// Reads `len` bytes at byte offset `off` of `dax` into `buf` (mainline's dax_iomap_rw for a
/// read): through direct_access, page, chunk and range boundaries crossed as needed (a chunk
/// never spans two ranges), each chunk (up to 256 KiB) inside a read section of its own, so a
/// kill waits for one chunk at most.
///
/// Returns the bytes read, like pread: `len`, or fewer when the device ends first (0 at or
/// after its end, and for `len` 0 on a live device), or when an error stopped it after some
/// bytes (the next call reports the error); or, when nothing was read:
/// -EINVAL:    `dax` not a live DAX device; `buf` NULL with `len` > 0;
/// -EOVERFLOW: `off + len` reaches 2^64 (is not a 64-bit offset);
/// -ENXIO:     the device has been killed, or the range holding `off` is no longer
///             registered (a device over several ranges: a call that reaches such a range
///             after some bytes returns those bytes);
/// -ENOMEM, -EAGAIN as for a thread's first use.
/// On an error, `buf` may hold part of the bytes. Thread rules: any thread, also inside its own
/// sections and kmaps; concurrent reads and writes of the same bytes see each other's bytes in
/// no promised order (as memcpy would).
///
/// # Safety
/// `buf` is NULL or writable for `len` bytes (it may lie in registered memory).
#[no_mangle]
pub unsafe extern "C" fn pfn_dax_read(
    dax: *const pfn_dax,
    off: u64,
    buf: *mut c_void,
    len: usize,
) -> i64 {
    // Not ffi_call!: a read takes no lock and reaches no cancellation point once the thread
    // is set up (setup_guard holds cancellation off for its set-up).
    ffi_boundary!(-i64::from(libc::ENOTRECOVERABLE), {
        setup_guard(|| {
            io(
                "pfn_dax_read",
                dax,
                off,
                len as u64,
                Io::Read(buf as *mut u8),
                buf.is_null(),
            )
        })
    })
}

/// Writes `len` bytes from `buf` at byte offset `off` of `dax`, and makes them durable before
/// it returns, with the memory's method (chosen by address, as pfn_persist does): plain stores
/// and msync in a PAGE-granularity mapping of this library (pfn_pmem_map), otherwise
/// non-temporal or flushed stores and a drain (CACHE_LINE, BYTE, and memory mapped by other
/// means). Chunked like pfn_dax_read.
///
/// Returns the bytes written, like pwrite: `len`, or fewer at the device's end (0 at or after
/// it, and for `len` 0 on a live device), or when an error stopped it after some bytes; every byte counted is
/// written and durable, bytes past the count may or may not have been written. When nothing
/// was written: -EINVAL, -EOVERFLOW, -ENXIO as pfn_dax_read; an msync error (e.g. -EIO) as a
/// negative errno.
/// Thread rules: as pfn_dax_read.
///
/// # Safety
/// `buf` is NULL or readable for `len` bytes (it may overlap the device's memory).
#[no_mangle]
pub unsafe extern "C" fn pfn_dax_write(
    dax: *mut pfn_dax,
    off: u64,
    buf: *const c_void,
    len: usize,
) -> i64 {
    // As pfn_dax_read; msync is made as a raw system call (no cancellation point), as the
    // durable scatterlist copies do.
    ffi_boundary!(-i64::from(libc::ENOTRECOVERABLE), {
        setup_guard(|| {
            io(
                "pfn_dax_write",
                dax,
                off,
                len as u64,
                Io::Write(buf as *const u8),
                buf.is_null(),
            )
        })
    })
}

/// Zeroes `len` bytes at byte offset `off` of `dax`, durably (as pfn_dax_write of zeroes).
///
/// Returns the bytes zeroed (fewer at the device's end; 0 at or after it, and for `len` 0 on a live device), or
/// when nothing was zeroed: -EINVAL (`dax` not a live DAX device), -EOVERFLOW, -ENXIO, an msync
/// error, as pfn_dax_write. Thread rules: as pfn_dax_read.
#[no_mangle]
pub extern "C" fn pfn_dax_zero(dax: *mut pfn_dax, off: u64, len: u64) -> i64 {
    ffi_boundary!(-i64::from(libc::ENOTRECOVERABLE), {
        // SAFETY: zeroing touches only the device's own memory.
        let zeroed = setup_guard(|| get(dax).and_then(|d| unsafe { d.io(off, len, Io::Zero) }));
        count("pfn_dax_zero", zeroed)
    })
}
