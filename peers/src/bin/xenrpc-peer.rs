//! `xenrpc-peer`: the peers as programs, for benchmarks that run them in other machines or
//! guests (the testbed's `bench-guest`: a Linux server guest serves, a client guest measures).
//!
//! ```text
//! xenrpc-peer serve sunrpc-tcp|grpc ADDRESS      (e.g. 0.0.0.0:7001)
//! xenrpc-peer serve sunrpc-unix PATH
//! xenrpc-peer bench sunrpc-tcp|grpc ADDRESS [--calls N] [--size BYTES] [--in-flight K]
//! xenrpc-peer bench sunrpc-unix PATH [...]
//! ```
//!
//! `bench` makes N calls (`null` when BYTES is 0, else `echo` of BYTES, every answer checked)
//! over K connections at once, one call in flight on each, and prints one JSON object with the
//! figures `xenrpc --json bench` prints (`latency_us`, `calls_per_second`,
//! `mb_per_second_each_way`). The clock is read once per call (the end of one call is the start
//! of the next): in a PV guest every read is a system call. Any failure or wrong answer ends
//! it with a message and exit status 1.

use std::io;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use xenrpc_peers::{System, MAX_ECHO};

const USAGE: &str = "usage: xenrpc-peer serve sunrpc-tcp|sunrpc-unix|grpc ADDRESS\n       \
xenrpc-peer bench sunrpc-tcp|sunrpc-unix|grpc ADDRESS [--calls N] [--size BYTES] [--in-flight K]";

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
                let payload: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
                let mut answer = Vec::with_capacity(size);
                let mut latencies = Vec::with_capacity(calls as usize);
                start_line.wait();
                let mut last = Instant::now();
                for _ in 0..calls {
                    if size == 0 {
                        client.null()?;
                    } else {
                        client.echo(&payload, &mut answer)?;
                        if answer != payload {
                            return Err(io::Error::other(format!(
                                "{} echo of {size} bytes answered {} different bytes",
                                system.name(),
                                answer.len()
                            )));
                        }
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
    let seconds = started.elapsed().as_secs_f64();
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
