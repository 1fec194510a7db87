//! `HeapRegion`: a page-aligned heap buffer that implements [`SharedMemory`], for tests, the
//! fuzz harness and single-process use. Optionally surrounded by guard pages whose contents can
//! be checked afterwards, to prove nothing wrote outside the region.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;

use crate::layout::PAGE_SIZE;
use crate::transport::SharedMemory;

/// Byte written into guard pages.
const GUARD_BYTE: u8 = 0xA5;

/// A zeroed, page-aligned heap allocation exposed as shared memory.
pub struct HeapRegion {
    allocation: NonNull<u8>,
    layout: Layout,
    /// Offset of the exposed window inside the allocation (one page when guarded).
    window_offset: usize,
    /// Length reported by `SharedMemory::len`.
    window_len: usize,
}

// SAFETY: the allocation is owned by this value; the only accesses to its window go through
// `SharedRegion`'s atomics, which are sound from any thread.
unsafe impl Send for HeapRegion {}
// SAFETY: as above.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    fn allocate(alloc_len: usize) -> (NonNull<u8>, Layout) {
        let layout = Layout::from_size_align(alloc_len.max(PAGE_SIZE), PAGE_SIZE)
            .expect("heap region size overflows a Layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(ptr) => (ptr, layout),
            None => alloc::alloc::handle_alloc_error(layout),
        }
    }

    /// `len` zeroed bytes (round `len` to whole pages for use as a ring or data region).
    pub fn new(len: usize) -> Self {
        let (allocation, layout) = Self::allocate(len);
        HeapRegion {
            allocation,
            layout,
            window_offset: 0,
            window_len: len,
        }
    }

    /// Allocates `alloc_len` bytes but reports `reported_len` (tests of region validation).
    pub fn new_unchecked_len(alloc_len: usize, reported_len: usize) -> Self {
        let (allocation, layout) = Self::allocate(alloc_len.max(reported_len));
        HeapRegion {
            allocation,
            layout,
            window_offset: 0,
            window_len: reported_len,
        }
    }

    /// `len` zeroed bytes with a guard page filled with a known pattern on each side.
    pub fn with_guards(len: usize) -> Self {
        let total = len
            .checked_add(2 * PAGE_SIZE)
            .expect("heap region size overflows");
        let (allocation, layout) = Self::allocate(total);
        let region = HeapRegion {
            allocation,
            layout,
            window_offset: PAGE_SIZE,
            window_len: len,
        };
        for (start, guard_len) in region.guard_ranges() {
            // SAFETY: each guard range lies inside the allocation, which nothing else accesses yet.
            unsafe {
                core::ptr::write_bytes(region.allocation.as_ptr().add(start), GUARD_BYTE, guard_len)
            };
        }
        region
    }

    fn guard_ranges(&self) -> [(usize, usize); 2] {
        let after = self.window_offset + self.window_len;
        [(0, self.window_offset), (after, self.layout.size() - after)]
    }

    /// Whether both guard areas still hold the guard pattern. Call it once the peer threads are
    /// done with the region (it reads the guard bytes with plain loads).
    pub fn guards_intact(&self) -> bool {
        if self.window_offset == 0 {
            return true;
        }
        self.guard_ranges().iter().all(|&(start, len)| {
            // SAFETY: the guard range lies inside the allocation; guards are outside the window
            // handed out as shared memory, so only a bug writes them, never concurrently with a
            // correct caller of this function.
            let guard =
                unsafe { core::slice::from_raw_parts(self.allocation.as_ptr().add(start), len) };
            guard.iter().all(|&b| b == GUARD_BYTE)
        })
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `allocate` with exactly this layout.
        unsafe { dealloc(self.allocation.as_ptr(), self.layout) };
    }
}

// SAFETY: the window lies inside a live allocation (owned until drop), is page aligned
// (allocation and `window_offset` are page aligned) and readable and writable.
unsafe impl SharedMemory for HeapRegion {
    fn base(&self) -> *mut u8 {
        // SAFETY: `window_offset` is inside the allocation.
        unsafe { self.allocation.as_ptr().add(self.window_offset) }
    }

    fn len(&self) -> usize {
        self.window_len
    }
}
