//! A hostile client rewrites its ring and data pages while its calls are in flight. The server
//! must not crash (it maps every client region between inaccessible guard pages, so touching
//! one byte outside what the client shared would kill it), must not hang, must answer or close
//! the hostile connection, and must keep serving an honest client correctly throughout, without
//! ever writing into the honest client's memory outside the result windows it named.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Rng, ServerProcess, TIMEOUT};
use xenrpc_host::client::{Client, ClientError, ClientOptions};
use xenrpc_host::link::Link;
use xenrpc_host::services::admin;
use xenrpc_host::shm::MemfdRegion;
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::layout::ctrl;
use xenrpc_proto::services::echo;
use xenrpc_proto::{CallError, OolRef, SharedMemory, SharedRegion, Status};

const DATA_LEN: usize = 64 * 1024;
const CANARY_FROM: usize = 32 * 1024;
const HOSTILE_ROUNDS: u64 = 6;
const STORM: Duration = Duration::from_millis(400);

fn canary(i: usize) -> u8 {
    (i as u8).wrapping_mul(13) ^ 0x5c
}

/// Values that stress index and length checks.
fn nasty_u32(rng: &mut Rng) -> u32 {
    const SPECIAL: [u32; 10] = [
        0,
        1,
        63,
        64,
        65,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fff0,
        0xffff_ffff,
        4096,
    ];
    if rng.below(2) == 0 {
        SPECIAL[rng.below(SPECIAL.len() as u64) as usize]
    } else {
        rng.next_u64() as u32
    }
}

/// Scribbles over a second mapping of the hostile client's regions until `stop`. Mode 0 hits
/// everything (the control block too, which soon breaks the connection), mode 1 the ring
/// slots and the data, mode 2 only the data (so garbage calls keep flowing and get answers).
fn scribble(
    ring: MemfdRegion,
    data: MemfdRegion,
    seed: u64,
    mode: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let ring = SharedRegion::new(ring).unwrap();
    let data = SharedRegion::new(data).unwrap();
    let control_fields = [
        ctrl::RSP_CONS,
        ctrl::RSP_EVENT,
        ctrl::CLIENT_ALIVE,
        ctrl::REQ_CONS,
        ctrl::REQ_EVENT,
        ctrl::SLOTS,
        ctrl::MAGIC,
    ];
    let mut rng = Rng::new(seed);
    let mut writes = 0;
    while !stop.load(Ordering::Relaxed) {
        let value = nasty_u32(&mut rng);
        let slots_from = xenrpc_proto::PAGE_SIZE as u64;
        let target = match mode {
            0 => rng.below(4),
            1 => 1 + rng.below(3),
            _ => 3,
        };
        let (view, offset) = match target {
            0 => (
                ring.view(),
                control_fields[rng.below(control_fields.len() as u64) as usize],
            ),
            1 => (ring.view(), (rng.below(ring.len() as u64) & !3) as usize),
            2 => (
                ring.view(),
                ((slots_from + rng.below(ring.len() as u64 - slots_from)) & !3) as usize,
            ),
            _ => (data.view(), (rng.below(data.len() as u64) & !3) as usize),
        };
        view.store_u32(offset, value, Ordering::Relaxed).unwrap();
        writes += 1;
        if writes % 64 == 0 {
            std::thread::yield_now();
        }
    }
    writes
}

/// One honest echo through the canary-protected client; panics on any wrong answer.
fn honest_echo(client: &mut Client, round: u32) {
    let size = 4096 + (round as usize % 7) * 1000;
    let payload: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(round | 1) as u8)
        .collect();
    client.data().write(0, &payload).unwrap();
    let call = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, size as u32))
        .ool_result(OolRef::new(12 * 1024, size as u32));
    let reply = client
        .call(&call, Some(TIMEOUT))
        .expect("honest call failed");
    assert_eq!(reply.ool_written as usize, size);
    let mut echoed = vec![0u8; size];
    client.data().read(12 * 1024, &mut echoed).unwrap();
    assert_eq!(echoed, payload, "honest echo garbled in round {round}");
}

#[derive(Debug, Default)]
struct Outcomes {
    ok: u64,
    status: u64,
    timed_out: u64,
    closed: u64,
    broken_seen_by_client: u64,
}

#[test]
fn hostile_client_cannot_crash_stall_or_reach_others() {
    let mut server = ServerProcess::start(&[]);
    let mut honest = server.connect_with(ClientOptions {
        data_len: DATA_LEN,
        ..ClientOptions::default()
    });
    let canary_bytes: Vec<u8> = (CANARY_FROM..DATA_LEN).map(canary).collect();
    honest.data().write(CANARY_FROM, &canary_bytes).unwrap();

    let mut outcomes = Outcomes::default();
    let mut honest_round = 0u32;
    for round in 0..HOSTILE_ROUNDS {
        let link = Link::connect(server.path(), DATA_LEN, TIMEOUT).unwrap();
        let ring_copy = MemfdRegion::map_received(
            link.ring.fd().try_clone_to_owned().unwrap(),
            link.ring.len(),
        )
        .unwrap();
        let data_copy = MemfdRegion::map_received(
            link.data.fd().try_clone_to_owned().unwrap(),
            link.data.len(),
        )
        .unwrap();
        let options = ClientOptions {
            data_len: DATA_LEN,
            spin: SpinPolicy::micros(20),
            ..ClientOptions::default()
        };
        let mut hostile = Client::from_link(link, options).unwrap();
        // One clean call first, so the server has attached before the pages turn to garbage.
        hostile
            .call(&echo::client::ping(&()), Some(TIMEOUT))
            .unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let scribbler = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                scribble(ring_copy, data_copy, 0x9e37_79b9 + round, round % 3, stop)
            })
        };
        let mut rng = Rng::new(round + 1);
        let storm_end = Instant::now() + STORM;
        while Instant::now() < storm_end {
            // Calls with windows anywhere, valid or not (the client library refuses the
            // invalid ones itself; the scribbler then corrupts the valid ones in flight).
            let args = OolRef::new(rng.below(DATA_LEN as u64) as u32, rng.below(8192) as u32);
            let result = OolRef::new(rng.below(DATA_LEN as u64) as u32, rng.below(8192) as u32);
            let started = (0..1 + rng.below(4))
                .filter_map(|_| {
                    hostile
                        .start(
                            &echo::client::echo_ool(&())
                                .ool_args(args)
                                .ool_result(result),
                        )
                        .ok()
                })
                .collect::<Vec<_>>();
            hostile.flush();
            let mut closed = false;
            for pending in started {
                match hostile.finish(pending, Some(Duration::from_millis(300))) {
                    Ok(_) => outcomes.ok += 1,
                    Err(ClientError::Call(CallError::Remote(_))) => outcomes.status += 1,
                    Err(ClientError::TimedOut) => outcomes.timed_out += 1,
                    Err(ClientError::ServerGone) => {
                        outcomes.closed += 1;
                        closed = true;
                        break;
                    }
                    Err(ClientError::Call(_)) => {
                        outcomes.broken_seen_by_client += 1;
                        closed = true;
                        break;
                    }
                    Err(e) => panic!("unexpected hostile outcome: {e}"),
                }
            }
            honest_echo(&mut honest, honest_round);
            honest_round += 1;
            if closed {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let writes = scribbler.join().expect("scribbler panicked");
        assert!(writes > 0);
        drop(hostile);
        assert!(
            server.child.is_running(),
            "server died during hostile round {round}"
        );
    }

    // The server is alive, still answers the honest client correctly, and never wrote into the
    // honest client's region outside the windows it named.
    for _ in 0..50 {
        honest_echo(&mut honest, honest_round);
        honest_round += 1;
    }
    let mut after = vec![0u8; DATA_LEN - CANARY_FROM];
    honest.data().read(CANARY_FROM, &mut after).unwrap();
    assert!(
        after == canary_bytes,
        "server wrote outside the honest client's result windows"
    );
    let stats = honest
        .call(&admin::client::stats(&()), Some(TIMEOUT))
        .unwrap()
        .value;
    eprintln!("hostile outcomes: {outcomes:?}; server counters: {stats:?}");
    assert_eq!(
        stats.connected, 1,
        "hostile connections were not all cleaned up"
    );
    assert!(server.child.is_running());
    let unknown = honest.call(
        &xenrpc_proto::TypedCall::<()>::new(4242, 1, 1, &[]),
        Some(TIMEOUT),
    );
    assert!(matches!(
        unknown,
        Err(ClientError::Call(CallError::Remote(Status::UnknownService)))
    ));
}
