//! Pseudo-physical ↔ machine frame translation for a PV guest: the p2m list Xen built for us
//! (`start_info.mfn_list`) and Xen's read-only machine-to-phys table.

use xen_abi::pte::Mfn;

/// Xen maps the machine-to-phys table read-only at the start of its reserved hole.
const MACHINE_TO_PHYS: *const u64 = 0xFFFF_8000_0000_0000 as *const u64;

/// A pseudo-physical frame number; with virt_base 0 its direct-map address is `pfn << 12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pfn(pub u64);

impl Pfn {
    pub fn va(self) -> u64 {
        self.0 << 12
    }

    pub fn of_va(va: u64) -> Pfn {
        Pfn(va >> 12)
    }
}

pub struct P2m {
    list: *const u64,
    nr_pages: u64,
}

// SAFETY: the list is only read, and Xen does not change it for a running PV guest of ours.
unsafe impl Sync for P2m {}
// SAFETY: as above.
unsafe impl Send for P2m {}

impl P2m {
    /// # Safety
    /// `list` must be start_info's `mfn_list` covering `nr_pages` entries, mapped for good.
    pub unsafe fn new(list: u64, nr_pages: u64) -> Self {
        Self {
            list: list as *const u64,
            nr_pages,
        }
    }

    pub fn mfn(&self, pfn: Pfn) -> Mfn {
        assert!(
            pfn.0 < self.nr_pages,
            "pfn {:#x} beyond nr_pages {:#x}",
            pfn.0,
            self.nr_pages
        );
        // SAFETY: in bounds (checked above) of the list Xen built for us.
        Mfn(unsafe { core::ptr::read_volatile(self.list.add(pfn.0 as usize)) })
    }

    /// The pfn of one of our own machine frames, checked against the p2m (the M2P entry of a
    /// frame that is not ours is meaningless).
    pub fn pfn(&self, mfn: Mfn) -> Option<Pfn> {
        // SAFETY: Xen maps the whole M2P read-only into every PV guest; a frame number beyond
        // the host's memory would fault, but every mfn passed here comes from our own tables.
        let pfn = unsafe { core::ptr::read_volatile(MACHINE_TO_PHYS.add(mfn.0 as usize)) };
        (pfn < self.nr_pages && self.mfn(Pfn(pfn)) == mfn).then_some(Pfn(pfn))
    }
}
