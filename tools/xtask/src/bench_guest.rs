//! `cargo xtask bench-guest`: runs tools/bench/bench-guest.sh in the testbed (the service VM,
//! its unprotected build, one Linux client guest and a Linux guest serving the peers), collects the guest's `BENCH-JSON` lines
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

/// One run's figures, as `xenrpc --json bench` (or `xenrpc-peer bench`) prints them, and the
/// CPU time per call of the server's domain, the client guest and dom0 (µs, 0 when not
/// measured) from dom0's samples around the run.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    mb_per_s: f64,
    calls: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    dom0_cpu_us: f64,
}

/// The domain that serves `build`'s calls (bench-guest.sh's names).
fn server_domain(build: &str) -> &'static str {
    match build {
        "protected" => "xenrpc",
        "unprotected" => "xenrpc-unprotected",
        _ => "peer-server",
    }
}

/// Each domain's CPU seconds at dom0's `TESTBED: CPU start|end <round>|<label> | d=s ...`
/// samples, by `<round>|<label>`: (start, end).
type CpuSamples = BTreeMap<String, (BTreeMap<String, f64>, BTreeMap<String, f64>)>;

fn parse_cpu(serial: &str) -> CpuSamples {
    let mut samples = CpuSamples::new();
    for line in serial.lines() {
        let Some(rest) = line.split_once("TESTBED: CPU ").map(|(_, r)| r) else {
            continue;
        };
        let Some((mark, times)) = rest.split_once(" |") else {
            continue;
        };
        let Some((edge, run)) = mark.split_once(' ') else {
            continue;
        };
        let times: BTreeMap<String, f64> = times
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(d, t)| Some((d.to_string(), t.parse().ok()?)))
            .collect();
        let entry = samples.entry(run.to_string()).or_default();
        match edge {
            "start" => entry.0 = times,
            "end" => entry.1 = times,
            _ => {}
        }
    }
    samples
}

/// CPU µs per call of `domain` over the run `key` (`<round>|<label>`), 0 if not sampled.
fn cpu_per_call(cpu: &CpuSamples, key: &str, domain: &str, calls: f64) -> f64 {
    let Some((start, end)) = cpu.get(key) else {
        return 0.0;
    };
    match (start.get(domain), end.get(domain)) {
        (Some(a), Some(b)) if calls > 0.0 => (b - a).max(0.0) * 1e6 / calls,
        _ => 0.0,
    }
}

/// The builds each run is measured on, as the guest labels them (`null-1@protected`).
const BUILDS: [&str; 2] = ["protected", "unprotected"];
/// The peers measured beside them, between the client guest and a Linux server guest
/// (`null-1@sunrpc`): SunRPC and gRPC over the virtual network, libxenvchan over grants and an
/// event channel. In the table when the guest printed any of their runs.
const PEERS: [(&str, &str); 3] = [
    ("sunrpc", "SunRPC TCP"),
    ("grpc", "gRPC TCP"),
    ("vchan", "libxenvchan"),
];

/// (label, figures) of every run in the log, in order; event-ping round trips as label
/// `raw@<build>`.
fn parse_log(log: &str, cpu: &CpuSamples) -> Result<Vec<(String, Figures)>> {
    let mut runs = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split_once("BENCH-JSON ").map(|(_, r)| r) else {
            continue;
        };
        let mut parts = rest.splitn(3, '|');
        let (Some(round), Some(label), Some(json)) = (parts.next(), parts.next(), parts.next())
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
        let calls = number(&doc, "calls");
        let key = format!("{round}|{label}");
        runs.push((
            label.to_string(),
            Figures {
                p50_us: number(&latency, "p50"),
                p99_us: number(&latency, "p99"),
                calls_per_s: number(&doc, "calls_per_second"),
                mb_per_s: number(&doc, "mb_per_second_each_way"),
                calls,
                server_cpu_us: cpu_per_call(cpu, &key, server_domain(build), calls),
                client_cpu_us: cpu_per_call(cpu, &key, "client", calls),
                dom0_cpu_us: cpu_per_call(cpu, &key, "Domain-0", calls),
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

const ROWS: [(&str, &str); 9] = [
    ("raw", "raw event round trip (ping port)"),
    ("null-1", "null call, 1 in flight"),
    ("null-8", "null call, 8 in flight"),
    ("echo-64b", "echo 64 B out of line, 1 in flight"),
    ("echo-64b-8", "echo 64 B out of line, 8 in flight"),
    ("echo-4k", "echo 4 KiB out of line, 1 in flight"),
    ("echo-4k-8", "echo 4 KiB out of line, 8 in flight"),
    ("echo-64k", "echo 64 KiB out of line, 1 in flight"),
    ("echo-64k-8", "echo 64 KiB out of line, 8 in flight"),
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
                        calls: pick(|f| f.calls),
                        server_cpu_us: pick(|f| f.server_cpu_us),
                        client_cpu_us: pick(|f| f.client_cpu_us),
                        dom0_cpu_us: pick(|f| f.dom0_cpu_us),
                    };
                    (label.to_string(), (list.len(), figures))
                })
                .collect(),
        )
    }

    /// Whether the guest printed any run of `build`.
    fn has_build(&self, build: &str) -> bool {
        let suffix = format!("@{build}");
        self.0.keys().any(|label| label.ends_with(&suffix))
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
fn tabulate(log: &str, serial: &str) -> Result<(String, String, String)> {
    let medians = Medians::of(&parse_log(log, &parse_cpu(serial))?);
    let mut table = String::new();
    let mut csv = String::from(
        "run,build,rounds,p50_us,p99_us,calls_per_s,mb_per_s_each_way,p50_vs_raw_event,\
         p50_vs_unprotected,calls_per_s_vs_unprotected,p50_vs_xenrpc,calls_per_s_vs_xenrpc,\
         server_cpu_us_per_call,client_cpu_us_per_call,dom0_cpu_us_per_call\n",
    );
    writeln!(
        table,
        "{:<38} {:<11} {:>6} {:>11} {:>11} {:>9} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "guest -> service VM (medians)",
        "build",
        "rounds",
        "p50",
        "p99",
        "calls/s",
        "MB/s each",
        "p50/raw",
        "p50/unprot",
        "calls/s/un",
        "p50/xenrpc",
        "calls/s/x",
        "CPU srv",
        "CPU cli",
        "CPU dom0"
    )?;
    // A peer is in the table if the guest ran it at all; then every one of its runs must be.
    let peers: Vec<(&str, &str)> = PEERS
        .into_iter()
        .filter(|(peer, _)| medians.has_build(peer))
        .collect();
    let mut chart = Vec::new();
    for (run, name) in ROWS {
        let (_, base) = medians.get(run, "unprotected")?;
        let (_, xenrpc) = medians.get(run, BUILDS[0])?;
        let peer_builds = peers.iter().map(|(peer, _)| *peer);
        // The raw event round trip is the service VM's ping port: no peer has one.
        let builds = BUILDS
            .into_iter()
            .chain(peer_builds)
            .filter(|b| run != "raw" || BUILDS.contains(b));
        for build in builds {
            let (rounds, f) = medians.get(run, build)?;
            let is_xenrpc = BUILDS.contains(&build);
            let vs_raw = if is_xenrpc {
                ratio(f.p50_us, medians.get("raw", build)?.1.p50_us)
            } else {
                0.0
            };
            let (p50_vs, calls_vs) = if is_xenrpc {
                (
                    ratio(f.p50_us, base.p50_us),
                    ratio(f.calls_per_s, base.calls_per_s),
                )
            } else {
                (0.0, 0.0)
            };
            let p50_vs_x = ratio(f.p50_us, xenrpc.p50_us);
            let calls_vs_x = ratio(f.calls_per_s, xenrpc.calls_per_s);
            let dash = |v: f64, text: String| if v > 0.0 { text } else { "-".to_string() };
            let shown = peers
                .iter()
                .find(|(peer, _)| *peer == build)
                .map_or(build, |(_, label)| *label);
            writeln!(
                table,
                "{:<38} {shown:<11} {rounds:>6} {:>8.1} µs {:>8.1} µs {:>9} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
                if build == BUILDS[0] { name } else { "" },
                f.p50_us,
                f.p99_us,
                dash(f.calls_per_s, format!("{:.0}", f.calls_per_s)),
                dash(f.mb_per_s, format!("{:.1}", f.mb_per_s)),
                dash(vs_raw, format!("{vs_raw:.2}x")),
                dash(p50_vs, format!("{p50_vs:.2}x")),
                dash(calls_vs, format!("{calls_vs:.2}x")),
                dash(p50_vs_x, format!("{p50_vs_x:.2}x")),
                dash(calls_vs_x, format!("{calls_vs_x:.2}x")),
                dash(f.server_cpu_us, format!("{:.0} µs", f.server_cpu_us)),
                dash(f.client_cpu_us, format!("{:.0} µs", f.client_cpu_us)),
                dash(f.dom0_cpu_us, format!("{:.0} µs", f.dom0_cpu_us)),
            )?;
            writeln!(
                csv,
                "{run},{build},{rounds},{:.1},{:.1},{:.0},{:.2},{vs_raw:.3},{p50_vs:.3},{calls_vs:.3},{p50_vs_x:.3},{calls_vs_x:.3},{:.1},{:.1},{:.1}",
                f.p50_us, f.p99_us, f.calls_per_s, f.mb_per_s, f.server_cpu_us, f.client_cpu_us, f.dom0_cpu_us
            )?;
            chart.push((name, shown, f.p50_us));
        }
    }
    for (peer, label) in PEERS {
        if !peers.iter().any(|(p, _)| *p == peer) {
            writeln!(
                table,
                "{label}: not measured (the guest ran none of its calls)"
            )?;
        }
    }
    Ok((table, csv, svg_chart(&chart)))
}

/// Horizontal bars of p50 per run: protected, unprotected, then each peer measured.
fn svg_chart(bars: &[(&str, &str, f64)]) -> String {
    let max = bars.iter().map(|b| b.2).fold(f64::MIN_POSITIVE, f64::max);
    let (label_w, bar_w, row_h) = (360.0, 420.0, 18.0);
    let height = 40.0 + row_h * bars.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">bench-guest: p50 per call (µs, medians), \
         handlers in guest user mode (protected) beside kernel mode (unprotected) and the peers</text>\n",
        label_w + bar_w + 80.0
    );
    for (i, (name, build, p50)) in bars.iter().enumerate() {
        let y = 40.0 + row_h * i as f64;
        let w = bar_w * p50 / max;
        let colour = match *build {
            "protected" => "#3b6ea5",
            "unprotected" => "#b0b0b0",
            "SunRPC TCP" => "#2ca02c",
            "libxenvchan" => "#d62728",
            _ => "#9467bd",
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
pub fn report(log_path: &Path, serial_path: &Path, csv_path: &Path) -> Result<()> {
    let log =
        fs::read_to_string(log_path).with_context(|| format!("read {}", log_path.display()))?;
    let serial = fs::read_to_string(serial_path)
        .with_context(|| format!("read {}", serial_path.display()))?;
    let (table, csv, svg) = tabulate(&log, &serial)?;
    println!("\n{table}");
    println!(
        "TCG testbed: compare figures only within one run. p50/unprot is the cost of protection\n\
         (handlers in guest user mode, entered per call) against the same services run in kernel\n\
         mode by the unprotected test build, booted beside it. A null call can beat the raw event\n\
         round trip: the client finds the response in shared memory while the event back to it is\n\
         still on its way; both pay for waking the blocked service VM. The peers (SunRPC by\n\
         libtirpc, gRPC by tonic) serve from a Linux guest over the virtual network (netback, a\n\
         bridge in dom0, netfront); libxenvchan, Xen's own byte channel (1 MiB rings in granted\n\
         pages, an event channel), from the same guest to the client's domain: no RPC system,\n\
         a reader spinning as long as xenrpc's do before it waits on the event channel, its\n\
         calls in flight on its one vchan as xenrpc's are on its one ring\n\
         (SunRPC's and gRPC's: one connection each). p50/xenrpc and calls/s/x compare each row\n\
         with the protected build's. CPU srv/cli/dom0: CPU time per call of the serving domain,\n\
         the client guest and dom0 (which carries the network), from `xl vcpu-list` before and\n\
         after each run's process (its connect included; 0.1 s resolution: a figure is within\n\
         0.1 s / its calls)."
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

    /// Every run but the raw round trip.
    const RUNS: [&str; 8] = [
        "null-1",
        "null-8",
        "echo-64b",
        "echo-64b-8",
        "echo-4k",
        "echo-4k-8",
        "echo-64k",
        "echo-64k-8",
    ];

    fn line(round: u32, label: &str, p50: f64, ping: Option<f64>) -> String {
        let ping = ping.map_or("null".to_string(), |p| {
            format!(r#"{{"p50": {p}, "p90": 0, "p99": {}, "max": 0}}"#, p * 2.0)
        });
        format!(
            r#"GUEST client| BENCH-JSON {round}|{label}|{{"ok": true, "calls": 400, "calls_per_second": {}, "mb_per_second_each_way": 0.0, "latency_us": {{"p50": {p50}, "p90": 0, "p99": 9.0, "max": 0}}, "event_ping_latency_us": {ping}}}"#,
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
                for run in &RUNS[1..] {
                    log += &line(round, &format!("{run}@{build}"), 10.0 * cost, None);
                    log += "\n";
                }
            }
        }
        // SunRPC ran every run, three times slower than the protected build's 10 µs, and
        // libxenvchan in half its time.
        for round in 1..=3 {
            for run in RUNS {
                log += &line(round, &format!("{run}@sunrpc"), 60.0, None);
                log += "\n";
                log += &line(round, &format!("{run}@vchan"), 10.0, None);
                log += "\n";
            }
        }
        // dom0 sampled each domain's CPU seconds around SunRPC's null-8 runs (400 calls).
        let serial: String = (1..=3)
            .map(|round| {
                format!(
                    "TESTBED: CPU start {round}|null-8@sunrpc | Domain-0=1.0 peer-server=2.0 client=3.0\n\
                     TESTBED: CPU end {round}|null-8@sunrpc | Domain-0=1.3 peer-server=2.2 client=3.4\n"
                )
            })
            .collect();
        let (table, csv, svg) = tabulate(&log, &serial).unwrap();
        assert!(
            csv.contains(
                "null-8,sunrpc,3,60.0,9.0,1667,0.00,0.000,0.000,0.000,3.000,0.333,500.0,1000.0,750.0"
            ),
            "{csv}"
        );
        assert!(table.contains("SunRPC TCP"), "{table}");
        assert!(table.contains("gRPC TCP: not measured"), "{table}");
        assert!(
            csv.contains("echo-4k-8,vchan,3,10.0,9.0,10000,0.00,0.000,0.000,0.000,0.500,2.000"),
            "{csv}"
        );
        assert!(table.contains("libxenvchan"), "{table}");
        assert!(svg.contains("(libxenvchan)"), "{svg}");
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
        let e = tabulate(&log, "").unwrap_err().to_string();
        assert!(e.contains("null-8"), "{e}");
    }

    #[test]
    fn a_peer_missing_one_run_is_an_error() {
        let mut log = String::new();
        for build in ["protected", "unprotected"] {
            log += &line(1, &format!("null-1@{build}"), 10.0, Some(20.0));
            log += "\n";
            for run in &RUNS[1..] {
                log += &line(1, &format!("{run}@{build}"), 10.0, None);
                log += "\n";
            }
        }
        log += &line(1, "null-1@grpc", 10.0, None);
        let e = tabulate(&log, "").unwrap_err().to_string();
        assert!(e.contains("null-8 runs on the grpc build"), "{e}");
    }

    #[test]
    fn a_label_without_its_build_is_refused() {
        let e = tabulate(&line(1, "null-1", 10.0, None), "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no build"), "{e}");
    }
}
