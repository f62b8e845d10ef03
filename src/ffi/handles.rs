//! Live opaque handles. Every pointer a caller passes back is looked up here first, so a stale
//! or foreign pointer (a double free, a pointer never returned by us) is refused with EINVAL
//! instead of being dereferenced. The address a handle has is that of its `Arc`'s contents,
//! kept allocated while any operation on it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct Handles<T> {
    live: Mutex<BTreeMap<usize, Arc<T>>>,
}

impl<T> Handles<T> {
    pub const fn new() -> Handles<T> {
        Handles {
            live: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Arc<T>>> {
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
}
