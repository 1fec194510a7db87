//! The host benchmark: `cargo xtask bench-host [--quick]` (or `cargo run --release -p xenrpc-hostbench -- [--quick]`)
//! (`--latency-only` skips the throughput part, `--attacks-only` runs only the attack rows).
//!
//! Spawns its own server and client processes, measures xenrpc over the host transport in spin
//! mode and in blocking mode, and in the same run the floors on this machine (the physical
//! limit: one cache line bounced between the two CPUs, timed in batches; a raw shared-memory
//! ping-pong timed per round trip; a raw eventfd round trip; Unix-socket request/response) and
//! the peers (`peers`: SunRPC over TCP and a Unix socket, gRPC over TCP), and prints every
//! xenrpc figure next to its ratios to its floor, the limit and each peer; then CPU per call
//! of calls paced at 1,000 a second (an idle service's load, see `paced`), on two CPUs and on
//! one; then an honest client's null
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
use xenrpc_host::stats::process_cpu_time;
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::services::echo;

use latency::{
    latency, Compared, LatencySeries, EVENTFD_FLOOR, LIMIT, NULL_CALL, NULL_CALL_EACH, SHM_FLOOR,
    UDS_FLOOR,
};
use render::{output_path, render, render_csv, render_svg, size_label};

mod attackers;
mod latency;
mod paced;
mod peers;
mod render;
mod throughput;

use peers::Peer;
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
    /// Calls in each paced row.
    paced_calls: u64,
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
        Some("--role-peer-server") => peers::server_role(&args[1..]),
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
    /// Ratios to other rows (the first is the row's own floor or baseline), with their labels.
    ratios: Vec<(f64, String)>,
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
            ratios: Vec::new(),
        }
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
            paced_calls: 200,
        }
    } else {
        Budget {
            rounds: 5,
            spin_roundtrips: 100_000,
            blocking_roundtrips: 10_000,
            throughput_time: Duration::from_secs(1),
            attack_time: Duration::from_secs(2),
            paced_calls: 1_000,
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
    let mut peers = peers::start_available()?;

    // Latency: floors, peers and xenrpc alternate, round after round.
    let mut series = LatencySeries::default();
    for round in 0..budget.rounds {
        println!("latency round {}/{} ...", round + 1, budget.rounds);
        // A clock read costs about a round trip of the limit: batches of a thousand.
        let limit = latency(&mut floor.line_pingpong(budget.spin_roundtrips / 1000, 1000)?);
        series.push("floor", LIMIT, limit, None);
        floor.spin_pingpong(budget.spin_roundtrips / 10)?;
        let shm = latency(&mut floor.spin_pingpong(budget.spin_roundtrips)?);
        series.push("floor", SHM_FLOOR, shm, None);
        // Timed like the limit, in batches (a clock read costs a tenth of a call here), and
        // call by call for the tail.
        let (mut samples, cpu) = null_calls(
            spin_server.pid(),
            budget.spin_roundtrips,
            SPIN_BATCH,
            ping(&mut spin_client),
        )?;
        series.push("xenrpc spin", NULL_CALL, latency(&mut samples), Some(cpu));
        let (mut samples, cpu) = null_calls(
            spin_server.pid(),
            budget.spin_roundtrips,
            1,
            ping(&mut spin_client),
        )?;
        series.push(
            "xenrpc spin",
            NULL_CALL_EACH,
            latency(&mut samples),
            Some(cpu),
        );
        floor.eventfd_roundtrip(budget.blocking_roundtrips / 10)?;
        let eventfd = latency(&mut floor.eventfd_roundtrip(budget.blocking_roundtrips)?);
        series.push("floor", EVENTFD_FLOOR, eventfd, None);
        let (mut samples, cpu) = null_calls(
            blocking_server.pid(),
            budget.blocking_roundtrips,
            1,
            ping(&mut blocking_client),
        )?;
        series.push(
            "xenrpc blocking",
            NULL_CALL,
            latency(&mut samples),
            Some(cpu),
        );
        let uds = latency(&mut floor.uds_echo(budget.blocking_roundtrips, 0)?);
        series.push("floor", UDS_FLOOR, uds, None);
        for (server, client) in &mut peers {
            let (mut samples, cpu) = null_calls(
                server.pid(),
                budget.blocking_roundtrips,
                1,
                peers::null(server, client.as_mut()),
            )?;
            series.push(
                server.peer.name(),
                NULL_CALL,
                latency(&mut samples),
                Some(cpu),
            );
        }
    }
    let others = |own_floor: (&'static str, &'static str)| -> Vec<Compared> {
        let mut compared = vec![
            ("floor", own_floor.0, own_floor.1),
            ("floor", LIMIT, "limit"),
            ("floor", UDS_FLOOR, "UDS 0 B"),
        ];
        compared.extend(Peer::ALL.map(|p| (p.name(), NULL_CALL, p.name())));
        compared
    };
    let mut rows = series.rows(&[
        ("xenrpc spin", others((SHM_FLOOR, "shm ping-pong"))),
        ("xenrpc blocking", others((EVENTFD_FLOOR, "eventfd RTT"))),
    ]);

    // CPU per call when calls come seldom, as to an idle service: what spinning costs.
    rows.extend(paced::rows(
        budget.paced_calls,
        pinned,
        &mut paced::Subjects {
            xenrpc: [
                ("xenrpc spin", &mut spin_client, spin_server.pid()),
                (
                    "xenrpc blocking",
                    &mut blocking_client,
                    blocking_server.pid(),
                ),
            ],
            peers: &mut peers,
            floor: &floor,
            floor_pid: floor_child.id(),
        },
    )?);

    rows.extend(attackers::rows(budget.attack_time)?);
    if latency_only {
        println!("\n{}", render(&rows));
        print_aims(&rows);
        println!("{}", attackers::NOTE);
        return Ok(());
    }

    println!("throughput: UDS floor ...");
    let mut baselines: Vec<(String, Vec<f64>)> = Vec::new();
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
    baselines.push(("UDS echo".into(), uds_echo));
    drop(floor);
    floor_child.wait_or_kill(Duration::from_secs(5))?;

    for (server, client) in &mut peers {
        let label = server.peer.name();
        println!("throughput: {label} ...");
        let mut rates = Vec::new();
        for &size in &SIZES {
            let (calls, elapsed, cpu) =
                peers::echo_loop(server, client.as_mut(), size, budget.throughput_time)?;
            let rate = calls as f64 / elapsed.as_secs_f64();
            let name = format!("echo {}, 1 client", size_label(size));
            let mut row = throughput_row(label, name, size, rate, cpu);
            row.ratios
                .push((rate / baselines[0].1[rates.len()], "UDS echo".into()));
            rows.push(row);
            rates.push(rate);
        }
        baselines.push((label.to_string(), rates));
    }
    drop(peers);

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
        // One client in this process, one call at a time: beside every baseline.
        for (i, &size) in SIZES.iter().enumerate() {
            let (calls, elapsed, cpu) =
                echo_loop(client, size, budget.throughput_time, Some(server.pid()))?;
            let rate = calls as f64 / elapsed.as_secs_f64();
            let name = format!("echo {}, 1 client", size_label(size));
            let mut row = throughput_row(section, name, size, rate, cpu);
            for (label, rates) in &baselines {
                row.ratios.push((rate / rates[i], label.clone()));
            }
            rows.push(row);
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
            let mut row = throughput_row(section, name, size, rate, cpu);
            row.ratios
                .push((rate / baselines[0].1[i], "UDS echo".into()));
            rows.push(row);
        }
        drop(pipelined);
        // Four client processes at once.
        for (i, &size) in SIZES.iter().enumerate() {
            let (rate, cpu) = multi_client_echo(server, spin, size, 4, budget.throughput_time)?;
            let name = format!("echo {}, 4 clients", size_label(size));
            let mut row = throughput_row(section, name, size, rate, cpu);
            row.ratios
                .push((rate / baselines[0].1[i], "UDS echo".into()));
            rows.push(row);
        }
    }
    drop(spin_client);
    drop(blocking_client);
    spin_server.stop()?;
    blocking_server.stop()?;

    println!("\n{}", render(&rows));
    print_aims(&rows);
    println!(
        "Latency rows: medians over {} alternating rounds; ratios are medians of per-round ratios. \
The limit is one cache line bounced between the two CPUs, timed in batches of 1,000, and \
xenrpc spin's null call in batches of {SPIN_BATCH} (so their p99 is a batch's; the \
\"{NULL_CALL_EACH}\" row times every call). MB/s counts payload bytes per direction. CPU/call = client + server \
CPU time (from /proc/<pid>/task/*/schedstat) per call, spinning included. Ratios: latency = \
xenrpc p50 / the other's p50 (lower is better); throughput = xenrpc calls/s / the other's at \
the same size, 1 client (higher is better); paced = CPU per call / SunRPC TCP's (lower is \
better).",
        budget.rounds
    );
    println!("{}", attackers::NOTE);
    write_outputs(&rows);
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Spin null calls per timed batch: a clock read costs about a tenth of one.
const SPIN_BATCH: u64 = 100;

/// The aims of the spin path (issue: a faster spin path), each met or not.
fn print_aims(rows: &[Row]) {
    let ratio_to = |section: &str, name: &str, label: &str| {
        rows.iter()
            .find(|r| r.section == section && r.name == name)
            .and_then(|r| r.ratios.iter().find(|(_, l)| l == label))
            .map(|(ratio, _)| *ratio)
    };
    let print_aim = |what: &str, ratio: Option<f64>, aim: f64| match ratio {
        Some(r) => println!(
            "aim: {what}: {r:.3}x, {}",
            if r <= aim { "met" } else { "NOT met" }
        ),
        None => println!("aim: {what}: not measured"),
    };
    print_aim(
        "xenrpc spin null-call p50 within 3x the physical limit",
        ratio_to("xenrpc spin", NULL_CALL, "limit"),
        3.0,
    );
    print_aim(
        "xenrpc blocking null-call p50 within 1.2x the raw eventfd round trip",
        ratio_to("xenrpc blocking", NULL_CALL, "eventfd RTT"),
        1.2,
    );
    for placement in paced::Placement::ALL {
        let section = placement.section();
        let to_sunrpc = |name| ratio_to(section, name, paced::SUNRPC_CPU);
        for mode in ["xenrpc blocking", "xenrpc spin"] {
            print_aim(
                &format!(
                    "{mode} CPU per paced call within 1/5 of SunRPC TCP's ({})",
                    placement.label()
                ),
                to_sunrpc(mode),
                0.2,
            );
            if let Some(net) = ratio_to(section, mode, paced::SUNRPC_CPU_NET) {
                println!("  (with the pacing alone taken out of both: {net:.3}x)");
            }
        }
        if let (Some(eventfd), Some(pacing)) =
            (to_sunrpc(EVENTFD_FLOOR), to_sunrpc(paced::PACING_ALONE))
        {
            println!(
                "  ({}: a raw eventfd round trip at this pace costs {eventfd:.3}x SunRPC TCP's \
                 CPU, the pacing alone {pacing:.3}x; no call whose both ends sleep between \
                 calls goes below the first)",
                placement.label()
            );
        }
    }
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

fn throughput_row(section: &'static str, name: String, size: usize, rate: f64, cpu: f64) -> Row {
    let mut row = Row::new(section, name);
    row.calls_per_s = Some(rate);
    row.mb_per_s = Some(rate * size as f64 / 1e6);
    row.cpu_ns_per_call = Some(cpu);
    row
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

/// Times `count` calls of `call` in batches of `per_batch` (each sample a batch's mean), after
/// a tenth as many as warm-up; returns the samples and CPU ns per call of this process and
/// `server` (xenrpc's and the peers' alike).
fn null_calls(
    server: u32,
    count: u64,
    per_batch: u64,
    mut call: impl FnMut() -> io::Result<()>,
) -> io::Result<(Vec<Duration>, f64)> {
    for _ in 0..count / 10 {
        call()?;
    }
    let per_batch = per_batch.max(1);
    let batches = (count / per_batch).max(1);
    let mut samples = Vec::with_capacity(batches as usize);
    let cpu_before = own_and_server_cpu(Some(server))?;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..per_batch {
            call()?;
        }
        samples.push(start.elapsed().div_f64(per_batch as f64));
    }
    let count = batches * per_batch;
    let cpu = own_and_server_cpu(Some(server))? - cpu_before;
    Ok((samples, cpu.as_nanos() as f64 / count as f64))
}

/// A xenrpc null call on `client`.
fn ping(client: &mut Client) -> impl FnMut() -> io::Result<()> + '_ {
    let ping = echo::client::ping(&());
    move || {
        client
            .call(&ping, CALL_TIMEOUT)
            .map(drop)
            .map_err(io::Error::other)
    }
}
