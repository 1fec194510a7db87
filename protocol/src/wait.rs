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
//!
//! Where wake-ups are quick (the host transport's processes) the bound is a ceiling, not a
//! fixed spin: an adaptive [`SpinBudget`] learns from its own waits (halving its window while
//! work comes later than the policy's time, doubling it while a longer spin would have caught
//! the work), so an end whose calls come seldom stops paying a spin per call, and one whose
//! calls come back to back keeps catching them spinning. In a Xen guest, where a wake-up can
//! take longer than the whole window, the ends spin a fixed window.

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

/// The shortest spin window an adaptive budget keeps; a shrink below it makes the window zero
/// (block at once), a grow from zero starts here.
pub const MIN_SPIN_WINDOW_NS: u64 = 2_000;

/// A waiter's spin budget: its spin phases and, if [`Self::adaptive`], the window it learns
/// from its waits.
///
/// A wait spins for the current *window*: the [`SpinPolicy`]'s time ([`Self::new`]), or at
/// most that. An adaptive window follows the waits it serves, as KVM's halt polling does: a
/// wait that blocked and whose work then came within the policy's time (a longer spin would
/// have saved the sleep) doubles the window; a wait that blocked for longer than that (the
/// spin was wasted) halves it, down to zero. So calls that come back to back are caught
/// spinning, and a waiter whose work comes seldom (an idle service's clients, paced calls)
/// soon stops burning a spin window per call. A wait answered while spinning leaves the
/// window as it is.
///
/// Learning takes the time until the waiter *saw* its work for the time the work took to
/// come, so it needs wake-ups whose latency is well under the policy's time (a host's
/// processes: microseconds). Where waking costs more than the whole window (a Xen guest's
/// vCPU under emulation: hundreds of µs), every blocked wait looks long, the window closes and
/// never reopens; such ends spin a fixed window ([`Self::new`]).
///
/// Learning costs one or two clock reads per wait that blocked (none for one answered within
/// its first polls), and nothing at all under [`SpinPolicy::BLOCKING`].
#[derive(Debug)]
pub struct SpinBudget {
    max_ns: u64,
    window_ns: u64,
    polls: u32,
    phase_started_ns: Option<u64>,
    phase_over: bool,
    /// When the current wait began, known once its spin ran out (it is then a wait that
    /// blocked, and learned from when its work comes).
    blocked_wait_started_ns: Option<u64>,
    adaptive: bool,
}

impl SpinBudget {
    /// A budget that spins the policy's whole time in every wait.
    #[inline]
    pub fn new(policy: SpinPolicy) -> Self {
        let max_ns = u64::try_from(policy.spin_for.as_nanos()).unwrap_or(u64::MAX);
        Self {
            max_ns,
            window_ns: max_ns,
            polls: 0,
            phase_started_ns: None,
            phase_over: false,
            blocked_wait_started_ns: None,
            adaptive: false,
        }
    }

    /// A budget whose window learns from the waits, starting at the policy's time.
    #[inline]
    pub fn adaptive(policy: SpinPolicy) -> Self {
        Self {
            adaptive: true,
            ..Self::new(policy)
        }
    }

    /// How long a spin phase lasts now.
    pub fn window(&self) -> core::time::Duration {
        core::time::Duration::from_nanos(self.window_ns)
    }

    /// Counts one poll; false once the phase's window is spent (then arm and block; it stays
    /// false until [`Self::restart`] or [`Self::work_came`]). Reads `clock` only every
    /// [`CLOCK_CHECK_INTERVAL`] polls, and once when a phase with a zero window ends.
    #[inline]
    pub fn keep_spinning(&mut self, clock: &impl Clock) -> bool {
        if self.phase_over {
            return false;
        }
        if self.window_ns == 0 {
            self.end_phase(clock, None);
            return false;
        }
        self.polls = self.polls.wrapping_add(1);
        if !self.clock_due() {
            return true;
        }
        let now = clock.now_ns();
        match self.phase_started_ns {
            None => {
                self.phase_started_ns = Some(now);
                true
            }
            Some(started) if now.saturating_sub(started) < self.window_ns => true,
            Some(started) => {
                self.end_phase(clock, Some(started));
                false
            }
        }
    }

    fn end_phase(&mut self, clock: &impl Clock, started: Option<u64>) {
        self.phase_over = true;
        if self.adaptive && self.max_ns > 0 && self.blocked_wait_started_ns.is_none() {
            self.blocked_wait_started_ns = Some(started.unwrap_or_else(|| clock.now_ns()));
        }
    }

    /// Whether this poll is one the budget read the clock at: a spinning waiter that has a
    /// deadline of its own looks at it then, and not more often.
    #[inline]
    pub fn clock_due(&self) -> bool {
        self.polls % CLOCK_CHECK_INTERVAL == 0
    }

    /// Starts a new spin phase within the same wait (after a wake-up that brought no work, or
    /// when work landed while arming): the wait still learns when its work comes.
    #[inline]
    pub fn restart(&mut self) {
        self.polls = 0;
        self.phase_started_ns = None;
        self.phase_over = false;
    }

    /// The awaited work came: if this wait blocked, the window learns how long it took (one
    /// clock read); the next wait starts afresh.
    #[inline]
    pub fn work_came(&mut self, clock: &impl Clock) {
        if let Some(started) = self.blocked_wait_started_ns.take() {
            self.learn(clock.now_ns().saturating_sub(started));
        }
        self.restart();
    }

    /// The wait ended without its work (a deadline, a peer gone): nothing to learn.
    #[inline]
    pub fn abandon(&mut self) {
        self.blocked_wait_started_ns = None;
        self.restart();
    }

    /// A wait that blocked took `waited_ns` from its start to its work.
    fn learn(&mut self, waited_ns: u64) {
        self.window_ns = if waited_ns <= self.max_ns {
            self.window_ns
                .saturating_mul(2)
                .max(MIN_SPIN_WINDOW_NS)
                .min(self.max_ns)
        } else {
            match self.window_ns / 2 {
                half if half < MIN_SPIN_WINDOW_NS => 0,
                half => half,
            }
        };
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

/// The spin phase and the arm-and-recheck sequence: polls `check` while `budget`'s window
/// lasts (looking at `expired` whenever the budget reads the clock), then calls `arm` (which
/// must make the peer notify us of the next piece of work, and return whether work came
/// meanwhile) and looks once more. Both closures get `state` (typically the connection).
///
/// The budget belongs to the waiter (it learns across waits): `Ready` and `TimedOut` end the
/// wait in it; after `Block` the waiter blocks, then calls [`SpinBudget::restart`] if a woken
/// wait should spin again (or not, to only re-check), and calls this again.
pub fn spin_then_arm<S, T>(
    budget: &mut SpinBudget,
    clock: &impl Clock,
    state: &mut S,
    mut check: impl FnMut(&mut S) -> Option<T>,
    mut arm: impl FnMut(&mut S) -> bool,
    mut expired: impl FnMut() -> bool,
) -> WaitStep<T> {
    loop {
        if let Some(value) = check(state) {
            budget.work_came(clock);
            return WaitStep::Ready(value);
        }
        if budget.keep_spinning(clock) {
            if budget.clock_due() && expired() {
                budget.abandon();
                return WaitStep::TimedOut;
            }
            core::hint::spin_loop();
            continue;
        }
        if !arm(state) {
            return WaitStep::Block;
        }
        // Work came while arming: look again, with a fresh spin phase.
        budget.restart();
    }
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;
    use core::time::Duration;

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
    fn a_blocking_policy_never_spins_nor_reads_the_clock() {
        let clock = Ticking::new(1);
        let mut budget = SpinBudget::adaptive(SpinPolicy::BLOCKING);
        for _ in 0..3 {
            assert!(!budget.keep_spinning(&clock));
            budget.work_came(&clock);
        }
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
        // A spent phase stays spent until the waiter restarts it.
        assert!(!budget.keep_spinning(&clock));
        budget.restart();
        assert!(budget.keep_spinning(&clock));
    }

    /// Spins a phase out, then lets the work come `waited_ns` after the wait began.
    fn blocked_wait(budget: &mut SpinBudget, clock: &Ticking, waited_ns: u64) {
        let started = clock.now.get();
        while budget.keep_spinning(clock) {}
        clock.now.set(started + waited_ns);
        budget.work_came(&Ticking {
            now: Cell::new(started + waited_ns),
            step: 0,
            reads: Cell::new(0),
        });
    }

    #[test]
    fn waits_that_block_long_shrink_the_window_to_zero_and_short_ones_grow_it_back() {
        let clock = Ticking::new(1_000);
        let mut budget = SpinBudget::adaptive(SpinPolicy::micros(50));
        assert_eq!(budget.window(), Duration::from_micros(50));
        // Paced work, a millisecond apart: each wait halves the window, then blocks at once.
        for _ in 0..6 {
            blocked_wait(&mut budget, &clock, 1_000_000);
        }
        assert_eq!(budget.window(), Duration::ZERO);
        let reads = clock.reads.get();
        assert!(!budget.keep_spinning(&clock), "a zero window spins");
        assert_eq!(
            clock.reads.get(),
            reads + 1,
            "one read: when the wait began"
        );
        // Its work came a µs later: a spin would have caught it, so the window opens.
        budget.work_came(&clock);
        assert_eq!(budget.window(), Duration::from_micros(2));
        // Work that comes 10 µs after each wait began: likewise.
        let mut windows = Vec::new();
        for _ in 0..6 {
            blocked_wait(&mut budget, &clock, 10_000);
            windows.push(budget.window().as_micros());
        }
        assert_eq!(windows, [4, 8, 16, 32, 50, 50]);
    }

    #[test]
    fn a_fixed_budget_spins_its_whole_time_whatever_its_waits_took() {
        let clock = Ticking::new(1_000);
        let mut budget = SpinBudget::new(SpinPolicy::micros(50));
        for _ in 0..6 {
            blocked_wait(&mut budget, &clock, 1_000_000);
        }
        assert_eq!(budget.window(), Duration::from_micros(50));
    }

    #[test]
    fn a_wait_answered_while_spinning_leaves_the_window_and_reads_no_clock() {
        let clock = Ticking::new(1);
        let mut budget = SpinBudget::adaptive(SpinPolicy::micros(50));
        blocked_wait(&mut budget, &clock, 1_000_000);
        let window = budget.window();
        let reads = clock.reads.get();
        assert!(budget.keep_spinning(&clock));
        budget.work_came(&clock);
        assert_eq!(budget.window(), window);
        assert_eq!(clock.reads.get(), reads);
    }

    #[test]
    fn an_abandoned_wait_teaches_nothing() {
        let clock = Ticking::new(1_000);
        let mut budget = SpinBudget::adaptive(SpinPolicy::micros(50));
        while budget.keep_spinning(&clock) {}
        budget.abandon();
        clock.now.set(clock.now.get() + 10_000_000);
        budget.work_came(&clock);
        assert_eq!(budget.window(), Duration::from_micros(50));
    }

    #[test]
    fn work_within_the_first_polls_costs_no_clock_read() {
        let clock = Ticking::new(1);
        let mut left = 10;
        let step = spin_then_arm(
            &mut SpinBudget::new(SpinPolicy::DEFAULT),
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
            &mut SpinBudget::new(SpinPolicy::micros(50)),
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
            &mut SpinBudget::new(SpinPolicy::micros(50)),
            &clock,
            &mut (),
            |_| None::<()>,
            |_| false,
            || false,
        );
        assert_eq!(block, WaitStep::Block);
        let late = spin_then_arm(
            &mut SpinBudget::new(SpinPolicy::micros(500)),
            &Ticking::new(1),
            &mut (),
            |_| None::<()>,
            |_| panic!("armed past the deadline"),
            || true,
        );
        assert_eq!(late, WaitStep::TimedOut);
    }
}
