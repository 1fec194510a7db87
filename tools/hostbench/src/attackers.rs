//! The fairness rows: an honest client's null calls alone, then beside each attacker of
//! `xenrpc_host::attack` (each its own process on the server's CPU, against the same fresh
//! spin-mode server), with the ratio of each p50 (and p99) to the figure alone from the same
//! run.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xenrpc_host::attack::Attack;
use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::process::ChildGuard;
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::services::echo;

use crate::latency::{latency, Latency};
use crate::{spawn_piped, BenchServer, Row, CALL_TIMEOUT};

pub const SECTION: &str = "honest client under attack (spin)";
/// How to read the rows (printed under the table).
pub const NOTE: &str = "Attack rows: one honest client's null calls, one at a time, alone and \
then beside each attacker (its own process, pinned to the server's CPU so the honest client \
keeps its own; the attacker's CPU time is taken from the server, so part of a slowdown is CPU \
sharing); ratio = p50 / p50 alone (p99 / p99 alone in brackets), same run. An attacker the \
server cut off (storm guard) is marked.";
/// The name of the row measured without an attacker.
pub const ALONE: &str = "null call, alone";

/// Attacker process role: `--role-attacker KIND SOCKET`; prints `started` once its first round
/// went through and `dropped` if the server cuts it off. Runs until killed.
pub fn attacker_role(args: &[String]) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: --role-attacker KIND SOCKET",
        )
    };
    let [kind, socket] = args else {
        return Err(bad());
    };
    let attack = Attack::parse(kind).ok_or_else(bad)?;
    // Beside the server: the honest client's CPU stays its own.
    xenrpc_host::process::pin_to_cpu(crate::SERVER_CPU);
    let started = || {
        println!("started");
        let _ = io::stdout().flush();
    };
    if attack
        .run(Path::new(socket), started, || true)
        .map_err(io::Error::other)?
    {
        println!("dropped");
    }
    Ok(())
}

/// A running attacker process and the lines it printed.
struct Attacker {
    _child: ChildGuard,
    lines: mpsc::Receiver<String>,
}

impl Attacker {
    /// Spawns one and waits until it is attacking.
    fn start(socket: &Path, attack: Attack) -> io::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--role-attacker", attack.name()]).arg(socket);
        let (child, stdout) = spawn_piped(command)?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line == "started" || line == "dropped" => {}
            other => {
                return Err(io::Error::other(format!(
                    "attacker {} did not start: {other:?}",
                    attack.name()
                )))
            }
        }
        Ok(Self {
            _child: child,
            lines,
        })
    }

    /// Whether the server cut it off (so far).
    fn dropped(&self) -> bool {
        self.lines.try_iter().any(|line| line == "dropped")
    }
}

/// One null call after another for `duration`; the latency and the calls per second.
fn honest_calls(client: &mut Client, duration: Duration) -> io::Result<(Latency, f64)> {
    let ping = echo::client::ping(&());
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let call_start = Instant::now();
        client.call(&ping, CALL_TIMEOUT).map_err(io::Error::other)?;
        samples.push(call_start.elapsed());
    }
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    Ok((latency(&mut samples), rate))
}

fn row(name: String, (measured, rate): (Latency, f64), alone: &Latency) -> Row {
    let mut row = Row::new(SECTION, name);
    row.p50_ns = Some(measured.p50);
    row.p99_ns = Some(measured.p99);
    row.calls_per_s = Some(rate);
    row.ratios.push((
        measured.p50 / alone.p50,
        format!("alone (p99 {:.2}x)", measured.p99 / alone.p99),
    ));
    row
}

/// Measures the honest client alone and beside each attacker, `duration` each.
pub fn rows(duration: Duration) -> io::Result<Vec<Row>> {
    let server = BenchServer::start("attack", SpinPolicy::DEFAULT)?;
    let mut honest = Client::connect(
        &server.socket,
        ClientOptions {
            max_in_flight: 1,
            ..ClientOptions::default()
        },
    )
    .map_err(io::Error::other)?;
    honest_calls(&mut honest, duration / 10)?;
    let alone = honest_calls(&mut honest, duration)?;
    let alone_latency = alone.0;
    let mut rows = vec![row(ALONE.into(), alone, &alone_latency)];
    for attack in Attack::ALL {
        println!("attack: {} ...", attack.describe());
        let attacker = Attacker::start(&server.socket, attack)?;
        let measured = honest_calls(&mut honest, duration)?;
        let cut_off = if attacker.dropped() { " (cut off)" } else { "" };
        let name = format!("null call + {}{cut_off}", attack.describe());
        rows.push(row(name, measured, &alone_latency));
    }
    server.stop()?;
    Ok(rows)
}
