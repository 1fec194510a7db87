//! The host benchmark: `cargo run --release -p xenrpc-host --bin xenrpc-hostbench [-- --quick]`.
//!
//! Spawns its own server and client processes, measures xenrpc over the host transport in spin
//! mode and in blocking mode, measures the floors on this machine in the same run (raw
//! shared-memory ping-pong, raw eventfd round trip, Unix-socket request/response), and prints
//! every xenrpc figure next to its ratio to the matching floor. Also writes the table as CSV next
//! to the binary's target directory (`target/xenrpc-hostbench.csv`).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::floors::{run_floor_peer, FloorDriver};
use xenrpc_host::hostd::READY_LINE;
use xenrpc_host::process::{
    available_cpus, pin_to_cpu, spawn_with_control_socket, take_inherited_socket, ChildGuard,
};
use xenrpc_host::stats::{percentile, process_cpu_time};
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::services::echo;
use xenrpc_proto::OolRef;

const SIZES: [usize; 4] = [64, 4096, 64 * 1024, 1024 * 1024];
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;
const SPIN_ITERATIONS: u32 = 200_000;
const MAX_PAYLOAD: usize = 1024 * 1024;
const DATA_LEN: usize = 2 * MAX_PAYLOAD;

/// How much to measure (`--quick` for a smoke run).
#[derive(Clone, Copy)]
struct Budget {
    spin_roundtrips: u64,
    blocking_roundtrips: u64,
    throughput_time: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--role-floor-peer") => floor_peer(&args[1..]),
        Some("--role-server") => {
            pin_to_cpu(SERVER_CPU);
            xenrpc_host::hostd::main_with_args(&args[1..])
        }
        Some("--role-client") => client_role(&args[1..]),
        Some("--help" | "-h") => {
            println!("usage: xenrpc-hostbench [--quick]");
            Ok(())
        }
        _ => orchestrate(args.iter().any(|a| a == "--quick")),
    };
    if let Err(e) = result {
        eprintln!("xenrpc-hostbench: {e}");
        std::process::exit(1);
    }
}

fn floor_peer(args: &[String]) -> io::Result<()> {
    pin_to_cpu(SERVER_CPU);
    let fd = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "fd number expected"))?;
    run_floor_peer(take_inherited_socket(fd)?)
}

/// One row of results.
struct Row {
    section: &'static str,
    name: String,
    p50_ns: Option<f64>,
    p99_ns: Option<f64>,
    calls_per_s: Option<f64>,
    mb_per_s: Option<f64>,
    cpu_ns_per_call: Option<f64>,
    ratio: Option<(f64, &'static str)>,
}

impl Row {
    fn new(section: &'static str, name: impl Into<String>) -> Self {
        Self {
            section,
            name: name.into(),
            p50_ns: None,
            p99_ns: None,
            calls_per_s: None,
            mb_per_s: None,
            cpu_ns_per_call: None,
            ratio: None,
        }
    }
}

struct Latency {
    p50: f64,
    p99: f64,
}

fn latency(samples: &mut [Duration]) -> Latency {
    Latency {
        p50: percentile(samples, 50.0).as_nanos() as f64,
        p99: percentile(samples, 99.0).as_nanos() as f64,
    }
}

fn orchestrate(quick: bool) -> io::Result<()> {
    let budget = if quick {
        Budget {
            spin_roundtrips: 20_000,
            blocking_roundtrips: 2_000,
            throughput_time: Duration::from_millis(200),
        }
    } else {
        Budget {
            spin_roundtrips: 200_000,
            blocking_roundtrips: 20_000,
            throughput_time: Duration::from_secs(1),
        }
    };
    let cpus = available_cpus();
    let pinned = cpus >= 2 && pin_to_cpu(CLIENT_CPU);
    let started = Instant::now();
    println!(
        "xenrpc host benchmark: {cpus} CPUs available; {}",
        if pinned {
            "client on CPU 0, server/peer on CPU 1 (single-client runs)"
        } else {
            "unpinned"
        }
    );
    println!("measuring floors ...");
    let floors = measure_floors(budget)?;
    let mut rows = Vec::new();
    rows.push(latency_row(
        "floor",
        "raw shm ping-pong (spin)",
        &floors.spin,
        None,
    ));
    rows.push(latency_row(
        "floor",
        "raw eventfd round trip (blocking)",
        &floors.eventfd,
        None,
    ));
    rows.push(latency_row(
        "floor",
        "UDS request/response, 0 B",
        &floors.uds_null,
        None,
    ));
    for (size, rate) in SIZES.iter().zip(&floors.uds_echo) {
        let mut row = Row::new("floor", format!("UDS echo {}", size_label(*size)));
        row.calls_per_s = Some(*rate);
        row.mb_per_s = Some(*rate * *size as f64 / 1e6);
        rows.push(row);
    }

    for (mode, spin) in [
        (
            "spin",
            SpinPolicy {
                spin_iterations: SPIN_ITERATIONS,
            },
        ),
        ("blocking", SpinPolicy::BLOCKING),
    ] {
        println!("measuring xenrpc, {mode} mode ...");
        let server = BenchServer::start(spin)?;
        let mut client = Client::connect(
            &server.socket,
            ClientOptions {
                data_len: DATA_LEN,
                spin,
                max_in_flight: 1,
                ..ClientOptions::default()
            },
        )
        .map_err(io::Error::other)?;
        let section = if mode == "spin" {
            "xenrpc spin"
        } else {
            "xenrpc blocking"
        };

        // Null call latency.
        let roundtrips = if mode == "spin" {
            budget.spin_roundtrips
        } else {
            budget.blocking_roundtrips
        };
        let (mut samples, cpu) = null_calls(&mut client, server.pid(), roundtrips)?;
        let floor = if mode == "spin" {
            (&floors.spin, "shm ping-pong")
        } else {
            (&floors.eventfd, "eventfd RTT")
        };
        let mut row = latency_row(
            section,
            "null call, 1 client",
            &latency(&mut samples),
            Some(floor),
        );
        row.cpu_ns_per_call = Some(cpu);
        rows.push(row);
        let mut vs_uds = latency_row(
            section,
            "null call vs UDS 0 B",
            &latency(&mut samples),
            Some((&floors.uds_null, "UDS 0 B")),
        );
        vs_uds.cpu_ns_per_call = Some(cpu);
        rows.push(vs_uds);

        // Echo throughput, one client in this process.
        for (i, &size) in SIZES.iter().enumerate() {
            let (calls, elapsed, cpu) = echo_loop(
                &mut client,
                size,
                budget.throughput_time,
                Some(server.pid()),
            )?;
            let rate = calls as f64 / elapsed.as_secs_f64();
            let mut row = Row::new(section, format!("echo {}, 1 client", size_label(size)));
            row.calls_per_s = Some(rate);
            row.mb_per_s = Some(rate * size as f64 / 1e6);
            row.cpu_ns_per_call = Some(cpu);
            row.ratio = Some((rate / floors.uds_echo[i], "UDS echo (calls/s)"));
            rows.push(row);
        }
        drop(client);

        // Echo throughput, four client processes at once.
        for (i, &size) in SIZES.iter().enumerate() {
            let (rate, cpu) = multi_client_echo(&server, spin, size, 4, budget.throughput_time)?;
            let mut row = Row::new(section, format!("echo {}, 4 clients", size_label(size)));
            row.calls_per_s = Some(rate);
            row.mb_per_s = Some(rate * size as f64 / 1e6);
            row.cpu_ns_per_call = Some(cpu);
            row.ratio = Some((rate / floors.uds_echo[i], "UDS echo 1 client"));
            rows.push(row);
        }
        server.stop()?;
    }

    let table = render(&rows);
    println!("\n{table}");
    for (section, aim, floor) in [
        ("xenrpc spin", 2.0, "raw shm ping-pong"),
        ("xenrpc blocking", 1.5, "raw eventfd round trip"),
    ] {
        if let Some((ratio, _)) = rows
            .iter()
            .find(|r| r.section == section && r.name == "null call, 1 client")
            .and_then(|r| r.ratio)
        {
            let verdict = if ratio <= aim { "met" } else { "NOT met" };
            println!(
                "aim: {section} null-call p50 within {aim}x of the {floor}: {ratio:.2}x, {verdict}"
            );
        }
    }
    println!(
        "MB/s counts payload bytes per direction. CPU/call = client + server CPU time (from \
/proc/<pid>/task/*/schedstat) per call, spinning included. Ratios: latency = xenrpc / floor \
(lower is better); throughput = xenrpc / floor (higher is better). Figures move by about \
±20% run to run on this machine; compare ratios within one run."
    );
    let csv = csv_path();
    if let Some(csv) = &csv {
        if std::fs::write(csv, render_csv(&rows)).is_ok() {
            println!("CSV: {}", csv.display());
        }
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

struct Floors {
    spin: Latency,
    eventfd: Latency,
    uds_null: Latency,
    /// Calls/s per size in `SIZES`.
    uds_echo: Vec<f64>,
}

fn measure_floors(budget: Budget) -> io::Result<Floors> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--role-floor-peer");
    let (child, control) = spawn_with_control_socket(command)?;
    let driver = FloorDriver::new(control);
    // Warm-up, then the measured runs.
    driver.spin_pingpong(budget.spin_roundtrips / 10)?;
    let spin = latency(&mut driver.spin_pingpong(budget.spin_roundtrips)?);
    driver.eventfd_roundtrip(budget.blocking_roundtrips / 10)?;
    let eventfd = latency(&mut driver.eventfd_roundtrip(budget.blocking_roundtrips)?);
    let uds_null = latency(&mut driver.uds_echo(budget.blocking_roundtrips, 0)?);
    let mut uds_echo = Vec::new();
    for &size in &SIZES {
        // Size the run to the time budget from a short probe.
        let probe = driver.uds_echo(20, size)?;
        let per_call = probe.iter().sum::<Duration>() / probe.len() as u32;
        let iterations = (budget.throughput_time.as_secs_f64() / per_call.as_secs_f64().max(1e-9))
            .clamp(20.0, 1e6) as u64;
        let start = Instant::now();
        driver.uds_echo(iterations, size)?;
        uds_echo.push(iterations as f64 / start.elapsed().as_secs_f64());
    }
    drop(driver);
    child.wait_or_kill(Duration::from_secs(5))?;
    Ok(Floors {
        spin,
        eventfd,
        uds_null,
        uds_echo,
    })
}

fn latency_row(
    section: &'static str,
    name: &str,
    latency: &Latency,
    floor: Option<(&Latency, &'static str)>,
) -> Row {
    let mut row = Row::new(section, name);
    row.p50_ns = Some(latency.p50);
    row.p99_ns = Some(latency.p99);
    row.ratio = floor.map(|(floor, label)| (latency.p50 / floor.p50, label));
    row
}

/// A `xenrpc-hostd` (this binary in server role) on CPU 1.
struct BenchServer {
    child: ChildGuard,
    socket: PathBuf,
}

impl BenchServer {
    fn start(spin: SpinPolicy) -> io::Result<Self> {
        let socket =
            std::env::temp_dir().join(format!("xenrpc-hostbench-{}.sock", std::process::id()));
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--role-server")
            .arg("--socket")
            .arg(&socket)
            .args(["--spin", &spin.spin_iterations.to_string()])
            .args(["--max-data", &DATA_LEN.to_string(), "--quiet"])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let child = ChildGuard::new(child);
        let line = read_line_within(stdout, Duration::from_secs(10))?;
        if !line.starts_with(READY_LINE) {
            return Err(io::Error::other(format!("server did not start: {line:?}")));
        }
        Ok(Self { child, socket })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(self) -> io::Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        self.child.kill()
    }
}

fn read_line_within(
    stream: impl io::Read + Send + 'static,
    timeout: Duration,
) -> io::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout)
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no output in time"))
}

fn own_and_server_cpu(server: Option<u32>) -> io::Result<Duration> {
    let mut total = process_cpu_time(std::process::id())?;
    if let Some(pid) = server {
        total += process_cpu_time(pid)?;
    }
    Ok(total)
}

/// Times `count` null calls one by one; returns the samples and CPU ns per call.
fn null_calls(client: &mut Client, server: u32, count: u64) -> io::Result<(Vec<Duration>, f64)> {
    let ping = echo::client::ping(&());
    for _ in 0..count / 10 {
        client.call(&ping, None).map_err(io::Error::other)?;
    }
    let mut samples = Vec::with_capacity(count as usize);
    let cpu_before = own_and_server_cpu(Some(server))?;
    for _ in 0..count {
        let start = Instant::now();
        client.call(&ping, None).map_err(io::Error::other)?;
        samples.push(start.elapsed());
    }
    let cpu = own_and_server_cpu(Some(server))? - cpu_before;
    Ok((samples, cpu.as_nanos() as f64 / count as f64))
}

/// Echoes `size` bytes out of line for `duration`, one call at a time. The payload is written
/// into the data region once, as an application building its data in place would; each call
/// then moves nothing but the request slot, and the handler writes the result straight into
/// the result window. The last result is checked. Returns (calls, elapsed, CPU ns per call).
fn echo_loop(
    client: &mut Client,
    size: usize,
    duration: Duration,
    server: Option<u32>,
) -> io::Result<(u64, Duration, f64)> {
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    client
        .data()
        .write(0, &payload)
        .map_err(|_| io::Error::other("payload outside data region"))?;
    let call = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, size as u32))
        .ool_result(OolRef::new(MAX_PAYLOAD as u32, size as u32));
    for _ in 0..3 {
        client.call(&call, None).map_err(io::Error::other)?;
    }
    let cpu_before = own_and_server_cpu(server)?;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < duration {
        for _ in 0..8 {
            let reply = client.call(&call, None).map_err(io::Error::other)?;
            if reply.ool_written as usize != size {
                return Err(io::Error::other("short echo"));
            }
        }
        calls += 8;
    }
    let elapsed = start.elapsed();
    let cpu = own_and_server_cpu(server)? - cpu_before;
    let mut echoed = vec![0u8; size];
    client
        .data()
        .read(MAX_PAYLOAD, &mut echoed)
        .map_err(|_| io::Error::other("result outside data region"))?;
    if echoed != payload {
        return Err(io::Error::other("echo returned different bytes"));
    }
    Ok((calls, elapsed, cpu.as_nanos() as f64 / calls as f64))
}

/// Client process role: `--role-client SOCKET SPIN SIZE MILLIS`; prints `calls elapsed_ns cpu_ns`.
fn client_role(args: &[String]) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: --role-client SOCKET SPIN SIZE MILLIS",
        )
    };
    let [socket, spin, size, millis] = args else {
        return Err(bad());
    };
    let spin = SpinPolicy {
        spin_iterations: spin.parse().map_err(|_| bad())?,
    };
    let size: usize = size.parse().map_err(|_| bad())?;
    let duration = Duration::from_millis(millis.parse().map_err(|_| bad())?);
    let mut client = Client::connect(
        Path::new(socket),
        ClientOptions {
            data_len: DATA_LEN,
            spin,
            max_in_flight: 1,
            ..ClientOptions::default()
        },
    )
    .map_err(io::Error::other)?;
    let cpu_before = process_cpu_time(std::process::id())?;
    let (calls, elapsed, _) = echo_loop(&mut client, size, duration, None)?;
    let cpu = process_cpu_time(std::process::id())? - cpu_before;
    println!("{calls} {} {}", elapsed.as_nanos(), cpu.as_nanos());
    Ok(())
}

/// Runs `clients` client processes echoing `size` bytes against `server` at once; returns the
/// summed calls/s and CPU ns per call (clients + server).
fn multi_client_echo(
    server: &BenchServer,
    spin: SpinPolicy,
    size: usize,
    clients: usize,
    duration: Duration,
) -> io::Result<(f64, f64)> {
    let server_cpu_before = process_cpu_time(server.pid())?;
    let children: Vec<_> = (0..clients)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .arg("--role-client")
                .arg(&server.socket)
                .arg(spin.spin_iterations.to_string())
                .arg(size.to_string())
                .arg(duration.as_millis().to_string())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<io::Result<_>>()?;
    let (mut rate, mut calls_total, mut client_cpu_ns) = (0.0, 0u64, 0u128);
    for child in children {
        let output = wait_output_within(child, duration + Duration::from_secs(30))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<u128> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [calls, elapsed_ns, cpu_ns] = fields[..] else {
            return Err(io::Error::other(format!("client failed: {text:?}")));
        };
        rate += calls as f64 / (elapsed_ns as f64 / 1e9);
        calls_total += calls as u64;
        client_cpu_ns += cpu_ns;
    }
    let server_cpu = process_cpu_time(server.pid())? - server_cpu_before;
    let cpu_per_call = (client_cpu_ns + server_cpu.as_nanos()) as f64 / calls_total.max(1) as f64;
    Ok((rate, cpu_per_call))
}

fn wait_output_within(
    child: std::process::Child,
    timeout: Duration,
) -> io::Result<std::process::Output> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output,
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client process did not finish",
            ))
        }
    }
}

fn size_label(size: usize) -> String {
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

fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = [
        "",
        "p50",
        "p99",
        "calls/s",
        "MB/s",
        "CPU/call",
        "ratio to floor",
    ];
    let widths = [36, 10, 10, 10, 9, 10, 0];
    let mut section = "";
    for row in rows {
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
            .ratio
            .map_or(String::new(), |(r, label)| format!("{r:.2}x {label}"));
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

fn render_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "section,name,p50_ns,p99_ns,calls_per_s,mb_per_s,cpu_ns_per_call,ratio,ratio_to\n",
    );
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    for row in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            row.section,
            row.name,
            num(row.p50_ns),
            num(row.p99_ns),
            num(row.calls_per_s),
            num(row.mb_per_s),
            num(row.cpu_ns_per_call),
            row.ratio.map_or(String::new(), |(r, _)| format!("{r:.3}")),
            row.ratio.map_or("", |(_, label)| label)
        );
    }
    out
}

/// `target/xenrpc-hostbench.csv`: the binary lives in `target/<profile>/`.
fn csv_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("xenrpc-hostbench.csv"))
}
