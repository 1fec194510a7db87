//! Shared memory regions backed by sealed memfds. This module only creates, checks and maps
//! them; all access to their bytes goes through `xenrpc_proto`'s bounds-checked region views.
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
pub struct MemfdRegion {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory reached only through raw pointers; owning it from another
// thread changes nothing about who may write it (the peer can, at any time, anyway).
unsafe impl Send for MemfdRegion {}
// SAFETY: as above: no `&` access to the bytes is ever handed out, only the base pointer.
unsafe impl Sync for MemfdRegion {}

impl MemfdRegion {
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

    /// Maps the file between two inaccessible guard pages: any access that strays even one
    /// byte outside the region faults at once instead of reading a neighbour's memory, which
    /// turns an out-of-bounds bug in the server into a crash that tests see.
    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        let reserved_len = len + 2 * PAGE_SIZE;
        // SAFETY: a fresh inaccessible anonymous reservation at an address the kernel picks; it
        // aliases no Rust object.
        let reservation = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                reserved_len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        // SAFETY: the target range lies inside the reservation made just above, which we own and
        // nothing references; MAP_FIXED replaces exactly that range with the file, which is at
        // least `len` bytes long and sealed against shrinking.
        let mapped = unsafe {
            rustix::mm::mmap(
                reservation.cast::<u8>().add(PAGE_SIZE).cast(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &fd,
                0,
            )
        };
        let mapped = match mapped {
            Ok(ptr) => ptr,
            Err(e) => {
                // SAFETY: unmapping the reservation we made above, which nothing else uses.
                let _ = unsafe { rustix::mm::munmap(reservation, reserved_len) };
                return Err(e.into());
            }
        };
        let base =
            NonNull::new(mapped.cast::<u8>()).ok_or_else(|| invalid("mmap returned null"))?;
        Ok(Self { fd, base, len })
    }

    /// The memfd, for passing to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// SAFETY: `base..base+len` is a page-aligned mapping that lives until `Drop` unmaps it, and the
// seals stop anyone from shrinking the file behind it, so it stays readable and writable.
unsafe impl SharedMemory for MemfdRegion {
    fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for MemfdRegion {
    fn drop(&mut self) {
        // SAFETY: this is exactly the reservation made in `map` (guard page, region, guard page),
        // and no pointer derived from it outlives `self` (users reach it only through `&self`).
        let _ = unsafe {
            rustix::mm::munmap(
                self.base.as_ptr().sub(PAGE_SIZE).cast(),
                self.len + 2 * PAGE_SIZE,
            )
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(region: &MemfdRegion) -> OwnedFd {
        region.fd().try_clone_to_owned().unwrap()
    }

    #[test]
    fn two_mappings_of_one_region_share_bytes() {
        let region = MemfdRegion::create("test", 3 * PAGE_SIZE - 5).unwrap();
        assert_eq!(region.len(), 3 * PAGE_SIZE);
        assert_eq!(region.base() as usize % PAGE_SIZE, 0);
        let other = MemfdRegion::map_received(dup(&region), 3 * PAGE_SIZE).unwrap();
        assert_ne!(region.base(), other.base());
        // SAFETY: both offsets are inside their live mappings; nothing else touches them.
        unsafe {
            region.base().add(PAGE_SIZE + 7).write_volatile(0x5a);
            assert_eq!(other.base().add(PAGE_SIZE + 7).read_volatile(), 0x5a);
        }
    }

    #[test]
    fn sealed_region_cannot_be_resized_by_a_peer() {
        let region = MemfdRegion::create("test", PAGE_SIZE).unwrap();
        let peer_fd = dup(&region);
        assert!(rustix::fs::ftruncate(&peer_fd, 0).is_err());
        assert!(rustix::fs::ftruncate(&peer_fd, 2 * PAGE_SIZE as u64).is_err());
    }

    #[test]
    fn received_region_is_checked() {
        let region = MemfdRegion::create("test", 2 * PAGE_SIZE).unwrap();
        assert!(MemfdRegion::map_received(dup(&region), PAGE_SIZE).is_err());
        assert!(MemfdRegion::map_received(dup(&region), 4 * PAGE_SIZE).is_err());
        assert!(MemfdRegion::map_received(dup(&region), 2 * PAGE_SIZE - 1).is_err());

        let unsealed = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, PAGE_SIZE as u64).unwrap();
        assert!(MemfdRegion::map_received(unsealed, PAGE_SIZE).is_err());

        let not_memfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        assert!(MemfdRegion::map_received(not_memfd, PAGE_SIZE).is_err());
    }

    #[test]
    fn lengths_are_bounded() {
        assert!(MemfdRegion::create("test", 0).is_err());
        assert!(MemfdRegion::create("test", MAX_REGION_LEN + 1).is_err());
        assert_eq!(page_round_up(1).unwrap(), PAGE_SIZE);
    }
}
