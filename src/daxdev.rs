//! DAX devices: one registered range exposed by page offset, with a life that a kill ends
//! (mainline's `struct dax_device` with the pmem driver's `direct_access`, the seed's patch 4).
//!
//! A DAX device wraps the range a device registered at one physical start, as the pmem driver
//! wraps its namespace. `direct_access` answers inside the caller's read section, as mainline
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
//! The device reaches its range through the translation tables, not through a pointer kept at
//! creation: when the range is unregistered, every access fails with `NotMapped` (it does not
//! kill the device). A frame that translates to another address than the range had is another
//! registration and is refused the same way.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::encoding::{Pfn, DEV, MAP, PAGE_SHIFT, PAGE_SIZE};
use crate::errmsg;
use crate::error::{Error, Result};
use crate::rcu::{self, Reader};
use crate::space::{self, Device, RangeInfo};
use crate::{persist, pmem};

/// Bytes the I/O path copies inside one read section: a kill waits for at most this much of a
/// copy in flight (tens of microseconds), while the section's cost stays negligible beside it.
const CHUNK: usize = 256 << 10;

/// A DAX device over one registered range.
#[derive(Debug)]
pub struct DaxDev {
    range: RangeInfo,
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
        Ok(DaxDev {
            range: dev.range_at(start)?,
            alive: AtomicBool::new(true),
        })
    }

    /// Pages the device exposes (offsets `0 .. pages()`).
    pub fn pages(&self) -> u64 {
        self.range.pages
    }

    /// Bytes the device exposes.
    pub fn size(&self) -> u64 {
        self.range.pages << PAGE_SHIFT
    }

    /// Physical address of the device's first byte.
    pub fn start(&self) -> u64 {
        self.range.first << PAGE_SHIFT
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
    unsafe fn locate(&self, pgoff: u64) -> Result<(usize, u64)> {
        if !self.alive() {
            return Err(self.dead());
        }
        let pfn = Pfn(self.range.first + pgoff);
        let gone = || {
            errmsg::with(
                Error::NotMapped,
                format_args!(
                    "the DAX device's range at {:#x} is no longer registered",
                    self.start()
                ),
            )
        };
        // The sole run (when every live range forms one, the common single-pool case) makes
        // the translation one comparison instead of a table walk.
        let m = space::translate_len_in_section(space::root_word(), &space::sole_run(), pfn)
            .map_err(|_| gone())?;
        if m.addr != self.range.base + ((pgoff as usize) << PAGE_SHIFT) {
            return Err(gone());
        }
        let to_end = (self.range.pages - pgoff) << PAGE_SHIFT;
        Ok((m.addr, m.len.min(to_end)))
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
        if pgoff >= self.range.pages {
            return Err(errmsg::with(
                Error::Os(libc::ERANGE),
                format_args!(
                    "page offset {pgoff:#x} is beyond the device's {:#x} pages",
                    self.range.pages
                ),
            ));
        }
        // SAFETY: the thread is inside a thread-bound section, which the caller keeps open.
        let (addr, bytes) = unsafe { self.locate(pgoff) }?;
        Ok(Access {
            pages: (bytes >> PAGE_SHIFT).min(nr_pages),
            addr,
            pfn: Pfn::new(self.range.first + pgoff, pfn_flags(self.range.flags)),
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
        let (page_addr, bytes) = self.locate(pos >> PAGE_SHIFT)?;
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
}
