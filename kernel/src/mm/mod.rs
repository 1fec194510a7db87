//! Memory: pages of the image remapped onto Xen-provided frames, the page-table layer, the
//! frame allocator and the heap.

use core::cell::UnsafeCell;

use crate::xen::hypercall::{self, XenResult};

pub const PAGE_SIZE: usize = 4096;

/// A page-aligned page inside the kernel image whose mapping is later replaced by a frame Xen
/// shares with us (shared_info, the console ring, the xenstore ring). Only raw pointers to it
/// are handed out: Xen or a peer writes these frames at any moment.
#[repr(C, align(4096))]
pub struct StaticPage(UnsafeCell<[u8; PAGE_SIZE]>);

// SAFETY: the contents are only reached through raw pointers with volatile/atomic accesses.
unsafe impl Sync for StaticPage {}

impl StaticPage {
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; PAGE_SIZE]))
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }

    /// Maps machine frame `mfn` (one of this domain's own frames, or shared_info) at this page.
    pub fn map_frame(&self, mfn: u64) -> XenResult<()> {
        self.map_maddr(mfn << 12)
    }

    /// Maps the frame at machine address `maddr` at this page, read-write.
    pub fn map_maddr(&self, maddr: u64) -> XenResult<()> {
        const PRESENT_RW_USER: u64 = 0x7;
        // SAFETY: the page is dedicated to this use; nothing holds a reference into it, and
        // after the call it is backed by the given frame, which is what users expect.
        unsafe {
            hypercall::update_va_mapping(
                self.as_ptr() as u64,
                (maddr & !0xfff) | PRESENT_RW_USER,
                hypercall::UVMF_INVLPG,
            )
        }
    }
}

impl Default for StaticPage {
    fn default() -> Self {
        Self::new()
    }
}
