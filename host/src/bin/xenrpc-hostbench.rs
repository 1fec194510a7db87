//! The host benchmark: `cargo run --release -p xenrpc-host --bin xenrpc-hostbench [-- --quick]`
//! (`--latency-only` skips the throughput part).
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
use xenrpc_host::stats::{median, percentile, process_cpu_time};
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::services::echo;
use xenrpc_proto::OolRef;

const SIZES: [usize; 4] = [64, 4096, 64 * 1024, 1024 * 1024];
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;
const MAX_PAYLOAD: usize = 1024 * 1024;
const DATA_LEN: usize = 2 * MAX_PAYLOAD;
/// No call may take this long: a lost wake-up or a dead peer fails the run instead of hanging it.
const CALL_TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
/// Calls in flight in the pipelined runs.
const PIPELINE_DEPTH: usize = 16;

/// How much to measure (`--quick` for a smoke run).
#[derive(Clone, Copy)]
struct Budget {
    /// Alternating floor/xenrpc latency rounds.
    rounds: usize,
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
            println!("usage: xenrpc-hostbench [--quick] [--latency-only]");
            Ok(())
        }
        _ => orchestrate(
            args.iter().any(|a| a == "--quick"),
            args.iter().any(|a| a == "--latency-only"),
        ),
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

fn orchestrate(quick: bool, latency_only: bool) -> io::Result<()> {
    let budget = if quick {
        Budget {
            rounds: 1,
            spin_roundtrips: 20_000,
            blocking_roundtrips: 2_000,
            throughput_time: Duration::from_millis(200),
        }
    } else {
        Budget {
            rounds: 5,
            spin_roundtrips: 100_000,
            blocking_roundtrips: 10_000,
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

    let mut floor_command = Command::new(std::env::current_exe()?);
    floor_command.arg("--role-floor-peer");
    let (floor_child, control) = spawn_with_control_socket(floor_command)?;
    let floor = FloorDriver::new(control);
    let spin_policy = SpinPolicy::DEFAULT;
    let spin_server = BenchServer::start("spin", spin_policy)?;
    let blocking_server = BenchServer::start("blocking", SpinPolicy::BLOCKING)?;
    let client_options = |spin, max_in_flight| ClientOptions {
        data_len: DATA_LEN,
        spin,
        max_in_flight,
        ..ClientOptions::default()
    };
    let mut spin_client = Client::connect(&spin_server.socket, client_options(spin_policy, 1))
        .map_err(io::Error::other)?;
    let mut blocking_client = Client::connect(
        &blocking_server.socket,
        client_options(SpinPolicy::BLOCKING, 1),
    )
    .map_err(io::Error::other)?;

    // Latency: floors and xenrpc alternate, round after round, so that each ratio compares
    // figures taken moments apart; the table shows medians over the rounds.
    let mut series = LatencySeries::default();
    for round in 0..budget.rounds {
        println!("latency round {}/{} ...", round + 1, budget.rounds);
        floor.spin_pingpong(budget.spin_roundtrips / 10)?;
        let spin_floor = latency(&mut floor.spin_pingpong(budget.spin_roundtrips)?);
        let (mut samples, spin_cpu) =
            null_calls(&mut spin_client, spin_server.pid(), budget.spin_roundtrips)?;
        let spin = latency(&mut samples);
        floor.eventfd_roundtrip(budget.blocking_roundtrips / 10)?;
        let eventfd_floor = latency(&mut floor.eventfd_roundtrip(budget.blocking_roundtrips)?);
        let (mut samples, blocking_cpu) = null_calls(
            &mut blocking_client,
            blocking_server.pid(),
            budget.blocking_roundtrips,
        )?;
        let blocking = latency(&mut samples);
        let uds = latency(&mut floor.uds_echo(budget.blocking_roundtrips, 0)?);
        series.push(
            spin_floor,
            eventfd_floor,
            uds,
            (spin, spin_cpu),
            (blocking, blocking_cpu),
        );
    }
    let mut rows = series.rows();
    if latency_only {
        println!("\n{}", render(&rows));
        return Ok(());
    }

    println!("throughput: UDS floor ...");
    let mut uds_echo = Vec::new();
    for &size in &SIZES {
        // Size the run to the time budget from a short probe.
        let probe = floor.uds_echo(20, size)?;
        let per_call = probe.iter().sum::<Duration>() / probe.len() as u32;
        let iterations = (budget.throughput_time.as_secs_f64() / per_call.as_secs_f64().max(1e-9))
            .clamp(20.0, 1e6) as u64;
        let start = Instant::now();
        floor.uds_echo(iterations, size)?;
        let rate = iterations as f64 / start.elapsed().as_secs_f64();
        let mut row = Row::new("floor", format!("UDS echo {}, 1 client", size_label(size)));
        row.calls_per_s = Some(rate);
        row.mb_per_s = Some(rate * size as f64 / 1e6);
        rows.push(row);
        uds_echo.push(rate);
    }
    drop(floor);
    floor_child.wait_or_kill(Duration::from_secs(5))?;

    for (section, server, client, spin) in [
        ("xenrpc spin", &spin_server, &mut spin_client, spin_policy),
        (
            "xenrpc blocking",
            &blocking_server,
            &mut blocking_client,
            SpinPolicy::BLOCKING,
        ),
    ] {
        println!("throughput: {section} ...");
        // One client in this process, one call at a time.
        for (i, &size) in SIZES.iter().enumerate() {
            let (calls, elapsed, cpu) =
                echo_loop(client, size, budget.throughput_time, Some(server.pid()))?;
            let rate = calls as f64 / elapsed.as_secs_f64();
            let name = format!("echo {}, 1 client", size_label(size));
            rows.push(throughput_row(section, name, size, rate, cpu, uds_echo[i]));
        }
        // Pipelined: one publish (and at most one wake-up) per batch.
        let mut pipelined = Client::connect(&server.socket, client_options(spin, PIPELINE_DEPTH))
            .map_err(io::Error::other)?;
        for (i, &size) in SIZES[..2].iter().enumerate() {
            let (calls, elapsed, cpu) =
                echo_pipelined(&mut pipelined, size, budget.throughput_time, server.pid())?;
            let rate = calls as f64 / elapsed.as_secs_f64();
            let name = format!(
                "echo {}, 1 client, {PIPELINE_DEPTH} in flight",
                size_label(size)
            );
            rows.push(throughput_row(section, name, size, rate, cpu, uds_echo[i]));
        }
        drop(pipelined);
        // Four client processes at once.
        for (i, &size) in SIZES.iter().enumerate() {
            let (rate, cpu) = multi_client_echo(server, spin, size, 4, budget.throughput_time)?;
            let name = format!("echo {}, 4 clients", size_label(size));
            rows.push(throughput_row(section, name, size, rate, cpu, uds_echo[i]));
        }
    }
    drop(spin_client);
    drop(blocking_client);
    spin_server.stop()?;
    blocking_server.stop()?;

    println!("\n{}", render(&rows));
    for (section, aim, floor) in [
        ("xenrpc spin", 2.0, "raw shm ping-pong"),
        ("xenrpc blocking", 1.5, "raw eventfd round trip"),
    ] {
        let null_row = rows
            .iter()
            .find(|r| r.section == section && r.name == "null call, 1 client");
        if let Some((ratio, _)) = null_row.and_then(|r| r.ratio) {
            let verdict = if ratio <= aim { "met" } else { "NOT met" };
            println!(
                "aim: {section} null-call p50 within {aim}x of the {floor}: {ratio:.2}x, {verdict}"
            );
        }
    }
    println!(
        "Latency rows: medians over {} alternating rounds; ratios are medians of per-round ratios. \
MB/s counts payload bytes per direction. CPU/call = client + server CPU time (from \
/proc/<pid>/task/*/schedstat) per call, spinning included. Ratios: latency = xenrpc / floor \
(lower is better); throughput = xenrpc / UDS echo of the same size, 1 client (higher is better).",
        budget.rounds
    );
    if let Some(csv) = output_path("csv") {
        if std::fs::write(&csv, render_csv(&rows)).is_ok() {
            println!("CSV: {}", csv.display());
        }
    }
    if let Some(svg) = output_path("svg") {
        if std::fs::write(&svg, render_svg(&rows)).is_ok() {
            println!("plot: {}", svg.display());
        }
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn throughput_row(
    section: &'static str,
    name: String,
    size: usize,
    rate: f64,
    cpu: f64,
    uds_rate: f64,
) -> Row {
    let mut row = Row::new(section, name);
    row.calls_per_s = Some(rate);
    row.mb_per_s = Some(rate * size as f64 / 1e6);
    row.cpu_ns_per_call = Some(cpu);
    row.ratio = Some((rate / uds_rate, "UDS echo"));
    row
}

/// Per-round latency figures.
#[derive(Default)]
struct LatencySeries {
    spin_floor: Vec<Latency>,
    eventfd_floor: Vec<Latency>,
    uds: Vec<Latency>,
    spin: Vec<(Latency, f64)>,
    blocking: Vec<(Latency, f64)>,
}

impl LatencySeries {
    fn push(
        &mut self,
        spin_floor: Latency,
        eventfd_floor: Latency,
        uds: Latency,
        spin: (Latency, f64),
        blocking: (Latency, f64),
    ) {
        self.spin_floor.push(spin_floor);
        self.eventfd_floor.push(eventfd_floor);
        self.uds.push(uds);
        self.spin.push(spin);
        self.blocking.push(blocking);
    }

    fn rows(&self) -> Vec<Row> {
        let med = |mut values: Vec<f64>| median(&mut values);
        let floor_row = |name: &str, series: &[Latency]| {
            let mut row = Row::new("floor", name);
            row.p50_ns = Some(med(series.iter().map(|l| l.p50).collect()));
            row.p99_ns = Some(med(series.iter().map(|l| l.p99).collect()));
            row
        };
        let xen_row = |section, name: &str, series: &[(Latency, f64)], floor: &[Latency], label| {
            let mut row = Row::new(section, name);
            row.p50_ns = Some(med(series.iter().map(|(l, _)| l.p50).collect()));
            row.p99_ns = Some(med(series.iter().map(|(l, _)| l.p99).collect()));
            row.cpu_ns_per_call = Some(med(series.iter().map(|(_, cpu)| *cpu).collect()));
            let ratios = series
                .iter()
                .zip(floor)
                .map(|((l, _), f)| l.p50 / f.p50)
                .collect();
            row.ratio = Some((med(ratios), label));
            row
        };
        vec![
            floor_row("raw shm ping-pong (spin)", &self.spin_floor),
            floor_row("raw eventfd round trip (blocking)", &self.eventfd_floor),
            floor_row("UDS request/response, 0 B", &self.uds),
            xen_row(
                "xenrpc spin",
                "null call, 1 client",
                &self.spin,
                &self.spin_floor,
                "shm ping-pong",
            ),
            xen_row(
                "xenrpc spin",
                "null call, 1 client (vs UDS)",
                &self.spin,
                &self.uds,
                "UDS 0 B",
            ),
            xen_row(
                "xenrpc blocking",
                "null call, 1 client",
                &self.blocking,
                &self.eventfd_floor,
                "eventfd RTT",
            ),
            xen_row(
                "xenrpc blocking",
                "null call, 1 client (vs UDS)",
                &self.blocking,
                &self.uds,
                "UDS 0 B",
            ),
        ]
    }
}

/// A `xenrpc-hostd` (this binary in server role) on CPU 1.
struct BenchServer {
    child: ChildGuard,
    socket: PathBuf,
}

impl BenchServer {
    fn start(name: &str, spin: SpinPolicy) -> io::Result<Self> {
        let socket = std::env::temp_dir().join(format!(
            "xenrpc-hostbench-{}-{name}.sock",
            std::process::id()
        ));
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--role-server")
            .arg("--socket")
            .arg(&socket)
            .args(["--spin-us", &spin.spin_for.as_micros().to_string()])
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
        client.call(&ping, CALL_TIMEOUT).map_err(io::Error::other)?;
    }
    let mut samples = Vec::with_capacity(count as usize);
    let cpu_before = own_and_server_cpu(Some(server))?;
    for _ in 0..count {
        let start = Instant::now();
        client.call(&ping, CALL_TIMEOUT).map_err(io::Error::other)?;
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
        client.call(&call, CALL_TIMEOUT).map_err(io::Error::other)?;
    }
    let cpu_before = own_and_server_cpu(server)?;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < duration {
        for _ in 0..8 {
            let reply = client.call(&call, CALL_TIMEOUT).map_err(io::Error::other)?;
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

/// Echoes `size` bytes in batches of `PIPELINE_DEPTH` calls (each with its own result window):
/// start a batch, publish it once, collect every reply. Returns (calls, elapsed, CPU ns/call).
fn echo_pipelined(
    client: &mut Client,
    size: usize,
    duration: Duration,
    server: u32,
) -> io::Result<(u64, Duration, f64)> {
    let payload: Vec<u8> = (0..size).map(|i| (i * 17 + 1) as u8).collect();
    client
        .data()
        .write(0, &payload)
        .map_err(|_| io::Error::other("payload outside data region"))?;
    let calls: Vec<_> = (0..PIPELINE_DEPTH)
        .map(|i| {
            echo::client::echo_ool(&())
                .ool_args(OolRef::new(0, size as u32))
                .ool_result(OolRef::new((MAX_PAYLOAD + i * size) as u32, size as u32))
        })
        .collect();
    let batch = |client: &mut Client| -> io::Result<()> {
        let pending = calls
            .iter()
            .map(|call| client.start(call))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io::Error::other)?;
        client.flush();
        for call in pending {
            let reply = client
                .finish(call, CALL_TIMEOUT)
                .map_err(io::Error::other)?;
            if reply.ool_written as usize != size {
                return Err(io::Error::other("short echo"));
            }
        }
        Ok(())
    };
    batch(client)?;
    let cpu_before = own_and_server_cpu(Some(server))?;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        batch(client)?;
        done += PIPELINE_DEPTH as u64;
    }
    let elapsed = start.elapsed();
    let cpu = own_and_server_cpu(Some(server))? - cpu_before;
    for i in 0..PIPELINE_DEPTH {
        let mut echoed = vec![0u8; size];
        client
            .data()
            .read(MAX_PAYLOAD + i * size, &mut echoed)
            .map_err(|_| io::Error::other("result outside data region"))?;
        if echoed != payload {
            return Err(io::Error::other("pipelined echo returned different bytes"));
        }
    }
    Ok((done, elapsed, cpu.as_nanos() as f64 / done as f64))
}

/// Client process role: `--role-client SOCKET SPIN_US SIZE MILLIS`; prints `calls elapsed_ns cpu_ns`.
fn client_role(args: &[String]) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: --role-client SOCKET SPIN_US SIZE MILLIS",
        )
    };
    let [socket, spin, size, millis] = args else {
        return Err(bad());
    };
    let spin = SpinPolicy {
        spin_for: Duration::from_micros(spin.parse().map_err(|_| bad())?),
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
                .arg(spin.spin_for.as_micros().to_string())
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

/// `target/xenrpc-hostbench.<extension>`: the binary lives in `target/<profile>/`.
fn output_path(extension: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(
        exe.parent()?
            .parent()?
            .join(format!("xenrpc-hostbench.{extension}")),
    )
}

/// A grouped bar chart of echo throughput (MB/s, log scale) per payload size: the UDS floor
/// and xenrpc in each mode with one and four clients.
fn render_svg(rows: &[Row]) -> String {
    let series: [(&str, &str, &str, &str); 5] = [
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
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
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
        let lx = left + (k % 3) as f64 * 220.0;
        let ly = height - 22.0 + (k / 3) as f64 * 16.0 - 8.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{:.1}\">{label}</text>",
            ly - 9.0,
            lx + 14.0,
            ly
        );
    }
    svg.push_str("</svg>\n");
    svg
}
