//! The translation table: a radix tree over page-frame numbers, read without locks.
//!
//! This is the seed review's "widen the memory section" idea made general. Each level indexes
//! 9 bits of the pfn (512 slots, like x86 page tables). A slot is empty, points to the next
//! level, or is a leaf: the whole span under that slot belongs to one range, and the slot holds
//! `base - (first_pfn << 12)` of that range (page-aligned, wrapping, tagged in bit 0). A
//! translation is therefore `slot + (pfn << 12)`: no range descriptor is touched and no bound is
//! compared. A range
//! is stored as its maximal aligned blocks (like huge pages), so a 2 MiB-aligned 2 MiB range is
//! one slot at the 2 MiB level and 1 TiB of them takes 8 MiB of table.
//!
//! The root is the lowest node that covers every registered pfn (it records the first pfn it
//! covers), so the walk starts as deep as the registered space allows: ranges that all lie in
//! one 1 GiB window translate with a single slot load, in one 512 GiB window with two. The walk
//! is at most six loads whatever the number of ranges.
//!
//! The layout is part of the C ABI (the header's inline walk reads it): the root word is a node
//! address | its level; a node is 512 slots, then 512 extent pointers, then its first pfn.
//!
//! Writers are serialized by the caller. Slots are published with release stores; readers use
//! acquire loads. Nodes detached by a removal are handed back for the caller to free after a
//! grace period.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

const BITS: u32 = 9;
const FANOUT: usize = 1 << BITS;
const MASK: u64 = FANOUT as u64 - 1;
/// Level 5 indexes pfn bits 45..53, enough for 52-bit pfns.
const TOP_LEVEL: u32 = 5;
const LEAF: usize = 1;
// Addresses, pfns and slots share one 64-bit word; the C header's inline walk assumes it too.
const _: () = assert!(usize::BITS == 64);
const _: () = assert!(std::mem::offset_of!(Node, first_pfn) == 8 * 2 * FANOUT);
const LEVEL_MASK: usize = 7;

/// A registered range as the table sees it. Its address must stay valid while it is in the
/// table and for a grace period after its removal.
#[derive(Debug)]
pub struct Extent {
    pub first_pfn: u64,
    pub last_pfn: u64,
    /// Virtual address of `first_pfn`'s first byte.
    pub base: usize,
}

#[repr(C, align(64))]
pub struct Node {
    slots: [AtomicUsize; FANOUT],
    /// The extent behind each leaf slot, for callers that want the range's end.
    extents: [AtomicPtr<Extent>; FANOUT],
    /// First pfn this node covers (aligned to its coverage). Immutable.
    first_pfn: u64,
}

/// Owns nodes that were detached from the table; frees them when dropped.
pub struct Detached(Vec<*mut Node>);

// SAFETY: a detached node is referenced by no one but this list (after the grace period the
// caller waits for before dropping it).
unsafe impl Send for Detached {}

impl Drop for Detached {
    fn drop(&mut self) {
        for &n in &self.0 {
            // SAFETY: allocated by `new_node` with this layout, detached, reader-free.
            unsafe { dealloc(n as *mut u8, Layout::new::<Node>()) };
        }
    }
}

/// A zeroed node at `level` covering the aligned window that holds `pfn`; null when out of
/// memory.
fn new_node(level: u32, pfn: u64) -> *mut Node {
    // SAFETY: Node has non-zero size; all-zero bytes are valid empty atomics.
    let node = unsafe { alloc_zeroed(Layout::new::<Node>()) as *mut Node };
    if !node.is_null() {
        // SAFETY: fresh, exclusively owned.
        unsafe { (*node).first_pfn = pfn & !(cover_pages(level) - 1) };
    }
    node
}

/// Pfns under one slot of a node at `level`.
const fn span_pages(level: u32) -> u64 {
    1u64 << (BITS * level)
}

/// Pfns under a whole node at `level` (level 5 covers more than the 52-bit space).
const fn cover_pages(level: u32) -> u64 {
    1u64 << (BITS * (level + 1))
}

/// Lowest level (at least 1, so that 2 MiB blocks fit) whose single node covers `lo..=hi`.
fn level_covering(lo: u64, hi: u64) -> u32 {
    (1..TOP_LEVEL)
        .find(|&l| lo >> (BITS * (l + 1)) == hi >> (BITS * (l + 1)))
        .unwrap_or(TOP_LEVEL)
}

struct Leaf<'a> {
    node: &'a Node,
    idx: usize,
    slot: usize,
    level: u32,
}

/// The result of a successful lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Address of the frame's first byte.
    pub addr: usize,
    /// Bytes from `addr` to the end of the range.
    pub len: u64,
}

pub struct Table {
    /// Root node address | root level; 0 when empty.
    root: AtomicUsize,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    pub const fn new() -> Table {
        Table {
            root: AtomicUsize::new(0),
        }
    }

    /// Address of `pfn`'s frame.
    ///
    /// # Safety
    /// The caller must be inside a read-side section (see `rcu`) for as long as it uses
    /// anything it learned here, so that no node is freed under it.
    #[inline(always)]
    pub unsafe fn translate(&self, pfn: u64) -> Option<usize> {
        translate_from(self.root_word(), pfn)
    }

    /// The root as readers see it: node address | level (0 when empty). A walk may start from
    /// a snapshot for as long as the read-side section that took it lasts.
    #[inline(always)]
    pub fn root_word(&self) -> usize {
        self.root.load(Ordering::Acquire)
    }

    /// Address and bytes to the range's end.
    ///
    /// # Safety
    /// As for [`Table::translate`].
    pub unsafe fn translate_len(&self, pfn: u64) -> Option<Hit> {
        loop {
            let leaf = find(self.root_word(), pfn)?;
            let extent = leaf.node.extents[leaf.idx].load(Ordering::Acquire);
            // A slot removed and reused between the two loads is looked up again.
            if leaf.node.slots[leaf.idx].load(Ordering::Acquire) != leaf.slot {
                continue;
            }
            let pages = (*extent).last_pfn - pfn + 1;
            // 2^52 pages of 4 KiB do not fit in 64 bits: saturate.
            let len = if pages >= 1 << 52 {
                u64::MAX
            } else {
                pages << 12
            };
            return Some(Hit {
                addr: leaf_addr(leaf.slot, pfn),
                len,
            });
        }
    }

    /// Publishes `extent`. The caller serializes writers, has checked that no registered range
    /// overlaps it, and keeps `*extent` alive until after the grace period that follows its
    /// removal. Err: out of memory; translations are then as before.
    pub fn insert(&self, extent: &Extent) -> Result<(), ()> {
        self.grow_to_cover(extent.first_pfn, extent.last_pfn)?;
        let root = self.root.load(Ordering::Relaxed);
        let level = (root & LEVEL_MASK) as u32;
        let node = (root & !LEVEL_MASK) as *mut Node;
        // Allocate every node first, so that a failure publishes nothing.
        // SAFETY: writers are serialized; nodes reachable from the root are live.
        let (needed, first) = unsafe { (count(node, level, extent), (*node).first_pfn) };
        let mut pool = Vec::new();
        pool.try_reserve(needed).map_err(|_| ())?;
        for _ in 0..needed {
            let n = new_node(0, 0);
            if n.is_null() {
                drop(Detached(pool));
                return Err(());
            }
            pool.push(n);
        }
        // SAFETY: as above; `pool` holds exactly the nodes the walk creates.
        unsafe { fill(node, level, first, extent, &mut pool) };
        debug_assert!(pool.is_empty());
        Ok(())
    }

    /// Makes the root cover `lo..=hi`: a first root just big enough, or a new, higher root above
    /// the old one (linked through fresh intermediate nodes). A grown root only adds empty
    /// slots around the old one, so readers translate exactly as before.
    fn grow_to_cover(&self, lo: u64, hi: u64) -> Result<(), ()> {
        let root = self.root.load(Ordering::Relaxed);
        let old_level = (root & LEVEL_MASK) as u32;
        let old = (root & !LEVEL_MASK) as *mut Node;
        if old.is_null() {
            let level = level_covering(lo, hi);
            let node = new_node(level, lo);
            if node.is_null() {
                return Err(());
            }
            self.root
                .store(node as usize | level as usize, Ordering::Release);
            return Ok(());
        }
        // SAFETY: the root is live (serialized writer).
        let old_first = unsafe { (*old).first_pfn };
        let old_last = old_first.saturating_add(cover_pages(old_level) - 1);
        if lo >= old_first && hi <= old_last {
            return Ok(());
        }
        let level = level_covering(lo.min(old_first), hi.max(old_last));
        let mut chain = Vec::new();
        chain
            .try_reserve((level - old_level) as usize)
            .map_err(|_| ())?;
        for l in (old_level + 1..=level).rev() {
            let n = new_node(l, old_first);
            if n.is_null() {
                drop(Detached(chain));
                return Err(());
            }
            chain.push(n);
        }
        // chain[0] is the new root; each node's slot towards `old_first` leads one level down.
        for (i, &n) in chain.iter().enumerate() {
            let l = level - i as u32;
            let child = chain.get(i + 1).copied().unwrap_or(old);
            let idx = ((old_first >> (BITS * l)) & MASK) as usize;
            // SAFETY: fresh nodes, not yet visible.
            unsafe { (*n).slots[idx].store(child as usize, Ordering::Relaxed) };
        }
        self.root
            .store(chain[0] as usize | level as usize, Ordering::Release);
        Ok(())
    }

    /// Unpublishes `extent` (which must be in the table). Returns the nodes that became empty
    /// and were detached: free them only after a grace period.
    pub fn remove(&self, extent: &Extent) -> Detached {
        let mut detached = Vec::new();
        let root = self.root.load(Ordering::Relaxed);
        let level = (root & LEVEL_MASK) as u32;
        let node = (root & !LEVEL_MASK) as *mut Node;
        if node.is_null() {
            return Detached(detached);
        }
        // SAFETY: serialized writer; reachable nodes are live.
        unsafe {
            clear(node, level, (*node).first_pfn, extent, &mut detached);
            if is_empty(node) {
                self.root.store(0, Ordering::Release);
                detached.push(node);
            }
        }
        Detached(detached)
    }

    /// Bytes of table memory in use (for the benchmark's memory figure). The caller excludes
    /// writers.
    pub fn memory_bytes(&self) -> usize {
        // SAFETY: writers are excluded, so every reachable node stays live during the walk.
        unsafe { self.nodes().len() * std::mem::size_of::<Node>() }
    }

    /// Every node reachable from the root.
    ///
    /// # Safety
    /// No writer runs meanwhile.
    unsafe fn nodes(&self) -> Vec<*mut Node> {
        let root = self.root.load(Ordering::Acquire);
        let node = (root & !LEVEL_MASK) as *mut Node;
        let mut all = Vec::new();
        if !node.is_null() {
            collect(node, (root & LEVEL_MASK) as u32, &mut all);
        }
        all
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: exclusive access in drop.
        drop(Detached(unsafe { self.nodes() }));
    }
}

/// An aligned block of pfns that one leaf slot maps: pfns `first_pfn..first_pfn + pages`
/// start at virtual address `addr`. `pages == 0`: no block (never matches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Block {
    pub first_pfn: u64,
    pub pages: u64,
    pub addr: usize,
}

impl Block {
    /// Address of `pfn`'s frame if the block holds it. `pfn` may carry bit 63 (which then
    /// never matches): callers fold their flag check into this one comparison.
    #[inline(always)]
    pub fn addr_of(&self, pfn: u64) -> Option<usize> {
        let off = pfn.wrapping_sub(self.first_pfn);
        (off < self.pages).then(|| self.addr + ((off as usize) << 12))
    }
}

/// The leaf block holding `pfn`, walking from root word `root`.
///
/// # Safety
/// `root` was read inside the read-side section the caller is still in.
#[inline(always)]
pub unsafe fn block_from(root: usize, pfn: u64) -> Option<Block> {
    let leaf = find(root, pfn)?;
    let pages = span_pages(leaf.level);
    Some(Block {
        first_pfn: pfn & !(pages - 1),
        pages,
        addr: leaf_addr(leaf.slot, pfn & !(pages - 1)),
    })
}

/// Address of `pfn`'s frame, walking from root word `root` (see [`Table::root_word`]).
///
/// # Safety
/// `root` was read inside the read-side section the caller is still in.
#[inline(always)]
pub unsafe fn translate_from(root: usize, pfn: u64) -> Option<usize> {
    find(root, pfn).map(|leaf| leaf_addr(leaf.slot, pfn))
}

#[inline(always)]
unsafe fn find<'a>(root: usize, pfn: u64) -> Option<Leaf<'a>> {
    let mut level = (root & LEVEL_MASK) as u32;
    let mut node = (root & !LEVEL_MASK) as *const Node;
    // Below the root's first pfn the subtraction wraps to a huge value: one test for both ends.
    if node.is_null() || (pfn.wrapping_sub((*node).first_pfn) >> (BITS * level + BITS)) != 0 {
        return None;
    }
    loop {
        let idx = ((pfn >> (BITS * level)) & MASK) as usize;
        let n = &*node;
        let slot = n.slots[idx].load(Ordering::Acquire);
        if slot & LEAF != 0 {
            return Some(Leaf {
                node: n,
                idx,
                slot,
                level,
            });
        }
        if slot == 0 || level == 0 {
            return None;
        }
        node = slot as *const Node;
        level -= 1;
    }
}

#[inline(always)]
fn leaf_addr(slot: usize, pfn: u64) -> usize {
    (slot & !LEAF).wrapping_add((pfn as usize) << 12)
}

/// The slots of a node at `level` starting at `node_first` that `extent` touches, with each
/// slot's first pfn and whether the extent covers the slot's whole span.
fn touched(level: u32, node_first: u64, e: &Extent) -> impl Iterator<Item = (usize, u64, bool)> {
    let span = span_pages(level);
    let node_last = node_first.saturating_add(span * FANOUT as u64 - 1);
    let lo = e.first_pfn.max(node_first);
    let hi = e.last_pfn.min(node_last);
    let (a, b) = if lo > hi {
        (1, 0)
    } else {
        ((lo - node_first) / span, (hi - node_first) / span)
    };
    let (first_pfn, last_pfn) = (e.first_pfn, e.last_pfn);
    (a..=b).map(move |i| {
        let first = node_first + i * span;
        let last = first + (span - 1);
        (i as usize, first, first_pfn <= first && last <= last_pfn)
    })
}

/// Nodes that inserting `e` under `node` (at `level`) will create.
unsafe fn count(node: *const Node, level: u32, e: &Extent) -> usize {
    count_below(node, level, (*node).first_pfn, e)
}

unsafe fn count_below(node: *const Node, level: u32, node_first: u64, e: &Extent) -> usize {
    let mut n = 0;
    for (i, first, whole) in touched(level, node_first, e) {
        if whole {
            continue;
        }
        let child = if node.is_null() {
            0
        } else {
            (*node).slots[i].load(Ordering::Relaxed)
        };
        if child == 0 {
            n += 1;
        }
        n += count_below(child as *const Node, level - 1, first, e);
    }
    n
}

unsafe fn fill(
    node: *mut Node,
    level: u32,
    node_first: u64,
    e: &Extent,
    pool: &mut Vec<*mut Node>,
) {
    for (i, first, whole) in touched(level, node_first, e) {
        let slot = &(*node).slots[i];
        if whole {
            // The leaf holds base - (first_pfn << 12), wrapping: a translation is one add.
            let delta = e.base.wrapping_sub((e.first_pfn as usize) << 12);
            (*node).extents[i].store(e as *const Extent as *mut Extent, Ordering::Relaxed);
            slot.store(delta | LEAF, Ordering::Release);
            continue;
        }
        let mut child = slot.load(Ordering::Relaxed) as *mut Node;
        let fresh = child.is_null();
        if fresh {
            child = pool.pop().unwrap_or(ptr::null_mut());
            (*child).first_pfn = first;
        }
        fill(child, level - 1, first, e, pool);
        if fresh {
            // Fill a new node before it becomes reachable.
            slot.store(child as usize, Ordering::Release);
        }
    }
}

unsafe fn clear(
    node: *mut Node,
    level: u32,
    node_first: u64,
    e: &Extent,
    out: &mut Vec<*mut Node>,
) {
    for (i, first, whole) in touched(level, node_first, e) {
        let slot = &(*node).slots[i];
        if whole {
            slot.store(0, Ordering::Release);
            continue;
        }
        let child = slot.load(Ordering::Relaxed) as *mut Node;
        if child.is_null() {
            continue;
        }
        clear(child, level - 1, first, e, out);
        if is_empty(child) {
            slot.store(0, Ordering::Release);
            out.push(child);
        }
    }
}

unsafe fn is_empty(node: *const Node) -> bool {
    (*node).slots.iter().all(|s| s.load(Ordering::Relaxed) == 0)
}

unsafe fn collect(node: *mut Node, level: u32, out: &mut Vec<*mut Node>) {
    if level > 0 {
        for s in (*node).slots.iter() {
            let v = s.load(Ordering::Relaxed);
            if v != 0 && v & LEAF == 0 {
                collect(v as *mut Node, level - 1, out);
            }
        }
    }
    out.push(node);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(first: u64, last: u64, base: usize) -> Box<Extent> {
        Box::new(Extent {
            first_pfn: first,
            last_pfn: last,
            base,
        })
    }

    #[test]
    fn translates_inside_and_not_outside() {
        let t = Table::new();
        let e = ext(512, 512 + 1023, 0x10_0000_0000);
        t.insert(&e).unwrap();
        unsafe {
            assert_eq!(t.translate(512), Some(0x10_0000_0000));
            assert_eq!(t.translate(513), Some(0x10_0000_1000));
            assert_eq!(t.translate(1535), Some(0x10_0000_0000 + 1023 * 4096));
            assert_eq!(t.translate(511), None);
            assert_eq!(t.translate(1536), None);
            assert_eq!(t.translate(1 << 40), None);
            let h = t.translate_len(1000).unwrap();
            assert_eq!(h.len, (1535 - 1000 + 1) * 4096);
        }
        drop(t.remove(&e));
        unsafe { assert_eq!(t.translate(512), None) };
        assert_eq!(t.memory_bytes(), 0);
    }

    #[test]
    fn root_covers_just_what_is_registered_and_grows_both_ways() {
        let t = Table::new();
        let mid = ext(1 << 30, (1 << 30) + 511, 0x4000_0000);
        t.insert(&mid).unwrap();
        assert_eq!(t.root_word() & LEVEL_MASK, 1);
        let below = ext(5, 9, 0x5000_0000);
        let above = ext(1 << 40, (1 << 40) + 2, 0x6000_0000);
        t.insert(&below).unwrap();
        t.insert(&above).unwrap();
        unsafe {
            assert_eq!(t.translate((1 << 30) + 7), Some(0x4000_0000 + 7 * 4096));
            assert_eq!(t.translate(9), Some(0x5000_0000 + 4 * 4096));
            assert_eq!(t.translate((1 << 40) + 2), Some(0x6000_0000 + 2 * 4096));
            assert_eq!(t.translate(4), None);
            assert_eq!(t.translate((1 << 40) + 3), None);
            assert_eq!(t.translate((1 << 30) + 512), None);
        }
        let _gone = (t.remove(&mid), t.remove(&below), t.remove(&above));
        assert_eq!(t.root_word(), 0);
    }

    #[test]
    fn unaligned_ranges_side_by_side_and_root_growth() {
        let t = Table::new();
        let a = ext(3, 700, 0x1000_0000);
        let b = ext(701, 701, 0x2000_0000);
        let c = ext((1 << 52) - 5, (1 << 52) - 1, 0x3000_0000);
        for e in [&a, &b, &c] {
            t.insert(e).unwrap();
        }
        unsafe {
            for p in [3u64, 4, 511, 512, 700] {
                assert_eq!(
                    t.translate(p),
                    Some(0x1000_0000 + ((p - 3) as usize) * 4096)
                );
            }
            assert_eq!(t.translate(701), Some(0x2000_0000));
            assert_eq!(t.translate(702), None);
            assert_eq!(t.translate(2), None);
            assert_eq!(t.translate((1 << 52) - 1), Some(0x3000_0000 + 4 * 4096));
            assert_eq!(t.translate((1 << 52) - 6), None);
        }
        let mut gone = Vec::new();
        for e in [&c, &a, &b] {
            gone.push(t.remove(e));
        }
        assert_eq!(t.memory_bytes(), 0);
    }
}
