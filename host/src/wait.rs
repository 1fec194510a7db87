//! Spin-then-block waiting on the host transport: the protocol's one policy
//! ([`xenrpc_proto::wait`]) driven with the monotonic clock, the peer's eventfd and epoll.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use xenrpc_proto::wait::{spin_then_arm, WaitStep};
pub use xenrpc_proto::wait::{SpinBudget, SpinPolicy};
use xenrpc_proto::Clock;

use crate::event::EventFd;

/// The monotonic clock (`CLOCK_MONOTONIC`, the one [`crate::client::monotonic_ns`] reads): what
/// deadlines and spin budgets are measured on.
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        crate::client::monotonic_ns()
    }
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitOutcome<T> {
    /// The awaited value.
    Ready(T),
    /// The peer's end of the rendezvous socket hung up (the peer process is gone) or it broke
    /// protocol by writing to a socket that must stay silent.
    PeerGone,
    /// The deadline passed first.
    TimedOut,
}

/// When a wait gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Never: it waits until the value comes or the peer is gone.
    Never,
    /// At this instant.
    At(Instant),
    /// This long after the wait first looks at the clock (which a wait answered within its
    /// first polls never does): the deadline of a call whose answer usually comes at once,
    /// with no clock read for it.
    After(Duration),
}

impl Deadline {
    /// The instant, an [`Deadline::After`] fixed (as [`Deadline::At`]) at its first look.
    fn instant(&mut self) -> Option<Instant> {
        match *self {
            Deadline::Never => None,
            Deadline::At(at) => Some(at),
            Deadline::After(after) => {
                let at = Instant::now() + after;
                *self = Deadline::At(at);
                Some(at)
            }
        }
    }

    /// Whether it has passed (fixing an `After` first).
    fn passed(&mut self) -> bool {
        self.instant().is_some_and(|at| Instant::now() >= at)
    }
}

impl From<Option<Instant>> for Deadline {
    fn from(at: Option<Instant>) -> Self {
        at.map_or(Deadline::Never, Deadline::At)
    }
}

const TOKEN_WAKEUP: u64 = 1;
const TOKEN_HANGUP: u64 = 2;

/// Blocks on one connection's incoming wake-ups and on its rendezvous socket.
///
/// The eventfd is watched edge-triggered: every `write` by the peer is a new edge, so the
/// counter never needs draining and a wake-up costs the waiter one syscall (`epoll_wait`).
#[derive(Debug)]
pub struct Waiter {
    epoll: OwnedFd,
}

impl Waiter {
    /// Watches `wakeups` (the peer's wake-ups to us) and `hangup` (our end of the rendezvous
    /// socket, readable when the peer is gone).
    pub fn new(wakeups: &EventFd, hangup: BorrowedFd<'_>) -> io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            wakeups.fd(),
            epoll::EventData::new_u64(TOKEN_WAKEUP),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        epoll::add(
            &epoll,
            hangup,
            epoll::EventData::new_u64(TOKEN_HANGUP),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )?;
        Ok(Self { epoll })
    }

    /// Waits until `check` yields a value: spins for `budget`'s window (again after each
    /// wake-up), then calls `arm` (which must make the peer send a wake-up for the next event,
    /// and return whether the event already happened), and blocks until woken, the peer hangs
    /// up, or `deadline` passes. Both closures get `state` (typically the protocol connection).
    /// The budget learns from the wait (see [`SpinBudget`]).
    pub fn wait<S, T>(
        &self,
        budget: &mut SpinBudget,
        state: &mut S,
        mut check: impl FnMut(&mut S) -> Option<T>,
        mut arm: impl FnMut(&mut S) -> bool,
        deadline: &mut Deadline,
    ) -> io::Result<WaitOutcome<T>> {
        loop {
            let step = spin_then_arm(budget, &MonotonicClock, state, &mut check, &mut arm, || {
                deadline.passed()
            });
            match step {
                WaitStep::Ready(value) => return Ok(WaitOutcome::Ready(value)),
                WaitStep::TimedOut => return Ok(WaitOutcome::TimedOut),
                WaitStep::Block => {}
            }
            let timeout = match deadline.instant() {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(Self::last_look(budget, state, &mut check)),
                },
                None => None,
            };
            match self.block(timeout)? {
                Woken::Event => budget.restart(),
                Woken::Hangup => {
                    budget.abandon();
                    return Ok(WaitOutcome::PeerGone);
                }
                Woken::Timeout => return Ok(Self::last_look(budget, state, &mut check)),
            }
        }
    }

    /// The look at a passed deadline: the value if it came after all, else a timeout.
    fn last_look<S, T>(
        budget: &mut SpinBudget,
        state: &mut S,
        check: &mut impl FnMut(&mut S) -> Option<T>,
    ) -> WaitOutcome<T> {
        match check(state) {
            Some(value) => {
                budget.work_came(&MonotonicClock);
                WaitOutcome::Ready(value)
            }
            None => {
                budget.abandon();
                WaitOutcome::TimedOut
            }
        }
    }

    /// Whether the peer has hung up, without blocking.
    pub fn peer_gone(&self) -> io::Result<bool> {
        Ok(matches!(self.block(Some(Duration::ZERO))?, Woken::Hangup))
    }

    fn block(&self, timeout: Option<Duration>) -> io::Result<Woken> {
        let timeout = timeout.map(timespec);
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 2];
        let ready = loop {
            match epoll::wait(self.epoll.as_fd(), &mut events[..], timeout.as_ref()) {
                Ok(ready) => break ready,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if ready == 0 {
            return Ok(Woken::Timeout);
        }
        // The rendezvous socket carries nothing after set-up: readable means EOF or garbage.
        if events[..ready]
            .iter()
            .any(|event| event.data.u64() == TOKEN_HANGUP)
        {
            return Ok(Woken::Hangup);
        }
        Ok(Woken::Event)
    }
}

enum Woken {
    Event,
    Hangup,
    Timeout,
}

/// A `Duration` as the kernel's timespec (saturating).
pub fn timespec(duration: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: duration.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn ready_value_ends_the_wait_without_blocking() {
        let wakeups = EventFd::new().unwrap();
        let (ours, _theirs) = pair();
        let waiter = Waiter::new(&wakeups, ours.as_fd()).unwrap();
        let mut polls = 0;
        let outcome = waiter
            .wait(
                &mut SpinBudget::new(SpinPolicy::micros(1000)),
                &mut polls,
                |n| {
                    *n += 1;
                    (*n == 3).then_some(*n)
                },
                |_| panic!("must not arm"),
                &mut Deadline::Never,
            )
            .unwrap();
        assert_eq!(outcome, WaitOutcome::Ready(3));
    }

    #[test]
    fn blocked_waiter_wakes_on_signal_and_sees_hangup_and_timeout() {
        let wakeups = EventFd::new().unwrap();
        let (ours, theirs) = pair();
        let waiter = Waiter::new(&wakeups, ours.as_fd()).unwrap();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

        // Woken by the peer's signal after it sets the flag.
        let (peer_flag, peer_wakeups) = (flag.clone(), wakeups.fd().try_clone_to_owned().unwrap());
        let signaller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            peer_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            EventFd::from_received(peer_wakeups)
                .unwrap()
                .signal()
                .unwrap();
        });
        let mut armed = 0;
        let outcome = waiter
            .wait(
                &mut SpinBudget::new(SpinPolicy::BLOCKING),
                &mut armed,
                |_| flag.load(std::sync::atomic::Ordering::SeqCst).then_some(()),
                |armed| {
                    *armed += 1;
                    false
                },
                &mut Deadline::After(Duration::from_secs(10)),
            )
            .unwrap();
        signaller.join().unwrap();
        assert_eq!(outcome, WaitOutcome::Ready(()));
        assert!(armed >= 1);

        // Nothing happens: the deadline ends the wait.
        let outcome = waiter
            .wait(
                &mut SpinBudget::new(SpinPolicy::BLOCKING),
                &mut (),
                |_| None::<()>,
                |_| false,
                &mut Deadline::After(Duration::from_millis(20)),
            )
            .unwrap();
        assert_eq!(outcome, WaitOutcome::TimedOut);

        // The peer's socket closes: reported as gone, not slept through.
        assert!(!waiter.peer_gone().unwrap());
        drop(theirs);
        let outcome = waiter
            .wait(
                &mut SpinBudget::new(SpinPolicy::BLOCKING),
                &mut (),
                |_| None::<()>,
                |_| false,
                &mut Deadline::After(Duration::from_secs(10)),
            )
            .unwrap();
        assert_eq!(outcome, WaitOutcome::PeerGone);
        assert!(waiter.peer_gone().unwrap());
    }
}
