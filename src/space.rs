//! The physical address space: devices own ranges; ranges are published in the table.
//!
//! Registration and removal are serialized by one mutex (they are rare). Translation takes no
//! lock: it runs inside a read-side section of `rcu` and reads the table only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::encoding::{Pfn, PAGE_SHIFT, PAGE_SIZE};
use crate::error::{Error, Result};
use crate::rcu;
use crate::table::{Detached, Extent, Table};

static TABLE: Table = Table::new();
static STATE: Mutex<State> = Mutex::new(State::new());
static NEXT_DEVICE: AtomicU64 = AtomicU64::new(1);

struct Range {
    /// Boxed: the table points at it until a grace period after removal.
    extent: Box<Extent>,
    device: u64,
}

pub(crate) struct State {
    /// By first pfn.
    ranges: BTreeMap<u64, Range>,
    /// (base, first pfn) -> bytes of virtual memory the range uses.
    by_base: BTreeMap<(usize, u64), usize>,
    /// Largest value in `by_base`, so a search by address need not scan from 0.
    max_bytes: usize,
    /// (device, first pfn) of every range.
    by_device: BTreeSet<(u64, u64)>,
}

impl State {
    const fn new() -> State {
        State {
            ranges: BTreeMap::new(),
            by_base: BTreeMap::new(),
            max_bytes: 0,
            by_device: BTreeSet::new(),
        }
    }

    fn overlaps(&self, first: u64, last: u64) -> bool {
        self.ranges
            .range(..=last)
            .next_back()
            .is_some_and(|(_, r)| r.extent.last_pfn >= first)
    }

    /// Unpublishes one range; the caller frees what it returns after a grace period.
    fn take(&mut self, first: u64) -> Option<(Range, Detached)> {
        let range = self.ranges.remove(&first)?;
        self.by_device.remove(&(range.device, first));
        self.by_base.remove(&(range.extent.base, first));
        let detached = TABLE.remove(&range.extent);
        Some((range, detached))
    }
}

/// Holds registration off across fork(); see `fork`.
pub(crate) fn lock_for_fork() -> MutexGuard<'static, State> {
    state()
}

fn state() -> MutexGuard<'static, State> {
    // Every writer leaves the state consistent before anything that could panic.
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An owner of ranges (the seed's `struct device`). Dropping it unregisters its ranges.
#[derive(Debug)]
pub struct Device {
    id: u64,
    name: String,
}

impl Device {
    pub fn new(name: &str) -> Device {
        crate::fork::install();
        Device {
            id: NEXT_DEVICE.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers physical bytes `start..=end` as mapped at virtual address `base`.
    ///
    /// Errors: `Invalid` when `start`, `end + 1` or `base` is not page-aligned, `end < start`,
    /// `base` is 0, or the range would run past the end of the virtual address space; `Busy`
    /// when it overlaps a registered range; `OutOfMemory`.
    pub fn register(&self, start: u64, end: u64, base: usize) -> Result<()> {
        let page_mask = PAGE_SIZE - 1;
        if start & page_mask != 0
            || end & page_mask != page_mask
            || end < start
            || base == 0
            || base as u64 & page_mask != 0
        {
            return Err(Error::Invalid);
        }
        let bytes = u128::from(end - start) + 1;
        if base as u128 + bytes > usize::MAX as u128 + 1 {
            return Err(Error::Invalid);
        }
        let extent = Box::new(Extent {
            first_pfn: start >> PAGE_SHIFT,
            last_pfn: end >> PAGE_SHIFT,
            base,
        });
        let mut st = state();
        if st.overlaps(extent.first_pfn, extent.last_pfn) {
            return Err(Error::Busy);
        }
        TABLE.insert(&extent).map_err(|_| Error::OutOfMemory)?;
        let first = extent.first_pfn;
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        st.by_base.insert((base, first), bytes);
        st.max_bytes = st.max_bytes.max(bytes);
        st.by_device.insert((self.id, first));
        st.ranges.insert(
            first,
            Range {
                extent,
                device: self.id,
            },
        );
        Ok(())
    }

    /// Unregisters the range this device registered at `start`; returns once no kmap anywhere
    /// can still use it, so its memory may then be unmapped.
    ///
    /// Errors: `Deadlock` when the calling thread holds a kmap (nothing is removed); `NotFound`
    /// when this device registered no range at `start`.
    pub fn unregister(&self, start: u64) -> Result<()> {
        if rcu::caller_holds_kmap() {
            return Err(Error::Deadlock);
        }
        if start & (PAGE_SIZE - 1) != 0 {
            return Err(Error::NotFound);
        }
        let first = start >> PAGE_SHIFT;
        let taken = {
            let mut st = state();
            if !st.by_device.contains(&(self.id, first)) {
                return Err(Error::NotFound);
            }
            st.take(first)
        };
        rcu::synchronize();
        drop(taken);
        Ok(())
    }

    /// Unregisters every range of this device, waiting for readers once for all of them.
    ///
    /// Errors: `Deadlock` when the calling thread holds a kmap (nothing is removed).
    pub fn unregister_all(&self) -> Result<()> {
        if rcu::caller_holds_kmap() {
            return Err(Error::Deadlock);
        }
        let taken: Vec<_> = {
            let mut st = state();
            let firsts: Vec<u64> = st
                .by_device
                .range((self.id, 0)..=(self.id, u64::MAX))
                .map(|&(_, f)| f)
                .collect();
            firsts.into_iter().filter_map(|f| st.take(f)).collect()
        };
        if !taken.is_empty() {
            rcu::synchronize();
        }
        drop(taken);
        Ok(())
    }

    /// Number of ranges this device has registered.
    pub fn range_count(&self) -> usize {
        state()
            .by_device
            .range((self.id, 0)..=(self.id, u64::MAX))
            .count()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // A thread holding a kmap cannot wait for readers, and removing without waiting could
        // leave a dangling pointer, so then the ranges stay registered. The C layer refuses
        // such a free with EDEADLK before it drops anything.
        let _ = self.unregister_all();
    }
}

/// Maps `pfn` for the calling thread; the address stays valid until [`kunmap`] on this thread.
///
/// Errors: `Invalid` for a scatterlist-chain handle; `NotMapped` when no range holds the frame;
/// `OutOfMemory` when the thread's first kmap cannot allocate its reader record.
#[inline(always)]
pub fn kmap(pfn: Pfn) -> Result<usize> {
    // SAFETY: `held_lookup` runs the lookup inside the thread's read-side section.
    held_lookup(pfn, |p| {
        unsafe { TABLE.translate(p) }.map(|addr| (addr, ()))
    })
    .map(|(a, ())| a)
}

/// As [`kmap`], also returning the bytes contiguous from the address to the range's end.
pub fn kmap_len(pfn: Pfn) -> Result<(usize, u64)> {
    // SAFETY: as in `kmap`.
    held_lookup(pfn, |p| {
        unsafe { TABLE.translate_len(p) }.map(|hit| (hit.addr, hit.len))
    })
}

/// Runs `lookup` (address and any extra) inside the calling thread's read-side section and
/// records the address as held; on any failure the thread is left as it was.
#[inline(always)]
fn held_lookup<T>(pfn: Pfn, lookup: impl FnOnce(u64) -> Option<(usize, T)>) -> Result<(usize, T)> {
    if pfn.sg_chain() {
        return Err(Error::Invalid);
    }
    let reader = rcu::current_or_register().ok_or(Error::OutOfMemory)?;
    reader.enter();
    let Some((addr, extra)) = lookup(pfn.pfn()) else {
        reader.leave_if_idle();
        return Err(Error::NotMapped);
    };
    if !reader.hold(addr) {
        reader.leave_if_idle();
        return Err(Error::OutOfMemory);
    }
    Ok((addr, extra))
}

/// [`kmap`] when nothing unusual happens, else None with nothing changed: the thread has a
/// record with room for one more hold, and the frame is mapped. Allocates nothing, takes no
/// lock and cannot panic, so the C layer can call it without a stack frame.
#[inline(always)]
pub fn kmap_fast(pfn: Pfn) -> Option<usize> {
    if pfn.sg_chain() {
        return None;
    }
    let reader = rcu::current()?;
    reader.enter();
    // SAFETY: inside the read-side section opened by `enter` (or one already open).
    match unsafe { TABLE.translate(pfn.pfn()) } {
        Some(addr) if reader.try_hold(addr) => Some(addr),
        _ => {
            reader.leave_if_idle();
            None
        }
    }
}

/// Releases one kmap of the page holding `addr` taken by this thread. Returns false (and
/// releases nothing) when this thread holds no kmap of that page.
#[inline(always)]
pub fn kunmap(addr: usize) -> bool {
    match rcu::current() {
        Some(reader) => reader.release(addr & !(PAGE_SIZE as usize - 1)),
        None => false,
    }
}

/// What a read section holds in the thread's list of holds: never a page address.
const SECTION_HOLD: usize = 1;

pub use crate::table::Block;

/// A read-side section: while it lives, every range it can see stays registered and mapped, so
/// many translations can share one section (the seed review's "no RCU cost per access").
/// It remembers the last block it translated, so runs of nearby pfns cost a comparison.
/// Not `Send`: it belongs to the thread that opened it.
pub struct ReadSection {
    root: usize,
    cache: std::cell::Cell<Block>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ReadSection {
    /// Opens a section. It sees the ranges registered before it opened (a range registered
    /// later may or may not be seen). Errors: `OutOfMemory` for a thread's first section.
    pub fn open() -> Result<ReadSection> {
        let reader = rcu::current_or_register().ok_or(Error::OutOfMemory)?;
        reader.enter();
        if !reader.hold(SECTION_HOLD) {
            reader.leave_if_idle();
            return Err(Error::OutOfMemory);
        }
        Ok(ReadSection {
            root: TABLE.root_word(),
            cache: Default::default(),
            _not_send: std::marker::PhantomData,
        })
    }

    /// Address of `pfn`'s frame, valid while the section lives. Err: `Invalid` for a
    /// scatterlist-chain handle, `NotMapped` when no range visible in the section holds it.
    #[inline(always)]
    pub fn translate(&self, pfn: Pfn) -> Result<usize> {
        let mut cache = self.cache.get();
        // SAFETY: the section keeps everything reachable from `root` alive.
        let addr = unsafe { translate_in_section(self.root, &mut cache, pfn) };
        self.cache.set(cache);
        addr
    }

    /// Leaves the section open past the life of this value and returns its root word; end it
    /// with [`close_section`].
    pub fn keep_open(self) -> usize {
        let root = self.root;
        std::mem::forget(self);
        root
    }
}

impl Drop for ReadSection {
    fn drop(&mut self) {
        // SAFETY: this value's own hold; nothing derived from it outlives it.
        unsafe { close_section() };
    }
}

/// Ends one read section of the calling thread that was kept open with
/// [`ReadSection::keep_open`]. Returns false when the thread has none open.
///
/// # Safety
/// Addresses translated in that section must no longer be used, and no `ReadSection` value of
/// this thread may be relying on the hold being released.
pub unsafe fn close_section() -> bool {
    rcu::current().is_some_and(|r| r.release(SECTION_HOLD))
}

/// Address of `pfn` in the section whose root word is `root`, through and into `cache`.
///
/// # Safety
/// The section that produced `root` is still open on this thread, and `cache` was filled only
/// in it.
#[inline(always)]
pub unsafe fn translate_in_section(root: usize, cache: &mut Block, pfn: Pfn) -> Result<usize> {
    // Keep SG_CHAIN (bit 63) in the key: it never matches, so one comparison covers both.
    let key = pfn.0 & (crate::encoding::SG_CHAIN | crate::encoding::MAX_PFN);
    if let Some(addr) = cache.addr_of(key) {
        return Ok(addr);
    }
    if pfn.sg_chain() {
        return Err(Error::Invalid);
    }
    let block = crate::table::block_from(root, pfn.pfn()).ok_or(Error::NotMapped)?;
    *cache = block;
    block.addr_of(pfn.pfn()).ok_or(Error::NotMapped)
}

/// Runs `f` only if no registered range uses virtual memory in `addr..addr + len`, with
/// registration held off meanwhile. Errors: `Busy` when some range does.
pub fn without_ranges_in<T>(addr: usize, len: usize, f: impl FnOnce() -> T) -> Result<T> {
    let st = state();
    let end = addr.saturating_add(len);
    let lowest = addr.saturating_sub(st.max_bytes);
    let used = st
        .by_base
        .range((lowest, 0)..(end, 0))
        .any(|(&(base, _), &bytes)| base.saturating_add(bytes) > addr);
    if used {
        return Err(Error::Busy);
    }
    Ok(f())
}

/// Bytes of translation-table memory in use.
pub fn table_bytes() -> usize {
    let _st = state();
    TABLE.memory_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Pfn;

    const GIB: u64 = 1 << 30;

    #[test]
    fn register_translate_unregister() {
        let dev = Device::new("t1");
        let start = 100 * GIB;
        dev.register(start, start + 8 * PAGE_SIZE - 1, 0x7000_0000_0000)
            .unwrap();
        let p = Pfn::from_phys(start + 3 * PAGE_SIZE, 0);
        let addr = kmap(p).unwrap();
        assert_eq!(addr, 0x7000_0000_0000 + 3 * PAGE_SIZE as usize);
        assert_eq!(dev.unregister(start), Err(Error::Deadlock));
        assert!(kunmap(addr + 17));
        assert!(!kunmap(addr));
        let (a, len) = kmap_len(p).unwrap();
        assert_eq!((a, len), (addr, 5 * PAGE_SIZE));
        assert!(kunmap(a));
        dev.unregister(start).unwrap();
        assert_eq!(kmap(p), Err(Error::NotMapped));
        assert_eq!(dev.unregister(start), Err(Error::NotFound));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let dev = Device::new("t2");
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
        let other = Device::new("t2b");
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
        let dev = Device::new("t3");
        let s = 300 * GIB;
        let b = 0x7200_0000_0000usize;
        dev.register(s, s + 4 * PAGE_SIZE - 1, b + 8192).unwrap();
        assert_eq!(without_ranges_in(b, 16384, || 1), Err(Error::Busy));
        assert_eq!(without_ranges_in(b, 8192, || 1), Ok(1));
        assert_eq!(without_ranges_in(b + 8192 + 16384, 4096, || 2), Ok(2));
        dev.unregister_all().unwrap();
        assert_eq!(without_ranges_in(b, 16384, || 3), Ok(3));
    }
}
