//! The translation tables: radix trees over page numbers, read without locks.
//!
//! This is the seed review's "widen the memory section" idea made general. Each level indexes
//! 9 bits of the page number (512 slots, like x86 page tables). A slot is empty, points to the
//! next level, or is a leaf: the whole span under that slot belongs to one extent, and the slot
//! holds `target - (first << 12)` of that extent (page-aligned, wrapping, tagged in bit 0). A
//! translation is therefore `slot + (page << 12)`: no descriptor is touched and no bound is
//! compared. An extent is stored as its maximal aligned blocks (like huge pages: 4 KiB, 2 MiB,
//! 1 GiB, 512 GiB, ...): a 1 GiB-aligned 1 GiB range is one slot, and 1 TiB of 2 MiB ranges takes
//! 8 MiB of table.
//!
//! The root is the lowest node that covers every registered page and is tall enough to hold
//! each extent's largest block (it records the first page it covers), so the walk starts as
//! deep as the registered space allows: ranges that all lie in one 1 GiB window translate with
//! a single slot load, in one 512 GiB window with two. The walk is at most six loads whatever
//! the number of extents.
//!
//! Two tables use this code: pfn -> virtual address (the forward table, whose extents never
//! overlap) and virtual page -> physical address (the reverse table, where ranges that share
//! virtual memory overlap: an insert fills only the parts no other extent holds, and a removal
//! clears only its own leaves).
//!
//! The layout is part of the C ABI (the header's inline walk reads it): the root word is a node
//! address | 9 * its level (the bit shift of its slots' index; nodes are 64-byte aligned); a
//! node is 512 slots, then 512 extent pointers, then its first page.
//!
//! Writers are serialized by the caller. Slots are published with release stores; readers use
//! acquire loads. Nodes detached by a removal are handed back for the caller to free after a
//! grace period.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

const BITS: u32 = 9;
const FANOUT: usize = 1 << BITS;
const MASK: u64 = FANOUT as u64 - 1;
/// Level 5 indexes page-number bits 45..53, enough for 52-bit pfns.
const TOP_LEVEL: u32 = 5;
const LEAF: usize = 1;
// Addresses, pfns and slots share one 64-bit word; the C header's inline walk assumes it too.
const _: () = assert!(usize::BITS == 64);
const _: () = assert!(std::mem::offset_of!(Node, first) == 8 * 2 * FANOUT);
/// The low bits of the root word: 9 * the root's level.
const SHIFT_MASK: usize = 63;

/// The node and level a root word names.
fn root_parts(root: usize) -> (*mut Node, u32) {
    (
        (root & !SHIFT_MASK) as *mut Node,
        (root & SHIFT_MASK) as u32 / BITS,
    )
}

fn root_word(node: *mut Node, level: u32) -> usize {
    node as usize | (BITS * level) as usize
}
// The header's inline walk reads these fields of an extent.
const _: () = {
    assert!(std::mem::offset_of!(Extent, first) == 0);
    assert!(std::mem::offset_of!(Extent, last) == 8);
    assert!(std::mem::offset_of!(Extent, target) == 16);
    assert!(std::mem::offset_of!(Extent, run_last) == 24);
    // pfn_t_to_page_inline reads the memmap.
    assert!(std::mem::offset_of!(Extent, memmap) == 40);
};

/// A registered extent as a table sees it. Its address must stay valid while it is in the
/// table and for a grace period after its removal.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Extent {
    pub first: u64,
    pub last: u64,
    /// What `first`'s first byte translates to.
    pub target: usize,
    /// Last page of the run of adjacent extents that starts with this one (forward table:
    /// following ranges that continue it both physically and virtually). Writers update it;
    /// readers load it.
    /// Memmap table: the last pfn the memmap describes.
    pub run_last: AtomicU64,
    /// pfn_t flags a reverse translation of this extent carries.
    pub flags: u64,
    /// Page descriptors: the address of `first`'s (forward table), or of the memmap's first
    /// (memmap table); 0 when the range has none.
    pub memmap: usize,
    /// Memmap table: the first pfn the memmap describes and its address.
    pub pfn0: u64,
    pub virt: usize,
    /// The range's slot in the space's bookkeeping (pins count by it).
    pub range: u32,
}

#[repr(C, align(64))]
pub struct Node {
    slots: [AtomicUsize; FANOUT],
    /// The extent behind each leaf slot, for callers that want more than the address. In a
    /// detached node, `extents[0]` links the list of detached nodes.
    extents: [AtomicPtr<Extent>; FANOUT],
    /// First page this node covers (aligned to its coverage). Immutable.
    first: u64,
}

/// Nodes detached from a table, linked through `extents[0]`; freed when dropped (after the
/// grace period that follows their removal). Building the list allocates nothing.
pub struct Detached(*mut Node);

// SAFETY: a detached node is referenced by no one but this list (after the grace period the
// caller waits for before dropping it).
unsafe impl Send for Detached {}

impl Default for Detached {
    fn default() -> Self {
        Detached(ptr::null_mut())
    }
}

impl Detached {
    /// Lets go of the nodes without freeing them (they are being published), clearing the
    /// links the list kept in them.
    fn forget(&mut self) {
        while !self.0.is_null() {
            let n = self.0;
            // SAFETY: a node of this list, not yet visible to readers.
            unsafe {
                self.0 = (*n).extents[0].load(Ordering::Relaxed) as *mut Node;
                (*n).extents[0].store(ptr::null_mut(), Ordering::Relaxed);
            }
        }
    }

    fn push(&mut self, n: *mut Node) {
        // SAFETY: a node just unlinked from the table; readers never read a detached node's
        // extent pointers (its slots are all empty).
        unsafe { (*n).extents[0].store(self.0 as *mut Extent, Ordering::Relaxed) };
        self.0 = n;
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        while !self.0.is_null() {
            let n = self.0;
            // SAFETY: allocated by `new_node` with this layout, detached, reader-free.
            unsafe {
                self.0 = (*n).extents[0].load(Ordering::Relaxed) as *mut Node;
                dealloc(n as *mut u8, Layout::new::<Node>());
            }
        }
    }
}

/// What an insert needs, allocated ahead so that the insert itself cannot fail. Dropped
/// without a commit, it frees everything (none of it was ever published).
pub struct Reserved {
    nodes: Detached,
    count: usize,
    /// The root word the insert publishes (a taller one when `chain` is not empty).
    root: usize,
    /// New root nodes, unpublished until the commit.
    chain: Detached,
}

impl Reserved {
    fn pop(&mut self) -> *mut Node {
        let n = self.nodes.0;
        if !n.is_null() {
            // SAFETY: a node of the list, fresh and unpublished.
            unsafe {
                self.nodes.0 = (*n).extents[0].load(Ordering::Relaxed) as *mut Node;
                (*n).extents[0].store(ptr::null_mut(), Ordering::Relaxed);
            }
            self.count -= 1;
        }
        n
    }
}

/// A zeroed node at `level` covering the aligned window that holds `page`; null when out of
/// memory.
fn new_node(level: u32, page: u64) -> *mut Node {
    // SAFETY: Node has non-zero size; all-zero bytes are valid empty atomics.
    let node = unsafe { alloc_zeroed(Layout::new::<Node>()) as *mut Node };
    if !node.is_null() {
        // SAFETY: fresh, exclusively owned.
        unsafe { (*node).first = page & !(cover_pages(level) - 1) };
    }
    node
}

/// Pages under one slot of a node at `level`.
const fn span_pages(level: u32) -> u64 {
    1u64 << (BITS * level)
}

/// Pages under a whole node at `level` (level 5 covers more than the 52-bit space).
const fn cover_pages(level: u32) -> u64 {
    1u64 << (BITS * (level + 1))
}

/// Lowest level (at least 1, so that 2 MiB blocks fit) whose single node covers `lo..=hi`.
fn level_covering(lo: u64, hi: u64) -> u32 {
    (1..TOP_LEVEL)
        .find(|&l| lo >> (BITS * (l + 1)) == hi >> (BITS * (l + 1)))
        .unwrap_or(TOP_LEVEL)
}

/// The level of the largest aligned block inside `first..=last`: a node at this level holds it
/// as one slot.
pub fn largest_block_level(first: u64, last: u64) -> u32 {
    (1..=TOP_LEVEL)
        .rev()
        .find(|&l| {
            let span = span_pages(l);
            let start = first.checked_add(span - 1).map(|v| v & !(span - 1));
            start.is_some_and(|s| s.checked_add(span - 1).is_some_and(|end| end <= last))
        })
        .unwrap_or(0)
}

pub struct Leaf<'a> {
    node: &'a Node,
    idx: usize,
    slot: usize,
}

impl<'a> Leaf<'a> {
    /// The extent behind this leaf (live while the caller's read-side section lasts).
    pub fn extent(&self) -> Option<&'a Extent> {
        // SAFETY: extents stay valid for a grace period after their removal.
        unsafe { self.node.extents[self.idx].load(Ordering::Acquire).as_ref() }
    }

    /// True when the slot still holds what was read (not removed and reused meanwhile).
    pub fn unchanged(&self) -> bool {
        self.node.slots[self.idx].load(Ordering::Acquire) == self.slot
    }

    /// What page `page` (under this leaf) translates to.
    pub fn addr(&self, page: u64) -> usize {
        leaf_addr(self.slot, page)
    }
}

#[repr(transparent)]
pub struct Table {
    /// Root node address | 9 * root level; 0 when empty.
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

    /// What `page` translates to.
    ///
    /// # Safety
    /// The caller must be inside a read-side section (see `rcu`) for as long as it uses
    /// anything it learned here, so that no node is freed under it.
    #[inline(always)]
    pub unsafe fn translate(&self, page: u64) -> Option<usize> {
        translate_from(self.root_word(), page)
    }

    /// The root as readers see it: node address | 9 * level (0 when empty). A walk may start from
    /// a snapshot for as long as the read-side section that took it lasts.
    #[inline(always)]
    pub fn root_word(&self) -> usize {
        self.root.load(Ordering::Acquire)
    }

    /// The leaf holding `page`, with a consistent view of its extent.
    ///
    /// # Safety
    /// As for [`Table::translate`].
    pub unsafe fn leaf(&self, page: u64) -> Option<(Leaf<'_>, &Extent)> {
        loop {
            let leaf = find(self.root_word(), page)?;
            let extent = leaf.extent();
            // A slot removed and reused between the two loads is looked up again.
            if !leaf.unchanged() {
                continue;
            }
            return extent.map(|e| (leaf, e));
        }
    }

    /// Allocates what inserting `e` will need: a taller root if `e` needs one (built, not yet
    /// published) and the nodes the fill creates. The caller serializes writers and inserts
    /// with [`Table::commit`] before any other write. Err: out of memory; nothing changed.
    pub fn reserve(&self, e: &Extent) -> Result<Reserved, ()> {
        let mut r = Reserved {
            nodes: Detached::default(),
            count: 0,
            root: self.root.load(Ordering::Relaxed),
            chain: Detached::default(),
        };
        let min_level = largest_block_level(e.first, e.last);
        r.root = self.grown_root(e.first, e.last, min_level, &mut r.chain)?;
        let (node, level) = root_parts(r.root);
        // SAFETY: writers are serialized; nodes reachable from the (new) root are live.
        let needed = unsafe { count(node, level, (*node).first, e) };
        for _ in 0..needed {
            let n = new_node(0, 0);
            if n.is_null() {
                return Err(());
            }
            r.nodes.push(n);
            r.count += 1;
        }
        Ok(r)
    }

    /// Publishes `e` in every part of its span that no other extent holds. The caller reserved
    /// for it just before, keeps `*e` alive until a grace period after its removal, and (in the
    /// forward table) has checked that no registered extent overlaps it.
    pub fn commit(&self, e: &Extent, mut r: Reserved) {
        // A grown root only adds empty slots around the old one: readers translate as before.
        r.chain.forget();
        self.root.store(r.root, Ordering::Release);
        let (node, level) = root_parts(r.root);
        // SAFETY: as in `reserve`; `r` holds exactly the nodes the fill creates.
        unsafe { fill(node, level, (*node).first, e, &mut r) };
        debug_assert_eq!(r.count, 0);
    }

    /// Reserves and commits in one step (for callers with a single table to update).
    pub fn insert(&self, e: &Extent) -> Result<(), ()> {
        let r = self.reserve(e)?;
        self.commit(e, r);
        Ok(())
    }

    /// The root word that covers `lo..=hi` at `min_level` or above: the current one, a first
    /// root just big enough, or a new, higher root above the current one (linked through fresh
    /// intermediate nodes). New nodes are added to `chain`, unpublished.
    fn grown_root(
        &self,
        lo: u64,
        hi: u64,
        min_level: u32,
        chain: &mut Detached,
    ) -> Result<usize, ()> {
        let root = self.root.load(Ordering::Relaxed);
        let (old, old_level) = root_parts(root);
        if old.is_null() {
            let level = level_covering(lo, hi).max(min_level);
            let node = new_node(level, lo);
            if node.is_null() {
                return Err(());
            }
            chain.push(node);
            return Ok(root_word(node, level));
        }
        // SAFETY: the root is live (serialized writer).
        let old_first = unsafe { (*old).first };
        let old_last = old_first.saturating_add(cover_pages(old_level) - 1);
        let level = level_covering(lo.min(old_first), hi.max(old_last))
            .max(min_level)
            .max(old_level);
        if level == old_level {
            return Ok(root);
        }
        // From the old root up: each new node's slot towards `old_first` leads one level down.
        let mut child = old;
        for l in old_level + 1..=level {
            let n = new_node(l, old_first);
            if n.is_null() {
                return Err(());
            }
            let idx = ((old_first >> (BITS * l)) & MASK) as usize;
            // SAFETY: a fresh node, not yet visible.
            unsafe { (*n).slots[idx].store(child as usize, Ordering::Relaxed) };
            chain.push(n);
            child = n;
        }
        Ok(root_word(child, level))
    }

    /// Unpublishes `e`'s leaves. Adds the nodes that became empty and were detached to `out`:
    /// free them only after a grace period.
    pub fn remove(&self, e: &Extent, out: &mut Detached) {
        let (node, level) = root_parts(self.root.load(Ordering::Relaxed));
        if node.is_null() {
            return;
        }
        // SAFETY: serialized writer; reachable nodes are live.
        unsafe {
            clear(node, level, (*node).first, e, out);
            if is_empty(node) {
                self.root.store(0, Ordering::Release);
                out.push(node);
            }
        }
    }

    /// Bytes of table memory in use (for the benchmark's memory figure). The caller excludes
    /// writers.
    pub fn memory_bytes(&self) -> usize {
        // SAFETY: writers are excluded, so every reachable node stays live during the walk.
        unsafe { self.nodes().len() * std::mem::size_of::<Node>() }
    }

    /// The blocks `e` holds, as (first page, pages), in page order (tests and diagnostics).
    /// The caller excludes writers.
    pub fn blocks_of(&self, e: &Extent) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let (node, level) = root_parts(self.root.load(Ordering::Acquire));
        if !node.is_null() {
            // SAFETY: writers are excluded.
            unsafe { collect_blocks(node, level, e, &mut out) };
        }
        out
    }

    /// Every node reachable from the root.
    ///
    /// # Safety
    /// No writer runs meanwhile.
    unsafe fn nodes(&self) -> Vec<*mut Node> {
        let (node, level) = root_parts(self.root.load(Ordering::Acquire));
        let mut all = Vec::new();
        if !node.is_null() {
            collect(node, level, &mut all);
        }
        all
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let mut gone = Detached::default();
        // SAFETY: exclusive access in drop.
        unsafe { self.nodes() }
            .into_iter()
            .for_each(|n| gone.push(n));
    }
}

/// An aligned block of pages that one leaf slot maps, or a run of extents cached whole:
/// pages `first..first + pages` start at address `addr`. `pages == 0`: no block (never
/// matches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Block {
    pub first: u64,
    pub pages: u64,
    pub addr: usize,
}

impl Block {
    /// Address of `page` if the block holds it. `page` may carry bit 63 (which then never
    /// matches): callers fold their flag check into this one comparison.
    #[inline(always)]
    pub fn addr_of(&self, page: u64) -> Option<usize> {
        let off = page.wrapping_sub(self.first);
        (off < self.pages).then(|| self.addr.wrapping_add((off as usize) << 12))
    }
}

/// The leaf holding `page`, walking from root word `root`.
///
/// # Safety
/// `root` was read inside the read-side section the caller is still in.
#[inline(always)]
pub unsafe fn leaf_from<'a>(root: usize, page: u64) -> Option<Leaf<'a>> {
    find(root, page)
}

/// What `page` translates to, walking from root word `root` (see [`Table::root_word`]).
///
/// # Safety
/// `root` was read inside the read-side section the caller is still in.
#[inline(always)]
pub unsafe fn translate_from(root: usize, page: u64) -> Option<usize> {
    find(root, page).map(|leaf| leaf_addr(leaf.slot, page))
}

#[inline(always)]
unsafe fn find<'a>(root: usize, page: u64) -> Option<Leaf<'a>> {
    // The root word's low bits are the shift that indexes its slots (9 * level).
    let mut shift = (root & SHIFT_MASK) as u32;
    let mut node = (root & !SHIFT_MASK) as *const Node;
    // Below the root's first page the subtraction wraps to a huge value: one test for both ends.
    if node.is_null() || (page.wrapping_sub((*node).first) >> (shift + BITS)) != 0 {
        return None;
    }
    loop {
        let idx = ((page >> shift) & MASK) as usize;
        let n = &*node;
        let slot = n.slots[idx].load(Ordering::Acquire);
        if slot & LEAF != 0 {
            return Some(Leaf { node: n, idx, slot });
        }
        if slot == 0 || shift == 0 {
            return None;
        }
        node = slot as *const Node;
        shift -= BITS;
    }
}

#[inline(always)]
fn leaf_addr(slot: usize, page: u64) -> usize {
    (slot & !LEAF).wrapping_add((page as usize) << 12)
}

/// The slots of a node at `level` starting at `node_first` that `e` touches, with each slot's
/// first page and whether `e` covers the slot's whole span.
fn touched(level: u32, node_first: u64, e: &Extent) -> impl Iterator<Item = (usize, u64, bool)> {
    let span = span_pages(level);
    let node_last = node_first.saturating_add(span * FANOUT as u64 - 1);
    let lo = e.first.max(node_first);
    let hi = e.last.min(node_last);
    let (a, b) = if lo > hi {
        (1, 0)
    } else {
        ((lo - node_first) / span, (hi - node_first) / span)
    };
    let (first, last) = (e.first, e.last);
    (a..=b).map(move |i| {
        let s = node_first + i * span;
        let l = s + (span - 1);
        (i as usize, s, first <= s && l <= last)
    })
}

/// What a slot holds, for the fill and its count.
enum SlotIs {
    Empty,
    Leaf,
    Node(*mut Node),
}

unsafe fn slot_is(node: *const Node, i: usize) -> SlotIs {
    let v = if node.is_null() {
        0
    } else {
        (*node).slots[i].load(Ordering::Relaxed)
    };
    match v {
        0 => SlotIs::Empty,
        v if v & LEAF != 0 => SlotIs::Leaf,
        v => SlotIs::Node(v as *mut Node),
    }
}

/// Nodes that filling `e` under `node` (at `level`; null: a fresh, empty subtree) creates.
unsafe fn count(node: *const Node, level: u32, node_first: u64, e: &Extent) -> usize {
    let mut n = 0;
    for (i, first, whole) in touched(level, node_first, e) {
        n += match (slot_is(node, i), whole) {
            (SlotIs::Empty, true) | (SlotIs::Leaf, _) => 0,
            (SlotIs::Empty, false) => 1 + count(ptr::null(), level - 1, first, e),
            (SlotIs::Node(child), _) => count(child, level - 1, first, e),
        };
    }
    n
}

unsafe fn fill(node: *mut Node, level: u32, node_first: u64, e: &Extent, pool: &mut Reserved) {
    for (i, first, whole) in touched(level, node_first, e) {
        let slot = &(*node).slots[i];
        match (slot_is(node, i), whole) {
            (SlotIs::Leaf, _) => {}
            (SlotIs::Empty, true) => {
                // The leaf holds target - (first << 12), wrapping: a translation is one add.
                let delta = e.target.wrapping_sub((e.first as usize) << 12);
                (*node).extents[i].store(e as *const Extent as *mut Extent, Ordering::Relaxed);
                slot.store(delta | LEAF, Ordering::Release);
            }
            (SlotIs::Empty, false) => {
                let child = pool.pop();
                (*child).first = first;
                fill(child, level - 1, first, e, pool);
                // Fill a new node before it becomes reachable.
                slot.store(child as usize, Ordering::Release);
            }
            (SlotIs::Node(child), _) => fill(child, level - 1, first, e, pool),
        }
    }
}

unsafe fn clear(node: *mut Node, level: u32, node_first: u64, e: &Extent, out: &mut Detached) {
    for (i, first, _) in touched(level, node_first, e) {
        let slot = &(*node).slots[i];
        match slot_is(node, i) {
            SlotIs::Empty => {}
            SlotIs::Leaf => {
                if ptr::eq((*node).extents[i].load(Ordering::Relaxed), e) {
                    slot.store(0, Ordering::Release);
                }
            }
            SlotIs::Node(child) => {
                clear(child, level - 1, first, e, out);
                if is_empty(child) {
                    slot.store(0, Ordering::Release);
                    out.push(child);
                }
            }
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

unsafe fn collect_blocks(node: *const Node, level: u32, e: &Extent, out: &mut Vec<(u64, u64)>) {
    for (i, first, _) in touched(level, (*node).first, e) {
        match slot_is(node, i) {
            SlotIs::Leaf if ptr::eq((*node).extents[i].load(Ordering::Relaxed), e) => {
                out.push((first, span_pages(level)))
            }
            SlotIs::Node(child) => collect_blocks(child, level - 1, e, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(first: u64, last: u64, target: usize) -> Box<Extent> {
        Box::new(Extent {
            first,
            last,
            target,
            ..Default::default()
        })
    }

    fn remove(t: &Table, e: &Extent) {
        let mut gone = Detached::default();
        t.remove(e, &mut gone);
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
            let (leaf, x) = t.leaf(1000).unwrap();
            assert_eq!((x.first, x.last), (512, 1535));
            assert_eq!(leaf.addr(1000), 0x10_0000_0000 + 488 * 4096);
        }
        remove(&t, &e);
        unsafe { assert_eq!(t.translate(512), None) };
        assert_eq!(t.memory_bytes(), 0);
    }

    #[test]
    fn root_covers_just_what_is_registered_and_grows_both_ways() {
        let t = Table::new();
        let mid = ext(1 << 30, (1 << 30) + 511, 0x4000_0000);
        t.insert(&mid).unwrap();
        assert_eq!(t.root_word() & SHIFT_MASK, 9);
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
        remove(&t, &mid);
        remove(&t, &below);
        remove(&t, &above);
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
        for e in [&c, &a, &b] {
            remove(&t, e);
        }
        assert_eq!(t.memory_bytes(), 0);
    }

    /// Aligned ranges are stored as their largest blocks: one slot for 2 MiB, 1 GiB and
    /// 512 GiB, two 1 GiB slots for 2 GiB (there is no 2 GiB level).
    #[test]
    fn aligned_ranges_use_maximal_blocks() {
        const MIB2: u64 = 512;
        const GIB: u64 = 512 * 512;
        const GIB512: u64 = 512 * GIB;
        for (pages, want) in [
            (MIB2, vec![MIB2]),
            (GIB, vec![GIB]),
            (2 * GIB, vec![GIB, GIB]),
            (GIB512, vec![GIB512]),
        ] {
            let t = Table::new();
            let first = 3 * GIB512; // aligned for every size here
            let e = ext(first, first + pages - 1, 0x7000_0000_0000);
            t.insert(&e).unwrap();
            let blocks: Vec<u64> = t.blocks_of(&e).iter().map(|b| b.1).collect();
            assert_eq!(blocks, want, "{pages} pages");
            unsafe {
                assert_eq!(
                    t.translate(first + pages - 1),
                    Some(0x7000_0000_0000 + ((pages - 1) << 12) as usize)
                );
                assert_eq!(t.translate(first + pages), None);
            }
            remove(&t, &e);
            assert_eq!(t.root_word(), 0);
        }
        // Unaligned: 2 MiB blocks where they fit, single pages at the ends.
        let t = Table::new();
        let e = ext(GIB - 3, GIB + 2 * MIB2 + 1, 0x7000_0000_0000);
        t.insert(&e).unwrap();
        let blocks: Vec<u64> = t.blocks_of(&e).iter().map(|b| b.1).collect();
        assert_eq!(blocks, vec![1, 1, 1, MIB2, MIB2, 1, 1]);
        remove(&t, &e);
    }

    #[test]
    fn overlapping_extents_fill_free_parts_and_clear_their_own() {
        // The reverse table: two ranges sharing virtual pages 100..=199.
        let t = Table::new();
        let a = ext(0, 199, 0x1_0000_0000);
        let b = ext(100, 1299, 0x2_0000_0000);
        t.insert(&a).unwrap();
        t.insert(&b).unwrap();
        unsafe {
            assert_eq!(t.translate(150), Some(0x1_0000_0000 + 150 * 4096));
            assert_eq!(t.translate(1000), Some(0x2_0000_0000 + 900 * 4096));
        }
        remove(&t, &a);
        unsafe {
            assert_eq!(t.translate(150), None);
            assert_eq!(t.translate(1000), Some(0x2_0000_0000 + 900 * 4096));
        }
        // Filling again puts b where a was.
        t.insert(&b).unwrap();
        unsafe { assert_eq!(t.translate(150), Some(0x2_0000_0000 + 50 * 4096)) };
        remove(&t, &b);
        assert_eq!(t.root_word(), 0);
    }
}
