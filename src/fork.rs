//! What a child process inherits (the fork policy, documented in the header and README).
//!
//! - Registered ranges stay registered: the child shares the parent's mappings.
//! - The forking thread's kmaps and read sections stay held in the child, which is running
//!   that thread's code and will release them.
//! - Every other thread's holds are released in the child: those threads do not exist there,
//!   so an unregister in the child never waits for the parent's threads.
//! - No lock is left held: registration is held off across `fork()` and released on both sides.

use std::cell::RefCell;
use std::sync::{MutexGuard, OnceLock};

use crate::{rcu, space};

thread_local! {
    static HELD: RefCell<Option<MutexGuard<'static, space::State>>> = const { RefCell::new(None) };
}

/// Installs the handlers once per process.
pub(crate) fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: the handlers are plain functions with the required signature.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

extern "C" fn prepare() {
    let guard = space::lock_for_fork();
    HELD.with(|h| *h.borrow_mut() = Some(guard));
}

extern "C" fn parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn child() {
    rcu::after_fork_in_child();
    HELD.with(|h| drop(h.borrow_mut().take()));
}
