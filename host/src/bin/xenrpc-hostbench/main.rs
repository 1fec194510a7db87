//! The host benchmark: `cargo run --release -p xenrpc-host --bin xenrpc-hostbench [-- --quick]`
//! (`--latency-only` skips the throughput part, `--attacks-only` runs only the attack rows).
//!
//! Spawns its own server and client processes, measures xenrpc over the host transport in spin
//! mode and in blocking mode, measures the floors on this machine in the same run (raw
//! shared-memory ping-pong, raw eventfd round trip, Unix-socket request/response), and prints
//! every xenrpc figure next to its ratio to the matching floor; then an honest client's null
//! calls alone and beside each attacker of `xenrpc_host::attack` (see `attackers`), as ratios
//! to alone. Also writes the table as CSV and charts as SVG next to the binary's target
//! directory (`target/xenrpc-hostbench.csv`, `.svg`).

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
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

use render::{output_path, render, render_csv, render_svg, size_label};

mod attackers;
mod render;
mod throughput;

use throughput::{client_role, echo_loop, echo_pipelined, multi_client_echo};

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
    /// Honest null calls per attack row.
    attack_time: Duration,
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
        Some("--role-attacker") => attackers::attacker_role(&args[1..]),
        Some("--help" | "-h") => {
            println!("usage: xenrpc-hostbench [--quick] [--latency-only | --attacks-only]");
            Ok(())
        }
        _ => orchestrate(
            args.iter().any(|a| a == "--quick"),
            args.iter().any(|a| a == "--latency-only"),
            args.iter().any(|a| a == "--attacks-only"),
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
    ratio: Option<(f64, String)>,
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

#[derive(Clone, Copy)]
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

fn orchestrate(quick: bool, latency_only: bool, attacks_only: bool) -> io::Result<()> {
    let budget = if quick {
        Budget {
            rounds: 1,
            spin_roundtrips: 20_000,
            blocking_roundtrips: 2_000,
            throughput_time: Duration::from_millis(200),
            attack_time: Duration::from_millis(500),
        }
    } else {
        Budget {
            rounds: 5,
            spin_roundtrips: 100_000,
            blocking_roundtrips: 10_000,
            throughput_time: Duration::from_secs(1),
            attack_time: Duration::from_secs(2),
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
    if attacks_only {
        let rows = attackers::rows(budget.attack_time)?;
        println!("\n{}", render(&rows));
        println!("{}", attackers::NOTE);
        write_outputs(&rows);
        return Ok(());
    }

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
    rows.extend(attackers::rows(budget.attack_time)?);
    if latency_only {
        println!("\n{}", render(&rows));
        println!("{}", attackers::NOTE);
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
        if let Some((ratio, _)) = null_row.and_then(|r| r.ratio.clone()) {
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
    println!("{}", attackers::NOTE);
    write_outputs(&rows);
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the CSV and the SVG next to the target directory.
fn write_outputs(rows: &[Row]) {
    if let Some(csv) = output_path("csv") {
        if std::fs::write(&csv, render_csv(rows)).is_ok() {
            println!("CSV: {}", csv.display());
        }
    }
    if let Some(svg) = output_path("svg") {
        if std::fs::write(&svg, render_svg(rows)).is_ok() {
            println!("plot: {}", svg.display());
        }
    }
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
    row.ratio = Some((rate / uds_rate, "UDS echo".into()));
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
            row.ratio = Some((med(ratios), String::from(label)));
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
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--role-server")
            .arg("--socket")
            .arg(&socket)
            .args(["--spin-us", &spin.spin_for.as_micros().to_string()])
            .args(["--max-data", &DATA_LEN.to_string(), "--quiet"]);
        let (child, stdout) = spawn_piped(command)?;
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

/// Spawns `command` with its stdout piped to us; the child is killed when the guard drops.
fn spawn_piped(mut command: Command) -> io::Result<(ChildGuard, std::process::ChildStdout)> {
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    Ok((ChildGuard::new(child), stdout))
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
