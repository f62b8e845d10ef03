//! Pool labels: where a pool's stored handles expect it in the physical space, kept in the
//! pool itself so that every run registers it at the same place.
//!
//! The label is the first [`SIZE`] bytes of the mapping (offset 0 of what was mapped), one
//! cache line, little-endian:
//!
//! | bytes  | field                                                          |
//! |--------|----------------------------------------------------------------|
//! | 0..8   | magic `PFNLABEL`                                               |
//! | 8..12  | version, 1                                                     |
//! | 12..16 | 0 (flags; none defined)                                        |
//! | 16..24 | physical start (page-aligned)                                  |
//! | 24..56 | 0 (reserved)                                                   |
//! | 56..64 | FNV-1a 64 of bytes 0..56                                       |
//!
//! A pool whose 64 first bytes are all zero has no label yet (a new file); anything else that
//! is not a valid label is refused, so the convention never overwrites data that is not its
//! own.

use crate::errmsg;
use crate::error::{Error, Result};
use crate::pmem::PmemFile;
use crate::space::Device;

/// Bytes the label occupies at the start of a mapping.
pub const SIZE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"PFNLABEL");
const VERSION: u64 = 1;
const PAGE: u64 = crate::encoding::PAGE_SIZE;
/// New pools are placed at random below this (and at or above [`LOW`]); byte handles reach
/// everything below 2^56.
const HIGH: u64 = 1 << 55;
const LOW: u64 = 1 << 40;
/// Random places tried before a new pool's registration gives up (each refused as taken).
const TRIES: u32 = 32;

fn fnv1a(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The label's eight words for physical start `phys`.
fn encode(phys: u64) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = MAGIC;
    w[1] = VERSION;
    w[2] = phys;
    w[7] = fnv1a(&w[..7]);
    w
}

/// What eight words say: `Ok(None)` blank, `Ok(Some(phys))` a label, `Err` neither.
fn decode(w: &[u64; 8]) -> Result<Option<u64>> {
    if w.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let refuse = |why: std::fmt::Arguments| Err(errmsg::with(Error::Os(libc::EILSEQ), why));
    if w[0] != MAGIC {
        return refuse(format_args!(
            "the mapping's first {SIZE} bytes are neither blank nor a libpfn label (magic \
             {:#018x}): not a labeled pool",
            w[0]
        ));
    }
    if w[7] != fnv1a(&w[..7]) {
        return refuse(format_args!(
            "the label's checksum does not match (torn or overwritten)"
        ));
    }
    if w[1] != VERSION || w[3..7].iter().any(|&x| x != 0) {
        return refuse(format_args!(
            "label version/flags {:#x} is not one this library knows",
            w[1]
        ));
    }
    if w[2] % PAGE != 0 {
        return refuse(format_args!(
            "the label's physical start {:#x} is not page-aligned",
            w[2]
        ));
    }
    Ok(Some(w[2]))
}

/// The mapping must hold a label and still be backed by its file there (reading bytes a
/// truncation took away would raise SIGBUS).
fn check_room(m: &PmemFile) -> Result<()> {
    if m.len() < SIZE {
        return Err(errmsg::invalid(format_args!(
            "the mapping is {} bytes, too small for a label",
            m.len()
        )));
    }
    if m.backed_len()? < SIZE {
        return Err(errmsg::with(
            Error::Os(libc::EFAULT),
            format_args!("the file no longer backs the label's bytes (it was truncated)"),
        ));
    }
    Ok(())
}

fn load(m: &PmemFile) -> [u64; 8] {
    let p = m.addr() as *const u64;
    // SAFETY: the mapping is live, page-aligned, at least SIZE bytes and backed there
    // (check_room). Volatile: other processes may write the shared file at any time.
    std::array::from_fn(|i| u64::from_le(unsafe { p.add(i).read_volatile() }))
}

fn store(m: &PmemFile, w: &[u64; 8]) -> Result<()> {
    let p = m.addr() as *mut u64;
    for (i, x) in w.iter().enumerate() {
        // SAFETY: as in `load`; the mapping is writable (mapped shared, read-write).
        unsafe { p.add(i).write_volatile(x.to_le()) };
    }
    m.persist(m.addr(), SIZE)
}

/// The physical start the mapping's label records: `Ok(None)` when its first bytes are blank.
/// Errors: `Os(EILSEQ)` when they are neither blank nor a valid label; `Invalid` when the
/// mapping is smaller than a label; `Os(EFAULT)` when a truncation took the bytes away.
pub fn get(m: &PmemFile) -> Result<Option<u64>> {
    check_room(m)?;
    decode(&load(m))
}

/// Writes a label recording `phys` at the start of the mapping and makes it durable,
/// whatever the bytes held before.
pub fn set(m: &PmemFile, phys: u64) -> Result<()> {
    check_phys(m, phys)?;
    check_room(m)?;
    store(m, &encode(phys))
}

fn check_phys(m: &PmemFile, phys: u64) -> Result<()> {
    if phys % PAGE != 0 {
        return Err(errmsg::invalid(format_args!(
            "phys {phys:#x} is not page-aligned"
        )));
    }
    if phys.checked_add(m.len() as u64 - 1).is_none() {
        return Err(errmsg::invalid(format_args!(
            "phys {phys:#x} + {:#x} bytes wraps around",
            m.len()
        )));
    }
    Ok(())
}

fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: writes at most 8 bytes into `v`.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // No entropy source: the clock and the process id still spread pools apart.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        v = fnv1a(&[
            ts.tv_sec as u64,
            ts.tv_nsec as u64,
            std::process::id() as u64,
        ]);
    }
    v
}

/// A random start for `len` bytes between LOW and HIGH, aligned to the power of two at or
/// above `len` (at least 2 MiB, at most 1 GiB) so that the table can use its largest blocks.
fn random_start(len: u64) -> u64 {
    let align = len.next_power_of_two().clamp(2 << 20, 1 << 30);
    let slots = (HIGH - LOW - len) / align;
    LOW + (random_u64() % slots) * align
}

/// Registers mapping `m` for `dev` where its label says; a blank pool is first labeled with a
/// random free start (tried again elsewhere when that is taken). Returns the start.
/// A call that fails leaves the label as it found it (a blank pool blank).
pub fn register(dev: &Device, m: &PmemFile) -> Result<u64> {
    let len = m.len() as u64;
    register_at(dev, m, || random_start(len))
}

/// [`register`], a new pool's candidate starts coming from `next`.
fn register_at(dev: &Device, m: &PmemFile, mut next: impl FnMut() -> u64) -> Result<u64> {
    let len = m.len() as u64;
    if let Some(phys) = get(m)? {
        check_phys(m, phys)?;
        dev.register(phys, phys + len - 1, m.addr())?;
        return Ok(phys);
    }
    let mut last = Error::Busy;
    for _ in 0..TRIES {
        let phys = next();
        // Labeled first, so that a registered pool is always a labeled one.
        store(m, &encode(phys))?;
        match dev.register(phys, phys + len - 1, m.addr()) {
            Ok(()) => return Ok(phys),
            Err(Error::Busy) => last = Error::Busy,
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    // Blank again, as found; the error that stopped us is the one to report (its message
    // was set by the failing registration).
    let _ = store(m, &[0; 8]);
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_refuse_what_is_not_one() {
        let w = encode(0x1234_5000);
        assert_eq!(decode(&w), Ok(Some(0x1234_5000)));
        assert_eq!(decode(&[0; 8]), Ok(None));
        for i in 0..8 {
            let mut bad = w;
            bad[i] ^= 1 << 9;
            assert_eq!(decode(&bad), Err(Error::Os(libc::EILSEQ)), "word {i}");
        }
        let mut other = [0u64; 8];
        other[3] = 7;
        assert_eq!(decode(&other), Err(Error::Os(libc::EILSEQ)));
        let mut unaligned = encode(0x1234_5001);
        unaligned[7] = fnv1a(&unaligned[..7]);
        assert_eq!(decode(&unaligned), Err(Error::Os(libc::EILSEQ)));
    }

    #[test]
    fn a_new_pool_that_cannot_be_placed_stays_blank() {
        let path = std::env::temp_dir().join(format!("libpfn-label-{}.pmem", std::process::id()));
        let create = crate::pmem::MapOptions {
            create: true,
            ..Default::default()
        };
        let m = PmemFile::map(&path, 4 * PAGE, create).unwrap();
        let other = PmemFile::map(&path, 4 * PAGE, crate::pmem::MapOptions::default()).unwrap();
        let taken = Device::new().unwrap();
        // Starts no other test uses (tests share the one physical space).
        let (x, y, z) = (0x1d3 << 41, 0x1d5 << 41, 0x1d7 << 41);
        taken.register(x, x + 4 * PAGE - 1, other.addr()).unwrap();
        taken.register(y, y + 4 * PAGE - 1, other.addr()).unwrap();
        let dev = Device::new().unwrap();
        // Every candidate taken: Busy, and the label bytes blank again.
        assert_eq!(register_at(&dev, &m, || x), Err(Error::Busy));
        assert_eq!(get(&m), Ok(None));
        // Taken twice, then free: the third candidate is used and recorded.
        let mut tries = [x, y, z].into_iter();
        assert_eq!(register_at(&dev, &m, || tries.next().unwrap()), Ok(z));
        assert_eq!(get(&m), Ok(Some(z)));
        drop(dev);
        drop(taken);
        drop(m);
        drop(other);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn random_starts_are_aligned_and_in_bounds() {
        for len in [PAGE, 3 * PAGE, 5 << 20, 3 << 30] {
            for _ in 0..100 {
                let s = random_start(len);
                let align = len.next_power_of_two().clamp(2 << 20, 1 << 30);
                assert_eq!(s % align, 0);
                assert!(s >= LOW && s + len <= HIGH);
            }
        }
    }
}
