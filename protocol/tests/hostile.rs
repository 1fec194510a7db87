//! Ring state no correct peer writes: the side that sees it breaks the connection, counts it,
//! and never touches the ring again; nothing panics, nothing is written outside the regions.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use xenrpc_proto::layout::ctrl;
use xenrpc_proto::services::echo;
use xenrpc_proto::{
    CallError, ClientViolation, OolRef, PeerId, ResponseHeader, ServerConnection, SetupError,
    SharedRegion, Status, Violation,
};

fn ping_header(call_id: u64) -> xenrpc_proto::RequestHeader {
    RawClient::header(
        echo::SERVICE_ID,
        echo::methods::ping,
        echo::VERSION,
        call_id,
    )
}

#[test]
fn a_request_slot_tagged_with_another_index_holds_nothing() {
    let mem = Memory::new(16, 0);
    let mut raw = RawClient::new(&mem);
    let mut server =
        ServerConnection::attach(&mem.ring, &mem.data, mem.geometry, PeerId(1)).unwrap();
    let mut services = Services::new();
    let mut registry = services.registry();
    raw.push(&ping_header(1), &[]);
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 1);
    raw.push(&ping_header(2), &[]);
    // A later lap's index, an earlier lap's, the one after, garbage: nothing to take, nothing
    // broken, and the server may sleep.
    for seq in [17, 0u32.wrapping_sub(15), 2, 0xdead_beef] {
        raw.tag_request(1, seq);
        assert_eq!(
            server.poll(&mut registry, &clock(), 64).handled,
            0,
            "seq {seq}"
        );
    }
    assert!(server.broken().is_none());
    assert_eq!(server.stats().requests, 1);
    assert!(!server.prepare_to_sleep());
    // Re-tagging a slot already taken does not make the server take it again.
    raw.tag_request(0, 0);
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 0);
    // The right index publishes it.
    raw.tag_request(1, 1);
    assert!(server.has_requests());
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 1);
    assert_eq!((server.stats().requests, server.stats().violations), (2, 0));
    assert!(mem.guards_intact());
}

#[test]
fn server_breaks_on_bad_response_consumer_index() {
    let mem = Memory::new(16, 0);
    let mut raw = RawClient::new(&mem);
    let mut server =
        ServerConnection::attach(&mem.ring, &mem.data, mem.geometry, PeerId(1)).unwrap();
    let mut services = Services::new();
    let mut registry = services.registry();
    raw.set_rsp_cons(5); // ahead of the server's rsp_prod (0)
    raw.push(&ping_header(1), &[]);
    assert!(server.poll(&mut registry, &clock(), 64).broken);
    assert_eq!(
        server.broken(),
        Some(Violation::RspConsOutOfRange {
            rsp_cons: 5,
            rsp_prod: 0
        })
    );
    assert_eq!(server.stats().responses, 0);
}

#[test]
fn server_breaks_when_client_exceeds_in_flight_cap() {
    let mem = Memory::new(16, 0);
    let mut raw = RawClient::new(&mem);
    let mut server =
        ServerConnection::attach(&mem.ring, &mem.data, mem.geometry, PeerId(1)).unwrap();
    let mut services = Services::new();
    let mut registry = services.registry();
    for id in 0..16 {
        raw.push(&ping_header(id), &[]);
    }
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 16);
    // Sixteen responses unconsumed, and a seventeenth two-way call.
    raw.push(&ping_header(16), &[]);
    let outcome = server.poll(&mut registry, &clock(), 64);
    assert!(outcome.broken);
    assert_eq!(outcome.handled, 0);
    assert_eq!(server.broken(), Some(Violation::InFlightOverflow));
    // A one-way call would have been fine; a consumed response makes room: check the former
    // on a fresh connection.
    let mem = Memory::new(16, 0);
    let mut raw = RawClient::new(&mem);
    let mut server =
        ServerConnection::attach(&mem.ring, &mem.data, mem.geometry, PeerId(1)).unwrap();
    for id in 0..16 {
        raw.push(&ping_header(id), &[]);
    }
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 16);
    let mut one_way = ping_header(16);
    one_way.flags = xenrpc_proto::FLAG_ONE_WAY;
    raw.push(&one_way, &[]);
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 1);
    raw.pop().unwrap();
    raw.push(&ping_header(17), &[]);
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 1);
    assert!(server.broken().is_none());
}

#[test]
fn attach_checks_the_control_page() {
    let mem = Memory::new(16, 0);
    let ring = SharedRegion::new(&mem.ring).unwrap();
    let attach =
        |geometry| ServerConnection::attach(&mem.ring, &mem.data, geometry, PeerId(1)).err();
    assert_eq!(attach(mem.geometry), Some(SetupError::BadMagic(0)));
    RawClient::lay_out(&mem);
    assert_eq!(attach(mem.geometry), None);
    let bigger = xenrpc_proto::RingGeometry::new(32).unwrap();
    assert!(matches!(attach(bigger), Some(SetupError::Geometry(_))));
    ring.view()
        .store_u32(ctrl::SLOTS, 32, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        attach(mem.geometry),
        Some(SetupError::SlotCountMismatch {
            agreed: 16,
            found: 32
        })
    );
    ring.view()
        .store_u32(ctrl::LAYOUT_VERSION, 9, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        attach(mem.geometry),
        Some(SetupError::LayoutVersionMismatch(9))
    );
}

/// Sends one ping from a real client, then lets `corrupt` write a response as a hostile
/// server; returns what the client made of it.
fn client_sees(
    corrupt: impl FnOnce(&Memory, u64),
) -> (
    Result<Option<xenrpc_proto::Completion>, CallError>,
    Option<ClientViolation>,
) {
    let mem = Memory::new(16, 1);
    let (mut client, _server) = mem.connect(4, 1);
    let pending = client
        .start(&echo::client::ping(&()).ool_result(OolRef::new(0, 100)))
        .unwrap();
    client.publish();
    corrupt(&mem, pending.call_id());
    let result = client.poll_response();
    // Once broken, the client refuses to go on.
    if client.broken().is_some() {
        assert!(matches!(
            client.start(&echo::client::ping(&())),
            Err(CallError::Broken(_))
        ));
        assert!(matches!(client.poll_response(), Err(CallError::Broken(_))));
        assert!(client.prepare_to_wait());
    }
    assert!(mem.guards_intact());
    (result, client.broken())
}

fn response(call_id: u64, status: u32) -> ResponseHeader {
    ResponseHeader {
        call_id,
        status,
        ..ResponseHeader::default()
    }
}

#[test]
fn client_validates_responses() {
    let (ok, broken) = client_sees(|mem, id| write_raw_response(mem, 0, &response(id, 0), 0));
    assert!(matches!(ok, Ok(Some(c)) if c.status == Status::Ok) && broken.is_none());

    // Tagged with any other index (a later lap, an earlier one, garbage) a slot holds nothing.
    for seq in [16, 0u32.wrapping_sub(16), 1, 0xdead_beef] {
        let (seen, broken) =
            client_sees(|mem, id| write_raw_response(mem, 0, &response(id, 0), seq));
        assert!(matches!(seen, Ok(None)) && broken.is_none(), "seq {seq}");
    }

    let unknown = Status::COUNT as u32;
    let (_, broken) = client_sees(|mem, id| write_raw_response(mem, 0, &response(id, unknown), 0));
    assert_eq!(broken, Some(ClientViolation::UnknownStatus(unknown)));

    let (_, broken) = client_sees(|mem, id| {
        write_raw_response(
            mem,
            0,
            &ResponseHeader {
                inline_len: 193,
                ..response(id, 0)
            },
            0,
        )
    });
    assert_eq!(broken, Some(ClientViolation::InlineTooLong(193)));

    let (_, broken) = client_sees(|mem, id| write_raw_response(mem, 0, &response(id + 1, 0), 0));
    assert!(matches!(broken, Some(ClientViolation::UnknownCallId(_))));

    let (_, broken) = client_sees(|mem, id| {
        write_raw_response(
            mem,
            0,
            &ResponseHeader {
                ool_written: 101,
                ..response(id, 0)
            },
            0,
        )
    });
    assert_eq!(
        broken,
        Some(ClientViolation::OolWrittenTooLong {
            written: 101,
            window: 100
        })
    );
}

#[test]
fn client_refuses_a_second_response_for_the_same_call() {
    let mem = Memory::new(16, 0);
    let (mut client, _server) = mem.connect(4, 1);
    let pending = client.start(&echo::client::ping(&())).unwrap();
    client.publish();
    write_raw_response(&mem, 0, &response(pending.call_id(), 0), 0);
    write_raw_response(&mem, 1, &response(pending.call_id(), 0), 1);
    assert!(client.poll_response().unwrap().is_some());
    assert!(matches!(
        client.poll_response(),
        Err(CallError::Broken(ClientViolation::UnknownCallId(_)))
    ));
}

#[test]
fn client_breaks_on_bad_request_consumer_index() {
    let mem = Memory::new(16, 0);
    let (mut client, _server) = mem.connect(4, 1);
    let ring = SharedRegion::new(&mem.ring).unwrap();
    ring.view()
        .store_u32(ctrl::REQ_CONS, 3, Ordering::Release)
        .unwrap();
    assert_eq!(
        client.start(&echo::client::ping(&())),
        Err(CallError::Broken(ClientViolation::ReqConsOutOfRange {
            req_cons: 3,
            req_prod: 0
        }))
    );
}

#[test]
fn client_alive_reads_true_until_the_byte_the_unmap_notify_clears_is_zero() {
    let mem = Memory::new(16, 0);
    let (client, server) = mem.connect(4, 1);
    assert!(server.client_alive());
    // What Linux's gntalloc does when the client process lets go of its pages: it clears the
    // one byte the client registered, the field's low byte.
    let ring = client.ring();
    let byte_offset = ctrl::CLIENT_ALIVE;
    let word = ring.load_u32(byte_offset, Ordering::Acquire).unwrap();
    assert_eq!(word, xenrpc_proto::CLIENT_ALIVE);
    ring.store_u32(byte_offset, word & !0xff, Ordering::Release)
        .unwrap();
    assert!(!server.client_alive());
}
