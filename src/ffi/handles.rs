//! Opaque handles for C: checked on every call, never reused, looked up without a lock.
//!
//! A handle is not a pointer but an encoded value: a tag (which kind of object), a slot index
//! and the slot's generation. Freeing a handle bumps its slot's generation, so the same value
//! never names a live object again (until one slot has been reused 2^35 times): a double free,
//! a stale or a foreign pointer is refused with EINVAL instead of being dereferenced, even
//! after the slot holds a new object.
//!
//! Lookups run inside a read-side section of the calling thread (no lock, no shared write):
//! `with` for short uses. `get` takes a counted reference for calls that block (a registration
//! takes the registration lock, an unregister waits for readers). A free first kills the slot
//! (one winner among racing frees), then waits for a grace period before the object may go,
//! so no lookup in flight can still be using it.

use std::alloc::{alloc, dealloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::rcu;

const TAG_BITS: u32 = 4;
const INDEX_BITS: u32 = 24;
const GEN_SHIFT: u32 = TAG_BITS + INDEX_BITS;
const CHUNK0: usize = 64;
const CHUNKS: usize = 18; // 64 << 17 > 2^24 slots

struct Obj<T> {
    refs: AtomicUsize,
    value: T,
}

struct Slot<T> {
    /// Odd while live.
    gen: AtomicU64,
    obj: AtomicPtr<Obj<T>>,
    free_next: AtomicU64,
}

pub struct Handles<T> {
    tag: u64,
    chunks: [AtomicPtr<Slot<T>>; CHUNKS],
    /// Free slots (index + 1, 0: none) and the next never-used index.
    free: Mutex<(u64, u64)>,
}

/// A counted reference to a handle's object.
pub struct Ref<T: 'static>(&'static Obj<T>);

impl<T> std::ops::Deref for Ref<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T> Drop for Ref<T> {
    fn drop(&mut self) {
        if self.0.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let p = self.0 as *const Obj<T> as *mut Obj<T>;
            // SAFETY: the last reference: nobody else can reach the object.
            unsafe {
                ptr::drop_in_place(p);
                dealloc(p as *mut u8, Layout::new::<Obj<T>>());
            }
        }
    }
}

/// What a successful kill hands back: the handle's own reference. Drop it only after a grace
/// period (lookups in flight may still use the object): [`Killed::release`] waits for one.
pub struct Killed<T: 'static>(Ref<T>);

impl<T> Killed<T> {
    pub fn object(&self) -> &T {
        &self.0
    }

    /// Waits for lookups in flight, then drops the handle's reference.
    pub fn release(self) {
        rcu::synchronize();
        drop(self.0);
    }
}

fn chunk_of(i: usize) -> (usize, usize) {
    let k = (usize::BITS - 1 - (i / CHUNK0 + 1).leading_zeros()) as usize;
    (k, i - CHUNK0 * ((1 << k) - 1))
}

fn reader() -> Result<&'static rcu::Reader> {
    rcu::current_or_register().map_err(|e| match e {
        rcu::SetupError::OutOfMemory => Error::OutOfMemory,
        rcu::SetupError::Interrupted => Error::Again,
    })
}

impl<T: 'static> Handles<T> {
    pub const fn new(tag: u64) -> Handles<T> {
        Handles {
            tag,
            chunks: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS],
            free: Mutex::new((0, 0)),
        }
    }

    fn slot(&self, i: usize) -> Option<&Slot<T>> {
        let (k, off) = chunk_of(i);
        let chunk = self.chunks.get(k)?.load(Ordering::Acquire);
        // SAFETY: chunks are never freed; `off` is within chunk k.
        unsafe { chunk.as_ref().map(|_| &*chunk.add(off)) }
    }

    fn decode(&self, h: usize) -> Option<(usize, u64)> {
        let h = h as u64;
        if h & ((1 << TAG_BITS) - 1) != self.tag {
            return None;
        }
        let idx = ((h >> TAG_BITS) & ((1 << INDEX_BITS) - 1)) as usize;
        Some((idx, h >> GEN_SHIFT))
    }

    fn encode(&self, idx: usize, gen: u64) -> usize {
        ((gen << GEN_SHIFT) | ((idx as u64) << TAG_BITS) | self.tag) as usize
    }

    /// Makes `value` a live handle. Errors: `OutOfMemory` (nothing changed).
    pub fn add(&self, value: T) -> Result<usize> {
        let layout = Layout::new::<Obj<T>>();
        // SAFETY: non-zero size.
        let p = unsafe { alloc(layout) } as *mut Obj<T>;
        if p.is_null() {
            return Err(Error::OutOfMemory);
        }
        // SAFETY: fresh memory for one Obj.
        unsafe {
            p.write(Obj {
                refs: AtomicUsize::new(1),
                value,
            })
        };
        let Some(idx) = self.take_slot() else {
            // SAFETY: ours alone.
            unsafe {
                ptr::drop_in_place(p);
                dealloc(p as *mut u8, layout);
            }
            return Err(Error::OutOfMemory);
        };
        let slot = self.slot(idx).expect("a taken slot exists");
        slot.obj.store(p, Ordering::Relaxed);
        let gen = slot.gen.load(Ordering::Relaxed) + 1;
        slot.gen.store(gen, Ordering::Release);
        Ok(self.encode(idx, gen & ((1 << (64 - GEN_SHIFT)) - 1)))
    }

    fn take_slot(&self) -> Option<usize> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.0 != 0 {
            let idx = (free.0 - 1) as usize;
            free.0 = self.slot(idx)?.free_next.load(Ordering::Relaxed);
            return Some(idx);
        }
        let idx = free.1 as usize;
        if idx >= 1 << INDEX_BITS {
            return None;
        }
        let (k, off) = chunk_of(idx);
        if off == 0 {
            let n = CHUNK0 << k;
            let layout = Layout::array::<Slot<T>>(n).ok()?;
            // SAFETY: non-zero size; zeroed atomics and null pointers are valid slots.
            let chunk = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Slot<T>;
            if chunk.is_null() {
                return None;
            }
            self.chunks[k].store(chunk, Ordering::Release);
        }
        free.1 += 1;
        Some(idx)
    }

    /// The live slot `h` names, if any (call inside a read-side section).
    fn live(&self, h: usize) -> Option<(&Slot<T>, u64)> {
        let (idx, gen) = self.decode(h)?;
        let slot = self.slot(idx)?;
        let now = slot.gen.load(Ordering::Acquire);
        (now & 1 == 1 && now & ((1 << (64 - GEN_SHIFT)) - 1) == gen).then_some((slot, now))
    }

    /// Runs `f` on the object of a live handle, inside a read-side section (keep it short).
    /// Errors: `Invalid` for a handle that is not live; setup errors of a thread's first use.
    pub fn with<R>(&self, h: usize, f: impl FnOnce(&T) -> R) -> Result<R> {
        let r = reader()?;
        r.enter();
        let out = self.live(h).map(|(slot, _)| {
            // SAFETY: a live slot's object stays until a grace period after its kill, and we
            // are inside a section.
            f(unsafe { &(*slot.obj.load(Ordering::Acquire)).value })
        });
        r.leave();
        out.ok_or(Error::Invalid)
    }

    /// A counted reference to a live handle's object, for calls that block.
    pub fn get(&self, h: usize) -> Result<Ref<T>> {
        let r = reader()?;
        r.enter();
        let out = self.live(h).map(|(slot, _)| {
            // SAFETY: as in `with`; the count keeps it after the section.
            let obj = unsafe { &*slot.obj.load(Ordering::Acquire) };
            obj.refs.fetch_add(1, Ordering::Relaxed);
            Ref(obj)
        });
        r.leave();
        out.ok_or(Error::Invalid)
    }

    /// Ends a live handle: from now on it is refused. One of racing kills wins; the others get
    /// `Invalid`. Then: [`Killed::release`].
    pub fn kill(&self, h: usize) -> Result<Killed<T>> {
        let r = reader()?;
        r.enter();
        let won = self.live(h).and_then(|(slot, gen)| {
            slot.gen
                .compare_exchange(gen, gen + 1, Ordering::AcqRel, Ordering::Relaxed)
                .ok()
                .map(|_| slot)
        });
        r.leave();
        let slot = won.ok_or(Error::Invalid)?;
        // SAFETY: the slot's reference now belongs to us; the object lives while it does.
        let obj = unsafe { &*slot.obj.swap(ptr::null_mut(), Ordering::AcqRel) };
        let (idx, _) = self.decode(h).expect("decoded above");
        // The slot may be reused at once: its next handle has another generation.
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        slot.free_next.store(free.0, Ordering::Relaxed);
        free.0 = idx as u64 + 1;
        Ok(Killed(Ref(obj)))
    }

    fn lock_for_fork(&'static self) -> std::sync::MutexGuard<'static, (u64, u64)> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps the free lists usable in a child after fork(): they are held across the fork, so no
/// other thread can leave one locked there.
pub(crate) fn install_fork_handlers() {
    use std::cell::UnsafeCell;
    type Guards = Option<(
        std::sync::MutexGuard<'static, (u64, u64)>,
        std::sync::MutexGuard<'static, (u64, u64)>,
        std::sync::MutexGuard<'static, (u64, u64)>,
    )>;
    struct Slot(UnsafeCell<Guards>);
    // SAFETY: only the forking thread touches it, between prepare and parent/child.
    unsafe impl Sync for Slot {}
    static HELD: Slot = Slot(UnsafeCell::new(None));
    extern "C" fn prepare() {
        let g = (
            super::device::DEVICES.lock_for_fork(),
            super::pmem::MAPS.lock_for_fork(),
            super::daxdev::DAXES.lock_for_fork(),
        );
        // SAFETY: see `Slot`.
        unsafe { *HELD.0.get() = Some(g) };
    }
    extern "C" fn release() {
        // SAFETY: see `Slot`.
        drop(unsafe { (*HELD.0.get()).take() });
    }
    // SAFETY: plain functions with the required signature.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    static H: Handles<u32> = Handles::new(3);

    #[test]
    fn handles_are_checked_and_never_reused() {
        let a = H.add(7).unwrap();
        assert_eq!(H.with(a, |v| *v).unwrap(), 7);
        assert_eq!(*H.get(a).unwrap(), 7);
        H.kill(a).unwrap().release();
        assert_eq!(H.with(a, |v| *v), Err(Error::Invalid));
        assert!(H.kill(a).is_err());
        // The slot is reused with another value: the old handle stays dead.
        let b = H.add(8).unwrap();
        assert_ne!(a, b);
        assert_eq!(H.with(a, |v| *v), Err(Error::Invalid));
        assert_eq!(H.with(b, |v| *v).unwrap(), 8);
        // A foreign value is refused.
        assert_eq!(H.with(b ^ 1, |v| *v), Err(Error::Invalid));
        assert_eq!(H.with(0, |v| *v), Err(Error::Invalid));
        H.kill(b).unwrap().release();
    }
}
