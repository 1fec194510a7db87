//! What a backend allows one client domain and one device, whatever they write to xenstore:
//! how many devices, how often its handshake is stepped, how often it connects, and how many
//! log lines it may cause. Pure logic over a caller's clock (nanoseconds), host-tested; the
//! service VM's backend applies it.
//!
//! A client rewriting its frontend `state` node in a loop gets its own device stepped at most
//! [`STEPS_PER_SECOND`] times a second; the rest wait (`throttled`) and nobody else is slowed.
//! A domain cycling Initialising / Initialised, each cycle a full map of up to 1,020 grants,
//! connects at most [`CONNECTS_PER_SECOND`] times a second. A peer that makes the server log
//! (connects, closes, refusals) gets [`LOG_LINES_PER_WINDOW`] lines per [`LOG_WINDOW_NS`], then
//! its lines are counted, not printed.

/// Devices one client domain may have under the backend at once; more are refused.
pub const MAX_DEVICES_PER_DOMAIN: usize = 16;
/// Handshake steps of one device per second.
pub const STEPS_PER_SECOND: u32 = 32;
/// Connects (grant maps of a whole connection) of one client domain per second.
pub const CONNECTS_PER_SECOND: u32 = 16;
/// Log lines one device may cause per [`LOG_WINDOW_NS`].
pub const LOG_LINES_PER_WINDOW: u32 = 120;
/// The window of the log-line limit.
pub const LOG_WINDOW_NS: u64 = 10_000_000_000;
const SECOND_NS: u64 = 1_000_000_000;

/// At most `limit` events in any fixed window of `window_ns` (windows start at the first
/// event after the previous one ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    limit: u32,
    window_ns: u64,
    window_start: u64,
    used: u32,
}

impl RateLimit {
    /// A limit of `limit` events per window of `window_ns` nanoseconds, nothing used yet.
    pub const fn new(limit: u32, window_ns: u64) -> Self {
        RateLimit {
            limit,
            window_ns,
            window_start: 0,
            used: 0,
        }
    }

    /// [`STEPS_PER_SECOND`].
    pub const fn steps() -> Self {
        Self::new(STEPS_PER_SECOND, SECOND_NS)
    }

    /// [`CONNECTS_PER_SECOND`].
    pub const fn connects() -> Self {
        Self::new(CONNECTS_PER_SECOND, SECOND_NS)
    }

    /// [`LOG_LINES_PER_WINDOW`] per [`LOG_WINDOW_NS`].
    pub const fn log_lines() -> Self {
        Self::new(LOG_LINES_PER_WINDOW, LOG_WINDOW_NS)
    }

    fn roll(&mut self, now: u64) {
        if self.used == 0 || now.saturating_sub(self.window_start) >= self.window_ns {
            self.window_start = now;
            self.used = 0;
        }
    }

    /// Takes one event if the window has room: true if it may happen now.
    pub fn allow(&mut self, now: u64) -> bool {
        self.roll(now);
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        true
    }

    /// Whether an event would be allowed at `now` (takes nothing).
    pub fn would_allow(&self, now: u64) -> bool {
        let mut probe = *self;
        probe.allow(now)
    }

    /// When the next event will be allowed (`now` if it would be now).
    pub fn next_allowed_ns(&self, now: u64) -> u64 {
        if self.would_allow(now) {
            now
        } else {
            self.window_start.saturating_add(self.window_ns)
        }
    }
}

/// The log lines one device may cause: a [`RateLimit`] that counts what it suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBudget {
    limit: RateLimit,
    /// Lines suppressed in the current window.
    suppressed_now: u64,
}

/// What to do with one log line a peer caused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Print it.
    Print,
    /// Print it, after a line saying that `suppressed` lines were left out before it.
    PrintAfterSuppressing(u64),
    /// The first line over the limit: print a line saying further ones are suppressed.
    StartSuppressing,
    /// Count it, print nothing.
    Suppress,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            limit: RateLimit::log_lines(),
            suppressed_now: 0,
        }
    }
}

impl LogBudget {
    /// Judges one line at `now`.
    pub fn judge(&mut self, now: u64) -> LogVerdict {
        if self.limit.allow(now) {
            return match core::mem::take(&mut self.suppressed_now) {
                0 => LogVerdict::Print,
                n => LogVerdict::PrintAfterSuppressing(n),
            };
        }
        self.suppressed_now += 1;
        if self.suppressed_now == 1 {
            LogVerdict::StartSuppressing
        } else {
            LogVerdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_allows_its_limit_per_window_and_then_waits() {
        let mut steps = RateLimit::steps();
        let t0 = 5 * SECOND_NS;
        for i in 0..STEPS_PER_SECOND {
            assert!(steps.allow(t0 + u64::from(i)), "step {i}");
        }
        assert!(!steps.allow(t0 + 100));
        assert_eq!(steps.next_allowed_ns(t0 + 100), t0 + SECOND_NS);
        assert!(!steps.allow(t0 + SECOND_NS - 1));
        assert!(steps.allow(t0 + SECOND_NS));
        // A quiet device starts a fresh window with its next step.
        assert!(steps.allow(t0 + 10 * SECOND_NS));
    }

    #[test]
    fn ten_thousand_events_in_a_second_get_the_limit_only() {
        let mut connects = RateLimit::connects();
        let allowed = (0..10_000u64)
            .filter(|i| connects.allow(i * (SECOND_NS / 10_000)))
            .count();
        assert_eq!(allowed, CONNECTS_PER_SECOND as usize);
    }

    #[test]
    fn would_allow_takes_nothing() {
        let mut limit = RateLimit::new(1, SECOND_NS);
        assert!(limit.would_allow(0));
        assert!(limit.would_allow(0));
        assert!(limit.allow(0));
        assert!(!limit.would_allow(1));
        assert_eq!(limit.next_allowed_ns(1), SECOND_NS);
    }

    #[test]
    fn a_log_flood_is_cut_after_its_budget_and_counted() {
        let mut log = LogBudget::default();
        let verdicts: alloc::vec::Vec<LogVerdict> = (0..1000).map(|i| log.judge(i)).collect();
        let printed = verdicts
            .iter()
            .filter(|v| matches!(v, LogVerdict::Print))
            .count();
        assert_eq!(printed, LOG_LINES_PER_WINDOW as usize);
        assert_eq!(
            verdicts[LOG_LINES_PER_WINDOW as usize],
            LogVerdict::StartSuppressing
        );
        assert!(verdicts[LOG_LINES_PER_WINDOW as usize + 1..]
            .iter()
            .all(|v| *v == LogVerdict::Suppress));
        // The next window prints again, first saying how much the last one left out.
        let later = log.judge(LOG_WINDOW_NS + 10);
        assert_eq!(
            later,
            LogVerdict::PrintAfterSuppressing(1000 - u64::from(LOG_LINES_PER_WINDOW))
        );
    }
}
