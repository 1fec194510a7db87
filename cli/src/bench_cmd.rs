//! `xenrpc bench`: round trips to the service VM over the Xen devices, many in flight (the host
//! transport has its own benchmark, `cargo xtask bench-host`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::json;

use xenrpc_cli::conn::{self, ConnArgs};
use xenrpc_cli::error::bad;
use xenrpc_cli::{CliError, Output, Result};
use xenrpc_proto::services::echo;
use xenrpc_proto::{OolRef, Pending};

use crate::measure::{client_stats_json, percentiles};

/// What to run.
pub struct Bench {
    pub calls: u32,
    pub in_flight: usize,
    /// Bytes of `echo_ool` each way; 0 for `echo.ping`.
    pub size: u32,
    /// First time raw event round trips on the ping port.
    pub event_ping: bool,
}

/// A call in flight.
enum Started {
    Ping(Pending<()>),
    Ool(Pending<echo::OolLen>),
}

pub fn run(conn_args: &ConnArgs, bench: &Bench) -> Result<Output> {
    let Bench {
        calls,
        size,
        event_ping,
        ..
    } = *bench;
    let mut c = conn::connect_with(conn_args, event_ping)?;
    let timeout = conn_args.timeout();
    let event_ping = if event_ping {
        let mut round_trips = Vec::with_capacity(calls as usize);
        for _ in 0..calls {
            let t0 = Instant::now();
            c.ping(t0 + timeout)?;
            round_trips.push(t0.elapsed());
        }
        Some(percentiles(&mut round_trips))
    } else {
        None
    };
    let in_flight = bench.in_flight.clamp(1, conn_args.max_in_flight());
    let data_len = c.data().len() as u32;
    // Each call in flight has its own pair of windows: `size` in, then `size` out.
    let slot = if size > 0 {
        let per_call = size
            .checked_mul(2)
            .filter(|b| *b as usize * in_flight <= data_len as usize)
            .ok_or_else(|| {
                bad(format!(
                    "{in_flight} calls of {size} bytes in and out do not fit the \
                     {data_len}-byte data region"
                ))
            })?;
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        for k in 0..in_flight {
            c.data()
                .write(k * per_call as usize, &payload)
                .map_err(|_| bad("payload outside the data region"))?;
        }
        per_call
    } else {
        0
    };
    let start = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(calls as usize);
    let mut queue: VecDeque<(Instant, usize, Started)> = VecDeque::new();
    let mut sent = 0u32;
    let mut free: Vec<usize> = (0..in_flight).rev().collect();
    while sent < calls || !queue.is_empty() {
        while sent < calls {
            let Some(k) = free.pop() else { break };
            let started = if size == 0 {
                Started::Ping(c.submit(&echo::client::ping(&()))?)
            } else {
                let base = k as u32 * slot;
                let call = echo::client::echo_ool(&())
                    .ool_args(OolRef::new(base, size))
                    .ool_result(OolRef::new(base + size, size));
                Started::Ool(c.submit(&call)?)
            };
            queue.push_back((Instant::now(), k, started));
            sent += 1;
        }
        let Some((t0, k, started)) = queue.pop_front() else {
            break;
        };
        let deadline = Instant::now() + timeout;
        match started {
            Started::Ping(p) => {
                c.wait(p, deadline)?;
            }
            Started::Ool(p) => {
                let reply = c.wait(p, deadline)?;
                if reply.value.len != size {
                    return Err(CliError::Protocol(format!(
                        "echo_ool returned {} bytes for {size}",
                        reply.value.len
                    )));
                }
            }
        }
        latencies.push(t0.elapsed());
        free.push(k);
    }
    let elapsed = start.elapsed();
    let s = c.stats();
    let lat = percentiles(&mut latencies);
    let rate = f64::from(calls) / elapsed.as_secs_f64();
    let what = if size == 0 {
        "echo.ping".to_string()
    } else {
        format!("echo.echo_ool {size} B")
    };
    // Each echo moves `size` bytes to the server and `size` bytes back.
    let mb_per_s = rate * f64::from(size) / 1e6;
    let mut text = format!(
        "{what}: {calls} calls, {in_flight} in flight, {:.3} s, {rate:.0} calls/s{}\n\
         latency µs: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}\n\
         notifications sent {}, spin hits {}, sleeps {}\n",
        elapsed.as_secs_f64(),
        if size > 0 {
            format!(", {mb_per_s:.1} MB/s each way")
        } else {
            String::new()
        },
        lat.p50,
        lat.p90,
        lat.p99,
        lat.max,
        s.notifications_sent,
        s.spin_hits,
        s.sleeps
    );
    if let Some(f) = &event_ping {
        text += &format!(
            "raw event round trip to the server (ping port, {calls} times) µs: \
             p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}\n\
             {what} p50 / raw event round trip p50 = {:.2}\n",
            f.p50,
            f.p90,
            f.p99,
            f.max,
            lat.p50 / f.p50.max(f64::MIN_POSITIVE)
        );
    }
    conn::close(c, conn_args)?;
    Ok(Output::ok(
        text,
        json!({
            "ok": true, "method": what, "calls": calls, "in_flight": in_flight,
            "seconds": elapsed.as_secs_f64(), "calls_per_second": rate,
            "mb_per_second_each_way": mb_per_s, "latency_us": lat,
            "event_ping_latency_us": event_ping, "client": client_stats_json(&s),
        }),
    ))
}
