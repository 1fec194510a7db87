//! `xenrpc bench`: round trips to the service VM over the Xen devices, many in flight (the host
//! transport has its own benchmark, `cargo xtask bench-host`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::json;

use xenrpc_cli::conn::{self, ConnArgs};
use xenrpc_cli::error::bad;
use xenrpc_cli::{CliError, Output, Result};
use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::Connection;
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

impl Started {
    /// Waits for the answer until `deadline` and checks it (an echo of `size` bytes).
    fn wait(self, c: &mut Connection<LinuxDevices>, deadline: Instant, size: u32) -> Result<()> {
        match self {
            Started::Ping(p) => c.wait(p, deadline).map(drop).map_err(Into::into),
            Started::Ool(p) => check_echo(c.wait(p, deadline)?.value.len, size),
        }
    }

    /// The answer if it is in (checked), else the call back.
    fn try_take(self, c: &mut Connection<LinuxDevices>, size: u32) -> Result<Option<Started>> {
        Ok(match self {
            Started::Ping(p) => c.try_take(p)?.err().map(Started::Ping),
            Started::Ool(p) => match c.try_take(p)? {
                Ok(reply) => {
                    check_echo(reply.value.len, size)?;
                    None
                }
                Err(p) => Some(Started::Ool(p)),
            },
        })
    }
}

fn check_echo(len: u32, size: u32) -> Result<()> {
    if len == size {
        Ok(())
    } else {
        Err(CliError::Protocol(format!(
            "echo_ool returned {len} bytes for {size}"
        )))
    }
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
    // The clock is read once per batch, not per call (in a PV guest each read is a system
    // call): once when the free slots are refilled (every call started then shares the
    // stamp), once when the oldest call's answer is in (every answer already there then
    // shares that one). Each call is published as it starts: publishing a refill's calls
    // together (Connection::start_at, then flush) filled the protected build's batches (8 calls
    // per user-mode entry instead of 4.4) but its calls/s with 8 in flight fell from 21,665 to
    // about 7,000 in the TCG testbed; likely because each side then finds nothing to do after
    // its half of the exchange, spins out its 50 µs and sleeps, so every batch pays two
    // wake-ups.
    let mut now = start;
    while sent < calls || !queue.is_empty() {
        while sent < calls {
            let Some(k) = free.pop() else { break };
            let started = if size == 0 {
                Started::Ping(c.submit_at(&echo::client::ping(&()), now)?)
            } else {
                let base = k as u32 * slot;
                let call = echo::client::echo_ool(&())
                    .ool_args(OolRef::new(base, size))
                    .ool_result(OolRef::new(base + size, size));
                Started::Ool(c.submit_at(&call, now)?)
            };
            queue.push_back((now, k, started));
            sent += 1;
        }
        let Some((t0, k, started)) = queue.pop_front() else {
            break;
        };
        started.wait(&mut c, now + timeout, size)?;
        now = Instant::now();
        latencies.push(now - t0);
        free.push(k);
        while let Some((t0, k, started)) = queue.pop_front() {
            match started.try_take(&mut c, size)? {
                None => {
                    latencies.push(now - t0);
                    free.push(k);
                }
                Some(still) => {
                    queue.push_front((t0, k, still));
                    break;
                }
            }
        }
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
