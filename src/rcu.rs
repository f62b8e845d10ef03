//! Grace periods: per-thread reader records, no shared write on the read side.
//!
//! A reader record belongs to one thread at a time. Its `seq` is odd while the thread is inside
//! a read-side section (holds a kmap or a section) and even outside; the thread bumps it when
//! its outermost hold begins and again when its last hold ends. It is the only store a reader
//! makes and it goes to the reader's own cache line: no global is written, and none but the
//! table is read. A writer that has unpublished something calls [`synchronize`]: it reads every
//! record's `seq` and waits, for each odd one, until it changes. A section that began after the
//! unpublish cannot have seen what was unpublished.
//!
//! Ordering. The reader stores `seq` and then loads the table; the writer stores the table and
//! then loads `seq` (the store-buffering pattern): one side needs a full fence. With
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` the writer pays it for every running thread of
//! the process at once, and readers need only a compiler barrier (liburcu's "memb" flavour).
//! Where membarrier is unavailable (or `PFN_NO_MEMBARRIER` is set, which tests use to cover
//! this path) readers fall back to a real fence.
//!
//! Records are never freed: a thread that exits returns its record to the list for reuse, so a
//! writer may walk the list without a lock. Memory is bounded by the peak number of threads.

use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::tls;

/// Grows a thread's list of held kmaps in steps; the first step is allocated at registration.
const HELD_INITIAL: usize = 16;

#[repr(align(128))]
pub struct Reader {
    /// Odd inside a read-side section. Written only by the owner.
    seq: AtomicU64,
    /// The reader must fence itself: membarrier is unavailable. Read only by the owner.
    fence: AtomicBool,
    in_use: AtomicBool,
    /// Immutable once the record is on the list.
    next: *const Reader,
    /// Page addresses this thread has mapped and not yet released. Owner-only.
    held: UnsafeCell<Vec<usize>>,
}

// SAFETY: `held` is touched only by the thread that owns the record (claimed with `in_use`);
// every other field is atomic or immutable after publication.
unsafe impl Sync for Reader {}

static READERS: AtomicPtr<Reader> = AtomicPtr::new(ptr::null_mut());
/// True when membarrier is unavailable and readers must fence themselves. Copied into each
/// record, so that readers need not read it.
static READER_FENCE: AtomicBool = AtomicBool::new(true);

struct Setup {
    exit_key: libc::pthread_key_t,
}
static SETUP: OnceLock<Option<Setup>> = OnceLock::new();

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

fn setup() -> Option<&'static Setup> {
    SETUP
        .get_or_init(|| {
            let refused = std::env::var_os("PFN_NO_MEMBARRIER").is_some();
            // SAFETY: plain syscalls with integer arguments.
            let registered = !refused
                && unsafe {
                    libc::syscall(
                        libc::SYS_membarrier,
                        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                        0,
                        0,
                    )
                } == 0;
            let works = registered
                && unsafe {
                    libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0)
                } == 0;
            READER_FENCE.store(!works, Ordering::SeqCst);
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is a valid out-pointer; the destructor has the required signature.
            if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
                return None;
            }
            Some(Setup { exit_key: key })
        })
        .as_ref()
}

/// A full fence on every thread of the process that runs right now (or on ours, as fallback).
fn heavy_barrier() {
    if READER_FENCE.load(Ordering::Relaxed) {
        fence(Ordering::SeqCst);
        return;
    }
    // SAFETY: plain syscall; registration happened in `setup`.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
    if rc != 0 {
        // Cannot happen after a successful registration. Should it, readers fence themselves
        // from now on; for this grace period our own fence is the best that can be done.
        READER_FENCE.store(true, Ordering::SeqCst);
        for r in records() {
            r.fence.store(true, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
    }
}

/// Every record ever published, newest first. Records are never freed and `next` never
/// changes after publication, so the walk needs no lock.
fn records() -> impl Iterator<Item = &'static Reader> {
    let mut p = READERS.load(Ordering::Acquire) as *const Reader;
    std::iter::from_fn(move || {
        // SAFETY: null or a published record, which lives for the rest of the process.
        let r = unsafe { p.as_ref() }?;
        p = r.next;
        Some(r)
    })
}

/// Runs at thread exit (pthread key destructor): kmaps still held are released.
extern "C" fn thread_exit(record: *mut libc::c_void) {
    let record = record as *const Reader;
    if record.is_null() {
        return;
    }
    // SAFETY: the key holds this thread's own record, which is never freed.
    let record = unsafe { &*record };
    if tls::get() == record as *const Reader as usize {
        tls::set(0);
    }
    // SAFETY: still the owner.
    unsafe { record.release_all_and_free() };
}

/// The calling thread's record, if it has one.
#[inline(always)]
pub fn current() -> Option<&'static Reader> {
    let p = tls::get() as *const Reader;
    // SAFETY: the slot holds null or this thread's record, which is never freed.
    unsafe { p.as_ref() }
}

/// The calling thread's record, registering the thread on first use. `None`: out of memory.
#[inline(always)]
pub fn current_or_register() -> Option<&'static Reader> {
    match current() {
        Some(r) => Some(r),
        None => register(),
    }
}

#[cold]
fn register() -> Option<&'static Reader> {
    let setup = setup()?;
    crate::fork::install();
    let record = claim_free_record().or_else(new_record)?;
    tls::set(record as *const Reader as usize);
    // SAFETY: the key was created in `setup`; the value is this thread's record.
    unsafe { libc::pthread_setspecific(setup.exit_key, record as *const Reader as *const _) };
    Some(record)
}

fn claim_free_record() -> Option<&'static Reader> {
    records().find(|r| {
        !r.in_use.load(Ordering::Relaxed)
            && r.in_use
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    })
}

fn new_record() -> Option<&'static Reader> {
    let mut held = Vec::new();
    held.try_reserve(HELD_INITIAL).ok()?;
    let layout = std::alloc::Layout::new::<Reader>();
    // SAFETY: Reader has non-zero size.
    let p = unsafe { std::alloc::alloc(layout) } as *mut Reader;
    if p.is_null() {
        return None;
    }
    let mut head = READERS.load(Ordering::Acquire);
    loop {
        // SAFETY: `p` is fresh, properly aligned memory for one Reader.
        unsafe {
            p.write(Reader {
                seq: AtomicU64::new(0),
                fence: AtomicBool::new(READER_FENCE.load(Ordering::SeqCst)),
                in_use: AtomicBool::new(true),
                next: head,
                held: UnsafeCell::new(std::mem::take(&mut held)),
            })
        };
        match READERS.compare_exchange(head, p, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: published records live for the rest of the process.
            Ok(_) => return Some(unsafe { &*p }),
            Err(now) => {
                head = now;
                // SAFETY: not yet published; take the Vec back before rewriting.
                held = unsafe { std::mem::take(&mut *(*p).held.get()) };
            }
        }
    }
}

impl Reader {
    /// Drops every hold, leaves the read-side section, and returns the record for reuse.
    ///
    /// # Safety
    /// The caller is the owner, or the owner no longer exists (thread exit, fork child).
    unsafe fn release_all_and_free(&self) {
        (*self.held.get()).clear();
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + (seq & 1), Ordering::Release);
        self.in_use.store(false, Ordering::Release);
    }

    /// Number of kmaps this thread holds.
    #[inline(always)]
    pub fn depth(&self) -> usize {
        // SAFETY: owner-only access (callers hold the record from `current*`).
        unsafe { (*self.held.get()).len() }
    }

    /// Begins a read-side section if none is open. Call before reading the table.
    #[inline(always)]
    pub fn enter(&self) {
        if self.depth() == 0 {
            // Only this thread writes `seq`: a plain increment, no read-modify-write.
            let seq = self.seq.load(Ordering::Relaxed);
            self.seq.store(seq + 1, Ordering::Relaxed);
            if self.fence.load(Ordering::Relaxed) {
                fence(Ordering::SeqCst);
            } else {
                compiler_fence(Ordering::SeqCst);
            }
        }
    }

    /// Ends the section opened by `enter` if this thread holds nothing.
    #[inline(always)]
    pub fn leave_if_idle(&self) {
        if self.depth() == 0 {
            let seq = self.seq.load(Ordering::Relaxed);
            self.seq.store(seq + 1, Ordering::Release);
        }
    }

    /// Records a held page address. `false`: out of memory (nothing recorded).
    #[inline(always)]
    pub fn hold(&self, page: usize) -> bool {
        // SAFETY: owner-only access.
        let held = unsafe { &mut *self.held.get() };
        if held.len() == held.capacity() && !grow(held) {
            return false;
        }
        held.push(page);
        true
    }

    /// Records a held page address if there is room without allocating; false (nothing
    /// recorded) otherwise. For the allocation-free fast path.
    #[inline(always)]
    pub fn try_hold(&self, page: usize) -> bool {
        // SAFETY: owner-only access.
        let held = unsafe { &mut *self.held.get() };
        if held.len() == held.capacity() {
            return false;
        }
        // SAFETY: capacity checked just above: this cannot reallocate.
        unsafe {
            held.as_mut_ptr().add(held.len()).write(page);
            held.set_len(held.len() + 1);
        }
        true
    }

    /// Releases one hold of `page`. `false`: this thread holds no such page.
    #[inline(always)]
    pub fn release(&self, page: usize) -> bool {
        // SAFETY: owner-only access.
        let held = unsafe { &mut *self.held.get() };
        match held.iter().rposition(|&a| a == page) {
            Some(i) => {
                held.swap_remove(i);
                self.leave_if_idle();
                true
            }
            None => false,
        }
    }
}

/// Makes room for one more hold; false when memory ran out. Out of line: deep nesting is rare.
#[cold]
#[inline(never)]
fn grow(held: &mut Vec<usize>) -> bool {
    held.try_reserve(held.capacity().max(1)).is_ok()
}

/// In a child process after fork(): only the forking thread exists there, so every other
/// thread's record is released; the forking thread keeps its holds. Runs before any other
/// thread can exist in the child, so it may touch every record's owner-only state.
pub(crate) fn after_fork_in_child() {
    // The child has its own address space: register it for membarrier as well (if this
    // fails, heavy_barrier falls back to fences).
    if !READER_FENCE.load(Ordering::Relaxed) {
        // SAFETY: plain syscall.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        };
    }
    let mine = tls::get() as *const Reader;
    for r in records() {
        if !ptr::eq(r, mine) && r.in_use.load(Ordering::Relaxed) {
            // SAFETY: its owner does not exist in this process, which is single-threaded here.
            unsafe { r.release_all_and_free() };
        }
    }
}

/// True when the calling thread holds a kmap (so waiting for readers would wait for itself).
pub fn caller_holds_kmap() -> bool {
    current().is_some_and(|r| r.depth() > 0)
}

/// Waits until every read-side section that could have seen state unpublished before this
/// call has ended. Must not be called by a thread that holds a kmap.
pub fn synchronize() {
    if setup().is_none() {
        // Without a key no thread could ever register, so no reader exists.
        return;
    }
    heavy_barrier();
    for r in records() {
        let seen = r.seq.load(Ordering::Acquire);
        if seen & 1 == 1 {
            let mut waited = Backoff::default();
            while r.seq.load(Ordering::Acquire) == seen {
                waited.pause();
            }
        }
    }
}

/// How a writer waits for a reader: sections are short, so spin briefly; then sleep. Sleeping
/// (not yielding) matters when threads outnumber CPUs: a reader preempted inside its section
/// (often by this very writer's wakeup) gets this CPU at once, and a yield would not give it.
/// Measured with two busy readers on two CPUs: yielding first put p50 at 3.7 ms, sleeping
/// at once at 0.1 ms (bench/bench.c, unregister latency).
#[derive(Default)]
struct Backoff {
    rounds: u32,
}

impl Backoff {
    const SPINS: u32 = 256;

    fn pause(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        if self.rounds < Self::SPINS {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn synchronize_waits_for_a_reader_on_another_thread() {
        let entered = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicUsize::new(0));
        let (e, rel) = (entered.clone(), released.clone());
        let reader = std::thread::spawn(move || {
            let r = current_or_register().unwrap();
            r.enter();
            assert!(r.hold(0x1000));
            e.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            rel.store(1, Ordering::SeqCst);
            assert!(r.release(0x1000));
        });
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        synchronize();
        assert_eq!(
            released.load(Ordering::SeqCst),
            1,
            "returned before the reader left"
        );
        reader.join().unwrap();
    }

    #[test]
    fn exited_thread_releases_its_holds() {
        let addr = std::thread::spawn(|| {
            let r = current_or_register().unwrap();
            r.enter();
            assert!(r.hold(0x2000));
            r as *const Reader as usize
        })
        .join()
        .unwrap();
        // SAFETY: records are never freed.
        let r = unsafe { &*(addr as *const Reader) };
        assert_eq!(r.seq.load(Ordering::SeqCst) & 1, 0);
        synchronize();
    }

    #[test]
    fn release_of_foreign_page_releases_nothing() {
        std::thread::spawn(|| {
            let r = current_or_register().unwrap();
            r.enter();
            assert!(r.hold(0x3000));
            assert!(r.hold(0x3000));
            assert!(!r.release(0x4000));
            assert_eq!(r.depth(), 2);
            assert!(r.release(0x3000));
            assert!(r.release(0x3000));
            assert!(!r.release(0x3000));
            assert_eq!(r.seq.load(Ordering::SeqCst) & 1, 0);
        })
        .join()
        .unwrap();
    }
}
