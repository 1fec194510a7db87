//! Greedy clients that play by the protocol's rules, for the fairness test and the benchmark:
//! each connects like any client and then takes all it can.
//!
//! - [`Attack::GreedyOneWay`] keeps its ring full of one-way `echo.echo_ool` calls whose windows
//!   make every call as costly as a call may be (`MAX_REQUEST_COST`).
//! - [`Attack::FullRing`] keeps as many maximal two-way calls in flight as it may.
//! - [`Attack::EventStorm`] makes no calls and raises its eventfd in a tight loop.

use std::path::Path;
use std::time::Duration;

use xenrpc_proto::services::echo;
use xenrpc_proto::{CallError, OolRef, TypedCall, MAX_CALL_COPY, MAX_IN_FLIGHT};
use zerocopy::FromBytes;

use crate::client::{Client, ClientError, ClientOptions};
use crate::event::EventFd;
use crate::link::Link;

/// The data region an attacker asks for: an argument and a result window of `MAX_CALL_COPY`.
pub const ATTACK_DATA_LEN: usize = 2 * MAX_CALL_COPY;

/// A greedy client's way of taking all it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Keeps its ring full of maximal one-way `echo.echo_ool` calls.
    GreedyOneWay,
    /// Keeps as many maximal two-way calls in flight as it may.
    FullRing,
    /// Makes no calls and raises its eventfd in a tight loop.
    EventStorm,
}

impl Attack {
    /// Every attack, in table order.
    pub const ALL: [Attack; 3] = [Attack::GreedyOneWay, Attack::FullRing, Attack::EventStorm];

    /// A short name (command lines, CSV).
    pub fn name(self) -> &'static str {
        match self {
            Attack::GreedyOneWay => "greedy-one-way",
            Attack::FullRing => "full-ring",
            Attack::EventStorm => "event-storm",
        }
    }

    /// What it does, for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Attack::GreedyOneWay => "greedy one-way 1 MiB",
            Attack::FullRing => "full ring of 1 MiB",
            Attack::EventStorm => "eventfd storm",
        }
    }

    /// The attack whose [`Self::name`] is `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|attack| attack.name() == name)
    }

    /// Connects to `path` and attacks until `keep_going` says stop (asked once per round) or
    /// the server drops the connection (`Ok(true)`: dropped). `started` is called once the
    /// first round went through.
    pub fn run(
        self,
        path: &Path,
        mut started: impl FnMut(),
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<bool, ClientError> {
        let options = ClientOptions {
            data_len: ATTACK_DATA_LEN,
            max_in_flight: MAX_IN_FLIGHT,
            ..ClientOptions::default()
        };
        let link = Link::connect(path, options.data_len, options.setup_timeout)?;
        let wakeups = EventFd::from_received(link.to_server.fd().try_clone_to_owned()?)?;
        let mut client = Client::from_link(link, options)?;
        // Windows as large as a call may use: the echo moves MAX_CALL_COPY bytes.
        let echo = echo::client::echo_ool(&())
            .ool_args(OolRef::new(0, MAX_CALL_COPY as u32))
            .ool_result(OolRef::new(MAX_CALL_COPY as u32, MAX_CALL_COPY as u32));
        let mut first = true;
        while keep_going() {
            let round = match self {
                Attack::GreedyOneWay => fill_one_way(&mut client, echo),
                Attack::FullRing => full_ring(&mut client, &echo),
                Attack::EventStorm => storm(&mut client, &wakeups),
            };
            match round {
                Ok(()) => {}
                Err(ClientError::ServerGone) => return Ok(true),
                Err(e) => return Err(e),
            }
            if std::mem::take(&mut first) {
                started();
            }
        }
        Ok(false)
    }
}

/// Tops the ring up with one-way calls and publishes them; waits a little when it is full.
fn fill_one_way<R: Copy>(client: &mut Client, echo: TypedCall<'_, R>) -> Result<(), ClientError> {
    loop {
        match client.start_one_way(echo) {
            Ok(_) => {}
            Err(ClientError::Call(CallError::RingFull)) => break,
            Err(e) => return Err(e),
        }
    }
    client.flush();
    if client.server_gone() {
        return Err(ClientError::ServerGone);
    }
    std::thread::sleep(Duration::from_micros(20));
    Ok(())
}

/// Starts as many two-way calls as may be in flight, publishes them at once, collects them.
fn full_ring<R: FromBytes>(
    client: &mut Client,
    echo: &TypedCall<'_, R>,
) -> Result<(), ClientError> {
    let mut pending = Vec::with_capacity(client.max_in_flight());
    while pending.len() < client.max_in_flight() {
        match client.start(echo) {
            Ok(call) => pending.push(call),
            Err(ClientError::Call(CallError::RingFull)) => break,
            Err(e) => return Err(e),
        }
    }
    client.flush();
    for call in pending {
        client.finish(call, Some(Duration::from_secs(10)))?;
    }
    Ok(())
}

/// Raises the server's eventfd many times with no request behind it.
fn storm(client: &mut Client, wakeups: &EventFd) -> Result<(), ClientError> {
    for _ in 0..1024 {
        wakeups.signal()?;
    }
    if client.server_gone() {
        return Err(ClientError::ServerGone);
    }
    Ok(())
}
