//! Small helpers for the benchmark's numbers.

use std::time::Duration;

/// Percentile `p` (0..=100) of `samples`, by nearest rank. Sorts `samples` in place.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Median of a few floating-point figures (e.g. the same measurement over several runs).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// CPU time consumed so far by process `pid` (all its threads), from `/proc/<pid>/task/*/schedstat`
/// (nanosecond resolution, unlike the tick-granular `stat` fields).
pub fn process_cpu_time(pid: u32) -> std::io::Result<Duration> {
    let mut total_ns: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A thread that exited between the listing and the read used no more CPU.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let on_cpu: u64 = text
            .split_whitespace()
            .next()
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad schedstat"))?;
        total_ns += on_cpu;
    }
    Ok(Duration::from_nanos(total_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_nanos).collect();
        assert_eq!(percentile(&mut samples, 50.0), Duration::from_nanos(50));
        assert_eq!(percentile(&mut samples, 99.0), Duration::from_nanos(99));
        assert_eq!(percentile(&mut samples, 100.0), Duration::from_nanos(100));
        assert_eq!(percentile(&mut [], 50.0), Duration::ZERO);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn own_cpu_time_grows() {
        let me = std::process::id();
        let before = process_cpu_time(me).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let after = process_cpu_time(me).unwrap();
        assert!(after > before, "{before:?} -> {after:?} ({x})");
    }
}
