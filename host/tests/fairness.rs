//! Fairness by cost, on the real host server: an honest client doing null calls beside
//! greedy attackers (one-way calls as costly as calls may be, a full ring of maximal two-way
//! calls, an eventfd storm), each its own process and uid. The server runs in a thread of the
//! test with a dispatcher that records every call (tenant, call id, work charged) in call
//! order; the honest client appends a marker to the same record once its call is published.
//!
//! Asserted, without timings:
//! - from the moment an honest call is published until it is dispatched, the server does at
//!   most `PASS_BUDGET` of work for each other connection (so at most (other connections) ×
//!   `PASS_BUDGET` in all);
//! - the attackers really ran meanwhile (both working attackers have calls in that span);
//! - a new client finishes set-up and gets an answer while the attackers run (bounded wait).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use common::{fork_as, write_line, Forked, TIMEOUT};
use xenrpc_host::attack::Attack;
use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::server::{Server, ServerConfig, TenantDispatcher};
use xenrpc_host::services::{host_registry, Counters, HostServices};
use xenrpc_proto::services::builtins;
use xenrpc_proto::services::echo;
use xenrpc_proto::services::kv::KvBudget;
use xenrpc_proto::ServiceEnv;
use xenrpc_proto::{CallContext, Dispatcher, PeerId, Registry, Status, PASS_BUDGET, REQUEST_COST};

#[derive(Clone, Copy, Debug)]
enum Record {
    /// A call was dispatched; `work` is what it was charged (`REQUEST_COST` + bytes moved).
    Call { peer: u32, call_id: u64, work: u64 },
    /// The honest client published call `call_id`.
    Published { call_id: u64 },
}

type Log = Arc<Mutex<Vec<Record>>>;

struct Recorder<'a> {
    registry: Registry<'a>,
    log: Log,
}

impl Dispatcher for Recorder<'_> {
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        let status = self.registry.dispatch(call);
        let record = Record::Call {
            peer: call.peer().0,
            call_id: call.call_id(),
            work: REQUEST_COST + call.ool_moved() as u64,
        };
        self.log.lock().unwrap().push(record);
        status
    }
}

impl TenantDispatcher for Recorder<'_> {
    fn forget_peer(&mut self, peer: PeerId) {
        self.registry.forget_peer(peer);
    }
}

/// Runs the real server in a thread (for the rest of the test process's life).
fn serve_in_thread(path: PathBuf, log: Log) {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut server = Server::bind(&path, ServerConfig::default()).expect("bind");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("open the socket to every uid");
        let env = ServiceEnv::new("", KvBudget::DEFAULT_HEAP_BYTES);
        let mut services = (
            builtins(&env),
            HostServices::new(Counters::default(), false),
        );
        let mut registry = host_registry();
        registry.register_set(&mut services).expect("host services");
        let mut recorder = Recorder { registry, log };
        ready_tx.send(()).unwrap();
        let _ = server.run(&mut recorder, |_| {});
    });
    ready_rx
        .recv_timeout(TIMEOUT)
        .expect("server did not start");
}

/// A child of `uid` that waits for `go`, then runs `attack` (saying `started` once it has).
fn attacker(path: &Path, uid: u32, attack: Attack) -> Forked {
    let path = path.to_path_buf();
    fork_as(Some(uid), move |mut control| {
        common::read_line(&mut control)?;
        let mut said = control.try_clone().map_err(|e| e.to_string())?;
        let dropped = attack
            .run(&path, || drop(write_line(&mut said, "started")), || true)
            .map_err(|e| format!("{}: {e}", attack.name()))?;
        write_line(&mut control, if dropped { "dropped" } else { "stopped" })
    })
}

#[test]
fn honest_calls_wait_for_at_most_one_budget_of_every_other_connection() {
    let path = std::env::temp_dir().join(format!("xenrpc-fairness-{}.sock", std::process::id()));
    // Children first, while this process has no server thread yet.
    let mut attackers: Vec<(u32, Forked)> = [
        (1000, Attack::GreedyOneWay),
        (1001, Attack::FullRing),
        (1002, Attack::EventStorm),
    ]
    .into_iter()
    .map(|(uid, attack)| (uid, attacker(&path, uid, attack)))
    .collect();
    let newcomer_path = path.clone();
    let mut newcomer = fork_as(Some(1003), move |mut control| {
        common::read_line(&mut control)?;
        let mut client = Client::connect(&newcomer_path, ClientOptions::default())
            .map_err(|e| format!("newcomer: {e}"))?;
        client
            .call(&echo::client::ping(&()), Some(TIMEOUT))
            .map_err(|e| format!("newcomer's call: {e}"))?;
        write_line(&mut control, "served")
    });
    let other_connections = attackers.len() as u64 + 1;

    let log: Log = Arc::default();
    serve_in_thread(path.clone(), log.clone());
    for (_, child) in &mut attackers {
        child.tell("go");
    }
    for (uid, child) in &mut attackers {
        let word = child.hear();
        // The storm may be cut off before it says anything else.
        assert!(
            word == "started" || word == "dropped",
            "attacker {uid}: {word}"
        );
    }

    let mut honest = Client::connect(&path, ClientOptions::default()).expect("honest connect");
    let ping = echo::client::ping(&());
    // Few calls: the attackers' megabyte copies are slow in a debug build.
    let honest_calls = 100;
    for i in 0..honest_calls {
        if i == honest_calls / 3 {
            newcomer.tell("go");
        }
        let pending = honest.start(&ping).unwrap();
        let call_id = pending.call_id();
        honest.flush();
        log.lock().unwrap().push(Record::Published { call_id });
        honest.finish(pending, Some(TIMEOUT)).unwrap();
    }
    assert_eq!(newcomer.hear(), "served", "the newcomer was not served");
    let records = log.lock().unwrap().clone();
    drop(attackers);
    let _ = std::fs::remove_file(&path);

    let honest_peer = rustix::process::getuid().as_raw();
    let bound = other_connections * PASS_BUDGET;
    let mut worst = 0;
    let mut attacker_calls = [0u64; 2];
    for (at, record) in records.iter().enumerate() {
        let Record::Published { call_id } = *record else {
            continue;
        };
        // Work per other tenant (each attacker is its own uid, one connection each).
        let mut others: BTreeMap<u32, u64> = BTreeMap::new();
        for later in &records[at + 1..] {
            match *later {
                Record::Call {
                    peer, call_id: id, ..
                } if peer == honest_peer && id == call_id => break,
                Record::Call { peer, work, .. } if peer != honest_peer => {
                    *others.entry(peer).or_default() += work;
                    if let Some(count) = attacker_calls.get_mut(peer.wrapping_sub(1000) as usize) {
                        *count += 1;
                    }
                }
                _ => {}
            }
        }
        for (&peer, &work) in &others {
            assert!(
                work <= PASS_BUDGET,
                "honest call {call_id} waited for {work} units of uid {peer}'s work (more than \
one budget, {PASS_BUDGET})"
            );
        }
        let total: u64 = others.values().sum();
        assert!(
            total <= bound,
            "honest call {call_id} waited for {total} units (bound {bound})"
        );
        worst = worst.max(total);
    }
    assert!(
        attacker_calls.iter().all(|&calls| calls > 0),
        "the attackers did not run while the honest client was served: {attacker_calls:?}"
    );
    eprintln!(
        "worst wait: {worst} units of others' work (one budget: {PASS_BUDGET}); attacker calls \
within honest waits: {attacker_calls:?}"
    );
}
