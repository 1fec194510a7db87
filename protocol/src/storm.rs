//! Event-storm defence for a transport whose peer can raise the server's event at will (a Xen
//! event channel): wake-ups that found nothing to do are counted per window, and a peer that
//! causes far more of them than its calls can explain is cut off.
//!
//! A well-behaved client raises the event only when it publishes requests past the server's
//! threshold (or frees response slots the server waits for), so its spurious wake-ups are at
//! most a few per call, from races between the server arming its threshold and the client's
//! notify. The allowance is therefore a fixed base plus a multiple of the calls it earned:
//! well-formed two-way requests only ([`crate::PollOutcome::earned`]). A request the server
//! refuses at its header, or a one-way call, earns nothing: otherwise a client could buy
//! spurious wake-ups with requests it knows are refused.

/// Length of one counting window, in nanoseconds of the transport's clock.
pub const STORM_WINDOW_NS: u64 = 1_000_000_000;
/// Spurious wake-ups allowed in a window whatever the traffic.
pub const STORM_BASE_ALLOWANCE: u32 = 1_000;
/// Pings (the ping port, bounced straight back) allowed in a window whatever the traffic: a
/// round-trip benchmark pings back to back, each ping waiting for its bounce (`xenrpc bench
/// --event-ping` sends 1,000), while a flood keeps the port pending on every pass.
pub const PING_BASE_ALLOWANCE: u32 = 3_000;
/// Extra spurious wake-ups allowed per well-formed two-way request in the same window.
pub const STORM_PER_REQUEST_ALLOWANCE: u32 = 2;

/// A peer raised the event far more often than its calls explain: "event storm: {spurious}
/// wake-ups without requests against {earned} calls within 1000 ms".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventStorm {
    /// Wake-ups that found no request, in the window that overflowed.
    pub spurious: u32,
    /// Well-formed two-way requests in that window.
    pub earned: u32,
}

impl core::fmt::Display for EventStorm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "event storm: {} wake-ups without requests against {} calls within {} ms",
            self.spurious,
            self.earned,
            STORM_WINDOW_NS / 1_000_000
        )
    }
}

impl core::error::Error for EventStorm {}

/// Per-connection counter of wake-ups; feed it every wake-up the peer's event caused.
#[derive(Clone, Copy, Debug)]
pub struct EventStormGuard {
    window_start_ns: u64,
    spurious: u32,
    earned: u32,
    base_allowance: u32,
}

impl Default for EventStormGuard {
    fn default() -> Self {
        Self::new(0)
    }
}

impl EventStormGuard {
    /// A guard whose first window starts at `now_ns`, allowing [`STORM_BASE_ALLOWANCE`]
    /// spurious wake-ups per window whatever the traffic.
    pub const fn new(now_ns: u64) -> Self {
        Self::with_base_allowance(now_ns, STORM_BASE_ALLOWANCE)
    }

    /// A guard allowing `base_allowance` spurious wake-ups per window whatever the traffic
    /// (e.g. [`PING_BASE_ALLOWANCE`] for a ping port).
    pub const fn with_base_allowance(now_ns: u64, base_allowance: u32) -> Self {
        EventStormGuard {
            window_start_ns: now_ns,
            spurious: 0,
            earned: 0,
            base_allowance,
        }
    }

    /// Records one wake-up by the peer's event at `now_ns` that led to `earned` well-formed
    /// two-way requests (pass [`crate::PollOutcome::earned`]; 0: spurious, whatever else the
    /// poll took off the ring). Errs once the window's spurious wake-ups exceed the allowance.
    pub fn record_wakeup(&mut self, now_ns: u64, earned: u32) -> Result<(), EventStorm> {
        // A clock that went backwards starts a new window too.
        if now_ns < self.window_start_ns || now_ns - self.window_start_ns >= STORM_WINDOW_NS {
            *self = EventStormGuard::with_base_allowance(now_ns, self.base_allowance);
        }
        self.earned = self.earned.saturating_add(earned);
        if earned == 0 {
            self.spurious = self.spurious.saturating_add(1);
        }
        let allowance = self
            .base_allowance
            .saturating_add(self.earned.saturating_mul(STORM_PER_REQUEST_ALLOWANCE));
        if self.spurious > allowance {
            return Err(EventStorm {
                spurious: self.spurious,
                earned: self.earned,
            });
        }
        Ok(())
    }

    /// Records well-formed two-way requests served without a fresh event (left over from an
    /// earlier budget; pass [`crate::PollOutcome::earned`]).
    pub fn record_handled(&mut self, earned: u32) {
        self.earned = self.earned.saturating_add(earned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_within_one_window_is_caught_just_past_the_allowance() {
        let mut guard = EventStormGuard::new(5);
        for i in 0..STORM_BASE_ALLOWANCE {
            assert_eq!(guard.record_wakeup(5 + u64::from(i), 0), Ok(()));
        }
        let storm = guard.record_wakeup(6_000, 0).unwrap_err();
        assert_eq!(
            storm,
            EventStorm {
                spurious: STORM_BASE_ALLOWANCE + 1,
                earned: 0
            }
        );
        assert!(storm.to_string().starts_with("event storm: 1001 wake-ups"));
    }

    #[test]
    fn a_ping_guard_allows_a_round_trip_benchmark_but_not_a_flood() {
        let mut guard = EventStormGuard::with_base_allowance(0, PING_BASE_ALLOWANCE);
        // 1,000 back-to-back pings within one window (a benchmark run): fine, and after the
        // window a new one starts with the same allowance.
        for i in 0..1_000u64 {
            assert!(guard.record_wakeup(i * 1_000, 0).is_ok());
        }
        for i in 0..1_000u64 {
            assert!(guard.record_wakeup(STORM_WINDOW_NS + i, 0).is_ok());
        }
        let storm = (0..PING_BASE_ALLOWANCE as u64 + 1)
            .find_map(|i| guard.record_wakeup(STORM_WINDOW_NS + 1_000 + i, 0).err());
        assert!(storm.is_some(), "a flood past the ping allowance is caught");
    }

    #[test]
    fn calls_earn_allowance_for_racy_wakeups() {
        let mut guard = EventStormGuard::new(0);
        // A busy client: every call followed by two spurious wake-ups, for many windows' worth.
        for i in 0..20_000u64 {
            let now = i * 1_000;
            assert_eq!(guard.record_wakeup(now, 1), Ok(()), "call {i}");
            assert_eq!(guard.record_wakeup(now + 1, 0), Ok(()), "call {i}");
            assert_eq!(guard.record_wakeup(now + 2, 0), Ok(()), "call {i}");
        }
    }

    #[test]
    fn requests_served_from_leftovers_count_too() {
        let mut guard = EventStormGuard::new(0);
        guard.record_handled(1_000);
        for _ in 0..STORM_BASE_ALLOWANCE + 2_000 {
            assert_eq!(guard.record_wakeup(10, 0), Ok(()));
        }
        assert!(guard.record_wakeup(10, 0).is_err());
    }

    #[test]
    fn a_new_window_forgives_the_old_one() {
        let mut guard = EventStormGuard::new(0);
        for _ in 0..STORM_BASE_ALLOWANCE {
            guard.record_wakeup(1, 0).unwrap();
        }
        assert_eq!(guard.record_wakeup(STORM_WINDOW_NS + 1, 0), Ok(()));
        for _ in 1..STORM_BASE_ALLOWANCE {
            guard.record_wakeup(STORM_WINDOW_NS + 2, 0).unwrap();
        }
        assert!(guard.record_wakeup(STORM_WINDOW_NS + 3, 0).is_err());
    }

    #[test]
    fn a_clock_that_goes_backwards_starts_a_new_window() {
        let mut guard = EventStormGuard::new(1_000_000);
        for _ in 0..STORM_BASE_ALLOWANCE {
            guard.record_wakeup(1_000_000, 0).unwrap();
        }
        assert_eq!(guard.record_wakeup(10, 0), Ok(()));
    }
}
