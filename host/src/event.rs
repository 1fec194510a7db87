//! Event notification over eventfd: the host counterpart of a Xen event channel.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use xenrpc_proto::transport::Notify;

/// One direction of wake-ups between two processes.
///
/// The fd is non-blocking: a peer that never drains its counter cannot make `signal` block
/// (the write fails with `EAGAIN` only when the counter is already huge, i.e. the peer is
/// certainly marked as woken, so that failure is ignored).
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with its counter at 0 (close-on-exec, non-blocking).
    pub fn new() -> io::Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self { fd })
    }

    /// Wraps an eventfd received from a peer, making sure it will not block us.
    pub fn from_received(fd: OwnedFd) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        Ok(Self { fd })
    }

    /// The eventfd itself (to send to the peer, or to wait on).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Wakes whoever waits on this eventfd.
    pub fn signal(&self) -> io::Result<()> {
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Consumes pending wake-ups; returns whether there were any.
    pub fn drain(&self) -> io::Result<bool> {
        let mut counter = [0u8; 8];
        match rustix::io::read(&self.fd, &mut counter) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::AGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Blocks until a wake-up arrives or `timeout` passes, then consumes it.
    /// Returns whether one arrived.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        poll_retrying(&mut fds, timeout)?;
        self.drain()
    }
}

impl Notify for EventFd {
    fn notify(&self) {
        // A failed eventfd write (other than a full counter, which `signal` absorbs) means the fd
        // is broken; the peer then sees no wake-up, which the waiter's hangup detection and
        // timeouts turn into a closed connection rather than a hang.
        let _ = self.signal();
    }
}

/// `poll(2)` that restarts after signals. Returns the number of ready fds (0 on timeout).
pub fn poll_retrying(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let timeout = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    loop {
        match rustix::event::poll(fds, timeout.as_ref()) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
