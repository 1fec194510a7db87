//! Latency percentiles and the client's counters, as `stats` and `bench` print them.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use xenrpc_client::frontend::ClientStats;

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The percentiles of `samples` (sorted in place); all 0 for no samples.
pub fn percentiles(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Latency {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// A Xen connection's client counters as JSON (the field names scripts read).
pub fn client_stats_json(s: &ClientStats) -> Value {
    json!({
        "calls_started": s.calls_started, "calls_ok": s.calls_ok,
        "calls_remote_error": s.calls_remote_error, "calls_timed_out": s.calls_timed_out,
        "notifications_sent": s.notifications_sent, "spin_hits": s.spin_hits,
        "sleeps": s.sleeps, "late_responses": s.late_responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = percentiles(&mut samples);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (51.0, 90.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut []).max, 0.0);
    }

    #[test]
    fn client_counters_keep_their_names() {
        let s = ClientStats {
            calls_ok: 3,
            late_responses: 1,
            ..Default::default()
        };
        let v = client_stats_json(&s);
        assert_eq!(
            (v["calls_ok"].as_u64(), v["late_responses"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(v.as_object().unwrap().len(), 8);
    }
}
