//! Spin-then-block waiting.
//!
//! A cross-core wake-up through the kernel costs ~50 µs on the project's machines while a
//! cache-line round trip costs ~60 ns, so a waiter first polls shared memory for a bounded number
//! of iterations and only then arms the peer's notification and sleeps. Arming is followed by one
//! more check: a message that landed between the last poll and the arming would otherwise be
//! slept through (the peer saw "not armed" and sent no wake-up).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::event::{poll_retrying, EventFd};

/// How long a waiter polls before it blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinPolicy {
    /// Polls of shared memory before arming and blocking; 0 blocks at once.
    pub spin_iterations: u32,
}

impl SpinPolicy {
    /// Block as soon as there is nothing to do (the lowest CPU use).
    pub const BLOCKING: Self = Self { spin_iterations: 0 };
    /// Spin long enough to cover a typical call turnaround without sleeping (a few hundred µs
    /// of polling at most), then block.
    pub const DEFAULT: Self = Self {
        spin_iterations: 100_000,
    };
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a wait ended without the awaited condition.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitOutcome<T> {
    Ready(T),
    /// The peer's end of the rendezvous socket hung up (the peer process is gone) or it broke
    /// protocol by writing to a socket that must stay silent.
    PeerGone,
    TimedOut,
}

/// How often (in spin iterations) the spinning waiter looks at the clock.
const CLOCK_CHECK_INTERVAL: u32 = 1024;

/// Waits until `check` yields a value: spins per `policy`, then calls `arm` (which must make the
/// peer send a wake-up on `wakeups` for the next event) and blocks on `wakeups` and `hangup`.
pub fn spin_then_block<T>(
    policy: SpinPolicy,
    mut check: impl FnMut() -> Option<T>,
    mut arm: impl FnMut(),
    wakeups: &EventFd,
    hangup: BorrowedFd<'_>,
    deadline: Option<Instant>,
) -> io::Result<WaitOutcome<T>> {
    loop {
        for i in 0..policy.spin_iterations {
            if let Some(value) = check() {
                return Ok(WaitOutcome::Ready(value));
            }
            if i % CLOCK_CHECK_INTERVAL == CLOCK_CHECK_INTERVAL - 1 && expired(deadline) {
                return Ok(WaitOutcome::TimedOut);
            }
            std::hint::spin_loop();
        }
        arm();
        if let Some(value) = check() {
            return Ok(WaitOutcome::Ready(value));
        }
        let timeout = match deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Ok(WaitOutcome::TimedOut),
            },
            None => None,
        };
        match block(wakeups, hangup, timeout)? {
            Woken::Event => {}
            Woken::Hangup => return Ok(WaitOutcome::PeerGone),
            Woken::Timeout => {
                if let Some(value) = check() {
                    return Ok(WaitOutcome::Ready(value));
                }
                return Ok(WaitOutcome::TimedOut);
            }
        }
    }
}

enum Woken {
    Event,
    Hangup,
    Timeout,
}

fn block(
    wakeups: &EventFd,
    hangup: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> io::Result<Woken> {
    let mut fds = [
        PollFd::from_borrowed_fd(wakeups.fd(), PollFlags::IN),
        PollFd::from_borrowed_fd(hangup, PollFlags::IN),
    ];
    if poll_retrying(&mut fds, timeout)? == 0 {
        return Ok(Woken::Timeout);
    }
    // The rendezvous socket carries nothing after set-up: readable means EOF or garbage.
    if !fds[1].revents().is_empty() {
        return Ok(Woken::Hangup);
    }
    wakeups.drain()?;
    Ok(Woken::Event)
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}
