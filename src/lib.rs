//! libpfn: pfn_t handles into a library-owned physical address space, translated in O(1).
//!
//! Layering: the modules below form a safe core that knows nothing of C; `ffi` is the only
//! place that takes raw pointers from callers, catches panics and sets errno.
//!
//! Ground floor: `encoding` (pfn_t), `error`, `env` (settings), `tls` (thread slots), `holds`
//! (a thread's kmap holds), `index` (fallible bookkeeping), `table` (the radix tables),
//! `persist` (CPU-cache flushing and non-temporal copies), `dax` (device-DAX sysfs). Above
//! them `rcu` (readers and grace periods), then `space` (devices, ranges, translation),
//! `pagemaps` and `pmem` (mapped files), `sg` (scatterlists: copies and iovecs through
//! translated extents), `daxdev` (DAX devices: direct_access and the I/O path over one
//! range); `fork` ties the core's locks to fork().

mod dax;
pub mod daxdev;
pub mod encoding;
mod env;
pub mod errmsg;
pub mod error;
mod fork;
mod holds;
mod index;
mod label;
pub mod memmap;
mod pagemaps;
pub mod persist;
pub mod pin;
pub mod pmem;
pub mod rcu;
pub mod sg;
pub mod space;
mod table;
mod tls;

pub mod ffi;

pub use encoding::Pfn;
pub use error::{Error, Result};
pub use pmem::{Granularity, MapOptions, PmemFile};
pub use space::{kmap, kmap_len, kunmap, Device};

/// Runs once when the library is loaded (shared or static): fork handlers are installed
/// before any thread can take a library lock.
extern "C" fn on_load() {
    fork::install();
    // Published before any caller can read it: the header reads it as a constant.
    tls::publish_offset();
    ffi::on_load();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
