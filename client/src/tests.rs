//! Host tests of attach, handshake and calls against the fakes in `fake.rs`, and of the
//! xenstore wire client against a scripted xenstored on a Unix socket.

use std::time::{Duration, Instant};

use xen_abi::xenstore::{Access, Permission};
use xenrpc_proto::services::{arith, echo, kv};
use xenrpc_proto::Status;
use xenrpc_rendezvous as rv;

use crate::admin::{attach, detach, list_connections};
use crate::error::Error;
use crate::fake::{Behaviour, FakeServer, FakeXen, FakeXenstore};
use crate::frontend::{connect, CloseOutcome, ConnectOptions, Connection};
use crate::xenstore::Xenstore;

const SERVER: u16 = 1;
const CLIENT: u16 = 5;

struct World {
    store: FakeXenstore,
    xen: FakeXen,
}

fn world() -> World {
    let store = FakeXenstore::new();
    for d in [0, SERVER, CLIENT] {
        store.add_domain(d);
    }
    World {
        store,
        xen: FakeXen::new(),
    }
}

fn options() -> ConnectOptions {
    ConnectOptions {
        handshake_timeout: Duration::from_secs(20),
        ..ConnectOptions::default()
    }
}

fn attached(behaviour: Behaviour) -> (World, FakeServer) {
    let w = world();
    attach(&mut w.store.connect(0), SERVER.into(), CLIENT.into(), 0).unwrap();
    let server = FakeServer::start(w.store.clone(), w.xen.clone(), SERVER, behaviour);
    (w, server)
}

fn connected(w: &World) -> Connection<FakeXen> {
    connect(&w.xen, Box::new(w.store.connect(CLIENT)), &options()).unwrap()
}

fn perms(w: &World, path: &str) -> Vec<Permission> {
    w.store
        .node(path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .1
}

fn value(w: &World, path: &str) -> String {
    String::from_utf8(
        w.store
            .node(path)
            .unwrap_or_else(|| panic!("{path} missing"))
            .0,
    )
    .unwrap()
}

const T: Duration = Duration::from_secs(20);

#[test]
fn attach_writes_both_directories_with_the_contracted_permissions() {
    let w = world();
    let done = attach(&mut w.store.connect(0), 1, 5, 0).unwrap();
    assert_eq!(done.frontend, "/local/domain/5/device/xenrpc/0");
    assert_eq!(done.backend, "/local/domain/1/backend/xenrpc/5/0");
    let fe = [
        Permission::new(Access::None, 5),
        Permission::new(Access::Read, 1),
    ];
    let be = [
        Permission::new(Access::None, 1),
        Permission::new(Access::Read, 5),
    ];
    for k in ["", "/backend", "/backend-id", "/state"] {
        assert_eq!(
            perms(&w, &format!("{}{k}", done.frontend)),
            fe,
            "frontend{k}"
        );
    }
    for k in ["", "/frontend", "/frontend-id", "/online", "/state"] {
        assert_eq!(perms(&w, &format!("{}{k}", done.backend)), be, "backend{k}");
    }
    assert_eq!(
        value(&w, "/local/domain/5/device/xenrpc/0/backend"),
        done.backend
    );
    assert_eq!(value(&w, "/local/domain/5/device/xenrpc/0/backend-id"), "1");
    assert_eq!(value(&w, "/local/domain/5/device/xenrpc/0/state"), "1");
    assert_eq!(
        value(&w, "/local/domain/1/backend/xenrpc/5/0/frontend"),
        done.frontend
    );
    assert_eq!(
        value(&w, "/local/domain/1/backend/xenrpc/5/0/frontend-id"),
        "5"
    );
    assert_eq!(value(&w, "/local/domain/1/backend/xenrpc/5/0/online"), "1");
    assert_eq!(value(&w, "/local/domain/1/backend/xenrpc/5/0/state"), "1");
    // The server can watch and read its backend root, the client cannot.
    assert!(w
        .store
        .connect(1)
        .directory(0, "/local/domain/1/backend/xenrpc")
        .unwrap()
        .is_some());
    assert!(w
        .store
        .connect(5)
        .read(0, "/local/domain/1/backend/xenrpc/5/0/state")
        .unwrap()
        .is_some());
    assert!(w
        .store
        .connect(5)
        .directory(0, "/local/domain/1/backend/xenrpc")
        .is_err());
    // A third domain sees neither directory.
    w.store.add_domain(7);
    assert!(w
        .store
        .connect(7)
        .read(0, "/local/domain/5/device/xenrpc/0/backend")
        .is_err());
    assert!(w
        .store
        .connect(7)
        .read(0, "/local/domain/1/backend/xenrpc/5/0/state")
        .is_err());
    // The client owns its directory: it can add keys; it cannot write the backend's.
    let mut client = w.store.connect(5);
    client
        .write(0, "/local/domain/5/device/xenrpc/0/index-ref", b"8")
        .unwrap();
    assert!(client
        .write(0, "/local/domain/1/backend/xenrpc/5/0/state", b"4")
        .is_err());
}

#[test]
fn attach_refuses_bad_requests() {
    let w = world();
    let mut dom0 = w.store.connect(0);
    assert!(matches!(
        attach(&mut dom0, 1, 1, 0),
        Err(Error::BadArguments(_))
    ));
    assert!(matches!(
        attach(&mut dom0, 1, 40000, 0),
        Err(Error::BadArguments(_))
    ));
    assert!(matches!(
        attach(&mut dom0, 1, 5, 256),
        Err(Error::BadArguments(_))
    ));
    let missing = attach(&mut dom0, 1, 9, 0).unwrap_err();
    assert!(
        missing.to_string().contains("domain 9 does not exist"),
        "{missing}"
    );
    attach(&mut dom0, 1, 5, 0).unwrap();
    let again = attach(&mut dom0, 1, 5, 0).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    attach(&mut dom0, 1, 5, 1).unwrap();
    let rows = list_connections(&mut dom0).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].backend_state.as_deref(), Some("1 (Initialising)"));
    assert!(rows.iter().all(|r| r.problems.is_empty()), "{rows:?}");
}

#[test]
fn connect_without_attach_says_not_attached() {
    let w = world();
    let err = connect(&w.xen, Box::new(w.store.connect(CLIENT)), &options())
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotAttached(_)), "{err}");
    assert!(err.to_string().contains("xenrpc attach"), "{err}");
}

#[test]
fn typed_calls_round_trip_and_remote_errors_are_reported() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    assert_eq!(value(&w, "/local/domain/5/device/xenrpc/0/state"), "4");
    assert_eq!(value(&w, "/local/domain/1/backend/xenrpc/5/0/state"), "4");
    conn.call(&echo::client::ping(&()), T).unwrap();
    let sum = conn
        .call(&arith::client::add(&arith::Operands { a: 40, b: 2 }), T)
        .unwrap();
    assert_eq!(sum.value.value, 42);
    let text = echo::InlineBytes::new(b"hello").unwrap();
    let back = conn.call(&echo::client::echo_inline(&text), T).unwrap();
    assert_eq!(back.value.bytes(), Some(&b"hello"[..]));
    let err = conn
        .call(&arith::client::div(&arith::Operands { a: 1, b: 0 }), T)
        .unwrap_err();
    assert!(matches!(err, Error::Remote(Status::BadArguments)), "{err}");
    let stats = conn.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_ok,
            stats.calls_remote_error
        ),
        (4, 3, 1)
    );
}

#[test]
fn raw_completions_carry_any_status_and_count_like_typed_calls() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let ops = arith::Operands { a: 40, b: 2 };
    let done = conn.call_completion(&arith::client::add(&ops), T).unwrap();
    assert_eq!(done.status, Status::Ok);
    assert_eq!(done.inline(), 42i64.to_le_bytes());
    let refused = conn
        .call_completion(&xenrpc_proto::TypedCall::<()>::new(0xdead, 1, 1, &[]), T)
        .unwrap();
    assert_eq!(refused.status, Status::UnknownService);
    let stats = conn.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_ok,
            stats.calls_remote_error
        ),
        (2, 1, 1)
    );
}

#[test]
fn out_of_line_arguments_and_results_use_the_data_region() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    conn.data().write(0, &payload).unwrap();
    let call = echo::client::echo_ool(&())
        .ool_args(xenrpc_proto::OolRef::new(0, payload.len() as u32))
        .ool_result(xenrpc_proto::OolRef::new(16384, payload.len() as u32));
    let reply = conn.call(&call, T).unwrap();
    assert_eq!(reply.value.len as usize, payload.len());
    let mut out = vec![0u8; payload.len()];
    conn.data().read(16384, &mut out).unwrap();
    assert_eq!(out, payload);
    // A window outside the data region never leaves the client.
    let bad = echo::client::echo_ool(&()).ool_args(xenrpc_proto::OolRef::new(60000, 10000));
    assert!(matches!(conn.call(&bad, T), Err(Error::BadArguments(_))));
}

#[test]
fn typed_client_objects_place_their_bytes_themselves() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
    let (len, echoed) = echo::Client::new(&mut conn)
        .echo_ool(&(), &payload)
        .unwrap();
    assert_eq!((len.len as usize, echoed), (payload.len(), payload.clone()));
    let key = kv::Key::new(b"k").unwrap();
    kv::Client::new(&mut conn).put(&key, b"value").unwrap();
    let (info, value) = kv::Client::new(&mut conn).get(&key).unwrap();
    assert_eq!((info.found, value.as_slice()), (1, &b"value"[..]));
    let sum = arith::Client::new(&mut conn)
        .add(&arith::Operands { a: 2, b: 3 })
        .unwrap();
    assert_eq!(sum.value, 5);
    assert!(matches!(
        arith::Client::new(&mut conn).div(&arith::Operands { a: 1, b: 0 }),
        Err(Error::Remote(Status::BadArguments))
    ));
    // More bytes than the data pages hold never leave the client.
    let too_big = vec![0u8; conn.data_pages() * 4096 + 1];
    assert!(matches!(
        echo::Client::new(&mut conn).echo_ool(&(), &too_big),
        Err(Error::Busy(_))
    ));
    assert_eq!(conn.stats().calls_ok, 4);
}

#[test]
fn answers_already_in_are_taken_without_waiting() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let now = Instant::now();
    let (one, two) = (
        arith::Operands { a: 1, b: 1 },
        arith::Operands { a: 2, b: 1 },
    );
    let first = conn.submit_at(&arith::client::add(&one), now).unwrap();
    let second = conn.submit_at(&arith::client::add(&two), now).unwrap();
    // Waiting for the second takes the first's answer off the ring too (they come in order).
    assert_eq!(conn.wait(second, now + T).unwrap().value.value, 3);
    let first = match conn.try_take(first).unwrap() {
        Ok(reply) => reply,
        Err(_) => panic!("the first call's answer was not kept"),
    };
    assert_eq!(first.value.value, 2);
}

#[test]
fn calls_started_together_go_out_in_one_publish_and_a_wait_publishes_first() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let operands: Vec<arith::Operands> = (0..4).map(|i| arith::Operands { a: i, b: 10 }).collect();
    let now = Instant::now();
    let before = conn.stats().notifications_sent;
    let started: Vec<_> = operands
        .iter()
        .map(|o| conn.start_at(&arith::client::add(o), now).unwrap())
        .collect();
    conn.flush().unwrap();
    assert!(conn.stats().notifications_sent <= before + 1);
    for (i, p) in started.into_iter().enumerate() {
        assert_eq!(conn.wait(p, now + T).unwrap().value.value, i as i64 + 10);
    }
    // Started, never flushed: the wait publishes it (else it would wait out its deadline).
    let lone = conn
        .start_at(&arith::client::add(&operands[3]), now)
        .unwrap();
    assert_eq!(conn.wait(lone, Instant::now() + T).unwrap().value.value, 13);
}

#[test]
fn many_calls_in_flight_complete_in_any_order() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let operands: Vec<arith::Operands> =
        (0..32).map(|i| arith::Operands { a: i, b: 1000 }).collect();
    let calls: Vec<_> = operands.iter().map(arith::client::add).collect();
    let pending = conn.submit_batch(&calls).unwrap();
    assert_eq!(pending.len(), 32);
    let deadline = Instant::now() + T;
    for (i, p) in pending.into_iter().enumerate().rev() {
        assert_eq!(conn.wait(p, deadline).unwrap().value.value, i as i64 + 1000);
    }
    // The cap holds: one more than max_in_flight is refused with Busy, not a hang.
    let calls: Vec<_> = operands
        .iter()
        .chain(operands.iter())
        .take(33)
        .map(arith::client::add)
        .collect();
    let started = conn.submit_batch(&calls).unwrap();
    assert_eq!(started.len(), 32);
    assert!(matches!(
        conn.submit(&echo::client::ping(&())),
        Err(Error::Busy(_))
    ));
    for p in started {
        conn.wait(p, deadline).unwrap();
    }
}

#[test]
fn a_silent_server_makes_calls_miss_their_deadline_and_late_replies_are_dropped() {
    let (w, _server) = attached(Behaviour::Silent);
    let mut conn = connected(&w);
    let err = conn
        .call(&echo::client::ping(&()), Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err}");
    assert_eq!(conn.stats().calls_timed_out, 1);
    assert_eq!(
        conn.in_flight(),
        1,
        "the abandoned call still holds its slot until answered"
    );
}

#[test]
fn handshake_with_an_absent_server_times_out() {
    let (w, _server) = attached(Behaviour::Absent);
    let opts = ConnectOptions {
        handshake_timeout: Duration::from_millis(100),
        ..options()
    };
    let err = connect(&w.xen, Box::new(w.store.connect(CLIENT)), &opts)
        .err()
        .unwrap();
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err}");
    assert!(err.to_string().contains("InitWait"), "{err}");
}

#[test]
fn a_refusing_server_is_reported_and_grants_are_revoked() {
    let (w, _server) = attached(Behaviour::Refuse);
    let err = connect(&w.xen, Box::new(w.store.connect(CLIENT)), &options())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(w.xen.grant_count(), 0);
    assert_eq!(value(&w, "/local/domain/5/device/xenrpc/0/state"), "6");
}

#[test]
fn a_corrupt_ring_breaks_the_connection_with_a_protocol_error() {
    let (w, _server) = attached(Behaviour::CorruptRing);
    let mut conn = connected(&w);
    let err = conn.call(&echo::client::ping(&()), T).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    // And it stays broken.
    assert!(matches!(
        conn.call(&echo::client::ping(&()), T),
        Err(Error::Protocol(_))
    ));
}

#[test]
fn detach_closes_the_connection_and_removes_both_directories() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    conn.call(&echo::client::ping(&()), T).unwrap();
    let done = detach(&mut w.store.connect(0), 1, 5, 0, T, false).unwrap();
    assert!(done.server_acknowledged, "{done:?}");
    assert!(w.store.node("/local/domain/5/device/xenrpc/0").is_none());
    assert!(w.store.node("/local/domain/1/backend/xenrpc/5/0").is_none());
    assert!(w.store.node("/local/domain/1/backend/xenrpc/5").is_none());
    let err = conn.call(&echo::client::ping(&()), T).unwrap_err();
    assert!(
        matches!(err, Error::ServerClosed | Error::ServerGone(_)),
        "{err}"
    );
    let again = detach(&mut w.store.connect(0), 1, 5, 0, T, false).unwrap_err();
    assert!(matches!(again, Error::NotAttached(_)), "{again}");
}

#[test]
fn detach_of_an_idle_connection_needs_no_answer_from_the_server() {
    let (w, _server) = attached(Behaviour::Normal);
    let conn = connected(&w);
    assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
    // The service VM does not answer for a device it already closed: nothing to wait for.
    let done = detach(
        &mut w.store.connect(0),
        1,
        5,
        0,
        Duration::from_secs(10),
        false,
    )
    .unwrap();
    assert!(done.server_acknowledged, "{done:?}");
    assert!(w.store.node("/local/domain/5/device/xenrpc/0").is_none());
    assert!(w.store.node("/local/domain/1/backend/xenrpc/5/0").is_none());
}

#[test]
fn detach_without_a_server_needs_force_or_a_dead_server() {
    let w = world();
    let mut dom0 = w.store.connect(0);
    attach(&mut dom0, 1, 5, 0).unwrap();
    let err = detach(&mut dom0, 1, 5, 0, Duration::from_millis(50), false).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err}");
    assert_eq!(value(&w, "/local/domain/1/backend/xenrpc/5/0/online"), "0");
    assert_eq!(value(&w, "/local/domain/1/backend/xenrpc/5/0/state"), "5");
    let forced = detach(&mut dom0, 1, 5, 0, Duration::from_millis(50), true).unwrap();
    assert!(!forced.server_acknowledged && forced.note.is_some());
    assert!(w.store.node("/local/domain/5/device/xenrpc/0").is_none());
    attach(&mut dom0, 1, 5, 0).unwrap();
    w.store.remove_domain(1);
    let gone = detach(&mut dom0, 1, 5, 0, T, false).unwrap();
    assert!(gone.note.unwrap().contains("already gone"));
    assert!(w.store.node("/local/domain/5/device/xenrpc/0").is_none());
}

#[test]
fn a_vanished_server_fails_a_waiting_call_before_its_deadline() {
    let (w, _server) = attached(Behaviour::Silent);
    let mut conn = connected(&w);
    let store = w.store.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        store.remove_domain(SERVER);
    });
    // A deadline far away: only the watch on the backend can end this wait with ServerGone.
    let err = conn
        .call(&echo::client::ping(&()), Duration::from_secs(600))
        .unwrap_err();
    killer.join().unwrap();
    assert!(matches!(err, Error::ServerGone(_)), "{err}");
}

#[test]
fn a_client_reconnects_after_closing() {
    let (w, _server) = attached(Behaviour::Normal);
    for round in 0..3 {
        let mut conn = connected(&w);
        let sum = conn
            .call(&arith::client::add(&arith::Operands { a: round, b: 1 }), T)
            .unwrap();
        assert_eq!(sum.value.value, round + 1);
        assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
        assert_eq!(value(&w, "/local/domain/5/device/xenrpc/0/state"), "6");
        assert_eq!(value(&w, "/local/domain/1/backend/xenrpc/5/0/state"), "6");
    }
    assert_eq!(
        w.xen.grant_count(),
        0,
        "every connection's grants are revoked"
    );
}

const FE_STATE: &str = "/local/domain/5/device/xenrpc/0/state";
const BE_STATE: &str = "/local/domain/1/backend/xenrpc/5/0/state";

/// A client crashes while connected, then connects again; `hold_first_look`: the server has
/// already ended the stale connection when the restarting client first looks at it (what a
/// descheduled client sees on a loaded host).
fn reconnect_after_a_crash(behaviour: Behaviour, hold_first_look: bool) {
    let (w, _server) = attached(behaviour);
    let conn = connected(&w);
    // A crash: no close, no Drop; FE and BE stay Connected.
    std::mem::forget(conn);
    assert_eq!(value(&w, BE_STATE), "4");
    let mut store = w.store.connect(CLIENT);
    if hold_first_look {
        store.hold_first_write(FE_STATE, BE_STATE);
    }
    let mut conn = connect(&w.xen, Box::new(store), &options()).unwrap();
    let sum = conn
        .call(&arith::client::add(&arith::Operands { a: 2, b: 3 }), T)
        .unwrap();
    assert_eq!(sum.value.value, 5);
    assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
}

/// Waits (bounded) until `path` reads `want`.
fn wait_for_value(w: &World, path: &str, want: &str) {
    let deadline = Instant::now() + T;
    while w.store.node(path).map(|n| n.0) != Some(want.as_bytes().to_vec()) {
        assert!(Instant::now() < deadline, "{path} never became {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_client_process_is_noticed_through_the_release_notify() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let sum = conn
        .call(&arith::client::add(&arith::Operands { a: 1, b: 2 }), T)
        .unwrap();
    assert_eq!(sum.value.value, 3);
    // The process is killed: it runs no code (no close, no Drop), but its kernel clears the
    // `client_alive` byte it registered and raises the event. The frontend still says
    // Connected, so only the notify can tell the server.
    w.xen.kill_client_process();
    wait_for_value(&w, BE_STATE, "6");
    assert_eq!(value(&w, FE_STATE), "4");
    std::mem::forget(conn);
    // The next process of the same domain connects as usual.
    let mut conn = connected(&w);
    let sum = conn
        .call(&arith::client::add(&arith::Operands { a: 4, b: 5 }), T)
        .unwrap();
    assert_eq!(sum.value.value, 9);
    assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
}

#[test]
fn the_ping_port_bounces_raw_events_and_is_only_there_when_asked_for() {
    let (w, _server) = attached(Behaviour::Normal);
    let mut conn = connect(
        &w.xen,
        Box::new(w.store.connect(CLIENT)),
        &ConnectOptions {
            ping_channel: true,
            ..options()
        },
    )
    .unwrap();
    assert!(w
        .store
        .node("/local/domain/5/device/xenrpc/0/ping-event-channel")
        .is_some());
    for _ in 0..5 {
        conn.ping(Instant::now() + T).unwrap();
    }
    assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
    // A later session without one removes the key the earlier one left.
    let mut conn = connected(&w);
    assert!(w
        .store
        .node("/local/domain/5/device/xenrpc/0/ping-event-channel")
        .is_none());
    let err = conn.ping(Instant::now() + T).unwrap_err();
    assert!(matches!(err, Error::BadArguments(_)), "{err}");
    assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
}

#[test]
fn a_client_that_crashed_while_connected_can_connect_again() {
    reconnect_after_a_crash(Behaviour::Normal, false);
    reconnect_after_a_crash(Behaviour::Normal, true);
}

#[test]
fn a_crashed_client_reconnects_to_a_server_that_reoffers_only_on_a_further_write() {
    reconnect_after_a_crash(Behaviour::ReoffersOnNextWrite, false);
    // The server closed the stale connection before the client's first look: the client
    // cannot tell that Closed from one an earlier session left, and must write again.
    reconnect_after_a_crash(Behaviour::ReoffersOnNextWrite, true);
}

#[test]
fn a_server_slow_to_confirm_the_close_is_a_warning_and_the_frontend_ends_closed() {
    let (w, _server) = attached(Behaviour::IgnoresClose);
    let mut conn = connected(&w);
    let sum = conn
        .call(&arith::client::add(&arith::Operands { a: 40, b: 2 }), T)
        .unwrap();
    assert_eq!(sum.value.value, 42);
    // A short wait bound: this server never confirms.
    let outcome = conn.close(Duration::from_millis(100)).unwrap();
    let CloseOutcome::Unacknowledged(why) = outcome else {
        panic!("the server never closed, yet the close was confirmed: {outcome:?}");
    };
    assert!(why.contains(BE_STATE.trim_end_matches("/state")), "{why}");
    assert_eq!(value(&w, FE_STATE), "6", "the frontend is Closed anyway");
    // Once the connection (and with it the pages) is dropped, the release notify tells even
    // this server that the client let go.
    wait_for_value(&w, BE_STATE, "6");
}

#[test]
fn a_server_that_restarts_the_device_fails_calls_instead_of_leaving_them_unanswered() {
    let (w, _server) = attached(Behaviour::Silent);
    let mut conn = connected(&w);
    let mut dom0 = w.store.connect(0);
    dom0.write(0, "/local/domain/1/backend/xenrpc/5/0/state", b"2")
        .unwrap();
    let err = conn
        .call(&echo::client::ping(&()), Duration::from_secs(600))
        .unwrap_err();
    assert!(matches!(err, Error::ServerClosed), "{err}");
}

#[test]
fn device_failures_and_hostile_xenstore_values_are_clear_errors() {
    let (w, _server) = attached(Behaviour::Normal);
    w.xen.fail_grants(true);
    let err = connect(&w.xen, Box::new(w.store.connect(CLIENT)), &options())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Device { .. }), "{err}");
    // Named by the device it was connecting.
    assert!(
        err.to_string()
            .starts_with("/local/domain/5/device/xenrpc/0: gntalloc: grant pages: "),
        "{err}"
    );
    w.xen.fail_grants(false);
    let mut dom0 = w.store.connect(0);
    dom0.write(0, "/local/domain/5/device/xenrpc/0/backend-id", b"01")
        .unwrap();
    let err = connect(&w.xen, Box::new(w.store.connect(CLIENT)), &options())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    dom0.write(0, "/local/domain/5/device/xenrpc/0/backend-id", b"2")
        .unwrap();
    let err = connect(&w.xen, Box::new(w.store.connect(CLIENT)), &options())
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not match"), "{err}");
    let bad_slots = ConnectOptions {
        slots: 24,
        ..options()
    };
    assert!(matches!(
        connect(&w.xen, Box::new(w.store.connect(CLIENT)), &bad_slots),
        Err(Error::BadArguments(_))
    ));
}

#[test]
fn index_page_lists_ring_then_data_refs() {
    let page = rv::Index::build(&[10, 11, 12], &[20, 21]).unwrap();
    let word = |i: usize| u32::from_le_bytes(page[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!(word(0), u32::from_le_bytes(*b"XRPC"));
    assert_eq!((word(1), word(2), word(3)), (1, 3, 2));
    assert_eq!(
        (word(4), word(5), word(6), word(7), word(8)),
        (10, 11, 12, 20, 21)
    );
    assert!(page[36..].iter().all(|&b| b == 0));
    assert!(rv::Index::build(&[1; 3], &[2; 1018]).is_err());
    assert!(rv::Index::build(&[], &[2; 4]).is_err(), "zero ring pages");
}

mod wire {
    //! `XenbusConnection` against a scripted xenstored on a Unix socket.
    use super::*;
    use crate::xenstore::XenbusConnection;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use xen_abi::xenstore::XsdSockmsg;

    fn frame(msg_type: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let header = XsdSockmsg {
            msg_type,
            req_id,
            tx_id: 0,
            len: payload.len() as u32,
        };
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// Serves one connection: for each request, `script` returns the bytes to send back.
    fn xenstored(
        script: impl Fn(XsdSockmsg, &[u8]) -> Vec<u8> + Send + 'static,
    ) -> (String, std::thread::JoinHandle<()>) {
        let path = std::env::temp_dir().join(format!(
            "xenrpc-xs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            loop {
                let mut h = [0u8; 16];
                if s.read_exact(&mut h).is_err() {
                    return;
                }
                let header = XsdSockmsg::from_bytes(&h);
                let mut payload = vec![0u8; header.len as usize];
                s.read_exact(&mut payload).unwrap();
                let reply = script(header, &payload);
                if !reply.is_empty() {
                    s.write_all(&reply).unwrap();
                }
            }
        });
        (path.to_string_lossy().into_owned(), thread)
    }

    const READ: u32 = 2;
    const WATCH: u32 = 4;
    const WATCH_EVENT: u32 = 15;
    const ERROR: u32 = 16;

    #[test]
    fn replies_are_matched_and_interleaved_watch_events_are_kept() {
        let (path, _t) = xenstored(|h, payload| match (h.msg_type, payload) {
            (READ, b"/a\0") => {
                let mut out = frame(WATCH_EVENT, 0, b"/w/x\0tok\0");
                out.extend(frame(READ, h.req_id, b"value"));
                out
            }
            (READ, _) => frame(ERROR, h.req_id, b"ENOENT\0"),
            (WATCH, _) => frame(WATCH, h.req_id, b"OK\0"),
            _ => frame(ERROR, h.req_id, b"EINVAL\0"),
        });
        let mut xs = XenbusConnection::open_socket(&path).unwrap();
        assert_eq!(xs.read(0, "/a").unwrap().as_deref(), Some(&b"value"[..]));
        assert_eq!(xs.read(0, "/missing").unwrap(), None);
        assert!(xs.has_buffered_event());
        let event = xs.next_event(Instant::now()).unwrap().unwrap();
        assert_eq!((event.path.as_str(), event.token.as_str()), ("/w/x", "tok"));
        xs.watch("/w", "tok").unwrap();
        let err = xs.mkdir(0, "/b").unwrap_err();
        assert!(err.to_string().contains("EINVAL"), "{err}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_wrong_reply_or_a_silent_xenstored_breaks_the_connection() {
        let (path, _t) = xenstored(|h, payload| match payload {
            b"/wrong-id\0" => frame(READ, h.req_id + 7, b"x"),
            _ => Vec::new(), // silence
        });
        let mut xs = XenbusConnection::open_socket(&path).unwrap();
        xs.set_request_timeout(Duration::from_millis(50));
        let err = xs.read(0, "/wrong-id").unwrap_err();
        assert!(err.to_string().contains("reply for request"), "{err}");
        // Broken for good: nothing after a desynchronised reply can be trusted.
        assert!(xs.read(0, "/other").is_err());

        let (path2, _t2) = xenstored(|_, _| Vec::new());
        let mut xs = XenbusConnection::open_socket(&path2).unwrap();
        xs.set_request_timeout(Duration::from_millis(50));
        let err = xs.read(0, "/x").unwrap_err();
        assert!(err.to_string().contains("no reply"), "{err}");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&path2);
    }

    #[test]
    fn oversized_frames_from_xenstored_are_refused() {
        let (path, _t) = xenstored(|h, _| {
            let header = XsdSockmsg {
                msg_type: READ,
                req_id: h.req_id,
                tx_id: 0,
                len: 1 << 20,
            };
            header.to_bytes().to_vec()
        });
        let mut xs = XenbusConnection::open_socket(&path).unwrap();
        let err = xs.read(0, "/x").unwrap_err();
        assert!(err.to_string().contains("bad message"), "{err}");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn calls_carry_a_server_deadline_once_an_answer_showed_the_servers_clock() {
    let (w, server) = attached(Behaviour::Normal);
    let mut conn = connected(&w);
    let ten_s = Duration::from_secs(10);
    assert_eq!(conn.server_deadline(Instant::now() + ten_s), None);
    conn.call(&echo::client::ping(&()), T).unwrap();
    // The first call went without one: nothing was known yet. Request headers stay in their
    // slots after the server took them: read the deadline the client wrote (offset 8).
    let sent_deadline = |conn: &Connection<FakeXen>, index: u32| {
        let mut bytes = [0u8; 8];
        let offset = conn.geometry().request_slot_offset(index) + 8;
        conn.ring_for_hostile_tests()
            .read(offset, &mut bytes)
            .unwrap();
        u64::from_le_bytes(bytes)
    };
    assert_eq!(sent_deadline(&conn, 0), 0);
    let before_second = server.now_ns();
    conn.call(&echo::client::ping(&()), T).unwrap();
    let second = sent_deadline(&conn, 1);
    assert!(
        second >= before_second + T.as_nanos() as u64,
        "the second call's server deadline {second} is before its own"
    );
    let before = server.now_ns();
    let deadline = conn.server_deadline(Instant::now() + ten_s).unwrap();
    let after = server.now_ns();
    // Never earlier than the client's deadline on the server's clock; later at most by a trip.
    assert!(
        deadline >= before + ten_s.as_nanos() as u64,
        "{deadline} < {before} + 10 s"
    );
    assert!(
        deadline <= after + ten_s.as_nanos() as u64 + 1_000_000_000,
        "{deadline} too late"
    );
    // A deadline the caller put in the call is kept; one already past on the server's clock
    // is refused there, and the connection goes on.
    let stale = echo::client::ping(&()).deadline_ns(before / 2);
    let err = conn.call(&stale, T).unwrap_err();
    assert!(
        matches!(err, Error::Remote(Status::DeadlineExceeded)),
        "{err}"
    );
    conn.call(&echo::client::ping(&()), T).unwrap();
    assert_eq!(conn.close(T).unwrap(), CloseOutcome::Acknowledged);
}

#[test]
fn server_totals_are_read_checked_and_absent_is_none() {
    let w = world();
    let mut dom0 = w.store.connect(0);
    assert_eq!(
        crate::admin::server_totals(&mut dom0, SERVER).unwrap(),
        None
    );
    let path = "/local/domain/1/data/xenrpc-totals";
    // Written by dom0 here (the fake toolstack gives the domain no data/ directory).
    let mut server = w.store.connect(0);
    server
        .write(0, path, b"attached=2 connected=1 event_storms=1")
        .unwrap();
    assert_eq!(
        crate::admin::server_totals(&mut dom0, SERVER).unwrap(),
        Some("attached=2 connected=1 event_storms=1".to_string())
    );
    for hostile in [
        &b"attached=2 \x1b[2Jcleared"[..],
        b"attached=x",
        b"=3",
        b"a=1  b=2",
        &[b'a'; 600][..],
        b"attached=\xff",
    ] {
        server.write(0, path, hostile).unwrap();
        let err = crate::admin::server_totals(&mut dom0, SERVER).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }
}
