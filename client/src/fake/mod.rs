//! Fakes of the Xen layer for host tests: an in-memory xenstore with permissions and watches
//! ([`FakeStore`]), heap "grants" and eventfd "event channels" ([`FakeXen`]), and the service
//! VM's backend (the rendezvous crate's, over those fakes) serving calls with the protocol
//! crate's real server ([`FakeServer`]), optionally misbehaving.

mod server;
mod xen;
mod xenstore;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

pub use self::server::{Behaviour, FakeServer};
pub use self::xen::FakeXen;
pub use self::xenstore::FakeXenstore;

pub(crate) fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local u64 to an eventfd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Drains an eventfd; whether it was signalled.
pub(crate) fn drain(fd: RawFd) -> bool {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live local u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) == 8 }
}
