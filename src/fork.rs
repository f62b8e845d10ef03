//! What a child process inherits (the fork policy, documented in the header and README).
//!
//! - Registered ranges stay registered: the child shares the parent's mappings.
//! - The forking thread's kmaps and read sections stay held in the child, which is running
//!   that thread's code and will release them.
//! - Every other thread's holds are released in the child: those threads do not exist there,
//!   so an unregister in the child never waits for the parent's threads.
//! - No lock is left held: registration and the reader pools are held off across `fork()` and
//!   released on both sides; the grace-period lock is reset in the child.
//!
//! The handlers are installed once, when the library is loaded (see `lib.rs`), and stay valid:
//! the shared library is never unloaded (it is linked with `-z nodelete`).

use std::cell::UnsafeCell;

use crate::{rcu, space};

type Held = Option<(std::sync::MutexGuard<'static, space::State>, rcu::ForkGuard)>;

/// The guards taken in `prepare`, released in `parent`/`child`. Only the forking thread touches
/// it between the two, and two forking threads serialize on the locks it holds.
struct Slot(UnsafeCell<Held>);
// SAFETY: see above: one thread at a time, between prepare and parent/child.
unsafe impl Sync for Slot {}
static HELD: Slot = Slot(UnsafeCell::new(None));

/// Installs the handlers (once, at load).
pub(crate) fn install() {
    // SAFETY: the handlers are plain functions with the required signature.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    // The order every thread takes them in: registration, then the reader pools (a failing
    // registration sets up its thread's reader to hold the error message).
    let guards = (space::lock_for_fork(), rcu::lock_for_fork());
    // SAFETY: see `Slot`.
    unsafe { *HELD.0.get() = Some(guards) };
}

extern "C" fn parent() {
    // SAFETY: see `Slot`.
    drop(unsafe { (*HELD.0.get()).take() });
}

extern "C" fn child() {
    rcu::after_fork_in_child();
    crate::pin::after_fork_in_child();
    // SAFETY: see `Slot`.
    drop(unsafe { (*HELD.0.get()).take() });
}
