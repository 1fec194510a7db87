//! Full client/server conversations over in-memory regions: every status value, every
//! built-in service, out-of-line windows, the in-flight cap, and requests a client's checks
//! would never let through (written raw).

mod common;

use common::*;
use xenrpc_proto::services::arith::{self, Operands, Value};
use xenrpc_proto::services::echo::{self, InlineBytes, OolLen, INLINE_BYTES_MAX};
use xenrpc_proto::services::introspection::{
    self, ListReply, MethodEntry, ServiceEntry, ServiceQuery,
};
use xenrpc_proto::services::kv::{self, Existed, Key, KeyList, ListArgs, ValueInfo};
use xenrpc_proto::services::{field_name, name_field};
use xenrpc_proto::{
    define_service, CallContext, CallError, OolRef, PeerId, RejectReason, Status, TypedCall,
    FLAG_ONE_WAY, INLINE_CAPACITY,
};

xenrpc_proto::define_pod! {
    pub struct Nothing {
        pub unused: u32,
    }
}

define_service! {
    /// A service whose handler always faults, restricted to peer 5 in these tests.
    pub mod faulty {
        name = "faulty", id = 1040, version = 3;
        fn fail = 1 (Nothing) -> Nothing;
        fn fail_with_ok = 2 (()) -> ();
        fn write_past_window = 3 (()) -> ();
    }
}

struct FaultyServer;

impl faulty::Server for FaultyServer {
    fn fail(&mut self, _call: &mut CallContext<'_>, _: Nothing) -> Result<Nothing, Status> {
        Err(Status::HandlerFault)
    }

    fn fail_with_ok(&mut self, _call: &mut CallContext<'_>, _: ()) -> Result<(), Status> {
        Err(Status::Ok)
    }

    fn write_past_window(&mut self, call: &mut CallContext<'_>, _: ()) -> Result<(), Status> {
        let capacity = call.ool_result().capacity();
        call.ool_result().write(capacity, &[1])?;
        Ok(())
    }
}

fn only_peer_5(peer: PeerId) -> bool {
    peer == PeerId(5)
}

/// Runs `f` with a fresh connection (from peer `peer`) and a registry holding the built-in
/// services plus `faulty` (restricted to peer 5).
fn with_connection(
    peer: u32,
    f: impl FnOnce(&Memory, &mut Client<'_>, &mut Server<'_>, &mut xenrpc_proto::Registry<'_>),
) {
    let mem = Memory::new(16, 2);
    let (mut client, mut server) = mem.connect(8, peer);
    let mut services = Services::new();
    let mut faulty = faulty::Handler(FaultyServer);
    let mut registry = services.registry();
    registry
        .register_restricted(&mut faulty, only_peer_5)
        .unwrap();
    f(&mem, &mut client, &mut server, &mut registry);
    assert!(mem.guards_intact(), "something wrote outside the regions");
}

#[test]
fn ok_for_each_arith_method() {
    with_connection(1, |_, client, server, registry| {
        let ops = Operands { a: -84, b: 2 };
        assert_eq!(
            round_trip(client, server, registry, &arith::client::add(&ops))
                .unwrap()
                .value,
            Value { value: -82 }
        );
        assert_eq!(
            round_trip(client, server, registry, &arith::client::mul(&ops))
                .unwrap()
                .value,
            Value { value: -168 }
        );
        assert_eq!(
            round_trip(client, server, registry, &arith::client::div(&ops))
                .unwrap()
                .value,
            Value { value: -42 }
        );
        assert_eq!(server.stats().status_count(Status::Ok), 3);
        assert_eq!(server.stats().responses, 3);
    });
}

#[test]
fn bad_arguments_for_division_by_zero_and_overflow() {
    with_connection(1, |_, client, server, registry| {
        for call in [
            arith::client::div(&Operands { a: 1, b: 0 }),
            arith::client::div(&Operands { a: i64::MIN, b: -1 }),
            arith::client::add(&Operands { a: i64::MAX, b: 1 }),
            arith::client::mul(&Operands { a: i64::MAX, b: 2 }),
        ] {
            assert_eq!(
                round_trip(client, server, registry, &call),
                Err(CallError::Remote(Status::BadArguments))
            );
        }
        assert_eq!(server.stats().status_count(Status::BadArguments), 4);
    });
}

#[test]
fn unknown_service_unknown_method_and_version_mismatch() {
    with_connection(1, |_, client, server, registry| {
        let call = TypedCall::<()>::new(99, 1, 1, &[]);
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::UnknownService))
        );
        let call = TypedCall::<()>::new(arith::SERVICE_ID, 9, arith::VERSION, &[]);
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::UnknownMethod))
        );
        let call = arith::client::add(&Operands { a: 1, b: 2 }).version(arith::VERSION + 1);
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::VersionMismatch))
        );
        let stats = server.stats();
        assert_eq!(stats.status_count(Status::UnknownService), 1);
        assert_eq!(stats.status_count(Status::UnknownMethod), 1);
        assert_eq!(stats.status_count(Status::VersionMismatch), 1);
        assert_eq!(stats.errors(), 3);
    });
}

#[test]
fn bad_arguments_for_wrong_inline_size() {
    with_connection(1, |_, client, server, registry| {
        // Three bytes where `Operands` needs sixteen.
        let call = TypedCall::<Value>::new(
            arith::SERVICE_ID,
            arith::methods::add,
            arith::VERSION,
            &[1, 2, 3],
        );
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::BadArguments))
        );
        // A length field larger than the bytes it describes.
        let mut bytes = InlineBytes::new(b"abc").unwrap();
        bytes.len = INLINE_BYTES_MAX as u32 + 1;
        let call = echo::client::echo_inline(&bytes);
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::BadArguments))
        );
    });
}

#[test]
fn deadline_exceeded_without_running_the_handler() {
    with_connection(1, |_, client, server, registry| {
        let call = arith::client::div(&Operands { a: 1, b: 0 }).deadline_ns(NOW - 1);
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::DeadlineExceeded))
        );
        // Exactly at the deadline, and in the future, the call runs.
        let call = arith::client::add(&Operands { a: 1, b: 1 }).deadline_ns(NOW);
        assert_eq!(
            round_trip(client, server, registry, &call)
                .unwrap()
                .value
                .value,
            2
        );
        assert_eq!(
            server.stats().rejected_count(RejectReason::DeadlinePassed),
            1
        );
    });
}

#[test]
fn handler_fault_and_access_denied() {
    // Peer 1 may not call `faulty`, and introspection does not list it.
    with_connection(1, |_, client, server, registry| {
        let call = faulty::client::fail(&Nothing { unused: 0 });
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::AccessDenied))
        );
        let call = introspection::client::describe_service(&ServiceQuery {
            id: faulty::SERVICE_ID,
        });
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::BadArguments))
        );
    });
    // Peer 5 may.
    with_connection(5, |_, client, server, registry| {
        let call = faulty::client::fail(&Nothing { unused: 0 });
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::HandlerFault))
        );
        let call = faulty::client::fail_with_ok(&());
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::HandlerFault))
        );
        let call = introspection::client::describe_service(&ServiceQuery {
            id: faulty::SERVICE_ID,
        });
        let entry = round_trip(client, server, registry, &call).unwrap().value;
        assert_eq!((entry.id, entry.version, entry.method_count), (1040, 3, 3));
        assert_eq!(field_name(&entry.name), b"faulty");
    });
}

#[test]
fn busy_when_the_kv_quota_is_used_up_and_namespaces_are_per_peer() {
    let mem_a = Memory::new(16, 1);
    let mem_b = Memory::new(16, 1);
    let (mut client_a, mut server_a) = mem_a.connect(4, 1);
    let (mut client_b, mut server_b) = mem_b.connect(4, 2);
    let mut services = Services::new();
    let mut registry = services.registry();
    for i in 0..kv::MAX_ENTRIES_PER_PEER {
        let key = Key::new(format!("key-{i:04}").as_bytes()).unwrap();
        round_trip(
            &mut client_a,
            &mut server_a,
            &mut registry,
            &kv::client::put(&key),
        )
        .unwrap();
    }
    let key = Key::new(b"one-too-many").unwrap();
    assert_eq!(
        round_trip(
            &mut client_a,
            &mut server_a,
            &mut registry,
            &kv::client::put(&key)
        ),
        Err(CallError::Remote(Status::Busy))
    );
    // Peer 2 has its own namespace: empty, and with room.
    let listed = round_trip(
        &mut client_b,
        &mut server_b,
        &mut registry,
        &kv::client::list(&ListArgs { skip: 0 }),
    );
    assert_eq!(listed.unwrap().value, KeyList::default());
    round_trip(
        &mut client_b,
        &mut server_b,
        &mut registry,
        &kv::client::put(&key),
    )
    .unwrap();
    let got = round_trip(
        &mut client_b,
        &mut server_b,
        &mut registry,
        &kv::client::get(&Key::new(b"key-0000").unwrap()),
    );
    assert_eq!(got.unwrap().value, ValueInfo { found: 0, len: 0 });
    assert!(mem_a.guards_intact() && mem_b.guards_intact());
}

#[test]
fn kv_put_get_delete_list_through_out_of_line_windows() {
    with_connection(1, |_, client, server, registry| {
        let value = b"the value travels out of line";
        client.data().write(100, value).unwrap();
        let key = Key::new(b"alpha").unwrap();
        let put = kv::client::put(&key).ool_args(OolRef::new(100, value.len() as u32));
        round_trip(client, server, registry, &put).unwrap();
        round_trip(
            client,
            server,
            registry,
            &kv::client::put(&Key::new(b"beta").unwrap()),
        )
        .unwrap();

        let get = kv::client::get(&key).ool_result(OolRef::new(4096, 64));
        let reply = round_trip(client, server, registry, &get).unwrap();
        assert_eq!(
            reply.value,
            ValueInfo {
                found: 1,
                len: value.len() as u32
            }
        );
        assert_eq!(reply.ool_written as usize, value.len());
        let mut out = vec![0u8; value.len()];
        client.data().read(4096, &mut out).unwrap();
        assert_eq!(&out, value);

        // A result window too small for the value.
        let get = kv::client::get(&key).ool_result(OolRef::new(4096, 4));
        assert_eq!(
            round_trip(client, server, registry, &get),
            Err(CallError::Remote(Status::TooLarge))
        );

        let list = kv::client::list(&ListArgs { skip: 0 }).ool_result(OolRef::new(0, 256));
        let reply = round_trip(client, server, registry, &list).unwrap();
        assert_eq!(
            reply.value,
            KeyList {
                written: 2,
                total: 2,
                bytes: 4 + 5 + 4 + 4
            }
        );
        let mut records = [0u8; 17];
        client.data().read(0, &mut records).unwrap();
        assert_eq!(&records[..9], b"\x05\0\0\0alpha");
        assert_eq!(&records[9..], b"\x04\0\0\0beta");

        let delete = kv::client::delete(&key);
        assert_eq!(
            round_trip(client, server, registry, &delete).unwrap().value,
            Existed { existed: 1 }
        );
        assert_eq!(
            round_trip(client, server, registry, &delete).unwrap().value,
            Existed { existed: 0 }
        );

        // Key length out of range (a hostile client wrote the length field).
        let mut bad_key = Key::new(b"x").unwrap();
        bad_key.len = 65;
        let get = kv::client::get(&bad_key);
        assert_eq!(
            round_trip(client, server, registry, &get),
            Err(CallError::Remote(Status::BadArguments))
        );
        // A value over the limit.
        let put = kv::client::put(&key).ool_args(OolRef::new(0, kv::MAX_VALUE_LEN as u32 + 1));
        assert_eq!(
            round_trip(client, server, registry, &put),
            Err(CallError::Remote(Status::TooLarge))
        );
    });
}

#[test]
fn echo_inline_and_out_of_line() {
    with_connection(1, |mem, client, server, registry| {
        round_trip(client, server, registry, &echo::client::ping(&())).unwrap();
        let max = [0x5Au8; INLINE_BYTES_MAX];
        let bytes = InlineBytes::new(&max).unwrap();
        let reply =
            round_trip(client, server, registry, &echo::client::echo_inline(&bytes)).unwrap();
        assert_eq!(reply.value.bytes(), Some(&max[..]));
        assert!(InlineBytes::new(&[0; INLINE_BYTES_MAX + 1]).is_none());

        // 3000 bytes at an unaligned offset, echoed to another unaligned offset.
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
        client.data().write(5, &payload).unwrap();
        let call = echo::client::echo_ool(&())
            .ool_args(OolRef::new(5, 3000))
            .ool_result(OolRef::new(4099, 3001));
        let reply = round_trip(client, server, registry, &call).unwrap();
        assert_eq!(
            (reply.value, reply.ool_written),
            (OolLen { len: 3000 }, 3000)
        );
        let mut out = vec![0u8; 3000];
        client.data().read(4099, &mut out).unwrap();
        assert_eq!(out, payload);

        // Result window one byte short: TooLarge, and nothing claimed written.
        let call = echo::client::echo_ool(&())
            .ool_args(OolRef::new(5, 3000))
            .ool_result(OolRef::new(4099, 2999));
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::TooLarge))
        );
        assert!(mem.guards_intact());
    });
}

#[test]
fn handler_writing_past_its_window_gets_too_large() {
    with_connection(5, |_, client, server, registry| {
        let call = faulty::client::write_past_window(&()).ool_result(OolRef::new(8, 8));
        assert_eq!(
            round_trip(client, server, registry, &call),
            Err(CallError::Remote(Status::TooLarge))
        );
    });
}

#[test]
fn introspection_lists_services_and_methods() {
    with_connection(1, |_, client, server, registry| {
        let call = introspection::client::list_services(&()).ool_result(OolRef::new(64, 32 * 8));
        let reply = round_trip(client, server, registry, &call).unwrap();
        // introspection, echo, arith, kv (faulty is hidden from peer 1).
        assert_eq!(
            reply.value,
            ListReply {
                written: 4,
                total: 4
            }
        );
        assert_eq!(reply.ool_written, 4 * 32);
        let entries: Vec<ServiceEntry> = (0..4)
            .map(|i| client.data().read_pod::<ServiceEntry>(64 + 32 * i).unwrap())
            .collect();
        let names: Vec<&[u8]> = entries.iter().map(|e| field_name(&e.name)).collect();
        assert_eq!(names, [&b"introspection"[..], b"echo", b"arith", b"kv"]);
        assert_eq!(
            entries[2],
            ServiceEntry {
                id: 2,
                version: 1,
                method_count: 3,
                name: name_field("arith")
            }
        );

        // Room for two entries only.
        let call = introspection::client::list_services(&()).ool_result(OolRef::new(0, 70));
        assert_eq!(
            round_trip(client, server, registry, &call).unwrap().value,
            ListReply {
                written: 2,
                total: 4
            }
        );

        let call = introspection::client::list_methods(&ServiceQuery { id: kv::SERVICE_ID })
            .ool_result(OolRef::new(0, 4096));
        assert_eq!(
            round_trip(client, server, registry, &call).unwrap().value,
            ListReply {
                written: 4,
                total: 4
            }
        );
        let method: MethodEntry = client.data().read_pod(32 * 3).unwrap();
        assert_eq!((method.id, field_name(&method.name)), (4, &b"list"[..]));
    });
}

#[test]
fn one_way_calls_run_without_a_response() {
    with_connection(1, |_, client, server, registry| {
        let key = Key::new(b"fire-and-forget").unwrap();
        client.start_one_way(kv::client::put(&key)).unwrap();
        client
            .start_one_way(arith::client::div(&Operands { a: 1, b: 0 }))
            .unwrap();
        assert_eq!(client.in_flight(), 0);
        client.publish();
        let outcome = server.poll(registry, &clock(), 64);
        assert_eq!(outcome.handled, 2);
        assert!(!outcome.notify);
        assert_eq!(client.poll_response(), Ok(None));
        let stats = server.stats();
        assert_eq!((stats.one_way, stats.responses), (2, 0));
        assert_eq!(stats.status_count(Status::BadArguments), 1);
        let get = kv::client::get(&key);
        assert_eq!(
            round_trip(client, server, registry, &get)
                .unwrap()
                .value
                .found,
            1
        );
    });
}

#[test]
fn in_flight_cap_and_ring_full() {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect(2, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let ping = echo::client::ping(&());
    let first = client.start(&ping).unwrap();
    let second = client.start(&ping).unwrap();
    assert_eq!(client.start(&ping), Err(CallError::TooManyInFlight));
    // One-way calls do not count against the cap, but need request slots.
    for _ in 0..14 {
        client.start_one_way(ping).unwrap();
    }
    assert_eq!(client.start_one_way(ping), Err(CallError::RingFull));
    client.publish();
    assert_eq!(server.poll(&mut registry, &clock(), 100).handled, 16);
    let a = client.poll_response().unwrap().unwrap();
    let b = client.poll_response().unwrap().unwrap();
    // Completions are matched by call id; a wrong pairing is refused.
    assert!(client.start(&ping).is_ok());
    assert_eq!(second.call_id(), b.call_id);
    assert_eq!(
        first.finish(&b),
        Err(CallError::WrongCompletion {
            expected: a.call_id,
            got: b.call_id
        })
    );
    assert!(second.finish(&b).is_ok());
    assert!(ClientConnectionCap::rejects(&mem));
}

/// Cap values `ClientConnection::new` refuses.
struct ClientConnectionCap;

impl ClientConnectionCap {
    fn rejects(mem: &Memory) -> bool {
        use xenrpc_proto::{ClientConnection, SetupError, MAX_IN_FLIGHT};
        [0, 17, MAX_IN_FLIGHT + 1].iter().all(|&cap| {
            ClientConnection::new(&mem.ring, &mem.data, mem.geometry, cap).err()
                == Some(SetupError::BadInFlightCap(cap))
        })
    }
}

#[test]
fn client_refuses_what_the_server_would() {
    with_connection(1, |_, client, _, _| {
        let data_len = 2 * 4096;
        let big = [0u8; INLINE_CAPACITY + 1];
        let call = TypedCall::<()>::new(1, 1, 1, &big);
        assert_eq!(
            client.start(&call),
            Err(CallError::InlineTooLarge(INLINE_CAPACITY + 1))
        );
        for bad in [
            OolRef::new(1, 0),
            OolRef::new(data_len, 1),
            OolRef::new(u32::MAX, 2),
            OolRef::new(1, data_len),
        ] {
            assert_eq!(
                client.start(&echo::client::ping(&()).ool_args(bad)),
                Err(CallError::BadOolRef(bad))
            );
            assert_eq!(
                client.start(&echo::client::ping(&()).ool_result(bad)),
                Err(CallError::BadOolRef(bad))
            );
        }
        assert!(client
            .start(&echo::client::ping(&()).ool_args(OolRef::new(0, data_len)))
            .is_ok());
    });
}

/// Requests that only a hostile client writes: each gets a status and a counted reason.
#[test]
fn raw_requests_get_statuses_and_reasons() {
    let mem = Memory::new(16, 1);
    let mut raw = RawClient::new(&mem);
    let mut server =
        xenrpc_proto::ServerConnection::attach(&mem.ring, &mem.data, mem.geometry, PeerId(1))
            .unwrap();
    let mut services = Services::new();
    let mut registry = services.registry();
    let ops = Operands { a: 2, b: 3 };
    let add = |call_id| {
        RawClient::header(
            arith::SERVICE_ID,
            arith::methods::add,
            arith::VERSION,
            call_id,
        )
    };

    let cases: Vec<(RequestHeaderEdit, Status, Option<RejectReason>)> = vec![
        (Box::new(|_| {}), Status::Ok, None),
        (
            Box::new(|h| h.inline_len = INLINE_CAPACITY as u32 + 1),
            Status::TooLarge,
            Some(RejectReason::InlineTooLong),
        ),
        (
            Box::new(|h| h.inline_len = u32::MAX),
            Status::TooLarge,
            Some(RejectReason::InlineTooLong),
        ),
        (
            Box::new(|h| h.flags = 1 << 7),
            Status::BadArguments,
            Some(RejectReason::UnknownFlags),
        ),
        (
            Box::new(|h| h.reserved1 = [1, 0]),
            Status::BadArguments,
            Some(RejectReason::ReservedNotZero),
        ),
        (
            Box::new(|h| h.reserved1 = [0, 9]),
            Status::BadArguments,
            Some(RejectReason::ReservedNotZero),
        ),
        (
            Box::new(|h| h.ool_args = OolRef::new(4000, 97)),
            Status::BadArguments,
            Some(RejectReason::OolArgsOutOfRange),
        ),
        (
            Box::new(|h| h.ool_args = OolRef::new(u32::MAX, u32::MAX)),
            Status::BadArguments,
            Some(RejectReason::OolArgsOutOfRange),
        ),
        (
            Box::new(|h| h.ool_args = OolRef::new(8, 0)),
            Status::BadArguments,
            Some(RejectReason::OolArgsOutOfRange),
        ),
        (
            Box::new(|h| h.ool_result = OolRef::new(4096, 1)),
            Status::BadArguments,
            Some(RejectReason::OolResultOutOfRange),
        ),
        (
            Box::new(|h| h.ool_result = OolRef::new(0, 4096)),
            Status::Ok,
            None,
        ),
        (
            Box::new(|h| h.deadline_ns = 1),
            Status::DeadlineExceeded,
            Some(RejectReason::DeadlinePassed),
        ),
        (Box::new(|h| h.inline_len = 15), Status::BadArguments, None),
    ];
    for (i, (edit, expected, reason)) in cases.into_iter().enumerate() {
        let mut header = add(1000 + i as u64);
        header.inline_len = 16;
        edit(&mut header);
        let before = server.stats().rejected;
        raw.push(&header, zerocopy::IntoBytes::as_bytes(&ops));
        let outcome = server.poll(&mut registry, &clock(), 8);
        assert_eq!((outcome.handled, outcome.broken), (1, false), "case {i}");
        let (response, inline) = raw.pop().expect("a response");
        assert_eq!(response.call_id, 1000 + i as u64, "case {i}");
        assert_eq!(
            Status::from_wire(response.status),
            Some(expected),
            "case {i}"
        );
        if expected == Status::Ok {
            assert_eq!(inline, 5i64.to_ne_bytes(), "case {i}");
        } else {
            assert_eq!(
                (response.inline_len, response.ool_written),
                (0, 0),
                "case {i}"
            );
        }
        let after = server.stats().rejected;
        for r in 0..RejectReason::COUNT {
            let bumped = reason.is_some_and(|reason| reason as usize == r);
            assert_eq!(
                after[r] - before[r],
                u64::from(bumped),
                "case {i} reason {r}"
            );
        }
    }
    // A one-way request with a bad header: counted, no response.
    let mut header = add(7);
    header.flags = FLAG_ONE_WAY | 1 << 5;
    raw.push(&header, &[]);
    assert_eq!(server.poll(&mut registry, &clock(), 8).handled, 1);
    assert!(raw.pop().is_none());
    assert_eq!(server.stats().one_way, 1);
    assert!(server.broken().is_none());
    assert!(mem.guards_intact());
}

type RequestHeaderEdit = Box<dyn Fn(&mut xenrpc_proto::RequestHeader)>;

#[test]
fn introspection_reports_per_service_calls_and_errors() {
    let mem = Memory::new(16, 2);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut services = Services::new();
    let mut counters = xenrpc_proto::ServiceCounters::new();
    // Counters outlive each registry: two registries in a row keep adding up.
    for _ in 0..2 {
        let mut registry = xenrpc_proto::Registry::with_counters(&mut counters);
        registry.register(&mut services.echo).unwrap();
        registry.register(&mut services.arith).unwrap();
        let ok = arith::client::add(&Operands { a: 1, b: 2 });
        let bad = arith::client::div(&Operands { a: 1, b: 0 });
        let ping = echo::client::ping(&());
        round_trip(&mut client, &mut server, &mut registry, &ok).unwrap();
        round_trip(&mut client, &mut server, &mut registry, &bad).unwrap_err();
        round_trip(&mut client, &mut server, &mut registry, &ping).unwrap();
        let nobody = TypedCall::<()>::new(99, 1, 1, &[]);
        round_trip(&mut client, &mut server, &mut registry, &nobody).unwrap_err();
    }
    let mut registry = xenrpc_proto::Registry::with_counters(&mut counters);
    registry.register(&mut services.echo).unwrap();
    registry.register(&mut services.arith).unwrap();
    let call = introspection::client::list_stats(&()).ool_result(OolRef::new(0, 32 * 3));
    let reply = round_trip(&mut client, &mut server, &mut registry, &call).unwrap();
    assert_eq!(
        reply.value,
        ListReply {
            written: 3,
            total: 3
        }
    );
    let entries: Vec<introspection::ServiceStatsEntry> = (0..3)
        .map(|i| client.data().read_pod(32 * i).unwrap())
        .collect();
    let by_id = |id: u32| {
        entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| (e.calls, e.errors))
    };
    assert_eq!(by_id(arith::SERVICE_ID), Some((4, 2)));
    assert_eq!(by_id(echo::SERVICE_ID), Some((2, 0)));
    // The list_stats call itself is counted once it has finished, so not in its own answer.
    assert_eq!(by_id(introspection::SERVICE_ID), Some((0, 0)));
    let counts = counters.total(introspection::SERVICE_ID);
    assert_eq!((counts.calls, counts.errors), (1, 0));
    assert_eq!(counters.unknown_service, 2);
}

#[test]
fn every_response_carries_the_server_clock() {
    with_connection(1, |_, client, server, registry| {
        // Errors too: a client learns the server's clock from whatever answer it gets.
        for call in [
            arith::client::add(&Operands { a: 1, b: 1 }),
            arith::client::div(&Operands { a: 1, b: 0 }),
        ] {
            let pending = client.start(&call).unwrap();
            client.publish();
            let tick = || NOW + 7;
            assert!(!server.poll(registry, &tick, 64).broken);
            let completion = client.poll_response().unwrap().expect("a response");
            assert_eq!(completion.server_time_ns, NOW + 7);
            let _ = pending.finish(&completion);
        }
    });
}

/// Echo, taking calls in batches of up to 4 and noting each batch's size.
struct BatchingEcho {
    inner: echo::Handler<echo::EchoServer>,
    sizes: Vec<usize>,
}

impl xenrpc_proto::ServiceHandler for BatchingEcho {
    fn info(&self) -> &'static xenrpc_proto::ServiceInfo {
        self.inner.info()
    }

    fn handle(&mut self, call: &mut CallContext<'_>) -> Status {
        self.inner.handle(call)
    }

    fn batch_limit(&self) -> usize {
        4
    }

    fn handle_batch(&mut self, batch: &mut [xenrpc_proto::BatchedCall<'_>]) {
        self.sizes.push(batch.len());
        for one in batch {
            one.status = self.inner.handle(&mut one.call);
        }
    }
}

#[test]
fn consecutive_calls_to_a_batching_service_come_in_batches() {
    let mem = Memory::new(16, 2);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut batching = BatchingEcho {
        inner: echo::Handler(echo::EchoServer),
        sizes: Vec::new(),
    };
    let mut arith = arith::Handler(arith::ArithServer);
    let mut registry = xenrpc_proto::Registry::new();
    registry.register(&mut batching).unwrap();
    registry.register(&mut arith).unwrap();
    let hello = InlineBytes::new(b"hello").unwrap();
    let echo_call = echo::client::echo_inline(&hello);
    let add = arith::client::add(&Operands { a: 1, b: 2 });
    let mut echoes = Vec::new();
    for _ in 0..5 {
        echoes.push(client.start(&echo_call).unwrap());
    }
    let sum = client.start(&add).unwrap();
    for _ in 0..2 {
        echoes.push(client.start(&echo_call).unwrap());
    }
    client.publish();
    let outcome = server.poll(&mut registry, &clock(), 1_000_000);
    assert_eq!((outcome.handled, outcome.broken), (8, false));
    // Each answer is its own call's, in ring order.
    let mut completions = Vec::new();
    while let Some(c) = client.poll_response().unwrap() {
        completions.push(c);
    }
    assert_eq!(completions.len(), 8);
    let (echo_done, rest) = completions.split_at(5);
    for (pending, done) in echoes.drain(..5).zip(echo_done) {
        assert_eq!(
            pending.finish(done).unwrap().value.bytes(),
            Some(&b"hello"[..])
        );
    }
    assert_eq!(sum.finish(&rest[0]).unwrap().value, Value { value: 3 });
    for (pending, done) in echoes.into_iter().zip(&rest[1..]) {
        assert_eq!(
            pending.finish(done).unwrap().value.bytes(),
            Some(&b"hello"[..])
        );
    }
    // Five echoes: a full batch and one; the add breaks the run; then two.
    assert_eq!(batching.sizes, [4, 1, 2]);
}
