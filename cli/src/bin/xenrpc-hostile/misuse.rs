//! Breaking the rules the server must survive: requests it must refuse with their statuses, a
//! ring index no correct client writes, and a frontend state rewritten in a loop.

use std::time::{Duration, Instant};

use serde_json::json;

use xenrpc_cli::conn::{self, ConnArgs};
use xenrpc_cli::error::bad;
use xenrpc_cli::{CliError, Output, Result};
use xenrpc_client::xenstore::Xenstore;
use xenrpc_client::Error;
use xenrpc_proto::layout::ctrl;
use xenrpc_proto::services::{arith, echo};
use xenrpc_proto::zerocopy::IntoBytes;
use xenrpc_proto::{Status, TypedCall};

/// `xenrpc-hostile state-churn` (`Hostile::StateChurn`).
pub fn state_churn(conn_args: &ConnArgs, limit: Duration) -> Result<Output> {
    let c = conn::connect(conn_args)?;
    let state_path = format!("{}/state", c.info().frontend);
    let mut xs = conn::store()?;
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

/// Calls `bad-index` makes at most: the server reads the response consumer index again only
/// when the free response slots it counted run out, which is within a ring's worth of calls
/// (at most [`xenrpc_proto::layout::MAX_SLOTS`]).
const BAD_INDEX_MAX_CALLS: u32 = 2 * xenrpc_proto::layout::MAX_SLOTS;

/// `xenrpc-hostile bad-index` (`Hostile::BadIndex`).
pub fn bad_index(conn_args: &ConnArgs) -> Result<Output> {
    let mut c = conn::connect(conn_args)?;
    let timeout = conn_args.timeout();
    c.call(&echo::client::ping(&()), timeout)?;
    let order = std::sync::atomic::Ordering::Acquire;
    let no_control_page = |_| bad("the ring has no control page");
    let rsp_cons = c
        .ring_for_hostile_tests()
        .load_u32(ctrl::RSP_CONS, order)
        .map_err(no_control_page)?;
    let bogus = rsp_cons.wrapping_add(100_000);
    // Our client library stores its true index after every answer, so the lie is told again
    // before every call, until the server counts its free slots again and sees it.
    let mut calls = 0;
    while calls < BAD_INDEX_MAX_CALLS {
        c.ring_for_hostile_tests()
            .store_u32(ctrl::RSP_CONS, bogus, std::sync::atomic::Ordering::Release)
            .map_err(no_control_page)?;
        calls += 1;
        if c.call(&echo::client::ping(&()), timeout).is_err() {
            break;
        }
    }
    // The server answers a broken ring by closing: watch its state in xenstore (the ring is
    // ours to have broken, so no call can tell).
    let state_path = format!("{}/state", c.info().backend);
    let mut xs = conn::store()?;
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
    let told = format!("published rsp_cons {bogus} (was {rsp_cons}) before each of {calls} calls");
    let text = if closed {
        format!("{told}; the server closed the connection\n")
    } else {
        format!(
            "{told}; the server still had the connection open after {:.1} s\n",
            timeout.as_secs_f64()
        )
    };
    Ok(Output {
        text,
        value: json!({"ok": closed, "rsp_cons": rsp_cons, "published": bogus, "calls": calls,
                      "server_closed": closed}),
        ok: closed,
    })
}

/// The status a call got: `Ok`, or the one the server answered; any other failure is an error.
fn status_of<T>(result: xenrpc_client::Result<T>) -> Result<Status> {
    match result {
        Ok(_) => Ok(Status::Ok),
        Err(Error::Remote(status)) => Ok(status),
        Err(e) => Err(e.into()),
    }
}

/// `xenrpc-hostile bad-requests` (`Hostile::BadRequests`).
pub fn bad_requests(conn_args: &ConnArgs) -> Result<Output> {
    let mut c = conn::connect(conn_args)?;
    let timeout = conn_args.timeout();
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
            "{what}: server answered {}{}\n",
            got.ident(),
            if right { "" } else { " (expected otherwise)" }
        );
        rows.push(json!({"case": what, "status": got.ident(), "expected": want.ident()}));
    }
    // The calls above taught the client the server's clock: a deadline it derives for one
    // second ago must be refused there, which it is only if the estimate is within that second.
    let derived = c
        .server_deadline(Instant::now() - Duration::from_secs(1))
        .ok_or_else(|| {
            CliError::Protocol("no estimate of the server's clock after 5 answers".into())
        })?;
    let late = echo::client::ping(&()).deadline_ns(derived);
    let got = status_of(c.call(&late, timeout))?;
    all_right &= got == Status::DeadlineExceeded;
    text += &format!(
        "deadline learned from the server's clock, 1 s ago: server answered {}\n",
        got.ident()
    );
    rows.push(json!({"case": "learned deadline 1 s ago", "status": got.ident(), "expected": Status::DeadlineExceeded.ident()}));
    let sum = c.call(&arith::client::add(&operands), timeout)?.value.value;
    all_right &= sum == 42;
    text += &format!("then arith.add 40 2 on the same connection: {sum}\n");
    conn::close(c, conn_args)?;
    Ok(Output {
        text,
        value: json!({"ok": all_right, "cases": rows, "good_call": sum}),
        ok: all_right,
    })
}
