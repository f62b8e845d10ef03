//! A thread's kmap holds: the extents it mapped and has not yet released.
//!
//! Only the owning thread touches a hold stack, but that thread may be interrupted at any
//! instruction by a signal handler that takes and releases holds of its own (kmap is
//! async-signal-safe once the thread is set up). Every operation is therefore written so that
//! a handler which runs in the middle of it, and releases what it takes before it returns,
//! leaves the stack as the interrupted code expects:
//!
//! - the count `len` is the only word that commits a change, and it is stored once per push or
//!   pop; a push stores the new count *before* it writes the entry (a handler then sees a slot
//!   it never matches: it only releases its own, newer holds, and finds them first because
//!   searches start at the top);
//! - a release in the middle copies the top entry over the released one and then shrinks the
//!   count: if a handler interrupts between the two, it sees the top entry twice, pushes above
//!   it and pops back to the same count;
//! - nothing is allocated with malloc: the first [`INLINE`] holds live in the record itself and
//!   deeper nesting uses chunks from `mmap`, which never move once installed.
//!
//! The hint makes first-in-first-out release cheap: after a release in the middle, the next
//! one in FIFO order sits right above it. The hint is used only while the count is the one it
//! was computed for, so a handler (whose count is always higher) never follows a stale hint of
//! the interrupted code into entries that are not its own.
//!
//! Relaxed atomics stand in for plain owner-only memory (a signal handler is the only other
//! party); compiler fences order the steps as a handler on this thread would see them.

use std::sync::atomic::{
    compiler_fence, AtomicPtr, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};

/// Holds kept in the record itself; the header's inline kmap uses only these.
pub const INLINE: usize = 16;
/// Entries in the first out-of-line chunk (one page of holds); each next chunk doubles.
const CHUNK0: usize = 256;
const CHUNKS: usize = 40;

/// One held extent. `start` is the page-aligned first address; a hold of more than one page
/// sets bit 0 of `start` ([`EXTENT`]) and keeps its end in `end`, so that the common
/// single-page hold is one store and the fast release one comparison.
#[repr(C)]
#[derive(Default)]
pub struct Hold {
    pub start: AtomicUsize,
    pub end: AtomicUsize,
}

/// Bit 0 of `Hold::start`: the hold covers `start & !EXTENT .. end`, not one page.
pub const EXTENT: usize = 1;

/// The page holding `addr`.
#[inline(always)]
fn page_of(addr: usize) -> usize {
    addr & !4095
}

/// The stack. Its first fields are read by the header's inline fast paths (see `rcu::Reader`).
/// The inline holds keep starts and ends in two arrays, so that the fast paths index
/// `inline_start` by 8 (one addressing mode, no multiply).
#[repr(C)]
pub struct Holds {
    pub len: AtomicUsize,
    hint: AtomicUsize,
    hint_len: AtomicUsize,
    pub inline_start: [AtomicUsize; INLINE],
    pub inline_end: [AtomicUsize; INLINE],
    chunks: [AtomicPtr<Hold>; CHUNKS],
}

/// One hold, wherever it lives: two words of the inline arrays or of a chunk.
#[derive(Clone, Copy)]
struct At<'a> {
    start: &'a AtomicUsize,
    end: &'a AtomicUsize,
}

impl At<'_> {
    #[inline(always)]
    fn starts_at(self, addr: usize) -> bool {
        self.start.load(Relaxed) & !EXTENT == page_of(addr)
    }

    #[inline(always)]
    fn contains(self, addr: usize) -> bool {
        let start = self.start.load(Relaxed);
        let end = if start & EXTENT != 0 {
            self.end.load(Relaxed)
        } else {
            start + 4096
        };
        let start = start & !EXTENT;
        addr.wrapping_sub(start) < end.wrapping_sub(start)
    }

    /// Records `start..end` (`start` page-aligned): one page as `start` alone.
    #[inline(always)]
    fn set(self, start: usize, end: usize) {
        if end == start + 4096 {
            self.start.store(start, Relaxed);
        } else {
            self.end.store(end, Relaxed);
            self.start.store(start | EXTENT, Relaxed);
        }
    }

    #[inline(always)]
    fn copy_from(self, other: At<'_>) {
        self.end.store(other.end.load(Relaxed), Relaxed);
        self.start.store(other.start.load(Relaxed), Relaxed);
    }
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            len: AtomicUsize::new(0),
            hint: AtomicUsize::new(0),
            hint_len: AtomicUsize::new(usize::MAX),
            inline_start: Default::default(),
            inline_end: Default::default(),
            chunks: [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS],
        }
    }
}

/// Where entry `i` (>= INLINE) lives: chunk `k` holds `CHUNK0 << k` entries.
fn chunk_of(i: usize) -> (usize, usize) {
    let j = i - INLINE;
    let k = (usize::BITS - 1 - (j / CHUNK0 + 1).leading_zeros()) as usize;
    (k, j - CHUNK0 * ((1 << k) - 1))
}

impl Holds {
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`, which must be below the capacity installed so far.
    fn at(&self, i: usize) -> At<'_> {
        if i < INLINE {
            return At {
                start: &self.inline_start[i],
                end: &self.inline_end[i],
            };
        }
        let (k, off) = chunk_of(i);
        let chunk = self.chunks[k].load(Relaxed);
        // SAFETY: chunks are installed before any index in them is used and never freed
        // while the record lives (records live for the whole process).
        let h = unsafe { &*chunk.add(off) };
        At {
            start: &h.start,
            end: &h.end,
        }
    }

    /// Makes sure entry `i` has storage. False: out of memory.
    fn ensure(&self, i: usize) -> bool {
        if i < INLINE {
            return true;
        }
        let (k, off) = chunk_of(i);
        if k >= CHUNKS {
            return false;
        }
        if off != 0 || !self.chunks[k].load(Relaxed).is_null() {
            return !self.chunks[k].load(Relaxed).is_null();
        }
        let bytes = (CHUNK0 << k) * std::mem::size_of::<Hold>();
        // SAFETY: an anonymous private mapping; mmap is a plain system call, safe in a signal
        // handler (malloc is not).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return false;
        }
        let fresh = p as *mut Hold;
        // A handler that interrupted us may have installed one meanwhile: keep the first.
        if self.chunks[k]
            .compare_exchange(std::ptr::null_mut(), fresh, SeqCst, Relaxed)
            .is_err()
        {
            // SAFETY: our own mapping, never published.
            unsafe { libc::munmap(p, bytes) };
        }
        true
    }

    /// Pushes `start..end` if it fits inline, without any call. False: nothing changed.
    #[inline(always)]
    pub fn try_push_inline(&self, start: usize, end: usize) -> bool {
        let k = self.len.load(Relaxed);
        if k >= INLINE {
            return false;
        }
        self.len.store(k + 1, Relaxed);
        compiler_fence(SeqCst);
        self.at(k).set(start, end);
        true
    }

    /// Pushes a hold of the one page at `page` into inline slot `k`, the current count.
    ///
    /// # Safety
    /// `k` is the count just read and below [`INLINE`].
    #[inline(always)]
    pub unsafe fn push_page_inline_at(&self, k: usize, page: usize) {
        self.len.store(k + 1, Relaxed);
        compiler_fence(SeqCst);
        self.inline_start.get_unchecked(k).store(page, Relaxed);
    }

    /// Pushes `start..end`, growing the stack if needed. False: out of memory (nothing changed).
    pub fn push(&self, start: usize, end: usize) -> bool {
        let k = self.len.load(Relaxed);
        if !self.ensure(k) {
            return false;
        }
        self.len.store(k + 1, Relaxed);
        compiler_fence(SeqCst);
        self.at(k).set(start, end);
        true
    }

    /// Releases the newest hold if it is the one page at `addr`'s page. The common, LIFO
    /// case.
    #[inline(always)]
    pub fn pop_if_top(&self, addr: usize) -> bool {
        let k = self.len.load(Relaxed);
        if k.wrapping_sub(1) >= INLINE
            // SAFETY: 1 <= k <= INLINE.
            || unsafe { self.inline_start.get_unchecked(k - 1) }.load(Relaxed) != page_of(addr)
        {
            return false;
        }
        self.len.store(k - 1, Relaxed);
        compiler_fence(SeqCst);
        true
    }

    /// Releases one hold that begins at `addr`'s page (the top one, the one the FIFO hint
    /// names, or the newest one found scanning down), or else the newest one whose extent
    /// contains `addr`. False: no hold contains it.
    pub fn release(&self, addr: usize) -> bool {
        let k = self.len.load(Relaxed);
        if k == 0 {
            return false;
        }
        if self.at(k - 1).starts_at(addr) {
            self.len.store(k - 1, Relaxed);
            compiler_fence(SeqCst);
            return true;
        }
        let hint = self.hint.load(Relaxed);
        let found = if self.hint_len.load(Relaxed) == k && hint < k && self.at(hint).starts_at(addr)
        {
            Some(hint)
        } else {
            (0..k)
                .rev()
                .find(|&i| self.at(i).starts_at(addr))
                .or_else(|| (0..k).rev().find(|&i| self.at(i).contains(addr)))
        };
        let Some(i) = found else {
            return false;
        };
        if i == k - 1 {
            self.len.store(k - 1, Relaxed);
            compiler_fence(SeqCst);
            return true;
        }
        self.at(i).copy_from(self.at(k - 1));
        compiler_fence(SeqCst);
        self.len.store(k - 1, Relaxed);
        compiler_fence(SeqCst);
        self.hint.store(i + 1, Relaxed);
        self.hint_len.store(k - 1, Relaxed);
        true
    }

    /// The start addresses of the newest `n` holds (fewer when fewer are held), newest first;
    /// for reports.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        let k = self.len();
        (k.saturating_sub(n)..k)
            .rev()
            .map(move |i| self.at(i).start.load(Relaxed) & !EXTENT)
    }

    /// Forgets every hold (thread exit, fork child). Returns how many there were.
    pub fn clear(&self) -> usize {
        let k = self.len.swap(0, Relaxed);
        self.hint_len.store(usize::MAX, Relaxed);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_contiguous_and_doubling() {
        assert_eq!(chunk_of(INLINE), (0, 0));
        assert_eq!(chunk_of(INLINE + CHUNK0 - 1), (0, CHUNK0 - 1));
        assert_eq!(chunk_of(INLINE + CHUNK0), (1, 0));
        assert_eq!(chunk_of(INLINE + 3 * CHUNK0 - 1), (1, 2 * CHUNK0 - 1));
        assert_eq!(chunk_of(INLINE + 3 * CHUNK0), (2, 0));
    }

    #[test]
    fn release_in_any_order_and_by_any_address_inside() {
        let h = Box::<Holds>::default();
        for i in 0..1000usize {
            assert!(h.push(i * 0x10000, i * 0x10000 + 0x3000));
        }
        assert!(!h.release(0x10000 * 1000));
        // FIFO, by an address in the middle of each extent.
        for i in 0..500usize {
            assert!(h.release(i * 0x10000 + 0x2fff), "hold {i}");
        }
        // LIFO for the rest, then nothing is left.
        for i in (500..1000usize).rev() {
            assert!(h.release(i * 0x10000), "hold {i}");
        }
        assert!(h.is_empty());
        assert!(!h.release(0));
    }

    #[test]
    fn a_hold_that_starts_at_the_page_goes_first() {
        let h = Box::<Holds>::default();
        // kmap of page 7, then kmap_len from page 5 over pages 5..=10.
        assert!(h.push(0x7000, 0x8000));
        assert!(h.push(0x5000, 0xb000));
        assert!(h.release(0x7000)); // the page kmap, although the extent is newer
        assert!(h.release(0x9123)); // an address inside the extent
        assert!(h.is_empty());
    }

    #[test]
    fn duplicates_release_one_at_a_time() {
        let h = Box::<Holds>::default();
        assert!(h.try_push_inline(0x5000, 0x6000));
        assert!(h.try_push_inline(0x5000, 0x6000));
        assert!(h.pop_if_top(0x5fff));
        assert_eq!(h.len(), 1);
        assert!(!h.pop_if_top(0x6000));
        assert!(h.release(0x5000));
        assert!(!h.release(0x5000));
    }
}
