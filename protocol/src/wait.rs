//! Spin-then-block: the one waiting policy of every end (the host transport's client and
//! server, the Linux client, the service VM's dispatch loop), each driving it with its own
//! clock, its own way to arm the peer's notification and its own way to block.
//!
//! A wake-up through a kernel or the hypervisor costs tens of microseconds, a look at shared
//! memory tens of nanoseconds, so a waiter first polls for a bounded time ([`SpinPolicy`]) and
//! only then arms the peer's notification and sleeps. Arming is followed by one more look
//! ([`spin_then_arm`]): work that landed between the last poll and the arming would otherwise
//! be slept through (the peer saw "not armed" and sent no wake-up).
//!
//! The budget is time, not polls, so it means the same on every machine; but the clock is
//! read only every [`CLOCK_CHECK_INTERVAL`] polls and not at all when the awaited work comes
//! within the first ones ([`SpinBudget`]): in a guest without a fast user-space clock (a Xen
//! PV Linux guest makes each read a system call) a clock read costs more than a poll.

use core::time::Duration;

use crate::transport::Clock;

/// How long a waiter polls before it blocks.
///
/// By default about one cross-core wake-up (~50 µs on the project's machines): spinning
/// longer than a wake-up costs can at best save that wake-up, so this bound keeps spinning
/// within 2x of the best choice in hindsight, while work that comes within the budget never
/// pays for a sleep.
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

    /// Poll for up to `nanos` nanoseconds, then block.
    pub const fn nanos(nanos: u64) -> Self {
        Self {
            spin_for: Duration::from_nanos(nanos),
        }
    }
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The process's monotonic clock (`std::time::Instant`, from the first read), for ends that
/// measure only spans with it.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default)]
pub struct StdClock;

#[cfg(feature = "std")]
impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let elapsed = EPOCH.get_or_init(std::time::Instant::now).elapsed();
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How often (in polls) a spinning waiter looks at the clock.
pub const CLOCK_CHECK_INTERVAL: u32 = 64;

/// One spin phase under a [`SpinPolicy`].
#[derive(Debug)]
pub struct SpinBudget {
    spin_ns: u64,
    polls: u32,
    started_ns: Option<u64>,
}

impl SpinBudget {
    /// A fresh spin phase under `policy`.
    #[inline]
    pub fn new(policy: SpinPolicy) -> Self {
        Self {
            spin_ns: u64::try_from(policy.spin_for.as_nanos()).unwrap_or(u64::MAX),
            polls: 0,
            started_ns: None,
        }
    }

    /// Counts one poll; false once the budget is spent (then arm and block). Reads `clock`
    /// only every [`CLOCK_CHECK_INTERVAL`] polls.
    #[inline]
    pub fn keep_spinning(&mut self, clock: &impl Clock) -> bool {
        if self.spin_ns == 0 {
            return false;
        }
        self.polls = self.polls.wrapping_add(1);
        if !self.clock_due() {
            return true;
        }
        let now = clock.now_ns();
        match self.started_ns {
            None => {
                self.started_ns = Some(now);
                true
            }
            Some(started) => now.saturating_sub(started) < self.spin_ns,
        }
    }

    /// Whether this poll is one the budget read the clock at: a spinning waiter that has a
    /// deadline of its own looks at it then, and not more often.
    #[inline]
    pub fn clock_due(&self) -> bool {
        self.polls % CLOCK_CHECK_INTERVAL == 0
    }

    /// Starts a new spin phase.
    #[inline]
    pub fn reset(&mut self) {
        self.polls = 0;
        self.started_ns = None;
    }
}

/// What a waiter does after [`spin_then_arm`].
#[derive(Debug, PartialEq, Eq)]
pub enum WaitStep<T> {
    /// The awaited value came.
    Ready(T),
    /// Armed, and nothing came: block on the end's own primitive until woken (or its
    /// deadline), then call [`spin_then_arm`] again.
    Block,
    /// `expired` said the waiter's deadline passed while it spun.
    TimedOut,
}

/// The spin phase and the arm-and-recheck sequence: polls `check` while `policy`'s budget
/// lasts (looking at `expired` whenever the budget reads the clock), then calls `arm` (which
/// must make the peer notify us of the next piece of work, and return whether work came
/// meanwhile) and looks once more. Both closures get `state` (typically the connection).
pub fn spin_then_arm<S, T>(
    policy: SpinPolicy,
    clock: &impl Clock,
    state: &mut S,
    mut check: impl FnMut(&mut S) -> Option<T>,
    mut arm: impl FnMut(&mut S) -> bool,
    mut expired: impl FnMut() -> bool,
) -> WaitStep<T> {
    let mut budget = SpinBudget::new(policy);
    loop {
        if let Some(value) = check(state) {
            return WaitStep::Ready(value);
        }
        if budget.keep_spinning(clock) {
            if budget.clock_due() && expired() {
                return WaitStep::TimedOut;
            }
            core::hint::spin_loop();
            continue;
        }
        if !arm(state) {
            return WaitStep::Block;
        }
        // Work came while arming: look again, with a fresh spin phase.
        budget.reset();
    }
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use super::*;

    /// A clock that moves by `step` ns at each read, and counts reads.
    struct Ticking {
        now: Cell<u64>,
        step: u64,
        reads: Cell<u32>,
    }

    impl Ticking {
        fn new(step: u64) -> Self {
            Ticking {
                now: Cell::new(0),
                step,
                reads: Cell::new(0),
            }
        }
    }

    impl Clock for Ticking {
        fn now_ns(&self) -> u64 {
            self.reads.set(self.reads.get() + 1);
            self.now.set(self.now.get() + self.step);
            self.now.get()
        }
    }

    #[test]
    fn a_blocking_policy_never_spins() {
        let clock = Ticking::new(1);
        let mut budget = SpinBudget::new(SpinPolicy::BLOCKING);
        assert!(!budget.keep_spinning(&clock));
        assert_eq!(clock.reads.get(), 0);
    }

    #[test]
    fn the_budget_reads_the_clock_once_per_interval_and_runs_out_after_its_time() {
        // Each read moves the clock 10 µs: the first starts the phase, the 6th finds 50 µs
        // gone.
        let clock = Ticking::new(10_000);
        let mut budget = SpinBudget::new(SpinPolicy::micros(50));
        let mut polls = 0u32;
        while budget.keep_spinning(&clock) {
            polls += 1;
        }
        assert_eq!(clock.reads.get(), 6);
        assert_eq!(polls + 1, 6 * CLOCK_CHECK_INTERVAL);
        budget.reset();
        assert!(budget.keep_spinning(&clock));
    }

    #[test]
    fn work_within_the_first_polls_costs_no_clock_read() {
        let clock = Ticking::new(1);
        let mut left = 10;
        let step = spin_then_arm(
            SpinPolicy::DEFAULT,
            &clock,
            &mut left,
            |left| {
                *left -= 1;
                (*left == 0).then_some("work")
            },
            |_| panic!("armed although work came"),
            || false,
        );
        assert_eq!(step, WaitStep::Ready("work"));
        assert_eq!(clock.reads.get(), 0);
    }

    #[test]
    fn work_that_lands_while_arming_is_taken_not_slept_through() {
        let clock = Ticking::new(100_000);
        let mut arrived = false;
        let step = spin_then_arm(
            SpinPolicy::micros(50),
            &clock,
            &mut arrived,
            |arrived| arrived.then_some(1),
            |arrived| {
                *arrived = true;
                true
            },
            || false,
        );
        assert_eq!(step, WaitStep::Ready(1));
    }

    #[test]
    fn nothing_after_arming_means_block_and_a_passed_deadline_ends_the_spin() {
        let clock = Ticking::new(100_000);
        let block = spin_then_arm(
            SpinPolicy::micros(50),
            &clock,
            &mut (),
            |_| None::<()>,
            |_| false,
            || false,
        );
        assert_eq!(block, WaitStep::Block);
        let late = spin_then_arm(
            SpinPolicy::micros(500),
            &Ticking::new(1),
            &mut (),
            |_| None::<()>,
            |_| panic!("armed past the deadline"),
            || true,
        );
        assert_eq!(late, WaitStep::TimedOut);
    }
}
