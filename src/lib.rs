//! libpfn: pfn_t handles into a library-owned physical address space, translated in O(1).
//!
//! Layering: the modules below form a safe core that knows nothing of C; `ffi` is the only
//! place that takes raw pointers from callers, catches panics and sets errno.

mod dax;
pub mod encoding;
mod env;
pub mod error;
mod fork;
mod pagemaps;
pub mod persist;
pub mod pmem;
mod rcu;
pub mod space;
mod table;
mod tls;

pub mod ffi;

pub use encoding::Pfn;
pub use error::{Error, Result};
pub use pmem::{Granularity, MapOptions, PmemFile};
pub use space::{kmap, kmap_len, kunmap, Device};
