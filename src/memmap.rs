//! Page descriptors (the memmap): one 16-byte descriptor per 4 KiB frame of a range registered
//! with one, the seed's `struct page` cut down to what user-space storage code needs.
//!
//! A memmap lives in memory the library maps (anonymous, so its pages cost nothing until
//! touched) or at the head of the range itself (the kernel's `vmem_altmap`): then its first
//! frames hold the descriptors of the rest and are not translatable, and the descriptors'
//! flags and data persist with the range's bytes (reference counts restart at zero each time
//! the range is registered).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::encoding::PAGE_SIZE;

/// A page descriptor. Layout is part of the C ABI (`struct pfn_page`).
#[repr(C)]
pub struct Page {
    pub refcount: AtomicU32,
    pub flags: AtomicU32,
    pub data: AtomicU64,
}

pub const PAGE_BYTES: u64 = std::mem::size_of::<Page>() as u64;
const _: () = assert!(PAGE_BYTES == 16);

/// Where a range's memmap lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Memory the library maps and frees.
    Dram,
    /// The head of the range itself.
    InRange,
}

/// Frames at the head of a range of `pages` frames that hold the descriptors of the rest:
/// the fewest `r` with `(pages - r) * 16 <= r * 4096`.
pub fn reserved_frames(pages: u64) -> u64 {
    (pages * PAGE_BYTES).div_ceil(PAGE_SIZE + PAGE_BYTES)
}

/// Bytes a memmap for `pages` frames takes, rounded up to whole pages.
pub fn bytes_for(pages: u64) -> u64 {
    (pages * PAGE_BYTES).div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// A memmap the library mapped; unmapped on drop.
#[derive(Debug, Default)]
pub struct DramMemmap {
    pub addr: usize,
    pub len: usize,
}

impl DramMemmap {
    /// Zeroed descriptors for `pages` frames. None: out of memory.
    pub fn new(pages: u64) -> Option<DramMemmap> {
        let len = usize::try_from(bytes_for(pages)).ok()?;
        // SAFETY: a fresh anonymous mapping, zero-filled by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(DramMemmap {
            addr: p as usize,
            len,
        })
    }
}

impl Drop for DramMemmap {
    fn drop(&mut self) {
        if self.addr != 0 {
            // SAFETY: our own mapping, referenced by no one after the range's grace period.
            unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        }
    }
}

/// The descriptor at `addr`.
///
/// # Safety
/// `addr` is a descriptor of a memmap that stays mapped while the reference is used.
pub unsafe fn page<'a>(addr: usize) -> &'a Page {
    &*(addr as *const Page)
}

/// Takes a reference, returning the new count. None: the count would pass `i32::MAX`
/// (nothing changed).
pub fn get(p: &Page) -> Option<u32> {
    p.refcount
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c < i32::MAX as u32).then_some(c + 1)
        })
        .map(|c| c + 1)
        .ok()
}

/// Drops a reference, returning the count left. None: it was zero (nothing changed).
pub fn put(p: &Page) -> Option<u32> {
    p.refcount
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
        .map(|c| c - 1)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_frames_hold_the_rest() {
        for pages in [2u64, 3, 256, 257, 258, 512, 1 << 18, 1_000_003] {
            let r = reserved_frames(pages);
            assert!((pages - r) * PAGE_BYTES <= r * PAGE_SIZE, "{pages}");
            assert!(
                (pages - r + 1) * PAGE_BYTES > (r - 1) * PAGE_SIZE,
                "{pages}"
            );
        }
        assert_eq!(reserved_frames(257), 1);
        assert_eq!(reserved_frames(258), 2);
    }

    #[test]
    fn refcounts_saturate_and_refuse_underflow() {
        let p = Page {
            refcount: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            data: AtomicU64::new(0),
        };
        assert_eq!(put(&p), None);
        assert_eq!(get(&p), Some(1));
        assert_eq!(put(&p), Some(0));
        p.refcount.store(i32::MAX as u32, Ordering::Relaxed);
        assert_eq!(get(&p), None);
    }
}
