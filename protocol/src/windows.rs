//! The client's window allocator: places calls' out-of-line bytes in its data region so that
//! callers never pick offsets by hand (see `ClientConnection::start_with_bytes`, feature
//! `alloc`).
//!
//! First fit over a fixed table of spans (no heap: the client core is `no_std`): two windows
//! per call in flight at most. Offsets are 8-byte aligned, so a handler reading plain-old-data
//! out of a window reads aligned words.

use crate::client::MAX_IN_FLIGHT;
use crate::layout::OolRef;

/// Most windows held at once: an argument and a result window per call in flight.
pub const MAX_WINDOWS: usize = 2 * MAX_IN_FLIGHT;

/// Alignment of every window's offset.
pub const WINDOW_ALIGN: usize = 8;

/// Which parts of a data region hold windows of calls in flight.
#[derive(Clone, Debug)]
pub struct WindowAllocator {
    region_len: usize,
    /// `(offset, len)` of held windows, sorted by offset, in `held[..count]`.
    held: [(usize, usize); MAX_WINDOWS],
    count: usize,
}

impl WindowAllocator {
    /// An allocator for a data region of `region_len` bytes, all free.
    pub fn new(region_len: usize) -> Self {
        WindowAllocator {
            region_len,
            held: [(0, 0); MAX_WINDOWS],
            count: 0,
        }
    }

    /// The free gaps between held windows, as `(aligned start, end)`.
    fn gaps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let ends = self.held[..self.count]
            .iter()
            .map(|&(offset, _)| offset)
            .chain(core::iter::once(self.region_len));
        let starts = core::iter::once(0).chain(
            self.held[..self.count]
                .iter()
                .map(|&(offset, len)| offset + len),
        );
        starts
            .zip(ends)
            .map(|(start, end)| (start.next_multiple_of(WINDOW_ALIGN).min(end), end))
    }

    /// The largest window that could be allocated now.
    pub fn largest_free(&self) -> usize {
        if self.count == MAX_WINDOWS {
            return 0;
        }
        self.gaps()
            .map(|(start, end)| end - start)
            .max()
            .unwrap_or(0)
    }

    /// Holds a window of `len` bytes (`len` > 0, at most `u32::MAX`); `None` if no gap fits
    /// it or the table is full.
    pub fn allocate(&mut self, len: usize) -> Option<OolRef> {
        if len == 0 || self.count == MAX_WINDOWS {
            return None;
        }
        let len32 = u32::try_from(len).ok()?;
        let (index, offset) = self
            .gaps()
            .enumerate()
            .find(|&(_, (start, end))| end - start >= len)
            .map(|(index, (start, _))| (index, start))?;
        let offset32 = u32::try_from(offset).ok()?;
        // Gap `index` lies before held window `index`: insert there to keep the order.
        self.held.copy_within(index..self.count, index + 1);
        self.held[index] = (offset, len);
        self.count += 1;
        Some(OolRef::new(offset32, len32))
    }

    /// Gives back a window [`Self::allocate`] returned (anything else is ignored).
    #[inline]
    pub fn release(&mut self, window: OolRef) {
        if window.len == 0 {
            // No window (`OolRef::NONE`): nothing was allocated.
            return;
        }
        let span = (window.offset as usize, window.len as usize);
        if let Some(index) = self.held[..self.count].iter().position(|&s| s == span) {
            self.held.copy_within(index + 1..self.count, index);
            self.count -= 1;
        }
    }

    /// Windows held now.
    pub fn held(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_disjoint_and_reused() {
        let mut windows = WindowAllocator::new(100);
        let a = windows.allocate(10).unwrap();
        let b = windows.allocate(10).unwrap();
        assert_eq!((a.offset, b.offset), (0, 16));
        assert_eq!(windows.largest_free(), 100 - 32);
        windows.release(a);
        // The gap before `b` is reused for what fits it.
        assert_eq!(windows.allocate(16).unwrap().offset, 0);
        assert_eq!(windows.allocate(60).unwrap().offset, 32);
        assert_eq!(
            windows.allocate(5),
            None,
            "only 4 aligned bytes are left at the end"
        );
        assert_eq!(windows.allocate(4).unwrap().offset, 96);
        assert_eq!(windows.largest_free(), 0);
        assert_eq!(windows.allocate(0), None);
        windows.release(OolRef::new(3, 3)); // never allocated: ignored
        assert_eq!(windows.held(), 4);
    }

    #[test]
    fn the_table_bounds_the_windows_held() {
        let mut windows = WindowAllocator::new(MAX_WINDOWS * 8 + 64);
        let held: Vec<OolRef> = (0..MAX_WINDOWS)
            .map(|_| windows.allocate(1).unwrap())
            .collect();
        assert_eq!(windows.allocate(1), None);
        assert_eq!(windows.largest_free(), 0);
        for w in held {
            windows.release(w);
        }
        assert_eq!(windows.held(), 0);
        assert_eq!(windows.largest_free(), MAX_WINDOWS * 8 + 64);
    }

    #[test]
    fn an_empty_region_holds_nothing() {
        let mut windows = WindowAllocator::new(0);
        assert_eq!(windows.largest_free(), 0);
        assert_eq!(windows.allocate(1), None);
    }
}
