//! Grace periods: reader records with one control word each, no shared write on the read side.
//!
//! Every thread that maps or opens a section has a reader record; so does every open
//! object-bound section (a section that belongs to a value the caller passes between threads,
//! like the kernel's `srcu_down_read`). A record's control word `ctl` holds a nesting count in
//! its low [`NEST_BITS`] bits and a sequence number above them: entering only counts up, and
//! leaving the outermost section also advances the sequence number. It is the one word a reader
//! writes, with a plain load and store in its own cache line, so a signal handler that
//! interrupts any reader operation on the same thread and leaves balanced leaves it consistent
//! (at worst the sequence number steps back, which only makes a writer wait longer).
//!
//! A writer that has unpublished something waits for a grace period: it takes a snapshot of
//! every record whose nesting count is non-zero, then waits until each of those has left the
//! section it was in (count zero, or another sequence number). It waits for all of them at once:
//! it spins briefly, then flags the records it still waits for (a word in the reader's own
//! line) and sleeps on a futex; a reader that leaves its outermost section checks its own flag
//! and wakes the writer only when it is set, so the common case writes nothing shared.
//!
//! Ordering. The reader stores `ctl` and then loads the table; the writer stores the table and
//! then loads `ctl` (the store-buffering pattern): one side needs a full fence. With
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` the writer pays it for every running thread of
//! the process at once, and readers need only a compiler barrier (liburcu's "memb" flavour).
//! Where membarrier cannot be registered at start-up, every reader fences itself. Should a
//! registered membarrier fail later (it may return ENOMEM), the writer retries, then falls back
//! to the global membarrier and to a TLB-shootdown barrier; it never completes a grace period on
//! its local fence alone while readers rely on compiler barriers.
//!
//! Concurrent writers share grace periods: one runs at a time, and a writer whose unpublish
//! happened before a grace period began needs nothing more once that one has ended
//! (`snapshot`/`wait_for`, like the kernel's `rcu_seq`).
//!
//! Records are never freed: a thread that exits returns its record to a pool for reuse, so a
//! writer may walk the list without a lock. Memory is bounded by the peak number of threads and
//! of object-bound sections open at once.

use std::ptr;
use std::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::holds::Holds;
use crate::tls;

/// Bits of `ctl` that count nested holds and sections.
pub const NEST_BITS: u32 = 24;
pub const NEST_MASK: u64 = (1 << NEST_BITS) - 1;
/// One step of the sequence number above the nesting count.
pub const SEQ_ONE: u64 = 1 << NEST_BITS;
pub const SIGNAL_WAITING: u64 = 1;
pub const SIGNAL_FENCE: u64 = 2;
/// Nesting left free for kmaps above the deepest allowed sections (the inline fast paths never
/// check for overflow; they stop at the inline holds).
const NEST_HEADROOM: u64 = 1 << 16;

/// What a record serves.
pub const KIND_THREAD: u32 = 0;
pub const KIND_OBJECT: u32 = 1;

const STATE_FREE: u32 = 0;
const STATE_USED: u32 = 1;
/// Owned by a thread that does not exist in this process (a fork child): never reused, since
/// its hold stack may have been caught mid-change at the fork.
const STATE_ABANDONED: u32 = 2;

/// How many freed object records a thread keeps for its next opens before returning them.
const OBJECT_CACHE: usize = 16;

/// One reader: a thread, or an open object-bound section.
///
/// The fields up to and including `holds` are read and written by the header's inline fast
/// paths; their layout is part of the C ABI (`struct pfn_reader` in the header's trailer),
/// checked by the assertions below.
#[repr(C, align(128))]
pub struct Reader {
    /// Nesting count (low bits) and sequence number (high bits). Written by the owner only.
    pub ctl: AtomicU64,
    /// [`SIGNAL_WAITING`]: a writer sleeps waiting for this reader to leave its section (set
    /// and cleared by writers, cleared by the reader when it wakes one). [`SIGNAL_FENCE`]:
    /// membarrier is unavailable and this reader fences itself (fixed at creation). One word,
    /// so that the common leave (neither) tests it once.
    pub signal: AtomicU64,
    /// Open thread-bound sections (owner only).
    pub sections: AtomicU64,
    /// The innermost section a `PFN_SECTION_SCOPE` bound to this thread (owner only).
    pub current: AtomicUsize,
    pub kind: u32,
    state: AtomicU32,
    /// kmaps held (threads only).
    pub holds: Holds,
    // ---- private from here on ----
    /// Immutable once the record is on the list.
    next: *const Reader,
    /// Pool link while free; object-cache link while cached.
    pool_next: AtomicPtr<Reader>,
    tid: AtomicI32,
    /// A writer's snapshot of `ctl` (touched only under the grace-period lock).
    gp_seen: AtomicU64,
    gp_pending: AtomicBool,
    gp_flagged: AtomicBool,
    /// Freed object records this thread keeps (threads only; owner only).
    cache_head: AtomicPtr<Reader>,
    cache_len: AtomicUsize,
    /// The thread's last failure's message (see `errmsg`).
    message: crate::errmsg::Message,
    /// The thread's pin counters (see `pin`; opaque here). They outlive the thread: a record
    /// taken from the pool keeps the counters of the thread that had it before.
    pub pins: AtomicPtr<u8>,
    /// Which thread owns the record now: a number no other thread setting up ever gets.
    pub owner: AtomicU64,
}

// The C header's `struct pfn_reader` mirrors these offsets.
const _: () = {
    assert!(std::mem::offset_of!(Reader, ctl) == 0);
    assert!(std::mem::offset_of!(Reader, signal) == 8);
    assert!(std::mem::offset_of!(Reader, sections) == 16);
    assert!(std::mem::offset_of!(Reader, current) == 24);
    assert!(std::mem::offset_of!(Reader, kind) == 32);
    assert!(std::mem::offset_of!(Reader, holds) == 40);
    assert!(std::mem::offset_of!(Holds, len) == 0);
    assert!(std::mem::offset_of!(Holds, inline_start) == 24);
    assert!(std::mem::offset_of!(Holds, inline_end) == 24 + 8 * crate::holds::INLINE);
};

// SAFETY: owner-only fields are touched by the owning thread (and its signal handlers); the
// rest are atomics or immutable after publication.
unsafe impl Sync for Reader {}
unsafe impl Send for Reader {}

static READERS: AtomicPtr<Reader> = AtomicPtr::new(ptr::null_mut());
/// Decided once at set-up, before any record exists.
static READER_FENCE: AtomicBool = AtomicBool::new(true);
static DEBUG: AtomicBool = AtomicBool::new(false);

struct Pool(*mut Reader);
// SAFETY: the pointers are records, which live for the whole process.
unsafe impl Send for Pool {}
static THREAD_POOL: Mutex<Pool> = Mutex::new(Pool(ptr::null_mut()));
static OBJECT_POOL: Mutex<Pool> = Mutex::new(Pool(ptr::null_mut()));

struct Setup {
    exit_key: libc::pthread_key_t,
    /// Test-only (PFN_TEST_MEMBARRIER_FAIL=n): the first n membarrier calls report failure.
    membarrier_failures: AtomicU64,
    barrier_page: usize,
}
static SETUP: OnceLock<Option<Setup>> = OnceLock::new();

const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// An environment variable, read without allocating.
pub(crate) fn env_flag(name: &std::ffi::CStr) -> Option<u64> {
    // SAFETY: a NUL-terminated name; getenv returns NULL or a NUL-terminated string.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: as above.
    let s = unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes();
    Some(
        std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    )
}

fn membarrier(cmd: libc::c_long) -> bool {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

fn setup() -> Option<&'static Setup> {
    SETUP
        .get_or_init(|| {
            let refused = env_flag(c"PFN_NO_MEMBARRIER").is_some();
            let works = !refused
                && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
                && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
            READER_FENCE.store(!works, SeqCst);
            DEBUG.store(env_flag(c"PFN_DEBUG").is_some_and(|v| v != 0), SeqCst);
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is a valid out-pointer; the destructor has the required signature.
            if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
                return None;
            }
            // SAFETY: an anonymous page for the TLB-shootdown barrier (see heavy_barrier).
            let page = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            Some(Setup {
                exit_key: key,
                membarrier_failures: AtomicU64::new(
                    env_flag(c"PFN_TEST_MEMBARRIER_FAIL").unwrap_or(0),
                ),
                barrier_page: if page == libc::MAP_FAILED {
                    0
                } else {
                    page as usize
                },
            })
        })
        .as_ref()
}

/// True when PFN_DEBUG asked for misuse to be reported.
pub fn debug() -> bool {
    DEBUG.load(Relaxed)
}

/// Every record ever published, newest first. Records are never freed and `next` never
/// changes after publication, so the walk needs no lock.
pub(crate) fn records() -> impl Iterator<Item = &'static Reader> {
    let mut p = READERS.load(Acquire) as *const Reader;
    std::iter::from_fn(move || {
        // SAFETY: null or a published record, which lives for the rest of the process.
        let r = unsafe { p.as_ref() }?;
        p = r.next;
        Some(r)
    })
}

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool_pop(pool: &'static Mutex<Pool>) -> Option<&'static Reader> {
    let mut head = lock(pool);
    // SAFETY: pool entries are published records.
    let r = unsafe { head.0.as_ref() }?;
    head.0 = r.pool_next.load(Relaxed);
    r.state.store(STATE_USED, Relaxed);
    Some(r)
}

fn pool_push(pool: &'static Mutex<Pool>, r: &'static Reader) {
    let mut head = lock(pool);
    r.state.store(STATE_FREE, Relaxed);
    r.pool_next.store(head.0, Relaxed);
    head.0 = r as *const Reader as *mut Reader;
}

/// A new record on the list. None: out of memory.
fn new_record(kind: u32) -> Option<&'static Reader> {
    let layout = std::alloc::Layout::new::<Reader>();
    // SAFETY: Reader has non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Reader;
    if p.is_null() {
        return None;
    }
    let mut head = READERS.load(Acquire);
    loop {
        // SAFETY: `p` is fresh, properly aligned memory for one Reader.
        unsafe {
            p.write(Reader {
                ctl: AtomicU64::new(0),
                signal: AtomicU64::new(if READER_FENCE.load(SeqCst) {
                    SIGNAL_FENCE
                } else {
                    0
                }),
                sections: AtomicU64::new(0),
                current: AtomicUsize::new(0),
                kind,
                state: AtomicU32::new(STATE_USED),
                holds: Holds::default(),
                next: head,
                pool_next: AtomicPtr::new(ptr::null_mut()),
                tid: AtomicI32::new(0),
                gp_seen: AtomicU64::new(0),
                gp_pending: AtomicBool::new(false),
                gp_flagged: AtomicBool::new(false),
                cache_head: AtomicPtr::new(ptr::null_mut()),
                cache_len: AtomicUsize::new(0),
                message: Default::default(),
                pins: AtomicPtr::new(ptr::null_mut()),
                owner: AtomicU64::new(0),
            })
        };
        match READERS.compare_exchange(head, p, AcqRel, Acquire) {
            // SAFETY: published records live for the rest of the process.
            Ok(_) => return Some(unsafe { &*p }),
            Err(now) => head = now,
        }
    }
}

/// Why a reader could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    OutOfMemory,
    /// A signal handler interrupted this thread's own set-up.
    Interrupted,
}

/// The calling thread's record, if it has one.
#[inline(always)]
pub fn current() -> Option<&'static Reader> {
    let p = tls::get() as *const Reader;
    // SAFETY: the slot holds null or this thread's record, which is never freed.
    unsafe { p.as_ref() }
}

/// The calling thread's record, setting the thread up on first use.
#[inline(always)]
pub fn current_or_register() -> Result<&'static Reader, SetupError> {
    match current() {
        Some(r) => Ok(r),
        None => register_thread(),
    }
}

#[cold]
#[inline(never)]
fn register_thread() -> Result<&'static Reader, SetupError> {
    if tls::registering() {
        return Err(SetupError::Interrupted);
    }
    tls::set_registering(true);
    let result = (|| {
        let setup = setup().ok_or(SetupError::OutOfMemory)?;
        let r = pool_pop(&THREAD_POOL)
            .or_else(|| new_record(KIND_THREAD))
            .ok_or(SetupError::OutOfMemory)?;
        // SAFETY: the key was created in `setup`; the value is this thread's record.
        if unsafe { libc::pthread_setspecific(setup.exit_key, r as *const Reader as *const _) } != 0
        {
            pool_push(&THREAD_POOL, r);
            return Err(SetupError::OutOfMemory);
        }
        static OWNERS: AtomicU64 = AtomicU64::new(0);
        r.owner.store(OWNERS.fetch_add(1, Relaxed) + 1, Relaxed);
        // SAFETY: plain syscall.
        r.tid
            .store(unsafe { libc::syscall(libc::SYS_gettid) } as i32, Relaxed);
        tls::set(r as *const Reader as usize);
        Ok(r)
    })();
    tls::set_registering(false);
    result
}

/// Runs at thread exit (pthread key destructor): holds and sections still open are released.
extern "C" fn thread_exit(record: *mut libc::c_void) {
    let record = record as *const Reader;
    if record.is_null() {
        return;
    }
    // SAFETY: the key holds this thread's own record, which is never freed.
    let r: &'static Reader = unsafe { &*record };
    if tls::get() == r as *const Reader as usize {
        tls::set(0);
    }
    let holds = r.holds.len();
    let sections = r.sections.load(Relaxed);
    if debug() && holds + sections as usize > 0 {
        report(format_args!(
            "thread {} exited holding {} kmap(s) and {} read section(s){}",
            r.tid.load(Relaxed),
            holds,
            sections,
            HeldPages(r)
        ));
    }
    r.reset();
    // Cached object records go back to the shared pool.
    let mut p = r.cache_head.swap(ptr::null_mut(), Relaxed);
    r.cache_len.store(0, Relaxed);
    // SAFETY: cached entries are published records.
    while let Some(o) = unsafe { p.as_ref() } {
        p = o.pool_next.load(Relaxed);
        pool_push(&OBJECT_POOL, o);
    }
    pool_push(&THREAD_POOL, r);
}

/// Formats as ": kmaps of 0x..., 0x... (newest first)" for the newest four kmaps a reader
/// holds, or as nothing when it holds none.
pub struct HeldPages<'a>(pub &'a Reader);

impl std::fmt::Display for HeldPages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holds = &self.0.holds;
        for (i, a) in holds.newest(4).enumerate() {
            write!(f, "{}{a:#x}", if i == 0 { "; kmaps of " } else { ", " })?;
        }
        if holds.len() > 4 {
            write!(f, ", ...")?;
        }
        if !holds.is_empty() {
            write!(f, " (newest first)")?;
        }
        Ok(())
    }
}

/// Writes one line to stderr for the debug mode (PFN_DEBUG). Allocates nothing (a stack
/// buffer; longer lines are cut), so misuse in a signal handler can be reported too.
pub fn report(args: std::fmt::Arguments<'_>) {
    struct Buf {
        bytes: [u8; 512],
        len: usize,
    }
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let n = s.len().min(self.bytes.len() - 1 - self.len);
            self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut line = Buf {
        bytes: [0; 512],
        len: 0,
    };
    let _ = std::fmt::Write::write_fmt(&mut line, format_args!("libpfn: {args}"));
    line.bytes[line.len] = b'\n';
    // SAFETY: writing our own buffer to fd 2.
    unsafe { libc::write(2, line.bytes.as_ptr() as *const _, line.len + 1) };
}

impl Reader {
    /// What a reader does between a store and a load a writer must see in order: a compiler
    /// barrier when the writer's heavy barrier covers it, else a full fence.
    #[inline(always)]
    pub fn barrier(&self) {
        if self.signal.load(Relaxed) & SIGNAL_FENCE != 0 {
            fence(SeqCst);
        }
        compiler_fence(SeqCst);
    }

    /// Enters a read-side section (or nests one level deeper). Call before reading anything a
    /// writer may unpublish. The caller keeps the nesting count below its limit.
    #[inline(always)]
    pub fn enter(&self) {
        let c = self.ctl.load(Relaxed);
        self.ctl.store(c + 1, Relaxed);
        self.barrier();
    }

    /// Leaves one level; leaving the outermost advances the sequence number and wakes a
    /// writer that waits for this reader.
    #[inline(always)]
    pub fn leave(&self) {
        let c = self.ctl.load(Relaxed);
        // The count is at least 1 here: it is 1 exactly when bits 1..23 are clear.
        if c & (NEST_MASK & !1) != 0 {
            self.ctl.store(c - 1, Release);
            return;
        }
        self.ctl.store(c - 1 + SEQ_ONE, Release);
        compiler_fence(SeqCst);
        if self.signal.load(Relaxed) != 0 {
            self.after_outermost();
        }
    }

    /// Leaves one level without waking a writer (a failed fast path, whose slow path leaves
    /// again properly).
    #[inline(always)]
    pub fn leave_quietly(&self) {
        let c = self.ctl.load(Relaxed);
        let outermost = (c & (NEST_MASK & !1) == 0) as u64;
        self.ctl.store(c - 1 + outermost * SEQ_ONE, Release);
    }

    /// The rare part of leaving the outermost section: fence mode, or a writer to wake.
    #[cold]
    #[inline(never)]
    fn after_outermost(&self) {
        fence(SeqCst);
        if self.signal.load(Relaxed) & SIGNAL_WAITING != 0 {
            wake(self);
        }
    }

    /// Nesting depth (kmaps + sections of this thread).
    pub fn nesting(&self) -> u64 {
        self.ctl.load(Relaxed) & NEST_MASK
    }

    /// True when this thread holds a kmap or an open section (waiting would wait for itself).
    pub fn is_reading(&self) -> bool {
        self.nesting() != 0
    }

    /// The thread's last failure's message.
    pub fn message(&self) -> &crate::errmsg::Message {
        &self.message
    }

    pub fn tid(&self) -> i32 {
        self.tid.load(Relaxed)
    }

    /// Room for `n` more levels below the nesting limit.
    pub fn has_room(&self, n: u64) -> bool {
        self.nesting() + n < NEST_MASK - NEST_HEADROOM
    }

    /// Opens a thread-bound section; returns its depth. Cannot fail while the nesting count
    /// has room (checked by the caller with `has_room`).
    pub fn open_section(&self) -> u64 {
        self.enter();
        let d = self.sections.load(Relaxed) + 1;
        self.sections.store(d, Relaxed);
        d
    }

    /// Closes the innermost thread-bound section if its depth is `depth` (any depth when None).
    /// False: no such section is open (nothing changes).
    pub fn close_section(&self, depth: Option<u64>) -> bool {
        let d = self.sections.load(Relaxed);
        if d == 0 || depth.is_some_and(|want| want != d) {
            return false;
        }
        self.sections.store(d - 1, Relaxed);
        compiler_fence(SeqCst);
        self.leave();
        true
    }

    /// Forgets every hold and section and leaves the read side (thread exit, fork child).
    fn reset(&self) {
        self.holds.clear();
        self.sections.store(0, Relaxed);
        self.current.store(0, Relaxed);
        let c = self.ctl.load(Relaxed);
        self.ctl.store((c & !NEST_MASK) + SEQ_ONE, Release);
        fence(SeqCst);
        if self.signal.load(Relaxed) & SIGNAL_WAITING != 0 {
            wake(self);
        }
    }
}

/// Sets up the calling thread ahead of time, so that later reader calls on it allocate nothing
/// and are async-signal-safe.
pub fn thread_init() -> Result<&'static Reader, SetupError> {
    current_or_register()
}

/// An open object-bound section: the record and the control word it was opened with.
#[derive(Clone, Copy)]
pub struct ObjectSection {
    pub record: &'static Reader,
    pub token: u64,
}

/// Opens a section that belongs to the returned value instead of the calling thread: any
/// thread may close it, exactly once. Costs no shared write when the thread has a cached
/// record. Errors: out of memory for the first record.
pub fn open_object_section() -> Result<ObjectSection, SetupError> {
    if let Some(o) = open_object_section_cached() {
        return Ok(o);
    }
    // Set up the opening thread, so that its closes can cache records for it.
    let me = current_or_register()?;
    let r = pool_pop(&OBJECT_POOL)
        .or_else(|| new_record(KIND_OBJECT))
        .ok_or(SetupError::OutOfMemory)?;
    Ok(start_object_section(r, me))
}

/// [`open_object_section`] from a record this thread keeps cached: no lock, no allocation,
/// no shared write. None: the thread is not set up or keeps none.
#[inline]
pub fn open_object_section_cached() -> Option<ObjectSection> {
    let me = current()?;
    let cached = me.cache_head.load(Relaxed);
    // SAFETY: cache entries are published records.
    let r = unsafe { cached.as_ref() }?;
    me.cache_head.store(r.pool_next.load(Relaxed), Relaxed);
    me.cache_len.store(me.cache_len.load(Relaxed) - 1, Relaxed);
    Some(start_object_section(r, me))
}

/// Opens `r` for the thread `me`, recorded as its opener (see `after_fork_in_child`).
#[inline]
fn start_object_section(r: &'static Reader, me: &Reader) -> ObjectSection {
    r.tid.store(me.tid.load(Relaxed), Relaxed);
    let c = r.ctl.load(Relaxed);
    let token = (c & !NEST_MASK) + SEQ_ONE + 1;
    r.ctl.store(token, Relaxed);
    // (A new sequence number on open as well: a stale section value of this record never
    // matches the token of a later open.)
    // The opener runs now, so membarrier covers this store as it does a thread's.
    r.barrier();
    ObjectSection { record: r, token }
}

/// What closing an object-bound section did.
pub enum Closed {
    /// Closed; its record is kept in this thread's cache for its next open (no lock taken).
    Cached,
    /// Closed; hand the record to [`release_object_record`] (which takes the pool lock).
    Release(&'static Reader),
    /// Not open (closed already, or never opened with this token): nothing changed.
    NotOpen,
}

/// Closes an object-bound section from any thread.
pub fn close_object_section(s: ObjectSection) -> Closed {
    let r = s.record;
    if r.kind != KIND_OBJECT
        || r.ctl
            .compare_exchange(s.token, s.token - 1 + SEQ_ONE, SeqCst, Relaxed)
            .is_err()
    {
        return Closed::NotOpen;
    }
    if r.signal.load(SeqCst) & SIGNAL_WAITING != 0 {
        wake(r);
    }
    match current() {
        Some(me) if me.cache_len.load(Relaxed) < OBJECT_CACHE => {
            r.pool_next.store(me.cache_head.load(Relaxed), Relaxed);
            me.cache_head
                .store(r as *const Reader as *mut Reader, Relaxed);
            me.cache_len.store(me.cache_len.load(Relaxed) + 1, Relaxed);
            Closed::Cached
        }
        _ => Closed::Release(r),
    }
}

/// Returns the record of a closed object-bound section to the shared pool.
pub fn release_object_record(r: &'static Reader) {
    pool_push(&OBJECT_POOL, r);
}

// ---- the writer side ----

static GP_SEQ: AtomicU64 = AtomicU64::new(0);
static GP_LOCK: GpLock = GpLock(AtomicU32::new(0));

/// The lock that lets one grace period run at a time. Not std's Mutex: a fork child must be
/// able to reset it (fork does not wait for a grace period, which may be waiting for the
/// forking thread itself).
struct GpLock(AtomicU32);

struct GpGuard;

impl GpLock {
    fn lock(&self) -> GpGuard {
        if self.0.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
            while self.0.swap(2, Acquire) != 0 {
                futex(&self.0, libc::FUTEX_WAIT, 2, None);
            }
        }
        GpGuard
    }
}

impl Drop for GpGuard {
    fn drop(&mut self) {
        if GP_LOCK.0.swap(0, Release) == 2 {
            futex(&GP_LOCK.0, libc::FUTEX_WAKE, 1, None);
        }
    }
}
static GP_FUTEX: AtomicU32 = AtomicU32::new(0);

/// A point a grace period must reach for everything unpublished before this call to be free
/// of readers. Call after unpublishing.
pub fn snapshot() -> u64 {
    fence(SeqCst);
    let s = GP_SEQ.load(SeqCst);
    (s + 3) & !1
}

/// True when the grace period `target` (from [`snapshot`]) has completed.
pub fn completed(target: u64) -> bool {
    GP_SEQ.load(Acquire).wrapping_sub(target) as i64 >= 0
}

/// Waits until every read-side section that could have seen state unpublished before this
/// call has ended. Must not be called by a thread that is itself reading (it would wait for
/// itself).
pub fn synchronize() {
    wait_for(snapshot());
}

/// Waits until grace period `target` has completed, running grace periods as needed.
pub fn wait_for(target: u64) {
    while !completed(target) {
        let _gp = GP_LOCK.lock();
        if completed(target) {
            break;
        }
        GP_SEQ.fetch_add(1, SeqCst);
        run_grace_period();
        GP_SEQ.fetch_add(1, SeqCst);
    }
}

#[cold]
#[inline(never)]
fn wake(r: &Reader) {
    r.signal.fetch_and(!SIGNAL_WAITING, Relaxed);
    GP_FUTEX.store(0, Release);
    futex(&GP_FUTEX, libc::FUTEX_WAKE, i32::MAX as u32, None);
}

/// The exported wake-up for the header's inline leave.
pub fn wake_writer(r: &Reader) {
    wake(r)
}

pub(crate) fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a futex call on a word we own; syscall() is not a cancellation point.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            tsp,
            0,
            0,
        )
    };
}

/// A full fence on every thread of the process that runs right now: membarrier, with
/// fallbacks that are as strong. Where readers fence themselves, a local fence is enough.
pub(crate) fn heavy_barrier() {
    if READER_FENCE.load(Relaxed) {
        fence(SeqCst);
        return;
    }
    let Some(setup) = setup() else {
        fence(SeqCst);
        return;
    };
    let try_membarrier = |cmd| {
        let injected = setup
            .membarrier_failures
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        !injected && membarrier(cmd)
    };
    let mut backoff = Duration::from_micros(50);
    loop {
        for _ in 0..3 {
            if try_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
                return;
            }
        }
        // The global command waits for a scheduler grace period: slow but needs no memory.
        if try_membarrier(MEMBARRIER_CMD_GLOBAL) {
            return;
        }
        // Lowering a page's protection makes the kernel shoot down the TLB entries of every
        // CPU that runs this process, with an interrupt that serializes each of them.
        if setup.barrier_page != 0 {
            let page = setup.barrier_page as *mut libc::c_void;
            // SAFETY: our own page; the write makes it present before the shootdown.
            let ok = unsafe {
                (page as *mut u8).write_volatile(1);
                libc::mprotect(page, 4096, libc::PROT_READ) == 0
                    && libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_WRITE) == 0
            };
            if ok {
                fence(SeqCst);
                return;
            }
        }
        sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(10));
    }
}

/// Sleeps without a cancellation point (nanosleep is one).
fn sleep(d: Duration) {
    static NEVER: AtomicU32 = AtomicU32::new(0);
    futex(&NEVER, libc::FUTEX_WAIT, 0, Some(d));
}

/// Records still in the section they were in at the snapshot.
fn still_pending() -> usize {
    let mut n = 0;
    for r in records().filter(|r| r.gp_pending.load(Relaxed)) {
        let c = r.ctl.load(Acquire);
        let seen = r.gp_seen.load(Relaxed);
        if c & NEST_MASK == 0 || (c >> NEST_BITS) != (seen >> NEST_BITS) {
            r.gp_pending.store(false, Relaxed);
        } else {
            n += 1;
        }
    }
    n
}

fn run_grace_period() {
    if READERS.load(Acquire).is_null() {
        return;
    }
    heavy_barrier();
    let mut pending = 0;
    for r in records() {
        let c = r.ctl.load(Acquire);
        let busy = c & NEST_MASK != 0;
        r.gp_seen.store(c, Relaxed);
        r.gp_pending.store(busy, Relaxed);
        pending += busy as usize;
    }
    // Sections are short: most readers leave within microseconds.
    let spin_until = Instant::now() + Duration::from_micros(20);
    while pending != 0 && Instant::now() < spin_until {
        std::hint::spin_loop();
        pending = still_pending();
    }
    if pending == 0 {
        return;
    }
    // Flag the readers still inside, make the flags visible before their next leave (or see
    // their leave), then sleep until one of them wakes us.
    GP_FUTEX.store(1, SeqCst);
    for r in records().filter(|r| r.gp_pending.load(Relaxed)) {
        r.gp_flagged.store(true, Relaxed);
        r.signal.fetch_or(SIGNAL_WAITING, Relaxed);
    }
    heavy_barrier();
    let started = Instant::now();
    let mut reported = false;
    loop {
        pending = still_pending();
        if pending == 0 {
            break;
        }
        futex(
            &GP_FUTEX,
            libc::FUTEX_WAIT,
            1,
            Some(Duration::from_millis(5)),
        );
        // Reading the waker's store orders its leave before the next check.
        GP_FUTEX.swap(1, SeqCst);
        if debug() && !reported && started.elapsed() > Duration::from_secs(2) {
            reported = true;
            for r in records().filter(|r| r.gp_pending.load(Relaxed)) {
                report(format_args!(
                    "a grace period has waited 2 s for {} (thread {}, {} kmap(s), {} section(s))",
                    if r.kind == KIND_OBJECT {
                        "an object-bound section"
                    } else {
                        "a reader"
                    },
                    r.tid.load(Relaxed),
                    r.holds.len(),
                    r.sections.load(Relaxed)
                ));
            }
        }
    }
    GP_FUTEX.store(0, SeqCst);
    for r in records().filter(|r| r.gp_flagged.load(Relaxed)) {
        r.gp_flagged.store(false, Relaxed);
        r.signal.fetch_and(!SIGNAL_WAITING, Relaxed);
    }
}

// ---- fork ----

/// Locks held across fork() so that the child does not inherit them locked by a thread that
/// does not exist there (see `fork`).
/// (The grace-period lock is not held across fork: a grace period may be waiting for the
/// forking thread. The child resets it instead.)
pub(crate) struct ForkGuard {
    _threads: MutexGuard<'static, Pool>,
    _objects: MutexGuard<'static, Pool>,
}

pub(crate) fn lock_for_fork() -> ForkGuard {
    ForkGuard {
        _threads: lock(&THREAD_POOL),
        _objects: lock(&OBJECT_POOL),
    }
}

/// In a child process after fork(): only the forking thread exists there. Every other
/// thread's record is abandoned (its reads end; it is never reused, since its hold stack may
/// have been mid-change). The forking thread keeps its holds; object-bound sections stay open
/// until closed. Runs before any other thread can exist in the child.
pub(crate) fn after_fork_in_child() {
    if !READER_FENCE.load(Relaxed) {
        // The child is a new process for membarrier's registration.
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
    }
    let mine = tls::get() as *const Reader;
    // The forking thread, as the parent knew it (object-bound sections record their opener).
    // SAFETY: `mine` is this thread's own record or null.
    let forker = unsafe { mine.as_ref() }.map(|m| m.tid.load(Relaxed));
    for r in records() {
        if r.state.load(Relaxed) != STATE_USED {
            continue;
        }
        let other_thread = r.kind == KIND_THREAD && !ptr::eq(r, mine);
        // An object-bound section another thread opened: that thread does not exist here, and
        // the value is most likely on its stack, out of the child's reach. It is closed (a
        // later pfn_section_close of it is -EINVAL); the forking thread's own stay open.
        let others_section = r.kind == KIND_OBJECT
            && r.ctl.load(Relaxed) & NEST_MASK != 0
            && Some(r.tid.load(Relaxed)) != forker;
        if other_thread || others_section {
            r.state.store(STATE_ABANDONED, Relaxed);
            let c = r.ctl.load(Relaxed);
            r.ctl.store((c & !NEST_MASK) + SEQ_ONE, Relaxed);
            r.signal.fetch_and(!SIGNAL_WAITING, Relaxed);
        }
    }
    GP_FUTEX.store(0, Relaxed);
    // A grace period the parent was running does not run here: it never started, for the
    // child (its writer does not exist here), and the lock it held is free.
    GP_LOCK.0.store(0, Relaxed);
    let seq = GP_SEQ.load(Relaxed);
    GP_SEQ.store(seq & !1, Relaxed);
    if let Some(me) = current() {
        me.tid.store(
            // SAFETY: plain syscall.
            unsafe { libc::syscall(libc::SYS_gettid) } as i32,
            Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn synchronize_waits_for_a_reader_on_another_thread() {
        let entered = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicUsize::new(0));
        let (e, rel) = (entered.clone(), released.clone());
        let reader = std::thread::spawn(move || {
            let r = current_or_register().unwrap();
            r.enter();
            e.store(true, SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            rel.store(1, SeqCst);
            r.leave();
        });
        while !entered.load(SeqCst) {
            std::thread::yield_now();
        }
        synchronize();
        assert_eq!(released.load(SeqCst), 1, "returned before the reader left");
        reader.join().unwrap();
    }

    #[test]
    fn exited_thread_leaves_its_section() {
        let (addr, tid) = std::thread::spawn(|| {
            let r = current_or_register().unwrap();
            r.enter();
            assert!(r.holds.push(0x2000, 0x3000));
            (r as *const Reader as usize, r.tid())
        })
        .join()
        .unwrap();
        // SAFETY: records are never freed.
        let r = unsafe { &*(addr as *const Reader) };
        // Left its section at exit, unless another test's thread has reused the record since.
        assert!(r.ctl.load(SeqCst) & NEST_MASK == 0 || r.tid() != tid);
        synchronize();
    }

    #[test]
    fn object_sections_close_once_from_any_thread() {
        let s = open_object_section().unwrap();
        let t = std::thread::spawn(move || !matches!(close_object_section(s), Closed::NotOpen))
            .join()
            .unwrap();
        assert!(t);
        assert!(matches!(close_object_section(s), Closed::NotOpen));
        synchronize();
    }

    #[test]
    fn grace_periods_are_shared() {
        let t = snapshot();
        synchronize();
        assert!(completed(t));
    }
}
