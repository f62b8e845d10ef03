//! DAX devices: registered ranges exposed by page offset, with a life that a kill ends
//! (mainline's `struct dax_device` with the pmem driver's `direct_access`, the seed's patch 4).
//!
//! A DAX device wraps the range a device registered at one physical start, or a physically
//! contiguous run of a device's ranges (a namespace made of several registrations: a pool
//! mapped as several files, one mapping registered in pieces), as the pmem driver wraps its
//! namespace. The ranges of a run need not be adjacent in virtual memory: the device records
//! each one (its page offset, first frame, pages and address), finds the one holding an offset
//! by binary search, and checks it on every access. `direct_access` reports contiguous pages
//! up to the end of the range holding the offset; the I/O path crosses from range to range. `direct_access` answers inside the caller's read section, as mainline
//! requires `dax_read_lock()`: the address it returns is valid until that section closes.
//! `kill` is the driver's unbind: it makes every later `direct_access` and I/O fail at once,
//! then waits for a grace period, so no section that saw the device alive is still open when
//! it returns (the memory may then be unregistered and unmapped).
//!
//! The I/O path (mainline's `dax_iomap_rw`) copies through translation, one chunk of at most
//! [`CHUNK`] bytes per read section of its own, so a kill waits for one chunk at most. Writes
//! are made durable chunk by chunk with the memory's own method, chosen by address as
//! `pmem::persist` does: plain stores and msync in a PAGE mapping of this library, otherwise
//! flushing (or non-temporal) stores and a drain.
//!
//! The device reaches its ranges through the translation tables, not through pointers kept at
//! creation: when a range is unregistered, every access to it fails with `NotMapped` (it does
//! not kill the device; the other ranges still serve). A frame that translates to another address than the range had is another
//! registration and is refused the same way.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::encoding::{Pfn, DEV, MAP, PAGE_SHIFT, PAGE_SIZE};
use crate::errmsg;
use crate::error::{Error, Result};
use crate::rcu::{self, Reader};
use crate::space::{self, Device, Holder, RangeInfo};
use crate::{persist, pmem};

/// Bytes the I/O path copies inside one read section: a kill waits for at most this much of a
/// copy in flight (tens of microseconds), while the section's cost stays negligible beside it.
const CHUNK: usize = 256 << 10;

/// One of the ranges a DAX device spans: where it begins in the device, and the range as it
/// was registered when the device was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    /// The device's page offset of the range's first frame.
    off: u64,
    range: RangeInfo,
}

/// A DAX device over one registered range, or over a physically contiguous run of ranges of
/// one device (each beginning where the previous one ends; anywhere in virtual memory).
#[derive(Debug)]
pub struct DaxDev {
    /// In physical (and page offset) order; never empty.
    parts: Vec<Part>,
    /// The first frame of the device (of `parts[0]`).
    first: u64,
    pages: u64,
    alive: AtomicBool,
}

/// A successful `direct_access`: the pages contiguous from the offset asked for, the first's
/// address and its pfn_t.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub pages: u64,
    pub addr: usize,
    pub pfn: Pfn,
}

/// What the I/O path does with the device's bytes.
#[derive(Clone, Copy, Debug)]
pub enum Io {
    /// Out of the device into `len` writable bytes at the pointer.
    Read(*mut u8),
    /// Into the device from `len` readable bytes at the pointer, made durable.
    Write(*const u8),
    /// Zeroes the device's bytes, made durable.
    Zero,
}

/// The pfn_t flags that `direct_access` reports for frames of a range registered with
/// `range_flags`: always PFN_DEV (device memory), and PFN_MAP when the range was registered
/// with page descriptors (the registration then sets PFN_MAP in its flags).
pub fn pfn_flags(range_flags: u64) -> u64 {
    DEV | (range_flags & MAP)
}

/// A read section the I/O path opens for one chunk, closed when dropped (also by a panic).
struct Section(&'static Reader);

impl Section {
    fn open() -> Result<Section> {
        let r = space::reader()?;
        if !r.has_room(1) {
            return Err(errmsg::with(
                Error::Overflow,
                format_args!("more than 16 million nested holds on this thread"),
            ));
        }
        r.enter();
        Ok(Section(r))
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl DaxDev {
    /// A DAX device over the live range `dev` registered at physical `start`.
    ///
    /// Errors: `Invalid` when the device has been freed; `NotFound` when it has no live range
    /// at `start`.
    pub fn new(dev: &Device, start: u64) -> Result<DaxDev> {
        let range = dev.range_at(start)?;
        let mut parts = Vec::new();
        reserve_part(&mut parts)?;
        parts.push(Part { off: 0, range });
        Ok(DaxDev {
            parts,
            first: range.first,
            pages: range.pages,
            alive: AtomicBool::new(true),
        })
    }

    /// A DAX device over physical bytes `start .. start + size`, which live ranges of `dev`
    /// cover exactly, each beginning where the previous one ends (they may lie anywhere in
    /// virtual memory). The ranges are recorded as they are now; each access checks that the
    /// one it touches is still registered with the same address.
    ///
    /// Errors: `Invalid` when the device has been freed, `size` is 0 or not a multiple of the
    /// page size, `start + size` passes 2^64, or the run has a gap (no range, a range of
    /// another device, or one being unregistered, where the previous one ends) or ends inside
    /// a range; `NotFound` when `dev` has no live range starting at `start`; `OutOfMemory`.
    pub fn span(dev: &Device, start: u64, size: u64) -> Result<DaxDev> {
        if size == 0 || size & (PAGE_SIZE - 1) != 0 {
            return Err(errmsg::invalid(format_args!(
                "size {size:#x} is not a positive multiple of the page size"
            )));
        }
        let Some(end) = start.checked_add(size) else {
            return Err(errmsg::invalid(format_args!(
                "start {start:#x} + size {size:#x} passes 2^64"
            )));
        };
        // The first range as pfn_dax_create finds it (ENOENT when there is none).
        let first = dev.range_at(start)?;
        let end_pfn = end >> PAGE_SHIFT;
        let mut parts = Vec::new();
        let mut range = first;
        loop {
            let next = range.first + range.pages;
            if next > end_pfn {
                return Err(errmsg::invalid(format_args!(
                    "the span {start:#x}..{end:#x} ends inside the range {:#x}..{:#x} \
                     (spans end where a range ends)",
                    range.first << PAGE_SHIFT,
                    next << PAGE_SHIFT
                )));
            }
            reserve_part(&mut parts)?;
            parts.push(Part {
                off: range.first - first.first,
                range,
            });
            if next == end_pfn {
                break;
            }
            let at = next << PAGE_SHIFT;
            range = match dev.range_holding(next)? {
                Holder::Mine(r) if r.first != next => {
                    return Err(errmsg::invalid(format_args!(
                        "the span {start:#x}..{end:#x} continues at {at:#x} in a range that \
                         keeps its page descriptors in its first {} frames \
                         (PFN_MEMMAP_IN_RANGE): only the first range of a span may",
                        r.first - r.phys_first
                    )))
                }
                Holder::Mine(r) => r,
                Holder::Other(r) => {
                    return Err(errmsg::invalid(format_args!(
                        "the span {start:#x}..{end:#x} continues at {at:#x} in the range \
                         {:#x}..{:#x} of another device",
                        r.first << PAGE_SHIFT,
                        (r.first + r.pages) << PAGE_SHIFT
                    )))
                }
                Holder::Retiring(_) => {
                    return Err(errmsg::invalid(format_args!(
                        "the span {start:#x}..{end:#x} has a gap at {at:#x}: the range there \
                         is being unregistered"
                    )))
                }
                Holder::Nothing => {
                    return Err(errmsg::invalid(format_args!(
                        "the span {start:#x}..{end:#x} has a gap at {at:#x}: no range is \
                         registered there"
                    )))
                }
            };
        }
        Ok(DaxDev {
            parts,
            first: first.first,
            // A memmap at the first range's head is not the device's (the pmem driver's
            // data offset): page 0 is its first translatable frame.
            pages: end_pfn - first.first,
            alive: AtomicBool::new(true),
        })
    }

    /// Pages the device exposes (offsets `0 .. pages()`).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Bytes the device exposes.
    pub fn size(&self) -> u64 {
        self.pages << PAGE_SHIFT
    }

    /// Physical address of the device's first byte.
    pub fn start(&self) -> u64 {
        self.first << PAGE_SHIFT
    }

    /// The ranges the device spans (1 for a device over one range).
    pub fn ranges(&self) -> usize {
        self.parts.len()
    }

    /// The part holding page offset `pgoff` (below `pages()`): a binary search, skipped for
    /// a device over one range.
    #[inline]
    fn part(&self, pgoff: u64) -> &Part {
        if self.parts.len() == 1 {
            return &self.parts[0];
        }
        let i = self.parts.partition_point(|p| p.off <= pgoff);
        &self.parts[i - 1]
    }

    /// False once a kill has begun.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Makes every later access fail (one store; no wait). [`DaxDev::kill`] also waits.
    pub fn mark_dead(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    /// Kills the device: from the moment it is called every new `direct_access` and I/O chunk
    /// fails with `NotMapped`; returns once every read section that could have seen it alive,
    /// on any thread, has closed. Killing a dead device waits the same way.
    ///
    /// Errors: `Deadlock` when the calling thread holds a kmap or section (nothing changes).
    pub fn kill(&self) -> Result<()> {
        space::check_not_reading()?;
        self.mark_dead();
        rcu::synchronize();
        Ok(())
    }

    fn dead(&self) -> Error {
        errmsg::with(
            Error::NotMapped,
            format_args!("the DAX device has been killed"),
        )
    }

    /// The address of page `pgoff` (below `pages()`) and the bytes contiguous from it inside
    /// the device, translated in the read section the caller is in.
    ///
    /// # Safety
    /// The calling thread is inside a read section (its nesting count is non-zero), which it
    /// keeps open while it uses the address.
    #[inline]
    unsafe fn locate(&self, pgoff: u64) -> Result<(usize, u64, u64)> {
        if !self.alive() {
            return Err(self.dead());
        }
        let part = self.part(pgoff);
        let in_part = pgoff - part.off;
        let pfn = Pfn(part.range.first + in_part);
        let gone = || {
            errmsg::with(
                Error::NotMapped,
                format_args!(
                    "the DAX device's range at {:#x} is no longer registered",
                    part.range.first << PAGE_SHIFT
                ),
            )
        };
        // The sole run (when every live range forms one, the common single-pool case) makes
        // the translation one comparison instead of a table walk.
        let m = space::translate_len_in_section(space::root_word(), &space::sole_run(), pfn)
            .map_err(|_| gone())?;
        if m.addr != part.range.base + ((in_part as usize) << PAGE_SHIFT) {
            return Err(gone());
        }
        // Contiguous to the end of this range at most: the next one is checked on its own.
        let to_end = (part.range.pages - in_part) << PAGE_SHIFT;
        Ok((m.addr, m.len.min(to_end), part.range.flags))
    }

    /// Mainline's `dax_direct_access`: how many pages from `pgoff` are contiguous and mapped
    /// (at most `nr_pages`; 0 when `nr_pages` is 0), the first one's address and its pfn_t
    /// (with [`pfn_flags`]). Valid only inside a thread-bound read section of the calling
    /// thread; the address stays valid until that section closes.
    ///
    /// Errors: `Invalid` when the thread has no thread-bound section open; `Os(ERANGE)` when
    /// `pgoff` is at or beyond `pages()`; `NotMapped` when the device is dead or its range is
    /// no longer registered.
    #[inline]
    pub fn direct_access(&self, pgoff: u64, nr_pages: u64) -> Result<Access> {
        let in_section = rcu::current().is_some_and(|r| r.sections.load(Ordering::Relaxed) != 0);
        if !in_section {
            return Err(errmsg::invalid(format_args!(
                "no read section is open on this thread (open one with pfn_read_lock first, \
                 as mainline requires dax_read_lock)"
            )));
        }
        if pgoff >= self.pages {
            return Err(errmsg::with(
                Error::Os(libc::ERANGE),
                format_args!(
                    "page offset {pgoff:#x} is beyond the device's {:#x} pages",
                    self.pages
                ),
            ));
        }
        // SAFETY: the thread is inside a thread-bound section, which the caller keeps open.
        let (addr, bytes, flags) = unsafe { self.locate(pgoff) }?;
        Ok(Access {
            pages: (bytes >> PAGE_SHIFT).min(nr_pages),
            addr,
            pfn: Pfn::new(self.first + pgoff, pfn_flags(flags)),
        })
    }

    /// Copies `len` bytes at byte offset `off` of the device (reads, writes or zeroes them),
    /// crossing pages, one chunk per read section. Returns the bytes done: `len`, or fewer when
    /// the device ends first (0 at or after its end). Written bytes counted are durable. An
    /// error after some bytes were done returns those bytes (a short count, as pread and
    /// pwrite do); the next call reports it.
    ///
    /// Errors: `Overflow` when `off + len` reaches 2^64; `NotMapped` when the device is dead or
    /// its range is no longer registered; `Os(errno)` of msync; setup errors of the thread's
    /// first use.
    ///
    /// # Safety
    /// The buffer of `Read` is writable and that of `Write` readable for `len` bytes (it may
    /// lie in the device's own memory).
    pub unsafe fn io(&self, off: u64, len: u64, op: Io) -> Result<u64> {
        if off.checked_add(len).is_none() {
            return Err(errmsg::with(
                Error::Overflow,
                format_args!("offset {off:#x} + length {len:#x} reaches 2^64"),
            ));
        }
        if !self.alive() {
            return Err(self.dead());
        }
        let want = len.min(self.size().saturating_sub(off));
        let mut done = 0u64;
        while done < want {
            match self.chunk(off + done, want - done, done, op) {
                Ok(n) => done += n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    /// One chunk of [`DaxDev::io`] at device offset `pos`, `at` bytes into the caller's
    /// buffer, at most `left` bytes: returns the bytes done.
    unsafe fn chunk(&self, pos: u64, left: u64, at: u64, op: Io) -> Result<u64> {
        let _section = Section::open()?;
        let page_off = pos & (PAGE_SIZE - 1);
        let (page_addr, bytes, _) = self.locate(pos >> PAGE_SHIFT)?;
        let n = (bytes - page_off).min(left).min(CHUNK as u64) as usize;
        let dst = (page_addr + page_off as usize) as *mut u8;
        let at = at as usize;
        match op {
            Io::Read(buf) => ptr::copy(dst, buf.add(at), n),
            Io::Write(buf) => durable_write(dst, Some(buf.add(at)), n)?,
            Io::Zero => durable_write(dst, None, n)?,
        }
        Ok(n as u64)
    }
}

/// Room for one more part, or `OutOfMemory` (creation fails cleanly; nothing aborts).
fn reserve_part(parts: &mut Vec<Part>) -> Result<()> {
    parts.try_reserve(1).map_err(|_| {
        errmsg::with(
            Error::OutOfMemory,
            format_args!("no memory for the DAX device's list of ranges"),
        )
    })
}

/// Writes `n` bytes at `dst` (copied from `src`, or zeroes) and makes them durable with the
/// memory's method: in a PAGE mapping of this library plain stores and msync, elsewhere
/// flushing or non-temporal stores and a drain.
///
/// # Safety
/// `dst .. dst + n` is mapped and writable (inside a read section that holds it); `src` is
/// readable for `n` bytes.
unsafe fn durable_write(dst: *mut u8, src: Option<*const u8>, n: usize) -> Result<()> {
    if pmem::needs_msync(dst as usize, n) {
        match src {
            Some(s) => ptr::copy(s, dst, n),
            None => ptr::write_bytes(dst, 0, n),
        }
        return pmem::persist(dst as usize, n).map_err(|e| {
            errmsg::with(
                e,
                format_args!("msync of {n:#x} bytes at {:#x} failed: {e}", dst as usize),
            )
        });
    }
    let flags = persist::Flags::default();
    match src {
        Some(s) => persist::copy(dst, s, n, flags),
        None => persist::fill(dst, 0, n, flags),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-aligned anonymous buffer registered as one range of a fresh device.
    struct Fixture {
        dev: Device,
        mem: Vec<u8>,
        base: usize,
        start: u64,
    }

    fn fixture(pages: usize, start: u64) -> Fixture {
        let mem = vec![0u8; (pages + 1) * PAGE_SIZE as usize];
        let base = (mem.as_ptr() as usize + PAGE_SIZE as usize - 1) & !(PAGE_SIZE as usize - 1);
        let dev = Device::new().unwrap();
        dev.register(start, start + (pages as u64) * PAGE_SIZE - 1, base)
            .unwrap();
        Fixture {
            dev,
            mem,
            base,
            start,
        }
    }

    fn in_section<R>(f: impl FnOnce() -> R) -> R {
        let r = space::reader().unwrap();
        r.open_section();
        let out = f();
        assert!(r.close_section(None));
        out
    }

    #[test]
    fn direct_access_reports_pages_address_and_flags() {
        let fx = fixture(8, 0x7100_0000_0000);
        let dax = DaxDev::new(&fx.dev, fx.start).unwrap();
        assert_eq!(dax.pages(), 8);
        // Outside a section: refused.
        assert_eq!(dax.direct_access(0, 1), Err(Error::Invalid));
        let a = in_section(|| dax.direct_access(3, 100)).unwrap();
        assert_eq!(a.pages, 5);
        assert_eq!(a.addr, fx.base + 3 * PAGE_SIZE as usize);
        assert_eq!(a.pfn, Pfn::new((fx.start >> PAGE_SHIFT) + 3, DEV));
        assert_eq!(in_section(|| dax.direct_access(3, 2)).unwrap().pages, 2);
        assert_eq!(in_section(|| dax.direct_access(7, 0)).unwrap().pages, 0);
        assert_eq!(
            in_section(|| dax.direct_access(8, 1)),
            Err(Error::Os(libc::ERANGE))
        );
        drop(fx.mem);
    }

    #[test]
    fn pfn_map_is_reported_when_the_range_has_it() {
        assert_eq!(pfn_flags(DEV), DEV);
        assert_eq!(pfn_flags(DEV | MAP), DEV | MAP);
        assert_eq!(pfn_flags(0), DEV);
        let fx = fixture(2, 0x7200_0000_0000);
        let dev = Device::new().unwrap();
        let start = 0x7200_1000_0000;
        dev.register_with(start, start + 2 * PAGE_SIZE - 1, fx.base, DEV | MAP)
            .unwrap();
        let dax = DaxDev::new(&dev, start).unwrap();
        let a = in_section(|| dax.direct_access(1, 1)).unwrap();
        assert_eq!(a.pfn.flags(), DEV | MAP);
        drop(dev);
        drop(fx);
    }

    #[test]
    fn io_crosses_pages_and_stops_at_the_end() {
        let fx = fixture(4, 0x7300_0000_0000);
        let dax = DaxDev::new(&fx.dev, fx.start).unwrap();
        let size = dax.size();
        let data: Vec<u8> = (0..size as usize).map(|i| (i * 7 + 1) as u8).collect();
        unsafe {
            assert_eq!(dax.io(0, size, Io::Write(data.as_ptr())).unwrap(), size);
            let dev_bytes = std::slice::from_raw_parts(fx.base as *const u8, size as usize);
            assert_eq!(dev_bytes, &data[..]);
            let mut out = vec![0u8; 10000];
            // Across pages, short at the end, nothing after it.
            assert_eq!(
                dax.io(100, 10000, Io::Read(out.as_mut_ptr())).unwrap(),
                10000
            );
            assert_eq!(&out[..], &data[100..10100]);
            assert_eq!(
                dax.io(size - 5, 100, Io::Read(out.as_mut_ptr())).unwrap(),
                5
            );
            assert_eq!(dax.io(size, 100, Io::Read(out.as_mut_ptr())).unwrap(), 0);
            assert_eq!(dax.io(size + 1, 1, Io::Read(out.as_mut_ptr())).unwrap(), 0);
            assert_eq!(
                dax.io(u64::MAX, 2, Io::Read(out.as_mut_ptr())),
                Err(Error::Overflow)
            );
            assert_eq!(dax.io(4000, 200, Io::Zero).unwrap(), 200);
            assert!(dev_bytes[4000..4200].iter().all(|&b| b == 0));
            assert_eq!(dev_bytes[3999], data[3999]);
            assert_eq!(dev_bytes[4200], data[4200]);
        }
    }

    #[test]
    fn kill_and_unregister_end_access() {
        let fx = fixture(2, 0x7400_0000_0000);
        let dax = DaxDev::new(&fx.dev, fx.start).unwrap();
        let other = DaxDev::new(&fx.dev, fx.start).unwrap();
        assert!(dax.alive());
        dax.kill().unwrap();
        assert!(!dax.alive());
        assert_eq!(
            in_section(|| dax.direct_access(0, 1)),
            Err(Error::NotMapped)
        );
        let mut b = [0u8; 4];
        assert_eq!(
            unsafe { dax.io(0, 4, Io::Read(b.as_mut_ptr())) },
            Err(Error::NotMapped)
        );
        dax.kill().unwrap();
        // Killing from inside a section would wait for itself.
        assert_eq!(in_section(|| other.kill()), Err(Error::Deadlock));
        assert!(other.alive());
        fx.dev.unregister(fx.start).unwrap();
        assert_eq!(
            in_section(|| other.direct_access(0, 1)),
            Err(Error::NotMapped)
        );
        assert_eq!(
            unsafe { other.io(0, 4, Io::Read(b.as_mut_ptr())) },
            Err(Error::NotMapped)
        );
        assert_eq!(DaxDev::new(&fx.dev, fx.start).unwrap_err(), Error::NotFound);
    }

    /// Three ranges of one device, physically back to back, in three separate buffers (not
    /// adjacent in virtual memory): 2, 3 and 1 pages.
    struct Span {
        dev: Device,
        bufs: Vec<Vec<u8>>,
        bases: Vec<usize>,
        start: u64,
    }

    const SPAN_PAGES: [u64; 3] = [2, 3, 1];

    fn span_fixture(start: u64) -> Span {
        let dev = Device::new().unwrap();
        let (mut bufs, mut bases, mut at) = (Vec::new(), Vec::new(), start);
        for &p in &SPAN_PAGES {
            let mem = vec![0u8; (p as usize + 2) * PAGE_SIZE as usize];
            // One page of slack before each: never adjacent to the previous buffer.
            let base =
                (mem.as_ptr() as usize + 2 * PAGE_SIZE as usize - 1) & !(PAGE_SIZE as usize - 1);
            dev.register(at, at + p * PAGE_SIZE - 1, base).unwrap();
            at += p * PAGE_SIZE;
            bufs.push(mem);
            bases.push(base);
        }
        Span {
            dev,
            bufs,
            bases,
            start,
        }
    }

    #[test]
    fn span_refuses_gaps_misfits_and_other_devices() {
        let sp = span_fixture(0x7500_0000_0000);
        let (s, p) = (sp.start, PAGE_SIZE);
        let inval = |r: Result<DaxDev>| r.unwrap_err();
        assert_eq!(inval(DaxDev::span(&sp.dev, s, 0)), Error::Invalid);
        assert_eq!(inval(DaxDev::span(&sp.dev, s, p + 1)), Error::Invalid);
        assert_eq!(inval(DaxDev::span(&sp.dev, s, !(p - 1))), Error::Invalid);
        assert_eq!(inval(DaxDev::span(&sp.dev, s + p, 2 * p)), Error::NotFound);
        // Ends inside the second range.
        assert_eq!(inval(DaxDev::span(&sp.dev, s, 3 * p)), Error::Invalid);
        // Past the last range: a gap.
        assert_eq!(inval(DaxDev::span(&sp.dev, s, 7 * p)), Error::Invalid);
        // Another device's range continues the run.
        let other = Device::new().unwrap();
        other
            .register(s + 6 * p, s + 7 * p - 1, sp.bases[0])
            .unwrap();
        assert_eq!(inval(DaxDev::span(&sp.dev, s, 7 * p)), Error::Invalid);
        let one = DaxDev::span(&sp.dev, s, 2 * p).unwrap();
        assert_eq!((one.pages(), one.ranges()), (2, 1));
        let all = DaxDev::span(&sp.dev, s, 6 * p).unwrap();
        assert_eq!((all.pages(), all.ranges(), all.start()), (6, 3, s));
        // A hole in the middle.
        sp.dev.unregister(s + 2 * p).unwrap();
        assert_eq!(inval(DaxDev::span(&sp.dev, s, 6 * p)), Error::Invalid);
        drop(other);
        drop(sp.bufs);
    }

    #[test]
    fn span_crosses_ranges_and_loses_only_the_unregistered_one() {
        let sp = span_fixture(0x7600_0000_0000);
        let dax = DaxDev::span(&sp.dev, sp.start, 6 * PAGE_SIZE).unwrap();
        // direct_access: each range on its own, with its own address.
        let a = in_section(|| dax.direct_access(1, 10)).unwrap();
        assert_eq!((a.pages, a.addr), (1, sp.bases[0] + PAGE_SIZE as usize));
        let a = in_section(|| dax.direct_access(2, 10)).unwrap();
        assert_eq!((a.pages, a.addr), (3, sp.bases[1]));
        assert_eq!(a.pfn, Pfn::new((sp.start >> PAGE_SHIFT) + 2, DEV));
        let a = in_section(|| dax.direct_access(5, 10)).unwrap();
        assert_eq!((a.pages, a.addr), (1, sp.bases[2]));
        assert_eq!(
            in_section(|| dax.direct_access(6, 1)),
            Err(Error::Os(libc::ERANGE))
        );
        let size = dax.size() as usize;
        let data: Vec<u8> = (0..size).map(|i| (i * 13 + 5) as u8).collect();
        let piece = |off: usize, len: usize| -> Vec<u8> {
            // The device's bytes read straight from the buffers.
            (off..off + len)
                .map(|o| {
                    let pg = (o as u64) >> PAGE_SHIFT;
                    let (k, first) = match pg {
                        0..=1 => (0, 0),
                        2..=4 => (1, 2),
                        _ => (2, 5),
                    };
                    let at = o - (first << PAGE_SHIFT) as usize;
                    unsafe { *((sp.bases[k] + at) as *const u8) }
                })
                .collect()
        };
        unsafe {
            assert_eq!(
                dax.io(0, size as u64, Io::Write(data.as_ptr())).unwrap(),
                size as u64
            );
            assert_eq!(piece(0, size), data);
            let mut out = vec![0u8; size];
            assert_eq!(
                dax.io(100, size as u64, Io::Read(out.as_mut_ptr()))
                    .unwrap(),
                size as u64 - 100
            );
            assert_eq!(&out[..size - 100], &data[100..]);
            // A zero across both boundaries.
            let (z, zl) = (2 * PAGE_SIZE as usize - 10, 3 * PAGE_SIZE as usize + 20);
            assert_eq!(dax.io(z as u64, zl as u64, Io::Zero).unwrap(), zl as u64);
            let mut model = data.clone();
            model[z..z + zl].fill(0);
            assert_eq!(piece(0, size), model);
            // The middle range goes: reads stop before it, start inside it fail, after it work.
            sp.dev.unregister(sp.start + 2 * PAGE_SIZE).unwrap();
            assert_eq!(
                dax.io(10, size as u64, Io::Read(out.as_mut_ptr())).unwrap(),
                2 * PAGE_SIZE - 10
            );
            assert_eq!(
                dax.io(2 * PAGE_SIZE, 1, Io::Read(out.as_mut_ptr())),
                Err(Error::NotMapped)
            );
            assert_eq!(
                in_section(|| dax.direct_access(3, 1)),
                Err(Error::NotMapped)
            );
            assert_eq!(
                dax.io(5 * PAGE_SIZE, 7, Io::Read(out.as_mut_ptr()))
                    .unwrap(),
                7
            );
            assert_eq!(&out[..7], &model[5 * PAGE_SIZE as usize..][..7]);
            assert!(in_section(|| dax.direct_access(0, 1)).is_ok());
        }
        drop(sp.bufs);
    }

    #[test]
    fn span_reports_each_ranges_own_flags() {
        let fx = fixture(3, 0x7700_0000_0000);
        let dev = Device::new().unwrap();
        let s = 0x7700_1000_0000;
        dev.register_with(s, s + PAGE_SIZE - 1, fx.base + 2 * PAGE_SIZE as usize, DEV)
            .unwrap();
        dev.register_with(s + PAGE_SIZE, s + 3 * PAGE_SIZE - 1, fx.base, DEV | MAP)
            .unwrap();
        let dax = DaxDev::span(&dev, s, 3 * PAGE_SIZE).unwrap();
        let a = in_section(|| dax.direct_access(0, 3)).unwrap();
        assert_eq!((a.pages, a.pfn.flags()), (1, DEV));
        let a = in_section(|| dax.direct_access(1, 3)).unwrap();
        assert_eq!((a.pages, a.addr, a.pfn.flags()), (2, fx.base, DEV | MAP));
        assert_eq!(a.pfn, Pfn::new((s >> PAGE_SHIFT) + 1, DEV | MAP));
        drop(dev);
        drop(fx);
    }
}
