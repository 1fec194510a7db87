//! Index arithmetic of the byte rings Xen PV protocols share between domains (console,
//! xenstore): free-running `u32` producer/consumer indices, masked by a power-of-two size
//! (`MASK_XENSTORE_IDX`, `MASK_XENCONS_IDX`).
//!
//! The peer writes one of the two indices, so every index pair is checked before use: a
//! producer more than one ring size ahead of the consumer (or "behind" it) comes from a
//! hostile or broken peer and is reported as [`RingIndexError`], never used to index memory.
//!
//! Memory access stays with the caller through [`RingBytes`], so the kernel supplies volatile
//! accesses to the shared page and tests use a plain array. The caller reads each index once
//! (into a local), orders the reads (acquire after reading the peer's producer, release before
//! publishing its own index), and publishes the new index these helpers return.

use core::fmt;

/// A ring of `size` bytes (a power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    size: u32,
}

/// An index pair that cannot occur in a well-behaved ring: `prod - cons` exceeds the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingIndexError {
    /// The consumer index as read.
    pub cons: u32,
    /// The producer index as read.
    pub prod: u32,
    /// The ring's size.
    pub size: u32,
}

impl fmt::Display for RingIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ring indices out of bounds: prod {:#x} - cons {:#x} = {:#x} > size {:#x}",
            self.prod,
            self.cons,
            self.prod.wrapping_sub(self.cons),
            self.size
        )
    }
}

/// A contiguous stretch of a ring's data area: `len` bytes from byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Byte offset in the data area (`< size`).
    pub offset: usize,
    /// Length in bytes; `offset + len <= size`.
    pub len: usize,
}

impl RingGeometry {
    /// A ring of `size` bytes; `size` must be a power of two no larger than 2^31 (checked at
    /// compile time when used in a `const`).
    pub const fn new(size: u32) -> RingGeometry {
        assert!(size.is_power_of_two() && size <= 1 << 31);
        RingGeometry { size }
    }

    /// Size of the data area in bytes.
    pub const fn size(&self) -> u32 {
        self.size
    }

    /// The byte offset an index refers to.
    pub const fn mask(&self, index: u32) -> usize {
        (index & (self.size - 1)) as usize
    }

    /// Bytes produced and not yet consumed.
    pub const fn used(&self, cons: u32, prod: u32) -> Result<u32, RingIndexError> {
        let used = prod.wrapping_sub(cons);
        if used > self.size {
            Err(RingIndexError {
                cons,
                prod,
                size: self.size,
            })
        } else {
            Ok(used)
        }
    }

    /// Bytes the producer may still write.
    pub const fn free_space(&self, cons: u32, prod: u32) -> Result<u32, RingIndexError> {
        match self.used(cons, prod) {
            Ok(used) => Ok(self.size - used),
            Err(e) => Err(e),
        }
    }

    /// The contiguous readable stretch starting at `cons` (may be shorter than `used` when the
    /// data wraps).
    pub const fn readable(&self, cons: u32, prod: u32) -> Result<Span, RingIndexError> {
        match self.used(cons, prod) {
            Ok(used) => Ok(self.contiguous(cons, used)),
            Err(e) => Err(e),
        }
    }

    /// The contiguous writable stretch starting at `prod`.
    pub const fn writable(&self, cons: u32, prod: u32) -> Result<Span, RingIndexError> {
        match self.free_space(cons, prod) {
            Ok(free) => Ok(self.contiguous(prod, free)),
            Err(e) => Err(e),
        }
    }

    const fn contiguous(&self, index: u32, available: u32) -> Span {
        let offset = self.mask(index);
        let to_end = self.size as usize - offset;
        let len = if (available as usize) < to_end {
            available as usize
        } else {
            to_end
        };
        Span { offset, len }
    }
}

/// Access to a ring's data area. Ranges passed in never wrap: `offset + len <= size`.
pub trait RingBytes {
    /// Copies `dst.len()` bytes starting at `offset` into `dst`.
    fn load(&self, offset: usize, dst: &mut [u8]);
    /// Copies `src` into the ring starting at `offset`.
    fn store(&mut self, offset: usize, src: &[u8]);
}

/// Private memory (tests, host-side models). Panics on out-of-range access like any slice.
impl RingBytes for [u8] {
    fn load(&self, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self[offset..offset + dst.len()]);
    }
    fn store(&mut self, offset: usize, src: &[u8]) {
        self[offset..offset + src.len()].copy_from_slice(src);
    }
}

/// Copies up to `out.len()` produced bytes from the ring, starting at `cons`. Returns how many
/// were copied; the caller then publishes `cons + n` as its new consumer index.
pub fn read_ring<M: RingBytes + ?Sized>(
    ring: RingGeometry,
    memory: &M,
    cons: u32,
    prod: u32,
    out: &mut [u8],
) -> Result<usize, RingIndexError> {
    let available = ring.used(cons, prod)? as usize;
    let total = available.min(out.len());
    let mut done = 0;
    while done < total {
        let span = ring.contiguous(cons.wrapping_add(done as u32), (total - done) as u32);
        memory.load(span.offset, &mut out[done..done + span.len]);
        done += span.len;
    }
    Ok(total)
}

/// Copies as much of `data` as fits into the ring at `prod`. Returns how many bytes were
/// written; the caller then publishes `prod + n` as its new producer index.
pub fn write_ring<M: RingBytes + ?Sized>(
    ring: RingGeometry,
    memory: &mut M,
    cons: u32,
    prod: u32,
    data: &[u8],
) -> Result<usize, RingIndexError> {
    let free = ring.free_space(cons, prod)? as usize;
    let total = free.min(data.len());
    let mut done = 0;
    while done < total {
        let span = ring.contiguous(prod.wrapping_add(done as u32), (total - done) as u32);
        memory.store(span.offset, &data[done..done + span.len]);
        done += span.len;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: RingGeometry = RingGeometry::new(16);

    #[test]
    fn mask_and_counts() {
        assert_eq!(RING.mask(0), 0);
        assert_eq!(RING.mask(17), 1);
        assert_eq!(RING.mask(u32::MAX), 15);
        assert_eq!(RING.used(0, 0), Ok(0));
        assert_eq!(RING.used(3, 10), Ok(7));
        assert_eq!(RING.free_space(3, 10), Ok(9));
        assert_eq!(RING.used(0, 16), Ok(16));
        assert_eq!(RING.free_space(0, 16), Ok(0));
    }

    #[test]
    fn counts_survive_index_wraparound() {
        let cons = u32::MAX - 2;
        let prod = cons.wrapping_add(5);
        assert_eq!(prod, 2);
        assert_eq!(RING.used(cons, prod), Ok(5));
        assert_eq!(RING.free_space(cons, prod), Ok(11));
    }

    #[test]
    fn hostile_indices_are_rejected() {
        // Producer more than a ring ahead.
        let err = RING.used(0, 17).unwrap_err();
        assert_eq!(
            err,
            RingIndexError {
                cons: 0,
                prod: 17,
                size: 16
            }
        );
        // Producer "behind" the consumer (consumer index pushed forward by the peer).
        assert!(RING.used(10, 9).is_err());
        assert!(RING.free_space(100, 0).is_err());
        assert!(RING.readable(0, 1 << 31).is_err());
        assert!(RING.writable(5, 4).is_err());
        let mut memory = [0u8; 16];
        let mut out = [0u8; 4];
        assert!(read_ring(RING, &memory[..], 0, 40, &mut out).is_err());
        assert!(write_ring(RING, &mut memory[..], 40, 0, b"ab").is_err());
    }

    #[test]
    fn contiguous_spans_stop_at_the_end() {
        assert_eq!(RING.readable(14, 20), Ok(Span { offset: 14, len: 2 }));
        assert_eq!(RING.readable(16, 20), Ok(Span { offset: 0, len: 4 }));
        assert_eq!(RING.writable(14, 20), Ok(Span { offset: 4, len: 10 }));
        assert_eq!(RING.writable(4, 20), Ok(Span { offset: 4, len: 0 }));
        assert_eq!(RING.readable(7, 7), Ok(Span { offset: 7, len: 0 }));
    }

    #[test]
    fn write_then_read_across_the_wrap() {
        let mut memory = [0u8; 16];
        let (mut cons, mut prod) = (12u32, 12u32);
        let n = write_ring(RING, &mut memory[..], cons, prod, b"abcdefgh").unwrap();
        assert_eq!(n, 8);
        prod = prod.wrapping_add(n as u32);
        assert_eq!(&memory[12..16], b"abcd");
        assert_eq!(&memory[0..4], b"efgh");
        let mut out = [0u8; 5];
        let n = read_ring(RING, &memory[..], cons, prod, &mut out).unwrap();
        assert_eq!((n, &out[..]), (5, &b"abcde"[..]));
        cons = cons.wrapping_add(n as u32);
        let mut rest = [0u8; 16];
        let n = read_ring(RING, &memory[..], cons, prod, &mut rest).unwrap();
        assert_eq!(&rest[..n], b"fgh");
    }

    #[test]
    fn writes_are_limited_by_free_space() {
        let mut memory = [0u8; 16];
        let n = write_ring(RING, &mut memory[..], 0, 10, b"0123456789").unwrap();
        assert_eq!(n, 6);
        assert_eq!(write_ring(RING, &mut memory[..], 0, 16, b"x"), Ok(0));
        assert_eq!(read_ring(RING, &memory[..], 5, 5, &mut [0u8; 4]), Ok(0));
    }

    #[test]
    fn indices_near_u32_max_wrap_correctly() {
        let mut memory = [0u8; 16];
        let start = u32::MAX - 1;
        let n = write_ring(RING, &mut memory[..], start, start, b"wxyz").unwrap();
        assert_eq!(n, 4);
        let mut out = [0u8; 4];
        let got = read_ring(RING, &memory[..], start, start.wrapping_add(4), &mut out).unwrap();
        assert_eq!((got, &out), (4, b"wxyz"));
    }
}
