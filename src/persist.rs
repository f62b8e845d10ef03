//! CPU-cache persistence: flush, drain, and copies whose bytes are on their way to the
//! persistence domain when they return (the primitives libpmem offers, written here).
//!
//! What runs is chosen once, when the library is loaded: CPUID and XGETBV say what the CPU and
//! the kernel allow, then the `PFN_NO_*` environment variables take choices away so that tests
//! can force every path (see [`Env`]). valgrind's synthetic CPUID is honest: it offers neither
//! AVX-512 nor CLWB/CLFLUSHOPT, which it cannot run, so under valgrind CLFLUSH and AVX2 are
//! chosen. The choice is one word, read with one relaxed load per call.
//!
//! Copies of at least [`Config::movnt_threshold`] bytes write whole cache lines with
//! non-temporal stores of the widest vector unit (AVX-512, AVX2, SSE2), which go to memory
//! without a flush; the partial lines at both ends, and shorter copies, are stored normally
//! and flushed. A drain (SFENCE) then waits for all of it.
//!
//! Nothing here takes a lock, allocates or makes a system call: every function may run in a
//! signal handler.

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::env;

/// Bytes per cache line: the unit of a flush.
pub(crate) const CACHE_LINE: usize = 64;

/// Copies below this many bytes use ordinary stores and flushes; at and above it, whole lines
/// are written with non-temporal stores. One line: on an AMD EPYC host non-temporal stores
/// beat stores plus CLWB at every size, to a cold or a hot destination (`make bench-persist`
/// prints the sweep; libpmem's default is 256).
pub(crate) const DEFAULT_MOVNT_THRESHOLD: usize = 64;
/// The same on Intel CPUs: on an Intel Xeon host stores plus CLWB win up to 512 bytes and
/// non-temporal stores from 1 KiB (the same sweep).
pub(crate) const INTEL_MOVNT_THRESHOLD: usize = 1024;

/// The threshold for `cpu` when the environment does not set one.
fn default_threshold(cpu: &Cpu) -> usize {
    if cpu.intel {
        INTEL_MOVNT_THRESHOLD
    } else {
        DEFAULT_MOVNT_THRESHOLD
    }
}

/// Ordinary-store copies that must be flushed go in pieces of this size, each flushed while
/// it is still in the cache.
const FLUSH_CHUNK: usize = 4096;

/// The instruction that writes a cache line back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushInsn {
    /// Invalidates the line; ordered with stores, so it needs no fence of its own.
    Clflush = 0,
    /// Like CLFLUSH, weakly ordered: a drain (SFENCE) completes it.
    Clflushopt = 1,
    /// Writes the line back and may keep it cached; a drain completes it.
    Clwb = 2,
    /// No flush instruction is known on this architecture.
    None = 3,
}

/// The vector unit non-temporal copies use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vector {
    /// No non-temporal stores: every copy is ordinary stores plus flushes.
    None = 0,
    Sse2 = 1,
    Avx2 = 2,
    Avx512 = 3,
}

impl FlushInsn {
    pub fn name(self) -> &'static str {
        match self {
            FlushInsn::Clflush => "clflush",
            FlushInsn::Clflushopt => "clflushopt",
            FlushInsn::Clwb => "clwb",
            FlushInsn::None => "none",
        }
    }
}

impl Vector {
    pub fn name(self) -> &'static str {
        match self {
            Vector::None => "none",
            Vector::Sse2 => "sse2",
            Vector::Avx2 => "avx2",
            Vector::Avx512 => "avx512f",
        }
    }
}

/// How flushes and copies are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub flush: FlushInsn,
    pub movnt: Vector,
    pub movnt_threshold: usize,
}

const THRESHOLD_MAX: usize = (1 << 48) - 1;

impl Config {
    /// One word, never 0: bit 0 set, flush in bits 1..2, vector in 3..4, threshold from bit 8.
    fn pack(self) -> u64 {
        1 | (self.flush as u64) << 1
            | (self.movnt as u64) << 3
            | (self.movnt_threshold.min(THRESHOLD_MAX) as u64) << 8
    }

    fn unpack(w: u64) -> Config {
        let flush = match (w >> 1) & 3 {
            0 => FlushInsn::Clflush,
            1 => FlushInsn::Clflushopt,
            2 => FlushInsn::Clwb,
            _ => FlushInsn::None,
        };
        let movnt = match (w >> 3) & 3 {
            0 => Vector::None,
            1 => Vector::Sse2,
            2 => Vector::Avx2,
            _ => Vector::Avx512,
        };
        Config {
            flush,
            movnt,
            movnt_threshold: (w >> 8) as usize,
        }
    }
}

/// What the CPU offers and the kernel enables (AVX state saved on context switches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    pub clflush: bool,
    pub clflushopt: bool,
    pub clwb: bool,
    pub sse2: bool,
    pub avx2: bool,
    pub avx512f: bool,
    /// CPUID's vendor is GenuineIntel.
    pub intel: bool,
}

/// The choices the environment takes away, each read once at load time (ignored in setuid
/// programs): `PFN_NO_CLWB`, `PFN_NO_CLFLUSHOPT`, `PFN_NO_MOVNT`, `PFN_NO_AVX512`,
/// `PFN_NO_AVX2` (each set to anything but "" or "0"), and `PFN_MOVNT_THRESHOLD` (bytes,
/// decimal; anything else is ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub no_clwb: bool,
    pub no_clflushopt: bool,
    pub no_movnt: bool,
    pub no_avx512: bool,
    pub no_avx2: bool,
    pub movnt_threshold: Option<usize>,
}

fn parse_bytes(value: Option<&[u8]>) -> Option<usize> {
    let v = value?;
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

impl Env {
    /// Builds the switches from a lookup of variable values.
    pub fn from_lookup(get: impl Fn(&str) -> Option<Vec<u8>>) -> Env {
        Env {
            no_clwb: env::is_on(get("PFN_NO_CLWB").as_deref()),
            no_clflushopt: env::is_on(get("PFN_NO_CLFLUSHOPT").as_deref()),
            no_movnt: env::is_on(get("PFN_NO_MOVNT").as_deref()),
            no_avx512: env::is_on(get("PFN_NO_AVX512").as_deref()),
            no_avx2: env::is_on(get("PFN_NO_AVX2").as_deref()),
            movnt_threshold: parse_bytes(get("PFN_MOVNT_THRESHOLD").as_deref()),
        }
    }
}

fn env_from_process() -> Env {
    let flag = |name: &str| env::with_var(name, env::is_on);
    Env {
        no_clwb: flag("PFN_NO_CLWB"),
        no_clflushopt: flag("PFN_NO_CLFLUSHOPT"),
        no_movnt: flag("PFN_NO_MOVNT"),
        no_avx512: flag("PFN_NO_AVX512"),
        no_avx2: flag("PFN_NO_AVX2"),
        movnt_threshold: env::with_var("PFN_MOVNT_THRESHOLD", parse_bytes),
    }
}

/// The configuration for a CPU and an environment: the best flush and the widest vector
/// left.
pub fn choose(cpu: Cpu, env: Env) -> Config {
    let flush = if cpu.clwb && !env.no_clwb {
        FlushInsn::Clwb
    } else if cpu.clflushopt && !env.no_clflushopt {
        FlushInsn::Clflushopt
    } else if cpu.clflush {
        FlushInsn::Clflush
    } else {
        FlushInsn::None
    };
    let movnt = if env.no_movnt || flush == FlushInsn::None {
        Vector::None
    } else if cpu.avx512f && !env.no_avx512 && !env.no_avx2 {
        Vector::Avx512
    } else if cpu.avx2 && !env.no_avx2 {
        Vector::Avx2
    } else if cpu.sse2 {
        Vector::Sse2
    } else {
        Vector::None
    };
    Config {
        flush,
        movnt,
        movnt_threshold: env
            .movnt_threshold
            .unwrap_or(default_threshold(&cpu))
            .min(THRESHOLD_MAX),
    }
}

#[cfg(target_arch = "x86_64")]
pub fn detect_cpu() -> Cpu {
    use std::arch::x86_64::__cpuid_count;
    // SAFETY: CPUID exists on every x86_64 CPU. (Safe to call from Rust 1.87 on; older
    // compilers want the blocks.)
    #[allow(unused_unsafe)]
    let leaf0 = unsafe { __cpuid_count(0, 0) };
    #[allow(unused_unsafe)]
    let leaf1 = unsafe { __cpuid_count(1, 0) };
    let leaf7 = if leaf0.eax >= 7 {
        // SAFETY: as above; leaf 7 is below the maximum leaf.
        #[allow(unused_unsafe)]
        unsafe { __cpuid_count(7, 0) }.ebx
    } else {
        0
    };
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    // The kernel saves YMM (bits 1, 2) and ZMM/opmask (bits 5, 6, 7) state only when XCR0 says.
    let xcr0 = if osxsave { xgetbv0() } else { 0 };
    let os_avx = xcr0 & 0x6 == 0x6;
    let os_avx512 = os_avx && xcr0 & 0xe0 == 0xe0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    Cpu {
        clflush: leaf1.edx & (1 << 19) != 0,
        sse2: leaf1.edx & (1 << 26) != 0,
        avx2: avx && os_avx && leaf7 & (1 << 5) != 0,
        avx512f: os_avx512 && leaf7 & (1 << 16) != 0,
        clflushopt: leaf7 & (1 << 23) != 0,
        clwb: leaf7 & (1 << 24) != 0,
        // "GenuineIntel" in EBX, EDX, ECX.
        intel: (leaf0.ebx, leaf0.edx, leaf0.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e),
    }
}

#[cfg(target_arch = "x86_64")]
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called when CPUID says OSXSAVE, so XGETBV exists and XCR0 is readable.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                        options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn detect_cpu() -> Cpu {
    Cpu::default()
}

static CONFIG: AtomicU64 = AtomicU64::new(0);

/// Chooses at load time, before any thread can call in (and before a signal handler could).
#[used]
#[link_section = ".init_array"]
static CHOOSE_AT_LOAD: extern "C" fn() = choose_at_load;

extern "C" fn choose_at_load() {
    load_config();
}

/// Idempotent: racing callers compute the same word.
#[cold]
fn load_config() -> Config {
    let config = choose(detect_cpu(), env_from_process());
    CONFIG.store(config.pack(), Ordering::Relaxed);
    config
}

/// The configuration in use.
#[inline]
pub fn config() -> Config {
    match CONFIG.load(Ordering::Relaxed) {
        0 => load_config(),
        w => Config::unpack(w),
    }
}

/// How a copy or fill is done; libpmem's `PMEM_F_MEM_*` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// Flush, but leave the final drain to the caller.
    pub nodrain: bool,
    /// Non-temporal stores whatever the size.
    pub nontemporal: bool,
    /// Ordinary stores and flushes whatever the size.
    pub temporal: bool,
    /// Stores only: nothing flushed, nothing drained.
    pub noflush: bool,
}

/// Writes back the cache lines holding `addr .. addr + len` (not waiting: see [`drain`]).
///
/// # Safety
/// The bytes are mapped: a flush faults like a load.
#[inline]
pub unsafe fn flush(addr: *const u8, len: usize) {
    flush_with(config().flush, addr, len)
}

/// Waits until every flush and non-temporal store issued before it has reached the
/// persistence domain.
#[inline]
pub fn drain() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SFENCE has no operands; no `nomem`, so the compiler keeps stores before it.
    unsafe {
        std::arch::asm!("sfence", options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// Copies `len` bytes from `src` to `dst` (the two may overlap, either way), flushing per
/// `flags`, and drains unless told not to.
///
/// # Safety
/// `src .. src + len` is readable and `dst .. dst + len` writable.
#[inline]
pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize, flags: Flags) {
    copy_with(&config(), dst, src, len, flags)
}

/// Sets `len` bytes at `dst` to `byte`, flushing per `flags`, and drains unless told not to.
///
/// # Safety
/// `dst .. dst + len` is writable.
#[inline]
pub unsafe fn fill(dst: *mut u8, byte: u8, len: usize, flags: Flags) {
    fill_with(&config(), dst, byte, len, flags)
}

#[inline(always)]
unsafe fn flush_with(insn: FlushInsn, addr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let end = (addr as usize).saturating_add(len);
    let first = addr as usize & !(CACHE_LINE - 1);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::asm;
        // No `nomem`: the compiler must not move the stores being flushed past these.
        macro_rules! each_line {
            ($insn:literal) => {{
                let mut line = first;
                while line < end {
                    asm!(concat!($insn, " [{0}]"), in(reg) line, options(nostack, preserves_flags));
                    line += CACHE_LINE;
                }
            }};
        }
        match insn {
            FlushInsn::Clwb => each_line!("clwb"),
            FlushInsn::Clflushopt => each_line!("clflushopt"),
            FlushInsn::Clflush => each_line!("clflush"),
            FlushInsn::None => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (insn, first, end);
}

/// Whether copying forward would overwrite source bytes before they are read.
fn must_copy_backward(dst: *const u8, src: *const u8, len: usize) -> bool {
    let (d, s) = (dst as usize, src as usize);
    d > s && d - s < len
}

fn use_movnt(config: &Config, len: usize, flags: Flags) -> bool {
    config.movnt != Vector::None
        && !flags.temporal
        && (flags.nontemporal || len >= config.movnt_threshold)
}

#[inline(always)]
unsafe fn copy_with(config: &Config, dst: *mut u8, src: *const u8, len: usize, flags: Flags) {
    if flags.noflush {
        ptr::copy(src, dst, len);
        return;
    }
    if use_movnt(config, len, flags) {
        copy_movnt(config.flush, config.movnt, dst, src, len);
    } else {
        copy_flushed(config.flush, dst, src, len);
    }
    if !flags.nodrain {
        drain();
    }
}

#[inline(always)]
unsafe fn fill_with(config: &Config, dst: *mut u8, byte: u8, len: usize, flags: Flags) {
    if flags.noflush {
        ptr::write_bytes(dst, byte, len);
        return;
    }
    if use_movnt(config, len, flags) {
        fill_movnt(config.flush, config.movnt, dst, byte, len);
    } else {
        fill_flushed(config.flush, dst, byte, len);
    }
    if !flags.nodrain {
        drain();
    }
}

#[inline(never)]
unsafe fn fill_flushed(insn: FlushInsn, dst: *mut u8, byte: u8, len: usize) {
    let mut done = 0;
    while done < len {
        let n = chunk_from(dst as usize + done, len - done);
        ptr::write_bytes(dst.add(done), byte, n);
        flush_with(insn, dst.add(done), n);
        done += n;
    }
}

/// Bytes from `at` to the next FLUSH_CHUNK boundary, at most `left`: pieces end on whole
/// lines, so no line is flushed twice.
fn chunk_from(at: usize, left: usize) -> usize {
    (FLUSH_CHUNK - at % FLUSH_CHUNK).min(left)
}

/// Ordinary stores, each piece flushed while it is still cached; pieces go in the order the
/// overlap allows.
#[inline(never)]
unsafe fn copy_flushed(insn: FlushInsn, dst: *mut u8, src: *const u8, len: usize) {
    if len <= FLUSH_CHUNK {
        ptr::copy(src, dst, len);
        flush_with(insn, dst, len);
    } else if !must_copy_backward(dst, src, len) {
        let mut done = 0;
        while done < len {
            let n = chunk_from(dst as usize + done, len - done);
            ptr::copy(src.add(done), dst.add(done), n);
            flush_with(insn, dst.add(done), n);
            done += n;
        }
    } else {
        let mut left = len;
        while left > 0 {
            let at = dst as usize + left - 1;
            let n = (at % FLUSH_CHUNK + 1).min(left);
            left -= n;
            ptr::copy(src.add(left), dst.add(left), n);
            flush_with(insn, dst.add(left), n);
        }
    }
}

/// The bytes before `dst`'s first whole line, the whole lines, and the bytes after them.
fn split_lines(dst: *const u8, len: usize) -> (usize, usize, usize) {
    let head = ((CACHE_LINE - dst as usize % CACHE_LINE) % CACHE_LINE).min(len);
    let lines = (len - head) / CACHE_LINE;
    (head, lines, len - head - lines * CACHE_LINE)
}

/// Moves fewer than 64 bytes: every load before any store, so the ranges may overlap; no
/// call for the partial lines at the ends of a non-temporal copy.
#[inline(always)]
unsafe fn move_small(dst: *mut u8, src: *const u8, n: usize) {
    macro_rules! two {
        ($t:ty) => {{
            let w = std::mem::size_of::<$t>();
            let a = ptr::read_unaligned(src as *const $t);
            let b = ptr::read_unaligned(src.add(n - w) as *const $t);
            ptr::write_unaligned(dst as *mut $t, a);
            ptr::write_unaligned(dst.add(n - w) as *mut $t, b);
        }};
    }
    debug_assert!(n < 64);
    if n >= 32 {
        two!([u64; 4])
    } else if n >= 16 {
        two!([u64; 2])
    } else if n >= 8 {
        two!(u64)
    } else if n >= 4 {
        two!(u32)
    } else if n >= 2 {
        two!(u16)
    } else if n == 1 {
        *dst = *src;
    }
}

/// Partial lines by ordinary stores and a flush, whole lines by non-temporal stores.
#[inline(never)]
unsafe fn copy_movnt(insn: FlushInsn, v: Vector, dst: *mut u8, src: *const u8, len: usize) {
    let (head, lines, tail) = split_lines(dst, len);
    let body = head + lines * CACHE_LINE;
    let part = |at: usize, n: usize| {
        if n > 0 {
            move_small(dst.add(at), src.add(at), n);
            flush_with(insn, dst.add(at), n);
        }
    };
    if !must_copy_backward(dst, src, len) {
        part(0, head);
        stream::copy_forward(v, dst.add(head), src.add(head), lines);
        part(body, tail);
    } else {
        part(body, tail);
        stream::copy_backward(v, dst.add(head), src.add(head), lines);
        part(0, head);
    }
}

#[inline(never)]
unsafe fn fill_movnt(insn: FlushInsn, v: Vector, dst: *mut u8, byte: u8, len: usize) {
    let (head, lines, tail) = split_lines(dst, len);
    let body = head + lines * CACHE_LINE;
    if head > 0 {
        ptr::write_bytes(dst, byte, head);
        flush_with(insn, dst, head);
    }
    stream::fill(v, dst.add(head), byte, lines);
    if tail > 0 {
        ptr::write_bytes(dst.add(body), byte, tail);
        flush_with(insn, dst.add(body), tail);
    }
}

/// Whole cache lines written with non-temporal stores. `dst` is 64-byte aligned; `src` need
/// not be. Each group of lines is loaded before it is stored, and groups go in the order the
/// overlap allows, so a memmove's source is read before it is overwritten.
mod stream {
    use super::Vector;

    pub unsafe fn copy_forward(v: Vector, dst: *mut u8, src: *const u8, lines: usize) {
        match v {
            #[cfg(target_arch = "x86_64")]
            Vector::Avx512 => x86::copy_forward_avx512(dst, src, lines),
            #[cfg(target_arch = "x86_64")]
            Vector::Avx2 => x86::copy_forward_avx2(dst, src, lines),
            #[cfg(target_arch = "x86_64")]
            Vector::Sse2 => x86::copy_forward_sse2(dst, src, lines),
            _ => std::ptr::copy(src, dst, lines * super::CACHE_LINE),
        }
    }

    pub unsafe fn copy_backward(v: Vector, dst: *mut u8, src: *const u8, lines: usize) {
        match v {
            #[cfg(target_arch = "x86_64")]
            Vector::Avx512 => x86::copy_backward_avx512(dst, src, lines),
            #[cfg(target_arch = "x86_64")]
            Vector::Avx2 => x86::copy_backward_avx2(dst, src, lines),
            #[cfg(target_arch = "x86_64")]
            Vector::Sse2 => x86::copy_backward_sse2(dst, src, lines),
            _ => std::ptr::copy(src, dst, lines * super::CACHE_LINE),
        }
    }

    pub unsafe fn fill(v: Vector, dst: *mut u8, byte: u8, lines: usize) {
        match v {
            #[cfg(target_arch = "x86_64")]
            Vector::Avx512 => x86::fill_avx512(dst, byte, lines),
            #[cfg(target_arch = "x86_64")]
            Vector::Avx2 => x86::fill_avx2(dst, byte, lines),
            #[cfg(target_arch = "x86_64")]
            Vector::Sse2 => x86::fill_sse2(dst, byte, lines),
            _ => std::ptr::write_bytes(dst, byte, lines * super::CACHE_LINE),
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        //! Assembly, one loop per vector width: four lines loaded, then four streamed, then
        //! one line a turn for the rest. (The AVX-512 intrinsics need Rust 1.89, above this
        //! crate's minimum; the AVX2 and SSE2 ones are assembly inside anyway and cannot fold
        //! the store offsets.) Each function needs the instructions it names (CPUID is
        //! checked before it is chosen), a 64-byte aligned `dst`, and valid ranges.

        use std::arch::asm;

        /// The body of a copy loop: `$group` moves four lines at [s] to [d] and advances both
        /// by 256 bytes (backward: first steps back), `$one` one line by 64.
        macro_rules! copy_kernel {
            ($fwd:ident, $bwd:ident, [$($group:literal),+], [$($one:literal),+], $vz:literal,
             $($clobber:tt)*) => {
                #[inline(never)]
                pub unsafe fn $fwd(dst: *mut u8, src: *const u8, lines: usize) {
                    asm!(
                        "2:",
                        "cmp {n}, 4",
                        "jb 3f",
                        $($group,)+
                        "add {s}, 256",
                        "add {d}, 256",
                        "sub {n}, 4",
                        "jmp 2b",
                        "3:",
                        "test {n}, {n}",
                        "jz 4f",
                        $($one,)+
                        "add {s}, 64",
                        "add {d}, 64",
                        "dec {n}",
                        "jmp 3b",
                        "4:",
                        $vz,
                        s = inout(reg) src => _,
                        d = inout(reg) dst => _,
                        n = inout(reg) lines => _,
                        $($clobber)*
                        options(nostack),
                    );
                }

                #[inline(never)]
                pub unsafe fn $bwd(dst: *mut u8, src: *const u8, lines: usize) {
                    asm!(
                        "shl {n}, 6",
                        "add {s}, {n}",
                        "add {d}, {n}",
                        "shr {n}, 6",
                        "2:",
                        "cmp {n}, 4",
                        "jb 3f",
                        "sub {s}, 256",
                        "sub {d}, 256",
                        $($group,)+
                        "sub {n}, 4",
                        "jmp 2b",
                        "3:",
                        "test {n}, {n}",
                        "jz 4f",
                        "sub {s}, 64",
                        "sub {d}, 64",
                        $($one,)+
                        "dec {n}",
                        "jmp 3b",
                        "4:",
                        $vz,
                        s = inout(reg) src => _,
                        d = inout(reg) dst => _,
                        n = inout(reg) lines => _,
                        $($clobber)*
                        options(nostack),
                    );
                }
            };
        }

        copy_kernel!(
            copy_forward_avx512,
            copy_backward_avx512,
            [
                "vmovdqu64 zmm0, [{s}]",
                "vmovdqu64 zmm1, [{s} + 64]",
                "vmovdqu64 zmm2, [{s} + 128]",
                "vmovdqu64 zmm3, [{s} + 192]",
                "vmovntdq [{d}], zmm0",
                "vmovntdq [{d} + 64], zmm1",
                "vmovntdq [{d} + 128], zmm2",
                "vmovntdq [{d} + 192], zmm3"
            ],
            ["vmovdqu64 zmm0, [{s}]", "vmovntdq [{d}], zmm0"],
            "vzeroupper",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
        );

        copy_kernel!(
            copy_forward_avx2,
            copy_backward_avx2,
            [
                "vmovdqu ymm0, [{s}]",
                "vmovdqu ymm1, [{s} + 32]",
                "vmovdqu ymm2, [{s} + 64]",
                "vmovdqu ymm3, [{s} + 96]",
                "vmovdqu ymm4, [{s} + 128]",
                "vmovdqu ymm5, [{s} + 160]",
                "vmovdqu ymm6, [{s} + 192]",
                "vmovdqu ymm7, [{s} + 224]",
                "vmovntdq [{d}], ymm0",
                "vmovntdq [{d} + 32], ymm1",
                "vmovntdq [{d} + 64], ymm2",
                "vmovntdq [{d} + 96], ymm3",
                "vmovntdq [{d} + 128], ymm4",
                "vmovntdq [{d} + 160], ymm5",
                "vmovntdq [{d} + 192], ymm6",
                "vmovntdq [{d} + 224], ymm7"
            ],
            [
                "vmovdqu ymm0, [{s}]",
                "vmovdqu ymm1, [{s} + 32]",
                "vmovntdq [{d}], ymm0",
                "vmovntdq [{d} + 32], ymm1"
            ],
            "vzeroupper",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
        );

        copy_kernel!(
            copy_forward_sse2,
            copy_backward_sse2,
            [
                "movdqu xmm0, [{s}]",
                "movdqu xmm1, [{s} + 16]",
                "movdqu xmm2, [{s} + 32]",
                "movdqu xmm3, [{s} + 48]",
                "movdqu xmm4, [{s} + 64]",
                "movdqu xmm5, [{s} + 80]",
                "movdqu xmm6, [{s} + 96]",
                "movdqu xmm7, [{s} + 112]",
                "movdqu xmm8, [{s} + 128]",
                "movdqu xmm9, [{s} + 144]",
                "movdqu xmm10, [{s} + 160]",
                "movdqu xmm11, [{s} + 176]",
                "movdqu xmm12, [{s} + 192]",
                "movdqu xmm13, [{s} + 208]",
                "movdqu xmm14, [{s} + 224]",
                "movdqu xmm15, [{s} + 240]",
                "movntdq [{d}], xmm0",
                "movntdq [{d} + 16], xmm1",
                "movntdq [{d} + 32], xmm2",
                "movntdq [{d} + 48], xmm3",
                "movntdq [{d} + 64], xmm4",
                "movntdq [{d} + 80], xmm5",
                "movntdq [{d} + 96], xmm6",
                "movntdq [{d} + 112], xmm7",
                "movntdq [{d} + 128], xmm8",
                "movntdq [{d} + 144], xmm9",
                "movntdq [{d} + 160], xmm10",
                "movntdq [{d} + 176], xmm11",
                "movntdq [{d} + 192], xmm12",
                "movntdq [{d} + 208], xmm13",
                "movntdq [{d} + 224], xmm14",
                "movntdq [{d} + 240], xmm15"
            ],
            [
                "movdqu xmm0, [{s}]",
                "movdqu xmm1, [{s} + 16]",
                "movdqu xmm2, [{s} + 32]",
                "movdqu xmm3, [{s} + 48]",
                "movntdq [{d}], xmm0",
                "movntdq [{d} + 16], xmm1",
                "movntdq [{d} + 32], xmm2",
                "movntdq [{d} + 48], xmm3"
            ],
            "",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );

        /// Fills `lines` lines with the register `$broadcast` sets up: `$group` stores four
        /// lines at [d], `$one` one line.
        macro_rules! fill_kernel {
            ($name:ident, [$($broadcast:literal),+], [$($group:literal),+], [$($one:literal),+],
             $vz:literal) => {
                #[inline(never)]
                pub unsafe fn $name(dst: *mut u8, byte: u8, lines: usize) {
                    let word = u32::from(byte) * 0x0101_0101;
                    asm!(
                        $($broadcast,)+
                        "2:",
                        "cmp {n}, 4",
                        "jb 3f",
                        $($group,)+
                        "add {d}, 256",
                        "sub {n}, 4",
                        "jmp 2b",
                        "3:",
                        "test {n}, {n}",
                        "jz 4f",
                        $($one,)+
                        "add {d}, 64",
                        "dec {n}",
                        "jmp 3b",
                        "4:",
                        $vz,
                        w = in(reg) word,
                        d = inout(reg) dst => _,
                        n = inout(reg) lines => _,
                        out("xmm0") _,
                        options(nostack),
                    );
                }
            };
        }

        // VPBROADCASTB would need AVX-512BW: four copies of the byte, broadcast as dwords.
        fill_kernel!(
            fill_avx512,
            ["vpbroadcastd zmm0, {w:e}"],
            [
                "vmovntdq [{d}], zmm0",
                "vmovntdq [{d} + 64], zmm0",
                "vmovntdq [{d} + 128], zmm0",
                "vmovntdq [{d} + 192], zmm0"
            ],
            ["vmovntdq [{d}], zmm0"],
            "vzeroupper"
        );

        fill_kernel!(
            fill_avx2,
            ["vmovd xmm0, {w:e}", "vpbroadcastd ymm0, xmm0"],
            [
                "vmovntdq [{d}], ymm0",
                "vmovntdq [{d} + 32], ymm0",
                "vmovntdq [{d} + 64], ymm0",
                "vmovntdq [{d} + 96], ymm0",
                "vmovntdq [{d} + 128], ymm0",
                "vmovntdq [{d} + 160], ymm0",
                "vmovntdq [{d} + 192], ymm0",
                "vmovntdq [{d} + 224], ymm0"
            ],
            ["vmovntdq [{d}], ymm0", "vmovntdq [{d} + 32], ymm0"],
            "vzeroupper"
        );

        fill_kernel!(
            fill_sse2,
            ["movd xmm0, {w:e}", "pshufd xmm0, xmm0, 0"],
            [
                "movntdq [{d}], xmm0",
                "movntdq [{d} + 16], xmm0",
                "movntdq [{d} + 32], xmm0",
                "movntdq [{d} + 48], xmm0",
                "movntdq [{d} + 64], xmm0",
                "movntdq [{d} + 80], xmm0",
                "movntdq [{d} + 96], xmm0",
                "movntdq [{d} + 112], xmm0",
                "movntdq [{d} + 128], xmm0",
                "movntdq [{d} + 144], xmm0",
                "movntdq [{d} + 160], xmm0",
                "movntdq [{d} + 176], xmm0",
                "movntdq [{d} + 192], xmm0",
                "movntdq [{d} + 208], xmm0",
                "movntdq [{d} + 224], xmm0",
                "movntdq [{d} + 240], xmm0"
            ],
            [
                "movntdq [{d}], xmm0",
                "movntdq [{d} + 16], xmm0",
                "movntdq [{d} + 32], xmm0",
                "movntdq [{d} + 48], xmm0"
            ],
            ""
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_packs_into_one_word() {
        for flush in [
            FlushInsn::Clflush,
            FlushInsn::Clflushopt,
            FlushInsn::Clwb,
            FlushInsn::None,
        ] {
            for movnt in [Vector::None, Vector::Sse2, Vector::Avx2, Vector::Avx512] {
                for movnt_threshold in [0, 1, 256, 4097, THRESHOLD_MAX] {
                    let c = Config {
                        flush,
                        movnt,
                        movnt_threshold,
                    };
                    assert_ne!(c.pack(), 0);
                    assert_eq!(Config::unpack(c.pack()), c);
                }
            }
        }
    }

    #[test]
    fn environment_takes_choices_away() {
        let all = Cpu {
            clflush: true,
            clflushopt: true,
            clwb: true,
            sse2: true,
            avx2: true,
            avx512f: true,
            intel: false,
        };
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, Vec<u8>)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            Env::from_lookup(|name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        let c = choose(all, env(&[]));
        assert_eq!(
            (c.flush, c.movnt, c.movnt_threshold),
            (FlushInsn::Clwb, Vector::Avx512, DEFAULT_MOVNT_THRESHOLD)
        );
        assert_eq!(
            choose(all, env(&[("PFN_NO_CLWB", "1")])).flush,
            FlushInsn::Clflushopt
        );
        assert_eq!(
            choose(all, env(&[("PFN_NO_CLWB", "0")])).flush,
            FlushInsn::Clwb
        );
        assert_eq!(
            choose(all, env(&[("PFN_NO_CLWB", "")])).flush,
            FlushInsn::Clwb
        );
        let both = env(&[("PFN_NO_CLWB", "yes"), ("PFN_NO_CLFLUSHOPT", "1")]);
        assert_eq!(choose(all, both).flush, FlushInsn::Clflush);
        assert_eq!(
            choose(all, env(&[("PFN_NO_AVX512", "1")])).movnt,
            Vector::Avx2
        );
        assert_eq!(
            choose(all, env(&[("PFN_NO_AVX2", "1")])).movnt,
            Vector::Sse2
        );
        assert_eq!(
            choose(all, env(&[("PFN_NO_MOVNT", "1")])).movnt,
            Vector::None
        );
        assert_eq!(
            choose(all, env(&[("PFN_MOVNT_THRESHOLD", "0")])).movnt_threshold,
            0
        );
        assert_eq!(
            choose(all, env(&[("PFN_MOVNT_THRESHOLD", "4096")])).movnt_threshold,
            4096
        );
        let intel = Cpu { intel: true, ..all };
        assert_eq!(
            choose(intel, env(&[])).movnt_threshold,
            INTEL_MOVNT_THRESHOLD
        );
        assert_eq!(
            choose(intel, env(&[("PFN_MOVNT_THRESHOLD", "64")])).movnt_threshold,
            64
        );
        for bad in ["", "-1", "12k", "0x10", "99999999999999999999"] {
            let c = choose(all, env(&[("PFN_MOVNT_THRESHOLD", bad)]));
            assert_eq!(c.movnt_threshold, DEFAULT_MOVNT_THRESHOLD, "{bad}");
        }
        // What the CPU lacks is not chosen, whatever the environment says.
        let old = Cpu {
            clflush: true,
            sse2: true,
            ..Cpu::default()
        };
        let c = choose(old, env(&[]));
        assert_eq!((c.flush, c.movnt), (FlushInsn::Clflush, Vector::Sse2));
        assert_eq!(choose(Cpu::default(), env(&[])).movnt, Vector::None);
    }

    #[test]
    fn this_cpu_is_detected_consistently() {
        let cpu = detect_cpu();
        #[cfg(target_arch = "x86_64")]
        {
            assert!(cpu.clflush && cpu.sse2);
            assert_eq!(cpu.avx2, std::is_x86_feature_detected!("avx2"));
            assert_eq!(cpu.avx512f, std::is_x86_feature_detected!("avx512f"));
        }
        let _ = cpu;
        assert_ne!(CONFIG.load(Ordering::Relaxed), 0, "chosen at load time");
    }

    /// Every configuration this CPU can run.
    fn configs() -> Vec<Config> {
        let cpu = detect_cpu();
        let mut out = Vec::new();
        for movnt in [Vector::None, Vector::Sse2, Vector::Avx2, Vector::Avx512] {
            let ok = match movnt {
                Vector::None => true,
                Vector::Sse2 => cpu.sse2,
                Vector::Avx2 => cpu.avx2,
                Vector::Avx512 => cpu.avx512f,
            };
            for flush in [FlushInsn::Clflush, FlushInsn::Clflushopt, FlushInsn::Clwb] {
                let has = match flush {
                    FlushInsn::Clflush => cpu.clflush,
                    FlushInsn::Clflushopt => cpu.clflushopt,
                    _ => cpu.clwb,
                };
                if ok && has {
                    out.push(Config {
                        flush,
                        movnt,
                        movnt_threshold: 0,
                    });
                }
            }
        }
        out
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn copies_and_fills_are_byte_exact_on_every_path() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let lens: Vec<usize> = (0..=300)
            .chain([511, 512, 513, 4095, 4096, 4097, 4200, 9001])
            .collect();
        for config in configs() {
            for &len in &lens {
                let (da, sa) = ((rng.next() % 64) as usize, (rng.next() % 64) as usize);
                let src: Vec<u8> = (0..len + 128).map(|_| rng.next() as u8).collect();
                let mut dst = vec![0xEEu8; len + 256];
                let flags = Flags {
                    nodrain: len % 3 == 0,
                    ..Flags::default()
                };
                // SAFETY: in bounds of both vectors.
                unsafe {
                    copy_with(
                        &config,
                        dst.as_mut_ptr().add(64 + da),
                        src.as_ptr().add(sa),
                        len,
                        flags,
                    )
                };
                assert!(
                    dst[..64 + da].iter().all(|&b| b == 0xEE),
                    "{config:?} len {len}"
                );
                assert_eq!(
                    &dst[64 + da..64 + da + len],
                    &src[sa..sa + len],
                    "{config:?} len {len}"
                );
                assert!(
                    dst[64 + da + len..].iter().all(|&b| b == 0xEE),
                    "{config:?} len {len}"
                );
                // SAFETY: in bounds.
                unsafe {
                    fill_with(
                        &config,
                        dst.as_mut_ptr().add(64 + da),
                        0x5A,
                        len,
                        Flags::default(),
                    )
                };
                assert!(dst[..64 + da].iter().all(|&b| b == 0xEE));
                assert!(
                    dst[64 + da..64 + da + len].iter().all(|&b| b == 0x5A),
                    "{config:?} len {len}"
                );
                assert!(dst[64 + da + len..].iter().all(|&b| b == 0xEE));
            }
        }
    }

    #[test]
    fn overlapping_moves_either_way_match_a_plain_memmove() {
        let mut rng = Rng(12345);
        for config in configs() {
            for _ in 0..400 {
                let len = (rng.next() % 5000) as usize;
                let total = len + 300;
                let (a, b) = ((rng.next() % 300) as usize, (rng.next() % 300) as usize);
                let start: Vec<u8> = (0..total).map(|_| rng.next() as u8).collect();
                let mut want = start.clone();
                want.copy_within(a..a + len, b);
                let mut got = start.clone();
                let p = got.as_mut_ptr();
                // SAFETY: both ranges are inside `got`.
                unsafe { copy_with(&config, p.add(b), p.add(a), len, Flags::default()) };
                assert!(got == want, "{config:?} len {len} from {a} to {b}");
            }
        }
    }

    #[test]
    fn flags_pick_the_path_and_keep_the_bytes() {
        let config = config();
        let src: Vec<u8> = (0..10_000).map(|i| (i * 7) as u8).collect();
        for flags in [
            Flags {
                nontemporal: true,
                ..Flags::default()
            },
            Flags {
                temporal: true,
                ..Flags::default()
            },
            Flags {
                noflush: true,
                ..Flags::default()
            },
            Flags {
                nodrain: true,
                nontemporal: true,
                ..Flags::default()
            },
        ] {
            for len in [0, 1, 63, 64, 65, 1000, 10_000] {
                let mut dst = vec![0u8; 10_000];
                // SAFETY: in bounds.
                unsafe { copy_with(&config, dst.as_mut_ptr(), src.as_ptr(), len, flags) };
                drain();
                assert_eq!(&dst[..len], &src[..len]);
                assert!(dst[len..].iter().all(|&b| b == 0));
            }
        }
        assert!(!use_movnt(
            &Config {
                movnt: Vector::None,
                ..config
            },
            1 << 20,
            Flags {
                nontemporal: true,
                ..Flags::default()
            }
        ));
        let nt = Config {
            movnt: Vector::Sse2,
            movnt_threshold: 100,
            ..config
        };
        assert!(use_movnt(&nt, 100, Flags::default()));
        assert!(!use_movnt(&nt, 99, Flags::default()));
        assert!(use_movnt(
            &nt,
            1,
            Flags {
                nontemporal: true,
                ..Flags::default()
            }
        ));
        assert!(!use_movnt(
            &nt,
            1 << 20,
            Flags {
                temporal: true,
                ..Flags::default()
            }
        ));
    }

    #[test]
    fn flush_covers_every_line_touched() {
        let buf = vec![1u8; 4096];
        for config in configs() {
            for (at, len) in [(0, 0), (0, 1), (63, 2), (1, 4000), (4000, 96)] {
                // SAFETY: inside `buf`.
                unsafe { flush_with(config.flush, buf.as_ptr().add(at), len) };
            }
        }
        drain();
        assert_eq!(split_lines(64 as *const u8, 0), (0, 0, 0));
        assert_eq!(split_lines(65 as *const u8, 10), (10, 0, 0));
        assert_eq!(split_lines(65 as *const u8, 200), (63, 2, 9));
        assert_eq!(split_lines(128 as *const u8, 128), (0, 2, 0));
        assert_eq!(chunk_from(4095, 10), 1);
        assert_eq!(chunk_from(4096, 10_000), 4096);
    }
}
