//! Storm accounting from what a poll really did: only well-formed two-way calls
//! (`PollOutcome::earned`) earn a client spurious wake-ups; a wake-up that brought only
//! requests refused at their header, or only one-way calls, counts as spurious.

mod common;

use common::*;
use xenrpc_proto::layout::FLAG_ONE_WAY;
use xenrpc_proto::services::echo;
use xenrpc_proto::storm::{STORM_BASE_ALLOWANCE, STORM_PER_REQUEST_ALLOWANCE};
use xenrpc_proto::{EventStormGuard, RequestHeader, Status};

fn ping(call_id: u64, flags: u32) -> RequestHeader {
    RequestHeader {
        flags,
        ..RawClient::header(
            echo::SERVICE_ID,
            echo::methods::ping,
            echo::VERSION,
            call_id,
        )
    }
}

/// Unknown flag bits: refused before dispatch.
const BAD_FLAGS: u32 = 1 << 30;

#[test]
fn refused_and_one_way_requests_earn_no_allowance() {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect_raw(1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let mut guard = EventStormGuard::new(NOW);
    // Every wake-up brings a refused request and a one-way call: work, but nothing earned.
    for i in 0..u64::from(STORM_BASE_ALLOWANCE) {
        client.push(&ping(2 * i + 1, BAD_FLAGS), &[]);
        client.push(&ping(2 * i + 2, FLAG_ONE_WAY), &[]);
        let outcome = server.poll(&mut registry, &clock(), xenrpc_proto::PASS_BUDGET);
        assert_eq!((outcome.handled, outcome.earned), (2, 0), "wake-up {i}");
        let (response, _) = client.pop().expect("the refused request is answered");
        assert_eq!(
            Status::from_wire(response.status),
            Some(Status::BadArguments)
        );
        assert_eq!(
            guard.record_wakeup(NOW, outcome.earned),
            Ok(()),
            "wake-up {i}"
        );
    }
    let storm = guard.record_wakeup(NOW, 0).unwrap_err();
    assert_eq!(storm.earned, 0);
    assert_eq!(server.stats().one_way, u64::from(STORM_BASE_ALLOWANCE));
}

#[test]
fn well_formed_two_way_calls_earn_their_allowance() {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect_raw(1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let mut guard = EventStormGuard::new(NOW);
    let calls = u64::from(STORM_BASE_ALLOWANCE);
    for i in 0..calls {
        client.push(&ping(i + 1, 0), &[]);
        let outcome = server.poll(&mut registry, &clock(), xenrpc_proto::PASS_BUDGET);
        assert_eq!((outcome.handled, outcome.earned), (1, 1));
        client.pop().unwrap();
        guard.record_wakeup(NOW, outcome.earned).unwrap();
    }
    // The base allowance plus what the calls earned, all spurious, and still no storm.
    let allowance = STORM_BASE_ALLOWANCE + STORM_BASE_ALLOWANCE * STORM_PER_REQUEST_ALLOWANCE;
    for _ in 0..allowance {
        guard.record_wakeup(NOW, 0).unwrap();
    }
    assert!(guard.record_wakeup(NOW, 0).is_err());
}
