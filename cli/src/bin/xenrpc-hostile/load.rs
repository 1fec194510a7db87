//! Attacks that play by the rules, as greedily as the rules allow: the ring kept full of the
//! largest calls, kv filled to its quota, connections opened and closed in a loop.

use std::time::{Duration, Instant};

use serde_json::json;

use xenrpc_cli::conn::{self, ConnArgs};
use xenrpc_cli::error::bad;
use xenrpc_cli::{Output, Result};
use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::Connection;
use xenrpc_client::Error;
use xenrpc_proto::services::{echo, kv};
use xenrpc_proto::OolRef;

/// Whether `e` says the server ended the connection (closed it or vanished).
pub fn server_ended(e: &Error) -> bool {
    matches!(e, Error::ServerClosed | Error::ServerGone(_))
}

/// `xenrpc-hostile greedy` (`Hostile::Greedy`).
pub fn greedy(conn_args: &ConnArgs, size: u32, limit: Duration) -> Result<Output> {
    let mut c = conn::connect(conn_args)?;
    let timeout = conn_args.timeout();
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
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= next_ping {
            // The ring is kept full: the ping waits for a slot the server frees.
            match call_when_ring_has_room(&mut c, timeout) {
                Ok(()) => pings += 1,
                Err(e) if server_ended(&e) => break Some(e),
                Err(e) => return Err(e.into()),
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
            conn::close(c, conn_args)?;
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
fn call_when_ring_has_room(
    c: &mut Connection<LinuxDevices>,
    timeout: Duration,
) -> xenrpc_client::Result<()> {
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

/// `xenrpc-hostile kv-fill` (`Hostile::KvFill`).
pub fn kv_fill(conn_args: &ConnArgs, value_size: usize, max: u32) -> Result<Output> {
    use xenrpc_proto::Status;
    let mut c = conn::connect(conn_args)?;
    let timeout = conn_args.timeout();
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
            Err(e) => return Err(e.into()),
        }
    };
    conn::close(c, conn_args)?;
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

/// `xenrpc-hostile reconnect` (`Hostile::Reconnect`).
pub fn reconnect(conn_args: &ConnArgs, count: u32) -> Result<Output> {
    let timeout = conn_args.timeout();
    let start = Instant::now();
    for _ in 0..count {
        let mut c = conn::connect(conn_args)?;
        c.call(&echo::client::ping(&()), timeout)?;
        conn::close(c, conn_args)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Output {
        text: format!("reconnect: {count} connections opened, used and closed in {secs:.1} s\n"),
        value: json!({"ok": true, "connections": count, "seconds": secs}),
        ok: true,
    })
}
