//! A server thread runs over a connection while another thread, the hostile client, writes
//! random words into the ring and data pages at the same time. The server must not panic,
//! must terminate, must break the connection or keep replying, and must not write outside the
//! regions (guard pages checked afterwards).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use common::*;
use xenrpc_proto::layout::{ctrl, slot_seq, SLOT_SIZE};
use xenrpc_proto::{PeerId, ServerConnection, SharedRegion, PAGE_SIZE};

/// xorshift64*: a small deterministic generator for the scribbler.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SCRIBBLES: usize = 100_000;
/// Polls after which the server loop gives up; reaching it is a failure (it must terminate
/// by itself well before).
const MAX_POLLS: usize = 5_000_000;

/// Attaches before the scribbling starts (attach itself refuses a bad control page).
fn attach(mem: &Memory) -> Server<'_> {
    ServerConnection::attach(&mem.ring, &mem.data, mem.geometry, PeerId(3)).unwrap()
}

/// What the server thread shows the scribbler as it goes.
#[derive(Default)]
struct Progress {
    /// Polls so far; `usize::MAX` once the server returned.
    polls: AtomicUsize,
    /// Requests taken so far (the server's consumer index, as it started at 0).
    taken: AtomicU32,
}

/// Runs the server in a thread until `stop` is set and no request is pending, or the
/// connection breaks; returns (broken, responses, requests, polls).
fn serve(
    mut server: Server<'_>,
    stop: &AtomicBool,
    progress: &Progress,
) -> (bool, u64, u64, usize) {
    let mut services = Services::new();
    let mut registry = services.registry();
    let mut polls = 0;
    while polls < MAX_POLLS {
        polls += 1;
        progress.polls.store(polls, Ordering::Release);
        let taken = server.stats().requests as u32;
        progress.taken.store(taken, Ordering::Release);
        let outcome = server.poll(&mut registry, &clock(), 16);
        if outcome.broken {
            break;
        }
        if stop.load(Ordering::Acquire) && !server.has_requests() {
            break;
        }
    }
    progress.polls.store(usize::MAX, Ordering::Release);
    let stats = *server.stats();
    assert_eq!(stats.by_status.iter().sum::<u64>(), stats.requests);
    assert_eq!(stats.requests, stats.responses + stats.one_way);
    (
        server.broken().is_some(),
        stats.responses,
        stats.requests,
        polls,
    )
}

#[test]
fn scribbling_everywhere_breaks_or_is_answered() {
    for seed in 1..=6u64 {
        let mem = Memory::new(16, 2);
        RawClient::lay_out(&mem); // a valid control page to attach to
        let ring = SharedRegion::new(&mem.ring).unwrap();
        let data = SharedRegion::new(&mem.data).unwrap();
        let stop = AtomicBool::new(false);
        let progress = Progress::default();
        let (broken, responses, requests, polls) = std::thread::scope(|s| {
            let server = attach(&mem);
            let server = s.spawn(|| serve(server, &stop, &progress));
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for i in 0..SCRIBBLES {
                // Now and then let the server look.
                if i % 256 == 0 {
                    let seen = progress.polls.load(Ordering::Acquire);
                    while progress.polls.load(Ordering::Acquire) == seen && seen != usize::MAX {
                        std::thread::yield_now();
                    }
                }
                let (view, len) = if rng.below(3) == 0 {
                    (data.view(), data.len())
                } else {
                    (ring.view(), ring.len())
                };
                // Bias towards the control block, the request slots' sequence words and small
                // values, to reach the index checks and publish requests.
                let mut value = if rng.below(2) == 0 {
                    rng.below(40) as u32
                } else {
                    rng.next() as u32
                };
                let offset = match rng.below(4) {
                    0 => rng.below(160) as usize * 4,
                    1 if len == ring.len() => {
                        // Publishes one of the next ring's worth of requests, whatever its
                        // slot holds, in any order.
                        let ahead = rng.below(u64::from(mem.geometry.slots())) as u32;
                        value = progress.taken.load(Ordering::Acquire).wrapping_add(ahead);
                        mem.geometry.request_slot_offset(value) + slot_seq::REQUEST
                    }
                    _ => rng.below(len as u64 / 4) as usize * 4,
                };
                view.store_u32(offset, value, Ordering::Relaxed).unwrap();
            }
            stop.store(true, Ordering::Release);
            server.join().expect("server thread panicked")
        });
        assert!(polls < MAX_POLLS, "seed {seed}: server did not terminate");
        assert!(
            broken || responses > 0,
            "seed {seed}: neither broken nor answering (polls {polls}, requests {requests})"
        );
        assert!(
            mem.guards_intact(),
            "seed {seed}: write outside the regions"
        );
    }
}

#[test]
fn scribbled_slots_with_valid_indices_are_all_answered() {
    for seed in 1..=4u64 {
        let mem = Memory::new(16, 2);
        RawClient::lay_out(&mem);
        let ring = SharedRegion::new(&mem.ring).unwrap();
        let data = SharedRegion::new(&mem.data).unwrap();
        let stop = AtomicBool::new(false);
        let progress = Progress::default();
        let slots = mem.geometry.slots();
        let (mut published, mut consumed) = (0u32, 0u32);
        let (broken, responses, requests, polls) = std::thread::scope(|s| {
            let server = attach(&mem);
            let server = s.spawn(|| serve(server, &stop, &progress));
            let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let v = ring.view();
            for i in 0..SCRIBBLES {
                // Random words anywhere in the request and response rings and the data pages.
                if rng.below(2) == 0 {
                    let offset =
                        PAGE_SIZE + rng.below(((ring.len() - PAGE_SIZE) / 4) as u64) as usize * 4;
                    // Not the sequence words: publishing is what the indices below do.
                    let in_slot = (offset - PAGE_SIZE) % SLOT_SIZE;
                    if in_slot == slot_seq::REQUEST || in_slot == slot_seq::RESPONSE {
                        continue;
                    }
                    let value = if rng.below(2) == 0 {
                        rng.below(8) as u32
                    } else {
                        rng.next() as u32
                    };
                    v.store_u32(offset, value, Ordering::Relaxed).unwrap();
                } else {
                    let offset = rng.below(data.len() as u64 / 4) as usize * 4;
                    data.view()
                        .store_u32(offset, rng.next() as u32, Ordering::Relaxed)
                        .unwrap();
                }
                // Every so often: consume all responses, then publish within flow control
                // (never more than `slots` requests past the responses consumed).
                if i % 64 == 0 {
                    let response_seq = |index| {
                        let offset = mem.geometry.response_slot_offset(index);
                        v.load_u32(offset + slot_seq::RESPONSE, Ordering::Acquire)
                            .unwrap()
                    };
                    while response_seq(consumed) == consumed {
                        consumed = consumed.wrapping_add(1);
                    }
                    v.store_u32(ctrl::RSP_CONS, consumed, Ordering::Release)
                        .unwrap();
                    let room = slots - published.wrapping_sub(consumed);
                    for _ in 0..rng.below(u64::from(room) + 1) {
                        let offset = mem.geometry.request_slot_offset(published);
                        v.store_u32(offset + slot_seq::REQUEST, published, Ordering::Release)
                            .unwrap();
                        published = published.wrapping_add(1);
                    }
                }
            }
            stop.store(true, Ordering::Release);
            server.join().expect("server thread panicked")
        });
        assert!(polls < MAX_POLLS, "seed {seed}: server did not terminate");
        assert!(
            !broken,
            "seed {seed}: a client keeping valid indices must not be cut off"
        );
        assert_eq!(
            requests,
            u64::from(published),
            "seed {seed}: every published request handled"
        );
        assert!(responses > 0, "seed {seed}");
        assert!(
            mem.guards_intact(),
            "seed {seed}: write outside the regions"
        );
    }
}
