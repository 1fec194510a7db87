//! Deadlines the server can check, for a client that cannot read the server's clock (a Linux
//! guest cannot read Xen system time, which the service VM measures `deadline_ns` against).
//!
//! Every response carries the server's clock when it was written. A call sent at client time
//! `sent` and stamped `stamp` by the server bounds the offset between the clocks from above:
//! when the server stamped it, the client's clock read at least `sent`, so
//! `offset = server - client <= stamp - sent`. The smallest such bound over recent calls,
//! added to a client deadline, gives a server deadline that is never earlier than the client's
//! own: the server refuses a call only once the client has given up on it too (late by at most
//! the best recent one-way trip).

use std::collections::VecDeque;
use std::time::Instant;

/// Bounds kept: recent ones only, so a slow drift between the clocks cannot pin an old bound.
const SAMPLES: usize = 64;

/// The client's estimate of the server's clock on one connection.
#[derive(Debug)]
pub struct ServerClock {
    epoch: Instant,
    /// Recent upper bounds of (server clock - nanoseconds since `epoch`).
    bounds: VecDeque<i128>,
}

impl ServerClock {
    /// An estimate with no bounds yet; client times are measured from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        ServerClock {
            epoch,
            bounds: VecDeque::with_capacity(SAMPLES),
        }
    }

    fn since_epoch(&self, at: Instant) -> i128 {
        at.saturating_duration_since(self.epoch).as_nanos() as i128
    }

    /// A response stamped `server_time_ns` answered a call sent at `sent`. A stamp of 0 says
    /// nothing (a server that does not stamp).
    pub fn observe(&mut self, sent: Instant, server_time_ns: u64) {
        if server_time_ns == 0 {
            return;
        }
        if self.bounds.len() == SAMPLES {
            self.bounds.pop_front();
        }
        self.bounds
            .push_back(i128::from(server_time_ns) - self.since_epoch(sent));
    }

    /// The server-clock deadline for a client deadline, never earlier than it; `None` until a
    /// response has been seen (then the call goes without a server-side deadline).
    pub fn server_deadline(&self, deadline: Instant) -> Option<u64> {
        let offset = self.bounds.iter().min()?;
        let at = self.since_epoch(deadline) + offset;
        // 0 means "no deadline" on the wire: a deadline at or before the server's time 0 is
        // one the server would refuse anyway, so 1 says the same.
        Some(u64::try_from(at.max(1)).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_estimate_before_a_response() {
        let clock = ServerClock::new(Instant::now());
        assert_eq!(clock.server_deadline(Instant::now()), None);
    }

    #[test]
    fn the_tightest_bound_wins_and_deadlines_are_never_early() {
        let epoch = Instant::now();
        let mut clock = ServerClock::new(epoch);
        // True offset: the server's clock reads 5 s more than ours. Three calls, answered
        // 3 ms, 1 ms and 2 ms after they were sent.
        let true_offset = 5_000_000_000i128;
        for (sent_ms, trip_ms) in [(10u64, 3u64), (20, 1), (30, 2)] {
            let sent = epoch + ms(sent_ms);
            let stamp = (sent_ms + trip_ms) as i128 * 1_000_000 + true_offset;
            clock.observe(sent, stamp as u64);
        }
        let deadline = epoch + ms(100);
        let server = clock.server_deadline(deadline).unwrap() as i128;
        let exact = 100_000_000 + true_offset;
        assert!(server >= exact, "early: {server} < {exact}");
        assert_eq!(server - exact, 1_000_000, "off by the fastest trip");
    }

    #[test]
    fn old_bounds_age_out() {
        let epoch = Instant::now();
        let mut clock = ServerClock::new(epoch);
        clock.observe(epoch, 1); // a bound far too small: offset <= 1
        for i in 0..SAMPLES as u64 {
            clock.observe(epoch + ms(i), 1_000_000_000 + i * 1_000_000);
        }
        assert_eq!(
            clock.server_deadline(epoch).unwrap(),
            1_000_000_000,
            "the first bound has aged out"
        );
    }

    #[test]
    fn a_zero_stamp_teaches_nothing_and_results_stay_in_range() {
        let epoch = Instant::now();
        let mut clock = ServerClock::new(epoch);
        clock.observe(epoch + ms(1), 0);
        assert_eq!(clock.server_deadline(epoch), None);
        // A server clock far behind ours: the deadline clamps at 1, never 0 ("none").
        clock.observe(epoch + ms(1000), 1);
        assert_eq!(clock.server_deadline(epoch), Some(1));
    }
}
