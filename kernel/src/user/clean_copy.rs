//! A protection domain's clean copy: its memory as its constructor left it, before any of its
//! code ran in user mode, to put it back after faults (see `Domain::fault`).
//!
//! What a domain's code can change is its space page (the allocator state, the handler table),
//! its heap and its stack; its code and read-only data are mapped read-only and its image
//! statics not at all. The heap was zeroed before the constructor ran, so the copy keeps only
//! the heap up to its last non-zero byte (the allocator's last hole header is in it) and a
//! restore zeroes the rest.

use alloc::vec::Vec;

use crate::mm::PAGE_SIZE;

/// The page and the used prefix of the heap.
pub struct CleanCopy {
    page: Vec<u8>,
    heap: Vec<u8>,
}

impl CleanCopy {
    /// Copies the page at `page` and the used prefix of `heap`, on the kernel heap; `None`
    /// when it cannot hold them.
    ///
    /// # Safety
    /// `page` is a page of the kernel's that nothing writes while this runs.
    pub unsafe fn take(page: *const u8, heap: &[u8]) -> Option<Self> {
        let used = heap
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        let mut copy = CleanCopy {
            page: Vec::new(),
            heap: Vec::new(),
        };
        copy.page.try_reserve_exact(PAGE_SIZE).ok()?;
        copy.heap.try_reserve_exact(used).ok()?;
        // SAFETY: the caller's page, readable for PAGE_SIZE bytes.
        copy.page
            .extend_from_slice(unsafe { core::slice::from_raw_parts(page, PAGE_SIZE) });
        copy.heap.extend_from_slice(&heap[..used]);
        Some(copy)
    }

    /// Bytes of heap the copy holds.
    pub fn heap_bytes(&self) -> usize {
        self.heap.len()
    }

    /// Writes the copy back: the page at `page`, and `heap` (the same heap it was taken of)
    /// as it was, zero past the copied prefix.
    ///
    /// # Safety
    /// `page` is the page the copy was taken of, and nothing else reads or writes it (or
    /// `heap`) while this runs.
    pub unsafe fn restore(&self, page: *mut u8, heap: &mut [u8]) {
        // SAFETY: the caller's page, writable for PAGE_SIZE bytes.
        unsafe { core::ptr::copy_nonoverlapping(self.page.as_ptr(), page, PAGE_SIZE) };
        let (used, rest) = heap.split_at_mut(self.heap.len());
        used.copy_from_slice(&self.heap);
        rest.fill(0);
    }
}
