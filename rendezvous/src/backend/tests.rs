//! The handshake driven through the mock store: every XenbusState path, and every attack a
//! client can make with xenstore (churn, half handshakes, wrong values, vanishing frontends,
//! too many devices, reconnect floods, log floods, domain reuse).

use alloc::format;
use alloc::string::String;

use super::mock::{MockConnection, MockConnector, MockStore};
use super::*;
use crate::limits::{CONNECTS_PER_SECOND, LOG_LINES_PER_WINDOW, STEPS_PER_SECOND};

const SERVER: DomId = 5;
const SECOND: u64 = 1_000_000_000;

struct Rig {
    store: MockStore,
    connector: MockConnector,
    backend: Backend<MockConnection>,
}

fn be(client: DomId, devid: u32) -> String {
    format!("/local/domain/{SERVER}/backend/xenrpc/{client}/{devid}")
}

fn fe(client: DomId, devid: u32) -> String {
    format!("/local/domain/{client}/device/xenrpc/{devid}")
}

impl Rig {
    fn new() -> Rig {
        let mut store = MockStore::new();
        store.now_ns = 1000 * SECOND;
        let backend = Backend::start(&mut store, SERVER).expect("start");
        let mut rig = Rig {
            store,
            connector: MockConnector::default(),
            backend,
        };
        rig.pump();
        rig
    }

    /// Delivers watch events and services the backend until nothing is left to do.
    fn pump(&mut self) {
        for _ in 0..100 {
            self.store.deliver(&mut self.backend);
            self.backend.service(&mut self.store, &mut self.connector);
            if self.store.pending_events() == 0 && !self.backend.has_pending() {
                return;
            }
        }
        panic!("the backend never settled");
    }

    /// What `xenrpc attach` writes: both directories, the frontend at Initialising.
    fn attach(&mut self, client: DomId, devid: u32) {
        let (b, f) = (be(client, devid), fe(client, devid));
        self.store.set(&format!("{f}/backend"), &b);
        self.store
            .set(&format!("{f}/backend-id"), &format!("{SERVER}"));
        self.store.set(&format!("{f}/state"), "1");
        self.store.set(&format!("{b}/frontend"), &f);
        self.store
            .set(&format!("{b}/frontend-id"), &format!("{client}"));
        self.store.set(&format!("{b}/online"), "1");
        self.store.set(&format!("{b}/state"), "1");
        self.pump();
    }

    /// The client publishes good values and says Initialised.
    fn publish(&mut self, client: DomId, devid: u32) {
        let f = fe(client, devid);
        self.store.set(&format!("{f}/protocol"), crate::PROTOCOL);
        self.store.set(&format!("{f}/index-ref"), "8");
        self.store.set(&format!("{f}/event-channel"), "5");
        self.set_fe_state(client, devid, "3");
    }

    fn set_fe_state(&mut self, client: DomId, devid: u32, state: &str) {
        self.store
            .set(&format!("{}/state", fe(client, devid)), state);
        self.pump();
    }

    fn be_state(&self, client: DomId, devid: u32) -> Option<String> {
        self.store.get(&format!("{}/state", be(client, devid)))
    }

    fn connected(&self, client: DomId, devid: u32) -> bool {
        self.backend.connected_keys().contains(&(client, devid))
    }

    fn connect(&mut self, client: DomId, devid: u32) {
        self.attach(client, devid);
        assert_eq!(self.be_state(client, devid).as_deref(), Some("2"));
        self.publish(client, devid);
        assert!(self.connected(client, devid), "log: {:?}", self.store.log);
        assert_eq!(self.be_state(client, devid).as_deref(), Some("4"));
    }

    fn advance(&mut self, ns: u64) {
        self.store.now_ns += ns;
        self.pump();
    }
}

#[test]
fn the_whole_handshake_then_the_client_closes() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    assert_eq!(
        rig.store.get(&format!("{}/max-pages", be(7, 0))).as_deref(),
        Some("1020")
    );
    assert_eq!(
        rig.store
            .logged("rpc: dom7/0: attached, waiting for the client"),
        1
    );
    assert_eq!(rig.store.logged("rpc: dom7/0: connected (index page 8)"), 1);
    rig.set_fe_state(7, 0, "5");
    assert!(!rig.connected(7, 0));
    assert_eq!(rig.be_state(7, 0).as_deref(), Some("6"));
    assert_eq!(rig.backend.stats().closed_by_client, 1);
    assert_eq!(rig.store.logged("rpc: dom7/0: closed: client closed"), 1);
}

#[test]
fn a_client_that_starts_over_is_offered_the_device_again() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    // Restarted while connected: the old connection ends, InitWait at once.
    rig.set_fe_state(7, 0, "1");
    assert!(!rig.connected(7, 0));
    assert_eq!(rig.be_state(7, 0).as_deref(), Some("2"));
    assert_eq!(rig.store.logged("closed: client restarted"), 1);
    rig.set_fe_state(7, 0, "3");
    assert!(rig.connected(7, 0));
    // Closed, then Initialising again: reconnect.
    rig.set_fe_state(7, 0, "6");
    assert_eq!(rig.be_state(7, 0).as_deref(), Some("6"));
    rig.set_fe_state(7, 0, "1");
    assert_eq!(rig.be_state(7, 0).as_deref(), Some("2"));
    assert!(rig.store.logged("rpc: dom7/0: client reconnecting") >= 2);
    rig.set_fe_state(7, 0, "3");
    assert!(rig.connected(7, 0));
    assert_eq!(rig.backend.stats().connected, 3);
}

#[test]
fn a_frontend_that_vanishes_is_closed_whether_offered_or_connected() {
    let mut rig = Rig::new();
    rig.attach(7, 0);
    rig.store.remove_tree(&fe(7, 0));
    rig.pump();
    assert_eq!(rig.be_state(7, 0).as_deref(), Some("6"));
    assert_eq!(rig.store.logged("closed: frontend vanished"), 1);
    rig.connect(8, 0);
    rig.store.remove_tree(&fe(8, 0));
    rig.pump();
    assert!(!rig.connected(8, 0));
    assert_eq!(rig.store.logged("rpc: dom8/0: closed: client gone"), 1);
    assert_eq!(rig.backend.stats().client_gone, 2);
}

#[test]
fn wrong_entries_and_values_are_refused_with_their_reason() {
    let mut rig = Rig::new();
    // An entry naming another domain's frontend.
    rig.store.set(&format!("{}/frontend-id", be(0, 4)), "7");
    rig.store.set(
        &format!("{}/frontend", be(0, 4)),
        "/local/domain/7/device/xenrpc/4",
    );
    rig.pump();
    assert_eq!(
        rig.store
            .logged("rpc: dom0/4: refused: frontend-id 7 does not match entry 0"),
        1
    );
    assert_eq!(rig.be_state(0, 4).as_deref(), Some("6"));
    // Bad values, one device each.
    let cases = [
        (
            1,
            "protocol",
            "xenrpc/9",
            "refused: protocol: unsupported protocol",
        ),
        (
            2,
            "event-channel",
            "12abc",
            "refused: event-channel: not a plain decimal number",
        ),
        (3, "index-ref", "", "refused: index-ref"),
    ];
    for (devid, name, value, why) in cases {
        rig.attach(0, devid);
        let f = fe(0, devid);
        rig.store.set(&format!("{f}/protocol"), crate::PROTOCOL);
        rig.store.set(&format!("{f}/index-ref"), "8");
        rig.store.set(&format!("{f}/event-channel"), "5");
        rig.store.set(&format!("{f}/{name}"), value);
        rig.set_fe_state(0, devid, "3");
        assert_eq!(rig.be_state(0, devid).as_deref(), Some("6"), "{name}");
        assert_eq!(rig.store.logged(why), 1, "{name}: {:?}", rig.store.log);
    }
    // The connector refuses (e.g. the grant cannot be mapped).
    rig.connector.refuse = Some("mapping the index page failed".into());
    rig.attach(0, 9);
    rig.publish(0, 9);
    assert_eq!(
        rig.store
            .logged("rpc: dom0/9: closed: refused: mapping the index page failed"),
        1
    );
    let stats = rig.backend.stats();
    assert_eq!((stats.refused_frontend, stats.refused_connect), (1, 4));
    assert_eq!(stats.connected, 0);
}

#[test]
fn a_half_done_handshake_leaves_others_served() {
    let mut rig = Rig::new();
    rig.attach(7, 0); // stays at Initialising for good
    rig.connect(8, 0);
    assert_eq!(rig.be_state(7, 0).as_deref(), Some("2"));
    assert!(rig.connected(8, 0));
}

#[test]
fn detach_and_removal_release_the_tenant_once() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    rig.connect(7, 1);
    // One device offline: the tenant still has another.
    rig.store.set(&format!("{}/online", be(7, 0)), "0");
    rig.pump();
    assert!(!rig.connected(7, 0));
    assert!(rig.backend.take_released().is_empty());
    rig.store.set(&format!("{}/online", be(7, 1)), "0");
    rig.pump();
    assert_eq!(rig.backend.take_released(), [(7, ReleaseReason::Detached)]);
    // Removing the entries afterwards does not release it again.
    rig.store.remove_tree(&be(7, 0));
    rig.store.remove_tree(&be(7, 1));
    rig.pump();
    assert!(rig.backend.take_released().is_empty());
    assert_eq!(rig.backend.stats().tenants_released, 1);
    // Removal of a live tenant's last device releases it.
    rig.connect(8, 0);
    rig.store.remove_tree(&be(8, 0));
    rig.pump();
    assert_eq!(
        rig.backend.take_released(),
        [(8, ReleaseReason::DeviceRemoved)]
    );
}

#[test]
fn a_destroyed_domain_is_released_and_its_domid_reused_is_a_new_tenant() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    rig.connect(0, 0);
    // The toolstack destroys domain 7: its home goes, the backend entry stays.
    rig.store.remove_tree("/local/domain/7");
    rig.store.release_domain();
    rig.pump();
    assert_eq!(
        rig.backend.take_released(),
        [(7, ReleaseReason::DomainGone)]
    );
    assert!(!rig.connected(7, 0));
    assert!(rig.connected(0, 0), "dom0 is never released");
    // A new domain 7 (before the old entry is cleaned up): a fresh tenancy, released again
    // when it goes.
    rig.attach(7, 0);
    rig.set_fe_state(7, 0, "1");
    rig.publish(7, 0);
    assert!(rig.connected(7, 0), "log: {:?}", rig.store.log);
    rig.store.remove_tree("/local/domain/7");
    rig.store.deny("/local/domain/7");
    rig.store.release_domain();
    rig.pump();
    assert_eq!(
        rig.backend.take_released(),
        [(7, ReleaseReason::DomainGone)]
    );
    assert_eq!(rig.backend.stats().tenants_released, 2);
}

#[test]
fn a_destroyed_domain_is_released_without_release_domain_events() {
    // An unprivileged server may never be sent `@releaseDomain`: the vanishing frontend tells.
    let mut rig = Rig::new();
    rig.connect(7, 0);
    rig.set_fe_state(7, 0, "6");
    rig.store.remove_tree("/local/domain/7");
    rig.pump();
    assert_eq!(
        rig.backend.take_released(),
        [(7, ReleaseReason::DomainGone)]
    );
    assert_eq!(rig.backend.stats().tenants_released, 1);
}

#[test]
fn state_churn_steps_only_that_device_at_a_bounded_rate() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    rig.connect(8, 0);
    let connects_before = rig.connector.connects;
    let reads_before = rig.store.operations;
    // 10,000 writes of Initialising / Initialised within one simulated second.
    for i in 0..10_000u64 {
        rig.store.set(
            &format!("{}/state", fe(7, 0)),
            if i % 2 == 0 { "1" } else { "3" },
        );
        rig.store.now_ns += SECOND / 10_000;
        rig.pump();
    }
    let steps = rig.connector.connects - connects_before;
    assert!(
        steps <= u64::from(CONNECTS_PER_SECOND.min(STEPS_PER_SECOND)) + 1,
        "{steps} connects in a second"
    );
    assert!(rig.backend.stats().throttled > 0);
    // No full rescans: a step reads a handful of nodes, a rescan lists everything.
    let per_write = (rig.store.operations - reads_before) / 10_000;
    assert!(
        per_write <= 2,
        "{per_write} store operations per churned write"
    );
    // The other device was never disturbed, and still gets its own steps.
    assert!(rig.connected(8, 0));
    rig.set_fe_state(8, 0, "5");
    assert!(!rig.connected(8, 0));
    // After the churn, the postponed step lands: device 7 ends up in the state written last.
    rig.advance(2 * SECOND);
    assert!(rig.connected(7, 0), "log: {:?}", rig.store.log);
}

#[test]
fn a_domain_gets_sixteen_devices() {
    let mut rig = Rig::new();
    for devid in 0..20 {
        rig.attach(7, devid);
    }
    let stats = rig.backend.stats();
    assert_eq!(stats.refused_cap, 4);
    assert_eq!(stats.attached, MAX_DEVICES_PER_DOMAIN as u64);
    assert_eq!(
        rig.store.logged("refused: domain 7 already has 16 devices"),
        4
    );
    // Another domain is not affected.
    rig.connect(8, 0);
}

#[test]
fn reconnects_of_a_domain_are_rate_limited() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    let before = rig.connector.connects;
    for _ in 0..100 {
        rig.set_fe_state(7, 0, "1");
        rig.set_fe_state(7, 0, "3");
    }
    let in_the_second = rig.connector.connects - before;
    assert!(
        in_the_second <= u64::from(CONNECTS_PER_SECOND),
        "{in_the_second}"
    );
    assert!(rig.backend.stats().throttled > 0);
    // The last Initialised is honoured once the window has passed.
    rig.advance(2 * SECOND);
    assert!(rig.connected(7, 0));
}

#[test]
fn a_log_flood_from_one_device_is_suppressed_and_counted() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    for _ in 0..200 {
        rig.set_fe_state(7, 0, "1");
        rig.set_fe_state(7, 0, "3");
        rig.store.now_ns += SECOND / 10; // under the step and connect limits
    }
    let lines = rig.store.logged("rpc: dom7/0:");
    let stats = rig.backend.stats();
    assert!(stats.log_suppressed > 0);
    // 20 s of flood: at most two windows' budgets, plus one notice per window.
    assert!(
        lines <= 3 * (LOG_LINES_PER_WINDOW as usize + 2),
        "{lines} lines"
    );
    assert_eq!(rig.store.logged("suppressing them for a while"), 2);
    // Another device's lines are not affected.
    rig.connect(8, 0);
    assert_eq!(rig.store.logged("rpc: dom8/0: connected"), 1);
}

#[test]
fn the_loop_ends_connections_and_the_totals_count_them() {
    let mut rig = Rig::new();
    rig.connect(7, 0);
    rig.connect(7, 1);
    rig.backend.end(
        &mut rig.store,
        (7, 0),
        EndKind::PingStorm,
        &"ping storm: test",
    );
    rig.backend.end(
        &mut rig.store,
        (7, 1),
        EndKind::Violation,
        &"protocol violation: test",
    );
    assert_eq!(rig.backend.connected_keys(), []);
    rig.backend
        .publish_totals(&mut rig.store, &[("console_dropped", 3)]);
    let totals = rig
        .store
        .get(&format!("/local/domain/{SERVER}/data/xenrpc-totals"))
        .expect("published");
    assert!(totals.contains(" broken=1 "), "{totals}");
    assert!(totals.contains(" ping_storms=1 "), "{totals}");
    assert!(totals.ends_with(" console_dropped=3"), "{totals}");
    assert!(totals.len() <= crate::TOTALS_MAX_LEN);
    rig.backend.shutdown(&mut rig.store);
}
