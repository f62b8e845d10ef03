//! The library's mappings whose bytes become durable only by msync (PAGE granularity), found
//! by address with no lock, so that persisting by pointer can tell them from memory that
//! CPU-cache flushes make durable.
//!
//! Slots sit in chunks of 64 that are never freed: memory is bounded by the peak number of
//! such mappings alive at once. A slot is two words, `start | tag | 1` and `end | tag`, where
//! the tag is a generation number in bits 1..11 (both addresses are page-aligned). A writer
//! claims a free slot by compare-and-swap, stores `end`, then publishes `start`; removing
//! clears `start` first. A reader that finds the tags equal and `start` unchanged has read one
//! entry; otherwise a writer on another thread reused the slot meanwhile, and it reads again.
//! A signal handler that interrupted a writer on its own thread finds the slot empty or whole,
//! never half-written, so it never waits. Readers take no lock, allocate nothing and make no
//! system call.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr;
use std::sync::atomic::{fence, AtomicPtr, AtomicUsize, Ordering};

use crate::error::{Error, Result};

const SLOTS: usize = 64;
/// A claimed slot not yet published (bit 0 clear).
const CLAIMED: usize = 2;
const TAG_MASK: usize = 0xffe;
const LOW_BITS: usize = 0xfff;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
}

struct Chunk {
    slots: [Slot; SLOTS],
    next: AtomicPtr<Chunk>,
}

static FIRST: Chunk = Chunk {
    slots: [const {
        Slot {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }; SLOTS],
    next: AtomicPtr::new(ptr::null_mut()),
};
/// Entries published and not yet removed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static GENERATION: AtomicUsize = AtomicUsize::new(0);

/// A recorded mapping; dropping it removes the record.
#[derive(Debug)]
pub struct Entry {
    slot: &'static Slot,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({:?})", self.read())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.slot.start.store(0, Ordering::Release);
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn chunks() -> impl Iterator<Item = &'static Chunk> {
    // SAFETY: `next` is null or a chunk that is never freed.
    std::iter::successors(Some(&FIRST), |c| unsafe {
        c.next.load(Ordering::Acquire).as_ref()
    })
}

impl Slot {
    /// The entry in this slot, if one is published.
    fn read(&self) -> Option<(usize, usize)> {
        loop {
            let start = self.start.load(Ordering::Acquire);
            if start & 1 == 0 {
                return None;
            }
            let end = self.end.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if end & TAG_MASK == start & TAG_MASK && self.start.load(Ordering::Relaxed) == start {
                return Some((start & !LOW_BITS, end & !LOW_BITS));
            }
        }
    }
}

fn claim() -> Result<&'static Slot> {
    loop {
        let mut last = &FIRST;
        for chunk in chunks() {
            for slot in &chunk.slots {
                if slot.start.load(Ordering::Relaxed) == 0
                    && slot
                        .start
                        .compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return Ok(slot);
                }
            }
            last = chunk;
        }
        let layout = Layout::new::<Chunk>();
        // SAFETY: a non-zero-sized layout; all-zero bytes are a valid Chunk (atomics at 0,
        // a null pointer).
        let fresh = unsafe { alloc_zeroed(layout) } as *mut Chunk;
        if fresh.is_null() {
            return Err(Error::OutOfMemory);
        }
        if last
            .next
            .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another writer appended first: use theirs.
            // SAFETY: allocated above with this layout and never shared.
            unsafe { dealloc(fresh as *mut u8, layout) };
        }
    }
}

/// Records `start .. end` (page-aligned, non-empty) until the entry is dropped. Errors:
/// `OutOfMemory` when a new chunk of slots cannot be allocated.
pub fn insert(start: usize, end: usize) -> Result<Entry> {
    assert!(start & LOW_BITS == 0 && end & LOW_BITS == 0 && start < end);
    let slot = claim()?;
    let tag = (GENERATION.fetch_add(1, Ordering::Relaxed) << 1) & TAG_MASK;
    LIVE.fetch_add(1, Ordering::Relaxed);
    slot.end.store(end | tag, Ordering::Relaxed);
    slot.start.store(start | tag | 1, Ordering::Release);
    Ok(Entry { slot })
}

/// Calls `f(start, end)` for every recorded mapping that overlaps `addr .. addr + len`.
/// With nothing recorded this is one load.
#[inline]
pub fn for_each_overlap(addr: usize, len: usize, f: impl FnMut(usize, usize)) {
    if LIVE.load(Ordering::Relaxed) != 0 && len != 0 {
        scan(addr, addr.saturating_add(len), f);
    }
}

#[cold]
fn scan(addr: usize, end: usize, mut f: impl FnMut(usize, usize)) {
    for chunk in chunks() {
        for slot in &chunk.slots {
            if let Some((s, e)) = slot.read() {
                if s < end && addr < e {
                    f(s, e);
                }
            }
        }
    }
}

/// Whether anything is recorded (one load).
#[inline]
pub fn any() -> bool {
    LIVE.load(Ordering::Relaxed) != 0
}

/// Whether any byte of `addr .. addr + len` lies in a recorded mapping.
#[inline]
pub fn overlaps(addr: usize, len: usize) -> bool {
    let mut any = false;
    for_each_overlap(addr, len, |_, _| any = true);
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const PAGE: usize = 4096;

    fn found(addr: usize, len: usize) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for_each_overlap(addr, len, |s, e| v.push((s, e)));
        v
    }

    #[test]
    fn entries_are_found_by_any_byte_until_dropped() {
        // Addresses far from anything another test records.
        let base = 0x7a00_0000_0000usize;
        let a = insert(base, base + 4 * PAGE).unwrap();
        let b = insert(base + 8 * PAGE, base + 9 * PAGE).unwrap();
        assert_eq!(found(base, 1), vec![(base, base + 4 * PAGE)]);
        assert_eq!(found(base + 4 * PAGE - 1, 1), vec![(base, base + 4 * PAGE)]);
        assert!(found(base + 4 * PAGE, 4 * PAGE).is_empty());
        assert_eq!(found(base + 3 * PAGE, 6 * PAGE).len(), 2);
        assert!(found(base, 0).is_empty());
        assert!(found(base - PAGE, PAGE).is_empty());
        assert!(overlaps(base + 8 * PAGE, usize::MAX));
        drop(a);
        assert!(found(base, PAGE).is_empty());
        assert!(overlaps(base + 8 * PAGE, 1));
        drop(b);
        assert!(!overlaps(base, 9 * PAGE));
    }

    #[test]
    fn more_entries_than_a_chunk_holds() {
        let base = 0x7b00_0000_0000usize;
        let entries: Vec<Entry> = (0..3 * SLOTS)
            .map(|i| insert(base + 2 * i * PAGE, base + (2 * i + 1) * PAGE).unwrap())
            .collect();
        for i in 0..3 * SLOTS {
            assert_eq!(
                found(base + 2 * i * PAGE + 5, 1),
                vec![(base + 2 * i * PAGE, base + (2 * i + 1) * PAGE)]
            );
            assert!(found(base + (2 * i + 1) * PAGE, 1).is_empty());
        }
        drop(entries);
        assert!(!overlaps(base, 6 * SLOTS * PAGE));
    }

    #[test]
    fn readers_never_see_a_torn_entry_while_writers_churn() {
        // Every entry written has end - start = size_of(start): a reader that paired one
        // entry's start with another's end would see the rule broken.
        let base = 0x7c00_0000_0000usize;
        let size_of = |start: usize| ((start / PAGE) % 7 + 1) * PAGE;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                std::thread::spawn(move || {
                    for round in 0..20_000usize {
                        let start = base + ((w * 1_000_003 + round * 17) % 4096) * 64 * PAGE;
                        let e = insert(start, start + size_of(start)).unwrap();
                        drop(e);
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for_each_overlap(base, 4096 * 64 * PAGE, |s, e| {
                            assert_eq!(e - s, size_of(s), "torn entry {s:#x}..{e:#x}");
                            seen += 1;
                        });
                    }
                    seen
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert!(!overlaps(base, 4096 * 64 * PAGE));
    }
}
