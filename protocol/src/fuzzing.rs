//! The fuzz harness of the server's validation path, shared by the cargo-fuzz target in
//! `fuzz/` (nightly) and the seeded replay test in `protocol/tests/fuzz_replay.rs` (stable).
//!
//! One case: arbitrary bytes become the ring region and the data region of a connection
//! (behind guard pages); the server attaches and polls with every built-in service while the
//! rest of the input, as a hostile client, rewrites words of both regions between polls. The
//! harness panics (a finding) if the server panics, writes outside the regions, fails to make
//! progress without breaking the connection, or answers more requests than were published.

use crate::layout::{
    ctrl, OolRef, RequestHeader, RingGeometry, LAYOUT_VERSION, PAGE_SIZE, RING_MAGIC,
};
use crate::mem::HeapRegion;
use crate::region::SharedRegion;
use crate::services::arith::{self, ArithServer};
use crate::services::echo::{self, EchoServer};
use crate::services::kv::{self, KvStore};
use crate::{PeerId, Registry, ServerConnection};
use core::sync::atomic::Ordering;

/// What a case did (for corpus statistics in the replay test).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaseReport {
    /// The ring region failed the attach checks (bad magic etc.).
    pub attach_refused: bool,
    /// The server broke the connection.
    pub broken: bool,
    /// Requests the server handled.
    pub requests: u64,
    /// Responses with status `Ok`.
    pub ok: u64,
}

/// A cursor over the fuzz input that yields zeros once exhausted.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }
}

/// A request header from 16 input bytes: small service and method ids, mostly the right
/// version, inline lengths that match the built-in argument types, windows around the data
/// region's size, deadlines on both sides of the clock.
fn plausible_header(r: &[u8], index: u32, data_len: usize) -> RequestHeader {
    let b = |i: usize| r.get(i).copied().unwrap_or(0);
    let u16_at = |i: usize| usize::from(b(i)) | usize::from(b(i + 1)) << 8;
    let window = |i: usize| {
        if b(i) % 4 == 0 {
            return OolRef::NONE;
        }
        let offset = u16_at(i) % (data_len + 64);
        let len = u16_at(i + 2) % (data_len + 64).saturating_sub(offset).max(1);
        OolRef::new(offset as u32, len as u32)
    };
    let service_id = u32::from(b(0) % 5);
    let method_id = u32::from(b(1) % 6);
    // The argument size of (service, method) for the built-in services.
    let right_size = match (service_id, method_id) {
        (0, 2 | 3) | (3, 4) => 4,
        (1, 2) => 192,
        (2, _) => 16,
        (3, _) => 68,
        _ => 0,
    };
    RequestHeader {
        call_id: u64::from(index),
        deadline_ns: match b(13) % 8 {
            0 => 500_000,
            1 => 2_000_000,
            _ => 0,
        },
        service_id,
        method_id,
        version: if b(2) == 0xff { 2 } else { 1 },
        flags: if b(3) == 0xff {
            1 << 3
        } else {
            u32::from(b(3) & 1)
        },
        inline_len: match b(4) % 8 {
            0..=3 => right_size,
            4 => 0,
            5 => 193,
            6 => u32::from(b(4)),
            _ => u32::from(b(4)) << 24,
        },
        // The harness publishes the slot (stores its index here) when the case says so.
        seq: 0,
        ool_args: window(5),
        ool_result: window(9),
        reserved1: [0, u32::from(b(15) == 0xff)],
    }
}

/// Polls per case, and the work budget of each poll (the smallest a poll takes).
const ROUNDS: usize = 8;
const BUDGET: u64 = crate::MAX_REQUEST_COST;

/// Runs one case. Panics on a finding.
///
/// Input layout: mode byte (bit 0: 16 or 32 slots; bits 1-2: data pages; bit 5: indices start
/// at an input-chosen value; bit 6: decoded headers instead of raw slot bytes; bit 7: raw
/// control page instead of a valid one), initial
/// request count, 28 bytes of raw control words, then the initial slot and data contents, and
/// in the last third of the input the hostile client's script for the rounds of polling.
pub fn run_server_case(input: &[u8]) -> CaseReport {
    let mut input = Input { bytes: input };
    let mode = input.byte();
    let initial_requests = input.byte();
    let control = input.take(28);
    let script_len = input.bytes.len() / 3;
    let (content, script) = input.bytes.split_at(input.bytes.len() - script_len);
    let mut content = Input { bytes: content };
    let mut script = Input { bytes: script };

    let slots = if mode & 1 == 0 { 16 } else { 32 };
    let geometry = RingGeometry::new(slots).expect("16 and 32 are valid slot counts");
    let data_pages = usize::from((mode >> 1) & 3);
    let ring_memory = HeapRegion::with_guards(geometry.region_bytes());
    let data_memory = HeapRegion::with_guards(data_pages * PAGE_SIZE);
    let ring = SharedRegion::new(&ring_memory).expect("heap regions are page aligned");
    let data = SharedRegion::new(&data_memory).expect("heap regions are page aligned");

    // Initial request slots: raw fuzz bytes, or (mode bit 6) headers decoded from short
    // recipes so that most requests get past header validation into the handlers.
    if mode & 0x40 == 0 {
        let raw = content.take(geometry.ring_bytes());
        let _ = ring.view().write(PAGE_SIZE, raw);
    } else {
        for index in 0..slots {
            let recipe = content.take(16);
            let header = plausible_header(recipe, index, data.len());
            let slot = geometry.request_slot_offset(index);
            let _ = ring.view().write_pod(slot, &header);
            let inline_len = (header.inline_len as usize).min(crate::INLINE_CAPACITY);
            let _ = ring
                .view()
                .write(slot + crate::HEADER_SIZE, content.take(inline_len));
            // Often a small first word: the length / index field of most argument types.
            let first = recipe.get(12).copied().unwrap_or(0);
            if first % 2 == 0 && inline_len >= 4 {
                let small = u32::from(first / 2 % 70);
                let _ = ring
                    .view()
                    .write(slot + crate::HEADER_SIZE, &small.to_le_bytes());
            }
        }
    }
    let _ = data.view().write(0, content.take(data_pages * PAGE_SIZE));
    let v = ring.view();
    // The hostile client publishes request `index` by storing the index in its slot's sequence
    // word (whatever the slot holds).
    let publish = |index: u32| {
        let seq = geometry.request_seq_offset(index);
        let _ = v.store_u32(seq, index, Ordering::Release);
    };
    let mut published;
    if mode & 0x80 == 0 {
        let _ = v.store_u32(ctrl::MAGIC, RING_MAGIC, Ordering::Relaxed);
        let _ = v.store_u32(ctrl::LAYOUT_VERSION, LAYOUT_VERSION, Ordering::Relaxed);
        let _ = v.store_u32(ctrl::SLOTS, slots, Ordering::Relaxed);
        // Mode bit 5: indices start where the input says (near the wrap, often), not at 0.
        let start = if mode & 0x20 == 0 {
            0
        } else {
            let raw = u32::from_le_bytes(core::array::from_fn(|i| {
                control.get(i).copied().unwrap_or(0)
            }));
            if raw & 1 == 0 {
                0u32.wrapping_sub(raw % 64)
            } else {
                raw
            }
        };
        let _ = v.store_u32(ctrl::START_INDEX, start, Ordering::Relaxed);
        // A small request count so that most cases reach the handlers.
        published = start;
        for _ in 0..u32::from(initial_requests % 40).min(slots) {
            publish(published);
            published = published.wrapping_add(1);
        }
        let _ = v.store_u32(ctrl::RSP_CONS, start, Ordering::Relaxed);
    } else {
        let _ = v.write(0, &control[..control.len().min(16)]);
        let _ = v.write(ctrl::RSP_CONS, control.get(12..16).unwrap_or(&[]));
        let _ = v.write(ctrl::RSP_EVENT, control.get(16..24).unwrap_or(&[]));
        published = v
            .load_u32(ctrl::START_INDEX, Ordering::Relaxed)
            .unwrap_or(0);
    }

    // Where the server's indices start, as it reads it once when it attaches (the scribbles
    // below may change the word later).
    let start = v
        .load_u32(ctrl::START_INDEX, Ordering::Relaxed)
        .unwrap_or(0);
    let mut report = CaseReport::default();
    let Ok(mut server) = ServerConnection::attach(&ring_memory, &data_memory, geometry, PeerId(7))
    else {
        report.attach_refused = true;
        assert!(ring_memory.guards_intact() && data_memory.guards_intact());
        return report;
    };

    let mut echo_handler = echo::Handler(EchoServer);
    let mut arith_handler = arith::Handler(ArithServer);
    let mut kv_handler = kv::Handler(KvStore::new());
    let mut registry = Registry::new();
    registry
        .register(&mut echo_handler)
        .expect("fresh registry");
    registry
        .register(&mut arith_handler)
        .expect("fresh registry");
    registry.register(&mut kv_handler).expect("fresh registry");
    let clock = || 1_000_000u64;

    for _ in 0..ROUNDS {
        let before = server.stats().requests;
        let outcome = server.poll(&mut registry, &clock, BUDGET);
        let handled = server.stats().requests - before;
        assert_eq!(u64::from(outcome.handled), handled);
        assert!(outcome.work <= BUDGET && outcome.handled <= slots);
        assert!(outcome.earned <= outcome.handled);
        if outcome.broken {
            break;
        }
        // A pending request is either handled or the connection breaks: no silent stall.
        if server.has_requests() && outcome.handled == 0 {
            panic!("server neither progressed nor broke the connection: {outcome:?}");
        }
        // Hostile client: consume responses sometimes, publish more, scribble on words.
        let edits = script.byte() % 8;
        for _ in 0..edits {
            let target = script.byte();
            let offset = (script.u32() as usize) & !3;
            let value = script.u32();
            let (region, len) = if target & 1 == 0 {
                (ring.view(), ring.len())
            } else {
                (data.view(), data.len())
            };
            if len != 0 {
                let _ = region.store_u32(offset % len, value, Ordering::Relaxed);
            }
        }
        // Every response the server wrote is consumed; a few more requests are published.
        let consumed = start.wrapping_add(server.stats().responses as u32);
        let _ = v.store_u32(ctrl::RSP_CONS, consumed, Ordering::Release);
        for _ in 0..script.byte() % 8 {
            publish(published);
            published = published.wrapping_add(1);
        }
    }
    let stats = server.stats();
    assert_eq!(stats.by_status.iter().sum::<u64>(), stats.requests);
    assert_eq!(stats.requests, stats.responses + stats.one_way);
    assert!(stats.violations <= ROUNDS as u64);
    report.broken = server.broken().is_some();
    report.requests = stats.requests;
    report.ok = stats.status_count(crate::Status::Ok);
    assert!(
        ring_memory.guards_intact(),
        "server wrote outside the ring region"
    );
    assert!(
        data_memory.guards_intact(),
        "server wrote outside the data region"
    );
    report
}
