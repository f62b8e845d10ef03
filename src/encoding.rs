//! The pfn_t encoding: a page-frame number in the low 52 bits, flags in the top 12.
//!
//! This is mainline Linux's layout (`include/linux/pfn_t.h`, v4.5 to v6.x), chosen over the seed's
//! low-bit flags so that a flag-less handle equals the raw pfn and every 4 KiB frame of a 64-bit
//! physical space is describable (the 32-bit highmem objection in the review).

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes per page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Every bit that may hold a flag (bits 52..63).
pub const FLAGS_MASK: u64 = 0xFFF0_0000_0000_0000;
/// The value links to the next scatterlist chunk; it names no frame.
pub const SG_CHAIN: u64 = 1 << 63;
/// Last scatterlist entry.
pub const SG_LAST: u64 = 1 << 62;
/// Not covered by the system memmap.
pub const DEV: u64 = 1 << 61;
/// Device memory that does have a memmap.
pub const MAP: u64 = 1 << 60;
/// Special mapping, never pinned.
pub const SPECIAL: u64 = 1 << 59;
/// Largest page-frame number a handle can carry.
pub const MAX_PFN: u64 = !FLAGS_MASK;

/// A page-frame number plus flag bits: a stable, position-independent handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(pub u64);

impl Pfn {
    /// `pfn | (flags & FLAGS_MASK)`; pfn bits above the 52-bit limit are dropped, as in Linux.
    pub const fn new(pfn: u64, flags: u64) -> Pfn {
        Pfn((pfn & MAX_PFN) | (flags & FLAGS_MASK))
    }

    /// The handle of the frame holding physical byte `phys`.
    pub const fn from_phys(phys: u64, flags: u64) -> Pfn {
        Pfn::new(phys >> PAGE_SHIFT, flags)
    }

    pub const fn pfn(self) -> u64 {
        self.0 & MAX_PFN
    }

    pub const fn flags(self) -> u64 {
        self.0 & FLAGS_MASK
    }

    /// Physical address of the frame's first byte.
    pub const fn phys(self) -> u64 {
        self.pfn() << PAGE_SHIFT
    }

    /// True when the frame has page metadata: MAP set, or DEV clear.
    pub const fn has_page(self) -> bool {
        self.0 & MAP != 0 || self.0 & DEV == 0
    }

    /// True when both DEV and MAP are set.
    pub const fn devmap(self) -> bool {
        self.0 & (DEV | MAP) == (DEV | MAP)
    }

    pub const fn special(self) -> bool {
        self.0 & SPECIAL != 0
    }

    pub const fn sg_chain(self) -> bool {
        self.0 & SG_CHAIN != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagless_handle_equals_pfn() {
        assert_eq!(Pfn::new(12345, 0).0, 12345);
        assert_eq!(Pfn::new(MAX_PFN, 0).pfn(), MAX_PFN);
    }

    #[test]
    fn flags_live_in_top_bits_only() {
        let p = Pfn::new(7, DEV | MAP | 0xff);
        assert_eq!(p.flags(), DEV | MAP);
        assert_eq!(p.pfn(), 7);
        assert_eq!(Pfn::new(MAX_PFN + 1, 0).pfn(), 0);
    }

    #[test]
    fn phys_round_trip() {
        let p = Pfn::from_phys(0x1234_5678_9000 + 0x123, SPECIAL);
        assert_eq!(p.phys(), 0x1234_5678_9000);
        assert!(p.special());
        assert_eq!(
            Pfn::new(MAX_PFN, SG_CHAIN).phys(),
            u64::MAX - (PAGE_SIZE - 1)
        );
    }

    #[test]
    fn has_page_and_devmap() {
        assert!(Pfn::new(1, 0).has_page());
        assert!(!Pfn::new(1, DEV).has_page());
        assert!(Pfn::new(1, DEV | MAP).has_page());
        assert!(Pfn::new(1, MAP).has_page());
        assert!(Pfn::new(1, DEV | MAP).devmap());
        assert!(!Pfn::new(1, DEV).devmap());
        assert!(!Pfn::new(1, MAP).devmap());
    }
}
