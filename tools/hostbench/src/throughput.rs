//! The throughput runs: one client echoing payloads one call at a time or pipelined, and
//! several client processes at once.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::stats::process_cpu_time;
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::services::echo;
use xenrpc_proto::OolRef;

use crate::{own_and_server_cpu, BenchServer, CALL_TIMEOUT, DATA_LEN, MAX_PAYLOAD, PIPELINE_DEPTH};

/// Echoes `size` bytes out of line for `duration`, one call at a time. The payload is written
/// into the data region once, as an application building its data in place would; each call
/// then moves nothing but the request slot, and the handler writes the result straight into
/// the result window. The last result is checked. Returns (calls, elapsed, CPU ns per call).
pub fn echo_loop(
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
pub fn echo_pipelined(
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
pub fn client_role(args: &[String]) -> io::Result<()> {
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
pub fn multi_client_echo(
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
