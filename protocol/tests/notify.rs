//! Notification thresholds: a side is notified exactly when it asked to be woken, and the
//! arm-then-recheck step reports work that raced with going to sleep.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use xenrpc_proto::layout::ctrl;
use xenrpc_proto::services::echo;
use xenrpc_proto::{
    CallContext, Dispatcher, OolRef, RegionView, Registry, RingGeometry, SharedRegion, Status,
    MAX_CALL_COPY, PAGE_SIZE, PASS_BUDGET, REQUEST_COST,
};

#[test]
fn server_is_notified_only_after_arming() {
    let mem = Memory::new(16, 0);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let ping = echo::client::ping(&());

    // A freshly attached server waits for the first request.
    let p1 = client.start(&ping).unwrap();
    assert!(client.publish(), "first request must notify");
    // Server has not armed again: more requests do not notify.
    let p2 = client.start(&ping).unwrap();
    assert!(!client.publish());
    // Nothing new: publishing nothing never notifies.
    assert!(!client.publish());

    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 2);
    // Server goes to sleep: nothing pending, so it may.
    assert!(!server.prepare_to_sleep());
    let p3 = client.start(&ping).unwrap();
    assert!(client.publish(), "a sleeping server must be notified");

    // A request published after the server armed but before it slept is seen by the re-check.
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 1);
    let p4 = client.start(&ping).unwrap();
    client.publish();
    assert!(
        server.prepare_to_sleep(),
        "the re-check must see the racing request"
    );
    assert_eq!(server.poll(&mut registry, &clock(), 64).handled, 1);
    assert!(!server.prepare_to_sleep());
    for pending in [p1, p2, p3, p4] {
        let completion = client.poll_response().unwrap().unwrap();
        pending.finish(&completion).unwrap();
    }
    assert_eq!(client.poll_response(), Ok(None));
}

#[test]
fn client_is_notified_only_after_arming() {
    let mem = Memory::new(16, 0);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let ping = echo::client::ping(&());

    // A fresh client waits for its first response.
    let _ = client.start(&ping).unwrap();
    client.publish();
    assert!(server.poll(&mut registry, &clock(), 64).notify);
    assert!(client.poll_response().unwrap().is_some());

    // Not armed: the next response is published silently.
    let _ = client.start(&ping).unwrap();
    client.publish();
    let outcome = server.poll(&mut registry, &clock(), 64);
    assert_eq!((outcome.handled, outcome.notify), (1, false));
    // The response is already there: arming reports it instead of letting the client sleep.
    assert!(client.prepare_to_wait());
    assert!(client.poll_response().unwrap().is_some());

    // Armed with nothing pending: the client may sleep, and the next response notifies.
    assert!(!client.prepare_to_wait());
    let _ = client.start(&ping).unwrap();
    let _ = client.start(&ping).unwrap();
    client.publish();
    let outcome = server.poll(&mut registry, &clock(), 64);
    assert_eq!((outcome.handled, outcome.notify), (2, true));
    assert_eq!(server.stats().notifications, 2);
    assert!(client.poll_response().unwrap().is_some());
    assert!(client.poll_response().unwrap().is_some());
}

#[test]
fn budget_limits_a_poll_and_reports_more() {
    let mem = Memory::new(16, MAX_CALL_COPY / PAGE_SIZE / 2);
    let (mut client, mut server) = mem.connect(16, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    // Each call copies a quarter megabyte from its argument window into its result window: its
    // worst case is REQUEST_COST + 512 KiB (both windows), its actual cost REQUEST_COST +
    // 256 KiB (a copy counts once). So the smallest budget (MAX_REQUEST_COST) starts two,
    // PASS_BUDGET six; the work charged is the actual cost.
    let quarter = MAX_CALL_COPY / 4;
    let echo = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, quarter as u32))
        .ool_result(OolRef::new(quarter as u32, quarter as u32));
    let cost = REQUEST_COST + quarter as u64;
    for _ in 0..10 {
        let _ = client.start(&echo).unwrap();
    }
    client.publish();
    let first = server.poll(&mut registry, &clock(), 0);
    assert_eq!((first.handled, first.more), (2, true));
    assert_eq!((first.work, first.earned), (2 * cost, 2));
    let second = server.poll(&mut registry, &clock(), PASS_BUDGET);
    assert_eq!(
        (second.handled, second.more, second.work),
        (6, true, 6 * cost)
    );
    let third = server.poll(&mut registry, &clock(), PASS_BUDGET);
    assert_eq!((third.handled, third.more), (2, false));
    assert!(!third.notify);
    // The second poll published more responses, but the client had not re-armed.
    assert!(first.notify && !second.notify);
    let mut answered = 0;
    while client.poll_response().unwrap().is_some() {
        answered += 1;
    }
    assert_eq!(answered, 10);
}

#[test]
fn ring_keeps_working_over_many_laps_and_across_the_index_wrap() {
    // Slot reuse over ~100 laps with varying batch sizes, with the 32-bit indices starting just
    // below the wrap so that they pass through it early on.
    for start in [0, u32::MAX - 40] {
        let mem = Memory::new(16, 0);
        let (mut client, mut server) = mem.connect_at(16, 1, start);
        let mut services = Services::new();
        let mut registry = services.registry();
        let mut notified = 0;
        for round in 0..200u32 {
            let batch = 1 + round % 16;
            let mut pending = Vec::new();
            for _ in 0..batch {
                pending.push(client.start(&echo::client::ping(&())).unwrap());
            }
            notified += u32::from(client.publish());
            assert_eq!(server.poll(&mut registry, &clock(), 64).handled, batch);
            for p in pending {
                p.finish(&client.poll_response().unwrap().unwrap()).unwrap();
            }
            if round % 3 == 0 {
                assert!(!server.prepare_to_sleep());
            }
        }
        assert!(server.broken().is_none() && client.broken().is_none());
        // Once at the start, then once after every third round's arming (67 of them).
        assert_eq!(notified, 1 + 67, "start {start}");
        let req_cons = client
            .ring()
            .load_u32(
                xenrpc_proto::layout::ctrl::REQ_CONS,
                std::sync::atomic::Ordering::Relaxed,
            )
            .unwrap();
        assert_eq!(
            req_cons,
            start.wrapping_add((0..200).map(|r| 1 + r % 16).sum::<u32>())
        );
    }
}

/// Counts the calls it runs and, at the second, looks at the ring as the client would: the
/// first answer's sequence word and the released request index.
struct Watcher<'a, 'r> {
    registry: Registry<'a>,
    ring: RegionView<'r>,
    geometry: RingGeometry,
    calls: u32,
    seen_at_second: Option<(u32, u32)>,
}

impl Dispatcher for Watcher<'_, '_> {
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        if self.calls == 1 {
            let load = |offset| self.ring.load_u32(offset, Ordering::Acquire).unwrap();
            let first_answer = load(self.geometry.response_seq_offset(0));
            self.seen_at_second = Some((first_answer, load(ctrl::REQ_CONS)));
        }
        self.calls += 1;
        self.registry.dispatch(call)
    }
}

/// Answers are published as each is written, while the poll goes on, and each only after the
/// requests the server took were released: a client that holds an answer finds its request's
/// slot free (so one that keeps its calls in flight under the cap never finds the ring full).
#[test]
fn an_answer_is_published_at_once_and_after_its_request_slot_is_free() {
    let mem = Memory::new(16, 0);
    let (mut client, mut server) = mem.connect(8, 1);
    let region = SharedRegion::new(&mem.ring).unwrap();
    let mut services = Services::new();
    let ping = echo::client::ping(&());
    let first = client.start(&ping).unwrap();
    let second = client.start(&ping).unwrap();
    client.publish();
    let mut watcher = Watcher {
        registry: services.registry(),
        ring: region.view(),
        geometry: mem.geometry,
        calls: 0,
        seen_at_second: None,
    };
    assert_eq!(server.poll(&mut watcher, &clock(), PASS_BUDGET).handled, 2);
    let (first_answer, released) = watcher.seen_at_second.unwrap();
    assert_eq!(
        first_answer, 0,
        "the first answer is out while the second call runs"
    );
    assert_eq!(
        released, 1,
        "the first request's slot was released before its answer"
    );
    for pending in [first, second] {
        pending
            .finish(&client.poll_response().unwrap().unwrap())
            .unwrap();
    }
}
