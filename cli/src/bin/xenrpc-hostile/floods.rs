//! Event floods: the connection's event raised with no request behind it (an event storm),
//! and the ping port raised without waiting for the bounces. The server must cut both off.

use std::time::{Duration, Instant};

use serde_json::json;

use xenrpc_cli::conn::{self, ConnArgs};
use xenrpc_cli::{Output, Result};
use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::Connection;
use xenrpc_client::Error;
use xenrpc_proto::services::echo;

use crate::load::server_ended;

/// What a flood did: events raised, ping calls answered, seconds, and the error that ended it
/// if the server closed the connection.
struct Flood {
    raised: u64,
    calls: u64,
    secs: f64,
    ended: Option<Error>,
}

/// Raises `raise` BURST times between ping calls until the server ends the connection or
/// `limit` passes.
fn flood(
    c: &mut Connection<LinuxDevices>,
    conn_args: &ConnArgs,
    burst: u32,
    limit: Duration,
    raise: impl Fn(&Connection<LinuxDevices>) -> xenrpc_client::Result<()>,
) -> Result<Flood> {
    let timeout = conn_args.timeout();
    let start = Instant::now();
    let (mut raised, mut calls) = (0u64, 0u64);
    let ended = loop {
        for _ in 0..burst.max(1) {
            raise(c)?;
        }
        raised += u64::from(burst.max(1));
        match c.call(&echo::client::ping(&()), timeout) {
            Ok(_) => calls += 1,
            Err(e) if server_ended(&e) => break Some(e),
            Err(e) => return Err(e.into()),
        }
        if start.elapsed() >= limit {
            break None;
        }
    };
    Ok(Flood {
        raised,
        calls,
        secs: start.elapsed().as_secs_f64(),
        ended,
    })
}

/// `xenrpc-hostile ping-flood` (`Hostile::PingFlood`).
pub fn ping_flood(conn_args: &ConnArgs, burst: u32, limit: Duration) -> Result<Output> {
    let mut c = conn::connect_with(conn_args, true)?;
    let f = flood(&mut c, conn_args, burst, limit, |c| {
        c.raise_ping_without_waiting()
    })?;
    let (raised, calls, secs) = (f.raised, f.calls, f.secs);
    let closed = f.ended.is_some();
    let text = match f.ended {
        Some(e) => {
            format!("ping flood: {raised} pings and {calls} calls in {secs:.1} s; then: {e}\n")
        }
        None => format!(
            "ping flood: {raised} pings and {calls} calls in {secs:.1} s; the server still \
             served the connection\n"
        ),
    };
    Ok(Output {
        text,
        value: json!({"ok": closed, "pings": raised, "calls": calls, "seconds": secs, "server_closed": closed}),
        ok: closed,
    })
}

/// `xenrpc-hostile event-storm` (`Hostile::EventStorm`).
pub fn event_storm(conn_args: &ConnArgs, burst: u32, limit: Duration) -> Result<Output> {
    let mut c = conn::connect(conn_args)?;
    let f = flood(&mut c, conn_args, burst, limit, |c| {
        c.raise_event_without_request()
    })?;
    let (raised, calls, secs, ended) = (f.raised, f.calls, f.secs, f.ended);
    let value = json!({"ok": ended.is_some(), "events": raised, "calls": calls, "seconds": secs, "server_closed": ended.is_some()});
    match ended {
        Some(e) => Ok(Output {
            text: format!(
                "event storm: {raised} events and {calls} calls in {secs:.1} s; then: {e}\n"
            ),
            value,
            ok: true,
        }),
        None => {
            drop(c);
            Ok(Output {
                text: format!(
                    "event storm: {raised} events and {calls} calls in {secs:.1} s; the server \
                     still served the connection\n"
                ),
                value,
                ok: false,
            })
        }
    }
}
