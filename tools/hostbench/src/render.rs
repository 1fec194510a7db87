//! The benchmark's output: the table on stdout, the CSV, and the SVG charts.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::{attackers, Row, SIZES};

pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        None => "-".into(),
        Some(ns) if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Some(ns) if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{ns:.0} ns"),
    }
}

fn fmt_num(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// Two significant digits at least: a peer can be hundreds of times slower.
fn fmt_ratio(r: f64) -> String {
    match r {
        r if r < 0.01 => format!("{r:.4}"),
        r if r < 0.1 => format!("{r:.3}"),
        r => format!("{r:.2}"),
    }
}

pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = [
        "",
        "p50",
        "p99",
        "calls/s",
        "MB/s",
        "CPU/call",
        "ratios (first: to its floor)",
    ];
    let widths = [36, 10, 10, 10, 9, 10, 0];
    let mut sections: Vec<&str> = Vec::new();
    for row in rows {
        if !sections.contains(&row.section) {
            sections.push(row.section);
        }
    }
    let grouped = sections
        .iter()
        .flat_map(|section| rows.iter().filter(move |row| row.section == *section));
    let mut section = "";
    for row in grouped {
        if row.section != section {
            section = row.section;
            let _ = writeln!(out, "== {section} ==");
            let mut line = String::new();
            for (h, w) in header.iter().zip(widths) {
                let _ = write!(line, "{h:>w$}  ");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let ratio = row
            .ratios
            .iter()
            .map(|(r, label)| format!("{}x {label}", fmt_ratio(*r)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "{:<36}  {:>10}  {:>10}  {:>10}  {:>9}  {:>10}  {}",
            row.name,
            fmt_ns(row.p50_ns),
            fmt_ns(row.p99_ns),
            fmt_num(row.calls_per_s),
            fmt_num(row.mb_per_s),
            fmt_ns(row.cpu_ns_per_call),
            ratio
        );
    }
    out
}

pub fn render_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "section,name,p50_ns,p99_ns,calls_per_s,mb_per_s,cpu_ns_per_call,ratio,ratio_to,other_ratios\n",
    );
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    for row in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            row.section,
            row.name,
            num(row.p50_ns),
            num(row.p99_ns),
            num(row.calls_per_s),
            num(row.mb_per_s),
            num(row.cpu_ns_per_call),
            row.ratios
                .first()
                .map_or(String::new(), |(r, _)| format!("{r:.3}")),
            row.ratios.first().map_or("", |(_, label)| label.as_str()),
            // label=ratio pairs, ';'-separated (the CSV's own separator stays out of them).
            row.ratios
                .iter()
                .skip(1)
                .map(|(r, label)| format!("{label}={r:.3}"))
                .collect::<Vec<_>>()
                .join(";")
        );
    }
    out
}

/// `target/xenrpc-hostbench.<extension>`: the binary lives in `target/<profile>/`.
pub fn output_path(extension: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(
        exe.parent()?
            .parent()?
            .join(format!("xenrpc-hostbench.{extension}")),
    )
}

/// A grouped bar chart of echo throughput (MB/s, log scale) per payload size: the UDS floor,
/// xenrpc in each mode with one and four clients, and the peers.
pub fn render_svg(rows: &[Row]) -> String {
    let series: [(&str, &str, &str, &str); 8] = [
        ("floor", ", 1 client", "UDS, 1 client", "#888888"),
        (
            "xenrpc spin",
            ", 1 client",
            "xenrpc spin, 1 client",
            "#1f77b4",
        ),
        (
            "xenrpc spin",
            ", 4 clients",
            "xenrpc spin, 4 clients",
            "#aec7e8",
        ),
        (
            "xenrpc blocking",
            ", 1 client",
            "xenrpc blocking, 1 client",
            "#d62728",
        ),
        (
            "xenrpc blocking",
            ", 4 clients",
            "xenrpc blocking, 4 clients",
            "#ff9896",
        ),
        (
            "SunRPC TCP",
            ", 1 client",
            "SunRPC TCP, 1 client",
            "#2ca02c",
        ),
        (
            "SunRPC Unix",
            ", 1 client",
            "SunRPC Unix, 1 client",
            "#98df8a",
        ),
        ("gRPC TCP", ", 1 client", "gRPC TCP, 1 client", "#9467bd"),
    ];
    let value = |section: &str, suffix: &str, size: usize| {
        let name = if section == "floor" {
            format!("UDS echo {}{suffix}", size_label(size))
        } else {
            format!("echo {}{suffix}", size_label(size))
        };
        rows.iter()
            .find(|r| r.section == section && r.name == name)
            .and_then(|r| r.mb_per_s)
    };
    let (width, height, left, top, bottom) = (760.0, 420.0, 70.0, 40.0, 60.0);
    let plot_h = height - top - bottom;
    let (log_min, log_max) = (-1.0f64, 5.0f64); // 0.1 MB/s .. 100 GB/s
    let y = |mb: f64| top + plot_h * (1.0 - (mb.max(0.1).log10() - log_min) / (log_max - log_min));
    let group_w = (width - left - 20.0) / SIZES.len() as f64;
    let bar_w = group_w * 0.8 / series.len() as f64;
    let attack_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.section == attackers::SECTION)
        .collect();
    let total_height = if attack_rows.is_empty() {
        height
    } else {
        height + ATTACK_CHART_TOP + attack_rows.len() as f64 * ATTACK_ROW_H + 50.0
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{total_height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"{left}\" y=\"20\" font-size=\"14\">xenrpc host transport: echo throughput, MB/s per direction (log scale)</text>\n"
    );
    for decade in -1..=5 {
        let mb = 10f64.powi(decade);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{mb}</text>",
            width - 20.0,
            left - 6.0,
            y(mb) + 4.0,
            y0 = y(mb)
        );
    }
    for (g, &size) in SIZES.iter().enumerate() {
        let x0 = left + g as f64 * group_w + group_w * 0.1;
        for (k, (section, suffix, _, color)) in series.iter().enumerate() {
            if let Some(mb) = value(section, suffix, size) {
                let top_y = y(mb);
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{mb:.1} MB/s</title></rect>",
                    x0 + k as f64 * bar_w,
                    bar_w - 2.0,
                    (top + plot_h - top_y).max(0.0)
                );
            }
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + group_w * 0.4,
            top + plot_h + 18.0,
            size_label(size)
        );
    }
    for (k, (_, _, label, color)) in series.iter().enumerate() {
        let lx = left + (k % 4) as f64 * 170.0;
        let ly = height - 22.0 + (k / 4) as f64 * 16.0 - 8.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{:.1}\">{label}</text>",
            ly - 9.0,
            lx + 14.0,
            ly
        );
    }
    if !attack_rows.is_empty() {
        attack_chart(&mut svg, &attack_rows, height, width);
    }
    svg.push_str("</svg>\n");
    svg
}

const ATTACK_CHART_TOP: f64 = 40.0;
const ATTACK_ROW_H: f64 = 34.0;

/// Horizontal bars of the honest client's null-call p50 and p99 (log scale, 100 ns .. 100 ms)
/// alone and beside each attacker, below the throughput chart (from `y0`).
fn attack_chart(svg: &mut String, rows: &[&Row], y0: f64, width: f64) {
    let (left, right) = (300.0, width - 20.0);
    let (log_min, log_max) = (2.0f64, 8.0f64);
    let x = |ns: f64| {
        left + (right - left) * ((ns.max(100.0).log10() - log_min) / (log_max - log_min)).min(1.0)
    };
    let top = y0 + ATTACK_CHART_TOP;
    let _ = writeln!(
        svg,
        "<text x=\"70\" y=\"{:.1}\" font-size=\"14\">honest null call beside each attacker: p50 (dark) and p99 (light), log scale</text>",
        y0 + 20.0
    );
    let bottom = top + rows.len() as f64 * ATTACK_ROW_H;
    for decade in 2..=8 {
        let ns = 10f64.powi(decade);
        let _ = writeln!(
            svg,
            "<line x1=\"{gx:.1}\" x2=\"{gx:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"#ddd\"/><text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 14.0,
            fmt_ns(Some(ns)),
            gx = x(ns)
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let ry = top + i as f64 * ATTACK_ROW_H;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            ry + 18.0,
            row.name
        );
        for (k, (value, color)) in [(row.p50_ns, "#1f77b4"), (row.p99_ns, "#aec7e8")]
            .into_iter()
            .enumerate()
        {
            if let Some(ns) = value {
                let _ = writeln!(
                    svg,
                    "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" fill=\"{color}\"><title>{}</title></rect>",
                    ry + 4.0 + k as f64 * 13.0,
                    x(ns) - left,
                    fmt_ns(Some(ns))
                );
            }
        }
    }
}
