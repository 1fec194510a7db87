//! A pool of free page frames for page tables, stacks and pages shared with peers. Free frames
//! are kept on an intrusive list threaded through the frames themselves (they are mapped
//! read-write in the direct map while free), so the pool needs no heap.

use super::p2m::Pfn;

pub struct FramePool {
    /// Next never-used frame, and the end of the range.
    next: u64,
    end: u64,
    /// Head of the list of freed frames (0: empty; pfn 0 is never in the pool).
    free_head: u64,
    free_count: u64,
}

impl FramePool {
    /// A pool over `[start, end)`, frames that are mapped read-write at their direct-map address.
    pub fn new(start: Pfn, end: Pfn) -> Self {
        assert!(start.0 > 0 && start.0 <= end.0);
        Self {
            next: start.0,
            end: end.0,
            free_head: 0,
            free_count: 0,
        }
    }

    /// A zeroed frame, mapped read-write at `pfn.va()`.
    pub fn alloc(&mut self) -> Option<Pfn> {
        let pfn = if self.free_head != 0 {
            let pfn = self.free_head;
            // SAFETY: a free frame is mapped read-write and holds the next link in its first word.
            self.free_head = unsafe { core::ptr::read_volatile(Pfn(pfn).va() as *const u64) };
            self.free_count -= 1;
            pfn
        } else if self.next < self.end {
            self.next += 1;
            self.next - 1
        } else {
            return None;
        };
        // SAFETY: the frame is ours, free, and mapped read-write at its direct-map address.
        unsafe { core::ptr::write_bytes(Pfn(pfn).va() as *mut u8, 0, super::PAGE_SIZE) };
        Some(Pfn(pfn))
    }

    /// Returns a frame. It must be mapped read-write at its direct-map address again.
    pub fn free(&mut self, pfn: Pfn) {
        assert!(pfn.0 > 0);
        // SAFETY: the caller gives back a frame it owned, mapped read-write.
        unsafe { core::ptr::write_volatile(pfn.va() as *mut u64, self.free_head) };
        self.free_head = pfn.0;
        self.free_count += 1;
    }

    pub fn available(&self) -> u64 {
        self.end - self.next + self.free_count
    }
}
