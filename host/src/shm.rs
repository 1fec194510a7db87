//! Shared memory regions backed by sealed memfds.
//!
//! The server creates every region it shares with a client and seals its size before handing the
//! fd over. A client that could shrink the file would turn the server's next read of its ring into
//! a SIGBUS; with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` the kernel refuses that, so the
//! mapping stays valid for the server's whole view of the connection.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use xenrpc_proto::transport::SharedMemory;

/// Page size assumed for region lengths (x86-64 Linux, and Xen's grant granularity).
pub const PAGE_SIZE: usize = 4096;

/// Largest region this crate maps for one peer (guards against absurd requests).
pub const MAX_REGION_LEN: usize = 1 << 30;

const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A mapping of a sealed memfd, shared with another process.
#[derive(Debug)]
pub struct SharedRegion {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory reached only through raw pointers; owning it from another
// thread changes nothing about who may write it (the peer can, at any time, anyway).
unsafe impl Send for SharedRegion {}
// SAFETY: as above: no `&` access to the bytes is ever handed out, only the base pointer.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Creates a zero-filled region of `len` bytes (rounded up to whole pages), sealed against
    /// resizing, and maps it read/write.
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        let len = page_round_up(len)?;
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS)?;
        Self::map(fd, len)
    }

    /// Maps a region received from a peer, after checking that it is a memfd of exactly
    /// `expected_len` bytes whose size is sealed (so the peer cannot later shrink it under us).
    pub fn map_received(fd: OwnedFd, expected_len: usize) -> io::Result<Self> {
        if expected_len == 0 || expected_len % PAGE_SIZE != 0 || expected_len > MAX_REGION_LEN {
            return Err(invalid(
                "region length is not a whole number of pages within limits",
            ));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|_| invalid("region fd is not a sealable memfd"))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(invalid("region fd is not sealed against resizing"));
        }
        let stat = rustix::fs::fstat(&fd)?;
        if u64::try_from(stat.st_size).ok() != Some(expected_len as u64) {
            return Err(invalid("region fd size differs from the announced length"));
        }
        Self::map(fd, expected_len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint) of a file that is at
        // least `len` bytes long and sealed against shrinking; it aliases no Rust object.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| invalid("mmap returned null"))?;
        Ok(Self { fd, base, len })
    }

    /// The memfd, for passing to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Copies `src` into the region at `offset`. A raw `copy_nonoverlapping` (not a reference)
    /// is sound here: no Rust reference into the region exists, and a peer racing the copy only
    /// garbles data that it owns anyway.
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(src.len())
            .filter(|&end| end <= self.len)
            .ok_or_else(|| invalid("write outside the region"))?;
        debug_assert!(end <= self.len);
        // SAFETY: `offset..end` lies inside the live mapping (checked above); the destination is
        // raw shared memory, not aliased by any Rust reference; `src` is private memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    /// Copies `dst.len()` bytes at `offset` out of the region into private memory. The peer may
    /// be writing concurrently: the copy is a snapshot of unspecified bytes, never a reference.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> io::Result<()> {
        offset
            .checked_add(dst.len())
            .filter(|&end| end <= self.len)
            .ok_or_else(|| invalid("read outside the region"))?;
        // SAFETY: the source range lies inside the live mapping (checked above) and `dst` is a
        // private buffer that cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }
}

// SAFETY: `base..base+len` is a page-aligned mapping that lives until `Drop` unmaps it, and the
// seals stop anyone from shrinking the file behind it, so it stays readable and writable.
unsafe impl SharedMemory for SharedRegion {
    fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, and no pointer derived from
        // it outlives `self` (users reach the memory only through `&self`).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Rounds `len` up to whole pages, refusing zero and oversized requests.
pub fn page_round_up(len: usize) -> io::Result<usize> {
    if len == 0 || len > MAX_REGION_LEN {
        return Err(invalid("region length must be between 1 byte and 1 GiB"));
    }
    Ok(len.div_ceil(PAGE_SIZE) * PAGE_SIZE)
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
