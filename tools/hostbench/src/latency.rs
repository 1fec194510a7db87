//! Latency rows: every system's null-call figures taken round after round, alternating, so
//! that each ratio compares figures taken moments apart; a row shows the medians over the
//! rounds and each ratio is the median of the per-round ratios.

use std::time::Duration;

use xenrpc_host::stats::{median, percentile};

use crate::Row;

#[derive(Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

pub fn latency(samples: &mut [Duration]) -> Latency {
    Latency {
        p50: percentile(samples, 50.0).as_nanos() as f64,
        p99: percentile(samples, 99.0).as_nanos() as f64,
    }
}

/// The physical limit's row (a floor every xenrpc row is compared with).
pub const LIMIT: &str = "physical limit: 1 cache line, batched";
pub const SHM_FLOOR: &str = "raw shm ping-pong (spin)";
pub const EVENTFD_FLOOR: &str = "raw eventfd round trip (blocking)";
pub const UDS_FLOOR: &str = "UDS request/response, 0 B";
/// The name of every null-call row but the floors'.
pub const NULL_CALL: &str = "null call, 1 client";
/// xenrpc spin's null call timed call by call (its other row is timed in batches).
pub const NULL_CALL_EACH: &str = "null call, 1 client, each timed";

/// A row compared with: its section, its name, the ratio's label.
pub type Compared = (&'static str, &'static str, &'static str);

struct Series {
    section: &'static str,
    name: &'static str,
    rounds: Vec<(Latency, Option<f64>)>,
}

/// Each system's figures, round by round.
#[derive(Default)]
pub struct LatencySeries {
    series: Vec<Series>,
}

impl LatencySeries {
    /// Adds one round's figures of `section`/`name`, with its CPU ns per call if measured.
    pub fn push(
        &mut self,
        section: &'static str,
        name: &'static str,
        l: Latency,
        cpu: Option<f64>,
    ) {
        match self
            .series
            .iter_mut()
            .find(|s| s.section == section && s.name == name)
        {
            Some(s) => s.rounds.push((l, cpu)),
            None => self.series.push(Series {
                section,
                name,
                rounds: vec![(l, cpu)],
            }),
        }
    }

    fn find(&self, section: &str, name: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.section == section && s.name == name)
    }

    /// A row per series; the rows of each section `compare_with` names get their ratio to
    /// each of its (section, name, label) that was measured, in that order.
    pub fn rows(&self, compare_with: &[(&str, Vec<Compared>)]) -> Vec<Row> {
        let med = |mut values: Vec<f64>| median(&mut values);
        self.series
            .iter()
            .map(|s| {
                let mut row = Row::new(s.section, s.name);
                row.p50_ns = Some(med(s.rounds.iter().map(|(l, _)| l.p50).collect()));
                row.p99_ns = Some(med(s.rounds.iter().map(|(l, _)| l.p99).collect()));
                let cpu: Vec<f64> = s.rounds.iter().filter_map(|(_, cpu)| *cpu).collect();
                if !cpu.is_empty() {
                    row.cpu_ns_per_call = Some(med(cpu));
                }
                let compared = compare_with
                    .iter()
                    .find(|(section, _)| *section == s.section);
                if let Some((_, compared)) = compared {
                    for &(section, name, label) in compared {
                        let Some(other) = self.find(section, name) else {
                            continue;
                        };
                        let ratios = s
                            .rounds
                            .iter()
                            .zip(&other.rounds)
                            .map(|((l, _), (o, _))| l.p50 / o.p50)
                            .collect();
                        row.ratios.push((med(ratios), label.to_string()));
                    }
                }
                row
            })
            .collect()
    }
}
