//! Bounds-checked access to memory a peer can write at any moment. All `unsafe` that touches
//! shared memory lives in this file.
//!
//! Access discipline: every access to shared memory is an aligned 32-bit atomic on a raw
//! pointer (`AtomicU32::from_ptr`); ring indices use Acquire/Release, payload bytes Relaxed
//! (their publication is ordered by the Release store of the index that follows them).
//! Why atomics rather than volatile + fences: an atomic access can neither be torn, duplicated
//! nor elided, the Acquire/Release pairs are part of the language's memory model instead of an
//! architecture assumption, and a peer that is a thread of the same process (tests) stays a
//! well-defined race, not undefined behaviour. On x86-64 a Relaxed/Acquire load and a Release
//! store compile to plain `mov`s, so this costs nothing over volatile.
//! Using one access size (u32) everywhere avoids mixed-size atomics on the same bytes; the
//! region's base is page aligned and its length a page multiple, so the aligned word holding
//! any in-bounds byte is itself in bounds.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::layout::PAGE_SIZE;
use crate::transport::SharedMemory;

/// The offset and length do not lie inside the region (or are misaligned for an index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds;

impl core::fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(
            "the offset and length do not lie inside the region (or are misaligned for an index)",
        )
    }
}

impl core::error::Error for OutOfBounds {}

/// A `SharedMemory` does not satisfy the region's requirements. Each variant's doc comment is
/// its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The region's base address is not page aligned.
    MisalignedBase,
    /// The region's length of {0} bytes is not a multiple of the page size.
    LengthNotPageMultiple(usize),
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            RegionError::MisalignedBase => {
                f.write_str("the region's base address is not page aligned")
            }
            RegionError::LengthNotPageMultiple(len) => write!(
                f,
                "the region's length of {len} bytes is not a multiple of the page size \
                 ({PAGE_SIZE})"
            ),
        }
    }
}

impl core::error::Error for RegionError {}

/// Owns a [`SharedMemory`] and hands out checked accessors ([`RegionView`]) to it.
pub struct SharedRegion<S: SharedMemory> {
    memory: S,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `base` is derived from `memory` and only used for atomic accesses, which are sound
// from any thread; sending the region sends the memory it points into along with it.
unsafe impl<S: SharedMemory + Send> Send for SharedRegion<S> {}
// SAFETY: as above; shared use from several threads only performs atomic accesses.
unsafe impl<S: SharedMemory + Sync> Sync for SharedRegion<S> {}

impl<S: SharedMemory> SharedRegion<S> {
    /// Wraps `memory`, checking that it is page aligned and a whole number of pages. A region
    /// of length 0 is allowed (a connection without out-of-line data).
    pub fn new(memory: S) -> Result<Self, RegionError> {
        let len = memory.len();
        if len % PAGE_SIZE != 0 {
            return Err(RegionError::LengthNotPageMultiple(len));
        }
        let base = match NonNull::new(memory.base()) {
            Some(base) => base,
            None if len == 0 => NonNull::dangling(),
            None => return Err(RegionError::MisalignedBase),
        };
        if len != 0 && (base.as_ptr() as usize) % PAGE_SIZE != 0 {
            return Err(RegionError::MisalignedBase);
        }
        Ok(SharedRegion { memory, base, len })
    }

    /// The region's length in bytes (a multiple of the page size).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (a connection without out-of-line data).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Loads a control-block field or a slot's sequence word of a ring region (acquire). Both
    /// ends check the region's length against the geometry before they use this, so it cannot
    /// miss; 0 if it ever did.
    #[inline]
    pub(crate) fn load_control(&self, offset: usize) -> u32 {
        self.view().load_u32(offset, Ordering::Acquire).unwrap_or(0)
    }

    /// Stores a control-block word of a ring region (release); see [`Self::load_control`].
    #[inline]
    pub(crate) fn store_control(&self, offset: usize, value: u32) {
        let stored = self.view().store_u32(offset, value, Ordering::Release);
        debug_assert!(stored.is_ok());
    }

    /// Publishes the entries `from..to` (free-running, wrapping) of a ring region: stores each
    /// one's index in its slot's sequence word (at `seq_offset(index)`, inside the region the
    /// geometry was checked against), in order, with release ordering, so each slot's contents
    /// are visible before its sequence word says it is published.
    #[inline]
    pub(crate) fn publish_slots(&self, from: u32, to: u32, seq_offset: impl Fn(u32) -> usize) {
        let mut index = from;
        while index != to {
            self.store_control(seq_offset(index), index);
            index = index.wrapping_add(1);
        }
    }

    /// A copyable accessor borrowing this region.
    #[inline]
    pub fn view(&self) -> RegionView<'_> {
        RegionView {
            base: self.base,
            len: self.len,
            _region: PhantomData,
        }
    }

    /// The wrapped memory.
    pub fn memory(&self) -> &S {
        &self.memory
    }

    /// Gives the wrapped memory back (e.g. to unmap it).
    pub fn into_memory(self) -> S {
        self.memory
    }
}

/// Checked, atomic access to a shared region, borrowed from a [`SharedRegion`].
#[derive(Clone, Copy)]
pub struct RegionView<'a> {
    base: NonNull<u8>,
    len: usize,
    _region: PhantomData<&'a ()>,
}

// SAFETY: a view only performs atomic accesses inside a mapping that outlives `'a`.
unsafe impl Send for RegionView<'_> {}
// SAFETY: as above.
unsafe impl Sync for RegionView<'_> {}

impl core::fmt::Debug for RegionView<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionView")
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> RegionView<'a> {
    /// The viewed region's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the viewed region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `len` bytes at `offset` lie inside the region (checked arithmetic).
    #[inline]
    pub fn contains(&self, offset: usize, len: usize) -> bool {
        matches!(offset.checked_add(len), Some(end) if end <= self.len)
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        if self.contains(offset, len) {
            Ok(())
        } else {
            Err(OutOfBounds)
        }
    }

    /// The word at byte `offset`. Callers have checked `offset % 4 == 0` and
    /// `offset + 4 <= self.len`.
    #[inline]
    fn word(&self, offset: usize) -> &'a AtomicU32 {
        debug_assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: the region is mapped and writable for `'a` (SharedMemory contract); `offset`
        // is in bounds and 4-aligned and the base is page aligned, so the pointer is valid and
        // aligned for an AtomicU32. Every access to this memory from our side is a 32-bit atomic
        // (module docs), so no non-atomic or mixed-size access races with it; the returned
        // `&AtomicU32` is an interior-mutable handle, never a `&u32` to the peer's bytes.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast::<u32>()) }
    }

    /// Loads the 32-bit word at a 4-aligned `offset` (ring indices: use `Acquire`).
    #[inline]
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        if offset % 4 != 0 {
            return Err(OutOfBounds);
        }
        self.check(offset, 4)?;
        Ok(self.word(offset).load(order))
    }

    /// Stores the 32-bit word at a 4-aligned `offset` (ring indices: use `Release`).
    #[inline]
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        if offset % 4 != 0 {
            return Err(OutOfBounds);
        }
        self.check(offset, 4)?;
        self.word(offset).store(value, order);
        Ok(())
    }

    /// Copies whole words at a 4-aligned `offset` into `dst` (a multiple of 4 bytes long);
    /// callers have checked the range.
    #[inline]
    fn load_words(&self, offset: usize, dst: &mut [u8]) {
        for (i, chunk) in dst.chunks_exact_mut(4).enumerate() {
            let word = self.word(offset + 4 * i).load(Ordering::Relaxed);
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
    }

    /// Stores `src` (a multiple of 4 bytes long) as whole words at a 4-aligned `offset`;
    /// callers have checked the range.
    #[inline]
    fn store_words(&self, offset: usize, src: &[u8]) {
        for (i, chunk) in src.chunks_exact(4).enumerate() {
            let mut word = [0u8; 4];
            word.copy_from_slice(chunk);
            self.word(offset + 4 * i)
                .store(u32::from_ne_bytes(word), Ordering::Relaxed);
        }
    }

    /// Copies `dst.len()` bytes at `offset` into private memory, each byte read exactly once.
    #[inline]
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, dst.len())?;
        let mut pos = offset;
        let mut rest = dst;
        let misalign = pos % 4;
        if misalign != 0 && !rest.is_empty() {
            let n = (4 - misalign).min(rest.len());
            let word = self
                .word(pos - misalign)
                .load(Ordering::Relaxed)
                .to_ne_bytes();
            rest[..n].copy_from_slice(&word[misalign..misalign + n]);
            pos += n;
            rest = &mut rest[n..];
        }
        let (words, tail) = rest.split_at_mut(rest.len() / 4 * 4);
        self.load_words(pos, words);
        pos += words.len();
        if !tail.is_empty() {
            let word = self.word(pos).load(Ordering::Relaxed).to_ne_bytes();
            tail.copy_from_slice(&word[..tail.len()]);
        }
        Ok(())
    }

    /// Sets bytes `start..start + bytes.len()` of the word at `word_offset`, leaving its other
    /// bytes as they are (they may belong to the peer and change concurrently).
    fn write_part_of_word(&self, word_offset: usize, start: usize, bytes: &[u8]) {
        let mut mask = [0u8; 4];
        let mut value = [0u8; 4];
        mask[start..start + bytes.len()].fill(0xff);
        value[start..start + bytes.len()].copy_from_slice(bytes);
        let mask = u32::from_ne_bytes(mask);
        let word = self.word(word_offset);
        // Two wait-free RMWs instead of a CAS loop, which a peer rewriting the word could starve.
        word.fetch_and(!mask, Ordering::Relaxed);
        word.fetch_or(u32::from_ne_bytes(value), Ordering::Relaxed);
    }

    /// Copies `src` into the region at `offset`; bytes outside the range are not disturbed.
    #[inline]
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, src.len())?;
        let mut pos = offset;
        let mut rest = src;
        let misalign = pos % 4;
        if misalign != 0 && !rest.is_empty() {
            let n = (4 - misalign).min(rest.len());
            self.write_part_of_word(pos - misalign, misalign, &rest[..n]);
            pos += n;
            rest = &rest[n..];
        }
        let (words, tail) = rest.split_at(rest.len() / 4 * 4);
        self.store_words(pos, words);
        pos += words.len();
        if !tail.is_empty() {
            self.write_part_of_word(pos, 0, tail);
        }
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
        self.check(offset, len)?;
        let chunk = [byte; 256];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write(offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` inside the region through a private bounce buffer
    /// (each source byte read once; overlapping ranges give unspecified but in-bounds bytes).
    pub fn copy_within(&self, src: usize, dst: usize, len: usize) -> Result<(), OutOfBounds> {
        self.check(src, len)?;
        self.check(dst, len)?;
        if src % 4 == dst % 4 {
            // Same alignment: bytes up to the word boundary, then word to word (each source
            // word loaded once), then the tail.
            let head = ((4 - src % 4) % 4).min(len);
            self.copy_bounced(src, dst, head)?;
            let words = (len - head) / 4;
            let (src_words, dst_words) = (src + head, dst + head);
            for i in 0..words {
                let word = self.word(src_words + 4 * i).load(Ordering::Relaxed);
                self.word(dst_words + 4 * i).store(word, Ordering::Relaxed);
            }
            let copied = head + 4 * words;
            self.copy_bounced(src + copied, dst + copied, len - copied)
        } else {
            self.copy_bounced(src, dst, len)
        }
    }

    /// `copy_within` through a private buffer, for ranges of different alignment.
    fn copy_bounced(&self, src: usize, dst: usize, len: usize) -> Result<(), OutOfBounds> {
        let mut bounce = [0u8; 512];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(bounce.len());
            self.read(src + done, &mut bounce[..n])?;
            self.write(dst + done, &bounce[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Reads a plain-old-data value at `offset` into a private copy.
    #[inline]
    pub fn read_pod<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, OutOfBounds> {
        let mut value = T::new_zeroed();
        self.read_pod_into(offset, &mut value)?;
        Ok(value)
    }

    /// Reads a plain-old-data value at `offset` into `value` (a private copy kept by the
    /// caller, overwritten in place); on error `value` is left as it was.
    #[inline]
    pub fn read_pod_into<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
        value: &mut T,
    ) -> Result<(), OutOfBounds> {
        let bytes = value.as_mut_bytes();
        if offset % 4 != 0 || bytes.len() % 4 != 0 {
            return self.read(offset, bytes);
        }
        // Whole words (slot headers): a loop of known length, which the compiler unrolls.
        self.check(offset, bytes.len())?;
        self.load_words(offset, bytes);
        Ok(())
    }

    /// Writes a plain-old-data value at `offset`.
    #[inline]
    pub fn write_pod<T: IntoBytes + Immutable>(
        &self,
        offset: usize,
        value: &T,
    ) -> Result<(), OutOfBounds> {
        let bytes = value.as_bytes();
        if offset % 4 == 0 && bytes.len() % 4 == 0 {
            // Whole words (slot headers): a loop of known length, which the compiler unrolls.
            self.check(offset, bytes.len())?;
            self.store_words(offset, bytes);
            return Ok(());
        }
        self.write(offset, bytes)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::mem::HeapRegion;

    fn region() -> SharedRegion<HeapRegion> {
        SharedRegion::new(HeapRegion::new(2 * PAGE_SIZE)).unwrap()
    }

    #[test]
    fn unaligned_reads_and_writes_round_trip_without_touching_neighbours() {
        let r = region();
        let v = r.view();
        v.fill(0, 64, 0xAA).unwrap();
        v.write(3, &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        let mut out = [0u8; 12];
        v.read(1, &mut out).unwrap();
        assert_eq!(out, [0xAA, 0xAA, 1, 2, 3, 4, 5, 6, 7, 0xAA, 0xAA, 0xAA]);
        let mut one = [0u8; 1];
        v.read(5, &mut one).unwrap();
        assert_eq!(one, [3]);
    }

    #[test]
    fn copy_within_handles_every_alignment() {
        let r = region();
        let v = r.view();
        let pattern: Vec<u8> = (0..200u8).collect();
        for src in 0..4 {
            for dst in 4096..4100 {
                for len in [0, 1, 3, 4, 5, 63, 64, 65, 199] {
                    v.fill(4000, 200, 0xEE).unwrap();
                    v.fill(4096, 300, 0xEE).unwrap();
                    v.write(src, &pattern).unwrap();
                    v.copy_within(src, dst, len).unwrap();
                    let mut out = vec![0u8; len + 2];
                    v.read(dst - 1, &mut out).unwrap();
                    assert_eq!(out[0], 0xEE, "byte before");
                    assert_eq!(
                        &out[1..=len],
                        &pattern[..len],
                        "src {src} dst {dst} len {len}"
                    );
                    assert_eq!(out[len + 1], 0xEE, "byte after");
                }
            }
        }
    }

    #[test]
    fn bounds_are_checked_with_overflow() {
        let r = region();
        let v = r.view();
        let mut buf = [0u8; 8];
        assert_eq!(v.read(2 * PAGE_SIZE - 4, &mut buf), Err(OutOfBounds));
        assert_eq!(v.read(usize::MAX - 2, &mut buf), Err(OutOfBounds));
        assert_eq!(v.write(2 * PAGE_SIZE, &[1]), Err(OutOfBounds));
        assert!(v.write(2 * PAGE_SIZE, &[]).is_ok());
        assert_eq!(v.load_u32(2, Ordering::Relaxed), Err(OutOfBounds));
        assert_eq!(
            v.load_u32(2 * PAGE_SIZE, Ordering::Relaxed),
            Err(OutOfBounds)
        );
        assert_eq!(v.copy_within(0, usize::MAX, 2), Err(OutOfBounds));
        assert!(!v.contains(usize::MAX, 1));
    }

    #[test]
    fn rejects_bad_memory() {
        assert_eq!(
            SharedRegion::new(HeapRegion::new_unchecked_len(PAGE_SIZE, 100)).err(),
            Some(RegionError::LengthNotPageMultiple(100))
        );
        assert_eq!(
            std::string::ToString::to_string(&RegionError::LengthNotPageMultiple(100)),
            "the region's length of 100 bytes is not a multiple of the page size (4096)"
        );
    }
}
