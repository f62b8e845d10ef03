//! Thread-local slots: the current thread's reader record, and a flag set while the thread's
//! own set-up runs (so that a signal handler interrupting it fails instead of deadlocking).
//!
//! The record slot is read on every kmap and kunmap, so its access model decides the fast
//! path's cost. Rust's `thread_local!` in a shared library compiles to the general-dynamic model:
//! a call to `__tls_get_addr` per access, which alone doubles the cost of an exported kmap/kunmap
//! pair. On x86_64 Linux we therefore define the slots in assembly and reach them with the
//! initial-exec model (one `%fs`-relative load), as C libraries such as liburcu do with
//! `__attribute__((tls_model("initial-exec")))`. glibc reserves surplus static TLS for libraries
//! loaded later with `dlopen` (Python's ctypes), and sixteen bytes fit in it easily.
//!
//! The slot's offset from the thread pointer is the same in every thread, so the C header's
//! inline fast paths reach the record too: the offset is published in `pfn_reader_tls_offset`
//! (0 until the first thread is set up, and on targets without the assembly slot, where the
//! inline paths fall back to exported calls).
//! Other targets fall back to `thread_local!`.

use std::sync::atomic::{AtomicIsize, Ordering};

/// The record slot's offset from the thread pointer, for the header's inline fast paths; 0
/// when unknown. (A linkage name the C header declares; the core sets it.)
#[export_name = "pfn_reader_tls_offset"]
pub static READER_TLS_OFFSET: AtomicIsize = AtomicIsize::new(0);

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
        ".globl libpfn_setup_slot",
        ".hidden libpfn_setup_slot",
        ".type libpfn_setup_slot, @object",
        ".size libpfn_setup_slot, 8",
        "libpfn_setup_slot:",
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

    pub fn registering() -> bool {
        let value: usize;
        // SAFETY: reads this thread's own setup slot.
        unsafe {
            asm!(
                "movq libpfn_setup_slot@GOTTPOFF(%rip), {offset}",
                "movq %fs:({offset}), {value}",
                offset = out(reg) _,
                value = lateout(reg) value,
                options(att_syntax, nostack, preserves_flags, readonly),
            );
        }
        value != 0
    }

    pub fn set_registering(on: bool) {
        // SAFETY: writes this thread's own setup slot.
        unsafe {
            asm!(
                "movq libpfn_setup_slot@GOTTPOFF(%rip), {offset}",
                "movq {value}, %fs:({offset})",
                offset = out(reg) _,
                value = in(reg) on as usize,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    }

    /// The record slot's offset from the thread pointer (the same in every thread).
    pub fn offset() -> isize {
        let offset: isize;
        // SAFETY: loads the GOT entry that holds the slot's thread-pointer offset.
        unsafe {
            asm!(
                "movq libpfn_reader_slot@GOTTPOFF(%rip), {offset}",
                offset = out(reg) offset,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            );
        }
        offset
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(0) };
        static SETUP: Cell<bool> = const { Cell::new(false) };
    }

    #[inline(always)]
    pub fn get() -> usize {
        SLOT.try_with(|s| s.get()).unwrap_or(0)
    }

    #[inline(always)]
    pub fn set(value: usize) {
        let _ = SLOT.try_with(|s| s.set(value));
    }

    pub fn registering() -> bool {
        SETUP.try_with(|s| s.get()).unwrap_or(false)
    }

    pub fn set_registering(on: bool) {
        let _ = SETUP.try_with(|s| s.set(on));
    }

    /// No fixed offset: the header's inline paths use the exported calls.
    pub fn offset() -> isize {
        0
    }
}

pub use imp::{get, registering, set, set_registering};

/// Publishes the slot's offset for the header's inline fast paths (idempotent).
pub fn publish_offset() {
    if READER_TLS_OFFSET.load(Ordering::Relaxed) == 0 {
        READER_TLS_OFFSET.store(imp::offset(), Ordering::Release);
    }
}

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
