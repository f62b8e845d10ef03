//! pfn_t and its helpers, with mainline Linux's names and the seed's `__` aliases.
#![allow(non_camel_case_types)]

use crate::encoding::Pfn;

/// log2 of the page size.
pub const PFN_PAGE_SHIFT: u32 = 12;
/// Bytes per page; every range and mapping is a multiple of it.
pub const PFN_PAGE_SIZE: u32 = 4096;
/// Every bit that may hold a flag (bits 52..63).
pub const PFN_FLAGS_MASK: u64 = !((1u64 << 52) - 1);
/// The value links to the next scatterlist chunk and names no frame (kmap refuses it).
pub const PFN_SG_CHAIN: u64 = 1u64 << 63;
/// Last scatterlist entry.
pub const PFN_SG_LAST: u64 = 1u64 << 62;
/// Not covered by the system memmap.
pub const PFN_DEV: u64 = 1u64 << 61;
/// Device memory that does have a memmap.
pub const PFN_MAP: u64 = 1u64 << 60;
/// Special mapping, never pinned.
pub const PFN_SPECIAL: u64 = 1u64 << 59;

/// A page-frame number (bits 0..51) plus flags (bits 52..63), mainline Linux's layout: a
/// flag-less pfn_t equals the raw pfn. Stable and position-independent: it may be stored on
/// media.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct pfn_t {
    pub val: u64,
}

/// The seed's name for pfn_t.
pub type __pfn_t = pfn_t;

impl From<Pfn> for pfn_t {
    fn from(p: Pfn) -> pfn_t {
        pfn_t { val: p.0 }
    }
}

impl From<pfn_t> for Pfn {
    fn from(p: pfn_t) -> Pfn {
        Pfn(p.val)
    }
}

/// `pfn | (flags & PFN_FLAGS_MASK)`; pfn bits at and above bit 52 are dropped.
#[no_mangle]
pub extern "C" fn __pfn_to_pfn_t(pfn: u64, flags: u64) -> pfn_t {
    Pfn::new(pfn, flags).into()
}

/// The flag-less handle of `pfn`.
#[no_mangle]
pub extern "C" fn pfn_to_pfn_t(pfn: u64) -> pfn_t {
    Pfn::new(pfn, 0).into()
}

/// The handle of the frame holding physical byte `phys` (`phys >> PFN_PAGE_SHIFT`), with flags.
#[no_mangle]
pub extern "C" fn phys_to_pfn_t(phys: u64, flags: u64) -> pfn_t {
    Pfn::from_phys(phys, flags).into()
}

/// The page-frame number, flags removed.
#[no_mangle]
pub extern "C" fn pfn_t_to_pfn(p: pfn_t) -> u64 {
    Pfn::from(p).pfn()
}

/// Physical address of the frame's first byte.
#[no_mangle]
pub extern "C" fn pfn_t_to_phys(p: pfn_t) -> u64 {
    Pfn::from(p).phys()
}

/// True when PFN_MAP is set or PFN_DEV is clear.
#[no_mangle]
pub extern "C" fn pfn_t_has_page(p: pfn_t) -> bool {
    Pfn::from(p).has_page()
}

/// True when both PFN_DEV and PFN_MAP are set.
#[no_mangle]
pub extern "C" fn pfn_t_devmap(p: pfn_t) -> bool {
    Pfn::from(p).devmap()
}

/// True when PFN_SPECIAL is set.
#[no_mangle]
pub extern "C" fn pfn_t_special(p: pfn_t) -> bool {
    Pfn::from(p).special()
}

/// The seed's name for pfn_t_has_page.
#[no_mangle]
pub extern "C" fn __pfn_t_has_page(p: pfn_t) -> bool {
    pfn_t_has_page(p)
}

/// The seed's name for pfn_t_to_pfn.
#[no_mangle]
pub extern "C" fn __pfn_t_to_pfn(p: pfn_t) -> u64 {
    pfn_t_to_pfn(p)
}

/// The seed's name for pfn_t_to_phys.
#[no_mangle]
pub extern "C" fn __pfn_t_to_phys(p: pfn_t) -> u64 {
    pfn_t_to_phys(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding as core;

    #[test]
    fn c_constants_match_the_core() {
        assert_eq!(PFN_PAGE_SHIFT, core::PAGE_SHIFT);
        assert_eq!(u64::from(PFN_PAGE_SIZE), core::PAGE_SIZE);
        assert_eq!(PFN_FLAGS_MASK, core::FLAGS_MASK);
        assert_eq!(PFN_SG_CHAIN, core::SG_CHAIN);
        assert_eq!(PFN_SG_LAST, core::SG_LAST);
        assert_eq!(PFN_DEV, core::DEV);
        assert_eq!(PFN_MAP, core::MAP);
        assert_eq!(PFN_SPECIAL, core::SPECIAL);
    }
}
