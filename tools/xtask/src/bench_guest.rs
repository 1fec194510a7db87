//! `cargo xtask bench-guest`: runs tools/bench/bench-guest.sh in the testbed (the service VM
//! and one Linux client guest), collects the guest's `BENCH-JSON` lines and prints a table:
//! medians over the rounds, each latency also as a ratio to the raw event round trip measured
//! in the same run. Writes the rows as CSV to target/bench-guest.csv.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One run's figures, as `xenrpc --json bench` prints them.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    mb_per_s: f64,
}

/// (label, figures) of every run in the log, in order; event-ping round trips as label "raw".
fn parse_log(log: &str) -> Result<Vec<(String, Figures)>> {
    let mut runs = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split_once("BENCH-JSON ").map(|(_, r)| r) else {
            continue;
        };
        let mut parts = rest.splitn(3, '|');
        let (Some(_round), Some(label), Some(json)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("malformed BENCH-JSON line: {line}");
        };
        let doc: Value =
            serde_json::from_str(json).with_context(|| format!("bench output of {label}"))?;
        let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        let latency = doc.get("latency_us").cloned().unwrap_or(Value::Null);
        runs.push((
            label.to_string(),
            Figures {
                p50_us: number(&latency, "p50"),
                p99_us: number(&latency, "p99"),
                calls_per_s: number(&doc, "calls_per_second"),
                mb_per_s: number(&doc, "mb_per_second_each_way"),
            },
        ));
        if let Some(ping) = doc.get("event_ping_latency_us").filter(|v| !v.is_null()) {
            runs.push((
                "raw".to_string(),
                Figures {
                    p50_us: number(ping, "p50"),
                    p99_us: number(ping, "p99"),
                    ..Figures::default()
                },
            ));
        }
    }
    Ok(runs)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

const ROWS: [(&str, &str); 5] = [
    ("raw", "raw event round trip (ping port)"),
    ("null-1", "null call, 1 in flight"),
    ("null-8", "null call, 8 in flight"),
    ("echo-4k", "echo 4 KiB out of line, 1 in flight"),
    ("echo-64k", "echo 64 KiB out of line, 1 in flight"),
];

/// The table and the CSV for the runs in `log`.
fn tabulate(log: &str) -> Result<(String, String)> {
    let runs = parse_log(log)?;
    let mut by_label: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    for (label, figures) in &runs {
        by_label.entry(label.as_str()).or_default().push(*figures);
    }
    let medians = |label: &str| -> Option<(usize, Figures)> {
        let list = by_label.get(label)?;
        let pick = |f: fn(&Figures) -> f64| median(list.iter().map(f).collect());
        Some((
            list.len(),
            Figures {
                p50_us: pick(|f| f.p50_us),
                p99_us: pick(|f| f.p99_us),
                calls_per_s: pick(|f| f.calls_per_s),
                mb_per_s: pick(|f| f.mb_per_s),
            },
        ))
    };
    let Some((_, raw)) = medians("raw") else {
        bail!("no raw event round trips in the guest's output");
    };
    let mut table = String::new();
    let mut csv =
        String::from("run,rounds,p50_us,p99_us,calls_per_s,mb_per_s_each_way,p50_vs_raw_event\n");
    writeln!(
        table,
        "{:<40} {:>6} {:>11} {:>11} {:>9} {:>10} {:>12}",
        "guest -> service VM (medians)",
        "rounds",
        "p50",
        "p99",
        "calls/s",
        "MB/s each",
        "p50 / raw ev"
    )?;
    for (label, name) in ROWS {
        let Some((rounds, f)) = medians(label) else {
            bail!("no {label} runs in the guest's output");
        };
        let dash = |v: f64, text: String| if v > 0.0 { text } else { "-".to_string() };
        writeln!(
            table,
            "{name:<40} {rounds:>6} {:>8.1} µs {:>8.1} µs {:>9} {:>10} {:>11.2}x",
            f.p50_us,
            f.p99_us,
            dash(f.calls_per_s, format!("{:.0}", f.calls_per_s)),
            dash(f.mb_per_s, format!("{:.1}", f.mb_per_s)),
            f.p50_us / raw.p50_us.max(f64::MIN_POSITIVE),
        )?;
        writeln!(
            csv,
            "{label},{rounds},{:.1},{:.1},{:.0},{:.2},{:.3}",
            f.p50_us,
            f.p99_us,
            f.calls_per_s,
            f.mb_per_s,
            f.p50_us / raw.p50_us.max(f64::MIN_POSITIVE)
        )?;
    }
    Ok((table, csv))
}

/// Prints the table for the guest console log at `log_path` and writes the CSV to `csv_path`.
pub fn report(log_path: &Path, csv_path: &Path) -> Result<()> {
    let log =
        fs::read_to_string(log_path).with_context(|| format!("read {}", log_path.display()))?;
    let (table, csv) = tabulate(&log)?;
    println!("\n{table}");
    println!(
        "TCG testbed: compare figures only within one run. A null call can beat the raw event round\n\
         trip: the client finds the response in shared memory while the event back to it is still\n\
         on its way; both pay for waking the blocked service VM."
    );
    if let Some(dir) = csv_path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(csv_path, csv)?;
    println!("CSV: {}", csv_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(round: u32, label: &str, p50: f64, ping: Option<f64>) -> String {
        let ping = ping.map_or("null".to_string(), |p| {
            format!(r#"{{"p50": {p}, "p90": 0, "p99": {}, "max": 0}}"#, p * 2.0)
        });
        format!(
            r#"GUEST client| BENCH-JSON {round}|{label}|{{"ok": true, "calls_per_second": 1000.0, "mb_per_second_each_way": 0.0, "latency_us": {{"p50": {p50}, "p90": 0, "p99": 9.0, "max": 0}}, "event_ping_latency_us": {ping}}}"#
        )
    }

    #[test]
    fn medians_and_ratios_come_from_the_guest_lines() {
        let mut log = String::from("noise\n");
        for (round, raw) in [(1, 100.0), (2, 400.0), (3, 200.0)] {
            log += &line(round, "null-1", 50.0 * f64::from(round), Some(raw));
            log += "\n";
            for label in ["null-8", "echo-4k", "echo-64k"] {
                log += &line(round, label, 10.0, None);
                log += "\n";
            }
        }
        let (table, csv) = tabulate(&log).unwrap();
        // Median raw p50 200, median null-1 p50 100: ratio 0.50.
        assert!(csv.contains("raw,3,200.0,400.0,0,0.00,1.000"), "{csv}");
        assert!(csv.contains("null-1,3,100.0,9.0,1000,0.00,0.500"), "{csv}");
        assert!(table.contains("null call, 1 in flight"), "{table}");
    }

    #[test]
    fn a_missing_run_is_an_error_not_a_blank_row() {
        let log = line(1, "null-1", 10.0, Some(20.0));
        assert!(tabulate(&log).unwrap_err().to_string().contains("null-8"));
    }
}
