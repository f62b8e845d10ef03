//! One pointer-sized thread-local slot for the current thread's reader record.
//!
//! The slot is read on every kmap and kunmap, so its access model decides the fast path's cost.
//! Rust's `thread_local!` in a shared library compiles to the general-dynamic model: a call to
//! `__tls_get_addr` per access, which alone doubles the cost of an exported kmap/kunmap pair.
//! On x86_64 Linux we therefore define the slot in assembly and reach it with the initial-exec
//! model (one `%fs`-relative load), as C libraries such as liburcu do with
//! `__attribute__((tls_model("initial-exec")))`. glibc reserves surplus static TLS for libraries
//! loaded later with `dlopen` (Python's ctypes), and eight bytes fit in it easily.
//! Other targets fall back to `thread_local!`.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use core::arch::{asm, global_asm};

    // Hidden: visible to every object of this library, never exported from it.
    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl libpfn_reader_slot",
        ".hidden libpfn_reader_slot",
        ".type libpfn_reader_slot, @object",
        ".size libpfn_reader_slot, 8",
        "libpfn_reader_slot:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub fn get() -> usize {
        let value: usize;
        // SAFETY: reads this thread's own 8-byte TLS slot, defined above; no memory is written.
        unsafe {
            asm!(
                "movq libpfn_reader_slot@GOTTPOFF(%rip), {offset}",
                "movq %fs:({offset}), {value}",
                offset = out(reg) _,
                value = lateout(reg) value,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            );
        }
        value
    }

    #[inline(always)]
    pub fn set(value: usize) {
        // SAFETY: writes this thread's own 8-byte TLS slot, defined above.
        unsafe {
            asm!(
                "movq libpfn_reader_slot@GOTTPOFF(%rip), {offset}",
                "movq {value}, %fs:({offset})",
                offset = out(reg) _,
                value = in(reg) value,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(0) };
    }

    #[inline(always)]
    pub fn get() -> usize {
        SLOT.try_with(|s| s.get()).unwrap_or(0)
    }

    #[inline(always)]
    pub fn set(value: usize) {
        let _ = SLOT.try_with(|s| s.set(value));
    }
}

pub use imp::{get, set};

#[cfg(test)]
mod tests {
    #[test]
    fn slot_is_per_thread() {
        super::set(41);
        let other = std::thread::spawn(|| {
            let before = super::get();
            super::set(7);
            (before, super::get())
        })
        .join()
        .unwrap();
        assert_eq!(other, (0, 7));
        assert_eq!(super::get(), 41);
        super::set(0);
    }
}
