//! `xenrpc hostile ...`: a client that misbehaves on purpose, or plays by the rules greedily,
//! to check the service VM's defences (the `hostile` testbed scenario, audits). Each attack
//! reports what it did and whether the server answered it the way it must.

use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;

use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::Connection;
use xenrpc_client::xenstore::Xenstore;
use xenrpc_client::Error;
use xenrpc_proto::layout::ctrl;
use xenrpc_proto::services::{arith, echo, kv};
use xenrpc_proto::zerocopy::IntoBytes;
use xenrpc_proto::OolRef;

use crate::{bad, close, connect, connect_with, store, ConnArgs, Output, Result};

#[derive(Subcommand)]
pub enum Hostile {
    /// Connect, then raise the connection's event in a loop with no requests behind it, with a
    /// ping call after every BURST events, until the server closes the connection or SECONDS
    /// pass. Succeeds only if the server closed it.
    EventStorm {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 1000)]
        burst: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Connect, make one call, then publish a request producer index far beyond anything the
    /// ring holds and raise the event. Succeeds only if the server closes the connection.
    BadIndex {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Connect and send requests the server can read but must refuse (unknown service,
    /// unknown method, wrong version, malformed arguments, a deadline long past, a deadline one
    /// second ago on the server's clock as learned from its answers), then a good call on the
    /// same connection. Succeeds only if each got its status and the good call its
    /// answer.
    BadRequests {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Keep the ring full of one-way `echo.echo_ool` calls over windows of SIZE bytes each
    /// way (the most a call may move is 1 MiB) for SECONDS, with a ping call every 100 ms.
    /// Plays by the rules: succeeds only if the server kept serving the connection.
    Greedy {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 1 << 20)]
        size: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Store VALUE_SIZE-byte values under keys fill-0, fill-1, ... until the server answers
    /// Busy (at most MAX puts). Succeeds only if it did.
    KvFill {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 4096)]
        value_size: usize,
        #[arg(long, default_value_t = 100_000)]
        max: u32,
    },
    /// Connect, then rewrite this device's frontend `state` node Initialising / Initialised in
    /// a loop for SECONDS, the index page and event channel left valid: each Initialised
    /// invites the server to map the whole connection again.
    StateChurn {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Connect with a ping port and raise it BURST times between ping calls (never waiting
    /// for the bounces), until the server closes the connection or SECONDS pass. Succeeds only
    /// if the server closed it.
    PingFlood {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 1000)]
        burst: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Open, use (one ping) and close a connection COUNT times: each costs the server log lines.
    Reconnect {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
}

/// Runs one attack.
pub fn run(attack: Hostile) -> Result<Output> {
    match attack {
        Hostile::EventStorm {
            conn,
            burst,
            seconds,
        } => event_storm(&conn, burst, Duration::from_secs(seconds)),
        Hostile::BadIndex { conn } => bad_index(&conn),
        Hostile::BadRequests { conn } => bad_requests(&conn),
        Hostile::Greedy {
            conn,
            size,
            seconds,
        } => greedy(&conn, size, Duration::from_secs(seconds)),
        Hostile::KvFill {
            conn,
            value_size,
            max,
        } => kv_fill(&conn, value_size, max),
        Hostile::StateChurn { conn, seconds } => state_churn(&conn, Duration::from_secs(seconds)),
        Hostile::PingFlood {
            conn,
            burst,
            seconds,
        } => ping_flood(&conn, burst, Duration::from_secs(seconds)),
        Hostile::Reconnect { conn, count } => reconnect(&conn, count),
    }
}

/// Whether `e` says the server ended the connection (closed it or vanished).
fn server_ended(e: &Error) -> bool {
    matches!(e, Error::ServerClosed | Error::ServerGone(_))
}

/// `xenrpc hostile greedy`: see [`Hostile::Greedy`].
fn greedy(conn_args: &ConnArgs, size: u32, limit: Duration) -> Result<Output> {
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let data_len = c.data().len() as u32;
    if size == 0 || size > data_len / 2 {
        return Err(bad(format!(
            "--size {size} must be 1..={} (half the data region): raise --data-pages",
            data_len / 2
        )));
    }
    let call = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, size))
        .ool_result(OolRef::new(data_len / 2, size));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut pings = 0u64;
    let mut next_ping = start;
    let ended = loop {
        match c.submit_one_way(&call, usize::MAX) {
            Ok(n) => sent += n as u64,
            Err(e) if server_ended(&e) => break Some(e),
            Err(e) => return Err(e),
        }
        if Instant::now() >= next_ping {
            // The ring is kept full: the ping waits for a slot the server frees.
            match call_when_ring_has_room(&mut c, timeout) {
                Ok(()) => pings += 1,
                Err(e) if server_ended(&e) => break Some(e),
                Err(e) => return Err(e),
            }
            next_ping = Instant::now() + Duration::from_millis(100);
        }
        if start.elapsed() >= limit {
            break None;
        }
        std::thread::sleep(Duration::from_micros(50));
    };
    let secs = start.elapsed().as_secs_f64();
    let value = json!({"ok": ended.is_none(), "one_way_calls": sent, "bytes_each": size, "pings": pings, "seconds": secs});
    let text = match &ended {
        None => {
            close(c, conn_args)?;
            format!(
                "greedy: {sent} one-way calls of {size} bytes and {pings} pings in {secs:.1} s; \
                 the server kept serving the connection\n"
            )
        }
        Some(e) => format!(
            "greedy: {sent} one-way calls of {size} bytes and {pings} pings in {secs:.1} s; \
             then: {e}\n"
        ),
    };
    Ok(Output {
        text,
        value,
        ok: ended.is_none(),
    })
}

/// A ping call, retried while the ring is full (until `timeout`).
fn call_when_ring_has_room(c: &mut Connection<LinuxDevices>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match c.call(&echo::client::ping(&()), timeout) {
            Err(Error::Busy(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(50));
            }
            other => return other.map(|_| ()),
        }
    }
}

/// `xenrpc hostile kv-fill`: see [`Hostile::KvFill`].
fn kv_fill(conn_args: &ConnArgs, value_size: usize, max: u32) -> Result<Output> {
    use xenrpc_proto::Status;
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    if value_size == 0 || value_size > kv::MAX_VALUE_LEN || value_size > c.data().len() {
        return Err(bad(format!(
            "--value-size {value_size} must be 1..={}",
            kv::MAX_VALUE_LEN.min(c.data().len())
        )));
    }
    let value: Vec<u8> = (0..value_size).map(|i| b'a' + (i % 26) as u8).collect();
    c.data()
        .write(0, &value)
        .map_err(|_| bad("the value does not fit the data region"))?;
    let window = OolRef::new(0, value_size as u32);
    let mut stored = 0u32;
    let busy = loop {
        if stored >= max {
            break false;
        }
        let name = format!("fill-{stored}");
        let key = kv::Key::new(name.as_bytes()).ok_or_else(|| bad("key too long"))?;
        match c.call(&kv::client::put(&key).ool_args(window), timeout) {
            Ok(_) => stored += 1,
            Err(Error::Remote(Status::Busy)) => break true,
            Err(e) => return Err(e),
        }
    };
    close(c, conn_args)?;
    let text = if busy {
        format!("kv-fill: stored {stored} values of {value_size} bytes, then the server answered Busy\n")
    } else {
        format!("kv-fill: stored {stored} values of {value_size} bytes and was never refused\n")
    };
    Ok(Output {
        text,
        value: json!({"ok": busy, "stored": stored, "value_size": value_size, "busy": busy}),
        ok: busy,
    })
}

/// `xenrpc hostile state-churn`: see [`Hostile::StateChurn`].
fn state_churn(conn_args: &ConnArgs, limit: Duration) -> Result<Output> {
    let c = connect(conn_args)?;
    let state_path = format!("{}/state", c.info().frontend);
    let mut xs = store()?;
    let start = Instant::now();
    let mut writes = 0u64;
    while start.elapsed() < limit {
        for state in [b"1", b"3"] {
            xs.write(xenrpc_client::xenstore::NO_TX, &state_path, state)?;
            writes += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // The connection is whatever the churn left of it: close it the regular way (FE Closing,
    // then Closed) so the server unmaps before the pages go, whichever state it reached; a
    // server that had only offered the device does not acknowledge, which is fine here.
    let _ = c.close(Duration::from_secs(2));
    Ok(Output {
        text: format!("state churn: {writes} writes of the frontend state in {secs:.1} s\n"),
        value: json!({"ok": true, "writes": writes, "seconds": secs}),
        ok: true,
    })
}

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
    raise: impl Fn(&Connection<LinuxDevices>) -> Result<()>,
) -> Result<Flood> {
    let timeout = Duration::from_millis(conn_args.timeout_ms);
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
            Err(e) => return Err(e),
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

/// `xenrpc hostile ping-flood`: see [`Hostile::PingFlood`].
fn ping_flood(conn_args: &ConnArgs, burst: u32, limit: Duration) -> Result<Output> {
    let mut c = connect_with(conn_args, true)?;
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

/// `xenrpc hostile reconnect`: see [`Hostile::Reconnect`].
fn reconnect(conn_args: &ConnArgs, count: u32) -> Result<Output> {
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let start = Instant::now();
    for _ in 0..count {
        let mut c = connect(conn_args)?;
        c.call(&echo::client::ping(&()), timeout)?;
        close(c, conn_args)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Output {
        text: format!("reconnect: {count} connections opened, used and closed in {secs:.1} s\n"),
        value: json!({"ok": true, "connections": count, "seconds": secs}),
        ok: true,
    })
}

/// `xenrpc hostile event-storm`: see [`Hostile::EventStorm`].
fn event_storm(conn_args: &ConnArgs, burst: u32, limit: Duration) -> Result<Output> {
    let mut c = connect(conn_args)?;
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

/// `xenrpc hostile bad-index`: see [`Hostile::BadIndex`].
fn bad_index(conn_args: &ConnArgs) -> Result<Output> {
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    c.call(&echo::client::ping(&()), timeout)?;
    let ring = c.ring_for_hostile_tests();
    let req_prod = ring
        .load_u32(ctrl::REQ_PROD, std::sync::atomic::Ordering::Acquire)
        .map_err(|_| bad("the ring has no control page"))?;
    let bogus = req_prod.wrapping_add(100_000);
    ring.store_u32(ctrl::REQ_PROD, bogus, std::sync::atomic::Ordering::Release)
        .map_err(|_| bad("the ring has no control page"))?;
    c.raise_event_without_request()?;
    // The server answers a broken ring by closing: watch its state in xenstore (the ring is
    // ours to have broken, so no call can tell).
    let state_path = format!("{}/state", c.info().backend);
    let mut xs = store()?;
    let deadline = Instant::now() + timeout;
    let closed = loop {
        let state = xenrpc_client::xenstore::read_text(
            xs.as_mut(),
            xenrpc_client::xenstore::NO_TX,
            &state_path,
        )?;
        if state.as_deref() == Some("6") {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = if closed {
        format!("published req_prod {bogus} (was {req_prod}); the server closed the connection\n")
    } else {
        format!(
            "published req_prod {bogus} (was {req_prod}); the server still had the connection \
             open after {:.1} s\n",
            timeout.as_secs_f64()
        )
    };
    Ok(Output {
        text,
        value: json!({"ok": closed, "req_prod": req_prod, "published": bogus, "server_closed": closed}),
        ok: closed,
    })
}

/// The status a call got: `Ok`, or the one the server answered; any other failure is an error.
fn status_of<T>(result: Result<T>) -> Result<xenrpc_proto::Status> {
    match result {
        Ok(_) => Ok(xenrpc_proto::Status::Ok),
        Err(Error::Remote(status)) => Ok(status),
        Err(e) => Err(e),
    }
}

/// `xenrpc hostile bad-requests`: see [`Hostile::BadRequests`].
fn bad_requests(conn_args: &ConnArgs) -> Result<Output> {
    use xenrpc_proto::{Status, TypedCall};
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let operands = arith::Operands { a: 40, b: 2 };
    let args = operands.as_bytes();
    let cases: [(&str, TypedCall<'_, ()>, Status); 5] = [
        (
            "unknown service",
            TypedCall::new(0xdead, 1, 1, &[]),
            Status::UnknownService,
        ),
        (
            "unknown method",
            TypedCall::new(echo::SERVICE_ID, 999, echo::VERSION, &[]),
            Status::UnknownMethod,
        ),
        (
            "wrong version",
            TypedCall::new(
                arith::SERVICE_ID,
                arith::methods::add,
                arith::VERSION + 1,
                args,
            ),
            Status::VersionMismatch,
        ),
        (
            "arguments of the wrong size",
            TypedCall::new(
                arith::SERVICE_ID,
                arith::methods::add,
                arith::VERSION,
                &args[..3],
            ),
            Status::BadArguments,
        ),
        (
            "deadline long past (1 ns of Xen system time)",
            TypedCall::new(echo::SERVICE_ID, echo::methods::ping, echo::VERSION, &[])
                .deadline_ns(1),
            Status::DeadlineExceeded,
        ),
    ];
    let mut text = String::new();
    let mut all_right = true;
    let mut rows = Vec::new();
    for (what, call, want) in cases {
        let got = status_of(c.call(&call, timeout))?;
        let right = got == want;
        all_right &= right;
        text += &format!(
            "{what}: server answered {got:?}{}\n",
            if right { "" } else { " (expected otherwise)" }
        );
        rows.push(
            json!({"case": what, "status": format!("{got:?}"), "expected": format!("{want:?}")}),
        );
    }
    // The calls above taught the client the server's clock: a deadline it derives for one
    // second ago must be refused there, which it is only if the estimate is within that second.
    let derived = c
        .server_deadline(Instant::now() - Duration::from_secs(1))
        .ok_or_else(|| {
            Error::Protocol("no estimate of the server's clock after 5 answers".into())
        })?;
    let late = echo::client::ping(&()).deadline_ns(derived);
    let got = status_of(c.call(&late, timeout))?;
    all_right &= got == Status::DeadlineExceeded;
    text +=
        &format!("deadline learned from the server's clock, 1 s ago: server answered {got:?}\n");
    rows.push(json!({"case": "learned deadline 1 s ago", "status": format!("{got:?}"), "expected": "DeadlineExceeded"}));
    let sum = c.call(&arith::client::add(&operands), timeout)?.value.value;
    all_right &= sum == 42;
    text += &format!("then arith.add 40 2 on the same connection: {sum}\n");
    close(c, conn_args)?;
    Ok(Output {
        text,
        value: json!({"ok": all_right, "cases": rows, "good_call": sum}),
        ok: all_right,
    })
}
