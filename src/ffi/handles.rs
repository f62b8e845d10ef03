//! Live opaque handles. Every pointer a caller passes back is looked up here first, so a stale
//! or foreign pointer (a double free, a pointer never returned by us) is refused with EINVAL
//! instead of being dereferenced. The address a handle has is that of its `Arc`'s contents,
//! kept allocated while any operation on it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub type Table<T> = BTreeMap<usize, Arc<T>>;

pub struct Handles<T> {
    live: Mutex<Table<T>>,
}

impl<T> Handles<T> {
    pub const fn new() -> Handles<T> {
        Handles {
            live: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<T>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `value` a live handle; returns its address. None: out of memory.
    pub fn add(&self, value: T) -> usize {
        let value = Arc::new(value);
        let key = Arc::as_ptr(&value) as usize;
        self.lock().insert(key, value);
        key
    }

    /// The object behind a live handle.
    pub fn get(&self, key: usize) -> Option<Arc<T>> {
        self.lock().get(&key).cloned()
    }

    /// Ends a live handle; the object is dropped when the last user lets go of it.
    pub fn remove(&self, key: usize) -> Option<Arc<T>> {
        self.lock().remove(&key)
    }

    /// Makes a removed handle live again, at the same address.
    pub fn restore(&self, value: Arc<T>) {
        let key = Arc::as_ptr(&value) as usize;
        self.lock().insert(key, value);
    }

    /// Holds the table across fork() so that the child does not inherit it locked by a thread
    /// that does not exist there. No thread ever holds this lock while taking another.
    pub fn lock_for_fork(&'static self) -> MutexGuard<'static, Table<T>> {
        self.lock()
    }
}
