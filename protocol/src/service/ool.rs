//! The out-of-line windows of a call: the client's argument bytes ([`OolArgs`], read into
//! private memory) and result buffer ([`OolResult`], written in place), both validated against
//! the connection's data region ([`validate_ool`]) and metered against the call's copy
//! allowance ([`crate::fair`]); and the `bytes` arguments and results of `define_service!`
//! methods ([`BytesIn`], [`BytesOut`]).

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::fair::CopyMeter;
use crate::layout::{OolRef, Status};
use crate::region::RegionView;

/// A handler's move through its out-of-line windows was refused (nothing was copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OolError {
    /// Read past the end of the argument window: the client sent too little.
    ArgsOutOfWindow,
    /// Wrote past the end of the result window: the client's buffer is too small.
    ResultOutOfWindow,
    /// The call would move more bytes through its windows than one call may (`MAX_CALL_COPY`,
    /// and never more than its two windows hold together).
    CopyLimit,
}

impl core::fmt::Display for OolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OolError::ArgsOutOfWindow => {
                "Read past the end of the argument window: the client sent too little."
            }
            OolError::ResultOutOfWindow => {
                "Wrote past the end of the result window: the client's buffer is too small."
            }
            OolError::CopyLimit => {
                "The call would move more bytes through its windows than one call may \
                 (MAX_CALL_COPY, and never more than its two windows hold together)."
            }
        })
    }
}

impl From<OolError> for Status {
    fn from(e: OolError) -> Status {
        match e {
            OolError::ArgsOutOfWindow => Status::BadArguments,
            OolError::ResultOutOfWindow | OolError::CopyLimit => Status::TooLarge,
        }
    }
}

/// Checks an out-of-line reference against the data region length the server holds privately:
/// `(offset, len)` on success. A zero length means "no window" and requires offset 0.
#[inline]
pub fn validate_ool(window: OolRef, data_len: usize) -> Option<(usize, usize)> {
    let offset = usize::try_from(window.offset).ok()?;
    let len = usize::try_from(window.len).ok()?;
    if len == 0 {
        return if offset == 0 { Some((0, 0)) } else { None };
    }
    match offset.checked_add(len) {
        Some(end) if end <= data_len => Some((offset, len)),
        _ => None,
    }
}

/// The client's out-of-line arguments: a validated window of the connection's data region.
/// Reads copy bytes into private memory; the client may change the window concurrently, so
/// read each byte once and validate the copy. Every byte read counts against the call's copy
/// allowance (see [`crate::fair`]).
#[derive(Clone, Copy, Debug)]
pub struct OolArgs<'a> {
    pub(super) data: RegionView<'a>,
    pub(super) offset: usize,
    pub(super) len: usize,
    pub(super) meter: &'a CopyMeter,
}

impl<'a> OolArgs<'a> {
    /// `data.contains(offset, len)` must hold (see [`validate_ool`]).
    #[inline]
    pub(crate) fn new(
        data: RegionView<'a>,
        offset: usize,
        len: usize,
        meter: &'a CopyMeter,
    ) -> Self {
        debug_assert!(data.contains(offset, len));
        OolArgs {
            data,
            offset,
            len,
            meter,
        }
    }

    /// Whether `len` bytes starting `at` lie inside the window.
    fn check(&self, at: usize, len: usize) -> Result<(), OolError> {
        match at.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OolError::ArgsOutOfWindow),
        }
    }

    /// The window's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the call has no out-of-line arguments.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `dst.len()` bytes starting `at` bytes into the window.
    pub fn read(&self, at: usize, dst: &mut [u8]) -> Result<(), OolError> {
        self.check(at, dst.len())?;
        self.meter.take(dst.len())?;
        self.data
            .read(self.offset + at, dst)
            .map_err(|_| OolError::ArgsOutOfWindow)
    }

    /// Copies a plain-old-data value starting `at` bytes into the window.
    pub fn read_pod<T: FromBytes + IntoBytes>(&self, at: usize) -> Result<T, OolError> {
        let mut value = T::new_zeroed();
        self.read(at, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Copies the whole window, a chunk at a time, into a private buffer on the stack and
    /// hands each chunk to `f` (each byte is read once: what `f` sees is what was read,
    /// whatever the client writes meanwhile). Stops at `f`'s first error.
    pub fn for_each_chunk<E: From<OolError>>(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut chunk = [0u8; 256];
        let mut at = 0;
        while at < self.len {
            let n = chunk.len().min(self.len - at);
            self.read(at, &mut chunk[..n])?;
            f(&chunk[..n])?;
            at += n;
        }
        Ok(())
    }

    /// Copies the whole window into a new vector; `Busy` if the memory for it is not there.
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self) -> Result<alloc::vec::Vec<u8>, Status> {
        let mut bytes = alloc::vec::Vec::new();
        bytes
            .try_reserve_exact(self.len)
            .map_err(|_| Status::Busy)?;
        bytes.resize(self.len, 0);
        self.read(0, &mut bytes)?;
        Ok(bytes)
    }
}

/// The bytes a method declared `(Args, data: bytes)` receives: its argument window.
pub type BytesIn<'a> = OolArgs<'a>;

/// Where a method declared `-> Reply, out: bytes` writes its bytes: the call's result window,
/// written front to back (the client learns how many bytes were written).
#[derive(Debug)]
pub struct BytesOut<'a> {
    pub(super) window: OolResult<'a>,
    pub(super) at: usize,
}

impl BytesOut<'_> {
    /// Appends `bytes`; refused whole (nothing written) if they do not fit the window or
    /// the call's copy allowance.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), OolError> {
        self.window.write(self.at, bytes)?;
        self.at += bytes.len();
        Ok(())
    }

    /// Appends `len` bytes of `input` from `src_at`, moved window to window without a
    /// private copy (counted as `len` bytes moved).
    pub fn copy_from(
        &mut self,
        input: &BytesIn<'_>,
        src_at: usize,
        len: usize,
    ) -> Result<(), OolError> {
        self.window.copy_from_args(input, src_at, self.at, len)?;
        self.at += len;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.at
    }

    /// Bytes the window holds in all.
    pub fn capacity(&self) -> usize {
        self.window.capacity()
    }

    /// Bytes that still fit.
    pub fn remaining(&self) -> usize {
        self.window.capacity() - self.at
    }
}

impl core::fmt::Write for BytesOut<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

/// The client's result buffer: a validated window of the data region the handler writes its
/// result into directly (the zero-copy path). Tracks how far it was written; every byte
/// written counts against the call's copy allowance (see [`crate::fair`]).
#[derive(Debug)]
pub struct OolResult<'a> {
    pub(super) data: RegionView<'a>,
    pub(super) offset: usize,
    pub(super) len: usize,
    pub(super) written: usize,
    pub(super) meter: &'a CopyMeter,
}

impl<'a> OolResult<'a> {
    /// `data.contains(offset, len)` must hold (see [`validate_ool`]).
    #[inline]
    pub(crate) fn new(
        data: RegionView<'a>,
        offset: usize,
        len: usize,
        meter: &'a CopyMeter,
    ) -> Self {
        debug_assert!(data.contains(offset, len));
        OolResult {
            data,
            offset,
            len,
            written: 0,
            meter,
        }
    }

    /// Bytes the window holds.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// High-water mark of the writes so far (reported to the client as `ool_written`).
    pub fn written(&self) -> usize {
        self.written
    }

    /// Checks that `len` bytes fit at `at` and counts them against the call's allowance, then
    /// marks them written: everything that can refuse a write, before it copies anything.
    fn reserve(&mut self, at: usize, len: usize) -> Result<(), OolError> {
        let end = match at.checked_add(len) {
            Some(end) if end <= self.len => end,
            _ => return Err(OolError::ResultOutOfWindow),
        };
        self.meter.take(len)?;
        self.written = self.written.max(end);
        Ok(())
    }

    /// Writes `src` starting `at` bytes into the window.
    pub fn write(&mut self, at: usize, src: &[u8]) -> Result<(), OolError> {
        self.reserve(at, src.len())?;
        self.data
            .write(self.offset + at, src)
            .map_err(|_| OolError::ResultOutOfWindow)
    }

    /// Writes a plain-old-data value starting `at` bytes into the window.
    pub fn write_pod<T: IntoBytes + Immutable>(
        &mut self,
        at: usize,
        value: &T,
    ) -> Result<(), OolError> {
        self.write(at, value.as_bytes())
    }

    /// Copies `len` bytes from the argument window (from `src_at`) into this window (at
    /// `dst_at`) without staging the whole payload privately (counted as `len` bytes moved).
    pub fn copy_from_args(
        &mut self,
        args: &OolArgs<'_>,
        src_at: usize,
        dst_at: usize,
        len: usize,
    ) -> Result<(), OolError> {
        args.check(src_at, len)?;
        self.reserve(dst_at, len)?;
        self.data
            .copy_within(args.offset + src_at, self.offset + dst_at, len)
            .map_err(|_| OolError::ResultOutOfWindow)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::mem::HeapRegion;
    use crate::region::SharedRegion;

    #[test]
    fn validate_ool_checks_bounds_overflow_and_empty_windows() {
        let len = 4096;
        assert_eq!(validate_ool(OolRef::new(0, 0), len), Some((0, 0)));
        assert_eq!(validate_ool(OolRef::new(0, 4096), len), Some((0, 4096)));
        assert_eq!(validate_ool(OolRef::new(4095, 1), len), Some((4095, 1)));
        assert_eq!(validate_ool(OolRef::new(4095, 2), len), None);
        assert_eq!(validate_ool(OolRef::new(4096, 1), len), None);
        assert_eq!(validate_ool(OolRef::new(4096, 0), len), None); // empty needs offset 0
        assert_eq!(validate_ool(OolRef::new(1, 0), len), None);
        assert_eq!(validate_ool(OolRef::new(u32::MAX, u32::MAX), len), None);
        assert_eq!(
            validate_ool(OolRef::new(1, u32::MAX), usize::MAX),
            Some((1, u32::MAX as usize))
        );
        assert_eq!(validate_ool(OolRef::new(0, 1), 0), None);
    }

    #[test]
    fn windows_confine_handlers_to_their_bytes() {
        let region = SharedRegion::new(HeapRegion::new(2 * 4096)).unwrap();
        let view = region.view();
        view.fill(0, 2 * 4096, 0x11).unwrap();
        let meter = CopyMeter::for_windows(1000, 1000);
        let args = OolArgs::new(view, 100, 10, &meter);
        let mut buf = [0u8; 10];
        assert_eq!(args.read(0, &mut buf), Ok(()));
        assert_eq!(args.read(1, &mut buf), Err(OolError::ArgsOutOfWindow));
        assert_eq!(
            args.read(usize::MAX, &mut buf[..1]),
            Err(OolError::ArgsOutOfWindow)
        );
        assert_eq!(args.read_pod::<u64>(3), Err(OolError::ArgsOutOfWindow));
        assert_eq!(args.read_pod::<u64>(2), Ok(u64::from_ne_bytes([0x11; 8])));

        let mut result = OolResult::new(view, 200, 8, &meter);
        assert_eq!(
            result.write(4, &[1, 2, 3, 4, 5]),
            Err(OolError::ResultOutOfWindow)
        );
        assert_eq!(result.written(), 0);
        assert_eq!(result.write(4, &[1, 2, 3, 4]), Ok(()));
        assert_eq!(result.written(), 8);
        assert_eq!(
            result.write(usize::MAX, &[1]),
            Err(OolError::ResultOutOfWindow)
        );
        assert_eq!(
            result.copy_from_args(&args, 0, 0, 9),
            Err(OolError::ResultOutOfWindow)
        );
        assert_eq!(
            result.copy_from_args(&args, 5, 0, 6),
            Err(OolError::ArgsOutOfWindow)
        );
        // Nothing outside [200, 208) was touched.
        let mut around = [0u8; 10];
        view.read(199, &mut around).unwrap();
        assert_eq!(around, [0x11, 0x11, 0x11, 0x11, 0x11, 1, 2, 3, 4, 0x11]);
        assert_eq!(
            Status::from(OolError::ArgsOutOfWindow),
            Status::BadArguments
        );
        assert_eq!(Status::from(OolError::ResultOutOfWindow), Status::TooLarge);
    }

    #[test]
    fn the_copy_limit_refuses_a_move_before_copying_anything() {
        let region = SharedRegion::new(HeapRegion::new(4096)).unwrap();
        let view = region.view();
        view.fill(0, 4096, 0x22).unwrap();
        // Windows of 100 + 100 bytes, an allowance of 150 (as if MAX_CALL_COPY were 150).
        let meter = CopyMeter::for_windows(100, 50);
        let args = OolArgs::new(view, 0, 100, &meter);
        let mut result = OolResult::new(view, 1000, 100, &meter);
        // A copy counts its length once.
        assert_eq!(result.copy_from_args(&args, 0, 0, 100), Ok(()));
        assert_eq!(meter.moved(), 100);
        let mut buf = [0u8; 51];
        assert_eq!(args.read(0, &mut buf), Err(OolError::CopyLimit));
        assert_eq!(buf, [0; 51], "nothing read past the limit");
        view.fill(1000, 100, 0x33).unwrap();
        assert_eq!(result.write(0, &[0x44; 51]), Err(OolError::CopyLimit));
        assert_eq!(
            result.copy_from_args(&args, 0, 0, 51),
            Err(OolError::CopyLimit)
        );
        let mut window = [0u8; 100];
        view.read(1000, &mut window).unwrap();
        assert_eq!(window, [0x33; 100], "nothing written past the limit");
        assert_eq!((meter.moved(), result.written()), (100, 100));
        // Up to the limit still works; a window error is reported as such, not as the limit.
        assert_eq!(result.write(0, &[0x44; 50]), Ok(()));
        assert_eq!(result.write(100, &[1]), Err(OolError::ResultOutOfWindow));
        assert_eq!(args.read(0, &mut buf[..1]), Err(OolError::CopyLimit));
        assert_eq!(meter.moved(), 150);
        assert_eq!(Status::from(OolError::CopyLimit), Status::TooLarge);
        assert!(OolError::CopyLimit
            .to_string()
            .starts_with("The call would move more"));
    }
}
