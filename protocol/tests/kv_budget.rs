//! The kv store's memory bounded for the VM as a whole: many peers together run into the
//! global budget and get `Busy` (nothing else breaks); a departed tenant's bytes come back;
//! a peer id reused after that finds an empty namespace.

mod common;

use common::*;
use xenrpc_proto::services::kv::{
    self, entry_footprint, Key, KvBudget, KvStore, ValueInfo, MAX_BYTES_PER_PEER, MAX_VALUE_LEN,
    MIN_ENTRY_FOOTPRINT, NAMESPACE_OVERHEAD,
};
use xenrpc_proto::{CallError, OolRef, PeerId, Registry, Status, PAGE_SIZE};

/// Entries each peer stores, each a 4 KiB value under an 8-byte key.
const PER_PEER: usize = 4;
/// Peers whose entries fit the budget exactly.
const FITTING_PEERS: u32 = 10;

fn peer_bytes() -> usize {
    NAMESPACE_OVERHEAD + PER_PEER * entry_footprint(8, MAX_VALUE_LEN)
}

fn key(i: usize) -> Key {
    Key::new(format!("key-{i:04}").as_bytes()).unwrap()
}

/// Stores `PER_PEER` values for `peer`; the statuses.
fn fill(mem: &Memory, registry: &mut Registry<'_>, peer: u32) -> Vec<Result<(), CallError>> {
    let (mut client, mut server) = mem.connect(8, peer);
    client.data().fill(0, MAX_VALUE_LEN, peer as u8).unwrap();
    (0..PER_PEER)
        .map(|i| {
            let key = key(i);
            let put = kv::client::put(&key).ool_args(OolRef::new(0, MAX_VALUE_LEN as u32));
            round_trip(&mut client, &mut server, registry, &put).map(|reply| reply.value)
        })
        .collect()
}

fn get(mem: &Memory, registry: &mut Registry<'_>, peer: u32, i: usize) -> ValueInfo {
    let (mut client, mut server) = mem.connect(8, peer);
    let key = key(i);
    let call = kv::client::get(&key).ool_result(OolRef::new(0, MAX_VALUE_LEN as u32));
    round_trip(&mut client, &mut server, registry, &call)
        .unwrap()
        .value
}

#[test]
fn the_budget_for_a_heap_is_a_quarter_of_it() {
    let budget = KvBudget::for_heap(16 << 20);
    assert_eq!(budget.max_bytes, 4 << 20);
    assert_eq!(budget.max_entries, (4 << 20) / MIN_ENTRY_FOOTPRINT);
    assert!(peer_bytes() <= MAX_BYTES_PER_PEER);
}

#[test]
fn many_peers_run_into_the_global_budget_and_get_busy() {
    let mem = Memory::new(16, MAX_VALUE_LEN / PAGE_SIZE);
    let budget = KvBudget {
        max_bytes: FITTING_PEERS as usize * peer_bytes(),
        max_entries: usize::MAX,
    };
    let mut kv_handler = kv::Handler(KvStore::with_budget(budget));
    let mut registry = Registry::new();
    registry.register(&mut kv_handler).unwrap();

    for peer in 0..FITTING_PEERS {
        assert!(fill(&mem, &mut registry, peer).iter().all(Result::is_ok));
    }
    // The budget is used up: every newcomer's put is refused.
    for peer in FITTING_PEERS..FITTING_PEERS + 5 {
        let statuses = fill(&mem, &mut registry, peer);
        assert!(
            statuses
                .iter()
                .all(|s| *s == Err(CallError::Remote(Status::Busy))),
            "peer {peer}: {statuses:?}"
        );
        assert_eq!(get(&mem, &mut registry, peer, 0).found, 0);
    }
    // A peer already in may not grow either, but may replace a value with one as large.
    let (mut client, mut server) = mem.connect(8, 0);
    let window = OolRef::new(0, MAX_VALUE_LEN as u32);
    let extra = key(PER_PEER);
    let grow = kv::client::put(&extra).ool_args(window);
    let grown = round_trip(&mut client, &mut server, &mut registry, &grow);
    assert_eq!(grown.map(|r| r.value), Err(CallError::Remote(Status::Busy)));
    let first = key(0);
    let replace = kv::client::put(&first).ool_args(window);
    round_trip(&mut client, &mut server, &mut registry, &replace).unwrap();
    // Everyone stored keeps being served.
    for peer in 0..FITTING_PEERS {
        let info = get(&mem, &mut registry, peer, PER_PEER - 1);
        assert_eq!(
            info,
            ValueInfo {
                found: 1,
                len: MAX_VALUE_LEN as u32
            }
        );
    }
    let store = &kv_handler.0;
    assert_eq!(
        store.usage(),
        (budget.max_bytes, FITTING_PEERS as usize * PER_PEER)
    );
    assert_eq!(store.entries(PeerId(FITTING_PEERS)), 0);
    assert_eq!(
        store.bytes(PeerId(FITTING_PEERS)),
        0,
        "a refused peer holds nothing"
    );
}

#[test]
fn a_departed_tenant_gives_its_bytes_back_and_its_id_starts_empty() {
    let mem = Memory::new(16, MAX_VALUE_LEN / PAGE_SIZE);
    let budget = KvBudget {
        max_bytes: 2 * peer_bytes(),
        max_entries: usize::MAX,
    };
    let mut kv_handler = kv::Handler(KvStore::with_budget(budget));
    let mut registry = Registry::new();
    registry.register(&mut kv_handler).unwrap();
    let ok = |statuses: Vec<Result<(), CallError>>| statuses.iter().all(Result::is_ok);
    assert!(ok(fill(&mem, &mut registry, 1)));
    assert!(ok(fill(&mem, &mut registry, 2)));
    assert!(!ok(fill(&mem, &mut registry, 3)));

    registry.forget_peer(PeerId(1));
    // Peer 1's bytes are back: peer 3 now fits.
    assert!(ok(fill(&mem, &mut registry, 3)));
    // A tenant reusing id 1 finds nothing of the old one's, and the budget is full again.
    assert_eq!(
        get(&mem, &mut registry, 1, 0),
        ValueInfo { found: 0, len: 0 }
    );
    assert!(!ok(fill(&mem, &mut registry, 1)));
    assert_eq!(get(&mem, &mut registry, 2, 0).found, 1);

    // Deleting everything gives back the namespace overhead too.
    let (mut client, mut server) = mem.connect(8, 2);
    for i in 0..PER_PEER {
        let key = key(i);
        let delete = kv::client::delete(&key);
        let existed = round_trip(&mut client, &mut server, &mut registry, &delete).unwrap();
        assert_eq!(existed.value.existed, 1);
    }
    assert_eq!(kv_handler.0.usage(), (peer_bytes(), PER_PEER));
}

#[test]
fn the_budget_comes_from_the_environment_and_is_only_ever_lowered() {
    use std::cell::RefCell;
    let logged = RefCell::new(Vec::new());
    let log = |args: std::fmt::Arguments<'_>| logged.borrow_mut().push(args.to_string());
    let heap = 16 << 20;
    let env = xenrpc_proto::ServiceEnv::new("console=hvc0 kv-budget=393216", heap).with_log(&log);
    let lowered = KvBudget::from_env(&env);
    assert_eq!(lowered.max_bytes, 393_216);
    assert_eq!(lowered.max_entries, KvBudget::for_heap(heap).max_entries);
    let env = xenrpc_proto::ServiceEnv::new("kv-budget=999999999", heap).with_log(&log);
    assert_eq!(KvBudget::from_env(&env), KvBudget::for_heap(heap));
    let env = xenrpc_proto::ServiceEnv::new("kv-budget=lots", heap).with_log(&log);
    assert_eq!(KvBudget::from_env(&env), KvBudget::for_heap(heap));
    let logged = logged.into_inner();
    let expected = format!("kv budget 393216 bytes, {} entries", lowered.max_entries);
    assert_eq!(logged[0], expected);
    assert!(
        logged[1].starts_with("kv-budget=999999999 exceeds a quarter"),
        "{logged:?}"
    );
    assert!(
        logged[3].starts_with("ignoring kv-budget=lots"),
        "{logged:?}"
    );
}
