//! Tenants kept apart: introspection's `list_stats` shows a tenant its own counts only (the
//! totals only to a privileged caller), and `Registry::forget_peer` clears what a departed
//! tenant left (counters, kv namespace), so a later tenant with its id starts empty.

mod common;

use common::*;
use xenrpc_proto::services::arith::{self, Operands};
use xenrpc_proto::services::echo;
use xenrpc_proto::services::introspection::{self, ServiceStatsEntry};
use xenrpc_proto::services::kv::{self, Key, ValueInfo};
use xenrpc_proto::{OolRef, PeerId, Registry, ServiceCounters};

const ADMIN: u32 = 0;
const TENANT_A: u32 = 1;
const TENANT_B: u32 = 2;

fn is_admin(peer: PeerId) -> bool {
    peer.0 == ADMIN
}

/// (calls, errors) per service id as `list_stats` reports them to this client.
fn stats(
    client: &mut Client<'_>,
    server: &mut Server<'_>,
    registry: &mut Registry<'_>,
) -> Vec<(u32, u64, u64)> {
    let call = introspection::client::list_stats(&()).ool_result(OolRef::new(0, 32 * 8));
    let reply = round_trip(client, server, registry, &call).unwrap();
    (0..reply.value.written as usize)
        .map(|i| {
            let entry: ServiceStatsEntry = client.data().read_pod(32 * i).unwrap();
            (entry.id, entry.calls, entry.errors)
        })
        .collect()
}

fn of(stats: &[(u32, u64, u64)], service: u32) -> (u64, u64) {
    stats
        .iter()
        .find(|s| s.0 == service)
        .map(|s| (s.1, s.2))
        .expect("service listed")
}

#[test]
fn a_tenant_sees_its_own_counts_and_only_the_privileged_see_totals() {
    let (mem_a, mem_b, mem_admin) = (Memory::new(16, 1), Memory::new(16, 1), Memory::new(16, 1));
    let (mut a, mut server_a) = mem_a.connect(8, TENANT_A);
    let (mut b, mut server_b) = mem_b.connect(8, TENANT_B);
    let (mut admin, mut server_admin) = mem_admin.connect(8, ADMIN);
    let mut services = Services::new();
    let mut counters = ServiceCounters::new_boxed();
    let mut registry = Registry::with_counters(&mut counters);
    registry.register(&mut services.echo).unwrap();
    registry.register(&mut services.arith).unwrap();
    registry.set_privileged(is_admin);

    let ping = echo::client::ping(&());
    for _ in 0..3 {
        round_trip(&mut a, &mut server_a, &mut registry, &ping).unwrap();
    }
    let div0 = arith::client::div(&Operands { a: 1, b: 0 });
    round_trip(&mut b, &mut server_b, &mut registry, &div0).unwrap_err();

    let seen_by_a = stats(&mut a, &mut server_a, &mut registry);
    assert_eq!(of(&seen_by_a, echo::SERVICE_ID), (3, 0));
    assert_eq!(of(&seen_by_a, arith::SERVICE_ID), (0, 0), "A sees B's call");
    let seen_by_b = stats(&mut b, &mut server_b, &mut registry);
    assert_eq!(of(&seen_by_b, echo::SERVICE_ID), (0, 0), "B sees A's calls");
    assert_eq!(of(&seen_by_b, arith::SERVICE_ID), (1, 1));
    // Each tenant's own list_stats call is counted for it alone.
    assert_eq!(of(&seen_by_b, introspection::SERVICE_ID), (0, 0));

    let seen_by_admin = stats(&mut admin, &mut server_admin, &mut registry);
    assert_eq!(of(&seen_by_admin, echo::SERVICE_ID), (3, 0));
    assert_eq!(of(&seen_by_admin, arith::SERVICE_ID), (1, 1));
    assert_eq!(of(&seen_by_admin, introspection::SERVICE_ID), (2, 0));
}

#[test]
fn a_forgotten_tenant_leaves_nothing_for_the_next_one_with_its_id() {
    let (mem_a, mem_b) = (Memory::new(16, 1), Memory::new(16, 1));
    let (mut a, mut server_a) = mem_a.connect(8, TENANT_A);
    let (mut b, mut server_b) = mem_b.connect(8, TENANT_B);
    let mut services = Services::new();
    let mut counters = ServiceCounters::new_boxed();
    let mut registry = Registry::with_counters(&mut counters);
    registry.register(&mut services.echo).unwrap();
    registry.register(&mut services.kv).unwrap();

    let key = Key::new(b"secret").unwrap();
    for (client, server, value) in [
        (&mut a, &mut server_a, b"from a"),
        (&mut b, &mut server_b, b"from b"),
    ] {
        client.data().write(0, value).unwrap();
        let put = kv::client::put(&key).ool_args(OolRef::new(0, value.len() as u32));
        round_trip(client, server, &mut registry, &put).unwrap();
        round_trip(client, server, &mut registry, &echo::client::ping(&())).unwrap();
    }

    registry.forget_peer(PeerId(TENANT_A));

    // A new tenant with A's id (a reused domid) on fresh rings: no counts, no data.
    let (mut a2, mut server_a2) = mem_a.connect(8, TENANT_A);
    let get = kv::client::get(&key).ool_result(OolRef::new(0, 64));
    let got = round_trip(&mut a2, &mut server_a2, &mut registry, &get).unwrap();
    assert_eq!(got.value, ValueInfo { found: 0, len: 0 });
    let seen = stats(&mut a2, &mut server_a2, &mut registry);
    assert_eq!(of(&seen, echo::SERVICE_ID), (0, 0));
    assert_eq!(of(&seen, kv::SERVICE_ID), (1, 0), "only the get just made");

    // B keeps its data and counts.
    let got = round_trip(&mut b, &mut server_b, &mut registry, &get).unwrap();
    assert_eq!(got.value, ValueInfo { found: 1, len: 6 });
    let mut value = [0u8; 6];
    b.data().read(0, &mut value).unwrap();
    assert_eq!(&value, b"from b");
    let seen = stats(&mut b, &mut server_b, &mut registry);
    assert_eq!(of(&seen, echo::SERVICE_ID), (1, 0));
    assert_eq!(of(&seen, kv::SERVICE_ID), (2, 0));
}
