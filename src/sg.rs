//! Scatterlists (the seed's patch 5/5): one I/O described as a list of pfn_t extents that may
//! lie on many ranges, and data moved through it at memory speed.
//!
//! The lists are caller-owned C arrays, walked (and checked: loops, broken links, the end
//! mark) by `ffi::sg`; this module sees a list as an iterator of [`Entry`] values and does
//! the rest: splitting the bytes into pieces that are contiguous in virtual memory, copying
//! and zeroing through them (optionally made durable by each mapping's own method), mapping
//! one piece at a time for the mapping iterator, and building iovecs.
//!
//! Each piece costs one translation: `space::translate_len_in_section` returns the bytes
//! contiguous to the end of the run of ranges that continue each other physically and
//! virtually, and the section remembers that run, so the next entries in it cost one
//! comparison. An entry that crosses a frame, or a range into one that continues it, is one
//! piece; one that crosses into a range that does not continue it is two.

use std::ptr;

use crate::encoding::{Pfn, FLAGS_MASK, PAGE_SHIFT, PAGE_SIZE, SG_CHAIN, SG_LAST};
use crate::errmsg;
use crate::error::{Error, Result};
use crate::rcu::Reader;
use crate::space::{self, Block, Mapped};
use crate::{persist, pmem};

/// The most bytes an entry built by this library describes (u32 lengths, kept page-aligned
/// like the kernel's largest segment).
pub(crate) const MAX_ENTRY_BYTES: u32 = !(PAGE_SIZE as u32 - 1);

/// One data entry of a list: bytes `offset .. offset + len` counted from the first byte of
/// frame `pfn` (the offset may pass the frame: the bytes then start in a later frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The frame, with its flags but without the list's own (PFN_SG_CHAIN, PFN_SG_LAST).
    pub pfn: Pfn,
    pub offset: u32,
    pub len: u32,
}

impl Entry {
    /// An entry from a list's raw words; the list's own flag bits are dropped.
    pub fn new(val: u64, offset: u32, len: u32) -> Entry {
        Entry {
            pfn: Pfn(val & !(SG_CHAIN | SG_LAST)),
            offset,
            len,
        }
    }

    /// The physical address of the entry's first byte. `Overflow` when its bytes would pass
    /// the end of the 64-bit physical space.
    pub fn start(&self) -> Result<u64> {
        let start = self
            .pfn
            .phys()
            .checked_add(u64::from(self.offset))
            .ok_or_else(|| self.past_the_end())?;
        if self.len > 0 {
            start
                .checked_add(u64::from(self.len) - 1)
                .ok_or_else(|| self.past_the_end())?;
        }
        Ok(start)
    }

    #[cold]
    #[inline(never)]
    fn past_the_end(&self) -> Error {
        errmsg::with(
            Error::Overflow,
            format_args!(
                "the entry of pfn_t {:#x} (physical {:#x}) with offset {:#x} and length {:#x} \
                 passes the end of the 64-bit physical space",
                self.pfn.0,
                self.pfn.phys(),
                self.offset,
                self.len
            ),
        )
    }
}

/// `e`, an msync error from making `len` bytes at `addr` durable, with its message.
#[cold]
pub(crate) fn msync_failed(e: Error, addr: usize, len: usize) -> Error {
    errmsg::with(
        e,
        format_args!("msync of {len:#x} bytes at {addr:#x} failed: {e}"),
    )
}

/// Runs of ranges a translator remembers: a list spread over up to this many runs is walked in
/// the table once per run.
const RUNS: usize = 16;
/// Slots of the translator's index from 2 MiB windows of pfns to the runs that hold them.
const INDEX: usize = 64;

/// Translation inside an open read section: the table root it saw, and the runs of ranges it
/// has found. A frame of the run used last costs one comparison; one of another run found
/// before, a hashed index lookup (or a scan of the runs when two windows share a slot); only
/// a frame of a run not found yet walks the table.
pub struct Translator {
    root: usize,
    runs: [Block; RUNS],
    /// Run index + 1 by window hash (0: none); checked on use, so stale slots are harmless.
    index: [u8; INDEX],
    last: usize,
    next: usize,
}

impl Translator {
    /// `seed`: a run found earlier in the same section (or `Block::default()`).
    ///
    /// # Safety
    /// `root` was read inside a read section that stays open while this is used, and `seed`
    /// was found inside it.
    pub unsafe fn new(root: usize, seed: Block) -> Translator {
        let mut runs = [Block::default(); RUNS];
        runs[0] = seed;
        Translator {
            root,
            runs,
            index: [0; INDEX],
            last: 0,
            next: 1,
        }
    }

    #[inline(always)]
    fn hit(b: &Block, page: u64) -> Option<Mapped> {
        let off = page.wrapping_sub(b.first);
        (off < b.pages).then(|| Mapped {
            addr: b.addr.wrapping_add((off as usize) << PAGE_SHIFT),
            len: run_bytes(b.pages - off),
        })
    }

    #[inline(always)]
    fn slot(page: u64) -> usize {
        ((page >> 9).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
    }

    /// The address of frame `page` and the bytes contiguous from it. Errors: `NotMapped`.
    #[inline(always)]
    fn map(&mut self, page: u64) -> Result<Mapped> {
        if let Some(m) = Self::hit(&self.runs[self.last], page) {
            return Ok(m);
        }
        let h = Self::slot(page);
        let i = usize::from(self.index[h]).wrapping_sub(1);
        if let Some(m) = self.runs.get(i).and_then(|b| Self::hit(b, page)) {
            self.last = i;
            return Ok(m);
        }
        self.other(page, h)
    }

    #[inline(never)]
    fn other(&mut self, page: u64, h: usize) -> Result<Mapped> {
        let found = (0..RUNS).find(|&i| Self::hit(&self.runs[i], page).is_some());
        let i = match found {
            Some(i) => i,
            None => {
                // SAFETY: the contract of `new`.
                let run = unsafe { space::run_in_section(self.root, Pfn(page)) }?;
                let i = self.next;
                self.runs[i] = run;
                self.next = (i + 1) % RUNS;
                i
            }
        };
        self.index[h] = i as u8 + 1;
        self.last = i;
        Self::hit(&self.runs[i], page).ok_or_else(|| space::not_mapped(Pfn(page)))
    }
}

/// Bytes in `pages` pages, capped at 2^52 (more than any piece needs: an entry is at most
/// 4 GiB), without a branch.
#[inline(always)]
fn run_bytes(pages: u64) -> u64 {
    pages.min(1 << 40) << PAGE_SHIFT
}

/// A read section of the calling thread that this module opens for one call (no hold is
/// recorded: it ends when dropped, also on a panic).
struct Section {
    reader: &'static Reader,
    root: usize,
}

impl Section {
    fn open() -> Result<Section> {
        let reader = space::reader()?;
        if !reader.has_room(1) {
            return Err(errmsg::with(
                Error::Overflow,
                format_args!("more than 16 million nested holds on this thread"),
            ));
        }
        reader.enter();
        Ok(Section {
            reader,
            root: space::root_word(),
        })
    }

    fn translator(&self) -> Translator {
        // SAFETY: the root was read inside this section, which the caller keeps open while
        // it translates.
        unsafe { Translator::new(self.root, Block::default()) }
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        self.reader.leave();
    }
}

/// Calls `f(address, bytes)` for each virtually contiguous piece of the bytes `skip ..
/// skip + total` that `list` describes, in list order, until `f` returns false. Returns the
/// bytes handed to `f`: `total`, or less when the list ends first (or `f` stopped).
///
/// Every entry walked, skipped ones too, must describe bytes inside the physical space
/// (`Overflow`); every frame of a piece must be in a range the section sees (`NotMapped`).
/// Entries after the last byte needed are not walked.
fn for_each_piece<I>(
    list: I,
    skip: u64,
    total: u64,
    t: &mut Translator,
    mut f: impl FnMut(usize, usize) -> Result<bool>,
) -> Result<u64>
where
    I: Iterator<Item = Result<Entry>>,
{
    let (mut list, mut skip, mut done) = (list, skip, 0u64);
    while done < total {
        let entry = match list.next() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(e),
        };
        let start = entry.start()?;
        let mut left = u64::from(entry.len);
        if skip >= left {
            skip -= left;
            continue;
        }
        let mut at = start + skip;
        left = (left - skip).min(total - done);
        skip = 0;
        while left > 0 {
            let m = t.map(at >> PAGE_SHIFT)?;
            let in_page = at & (PAGE_SIZE - 1);
            // m.len is at least one page, so it covers `in_page`.
            let n = left.min(m.len - in_page);
            // n <= u32::MAX: it fits in usize on every target this library builds for.
            if !f(m.addr + in_page as usize, n as usize)? {
                return Ok(done);
            }
            // The last piece of the physical space ends at 2^64: wrap, the loop ends.
            at = at.wrapping_add(n);
            left -= n;
            done += n;
        }
    }
    Ok(done)
}

/// What a copy does with the list's bytes.
#[derive(Clone, Copy, Debug)]
pub enum Transfer {
    /// Into the list, from `len` readable bytes at the pointer.
    ToList(*const u8),
    /// Out of the list, into `len` writable bytes at the pointer.
    FromList(*mut u8),
    /// Zeroes the list's bytes.
    Zero,
}

/// Asks for the first line at `addr` for writing, ahead of a copy into it (it also loads the
/// page's translation into the TLB): measured 0.90x to 0.92x memcpy for 256 x 4 KiB written.
/// A prefetch never faults.
#[inline(always)]
fn prefetch_for_write(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Pieces of a write kept from its check to be written without walking the list again.
const REPLAY: usize = 256;

/// Makes written pieces durable by each mapping's method: pieces in a PAGE mapping of this
/// library are stored plainly and msynced (adjacent pieces in one call), the rest are written
/// with flushing (or non-temporal) stores and drained once at the end.
struct Durable {
    /// msync still owed for these bytes.
    pending: Option<(usize, usize)>,
    drain: bool,
    first_error: Option<Error>,
}

impl Durable {
    fn new() -> Durable {
        Durable {
            pending: None,
            drain: false,
            first_error: None,
        }
    }

    /// # Safety
    /// `dst .. dst + n` is mapped and writable; `src` (when Some) readable for `n` bytes.
    unsafe fn write(&mut self, dst: usize, src: Option<*const u8>, n: usize) {
        let d = dst as *mut u8;
        if pmem::needs_msync(dst, n) {
            match src {
                Some(s) => ptr::copy(s, d, n),
                None => ptr::write_bytes(d, 0, n),
            }
            match self.pending {
                Some((a, l)) if a + l == dst => self.pending = Some((a, l + n)),
                _ => {
                    self.sync();
                    self.pending = Some((dst, n));
                }
            }
        } else {
            let flags = persist::Flags {
                nodrain: true,
                ..persist::Flags::default()
            };
            match src {
                Some(s) => persist::copy(d, s, n, flags),
                None => persist::fill(d, 0, n, flags),
            }
            self.drain = true;
        }
    }

    fn sync(&mut self) {
        if let Some((a, l)) = self.pending.take() {
            // SAFETY: bytes just written, still mapped (the caller's section holds them).
            if let Err(e) = unsafe { pmem::persist(a, l) } {
                if self.first_error.is_none() {
                    self.first_error = Some(msync_failed(e, a, l));
                }
            }
        }
    }

    fn finish(mut self) -> Result<()> {
        self.sync();
        if self.drain {
            persist::drain();
        }
        self.first_error.map_or(Ok(()), Err)
    }
}

/// Copies between a flat buffer of `len` bytes and the list's bytes from `skip` on (or zeroes
/// them), inside one read section of the calling thread. Returns the bytes copied: `len`, or
/// fewer when the list ends first.
///
/// Writes into the list (`ToList`, `Zero`) first translate every piece they will touch, so a
/// bad list changes nothing. Up to REPLAY pieces, the addresses found then are the ones
/// written (valid until the section ends): such a write completes even when another thread
/// unregisters one of its ranges meanwhile. A longer one walks the list again, and can then
/// stop at a range unregistered since the check (`NotMapped`, the pieces before it written).
/// With `durable`, the bytes written are durable when it returns; an msync error is returned
/// after every byte was copied. `FromList` checks as it goes: on an error the buffer holds
/// part of the bytes.
///
/// # Safety
/// The buffer of `ToList` / `FromList` is valid for `len` bytes; it may lie in the list's own
/// memory (each piece is copied as memmove would).
pub unsafe fn copy<I>(list: I, op: Transfer, len: usize, skip: u64, durable: bool) -> Result<usize>
where
    I: Iterator<Item = Result<Entry>> + Clone,
{
    let section = Section::open()?;
    let mut t = section.translator();
    let mut done = 0usize;
    let mut sink = durable.then(Durable::new);
    // `put` borrows `sink` until the pieces are written.
    {
        let mut put = |addr: usize, n: usize| {
            match (op, sink.as_mut()) {
                (Transfer::FromList(buf), _) => ptr::copy(addr as *const u8, buf.add(done), n),
                (Transfer::ToList(buf), None) => ptr::copy(buf.add(done), addr as *mut u8, n),
                (Transfer::Zero, None) => ptr::write_bytes(addr as *mut u8, 0, n),
                (Transfer::ToList(buf), Some(s)) => s.write(addr, Some(buf.add(done)), n),
                (Transfer::Zero, Some(s)) => s.write(addr, None, n),
            }
            done += n;
        };
        match op {
            Transfer::FromList(_) => {
                // One piece behind the walk: the next entry is read and translated before the
                // current piece is copied, so that work is not waiting behind the copy
                // (measured: 256 x 4 KiB copied out went from 0.85x to 0.91x memcpy).
                let mut pending: Option<(usize, usize)> = None;
                for_each_piece(list, skip, len as u64, &mut t, |addr, n| {
                    if let Some((a, m)) = pending.replace((addr, n)) {
                        put(a, m);
                    }
                    Ok(true)
                })?;
                if let Some((a, m)) = pending {
                    put(a, m);
                }
            }
            Transfer::ToList(_) | Transfer::Zero => {
                // Every piece is translated before anything is written. The first REPLAY are
                // kept (their addresses stay valid in this section), so a list that short is
                // walked once; a longer one is walked again after the check.
                let mut kept = [std::mem::MaybeUninit::<(usize, usize)>::uninit(); REPLAY];
                let mut count = 0usize;
                let total = for_each_piece(list.clone(), skip, len as u64, &mut t, |addr, n| {
                    if let Some(slot) = kept.get_mut(count) {
                        slot.write((addr, n));
                    }
                    count += 1;
                    Ok(true)
                })?;
                if count <= REPLAY {
                    for i in 0..count {
                        let (addr, n) = kept[i].assume_init();
                        if let Some(next) = kept[..count].get(i + 1) {
                            prefetch_for_write(next.assume_init().0);
                        }
                        put(addr, n);
                    }
                } else {
                    let mut pending: Option<(usize, usize)> = None;
                    for_each_piece(list, skip, total, &mut t, |addr, n| {
                        if let Some((a, m)) = pending.replace((addr, n)) {
                            put(a, m);
                        }
                        Ok(true)
                    })?;
                    if let Some((a, m)) = pending {
                        put(a, m);
                    }
                }
            }
        }
    }
    if let Some(s) = sink {
        s.finish()?;
    }
    Ok(done)
}

/// Fills iovecs with the list's bytes from `skip` on, at most `len` of them, as addresses in
/// the caller's section: `emit(index, address, bytes)` for each of at most `max` iovecs, with
/// pieces that continue each other in virtual memory merged into one. Returns (iovecs, bytes
/// they cover): fewer bytes than asked when the list ends or `max` iovecs are full.
pub fn iovecs<I>(
    t: &mut Translator,
    list: I,
    skip: u64,
    len: u64,
    max: usize,
    mut emit: impl FnMut(usize, usize, usize),
) -> Result<(usize, u64)>
where
    I: Iterator<Item = Result<Entry>>,
{
    let (mut count, mut base, mut bytes) = (0usize, 0usize, 0usize);
    let covered = for_each_piece(list, skip, len, t, |addr, n| {
        if count > 0 && base.checked_add(bytes) == Some(addr) {
            bytes += n;
            return Ok(true);
        }
        if count == max {
            return Ok(false);
        }
        if count > 0 {
            emit(count - 1, base, bytes);
        }
        count += 1;
        base = addr;
        bytes = n;
        Ok(true)
    })?;
    if count > 0 {
        emit(count - 1, base, bytes);
    }
    Ok((count, covered))
}

/// Maps the bytes of `entry` from byte `pos` on, as far as they are contiguous in virtual
/// memory, with a kmap of the calling thread (release it with `space::kunmap(address)`).
/// Returns (address, bytes). Errors: `Overflow`, and those of `space::kmap_len`.
pub fn map_piece(entry: &Entry, pos: u64) -> Result<(usize, usize)> {
    debug_assert!(pos < u64::from(entry.len));
    let at = entry.start()? + pos;
    let m = space::kmap_len(Pfn(at >> PAGE_SHIFT))?;
    let in_page = at & (PAGE_SIZE - 1);
    let n = (u64::from(entry.len) - pos).min(m.len - in_page);
    Ok((m.addr + in_page as usize, n as usize))
}

/// Appends `n` bytes at physical `phys` (flags `flags`) to `out`, extending the last entry
/// when they continue it with the same flags, up to MAX_ENTRY_BYTES an entry.
fn append(out: &mut Vec<Entry>, phys: u64, flags: u64, mut n: u64) -> Result<()> {
    let mut phys = phys;
    while n > 0 {
        if let Some(last) = out.last_mut() {
            let end = last
                .pfn
                .phys()
                .checked_add(u64::from(last.offset) + u64::from(last.len));
            if end == Some(phys) && last.pfn.flags() == flags && last.len < MAX_ENTRY_BYTES {
                let more = n.min(u64::from(MAX_ENTRY_BYTES - last.len));
                last.len += more as u32;
                phys = phys.wrapping_add(more);
                n -= more;
                continue;
            }
        }
        out.try_reserve(1).map_err(|_| {
            errmsg::with(
                Error::OutOfMemory,
                format_args!("no memory for entry {} of the table", out.len()),
            )
        })?;
        let take = n.min(u64::from(MAX_ENTRY_BYTES));
        out.push(Entry {
            pfn: Pfn::from_phys(phys, flags),
            offset: (phys & (PAGE_SIZE - 1)) as u32,
            len: take as u32,
        });
        phys = phys.wrapping_add(take);
        n -= take;
    }
    Ok(())
}

/// The entries for `size` bytes starting `offset` bytes into the first of `pfns`: frames
/// that follow each other physically (with equal flags) share an entry. Errors: `Invalid`
/// when `size` is 0, `offset` is not inside the first frame, the bytes need more frames than
/// given, or a frame carries PFN_SG_CHAIN; `Overflow` past the physical space; `OutOfMemory`.
pub fn entries_of_pfns(pfns: &[Pfn], offset: u32, size: u64) -> Result<Vec<Entry>> {
    if size == 0 {
        return Err(errmsg::invalid(format_args!("size is 0")));
    }
    if u64::from(offset) >= PAGE_SIZE {
        return Err(errmsg::invalid(format_args!(
            "offset {offset:#x} is not inside the first frame (at most {:#x})",
            PAGE_SIZE - 1
        )));
    }
    // In u128: offset + size may pass 2^64 (it then needs more frames than any array holds).
    let need = (u128::from(offset) + u128::from(size)).div_ceil(u128::from(PAGE_SIZE));
    if need > pfns.len() as u128 {
        return Err(errmsg::invalid(format_args!(
            "offset {offset:#x} + size {size:#x} needs {need} frames, more than the {} given",
            pfns.len()
        )));
    }
    let mut out = Vec::new();
    let mut left = size;
    for (i, p) in pfns[..need as usize].iter().enumerate() {
        if p.sg_chain() {
            return Err(errmsg::invalid(format_args!(
                "pfns[{i}] = {:#x} has PFN_SG_CHAIN set: a scatterlist link, not a frame",
                p.0
            )));
        }
        let skip = if i == 0 { u64::from(offset) } else { 0 };
        let n = (PAGE_SIZE - skip).min(left);
        append(
            &mut out,
            p.phys() + skip,
            p.flags() & !(SG_CHAIN | SG_LAST),
            n,
        )?;
        left -= n;
    }
    Ok(out)
}

/// The entries for `len` bytes at virtual address `addr`, every page of which lies in a
/// registered range (reverse translation, one lookup a page): pages that follow each other
/// physically (with equal flags) share an entry. Errors: `Invalid` for `len` 0 or bytes that
/// wrap; `NotMapped` for a page in no range; `OutOfMemory`; set-up errors of the thread.
pub fn entries_of_buffer(addr: usize, len: usize) -> Result<Vec<Entry>> {
    if len == 0 {
        return Err(errmsg::invalid(format_args!("len is 0")));
    }
    if addr.checked_add(len).is_none() {
        return Err(errmsg::invalid(format_args!(
            "buf {addr:#x} + len {len:#x} wraps past the end of the address space"
        )));
    }
    let mut out = Vec::new();
    let (mut at, end) = (addr, addr + len);
    while at < end {
        let (phys, flags) = space::virt_to_phys(at)?;
        let page_end = (at | (PAGE_SIZE as usize - 1)).saturating_add(1).min(end);
        append(&mut out, phys, flags & FLAGS_MASK, (page_end - at) as u64)?;
        at = page_end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::DEV;
    use crate::space::Device;

    fn list(entries: &[Entry]) -> impl Iterator<Item = Result<Entry>> + Clone + '_ {
        entries.iter().copied().map(Ok)
    }

    #[test]
    fn entries_check_their_end() {
        let e = Entry::new(SG_LAST | 5, 4095, 2);
        assert_eq!(e.pfn, Pfn(5));
        assert_eq!(e.start(), Ok(5 * PAGE_SIZE + 4095));
        let top = Entry::new(crate::encoding::MAX_PFN, 4095, 1);
        assert_eq!(top.start(), Ok(u64::MAX));
        assert_eq!(
            Entry::new(crate::encoding::MAX_PFN, 4095, 2).start(),
            Err(Error::Overflow)
        );
        assert_eq!(
            Entry::new(crate::encoding::MAX_PFN, 8192, 0).start(),
            Err(Error::Overflow)
        );
    }

    #[test]
    fn pieces_follow_runs_and_merge_into_iovecs() {
        let page = PAGE_SIZE as usize;
        let mut mem = vec![0u8; 16 * page];
        let base = (mem.as_mut_ptr() as usize + page - 1) & !(page - 1);
        let dev = Device::new().unwrap();
        let phys = 0x5a_0000_0000u64;
        // Two ranges back to back in both spaces (one run), and a third elsewhere.
        dev.register(phys, phys + 4 * PAGE_SIZE - 1, base).unwrap();
        dev.register(
            phys + 4 * PAGE_SIZE,
            phys + 8 * PAGE_SIZE - 1,
            base + 4 * page,
        )
        .unwrap();
        dev.register(
            phys + 8 * PAGE_SIZE,
            phys + 10 * PAGE_SIZE - 1,
            base + 12 * page,
        )
        .unwrap();
        let entries = [
            Entry::new(Pfn::from_phys(phys, DEV).0, 100, 7 * PAGE_SIZE as u32),
            Entry::new(
                Pfn::from_phys(phys + 7 * PAGE_SIZE, DEV).0,
                100,
                PAGE_SIZE as u32,
            ),
        ];
        let s = Section::open().unwrap();
        let mut t = s.translator();
        let mut pieces = Vec::new();
        let n = for_each_piece(list(&entries), 0, u64::MAX, &mut t, |a, n| {
            pieces.push((a - base, n));
            Ok(true)
        })
        .unwrap();
        assert_eq!(n, 8 * PAGE_SIZE);
        // The first entry crosses into the second range: one piece. The second crosses into
        // the third range, which does not continue it in memory: two pieces.
        assert_eq!(
            pieces,
            vec![
                (100, 7 * page),
                (7 * page + 100, page - 100),
                (12 * page, 100)
            ]
        );
        let mut iov = Vec::new();
        let (count, bytes) = iovecs(&mut t, list(&entries), 0, u64::MAX, 8, |i, a, n| {
            iov.push((i, a - base, n))
        })
        .unwrap();
        assert_eq!((count, bytes), (2, 8 * PAGE_SIZE));
        assert_eq!(iov, vec![(0, 100, 8 * page - 100), (1, 12 * page, 100)]);
        // Full after one iovec: its bytes only.
        let (count, bytes) = iovecs(&mut t, list(&entries), 10, u64::MAX, 1, |_, _, _| {}).unwrap();
        assert_eq!((count, bytes), (1, 8 * PAGE_SIZE - 110));
        drop(s);
        dev.kill().unwrap();
    }

    #[test]
    fn copies_refuse_bad_lists_before_writing() {
        let page = PAGE_SIZE as usize;
        let mut mem = vec![0u8; 4 * page];
        let base = (mem.as_mut_ptr() as usize + page - 1) & !(page - 1);
        let dev = Device::new().unwrap();
        let phys = 0x5b_0000_0000u64;
        dev.register(phys, phys + 2 * PAGE_SIZE - 1, base).unwrap();
        let good = Entry::new(Pfn::from_phys(phys, 0).0, 0, 16);
        let unmapped = Entry::new(Pfn::from_phys(phys + 2 * PAGE_SIZE, 0).0, 0, 16);
        let data = [7u8; 32];
        // SAFETY: `data` is readable for 32 bytes.
        let r = unsafe {
            copy(
                list(&[good, unmapped]),
                Transfer::ToList(data.as_ptr()),
                32,
                0,
                false,
            )
        };
        assert_eq!(r, Err(Error::NotMapped));
        // SAFETY: inside `mem`.
        assert_eq!(unsafe { *(base as *const u8) }, 0, "nothing was written");
        // Short lists copy what they have; skip past the end copies nothing.
        // SAFETY: as above.
        let r = unsafe { copy(list(&[good]), Transfer::ToList(data.as_ptr()), 32, 0, false) };
        assert_eq!(r, Ok(16));
        // SAFETY: as above.
        let r = unsafe {
            copy(
                list(&[good]),
                Transfer::ToList(data.as_ptr()),
                32,
                16,
                false,
            )
        };
        assert_eq!(r, Ok(0));
        let mut out = [0u8; 8];
        // SAFETY: `out` is writable for 8 bytes.
        let r = unsafe {
            copy(
                list(&[good]),
                Transfer::FromList(out.as_mut_ptr()),
                8,
                4,
                true,
            )
        };
        assert_eq!((r, out), (Ok(8), [7u8; 8]));
        dev.kill().unwrap();
    }

    #[test]
    fn entries_merge_contiguous_frames() {
        let p = |n: u64, f: u64| Pfn::new(n, f);
        let e = entries_of_pfns(
            &[p(10, DEV), p(11, DEV), p(13, DEV), p(14, 0)],
            5,
            4 * PAGE_SIZE - 5,
        )
        .unwrap();
        assert_eq!(
            e,
            vec![
                Entry {
                    pfn: p(10, DEV),
                    offset: 5,
                    len: 2 * PAGE_SIZE as u32 - 5
                },
                Entry {
                    pfn: p(13, DEV),
                    offset: 0,
                    len: PAGE_SIZE as u32
                },
                Entry {
                    pfn: p(14, 0),
                    offset: 0,
                    len: PAGE_SIZE as u32
                },
            ]
        );
        assert_eq!(
            entries_of_pfns(&[p(1, 0)], 0, PAGE_SIZE + 1),
            Err(Error::Invalid)
        );
        assert_eq!(entries_of_pfns(&[p(1, 0)], 4096, 1), Err(Error::Invalid));
        // offset + size past 2^64 needs more frames than given (it used to wrap to 0 frames).
        assert_eq!(
            entries_of_pfns(&[p(1, 0)], 1, u64::MAX),
            Err(Error::Invalid)
        );
        assert_eq!(
            entries_of_pfns(&[p(1, SG_CHAIN)], 0, 1),
            Err(Error::Invalid)
        );
        // Entries are cut at MAX_ENTRY_BYTES.
        let mut out = Vec::new();
        append(&mut out, 0, 0, u64::from(MAX_ENTRY_BYTES) + 10).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].len, out[1].len, out[1].start()),
            (MAX_ENTRY_BYTES, 10, Ok(u64::from(MAX_ENTRY_BYTES)))
        );
    }
}
