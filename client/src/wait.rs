//! Waiting on file descriptors with a deadline: the one place the client blocks.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// What a wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Bit `i` set: `fds[i]` is readable (or has an error/hang-up pending, which its read reports).
    Ready(u32),
    /// The deadline passed with no fd ready.
    TimedOut,
}

/// Milliseconds until `deadline`, rounded up so a wait never ends early.
fn millis_until(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// Waits until one of `fds` (at most 32) is readable or `deadline` passes.
pub fn poll_readable(fds: &[RawFd], deadline: Instant) -> io::Result<Readiness> {
    assert!(fds.len() <= 32, "poll_readable takes at most 32 fds");
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let timeout = millis_until(deadline);
        // SAFETY: `pollfds` is a valid array of `pollfds.len()` initialised pollfd structs that
        // lives across the call; poll only writes their `revents` fields.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            if Instant::now() >= deadline {
                return Ok(Readiness::TimedOut);
            }
            continue;
        }
        let mut mask = 0u32;
        for (i, p) in pollfds.iter().enumerate() {
            if p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                mask |= 1 << i;
            }
        }
        return Ok(Readiness::Ready(mask));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_out_on_a_silent_fd_and_sees_a_written_one() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            poll_readable(&[fds[0]], deadline).unwrap(),
            Readiness::TimedOut
        );
        assert!(Instant::now() >= deadline);
        // SAFETY: writing one byte from a live buffer to the pipe's write end.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            poll_readable(&[fds[1], fds[0]], far).unwrap(),
            Readiness::Ready(0b10)
        );
        for fd in fds {
            // SAFETY: closing descriptors this test owns.
            unsafe { libc::close(fd) };
        }
    }
}
