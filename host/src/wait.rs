//! Spin-then-block waiting.
//!
//! A cross-core wake-up through the kernel costs ~50 µs on the project's machines while a
//! cache-line round trip costs ~60 ns, so a waiter first polls shared memory for a bounded number
//! of iterations and only then arms the peer's notification and sleeps. Arming is followed by one
//! more check: a message that landed between the last poll and the arming would otherwise be
//! slept through (the peer saw "not armed" and sent no wake-up).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;

use crate::event::EventFd;

/// How long a waiter polls before it blocks.
///
/// The budget is time, not iterations, so it means the same on every machine: by default about
/// one cross-core wake-up (~50 µs here). Spinning longer than a wake-up costs can at best save
/// that wake-up, so this bound keeps spinning within 2x of the best choice in hindsight, while
/// replies that come back within the budget never pay for a sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinPolicy {
    /// Polling time before arming and blocking; zero blocks at once.
    pub spin_for: Duration,
}

impl SpinPolicy {
    /// Block as soon as there is nothing to do (the lowest CPU use).
    pub const BLOCKING: Self = Self {
        spin_for: Duration::ZERO,
    };
    /// Poll for up to 50 µs, then block.
    pub const DEFAULT: Self = Self::micros(50);

    /// Poll for up to `micros` microseconds, then block.
    pub const fn micros(micros: u64) -> Self {
        Self {
            spin_for: Duration::from_micros(micros),
        }
    }
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Tracks one spin phase: the clock is read only every `CLOCK_CHECK_INTERVAL` polls, and not
/// at all when the awaited event comes within the first ones (the fast path of a quick reply).
#[derive(Debug)]
pub struct SpinBudget {
    spin_for: Duration,
    polls: u32,
    started: Option<Instant>,
}

impl SpinBudget {
    /// A fresh spin phase under `policy`.
    #[inline]
    pub fn new(policy: SpinPolicy) -> Self {
        Self {
            spin_for: policy.spin_for,
            polls: 0,
            started: None,
        }
    }

    /// Counts one poll; false once the budget is spent (then arm and block).
    #[inline]
    pub fn keep_spinning(&mut self) -> bool {
        if self.spin_for.is_zero() {
            return false;
        }
        self.polls = self.polls.wrapping_add(1);
        if self.polls % CLOCK_CHECK_INTERVAL != 0 {
            return true;
        }
        let now = Instant::now();
        match self.started {
            None => {
                self.started = Some(now);
                true
            }
            Some(started) => now.duration_since(started) < self.spin_for,
        }
    }

    /// Starts a new spin phase.
    #[inline]
    pub fn reset(&mut self) {
        self.polls = 0;
        self.started = None;
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

/// How often (in polls) a spinning waiter looks at the clock.
const CLOCK_CHECK_INTERVAL: u32 = 64;
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

    /// Waits until `check` yields a value: spins per `policy`, then calls `arm` (which must make
    /// the peer send a wake-up for the next event, and return whether the event already
    /// happened), and blocks until woken, the peer hangs up, or `deadline` passes.
    /// Both closures get `state` (typically the protocol connection).
    pub fn wait<S, T>(
        &self,
        policy: SpinPolicy,
        state: &mut S,
        mut check: impl FnMut(&mut S) -> Option<T>,
        mut arm: impl FnMut(&mut S) -> bool,
        deadline: Option<Instant>,
    ) -> io::Result<WaitOutcome<T>> {
        loop {
            let mut budget = SpinBudget::new(policy);
            loop {
                if let Some(value) = check(state) {
                    return Ok(WaitOutcome::Ready(value));
                }
                if !budget.keep_spinning() {
                    break;
                }
                if budget.polls % CLOCK_CHECK_INTERVAL == 0 && expired(deadline) {
                    return Ok(WaitOutcome::TimedOut);
                }
                std::hint::spin_loop();
            }
            if arm(state) {
                continue;
            }
            let timeout = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(check(state).map_or(WaitOutcome::TimedOut, WaitOutcome::Ready)),
                },
                None => None,
            };
            match self.block(timeout)? {
                Woken::Event => {}
                Woken::Hangup => return Ok(WaitOutcome::PeerGone),
                Woken::Timeout => {
                    return Ok(check(state).map_or(WaitOutcome::TimedOut, WaitOutcome::Ready));
                }
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

#[inline]
fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
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
                SpinPolicy::micros(1000),
                &mut polls,
                |n| {
                    *n += 1;
                    (*n == 3).then_some(*n)
                },
                |_| panic!("must not arm"),
                None,
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
                SpinPolicy::BLOCKING,
                &mut armed,
                |_| flag.load(std::sync::atomic::Ordering::SeqCst).then_some(()),
                |armed| {
                    *armed += 1;
                    false
                },
                Some(Instant::now() + Duration::from_secs(10)),
            )
            .unwrap();
        signaller.join().unwrap();
        assert_eq!(outcome, WaitOutcome::Ready(()));
        assert!(armed >= 1);

        // Nothing happens: the deadline ends the wait.
        let outcome = waiter
            .wait(
                SpinPolicy::BLOCKING,
                &mut (),
                |_| None::<()>,
                |_| false,
                Some(Instant::now() + Duration::from_millis(20)),
            )
            .unwrap();
        assert_eq!(outcome, WaitOutcome::TimedOut);

        // The peer's socket closes: reported as gone, not slept through.
        assert!(!waiter.peer_gone().unwrap());
        drop(theirs);
        let outcome = waiter
            .wait(
                SpinPolicy::BLOCKING,
                &mut (),
                |_| None::<()>,
                |_| false,
                Some(Instant::now() + Duration::from_secs(10)),
            )
            .unwrap();
        assert_eq!(outcome, WaitOutcome::PeerGone);
        assert!(waiter.peer_gone().unwrap());
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn blocking_policy_never_spins() {
        let mut budget = SpinBudget::new(SpinPolicy::BLOCKING);
        assert!(!budget.keep_spinning());
    }

    #[test]
    fn spin_budget_runs_out_after_its_time_and_resets() {
        let mut budget = SpinBudget::new(SpinPolicy::micros(200));
        let start = Instant::now();
        let mut polls = 0u64;
        while budget.keep_spinning() {
            polls += 1;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "budget never ran out"
            );
        }
        assert!(polls >= u64::from(CLOCK_CHECK_INTERVAL));
        assert!(start.elapsed() >= Duration::from_micros(200));
        budget.reset();
        assert!(budget.keep_spinning());
    }
}
