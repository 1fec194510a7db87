//! `cargo xtask bench-guest`: runs tools/bench/bench-guest.sh in the testbed (the service VM,
//! its unprotected build and one Linux client guest), collects the guest's `BENCH-JSON` lines
//! and prints a table: medians over the rounds, each latency also as a ratio to the raw event
//! round trip measured in the same run, and the cost of protection (handlers in guest user
//! mode) as the ratio of each protected run to the same run on the unprotected build. Writes
//! the rows as CSV to target/bench-guest.csv and a chart to target/bench-guest.svg.

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

/// The builds each run is measured on, as the guest labels them (`null-1@protected`).
const BUILDS: [&str; 2] = ["protected", "unprotected"];

/// (label, figures) of every run in the log, in order; event-ping round trips as label
/// `raw@<build>`.
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
        let Some((_, build)) = label.split_once('@') else {
            bail!("BENCH-JSON label {label:?} names no build (run@build)");
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
                format!("raw@{build}"),
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

const ROWS: [(&str, &str); 6] = [
    ("raw", "raw event round trip (ping port)"),
    ("null-1", "null call, 1 in flight"),
    ("null-8", "null call, 8 in flight"),
    ("echo-4k", "echo 4 KiB out of line, 1 in flight"),
    ("echo-4k-8", "echo 4 KiB out of line, 8 in flight"),
    ("echo-64k", "echo 64 KiB out of line, 1 in flight"),
];

/// `a / b`, or 0 when there is no `b`.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Medians per label, with the number of rounds.
struct Medians(BTreeMap<String, (usize, Figures)>);

impl Medians {
    fn of(runs: &[(String, Figures)]) -> Self {
        let mut by_label: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
        for (label, figures) in runs {
            by_label.entry(label.as_str()).or_default().push(*figures);
        }
        Medians(
            by_label
                .into_iter()
                .map(|(label, list)| {
                    let pick = |f: fn(&Figures) -> f64| median(list.iter().map(f).collect());
                    let figures = Figures {
                        p50_us: pick(|f| f.p50_us),
                        p99_us: pick(|f| f.p99_us),
                        calls_per_s: pick(|f| f.calls_per_s),
                        mb_per_s: pick(|f| f.mb_per_s),
                    };
                    (label.to_string(), (list.len(), figures))
                })
                .collect(),
        )
    }

    /// The medians of `run` on `build`: an error when the guest printed none.
    fn get(&self, run: &str, build: &str) -> Result<(usize, Figures)> {
        match self.0.get(&format!("{run}@{build}")) {
            Some(found) => Ok(*found),
            None => bail!("no {run} runs on the {build} build in the guest's output"),
        }
    }
}

/// The table, the CSV and the SVG chart for the runs in `log`.
fn tabulate(log: &str) -> Result<(String, String, String)> {
    let medians = Medians::of(&parse_log(log)?);
    let mut table = String::new();
    let mut csv = String::from(
        "run,build,rounds,p50_us,p99_us,calls_per_s,mb_per_s_each_way,p50_vs_raw_event,\
         p50_vs_unprotected,calls_per_s_vs_unprotected\n",
    );
    writeln!(
        table,
        "{:<38} {:<11} {:>6} {:>11} {:>11} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "guest -> service VM (medians)",
        "build",
        "rounds",
        "p50",
        "p99",
        "calls/s",
        "MB/s each",
        "p50/raw",
        "p50/unprot",
        "calls/s/un"
    )?;
    let mut chart = Vec::new();
    for (run, name) in ROWS {
        let (_, base) = medians.get(run, "unprotected")?;
        for build in BUILDS {
            let (rounds, f) = medians.get(run, build)?;
            let (_, raw) = medians.get("raw", build)?;
            let vs_raw = ratio(f.p50_us, raw.p50_us);
            let p50_vs = ratio(f.p50_us, base.p50_us);
            let calls_vs = ratio(f.calls_per_s, base.calls_per_s);
            let dash = |v: f64, text: String| if v > 0.0 { text } else { "-".to_string() };
            writeln!(
                table,
                "{:<38} {build:<11} {rounds:>6} {:>8.1} µs {:>8.1} µs {:>9} {:>9} {:>7.2}x {:>10} {:>10}",
                if build == BUILDS[0] { name } else { "" },
                f.p50_us,
                f.p99_us,
                dash(f.calls_per_s, format!("{:.0}", f.calls_per_s)),
                dash(f.mb_per_s, format!("{:.1}", f.mb_per_s)),
                vs_raw,
                dash(p50_vs, format!("{p50_vs:.2}x")),
                dash(calls_vs, format!("{calls_vs:.2}x")),
            )?;
            writeln!(
                csv,
                "{run},{build},{rounds},{:.1},{:.1},{:.0},{:.2},{vs_raw:.3},{p50_vs:.3},{calls_vs:.3}",
                f.p50_us, f.p99_us, f.calls_per_s, f.mb_per_s
            )?;
            chart.push((name, build, f.p50_us));
        }
    }
    Ok((table, csv, svg_chart(&chart)))
}

/// Horizontal bars of p50 per run, protected beside unprotected.
fn svg_chart(bars: &[(&str, &str, f64)]) -> String {
    let max = bars.iter().map(|b| b.2).fold(f64::MIN_POSITIVE, f64::max);
    let (label_w, bar_w, row_h) = (360.0, 420.0, 18.0);
    let height = 40.0 + row_h * bars.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">bench-guest: p50 per call (µs, medians), \
         handlers in guest user mode (protected) beside kernel mode (unprotected)</text>\n",
        label_w + bar_w + 80.0
    );
    for (i, (name, build, p50)) in bars.iter().enumerate() {
        let y = 40.0 + row_h * i as f64;
        let w = bar_w * p50 / max;
        let colour = if *build == BUILDS[0] {
            "#3b6ea5"
        } else {
            "#b0b0b0"
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{} ({build})</text>\
             <rect x=\"{label_w}\" y=\"{:.0}\" width=\"{w:.1}\" height=\"{:.0}\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\">{p50:.1}</text>",
            label_w - 6.0,
            y + 12.0,
            if *build == BUILDS[0] { name } else { "" },
            y,
            row_h - 4.0,
            label_w + w + 4.0,
            y + 12.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Prints the table for the guest console log at `log_path` and writes the CSV to `csv_path`
/// and the chart beside it (`.svg`).
pub fn report(log_path: &Path, csv_path: &Path) -> Result<()> {
    let log =
        fs::read_to_string(log_path).with_context(|| format!("read {}", log_path.display()))?;
    let (table, csv, svg) = tabulate(&log)?;
    println!("\n{table}");
    println!(
        "TCG testbed: compare figures only within one run. p50/unprot is the cost of protection\n\
         (handlers in guest user mode, entered per call) against the same services run in kernel\n\
         mode by the unprotected test build, booted beside it. A null call can beat the raw event\n\
         round trip: the client finds the response in shared memory while the event back to it is\n\
         still on its way; both pay for waking the blocked service VM."
    );
    if let Some(dir) = csv_path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(csv_path, csv)?;
    let svg_path = csv_path.with_extension("svg");
    fs::write(&svg_path, svg)?;
    println!("CSV: {}\nchart: {}", csv_path.display(), svg_path.display());
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
            r#"GUEST client| BENCH-JSON {round}|{label}|{{"ok": true, "calls_per_second": {}, "mb_per_second_each_way": 0.0, "latency_us": {{"p50": {p50}, "p90": 0, "p99": 9.0, "max": 0}}, "event_ping_latency_us": {ping}}}"#,
            1e5 / p50
        )
    }

    #[test]
    fn medians_and_ratios_come_from_the_guest_lines() {
        let mut log = String::from("noise\n");
        for (round, raw) in [(1, 100.0), (2, 400.0), (3, 200.0)] {
            for (build, cost) in [("protected", 2.0), ("unprotected", 1.0)] {
                let p50 = 50.0 * f64::from(round) * cost;
                log += &line(round, &format!("null-1@{build}"), p50, Some(raw));
                log += "\n";
                for run in ["null-8", "echo-4k", "echo-4k-8", "echo-64k"] {
                    log += &line(round, &format!("{run}@{build}"), 10.0 * cost, None);
                    log += "\n";
                }
            }
        }
        let (table, csv, svg) = tabulate(&log).unwrap();
        // Median raw p50 200, median protected null-1 p50 200: ratio 1.00, and twice the
        // unprotected build's p50, half its calls/s.
        assert!(
            csv.contains("null-1,protected,3,200.0,9.0,500,0.00,1.000,2.000,0.500"),
            "{csv}"
        );
        assert!(
            csv.contains("null-1,unprotected,3,100.0,9.0,1000,0.00,0.500,1.000,1.000"),
            "{csv}"
        );
        assert!(
            csv.contains("raw,protected,3,200.0,400.0,0,0.00,1.000,1.000,0.000"),
            "{csv}"
        );
        assert!(
            table.contains("echo 4 KiB out of line, 8 in flight"),
            "{table}"
        );
        assert!(
            svg.starts_with("<svg") && svg.contains("(unprotected)"),
            "{svg}"
        );
    }

    #[test]
    fn a_missing_run_is_an_error_not_a_blank_row() {
        let log = line(1, "null-1@protected", 10.0, Some(20.0))
            + "\n"
            + &line(1, "null-1@unprotected", 10.0, Some(20.0));
        let e = tabulate(&log).unwrap_err().to_string();
        assert!(e.contains("null-8"), "{e}");
    }

    #[test]
    fn a_label_without_its_build_is_refused() {
        let e = tabulate(&line(1, "null-1", 10.0, None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no build"), "{e}");
    }
}
