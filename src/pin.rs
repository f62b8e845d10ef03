//! Long-lived pins on ranges: mainline's get_dev_pagemap / put_dev_pagemap, whose percpu_ref
//! becomes per-thread counters here.
//!
//! Every thread that pins has a directory of counter chunks, one counter pair per range slot
//! (the range's index in the space's bookkeeping). A pin adds one to the pinning thread's
//! `local` count of the range; an unpin on that thread subtracts one from it, and an unpin on
//! any other thread adds one to the pair's `remote` count instead. `local - remote` is exactly
//! the pins the thread took and nobody released yet (never negative), and the pin handle is
//! the pair's address. `local` has one writer, the thread that owns the record (a plain load
//! and store, like the reader's `ctl`: no locked instruction); `remote` is an atomic add. Pin
//! and unpin on the thread that pinned write only that thread's own chunk: no shared cache
//! line. The waiter's side of the store-then-load race with an unpin is the grace-period
//! machinery's: a heavy barrier (membarrier) after it announces itself, and readers that
//! fence themselves where membarrier is missing.
//!
//! A pin is taken inside a read-side section, after finding the range in the forward table. An
//! unregister first unpublishes the range, so pins taken from then on miss it; after its grace
//! period no pin can still be on its way, and the sum of every thread's counter of the slot only
//! falls. The unregister then waits until the sum is zero: it announces itself in [`WAITERS`]
//! (read, never written, by unpins in the common case) and sleeps on a futex that unpins bump
//! while someone waits.
//!
//! Counters outlive their thread (a pin is not thread-bound): a reader record keeps its
//! directory when the thread exits and the record returns to the pool. The next thread to take
//! the record adopts the directory when every counter in it is zero; otherwise the directory is
//! set aside on an orphan list (still summed) and the new thread starts with an orphan whose
//! pins have all been released since (adopted in place: it stays on the list, marked), or a
//! fresh one. Memory is therefore bounded by the threads alive plus the most directories ever
//! orphaned with pins still held at once.

use std::alloc::{alloc_zeroed, Layout};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::errmsg;
use crate::error::{Error, Result};
use crate::rcu::{self, Reader};

/// Counter pairs per chunk; a chunk is one page, its header the first slot it counts and the
/// record of the thread whose pins it counts.
const CELLS: usize = 255;
/// Chunks per directory: range slots up to 522,240 can be pinned.
const CHUNKS: usize = 2048;
/// Range slots a directory covers.
pub(crate) const MAX_SLOTS: u64 = (CELLS * CHUNKS) as u64;

/// One thread's pins of one range: taken minus released on that thread, and released on
/// other threads.
#[repr(C)]
pub struct Cell {
    local: AtomicI64,
    remote: AtomicI64,
}

impl Cell {
    fn held(&self) -> i64 {
        self.local.load(Ordering::SeqCst) - self.remote.load(Ordering::SeqCst)
    }
}

#[repr(C, align(4096))]
struct Chunk {
    base: u64,
    /// The reader record whose thread writes `local` of every cell here.
    owner: AtomicPtr<Reader>,
    cells: [Cell; CELLS],
}
const _: () = assert!(std::mem::size_of::<Chunk>() == 4096);

struct Dir {
    chunks: [AtomicPtr<Chunk>; CHUNKS],
    /// The owner number (`Reader::owner`) of the thread the directory counts for.
    owner: AtomicU64,
    /// Orphan list link.
    next: AtomicPtr<Dir>,
    /// On the orphan list but adopted by a thread again (counted through its record, not
    /// through the list). Once on the list a directory stays there.
    adopted: AtomicBool,
}

/// Directories of threads that exited with a pin still held; never freed.
static ORPHANS: AtomicPtr<Dir> = AtomicPtr::new(ptr::null_mut());
/// Unregisters (and device frees) waiting for pins to drop.
static WAITERS: AtomicU32 = AtomicU32::new(0);
/// Bumped by unpins while someone waits (a futex word).
static WAKE: AtomicU32 = AtomicU32::new(0);

/// A pin: the pinning thread's counters of the range. Released with [`unpin`].
pub type Pin = &'static Cell;

fn alloc<T>() -> *mut T {
    // SAFETY: non-zero size; all-zero bytes are valid atomics and null pointers.
    unsafe { alloc_zeroed(Layout::new::<T>()) as *mut T }
}

/// Every counter of `d` is zero.
fn all_zero(d: &Dir) -> bool {
    d.chunks.iter().all(|c| {
        // SAFETY: chunks are never freed.
        unsafe { c.load(Ordering::Acquire).as_ref() }
            .is_none_or(|c| c.cells.iter().all(|x| x.held() == 0))
    })
}

/// The calling thread's directory when it has one of its own.
fn own_dir(r: &Reader) -> Option<&'static Dir> {
    // SAFETY: directories are never freed.
    let d = unsafe { (r.pins.load(Ordering::Acquire) as *const Dir).as_ref() }?;
    (d.owner.load(Ordering::Relaxed) == r.owner.load(Ordering::Relaxed)).then_some(d)
}

/// The calling thread's directory, adopting or setting aside one a previous owner of the
/// record left, or allocating one. None: out of memory.
#[cold]
fn claim_dir(r: &Reader) -> Option<&'static Dir> {
    let me = r.owner.load(Ordering::Relaxed);
    // SAFETY: directories are never freed.
    if let Some(old) = unsafe { (r.pins.load(Ordering::Acquire) as *const Dir).as_ref() } {
        if all_zero(old) {
            old.owner.store(me, Ordering::Relaxed);
            return Some(old);
        }
    }
    // An orphan whose pins have all been released is adopted, so that threads that exit
    // holding pins do not make memory grow: it stays on the list, marked adopted. It is
    // counted by neither until `r.pins` holds it, but it holds no pin, and no pin of a range
    // being waited for can be taken meanwhile (that range was unpublished before the wait).
    let d = match adopt_orphan(r, me) {
        Some(d) => d,
        None => {
            let d = alloc::<Dir>();
            // SAFETY: fresh, or null.
            unsafe { d.as_ref() }?.owner.store(me, Ordering::Relaxed);
            d
        }
    };
    // SAFETY: `d` is a directory (fresh or adopted), never freed.
    let new = unsafe { &*d };
    // The record's old directory holds pins (or it would have been kept above): from now on
    // the orphan list counts it. It is listed before `r.pins` stops pointing at it (counted
    // twice for a moment, never not at all).
    let old = r.pins.load(Ordering::Acquire) as *mut Dir;
    // SAFETY: directories are never freed.
    if let Some(o) = unsafe { old.as_ref() } {
        if o.adopted.load(Ordering::Acquire) {
            // Already on the list.
            o.adopted.store(false, Ordering::Release);
        } else {
            push_orphan(old);
        }
    }
    r.pins.store(d as *mut u8, Ordering::Release);
    Some(new)
}

/// Takes an orphan directory whose counters are all zero for the thread of `r` (owner
/// number `me`), when there is one.
fn adopt_orphan(r: &Reader, me: u64) -> Option<*mut Dir> {
    let mut o = ORPHANS.load(Ordering::Acquire);
    // SAFETY: orphans are never freed.
    while let Some(d) = unsafe { o.as_ref() } {
        // Zero stays zero: an orphan has no owner thread to pin, and releases only lower it.
        if !d.adopted.load(Ordering::Acquire)
            && all_zero(d)
            && d.adopted
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            d.owner.store(me, Ordering::Relaxed);
            for c in &d.chunks {
                // SAFETY: chunks are never freed.
                if let Some(c) = unsafe { c.load(Ordering::Acquire).as_ref() } {
                    c.owner
                        .store(r as *const Reader as *mut Reader, Ordering::Release);
                }
            }
            return Some(o);
        }
        o = d.next.load(Ordering::Acquire);
    }
    None
}

/// Puts `old` on the orphan list (once: a directory is never listed twice).
fn push_orphan(old: *mut Dir) {
    let mut head = ORPHANS.load(Ordering::Acquire);
    loop {
        // SAFETY: `old` is a directory, never freed; no one else links it.
        unsafe { (*old).next.store(head, Ordering::Relaxed) };
        match ORPHANS.compare_exchange(head, old, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
}

/// The counters of `slot` in `d` (the directory of `r`'s thread), allocating its chunk. None:
/// out of memory.
fn cell(d: &Dir, r: &Reader, slot: u32) -> Option<&'static Cell> {
    let (c, i) = (slot as usize / CELLS, slot as usize % CELLS);
    let entry = d.chunks.get(c)?;
    let mut chunk = entry.load(Ordering::Acquire);
    if chunk.is_null() {
        chunk = alloc::<Chunk>();
        if chunk.is_null() {
            return None;
        }
        // SAFETY: fresh. Only the owner thread adds chunks to its directory.
        unsafe {
            (*chunk).base = (c * CELLS) as u64;
            (*chunk)
                .owner
                .store(r as *const Reader as *mut Reader, Ordering::Relaxed);
        }
        entry.store(chunk, Ordering::Release);
    }
    // SAFETY: chunks are never freed.
    Some(unsafe { &(*chunk).cells[i] })
}

/// The counters of `slot` in `d`, when its chunk exists.
fn cell_if_any(d: &Dir, slot: u32) -> Option<&'static Cell> {
    let (c, i) = (slot as usize / CELLS, slot as usize % CELLS);
    // SAFETY: chunks are never freed.
    let chunk = unsafe { d.chunks.get(c)?.load(Ordering::Acquire).as_ref() }?;
    Some(&chunk.cells[i])
}

/// Takes a pin on range slot `slot` for the calling thread, whose reader `r` is inside the
/// read-side section in which it found the range live.
pub fn take(r: &Reader, slot: u32) -> Result<Pin> {
    if u64::from(slot) >= MAX_SLOTS {
        return Err(errmsg::with(
            Error::Overflow,
            format_args!("the range's slot {slot} is past the {MAX_SLOTS} that pins can count"),
        ));
    }
    let dir = match own_dir(r) {
        Some(d) => d,
        None => claim_dir(r).ok_or_else(oom)?,
    };
    let c = cell(dir, r, slot).ok_or_else(oom)?;
    add_local(c, 1);
    Ok(c)
}

/// [`take`] when the thread's counters for `slot` exist already: allocates nothing, cannot
/// fail or panic.
#[inline(always)]
pub fn take_fast(r: &Reader, slot: u32) -> Option<Pin> {
    let c = cell_if_any(own_dir(r)?, slot)?;
    add_local(c, 1);
    Some(c)
}

/// Changes `local` by `n`: its one writer is the thread that owns the chunk's record.
#[inline(always)]
fn add_local(c: &Cell, n: i64) {
    c.local
        .store(c.local.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

fn chunk_of(p: Pin) -> &'static Chunk {
    // SAFETY: a pin is a cell inside a chunk (page-aligned), which is never freed.
    unsafe { &*((p as *const Cell as usize & !4095) as *const Chunk) }
}

fn oom() -> Error {
    errmsg::with(
        Error::OutOfMemory,
        format_args!("no memory for this thread's pin counters"),
    )
}

/// Releases a pin (any thread). False: the counter was already zero (a pin released twice):
/// nothing changed.
#[inline(always)]
pub fn unpin(p: Pin) -> bool {
    let owner = chunk_of(p).owner.load(Ordering::Relaxed);
    match rcu::current() {
        Some(r) if ptr::eq(r, owner) => {
            // The owner: a plain decrement of its own line.
            let local = p.local.load(Ordering::Relaxed);
            if local - p.remote.load(Ordering::Relaxed) <= 0 {
                return false;
            }
            p.local.store(local - 1, Ordering::Relaxed);
            // Store, then load WAITERS: the waiter's heavy barrier (or this fence) orders them.
            r.barrier();
        }
        _ => {
            let remote = p.remote.fetch_add(1, Ordering::SeqCst) + 1;
            if p.local.load(Ordering::SeqCst) - remote < 0 {
                p.remote.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
        }
    }
    if WAITERS.load(Ordering::Relaxed) != 0 {
        wake_waiters();
    }
    true
}

#[cold]
fn wake_waiters() {
    WAKE.fetch_add(1, Ordering::SeqCst);
    rcu::futex(&WAKE, libc::FUTEX_WAKE, i32::MAX as u32, None);
}

/// Pins of range slot `slot` not yet released, summed over every thread (living or not).
pub fn count(slot: u32) -> i64 {
    let mut sum = 0;
    let mut add = |d: &Dir| {
        if let Some(c) = cell_if_any(d, slot) {
            sum += c.held();
        }
    };
    for r in rcu::records() {
        // SAFETY: directories are never freed.
        if let Some(d) = unsafe { (r.pins.load(Ordering::Acquire) as *const Dir).as_ref() } {
            add(d);
        }
    }
    let mut o = ORPHANS.load(Ordering::Acquire);
    // SAFETY: orphans are never freed.
    while let Some(d) = unsafe { o.as_ref() } {
        // An adopted one is counted through its record (or, while it is being orphaned
        // again, was un-adopted before the record let go of it).
        if !d.adopted.load(Ordering::Acquire) {
            add(d);
        }
        o = d.next.load(Ordering::Acquire);
    }
    sum
}

/// Pins of range slot `slot` that the calling thread took and nobody released yet.
pub fn held_here(slot: u32) -> i64 {
    rcu::current()
        .and_then(own_dir)
        .and_then(|d| cell_if_any(d, slot))
        .map_or(0, |c| c.held())
}

/// Waits until range slot `slot` has no pins. The caller has unpublished the range and waited
/// for the grace period that followed, so no new pin of it can appear.
pub fn wait_unpinned(slot: u32) {
    if count(slot) == 0 {
        return;
    }
    WAITERS.fetch_add(1, Ordering::SeqCst);
    // Every unpin from now on sees WAITERS, or its decrement is visible to the count below.
    rcu::heavy_barrier();
    loop {
        let seen = WAKE.load(Ordering::SeqCst);
        if count(slot) == 0 {
            break;
        }
        // Woken by the unpin that matters; the timeout only bounds the cost of a wake-up lost
        // to a bug, as the grace period's own wait does.
        rcu::futex(
            &WAKE,
            libc::FUTEX_WAIT,
            seen,
            Some(std::time::Duration::from_millis(10)),
        );
    }
    WAITERS.fetch_sub(1, Ordering::SeqCst);
}

/// In a fork child: the only thread is the forking one, which waits for nothing.
pub(crate) fn after_fork_in_child() {
    WAITERS.store(0, Ordering::SeqCst);
}

/// Unregisters (and device frees) now waiting for pins to drop.
pub fn waiters() -> u32 {
    WAITERS.load(Ordering::SeqCst)
}
