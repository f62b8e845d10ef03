//! The last failure's message, per thread (pfn_errormsg in C): the condition that failed and
//! the values involved, e.g. "the range's end + 1 (0x10001001) is not page-aligned".
//!
//! The core sets a message where it detects a condition; the C layer then prefixes the name of
//! the call (or, when the core said nothing, writes the call's name and the error's text), so
//! every failing call leaves one. The buffer lives in the thread's reader record, written with
//! single-byte atomic stores and nothing else: setting a message allocates nothing once the
//! thread is set up, so the async-signal-safe calls may fail with a message too (like errno, a
//! handler that fails a call overwrites the message the interrupted code may be about to read).
//! A thread that is not set up yet is set up to hold its message; if even that fails, a shared
//! buffer holds it (its text may then mix two threads' messages, never overrun).

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};

use crate::error::Error;
use crate::rcu;

/// Bytes a message keeps (the rest is cut); the last one is always NUL.
pub const CAP: usize = 192;

/// One thread's message.
pub struct Message {
    bytes: [AtomicU8; CAP],
    /// Set by [`set`], cleared by [`take_fresh`]: the core described the current failure.
    fresh: AtomicBool,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            bytes: [const { AtomicU8::new(0) }; CAP],
            fresh: AtomicBool::new(false),
        }
    }
}

static SHARED: Message = Message {
    bytes: [const { AtomicU8::new(0) }; CAP],
    fresh: AtomicBool::new(false),
};

/// A stack buffer that formats without allocating, cutting what does not fit.
struct Line {
    buf: [u8; CAP],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = CAP - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn message() -> &'static Message {
    match rcu::current_or_register() {
        Ok(r) => r.message(),
        Err(_) => &SHARED,
    }
}

/// The thread's message buffer without setting the thread up (no allocation, no lock: for the
/// calls promised async-signal-safe even on a thread that is not set up).
fn message_no_setup() -> &'static Message {
    rcu::current().map_or(&SHARED, |r| r.message())
}

fn store(m: &Message, line: &Line) {
    for (slot, &b) in m.bytes.iter().zip(&line.buf[..line.len]) {
        slot.store(b, Relaxed);
    }
    m.bytes[line.len].store(0, Relaxed);
}

/// Describes the current failure of this thread.
pub fn set(args: fmt::Arguments<'_>) {
    set_in(message(), args)
}

/// [`set`] without setting the thread up (see [`finish_no_setup`]).
pub fn set_no_setup(args: fmt::Arguments<'_>) {
    set_in(message_no_setup(), args)
}

fn set_in(m: &Message, args: fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; CAP],
        len: 0,
    };
    let _ = line.write_fmt(args);
    store(m, &line);
    m.fresh.store(true, Relaxed);
}

/// `Error::Invalid`, with its message.
pub fn invalid(args: fmt::Arguments<'_>) -> Error {
    set(args);
    Error::Invalid
}

/// `e`, with its message.
pub fn with(e: Error, args: fmt::Arguments<'_>) -> Error {
    set(args);
    e
}

/// Finishes the message of a failing call named `call`: prefixes the core's description, or
/// writes the error's text when the core gave none.
pub fn finish(call: &str, e: Error) {
    finish_in(message(), call, e)
}

/// [`finish`] without setting the thread up: a thread that is not set up uses the shared buffer.
pub fn finish_no_setup(call: &str, e: Error) {
    finish_in(message_no_setup(), call, e)
}

fn finish_in(m: &Message, call: &str, e: Error) {
    let mut line = Line {
        buf: [0; CAP],
        len: 0,
    };
    if m.fresh.swap(false, Relaxed) {
        let _ = write!(line, "{call}: ");
        let mut rest = [0u8; CAP];
        let mut n = 0;
        while n < CAP {
            let b = m.bytes[n].load(Relaxed);
            if b == 0 {
                break;
            }
            rest[n] = b;
            n += 1;
        }
        let _ = line.write_str(std::str::from_utf8(&rest[..n]).unwrap_or("(unreadable)"));
    } else {
        let _ = write!(line, "{call}: {e}");
        // The system's text alone, without Rust's " (os error N)".
        if let Some(cut) = line.buf[..line.len]
            .windows(10)
            .position(|w| w == b" (os error")
        {
            line.len = cut;
        }
    }
    store(m, &line);
}

/// The calling thread's last message (NUL-terminated; empty when none). Sets nothing up: a
/// thread that is not set up reads the shared buffer, where its calls that fail without
/// setting it up (the persistence calls) leave their messages.
pub fn current() -> *const u8 {
    message_no_setup().bytes.as_ptr() as *const u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> String {
        // SAFETY: NUL-terminated within CAP.
        unsafe { std::ffi::CStr::from_ptr(current() as *const std::ffi::c_char) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn messages_are_prefixed_or_generic_and_cut_to_fit() {
        std::thread::spawn(|| {
            set(format_args!("end + 1 ({:#x}) is not page-aligned", 0x1001));
            finish("register", Error::Invalid);
            assert_eq!(text(), "register: end + 1 (0x1001) is not page-aligned");
            finish("unregister", Error::NotFound);
            assert!(text().starts_with("unregister: No such file"), "{}", text());
            set(format_args!("{}", "x".repeat(1000)));
            assert_eq!(text().len(), CAP - 1);
        })
        .join()
        .unwrap();
    }
}
