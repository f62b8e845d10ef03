//! Writer-side bookkeeping that never aborts on allocation failure: a slab whose entries never
//! move, and an intrusive treap (ordered index) threaded through slab entries.
//!
//! Registration documents ENOMEM, so every allocation on its path must be fallible. The
//! standard ordered maps abort when an insert cannot allocate; these structures allocate only in
//! `Slab::alloc` (one chunk at a time, fallibly) and link entries through fields the entries
//! already have, so inserting into an index cannot fail.

use std::alloc::{alloc_zeroed, dealloc, Layout};

/// No entry.
pub const NIL: u32 = u32::MAX;
const CHUNK: usize = 256;

/// Entries of `T` at stable addresses, allocated a chunk at a time. `T` must be valid when
/// all-zero (integers, atomics, raw pointers) and is reset to zero when freed.
pub struct Slab<T> {
    chunks: Vec<*mut T>,
    free: u32,
    /// Entries handed out and not freed.
    live: usize,
    /// Free list link of each free entry, kept beside the entries (which stay all-zero).
    next_free: Vec<u32>,
}

// SAFETY: the slab owns its chunks; access is serialized by its owner.
unsafe impl<T> Send for Slab<T> {}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slab<T> {
    pub const fn new() -> Slab<T> {
        Slab {
            chunks: Vec::new(),
            free: NIL,
            live: 0,
            next_free: Vec::new(),
        }
    }

    fn layout() -> Layout {
        Layout::array::<T>(CHUNK).expect("a chunk fits in memory")
    }

    /// A zeroed entry. None: out of memory (nothing changed).
    pub fn alloc(&mut self) -> Option<u32> {
        if self.free == NIL {
            let base = self.chunks.len() * CHUNK;
            if base + CHUNK > NIL as usize {
                return None;
            }
            self.chunks.try_reserve(1).ok()?;
            self.next_free.try_reserve(CHUNK).ok()?;
            // SAFETY: non-zero size; zero bytes are a valid T (the type's contract above).
            let chunk = unsafe { alloc_zeroed(Self::layout()) } as *mut T;
            if chunk.is_null() {
                return None;
            }
            self.chunks.push(chunk);
            // Reserved above: no reallocation. The new entries chain to each other.
            self.next_free
                .extend((base + 1..base + CHUNK).map(|n| n as u32).chain([NIL]));
            self.free = base as u32;
        }
        let i = self.free;
        self.free = self.next_free[i as usize];
        self.live += 1;
        Some(i)
    }

    /// Returns entry `i` (zeroed again) to the free list.
    pub fn free(&mut self, i: u32) {
        // SAFETY: `i` was handed out by `alloc`; zero is a valid T.
        unsafe { std::ptr::write_bytes(self.ptr(i), 0, 1) };
        self.next_free[i as usize] = self.free;
        self.free = i;
        self.live -= 1;
    }

    fn ptr(&self, i: u32) -> *mut T {
        let i = i as usize;
        // SAFETY: in bounds of an allocated chunk.
        unsafe { self.chunks[i / CHUNK].add(i % CHUNK) }
    }

    pub fn get(&self, i: u32) -> &T {
        // SAFETY: entries live as long as the slab and never move.
        unsafe { &*self.ptr(i) }
    }

    pub fn get_mut(&mut self, i: u32) -> &mut T {
        // SAFETY: as above, with exclusive access to the slab.
        unsafe { &mut *self.ptr(i) }
    }

    /// A reference that outlives the borrow of the slab: entries never move or go away while
    /// the slab lives. The caller keeps the entry allocated while it uses the reference.
    pub fn stable(&self, i: u32) -> &'static T {
        // SAFETY: the slabs that use this are statics; see the contract above.
        unsafe { &*self.ptr(i) }
    }

    /// Entries allocated so far (valid indices are below this).
    pub fn capacity(&self) -> u32 {
        (self.chunks.len() * CHUNK) as u32
    }

    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live
    }
}

impl<T> Drop for Slab<T> {
    fn drop(&mut self) {
        for &c in &self.chunks {
            // SAFETY: allocated in `alloc` with this layout.
            unsafe { dealloc(c as *mut u8, Self::layout()) };
        }
    }
}

/// A treap node's links, embedded in the entry it orders.
#[derive(Clone, Copy, Debug, Default)]
pub struct Links {
    pub left: u32,
    pub right: u32,
    pub prio: u32,
}

/// Access to the entries one treap orders.
pub trait Treap {
    fn links(&self, i: u32) -> Links;
    fn set_links(&mut self, i: u32, l: Links);
    /// Strict key order of two entries (keys are unique).
    fn less(&self, a: u32, b: u32) -> bool;
    /// Recomputes what the entry keeps about its subtree, from its children.
    fn fix(&mut self, _i: u32) {}

    fn set_left(&mut self, i: u32, left: u32) {
        let mut l = self.links(i);
        l.left = left;
        self.set_links(i, l);
    }

    fn set_right(&mut self, i: u32, right: u32) {
        let mut l = self.links(i);
        l.right = right;
        self.set_links(i, l);
    }

    /// Inserts `i` (links' priority set, children ignored) into the tree at `root`.
    fn insert(&mut self, root: u32, i: u32) -> u32 {
        if root == NIL {
            let p = self.links(i).prio;
            self.set_links(
                i,
                Links {
                    left: NIL,
                    right: NIL,
                    prio: p,
                },
            );
            self.fix(i);
            return i;
        }
        if self.links(i).prio > self.links(root).prio {
            let (l, r) = self.split(root, i);
            let p = self.links(i).prio;
            self.set_links(
                i,
                Links {
                    left: l,
                    right: r,
                    prio: p,
                },
            );
            self.fix(i);
            return i;
        }
        if self.less(i, root) {
            let l = self.insert(self.links(root).left, i);
            self.set_left(root, l);
        } else {
            let r = self.insert(self.links(root).right, i);
            self.set_right(root, r);
        }
        self.fix(root);
        root
    }

    /// Splits `t` into (entries before `key`, the rest).
    fn split(&mut self, t: u32, key: u32) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.less(t, key) {
            let (l, r) = self.split(self.links(t).right, key);
            self.set_right(t, l);
            self.fix(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.links(t).left, key);
            self.set_left(t, r);
            self.fix(t);
            (l, t)
        }
    }

    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.links(a).prio > self.links(b).prio {
            let r = self.merge(self.links(a).right, b);
            self.set_right(a, r);
            self.fix(a);
            a
        } else {
            let l = self.merge(a, self.links(b).left);
            self.set_left(b, l);
            self.fix(b);
            b
        }
    }

    /// Removes `i` (which must be in the tree at `root`).
    fn remove(&mut self, root: u32, i: u32) -> u32 {
        if root == i {
            let l = self.links(i);
            return self.merge(l.left, l.right);
        }
        if self.less(i, root) {
            let l = self.remove(self.links(root).left, i);
            self.set_left(root, l);
        } else {
            let r = self.remove(self.links(root).right, i);
            self.set_right(root, r);
        }
        self.fix(root);
        root
    }
}

/// A small xorshift generator for treap priorities.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct E {
        key: u64,
        links: Links,
        size: u32,
    }

    struct T<'a>(&'a mut Slab<E>);

    impl Treap for T<'_> {
        fn links(&self, i: u32) -> Links {
            self.0.get(i).links
        }
        fn set_links(&mut self, i: u32, l: Links) {
            self.0.get_mut(i).links = l;
        }
        fn less(&self, a: u32, b: u32) -> bool {
            self.0.get(a).key < self.0.get(b).key
        }
        fn fix(&mut self, i: u32) {
            let l = self.links(i);
            let size = |j: u32| if j == NIL { 0 } else { self.0.get(j).size };
            let s = 1 + size(l.left) + size(l.right);
            self.0.get_mut(i).size = s;
        }
    }

    fn in_order(s: &Slab<E>, t: u32, out: &mut Vec<u64>) {
        if t != NIL {
            in_order(s, s.get(t).links.left, out);
            out.push(s.get(t).key);
            in_order(s, s.get(t).links.right, out);
        }
    }

    #[test]
    fn treap_keeps_order_and_sizes_through_inserts_and_removes() {
        let mut slab = Slab::<E>::new();
        let mut rng = Rng(0x1234_5678);
        let mut root = NIL;
        let mut ids = Vec::new();
        for k in 0..2000u64 {
            let i = slab.alloc().unwrap();
            slab.get_mut(i).key = (k * 7919) % 2003;
            slab.get_mut(i).links.prio = rng.next_u32();
            root = T(&mut slab).insert(root, i);
            ids.push(i);
        }
        for (n, &i) in ids.iter().enumerate() {
            if n % 3 == 0 {
                root = T(&mut slab).remove(root, i);
                slab.free(i);
            }
        }
        let mut keys = Vec::new();
        in_order(&slab, root, &mut keys);
        assert_eq!(keys.len(), slab.live());
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(slab.get(root).size as usize, slab.live());
    }
}
