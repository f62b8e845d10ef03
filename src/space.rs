//! The physical address space: devices own ranges; ranges are published in the tables.
//!
//! Registration and removal are serialized by one mutex (they are rare). Translation takes no
//! lock: it runs inside a read-side section of `rcu` and reads the tables only.
//!
//! A range's life: registered (live: in the tables, owned by its device, lying in its virtual
//! memory), then unpublished by an unregister (retiring: gone from the tables, so new lookups
//! miss it, but still owned and still in the bookkeeping, so that it still counts as the
//! device's, as lying in its mapping and as occupying its physical space), then, once the grace
//! period that followed its unpublish has ended, finalized (forgotten). Whoever takes the lock
//! next finalizes every range whose grace period is over, so a range never outlives its grace
//! period in the bookkeeping, whichever call waited for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::encoding::{Pfn, DEV, MAP, PAGE_SHIFT, PAGE_SIZE, SG_CHAIN};
use crate::errmsg;
use crate::error::{Error, Result};
use crate::index::{Links, Rng, Slab, Treap, NIL};
use crate::memmap::{self, Placement};
use crate::pin;
use crate::rcu::{self, Reader};
pub use crate::table::Block;
use crate::table::{self, Detached, Extent, Table};

/// pfn -> virtual address. Its root word is also read by the C header's inline fast paths.
#[export_name = "pfn_table_root"]
static FORWARD: Table = Table::new();
/// virtual page -> physical address (reverse translation).
static REVERSE: Table = Table::new();
/// page of a memmap -> the memmap's extent (page descriptors back to their frames).
static MEMMAP: Table = Table::new();
static STATE: Mutex<State> = Mutex::new(State::new());

/// When every live range forms one run (one pool, however it is split into ranges), that
/// run: read sections start with it cached, so that each of their translations is then one
/// comparison, with nothing written. A seqlock (`seq` even: stable) over the run's first pfn,
/// pages (0: no sole run) and address. Read by the C header's inline read lock too.
#[repr(C)]
pub struct SoleRun {
    seq: AtomicU64,
    first: AtomicU64,
    pages: AtomicU64,
    addr: AtomicU64,
}

#[export_name = "pfn_sole_run"]
static SOLE_RUN: SoleRun = SoleRun {
    seq: AtomicU64::new(0),
    first: AtomicU64::new(0),
    pages: AtomicU64::new(0),
    addr: AtomicU64::new(0),
};

/// The sole run as a section's cached block (pages 0 when there is none, or it is changing).
pub fn sole_run() -> Block {
    let s1 = SOLE_RUN.seq.load(Ordering::Acquire);
    let block = Block {
        first: SOLE_RUN.first.load(Ordering::Relaxed),
        pages: SOLE_RUN.pages.load(Ordering::Relaxed),
        addr: SOLE_RUN.addr.load(Ordering::Relaxed) as usize,
    };
    std::sync::atomic::fence(Ordering::Acquire);
    if s1 & 1 != 0 || SOLE_RUN.seq.load(Ordering::Relaxed) != s1 {
        return Block::default();
    }
    block
}

/// Byte handles address physical bytes below this; free-space registration stays under it.
pub const FREE_SPACE_TOP: u64 = 1 << 56;

const LIVE: u8 = 1;
const RETIRING: u8 = 2;

/// A range's record. All-zero is a valid (free) record.
#[derive(Default)]
struct RangeRec {
    /// pfn -> address, in the forward table.
    fwd: Extent,
    /// virtual page -> physical address, in the reverse table.
    rev: Extent,
    /// The memmap's pages, in the memmap table (`memmap` 0: the range has none).
    mm: Extent,
    /// First frame of the range as registered: `fwd.first` less the frames a memmap at its
    /// head takes. The physical index orders and compares by it.
    phys_first: u64,
    /// A memmap the library mapped, unmapped when the range is forgotten.
    dram: crate::memmap::DramMemmap,
    /// The memmap is in the memmap table (from registration until the range's pins have
    /// dropped after its unpublish).
    mm_live: bool,
    device: u32,
    state: u8,
    /// The grace period after which a retiring range is finalized.
    retire_at: u64,
    /// Table nodes its unpublish detached, freed with it.
    detached: Detached,
    dev_prev: u32,
    dev_next: u32,
    retire_next: u32,
    phys: Links,
    va: Links,
    /// Largest `rev.last` in this record's VA subtree.
    va_max_last: u64,
}

#[derive(Clone, Copy, Default)]
struct DeviceRec {
    gen: u32,
    live: bool,
    dead: bool,
    /// Its Rust owner is gone: free the record once its last range is finalized.
    orphan: bool,
    head: u32,
    ranges: u32,
    next_free: u32,
}

/// A mapping the library made (pmem files): registration refuses its memory while it is
/// being unmapped.
#[derive(Clone, Copy, Default)]
struct MappingRec {
    used: bool,
    closing: bool,
    addr: usize,
    len: usize,
}

pub(crate) struct State {
    ranges: Slab<RangeRec>,
    devices: Vec<DeviceRec>,
    free_device: u32,
    mappings: Slab<MappingRec>,
    /// Mappings being unmapped (few, short-lived).
    closing: u32,
    phys_root: u32,
    va_root: u32,
    retire_head: u32,
    rng: Rng,
    /// An alias refill of the reverse table ran out of memory: retry it.
    reverse_incomplete: bool,
}

struct PhysTree<'a>(&'a mut Slab<RangeRec>);
struct VaTree<'a>(&'a mut Slab<RangeRec>);

impl Treap for PhysTree<'_> {
    fn links(&self, i: u32) -> Links {
        self.0.get(i).phys
    }
    fn set_links(&mut self, i: u32, l: Links) {
        self.0.get_mut(i).phys = l;
    }
    fn less(&self, a: u32, b: u32) -> bool {
        self.0.get(a).phys_first < self.0.get(b).phys_first
    }
}

impl Treap for VaTree<'_> {
    fn links(&self, i: u32) -> Links {
        self.0.get(i).va
    }
    fn set_links(&mut self, i: u32, l: Links) {
        self.0.get_mut(i).va = l;
    }
    fn less(&self, a: u32, b: u32) -> bool {
        (self.0.get(a).rev.first, a) < (self.0.get(b).rev.first, b)
    }
    fn fix(&mut self, i: u32) {
        let l = self.0.get(i).va;
        let mut m = self.0.get(i).rev.last;
        for c in [l.left, l.right] {
            if c != NIL {
                m = m.max(self.0.get(c).va_max_last);
            }
        }
        self.0.get_mut(i).va_max_last = m;
    }
}

impl State {
    const fn new() -> State {
        State {
            ranges: Slab::new(),
            devices: Vec::new(),
            free_device: NIL,
            mappings: Slab::new(),
            closing: 0,
            phys_root: NIL,
            va_root: NIL,
            retire_head: NIL,
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            reverse_incomplete: false,
        }
    }

    fn rec(&self, i: u32) -> &RangeRec {
        self.ranges.get(i)
    }

    /// The range with the largest first pfn <= `pfn`.
    fn phys_floor(&self, pfn: u64) -> Option<u32> {
        let (mut t, mut best) = (self.phys_root, None);
        while t != NIL {
            let r = self.rec(t);
            if r.phys_first <= pfn {
                best = Some(t);
                t = r.phys.right;
            } else {
                t = r.phys.left;
            }
        }
        best
    }

    /// The range with the smallest first pfn >= `pfn`.
    fn phys_ceil(&self, pfn: u64) -> Option<u32> {
        let (mut t, mut best) = (self.phys_root, None);
        while t != NIL {
            let r = self.rec(t);
            if r.phys_first >= pfn {
                best = Some(t);
                t = r.phys.left;
            } else {
                t = r.phys.right;
            }
        }
        best
    }

    /// A range (live or retiring) that holds any pfn of `first..=last`.
    fn phys_overlap(&self, first: u64, last: u64) -> Option<u32> {
        self.phys_floor(last)
            .filter(|&i| self.rec(i).fwd.last >= first)
    }

    /// Calls `f` for every range (live or retiring) whose virtual pages meet `lo..=hi`, in
    /// order of their first page, until `f` returns true (then stops and returns true).
    fn va_overlaps(&self, lo: u64, hi: u64, f: &mut dyn FnMut(u32) -> bool) -> bool {
        fn walk(s: &State, t: u32, lo: u64, hi: u64, f: &mut dyn FnMut(u32) -> bool) -> bool {
            if t == NIL || s.rec(t).va_max_last < lo {
                return false;
            }
            let r = s.rec(t);
            if walk(s, r.va.left, lo, hi, f) {
                return true;
            }
            r.rev.first <= hi && ((r.rev.last >= lo && f(t)) || walk(s, r.va.right, lo, hi, f))
        }
        walk(self, self.va_root, lo, hi, f)
    }

    fn va_busy(&self, lo: u64, hi: u64) -> bool {
        self.va_overlaps(lo, hi, &mut |_| true)
    }

    /// True when `b` starts where `a` ends, physically and virtually.
    fn adjacent(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.rec(a).fwd, &self.rec(b).fwd);
        a.last.checked_add(1) == Some(b.first)
            && a.target
                .checked_add(((a.last - a.first + 1) << PAGE_SHIFT) as usize)
                == Some(b.target)
    }

    /// True when one extent can serve `a` and `b`: both live and adjacent.
    fn continues(&self, a: u32, b: u32) -> bool {
        self.rec(a).state == LIVE && self.rec(b).state == LIVE && self.adjacent(a, b)
    }

    fn pred(&self, i: u32) -> Option<u32> {
        let first = self.rec(i).phys_first;
        first.checked_sub(1).and_then(|p| self.phys_floor(p))
    }

    fn succ(&self, i: u32) -> Option<u32> {
        self.rec(i)
            .fwd
            .last
            .checked_add(1)
            .and_then(|p| self.phys_ceil(p))
    }

    /// Sets the run end of `from` and of every live range before it that it continues.
    fn set_run_backwards(&self, from: u32, run_last: u64) {
        self.rec(from)
            .fwd
            .run_last
            .store(run_last, Ordering::Release);
        let mut cur = from;
        while let Some(p) = self.pred(cur).filter(|&p| self.continues(p, cur)) {
            self.rec(p).fwd.run_last.store(run_last, Ordering::Release);
            cur = p;
        }
    }

    /// A live range `i` joined the space: its run goes on into the range after it, and the
    /// runs of the ranges before it now go on into it.
    fn join_runs(&self, i: u32) {
        let run_last = match self.succ(i) {
            Some(n) if self.continues(i, n) => self.rec(n).fwd.run_last.load(Ordering::Relaxed),
            _ => self.rec(i).fwd.last,
        };
        self.set_run_backwards(i, run_last);
    }

    /// Publishes the sole run (see [`SoleRun`]) as the live ranges now are. Writers hold the
    /// lock.
    fn publish_sole_run(&self) {
        let live = |mut i: Option<u32>, step: &dyn Fn(u32) -> Option<u32>| {
            while let Some(j) = i {
                if self.rec(j).state == LIVE {
                    return Some(j);
                }
                i = step(j);
            }
            None
        };
        let lowest = live(self.phys_ceil(0), &|j| self.succ(j));
        let highest = live(self.phys_floor(u64::MAX), &|j| self.pred(j));
        let (first, pages, addr) = match (lowest, highest) {
            (Some(lo), Some(hi)) => {
                let (lo, hi) = (&self.rec(lo).fwd, &self.rec(hi).fwd);
                let run_last = lo.run_last.load(Ordering::Relaxed);
                if run_last == hi.last && run_last - lo.first < (1 << 52) - 1 {
                    (lo.first, run_last - lo.first + 1, lo.target as u64)
                } else {
                    (0, 0, 0)
                }
            }
            _ => (0, 0, 0),
        };
        if SOLE_RUN.pages.load(Ordering::Relaxed) == pages
            && SOLE_RUN.first.load(Ordering::Relaxed) == first
            && SOLE_RUN.addr.load(Ordering::Relaxed) == addr
        {
            return;
        }
        let seq = SOLE_RUN.seq.load(Ordering::Relaxed);
        SOLE_RUN.seq.store(seq + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        SOLE_RUN.first.store(first, Ordering::Relaxed);
        SOLE_RUN.pages.store(pages, Ordering::Relaxed);
        SOLE_RUN.addr.store(addr, Ordering::Relaxed);
        SOLE_RUN.seq.store(seq + 2, Ordering::Release);
    }

    /// Range `i` is leaving (no longer live): the run of the range before it ends there.
    fn cut_runs(&self, i: u32) {
        if let Some(p) = self
            .pred(i)
            .filter(|&p| self.rec(p).state == LIVE && self.adjacent(p, i))
        {
            self.set_run_backwards(p, self.rec(p).fwd.last);
        }
    }

    fn device(&self, dev: &Device) -> Result<DeviceRec> {
        match self.devices.get(dev.slot as usize) {
            Some(d) if d.live && d.gen == dev.gen && !d.dead => Ok(*d),
            _ => Err(errmsg::invalid(format_args!("the device has been freed"))),
        }
    }

    fn device_mut(&mut self, slot: u32) -> &mut DeviceRec {
        &mut self.devices[slot as usize]
    }

    /// Takes a live range out of the tables (it becomes retiring). Lookups miss it from now
    /// on; it is finalized after the grace period that starts after this call.
    fn unpublish(&mut self, i: u32) {
        let mut gone = Detached::default();
        {
            let r = self.ranges.get(i);
            FORWARD.remove(&r.fwd, &mut gone);
            REVERSE.remove(&r.rev, &mut gone);
            // The memmap stays findable by descriptor while pins may still use it: it leaves
            // its table once they have dropped (see `finalize_expired`).
        }
        self.ranges.get_mut(i).state = RETIRING;
        self.cut_runs(i);
        self.publish_sole_run();
        // Other live ranges that share this virtual memory take its place in the reverse
        // table.
        let (lo, hi) = (self.rec(i).rev.first, self.rec(i).rev.last);
        self.refill_reverse(lo, hi);
        let r = self.ranges.get_mut(i);
        r.detached = gone;
        r.retire_at = rcu::snapshot();
        r.retire_next = self.retire_head;
        self.retire_head = i;
    }

    /// Fills the reverse table from every live range meeting `lo..=hi`.
    fn refill_reverse(&mut self, lo: u64, hi: u64) {
        let mut failed = false;
        let ranges = &self.ranges;
        self.va_overlaps(lo, hi, &mut |j| {
            let r = ranges.get(j);
            if r.state != LIVE {
                return false;
            }
            if REVERSE.insert(&r.rev).is_err() {
                failed = true;
                return false;
            }
            // A range that covers all of `lo..=hi` fills it: the others would add nothing
            // (an insert fills only what no range holds). Without this stop, unregistering
            // one of N ranges that share memory cost O(N).
            r.rev.first <= lo && r.rev.last >= hi
        });
        // A refill of everything clears the flag; a partial one only sets it.
        self.reverse_incomplete |= failed;
    }

    /// Forgets every retiring range whose grace period has ended.
    fn finalize_expired(&mut self) {
        if self.reverse_incomplete {
            self.reverse_incomplete = false;
            self.refill_reverse(0, u64::MAX);
        }
        let mut prev = NIL;
        let mut i = self.retire_head;
        while i != NIL {
            let next = self.rec(i).retire_next;
            // A range stays until its pins drop (an unregister that did not wait for them:
            // a device freed on a thread that was reading).
            // Decided once: the grace period can end and pins can drop between two looks,
            // and a range whose memmap is still in its table must never be forgotten (its
            // DRAM memmap would be unmapped under the table's entry).
            let ready = rcu::completed(self.rec(i).retire_at) && pin::count(i) == 0;
            if ready && self.rec(i).mm_live {
                // Unpinned: the memmap leaves its table now, and the range is forgotten after
                // the grace period that follows.
                let r = self.ranges.get_mut(i);
                MEMMAP.remove(&r.mm, &mut r.detached);
                r.mm_live = false;
                r.retire_at = rcu::snapshot();
                prev = i;
            } else if ready {
                if prev == NIL {
                    self.retire_head = next;
                } else {
                    self.ranges.get_mut(prev).retire_next = next;
                }
                self.forget(i);
            } else {
                prev = i;
            }
            i = next;
        }
    }

    /// Removes a finalized range from the indexes and its device, and frees it.
    fn forget(&mut self, i: u32) {
        self.phys_root = PhysTree(&mut self.ranges).remove(self.phys_root, i);
        self.va_root = VaTree(&mut self.ranges).remove(self.va_root, i);
        let (dev, prev, next) = {
            let r = self.rec(i);
            (r.device, r.dev_prev, r.dev_next)
        };
        if prev == NIL {
            self.device_mut(dev).head = next;
        } else {
            self.ranges.get_mut(prev).dev_next = next;
        }
        if next != NIL {
            self.ranges.get_mut(next).dev_prev = prev;
        }
        drop(std::mem::take(&mut self.ranges.get_mut(i).detached));
        drop(std::mem::take(&mut self.ranges.get_mut(i).dram));
        self.ranges.free(i);
        let d = self.device_mut(dev);
        d.ranges -= 1;
        if d.ranges == 0 && d.orphan {
            self.free_device(dev);
        }
    }

    fn free_device(&mut self, slot: u32) {
        let next = self.free_device;
        let d = self.device_mut(slot);
        *d = DeviceRec {
            gen: d.gen.wrapping_add(1),
            next_free: next,
            head: NIL,
            ..Default::default()
        };
        self.free_device = slot;
    }

    /// The device's ranges, newest first.
    fn device_ranges(&self, slot: u32) -> impl Iterator<Item = u32> + '_ {
        let mut i = self.devices[slot as usize].head;
        std::iter::from_fn(move || {
            (i != NIL).then(|| {
                let cur = i;
                i = self.rec(cur).dev_next;
                cur
            })
        })
    }

    fn closing_overlaps(&self, addr: usize, len: usize) -> bool {
        self.closing != 0
            && (0..self.mappings.capacity()).any(|j| {
                let m = self.mappings.get(j);
                m.used && m.closing && m.addr < addr.saturating_add(len) && addr < m.addr + m.len
            })
    }
}

/// Holds registration off across fork(); see `fork`.
pub(crate) fn lock_for_fork() -> MutexGuard<'static, State> {
    state()
}

fn state() -> MutexGuard<'static, State> {
    // Every writer leaves the state consistent before anything that could panic.
    let mut st = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    st.finalize_expired();
    st
}

/// Refuses calls that would wait for readers on a thread that is itself reading.
pub(crate) fn check_not_reading() -> Result<()> {
    match rcu::current() {
        Some(r) if r.is_reading() => {
            if rcu::debug() {
                rcu::report(format_args!(
                    "a call that waits for readers refused (EDEADLK): this thread holds {} \
                     kmap(s) and {} read section(s){}",
                    r.holds.len(),
                    r.sections.load(Ordering::Relaxed),
                    rcu::HeldPages(r)
                ));
            }
            Err(errmsg::with(
                Error::Deadlock,
                format_args!(
                    "this thread holds {} kmap(s) and {} read section(s): waiting for readers \
                 would wait for itself",
                    r.holds.len(),
                    r.sections.load(Ordering::Relaxed)
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses to wait for pins of range `i` that the calling thread took itself and still holds.
fn check_no_own_pins(i: u32) -> Result<()> {
    match pin::held_here(i) {
        0 => Ok(()),
        n => Err(errmsg::with(
            Error::Deadlock,
            format_args!(
                "this thread took {n} pin(s) of the range and has not released them: waiting \
                 for pins would wait for itself"
            ),
        )),
    }
}

/// Refuses to unregister a range while a page descriptor of it is referenced.
fn check_no_page_refs(r: &RangeRec) -> Result<()> {
    if r.fwd.memmap == 0 {
        return Ok(());
    }
    let pages = r.fwd.last - r.fwd.first + 1;
    let busy = (0..pages).find(|&d| {
        // SAFETY: the range is registered, so its memmap is mapped.
        unsafe { memmap::page(r.fwd.memmap + (d * memmap::PAGE_BYTES) as usize) }
            .refcount
            .load(Ordering::Acquire)
            != 0
    });
    match busy {
        None => Ok(()),
        Some(d) => Err(errmsg::with(
            Error::Busy,
            format_args!(
                "the page descriptor of pfn {:#x} has a reference count of {} (pfn_put_page \
                 first)",
                r.fwd.first + d,
                // SAFETY: as above.
                unsafe { memmap::page(r.fwd.memmap + (d * memmap::PAGE_BYTES) as usize) }
                    .refcount
                    .load(Ordering::Relaxed)
            ),
        )),
    }
}

/// Validates a range and its virtual placement. Returns (first pfn, last pfn, bytes).
fn check_range(start: u64, end: u64, base: usize) -> Result<(u64, u64, u64)> {
    let page_mask = PAGE_SIZE - 1;
    let bad = |args| Err(errmsg::invalid(args));
    if start & page_mask != 0 {
        return bad(format_args!("start {start:#x} is not page-aligned"));
    }
    if end & page_mask != page_mask {
        return bad(format_args!(
            "end + 1 = {:#x} is not page-aligned (end is the last byte, inclusive: \
             start + size - 1)",
            end.wrapping_add(1)
        ));
    }
    if end < start {
        return bad(format_args!("end {end:#x} is below start {start:#x}"));
    }
    if base == 0 {
        return bad(format_args!("base is NULL"));
    }
    if base as u64 & page_mask != 0 {
        return bad(format_args!("base {base:#x} is not page-aligned"));
    }
    let bytes = u128::from(end - start) + 1;
    if base as u128 + bytes > usize::MAX as u128 + 1 {
        return bad(format_args!(
            "base {base:#x} + {bytes:#x} bytes runs past the end of the address space"
        ));
    }
    // A range of 2^64 bytes cannot be described by a byte count; it is refused (no mapping is
    // that large anyway).
    let Ok(bytes) = u64::try_from(bytes) else {
        return bad(format_args!("a range of 2^64 bytes cannot be mapped"));
    };
    Ok((start >> PAGE_SHIFT, end >> PAGE_SHIFT, bytes))
}

/// The refusal of a range that overlaps range `i`.
fn overlap(st: &State, first: u64, last: u64, i: u32) -> Error {
    let r = st.rec(i);
    errmsg::with(
        Error::Busy,
        format_args!(
            "physical range {:#x}..={:#x} overlaps the {}range {:#x}..={:#x}",
            first << PAGE_SHIFT,
            (last << PAGE_SHIFT) | (PAGE_SIZE - 1),
            if r.state == RETIRING {
                "still unregistering "
            } else {
                "registered "
            },
            r.phys_first << PAGE_SHIFT,
            (r.fwd.last << PAGE_SHIFT) | (PAGE_SIZE - 1)
        ),
    )
}

/// The refusal of memory that lies in a mapping being unmapped.
fn closing(base: usize, bytes: u64) -> Error {
    errmsg::with(
        Error::Busy,
        format_args!("memory {base:#x} + {bytes:#x} lies in a mapping being unmapped"),
    )
}

/// A registered range as [`Device::range_at`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeInfo {
    /// Its first frame as registered (before a memmap kept at its head).
    pub phys_first: u64,
    /// Its first translatable frame (after a memmap kept at its head).
    pub first: u64,
    pub pages: u64,
    /// The address its first frame translates to.
    pub base: usize,
    /// The pfn_t flags it was registered with (what reverse translation reports).
    pub flags: u64,
}

/// What holds a physical frame, as [`Device::range_holding`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No range, live or being unregistered.
    Nothing,
    /// A live range of the device asked.
    Mine(RangeInfo),
    /// A live range of another device.
    Other(RangeInfo),
    /// A range being unregistered (of any device).
    Retiring(RangeInfo),
}

/// An owner of ranges (the seed's `struct device`). Dropping it unregisters its ranges.
#[derive(Debug)]
pub struct Device {
    slot: u32,
    gen: u32,
    killed: AtomicBool,
}

impl Device {
    /// A new device. Errors: `OutOfMemory`.
    pub fn new() -> Result<Device> {
        let mut st = state();
        let slot = if st.free_device != NIL {
            let s = st.free_device;
            st.free_device = st.devices[s as usize].next_free;
            s
        } else {
            st.devices.try_reserve(1).map_err(|_| {
                errmsg::with(Error::OutOfMemory, format_args!("no memory for a device"))
            })?;
            st.devices.push(DeviceRec::default());
            (st.devices.len() - 1) as u32
        };
        let d = st.device_mut(slot);
        d.live = true;
        d.head = NIL;
        let gen = d.gen;
        Ok(Device {
            slot,
            gen,
            killed: AtomicBool::new(false),
        })
    }

    /// Registers physical bytes `start..=end` as mapped at virtual address `base`.
    ///
    /// Errors: `Invalid` when `start`, `end + 1` or `base` is not page-aligned, `end < start`,
    /// `base` is 0, the range would run past the end of the virtual address space, or the
    /// device has been freed; `Busy` when it overlaps a registered range (or one still being
    /// unregistered), or its memory lies in a mapping being unmapped; `OutOfMemory`.
    pub fn register(&self, start: u64, end: u64, base: usize) -> Result<()> {
        self.register_with(start, end, base, DEV)
    }

    /// As [`Device::register`], with the pfn_t flags that reverse translation reports for it.
    pub fn register_with(&self, start: u64, end: u64, base: usize, flags: u64) -> Result<()> {
        let (first, last, bytes) = check_range(start, end, base)?;
        let mut st = state();
        st.device(self)?;
        if let Some(i) = st.phys_overlap(first, last) {
            return Err(overlap(&st, first, last, i));
        }
        if st.closing_overlaps(base, bytes as usize) {
            return Err(closing(base, bytes));
        }
        insert_range(&mut st, self.slot, first, last, base, bytes, flags, None)
    }

    /// As [`Device::register`], with a page descriptor for every translatable frame (see
    /// `memmap`): in memory the library maps, or at the head of the range (whose first
    /// [`memmap::reserved_frames`] frames then hold them and are not translatable). Reverse
    /// translation reports the frames with PFN_DEV | PFN_MAP.
    ///
    /// Errors: as [`Device::register`]; also `Invalid` when an in-range memmap would leave no
    /// frame to translate; `Busy` when the memmap's memory holds another range's memmap.
    pub fn register_memmap(
        &self,
        start: u64,
        end: u64,
        base: usize,
        placement: Placement,
    ) -> Result<()> {
        let (first, last, bytes) = check_range(start, end, base)?;
        if placement == Placement::InRange
            && memmap::reserved_frames(last - first + 1) > last - first
        {
            return Err(errmsg::invalid(format_args!(
                "a range of {} frame(s) has no frame left beside its own memmap",
                last - first + 1
            )));
        }
        let mut st = state();
        st.device(self)?;
        if let Some(i) = st.phys_overlap(first, last) {
            return Err(overlap(&st, first, last, i));
        }
        if st.closing_overlaps(base, bytes as usize) {
            return Err(closing(base, bytes));
        }
        insert_range(
            &mut st,
            self.slot,
            first,
            last,
            base,
            bytes,
            DEV | MAP,
            Some(placement),
        )
    }

    /// Registers `size` bytes at virtual address `base` in physical space that nothing else
    /// uses, aligned to `align` (a power of two; 0 picks the largest power of two not above
    /// `size`, up to 1 GiB), below [`FREE_SPACE_TOP`]. Returns the physical start. The search
    /// and the registration are one step: racing registrations never overlap.
    ///
    /// Errors: as [`Device::register`]; `NoSpace` when no such free range exists.
    pub fn register_free(&self, size: u64, align: u64, base: usize, flags: u64) -> Result<u64> {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(errmsg::invalid(format_args!(
                "size {size:#x} is not a positive multiple of the page size"
            )));
        }
        if align != 0 && !align.is_power_of_two() {
            return Err(errmsg::invalid(format_args!(
                "align {align:#x} is not a power of two"
            )));
        }
        let align = if align == 0 {
            (1u64 << (63 - size.leading_zeros())).min(1 << 30)
        } else {
            align
        }
        .max(PAGE_SIZE);
        check_range(0, size - 1, base)?;
        let mut st = state();
        st.device(self)?;
        if st.closing_overlaps(base, size as usize) {
            return Err(closing(base, size));
        }
        let no_space = || {
            errmsg::with(
                Error::NoSpace,
                format_args!(
                    "no free physical range of {size:#x} bytes aligned to {align:#x} below 2^56"
                ),
            )
        };
        // From the top down: below the last range in the way, until a hole fits.
        let mut end = FREE_SPACE_TOP;
        let start = loop {
            let Some(start) = end.checked_sub(size).map(|s| s & !(align - 1)) else {
                return Err(no_space());
            };
            if start == 0 {
                // Physical 0 stays free: the null byte handle names it.
                return Err(no_space());
            }
            match st.phys_overlap(start >> PAGE_SHIFT, (start + size - 1) >> PAGE_SHIFT) {
                None => break start,
                Some(i) => end = st.rec(i).phys_first << PAGE_SHIFT,
            }
        };
        let (first, last, bytes) = check_range(start, start + size - 1, base)?;
        insert_range(&mut st, self.slot, first, last, base, bytes, flags, None)?;
        Ok(start)
    }

    /// Unregisters the range this device registered at `start`; returns once no kmap or
    /// section anywhere can still use it, so its memory may then be unmapped.
    ///
    /// Errors: `Deadlock` when the calling thread holds a kmap or section (nothing is
    /// removed); `Invalid` when the device has been freed; `NotFound` when this device has no
    /// range at `start`, including one that another call is unregistering (this call then
    /// returns only after that one's grace period, so the memory may be unmapped after either
    /// returns).
    pub fn unregister(&self, start: u64) -> Result<()> {
        check_not_reading()?;
        let had_memmap;
        let (slot, target, result) = {
            let mut st = state();
            st.device(self)?;
            let found = (start & (PAGE_SIZE - 1) == 0)
                .then(|| st.phys_floor(start >> PAGE_SHIFT))
                .flatten()
                .filter(|&i| {
                    let r = st.rec(i);
                    r.phys_first == start >> PAGE_SHIFT && r.device == self.slot
                });
            match found {
                None => {
                    return Err(errmsg::with(
                        Error::NotFound,
                        format_args!("the device has no range at {start:#x}"),
                    ))
                }
                Some(i) if st.rec(i).state == RETIRING => {
                    // This call would wait for that one's pins too.
                    check_no_own_pins(i)?;
                    had_memmap = st.rec(i).mm.memmap != 0;
                    (i, st.rec(i).retire_at, Err(Error::NotFound))
                }
                Some(i) => {
                    check_no_own_pins(i)?;
                    check_no_page_refs(st.rec(i))?;
                    had_memmap = st.rec(i).mm.memmap != 0;
                    st.unpublish(i);
                    (i, st.rec(i).retire_at, Ok(()))
                }
            }
        };
        rcu::wait_for(target);
        // No new pin can reach the range now: wait for the ones held. The range is not
        // finalized (so its slot not reused) while any is held; the check that it is still
        // this range matters only when another call finalized it meanwhile.
        let first = start >> PAGE_SHIFT;
        while {
            let st = state();
            let r = st.rec(slot);
            r.state == RETIRING && r.phys_first == first && r.device == self.slot
        } {
            if pin::count(slot) == 0 {
                break;
            }
            pin::wait_unpinned(slot);
        }
        if had_memmap {
            // The next writer takes the memmap out of its table; then one more grace period.
            drop(state());
            rcu::wait_for(rcu::snapshot());
        }
        drop(state());
        result.map_err(|e| {
            errmsg::with(
                e,
                format_args!(
                    "the range at {start:#x} was being unregistered by another call (now done)"
                ),
            )
        })
    }

    /// Unregisters every range of this device and makes it dead (registration on it fails from
    /// now on), waiting for readers once for all of them.
    ///
    /// Errors: `Deadlock` when the calling thread holds a kmap or section (nothing changes);
    /// `Invalid` when the device was freed already.
    pub fn kill(&self) -> Result<()> {
        check_not_reading()?;
        self.kill_unchecked(true, true)
    }

    /// Refuses a kill that would wait for the calling thread's own pins (`Deadlock`) or that
    /// finds a page descriptor referenced (`Busy`). `Invalid` when the device was freed.
    pub fn check_kill(&self) -> Result<()> {
        check_not_reading()?;
        let st = state();
        st.device(self)?;
        for i in st.device_ranges(self.slot) {
            // A range being unregistered is waited for too: its pins count.
            check_no_own_pins(i)?;
            if st.rec(i).state == LIVE {
                check_no_page_refs(st.rec(i))?;
            }
        }
        Ok(())
    }

    /// True when the calling thread holds pins it took on one of this device's ranges.
    fn own_pins(&self) -> bool {
        let st = state();
        st.device(self).is_ok()
            && st
                .device_ranges(self.slot)
                .any(|i| check_no_own_pins(i).is_err())
    }

    fn kill_unchecked(&self, wait: bool, refuse: bool) -> Result<()> {
        let any_memmap;
        let target = {
            let mut st = state();
            st.device(self)?;
            if refuse {
                for i in st.device_ranges(self.slot) {
                    check_no_own_pins(i)?;
                    if st.rec(i).state == LIVE {
                        check_no_page_refs(st.rec(i))?;
                    }
                }
            }
            any_memmap = st
                .device_ranges(self.slot)
                .any(|i| st.rec(i).mm.memmap != 0);
            self.killed.store(true, Ordering::Relaxed);
            st.device_mut(self.slot).dead = true;
            let mut target = rcu::snapshot();
            let mut i = st.devices[self.slot as usize].head;
            while i != NIL {
                let next = st.rec(i).dev_next;
                if st.rec(i).state == LIVE {
                    st.unpublish(i);
                }
                let at = st.rec(i).retire_at;
                if at.wrapping_sub(target) as i64 > 0 {
                    target = at;
                }
                i = next;
            }
            if !wait {
                st.device_mut(self.slot).orphan = true;
                if st.devices[self.slot as usize].ranges == 0 {
                    st.free_device(self.slot);
                }
                return Ok(());
            }
            target
        };
        rcu::wait_for(target);
        // Then for the pins of each range still in the bookkeeping, one at a time.
        loop {
            let pinned = {
                let st = state();
                let found = st.device_ranges(self.slot).find(|&i| pin::count(i) != 0);
                found
            };
            match pinned {
                Some(i) => pin::wait_unpinned(i),
                None => break,
            }
        }
        if any_memmap {
            // Memmaps leave their table at the next writer; then one more grace period.
            drop(state());
            rcu::wait_for(rcu::snapshot());
        }
        let mut st = state();
        // Every range of the device retired before `target`: all are finalized now.
        debug_assert_eq!(st.devices[self.slot as usize].ranges, 0);
        if st.devices[self.slot as usize].ranges == 0 {
            st.free_device(self.slot);
        } else {
            st.device_mut(self.slot).orphan = true;
        }
        Ok(())
    }

    /// The live range this device registered at physical `start`, as registered (for objects
    /// that wrap one range, like a DAX device).
    ///
    /// Errors: `Invalid` when the device has been freed; `NotFound` when it has no live range
    /// starting at `start` (none, or one being unregistered).
    pub fn range_at(&self, start: u64) -> Result<RangeInfo> {
        let st = state();
        st.device(self)?;
        (start & (PAGE_SIZE - 1) == 0)
            .then(|| st.phys_floor(start >> PAGE_SHIFT))
            .flatten()
            .map(|i| st.rec(i))
            .filter(|r| {
                r.phys_first == start >> PAGE_SHIFT && r.device == self.slot && r.state == LIVE
            })
            .map(|r| RangeInfo {
                phys_first: r.phys_first,
                first: r.fwd.first,
                pages: r.fwd.last - r.fwd.first + 1,
                base: r.fwd.target,
                flags: r.rev.flags,
            })
            .ok_or_else(|| {
                errmsg::with(
                    Error::NotFound,
                    format_args!("the device has no registered range at {start:#x}"),
                )
            })
    }

    /// The range (of any device, live or being unregistered) that holds frame `pfn`, for
    /// objects that wrap a run of ranges, like a DAX device over several.
    ///
    /// Errors: `Invalid` when this device has been freed.
    pub fn range_holding(&self, pfn: u64) -> Result<Holder> {
        let st = state();
        st.device(self)?;
        let Some(r) = st
            .phys_floor(pfn)
            .map(|i| st.rec(i))
            .filter(|r| r.fwd.last >= pfn)
        else {
            return Ok(Holder::Nothing);
        };
        let info = RangeInfo {
            phys_first: r.phys_first,
            first: r.fwd.first,
            pages: r.fwd.last - r.fwd.first + 1,
            base: r.fwd.target,
            flags: r.rev.flags,
        };
        Ok(if r.state != LIVE {
            Holder::Retiring(info)
        } else if r.device == self.slot {
            Holder::Mine(info)
        } else {
            Holder::Other(info)
        })
    }

    /// Number of live ranges this device has registered.
    pub fn range_count(&self) -> usize {
        let st = state();
        if st.device(self).is_err() {
            return 0;
        }
        st.device_ranges(self.slot)
            .filter(|&i| st.rec(i).state == LIVE)
            .count()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.killed.load(Ordering::Relaxed) {
            return;
        }
        // A thread that is reading cannot wait for readers (nor one holding pins of its own for
        // pins): the ranges are unpublished now and
        // finalized by a later writer once their grace period has ended.
        let wait = check_not_reading().is_ok() && !self.own_pins();
        let _ = self.kill_unchecked(wait, false);
    }
}

/// Allocates, publishes and indexes a range, with a memmap when `placement` says where. On
/// any failure nothing changes.
#[allow(clippy::too_many_arguments)]
fn insert_range(
    st: &mut State,
    device: u32,
    first: u64,
    last: u64,
    base: usize,
    bytes: u64,
    flags: u64,
    placement: Option<Placement>,
) -> Result<()> {
    let oom = || errmsg::with(Error::OutOfMemory, format_args!("no memory for the range"));
    // Frames at the head that hold the memmap, the memmap's address, and one the library maps.
    let (reserved, mm_addr, dram) = match placement {
        None => (0, 0, None),
        Some(Placement::InRange) => (memmap::reserved_frames(last - first + 1), base, None),
        Some(Placement::Dram) => {
            let m = memmap::DramMemmap::new(last - first + 1).ok_or_else(|| {
                errmsg::with(
                    Error::OutOfMemory,
                    format_args!("no memory for the range's page descriptors"),
                )
            })?;
            (0, m.addr, Some(m))
        }
    };
    let described = last - first + 1 - reserved;
    let mm = Extent {
        first: (mm_addr >> PAGE_SHIFT) as u64,
        last: ((mm_addr as u64 + described * memmap::PAGE_BYTES - 1) >> PAGE_SHIFT),
        target: mm_addr,
        memmap: mm_addr,
        pfn0: first + reserved,
        run_last: AtomicU64::new(last),
        virt: base + (reserved << PAGE_SHIFT) as usize,
        ..Default::default()
    };
    if mm_addr != 0 {
        // SAFETY: writers are serialized (the caller holds the lock), so no node is freed.
        let taken = (mm.first..=mm.last).any(|p| unsafe { MEMMAP.translate(p) }.is_some());
        if taken {
            return Err(errmsg::with(
                Error::Busy,
                format_args!(
                    "the memmap at {mm_addr:#x} would share memory with another range's memmap"
                ),
            ));
        }
    }
    let i = st.ranges.alloc().ok_or_else(oom)?;
    let prio = st.rng.next_u32();
    {
        let r = st.ranges.get_mut(i);
        r.phys_first = first;
        r.fwd.first = first + reserved;
        r.fwd.last = last;
        r.fwd.target = base + (reserved << PAGE_SHIFT) as usize;
        r.fwd.memmap = mm_addr;
        r.fwd.range = i;
        r.mm = Extent { range: i, ..mm };
        r.dram = dram.unwrap_or_default();
        r.fwd.run_last = AtomicU64::new(last);
        r.rev.first = (base >> PAGE_SHIFT) as u64;
        r.rev.last = (base as u64 + (bytes - 1)) >> PAGE_SHIFT;
        r.rev.target = (first << PAGE_SHIFT) as usize;
        r.rev.flags = flags & crate::encoding::FLAGS_MASK & !SG_CHAIN;
        r.device = device;
        r.state = LIVE;
        r.phys.prio = prio;
        r.va.prio = prio;
    }
    let r = st.ranges.stable(i);
    let mmr = if mm_addr != 0 {
        MEMMAP.reserve(&r.mm).map(Some)
    } else {
        Ok(None)
    };
    let (fwd, rev, mmr) = match (FORWARD.reserve(&r.fwd), REVERSE.reserve(&r.rev), mmr) {
        (Ok(f), Ok(v), Ok(m)) => (f, v, m),
        _ => {
            drop(std::mem::take(&mut st.ranges.get_mut(i).dram));
            st.ranges.free(i);
            return Err(oom());
        }
    };
    if placement == Some(Placement::InRange) {
        // Reference counts restart at zero; flags and data persist with the range.
        for d in 0..described {
            // SAFETY: the caller maps the range's memory at `base`; the memmap is its head.
            unsafe { memmap::page(mm_addr + (d * memmap::PAGE_BYTES) as usize) }
                .refcount
                .store(0, Ordering::Relaxed);
        }
    }
    if let Some(m) = mmr {
        MEMMAP.commit(&r.mm, m);
        st.ranges.get_mut(i).mm_live = true;
    }
    FORWARD.commit(&r.fwd, fwd);
    REVERSE.commit(&r.rev, rev);
    st.phys_root = PhysTree(&mut st.ranges).insert(st.phys_root, i);
    st.va_root = VaTree(&mut st.ranges).insert(st.va_root, i);
    let head = st.devices[device as usize].head;
    {
        let r = st.ranges.get_mut(i);
        r.dev_prev = NIL;
        r.dev_next = head;
        r.retire_next = NIL;
    }
    if head != NIL {
        st.ranges.get_mut(head).dev_prev = i;
    }
    let d = st.device_mut(device);
    d.head = i;
    d.ranges += 1;
    st.join_runs(i);
    st.publish_sole_run();
    Ok(())
}

// ---- mappings the library made ----

/// A mapping known to the bookkeeping, so that registration refuses its memory while it is
/// being unmapped.
#[derive(Debug)]
pub struct MappingId(u32);

/// Records a mapping. Errors: `OutOfMemory`.
pub fn add_mapping(addr: usize, len: usize) -> Result<MappingId> {
    let mut st = state();
    let i = st.mappings.alloc().ok_or_else(|| {
        errmsg::with(
            Error::OutOfMemory,
            format_args!("no memory to record the mapping"),
        )
    })?;
    *st.mappings.get_mut(i) = MappingRec {
        used: true,
        closing: false,
        addr,
        len,
    };
    Ok(MappingId(i))
}

/// Starts unmapping: refused with `Busy` (nothing changes) while a registered range, or one
/// still being unregistered, lies in the mapping; `Invalid` when another call is unmapping it.
/// From success on, registration refuses its memory.
pub fn begin_unmap(id: &MappingId) -> Result<()> {
    let mut st = state();
    let m = *st.mappings.get(id.0);
    if m.closing {
        return Err(errmsg::invalid(format_args!(
            "another call is unmapping this mapping"
        )));
    }
    let (lo, hi) = (
        (m.addr >> PAGE_SHIFT) as u64,
        ((m.addr + (m.len - 1)) >> PAGE_SHIFT) as u64,
    );
    let mut user = None;
    st.va_overlaps(lo, hi, &mut |i| {
        user = Some(i);
        true
    });
    if let Some(i) = user {
        let r = st.rec(i);
        return Err(errmsg::with(
            Error::Busy,
            format_args!(
                "the {}range at physical {:#x} lies in the mapping's memory (unregister it \
                 first)",
                if r.state == RETIRING {
                    "still unregistering "
                } else {
                    "registered "
                },
                r.phys_first << PAGE_SHIFT
            ),
        ));
    }
    st.mappings.get_mut(id.0).closing = true;
    st.closing += 1;
    Ok(())
}

/// Undoes a successful [`begin_unmap`] (the unmap did not happen after all).
pub fn abort_unmap(id: &MappingId) {
    let mut st = state();
    if std::mem::replace(&mut st.mappings.get_mut(id.0).closing, false) {
        st.closing -= 1;
    }
}

/// Forgets a mapping (after it was unmapped, or when a map failed after `add_mapping`).
pub fn remove_mapping(id: MappingId) {
    let mut st = state();
    if st.mappings.get(id.0).closing {
        st.closing -= 1;
    }
    st.mappings.free(id.0);
}

/// True when a registered range (or one still being unregistered) uses virtual memory in
/// `addr..addr + len`.
pub fn memory_in_use(addr: usize, len: usize) -> bool {
    if len == 0 {
        return false;
    }
    let st = state();
    st.va_busy(
        (addr >> PAGE_SHIFT) as u64,
        ((addr + (len - 1)) >> PAGE_SHIFT) as u64,
    )
}

// ---- translation (no lock) ----

/// A successful kmap: the address and the bytes contiguous from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub addr: usize,
    pub len: u64,
}

/// Bytes from page `pfn` to the end of `run_last`, saturating.
fn run_bytes(pfn: u64, run_last: u64) -> u64 {
    let pages = run_last - pfn + 1;
    if pages >= 1 << 52 {
        u64::MAX
    } else {
        pages << PAGE_SHIFT
    }
}

/// The calling thread's reader, set up on first use.
pub(crate) fn reader() -> Result<&'static Reader> {
    rcu::current_or_register().map_err(|e| match e {
        rcu::SetupError::OutOfMemory => errmsg::with(
            Error::OutOfMemory,
            format_args!("no memory for this thread's reader state"),
        ),
        rcu::SetupError::Interrupted => errmsg::with(
            Error::Again,
            format_args!(
                "a signal handler interrupted this thread's own set-up (call pfn_thread_init \
                 before installing handlers that use libpfn)"
            ),
        ),
    })
}

/// The refusal of a scatterlist-chain handle.
pub(crate) fn chain_err(pfn: Pfn) -> Error {
    errmsg::invalid(format_args!(
        "pfn_t {:#x} has PFN_SG_CHAIN set: it links a scatterlist and names no frame",
        pfn.0
    ))
}

/// The miss of a frame no range holds.
pub(crate) fn not_mapped(pfn: Pfn) -> Error {
    errmsg::with(
        Error::NotMapped,
        format_args!(
            "pfn {:#x} (physical {:#x}) lies in no registered range",
            pfn.pfn(),
            pfn.phys()
        ),
    )
}

/// Records a hold of `start..end` for the calling thread; on failure leaves its section.
fn hold(r: &Reader, start: usize, end: usize) -> Result<()> {
    if r.holds.try_push_inline(start, end) {
        return Ok(());
    }
    if !r.has_room(1) {
        r.leave();
        return Err(errmsg::with(
            Error::Os(libc::EOVERFLOW),
            format_args!(
                "this thread's kmaps and sections are nested about 16 million deep: no room \
                 for one more"
            ),
        ));
    }
    if r.holds.push(start, end) {
        return Ok(());
    }
    r.leave();
    Err(errmsg::with(
        Error::OutOfMemory,
        format_args!(
            "no memory to record a hold nested {} deep",
            r.holds.len() + 1
        ),
    ))
}

/// Maps `pfn` for the calling thread; the address stays valid until [`kunmap`] on this thread.
///
/// Errors: `Invalid` for a scatterlist-chain handle; `NotMapped` when no range holds the frame;
/// `OutOfMemory` when the thread's first kmap cannot allocate its reader record (or a very deep
/// nesting its hold); `Os(EOVERFLOW)` past about 16 million nested kmaps and sections; `Again`
/// in a signal handler that interrupted this thread's own set-up.
pub fn kmap(pfn: Pfn) -> Result<usize> {
    if pfn.sg_chain() {
        return Err(chain_err(pfn));
    }
    let r = reader()?;
    r.enter();
    // SAFETY: inside the read-side section just entered.
    let Some(addr) = (unsafe { FORWARD.translate(pfn.pfn()) }) else {
        r.leave();
        return Err(not_mapped(pfn));
    };
    hold(r, addr, addr + PAGE_SIZE as usize)?;
    Ok(addr)
}

/// As [`kmap`], also returning the bytes contiguous from the address: to the end of the range,
/// or of the run of ranges that continue it physically and virtually. The hold covers them all:
/// kunmap of any address in them releases it.
pub fn kmap_len(pfn: Pfn) -> Result<Mapped> {
    if pfn.sg_chain() {
        return Err(chain_err(pfn));
    }
    let r = reader()?;
    r.enter();
    // SAFETY: inside the read-side section just entered.
    let Some((leaf, e)) = (unsafe { FORWARD.leaf(pfn.pfn()) }) else {
        r.leave();
        return Err(not_mapped(pfn));
    };
    let addr = leaf.addr(pfn.pfn());
    let len = run_bytes(pfn.pfn(), e.run_last.load(Ordering::Acquire));
    let end = addr.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
    hold(r, addr, end)?;
    Ok(Mapped { addr, len })
}

/// Maps the page holding physical byte `phys` and returns the byte's address; the hold covers
/// the page. Errors as [`kmap`].
pub fn kmap_phys(phys: u64) -> Result<usize> {
    let page = kmap(Pfn::from_phys(phys, 0))?;
    Ok(page + (phys & (PAGE_SIZE - 1)) as usize)
}

/// [`kmap`] when nothing unusual happens, else None with nothing changed: the thread has a
/// record with room for one more inline hold, and the frame is mapped. Allocates nothing, takes
/// no lock and cannot panic, so the C layer can call it without a stack frame.
#[inline(always)]
pub fn kmap_fast(pfn: Pfn) -> Option<usize> {
    let r = rcu::current()?;
    if r.holds.len() >= crate::holds::INLINE {
        return None;
    }
    r.enter();
    // PFN_SG_CHAIN (bit 63) stays in the key: no range holds such a page, so the walk misses
    // and kmap() reports it.
    let key = pfn.0 & (SG_CHAIN | crate::encoding::MAX_PFN);
    // SAFETY: inside the read-side section just entered.
    match unsafe { FORWARD.translate(key) } {
        Some(addr) => {
            // SAFETY: checked above that an inline hold is free (a signal handler that ran
            // since has released what it took).
            unsafe { r.holds.push_page_inline_at(r.holds.len(), addr) };
            Some(addr)
        }
        None => {
            // kmap() runs next and leaves properly (waking a writer if one waits).
            r.leave_quietly();
            None
        }
    }
}

/// Releases the newest of this thread's kmaps whose extent contains `addr`, when it is the
/// newest hold: the common case, with no call. False: use [`kunmap`].
#[inline(always)]
pub fn kunmap_fast(addr: usize) -> bool {
    match rcu::current() {
        Some(r) if r.holds.pop_if_top(addr) => {
            r.leave();
            true
        }
        _ => false,
    }
}

/// Releases one of this thread's kmaps whose extent contains `addr` (any address inside what
/// the kmap returned). False (and nothing released) when this thread holds no such kmap.
pub fn kunmap(addr: usize) -> bool {
    match rcu::current() {
        Some(r) if r.holds.release(addr) => {
            r.leave();
            true
        }
        _ => false,
    }
}

/// The physical address and pfn_t flags of virtual address `addr`, when it lies in a
/// registered range (the lookup takes no lock). When ranges share virtual memory, one of them
/// answers. Errors: `NotMapped`; setup errors as [`kmap`].
pub fn virt_to_phys(addr: usize) -> Result<(u64, u64)> {
    let r = reader()?;
    r.enter();
    let vpn = (addr >> PAGE_SHIFT) as u64;
    // SAFETY: inside the read-side section just entered.
    let found = unsafe { REVERSE.leaf(vpn) }.map(|(leaf, e)| {
        (
            leaf.addr(vpn) as u64 + (addr as u64 & (PAGE_SIZE - 1)),
            e.flags,
        )
    });
    r.leave();
    found.ok_or_else(|| {
        errmsg::with(
            Error::NotMapped,
            format_args!("address {addr:#x} lies in no registered range"),
        )
    })
}

// ---- read sections ----

/// The table root a section walks from (read once when the section opens).
pub fn root_word() -> usize {
    FORWARD.root_word()
}

/// Address of `pfn` in a section whose root word is `root`: one comparison when `cache` (the
/// sole run when the section opened, see [`SoleRun`]) holds it, else a table walk. Nothing is
/// written, so that independent lookups in one section share no state (a cache refilled on
/// every miss made them wait for each other and mispredict). Errors: `Invalid` for
/// PFN_SG_CHAIN; `NotMapped`.
///
/// # Safety
/// The section that produced `root` is still open.
#[inline(always)]
pub unsafe fn translate_in_section(root: usize, cache: &Block, pfn: Pfn) -> Result<usize> {
    // Keep SG_CHAIN (bit 63) in the key: it never matches, so one comparison covers both.
    let key = pfn.0 & (SG_CHAIN | crate::encoding::MAX_PFN);
    if let Some(addr) = cache.addr_of(key) {
        return Ok(addr);
    }
    if pfn.sg_chain() {
        return Err(chain_err(pfn));
    }
    table::translate_from(root, pfn.pfn()).ok_or_else(|| not_mapped(pfn))
}

/// The run of ranges holding `pfn`, as one block from the first page of its range (the page
/// alone when the slot was reused since the section's snapshot), for callers that keep their
/// own cache of runs (scatterlist walks). Errors: `Invalid` for PFN_SG_CHAIN; `NotMapped`.
///
/// # Safety
/// As for [`translate_in_section`].
pub unsafe fn run_in_section(root: usize, pfn: Pfn) -> Result<Block> {
    if pfn.sg_chain() {
        return Err(chain_err(pfn));
    }
    let p = pfn.pfn();
    let leaf = table::leaf_from(root, p).ok_or_else(|| not_mapped(pfn))?;
    let run = leaf.extent().and_then(|e| {
        let run_last = e.run_last.load(Ordering::Acquire).max(e.last);
        // The slot may have been reused for another range since it was read (the section
        // sees a snapshot): use the run only when slot and extent agree.
        (p.wrapping_sub(e.first) <= run_last - e.first && leaf.addr(e.first) == e.target).then(
            || Block {
                first: e.first,
                pages: run_last - e.first + 1,
                addr: e.target,
            },
        )
    });
    Ok(run.unwrap_or(Block {
        first: p,
        pages: 1,
        addr: leaf.addr(p),
    }))
}

/// Address of `pfn` in the section and the bytes contiguous from it (to the end of the run of
/// ranges).
///
/// # Safety
/// As for [`translate_in_section`].
pub unsafe fn translate_len_in_section(root: usize, cache: &Block, pfn: Pfn) -> Result<Mapped> {
    let addr = translate_in_section(root, cache, pfn)?;
    let p = pfn.pfn();
    let run_last = match cache.addr_of(p) {
        Some(_) => cache.first + (cache.pages - 1),
        None => {
            let leaf = table::leaf_from(root, p).ok_or_else(|| not_mapped(pfn))?;
            // The run's end, when slot and extent still agree (the section sees a snapshot
            // that a later registration may reuse): else this page alone.
            leaf.extent()
                .filter(|e| leaf.addr(e.first) == e.target && p >= e.first)
                .map(|e| e.run_last.load(Ordering::Acquire).max(e.last))
                .filter(|&last| last >= p)
                .unwrap_or(p)
        }
    };
    Ok(Mapped {
        addr,
        len: run_bytes(p, run_last),
    })
}

// ---- pins and page descriptors (no lock) ----

/// Takes a long-lived pin on the range holding `pfn` (mainline's get_dev_pagemap): until it is
/// released with [`pin::unpin`] (on any thread), unregistering the range waits. Errors:
/// `Invalid` for PFN_SG_CHAIN; `NotMapped` when no live range holds the frame (also one being
/// unregistered); `OutOfMemory` when the thread's counters cannot grow; `Overflow` past 522,240
/// range slots; set-up errors as [`kmap`].
pub fn pin(pfn: Pfn) -> Result<pin::Pin> {
    pin_frame(pfn).map(|(p, _, _)| p)
}

/// [`pin`] when nothing unusual happens (the thread is set up and has counted pins of this
/// range's slot group before), else None with nothing changed. Allocates nothing, takes no
/// lock, cannot panic.
#[inline(always)]
pub fn pin_fast(pfn: Pfn) -> Option<pin::Pin> {
    let r = rcu::current()?;
    r.enter();
    // PFN_SG_CHAIN stays in the key: it never matches, and pin() reports it.
    let key = pfn.0 & (SG_CHAIN | crate::encoding::MAX_PFN);
    // SAFETY: inside the read-side section just entered.
    let p = unsafe { FORWARD.leaf(key) }.and_then(|(_, e)| pin::take_fast(r, e.range));
    if p.is_some() {
        r.leave();
    } else {
        r.leave_quietly();
    }
    p
}

/// As [`pin`], also returning the frame's address and its page descriptor (0 when the range
/// has no memmap), found in the same lookup: valid for as long as the pin is held, also after
/// an unregister has begun (when lookups by pfn already miss the range).
pub fn pin_frame(pfn: Pfn) -> Result<(pin::Pin, usize, usize)> {
    if pfn.sg_chain() {
        return Err(chain_err(pfn));
    }
    let r = reader()?;
    if !r.has_room(1) {
        return Err(errmsg::with(
            Error::Os(libc::EOVERFLOW),
            format_args!("this thread's kmaps and sections are nested too deep to pin"),
        ));
    }
    r.enter();
    // SAFETY: inside the read-side section just entered.
    let p = pfn.pfn();
    let found = unsafe { FORWARD.leaf(p) }.map(|(leaf, e)| {
        let page = match e.memmap {
            0 => 0,
            m => m + (p.wrapping_sub(e.first) * memmap::PAGE_BYTES) as usize,
        };
        (e.range, leaf.addr(p), page)
    });
    let result = match found {
        Some((slot, addr, page)) => pin::take(r, slot).map(|pin| (pin, addr, page)),
        None => Err(not_mapped(pfn)),
    };
    r.leave();
    result
}

/// The page descriptor of `pfn` (its address), with no error detail: None when `pfn` has no
/// page (see [`Pfn::has_page`]), no range holds it, or its range has no memmap.
#[inline(always)]
pub fn pfn_to_page_fast(pfn: Pfn) -> Option<usize> {
    if !pfn.has_page() {
        return None;
    }
    let r = rcu::current()?;
    // A thread already inside a section (or holding a kmap) is protected by it: no node it can
    // reach is freed before it leaves, so the lookup needs no section of its own (the common
    // case under the descriptor's lifetime rule, and the cheaper one).
    let outer = r.nesting() != 0;
    if !outer {
        r.enter();
    }
    let key = pfn.0 & (SG_CHAIN | crate::encoding::MAX_PFN);
    // SAFETY: inside a read-side section (the thread's own, or the one just entered).
    let page = unsafe { FORWARD.leaf(key) }
        .filter(|(_, e)| e.memmap != 0)
        .map(|(_, e)| e.memmap + (key.wrapping_sub(e.first) * memmap::PAGE_BYTES) as usize);
    if !outer {
        r.leave();
    }
    page
}

/// Refuses a scatterlist link, and a pfn_t that says it has no page (PFN_DEV without
/// PFN_MAP), with `why` ending the message.
fn check_has_page(pfn: Pfn, why: &str) -> Result<()> {
    if pfn.sg_chain() {
        return Err(chain_err(pfn));
    }
    if !pfn.has_page() {
        return Err(errmsg::invalid(format_args!(
            "pfn_t {:#x} has PFN_DEV without PFN_MAP: {why}",
            pfn.0
        )));
    }
    Ok(())
}

/// As [`pfn_to_page_fast`], with the reason for a miss. Errors: `Invalid` when `pfn` has no
/// page (PFN_DEV without PFN_MAP) or is a scatterlist link; `NotMapped` when no range holds the
/// frame or its range has no memmap; set-up errors as [`kmap`].
pub fn pfn_to_page(pfn: Pfn) -> Result<usize> {
    check_has_page(pfn, "it has no page descriptor")?;
    reader()?;
    if let Some(p) = pfn_to_page_fast(pfn) {
        return Ok(p);
    }
    let r = reader()?;
    r.enter();
    // SAFETY: inside the read-side section just entered.
    let mapped = unsafe { FORWARD.leaf(pfn.pfn()) }.is_some();
    r.leave();
    Err(if mapped {
        errmsg::with(
            Error::NotMapped,
            format_args!(
                "pfn {:#x} lies in a range registered without a memmap",
                pfn.pfn()
            ),
        )
    } else {
        not_mapped(pfn)
    })
}

/// A page descriptor found by its address: the pfn it describes and that frame's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageOf {
    pub pfn: Pfn,
    pub addr: usize,
}

/// What page descriptor `page` describes (O(1), no lock). Errors: `Invalid` when `page` is not
/// the address of a descriptor of a live range's memmap; set-up errors as [`kmap`].
pub fn page_of(page: usize) -> Result<PageOf> {
    let r = reader()?;
    r.enter();
    let vpn = (page >> PAGE_SHIFT) as u64;
    // SAFETY: inside the read-side section just entered.
    let found = unsafe { MEMMAP.leaf(vpn) }.and_then(|(_, e)| {
        let off = page.wrapping_sub(e.memmap) as u64;
        let d = off / memmap::PAGE_BYTES;
        (off % memmap::PAGE_BYTES == 0 && d <= e.run_last.load(Ordering::Relaxed) - e.pfn0).then(
            || PageOf {
                pfn: Pfn::new(e.pfn0 + d, DEV | MAP),
                addr: e.virt + (d << PAGE_SHIFT) as usize,
            },
        )
    });
    r.leave();
    found.ok_or_else(|| {
        errmsg::invalid(format_args!(
            "{page:#x} is not a page descriptor of a registered range"
        ))
    })
}

/// The descriptor at `page`, checked to be one (see [`page_of`]).
pub fn page_checked(page: usize) -> Result<&'static memmap::Page> {
    page_of(page)?;
    // SAFETY: a descriptor of a live range; the caller holds the range (the header's rule).
    Ok(unsafe { memmap::page(page) })
}

/// The address of frame `pfn` without a kmap (the kernel's pfn_t_to_virt), for a frame with a
/// page. Errors: `Invalid` when `pfn` has no page or is a scatterlist link; `NotMapped`; set-up
/// errors as [`kmap`].
pub fn pfn_to_virt(pfn: Pfn) -> Result<usize> {
    check_has_page(pfn, "it has no page (use kmap_atomic_pfn_t)")?;
    let r = reader()?;
    r.enter();
    // SAFETY: inside the read-side section just entered.
    let addr = unsafe { FORWARD.translate(pfn.pfn()) };
    r.leave();
    addr.ok_or_else(|| not_mapped(pfn))
}

/// Memmaps of live ranges: frames described, bytes of memory the library mapped for them, and
/// bytes they take at the head of their ranges.
pub fn memmap_usage() -> (u64, u64, u64) {
    let st = state();
    let (mut frames, mut dram, mut in_range) = (0, 0, 0);
    for i in 0..st.ranges.capacity() {
        let r = st.rec(i);
        if r.state == LIVE && r.fwd.memmap != 0 {
            frames += r.fwd.last - r.fwd.first + 1;
            dram += r.dram.len as u64;
            in_range += (r.fwd.first - r.phys_first) << PAGE_SHIFT;
        }
    }
    (frames, dram, in_range)
}

/// Bytes of translation-table memory in use (both tables).
pub fn table_bytes() -> usize {
    let _st = state();
    FORWARD.memory_bytes() + REVERSE.memory_bytes() + MEMMAP.memory_bytes()
}

/// The forward table's blocks of the range registered at `start` (first pfn, pages): how the
/// table stores it (diagnostics and tests).
pub fn blocks_of(start: u64) -> Vec<(u64, u64)> {
    let st = state();
    match st.phys_floor(start >> PAGE_SHIFT) {
        Some(i) if st.rec(i).phys_first == start >> PAGE_SHIFT => FORWARD.blocks_of(&st.rec(i).fwd),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Pfn;

    const GIB: u64 = 1 << 30;

    #[test]
    fn register_translate_unregister() {
        let dev = Device::new().unwrap();
        let start = 100 * GIB;
        dev.register(start, start + 8 * PAGE_SIZE - 1, 0x7000_0000_0000)
            .unwrap();
        let p = Pfn::from_phys(start + 3 * PAGE_SIZE, 0);
        let addr = kmap(p).unwrap();
        assert_eq!(addr, 0x7000_0000_0000 + 3 * PAGE_SIZE as usize);
        assert_eq!(dev.unregister(start), Err(Error::Deadlock));
        assert!(kunmap(addr + 17));
        assert!(!kunmap(addr));
        let m = kmap_len(p).unwrap();
        assert_eq!((m.addr, m.len), (addr, 5 * PAGE_SIZE));
        // Any address inside the extent releases it.
        assert!(kunmap(addr + 4 * PAGE_SIZE as usize + 5));
        assert_eq!(
            virt_to_phys(addr + 7).unwrap(),
            (start + 3 * PAGE_SIZE + 7, DEV)
        );
        dev.unregister(start).unwrap();
        assert_eq!(kmap(p), Err(Error::NotMapped));
        assert_eq!(virt_to_phys(addr), Err(Error::NotMapped));
        assert_eq!(dev.unregister(start), Err(Error::NotFound));
    }

    fn anon(len: usize) -> usize {
        // SAFETY: a fresh anonymous mapping, leaked by the test.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as usize
    }

    #[test]
    fn memmap_descriptors_round_trip_in_dram_and_in_range() {
        let dev = Device::new().unwrap();
        let pages = 600u64;
        let base = anon((pages * PAGE_SIZE) as usize);
        let start = 200 * GIB;
        let end = start + pages * PAGE_SIZE - 1;
        for placement in [Placement::Dram, Placement::InRange] {
            dev.register_memmap(start, end, base, placement).unwrap();
            let reserved = if placement == Placement::InRange {
                memmap::reserved_frames(pages)
            } else {
                0
            };
            assert_eq!(
                reserved,
                if placement == Placement::InRange {
                    3
                } else {
                    0
                }
            );
            for k in [reserved, reserved + 1, pages - 1] {
                let pfn = Pfn::new((start >> PAGE_SHIFT) + k, DEV | MAP);
                let page = pfn_to_page(pfn).unwrap();
                let of = page_of(page).unwrap();
                assert_eq!(of.pfn, pfn);
                assert_eq!(of.addr, base + (k << PAGE_SHIFT) as usize);
                assert_eq!(pfn_to_virt(pfn).unwrap(), of.addr);
                assert_eq!(page_of(page + 8), Err(Error::Invalid));
            }
            if reserved > 0 {
                // The frames holding the memmap are not translatable; the memmap is their bytes.
                let held = Pfn::new((start >> PAGE_SHIFT) + reserved - 1, DEV | MAP);
                assert_eq!(pfn_to_page(held), Err(Error::NotMapped));
                assert_eq!(kmap(held), Err(Error::NotMapped));
                assert!(pfn_to_page(Pfn::new(start >> PAGE_SHIFT, 0)).is_err());
                let first = pfn_to_page(Pfn::new((start >> PAGE_SHIFT) + reserved, DEV | MAP));
                assert_eq!(first, Ok(base));
            }
            assert_eq!(
                pfn_to_page(Pfn::new(start >> PAGE_SHIFT, DEV)),
                Err(Error::Invalid)
            );
            assert_eq!(
                virt_to_phys(base + ((pages - 1) << PAGE_SHIFT) as usize)
                    .unwrap()
                    .1,
                DEV | MAP
            );
            // A referenced descriptor refuses unregister; released, it is removed.
            let pfn = Pfn::new((start >> PAGE_SHIFT) + pages - 1, DEV | MAP);
            let page = page_checked(pfn_to_page(pfn).unwrap()).unwrap();
            assert_eq!(memmap::get(page), Some(1));
            assert_eq!(dev.unregister(start), Err(Error::Busy));
            assert_eq!(memmap::put(page), Some(0));
            dev.unregister(start).unwrap();
            assert_eq!(pfn_to_page(pfn), Err(Error::NotMapped));
        }
        // A range too small to hold its own memmap and one frame more.
        assert_eq!(
            dev.register_memmap(start, start + PAGE_SIZE - 1, base, Placement::InRange),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn unregister_waits_for_a_pin_released_on_another_thread() {
        let dev = Device::new().unwrap();
        let start = 210 * GIB;
        dev.register(start, start + 4 * PAGE_SIZE - 1, 0x7100_0000_0000)
            .unwrap();
        let p = pin(Pfn::from_phys(start + PAGE_SIZE, 0)).unwrap();
        // The pinning thread itself cannot wait for its pin.
        assert_eq!(dev.unregister(start), Err(Error::Deadlock));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let waiter = {
            let done = done.clone();
            std::thread::spawn(move || {
                dev.unregister(start).unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        while pin::waiters() == 0 {
            std::thread::yield_now();
        }
        assert!(!done.load(Ordering::SeqCst));
        assert_eq!(pin(Pfn::from_phys(start, 0)).err(), Some(Error::NotMapped));
        let releaser = std::thread::spawn(move || assert!(pin::unpin(p)));
        releaser.join().unwrap();
        waiter.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        // Released twice: refused, nothing changes.
        assert!(!pin::unpin(p));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let dev = Device::new().unwrap();
        let s = 200 * GIB;
        let b = 0x7100_0000_0000usize;
        assert_eq!(
            dev.register(s + 1, s + PAGE_SIZE - 1, b),
            Err(Error::Invalid)
        );
        assert_eq!(dev.register(s, s + PAGE_SIZE, b), Err(Error::Invalid));
        assert_eq!(dev.register(s, s - 1, b), Err(Error::Invalid));
        assert_eq!(
            dev.register(s, s + PAGE_SIZE - 1, b + 1),
            Err(Error::Invalid)
        );
        assert_eq!(dev.register(s, s + PAGE_SIZE - 1, 0), Err(Error::Invalid));
        assert_eq!(
            dev.register(s, s + 2 * PAGE_SIZE - 1, usize::MAX - 4095),
            Err(Error::Invalid)
        );
        dev.register(s, s + 4 * PAGE_SIZE - 1, b).unwrap();
        let other = Device::new().unwrap();
        assert_eq!(
            other.register(s + 3 * PAGE_SIZE, s + 9 * PAGE_SIZE - 1, b),
            Err(Error::Busy)
        );
        assert_eq!(other.unregister(s), Err(Error::NotFound));
        assert_eq!(dev.range_count(), 1);
        drop(dev);
        other
            .register(s + 3 * PAGE_SIZE, s + 9 * PAGE_SIZE - 1, b)
            .unwrap();
        assert_eq!(kmap(Pfn::from_phys(s, 0)), Err(Error::NotMapped));
        assert_eq!(
            kmap(Pfn::from_phys(s, crate::encoding::SG_CHAIN)),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn ranges_inside_a_mapping_block_it() {
        let dev = Device::new().unwrap();
        let s = 300 * GIB;
        let b = 0x7200_0000_0000usize;
        dev.register(s, s + 4 * PAGE_SIZE - 1, b + 8192).unwrap();
        assert!(memory_in_use(b, 16384));
        assert!(!memory_in_use(b, 8192));
        assert!(!memory_in_use(b + 8192 + 16384, 4096));
        dev.kill().unwrap();
        assert!(!memory_in_use(b, 16384));
        assert_eq!(dev.register(s, s + PAGE_SIZE - 1, b), Err(Error::Invalid));
    }

    #[test]
    fn adjacent_ranges_form_one_run() {
        let dev = Device::new().unwrap();
        let s = 400 * GIB;
        let b = 0x7300_0000_0000usize;
        let page = PAGE_SIZE as usize;
        dev.register(s + 4 * PAGE_SIZE, s + 8 * PAGE_SIZE - 1, b + 4 * page)
            .unwrap();
        dev.register(s, s + 4 * PAGE_SIZE - 1, b).unwrap();
        // Physically adjacent but not virtually: not part of the run.
        dev.register(s + 8 * PAGE_SIZE, s + 9 * PAGE_SIZE - 1, b + 100 * page)
            .unwrap();
        let m = kmap_len(Pfn::from_phys(s + PAGE_SIZE, 0)).unwrap();
        assert_eq!((m.addr, m.len), (b + page, 7 * PAGE_SIZE));
        assert!(kunmap(m.addr + 6 * page));
        dev.unregister(s + 4 * PAGE_SIZE).unwrap();
        let m = kmap_len(Pfn::from_phys(s + PAGE_SIZE, 0)).unwrap();
        assert_eq!(m.len, 3 * PAGE_SIZE);
        assert!(kunmap(m.addr));
    }

    #[test]
    fn free_space_registration_avoids_every_range() {
        let dev = Device::new().unwrap();
        let b = 0x7400_0000_0000usize;
        let a = dev.register_free(2 << 20, 0, b, DEV).unwrap();
        assert_eq!(a % (2 << 20), 0);
        assert!(a + (2 << 20) <= FREE_SPACE_TOP);
        let c = dev.register_free(2 << 20, 0, b, DEV).unwrap();
        assert!(c + (2 << 20) <= a || a + (2 << 20) <= c);
        dev.kill().unwrap();
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;

    /// Checks the physical index: in order, strictly increasing and disjoint.
    fn check_phys_index(st: &State) -> std::result::Result<(), String> {
        fn walk(st: &State, t: u32, out: &mut Vec<(u64, u64, u32)>) {
            if t == NIL {
                return;
            }
            let r = st.rec(t);
            walk(st, r.phys.left, out);
            out.push((r.phys_first, r.fwd.last, t));
            walk(st, r.phys.right, out);
        }
        let mut v = Vec::new();
        walk(st, st.phys_root, &mut v);
        for w in v.windows(2) {
            if w[0].1 >= w[1].0 {
                return Err(format!("index out of order or overlapping: {:x?}", w));
            }
        }
        Ok(())
    }

    #[test]
    fn racing_free_space_registrations_never_overlap() {
        let mem = vec![0u8; 64 * 4096 + 4096];
        let base = (mem.as_ptr() as usize + 4095) & !4095;
        let threads: Vec<_> = (0..6u64)
            .map(|id| {
                std::thread::spawn(move || {
                    let d = Device::new().unwrap();
                    let mut mine: Vec<(u64, u64)> = Vec::new();
                    let mut x = id * 31 + 7;
                    let mut rnd = || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    for _ in 0..3000 {
                        if mine.len() < 64 && rnd() % 3 != 0 {
                            let pages = 1 + rnd() % 600;
                            let align = if rnd() & 1 == 1 {
                                0
                            } else {
                                4096 << (rnd() % 12)
                            };
                            let s = d
                                .register_free(pages * 4096, align, base + id as usize * 4096, DEV)
                                .unwrap();
                            mine.push((s, s + pages * 4096 - 1));
                            // Hold a kmap now and then across other threads' unregisters.
                            for &(t, _) in mine.iter() {
                                let a = kmap(Pfn(t >> 12)).unwrap();
                                assert_eq!(
                                    a,
                                    base + id as usize * 4096,
                                    "range {t:#x} of thread {id}"
                                );
                                assert!(kunmap(a));
                            }
                            let st = state();
                            if let Err(e) = check_phys_index(&st) {
                                panic!("after register_free [{s:#x}, +{pages} pages]: {e}");
                            }
                        } else if !mine.is_empty() {
                            let k = (rnd() % mine.len() as u64) as usize;
                            let (s, _) = mine.swap_remove(k);
                            d.unregister(s).unwrap();
                        }
                    }
                    drop(d);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(mem);
    }
}
