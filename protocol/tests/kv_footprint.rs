//! The kv store's footprint charge against real heap use: a counting global allocator measures
//! what storing 256 one-byte keys takes (the case the byte count alone undercounts a
//! hundredfold), and the store must charge at least that.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use common::*;
use xenrpc_proto::services::kv::{self, Key, KvStore, ENTRY_OVERHEAD, NAMESPACE_OVERHEAD};
use xenrpc_proto::{PeerId, Registry};

/// Counts live heap bytes two ways: as requested, and as glibc malloc really takes them
/// (an 8-byte header, rounded up to 16, at least 32 bytes per block).
struct Counting;

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static TAKEN: AtomicUsize = AtomicUsize::new(0);

fn taken(layout: Layout) -> usize {
    (layout.size() + 8).div_ceil(16).max(2) * 16
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        REQUESTED.fetch_add(layout.size(), Ordering::Relaxed);
        TAKEN.fetch_add(taken(layout), Ordering::Relaxed);
        // SAFETY: the caller's layout contract carries over.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size(), Ordering::Relaxed);
        TAKEN.fetch_sub(taken(layout), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn the_charge_covers_the_heap_that_256_one_byte_keys_take() {
    let mem = Memory::new(16, 1);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut kv_handler = kv::Handler(KvStore::new());
    let mut registry = Registry::new();
    registry.register(&mut kv_handler).unwrap();
    let keys: Vec<Key> = (0..=255u8).map(|b| Key::new(&[b]).unwrap()).collect();

    let (requested_before, taken_before) = (
        REQUESTED.load(Ordering::Relaxed),
        TAKEN.load(Ordering::Relaxed),
    );
    for key in &keys {
        round_trip(
            &mut client,
            &mut server,
            &mut registry,
            &kv::client::put(key),
        )
        .unwrap();
    }
    let requested = REQUESTED.load(Ordering::Relaxed) - requested_before;
    let taken = TAKEN.load(Ordering::Relaxed) - taken_before;
    let store = &kv_handler.0;
    let (charged, entries) = store.usage();
    assert_eq!(entries, 256);
    assert_eq!(store.bytes(PeerId(1)), charged);
    println!(
        "256 one-byte keys: requested {requested} B, taken {taken} B, charged {charged} B \
         ({} B per entry, overhead {ENTRY_OVERHEAD} + namespace {NAMESPACE_OVERHEAD})",
        charged / 256
    );
    assert!(requested <= taken);
    assert!(
        charged >= taken,
        "charged {charged} B for {taken} B of heap"
    );
    // Not absurdly more either: within twice the heap really taken.
    assert!(charged <= 2 * taken, "charged {charged} B for {taken} B");
}
