//! `xenrpc-peer`: the peers as programs, for benchmarks that run them in other machines or
//! guests (the testbed's `bench-guest`: a Linux server guest serves, a client guest measures).
//!
//! ```text
//! xenrpc-peer serve sunrpc-tcp|grpc ADDRESS      (e.g. 0.0.0.0:7001)
//! xenrpc-peer serve sunrpc-unix PATH
//! xenrpc-peer serve vchan CLIENT-DOMID[:XENSTORE-PATH]   (default data/xenrpc-vchan)
//! xenrpc-peer bench sunrpc-tcp|grpc ADDRESS [--calls N] [--size BYTES] [--in-flight K]
//! xenrpc-peer bench sunrpc-unix PATH [...]
//! xenrpc-peer bench vchan SERVER-DOMID[:XENSTORE-PATH] [...]
//! ```
//!
//! `bench` makes N calls (`null` when BYTES is 0, else `echo` of BYTES, every answer checked)
//! and prints one JSON object with the figures `xenrpc --json bench` prints (`latency_us`,
//! `calls_per_second`, `mb_per_second_each_way`). SunRPC and gRPC keep K calls in flight on K
//! connections, one on each; the clock is read once per call (the end of one call is the start
//! of the next): in a PV guest every read is a system call. libxenvchan keeps them on its one
//! vchan, as xenrpc does on its one ring: K requests written, then a new one after each answer
//! (answers come in order), the clock read once per answer; each call's latency runs from the
//! clock reading its request was written after. Any failure or wrong answer ends it with a
//! message and exit status 1.

use std::collections::VecDeque;
use std::io;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use xenrpc_peers::vchan::{self, VchanClient};
use xenrpc_peers::{System, MAX_ECHO};

const USAGE: &str = "usage: xenrpc-peer serve sunrpc-tcp|sunrpc-unix|grpc|vchan ADDRESS\n       \
xenrpc-peer bench sunrpc-tcp|sunrpc-unix|grpc|vchan ADDRESS [--calls N] [--size BYTES] \
[--in-flight K]\n(vchan: ADDRESS is DOMID[:XENSTORE-PATH], the other domain)";

/// Most connections a bench opens.
const MAX_IN_FLIGHT: usize = 64;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => Err(invalid(USAGE.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenrpc-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &[String]) -> io::Result<()> {
    let [system, address] = args else {
        return Err(invalid(USAGE.to_string()));
    };
    let system = parse_system(system)?;
    system.serve(address, |bound| {
        println!("xenrpc-peer: {} serving on {bound}", system.name())
    })?;
    Ok(())
}

fn parse_system(word: &str) -> io::Result<System> {
    System::from_arg(word).ok_or_else(|| invalid(format!("no such peer {word:?}\n{USAGE}")))
}

struct Plan {
    system: System,
    address: String,
    calls: u64,
    size: usize,
    in_flight: usize,
}

fn parse_plan(args: &[String]) -> io::Result<Plan> {
    let [system, address, options @ ..] = args else {
        return Err(invalid(USAGE.to_string()));
    };
    let mut plan = Plan {
        system: parse_system(system)?,
        address: address.clone(),
        calls: 1000,
        size: 0,
        in_flight: 1,
    };
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options
            .next()
            .ok_or_else(|| invalid(format!("{option} wants a value")))?;
        let number = |what: &str| -> io::Result<u64> {
            value
                .parse()
                .map_err(|_| invalid(format!("{what} {value:?} is not a number")))
        };
        match option.as_str() {
            "--calls" => plan.calls = number("--calls")?.max(1),
            "--size" => plan.size = number("--size")? as usize,
            "--in-flight" => plan.in_flight = number("--in-flight")? as usize,
            other => return Err(invalid(format!("unknown option {other}\n{USAGE}"))),
        }
    }
    if plan.size > MAX_ECHO {
        return Err(invalid(format!(
            "--size {} is more than the {MAX_ECHO} bytes an echo carries",
            plan.size
        )));
    }
    if !(1..=MAX_IN_FLIGHT).contains(&plan.in_flight) {
        return Err(invalid(format!("--in-flight must be 1 to {MAX_IN_FLIGHT}")));
    }
    Ok(plan)
}

fn bench(args: &[String]) -> io::Result<()> {
    let plan = parse_plan(args)?;
    let (mut latencies, seconds) = if plan.system == System::Vchan {
        window(&plan)?
    } else {
        connections(&plan)?
    };
    let rate = plan.calls as f64 / seconds;
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[i].as_secs_f64() * 1e6
    };
    println!(
        "{{\"ok\":true,\"system\":\"{}\",\"calls\":{},\"in_flight\":{},\"size\":{},\
\"seconds\":{seconds:.6},\"calls_per_second\":{rate:.1},\"mb_per_second_each_way\":{:.3},\
\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}}}",
        plan.system.name(),
        plan.calls,
        plan.in_flight,
        plan.size,
        rate * plan.size as f64 / 1e6,
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// The bytes every echo of `size` on connection `i` sends (and must get back).
fn payload(size: usize, i: usize) -> Vec<u8> {
    (0..size).map(|b| (b * 31 + i) as u8).collect()
}

/// An error if `answer` is not `payload`.
fn check(system: System, payload: &[u8], answer: &[u8]) -> io::Result<()> {
    if answer == payload {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{} echo of {} bytes answered {} different bytes",
        system.name(),
        payload.len(),
        answer.len()
    )))
}

/// The plan's calls on `in_flight` connections at once, one call in flight on each: every
/// call's latency, and the seconds they all took.
fn connections(plan: &Plan) -> io::Result<(Vec<Duration>, f64)> {
    let clients = (0..plan.in_flight)
        .map(|_| plan.system.connect(&plan.address))
        .collect::<io::Result<Vec<_>>>()?;
    let start_line = Arc::new(Barrier::new(plan.in_flight + 1));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            // The calls shared out as evenly as they go.
            let calls = plan.calls / plan.in_flight as u64
                + u64::from((i as u64) < plan.calls % plan.in_flight as u64);
            let (system, size, start_line) = (plan.system, plan.size, Arc::clone(&start_line));
            std::thread::spawn(move || -> io::Result<Vec<Duration>> {
                let payload = payload(size, i);
                let mut answer = Vec::with_capacity(size);
                let mut latencies = Vec::with_capacity(calls as usize);
                start_line.wait();
                let mut last = Instant::now();
                for _ in 0..calls {
                    if size == 0 {
                        client.null()?;
                    } else {
                        client.echo(&payload, &mut answer)?;
                        check(system, &payload, &answer)?;
                    }
                    let now = Instant::now();
                    latencies.push(now - last);
                    last = now;
                }
                Ok(latencies)
            })
        })
        .collect();
    start_line.wait();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(plan.calls as usize);
    for worker in workers {
        let done = worker
            .join()
            .map_err(|_| io::Error::other("a bench thread panicked"))?;
        latencies.extend(done?);
    }
    Ok((latencies, started.elapsed().as_secs_f64()))
}

/// The plan's calls on one libxenvchan vchan, `in_flight` of them in flight: every call's
/// latency, and the seconds they all took.
fn window(plan: &Plan) -> io::Result<(Vec<Duration>, f64)> {
    if !vchan::fits(plan.in_flight, plan.size) {
        return Err(invalid(format!(
            "{} echoes of {} bytes in flight do not fit libxenvchan's {}-byte rings",
            plan.in_flight,
            plan.size,
            vchan::RING
        )));
    }
    let (server, path) = vchan::parse_address(&plan.address)?;
    let mut client = VchanClient::connect(server, path)?;
    let payload = payload(plan.size, 0);
    let mut answer = Vec::with_capacity(plan.size);
    let mut latencies = Vec::with_capacity(plan.calls as usize);
    // When each call in flight was written, oldest first.
    let mut written: VecDeque<Instant> = VecDeque::with_capacity(plan.in_flight);
    let mut sent = 0;
    let started = Instant::now();
    let mut now = started;
    while (latencies.len() as u64) < plan.calls {
        while sent < plan.calls && written.len() < plan.in_flight {
            client.send(&payload)?;
            written.push_back(now);
            sent += 1;
        }
        client.receive(&mut answer)?;
        // An empty answer to a null call, the same bytes to an echo.
        check(plan.system, &payload, &answer)?;
        now = Instant::now();
        let t0 = written.pop_front().expect("a call is in flight");
        latencies.push(now - t0);
    }
    Ok((latencies, started.elapsed().as_secs_f64()))
}
