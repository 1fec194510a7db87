//! # xenrpc-proto: the portable RPC protocol
//!
//! Shared by the Xen service VM (`no_std` + heap), Linux guest clients, the host transport and
//! the tests. `no_std` by default; features: `alloc` (the kv server, `mem::HeapRegion`),
//! `std` (implies `alloc`), `fuzzing` (the `fuzzing` harness).
//!
//! ## A connection
//! Two shared regions, both set up by the transport, both page aligned ([`SharedMemory`]):
//! - the **ring region**: one control page ([`layout::ControlBlock`]: magic, slot count, start
//!   index, the two consumer indices and the two event thresholds, each on its own 128-byte
//!   block), then the request ring and the response ring, each `slots` × [`SLOT_SIZE`] (256) bytes, `slots` a
//!   power of two in 16..=1024 ([`RingGeometry`]; one page or more per ring). Size:
//!   `geometry.region_bytes()`.
//! - the **data region**: the client's pages for out-of-line arguments and results. An
//!   out-of-line reference ([`OolRef`]) is `(offset, len)` into it, in both transports (under
//!   Xen the server maps the client's granted data pages contiguously).
//!
//! A slot is a 64-byte header ([`RequestHeader`] / [`ResponseHeader`]) plus up to
//! [`INLINE_CAPACITY`] (192) bytes of inline arguments / result. There are no producer
//! indices: the producer writes a slot, then stores the entry's free-running index in the
//! header's `seq` word (release), and the consumer takes the slot at its index when `seq`
//! equals it (acquire, then one copy). So a call moves one cache line each way, the line that
//! carries it; the consumer indices are read by the producer only when the free slots it last
//! counted run out, and the thresholds are written only by a side about to sleep. Calls carry service id, method
//! id, interface version, call id, flags ([`FLAG_ONE_WAY`]), an absolute deadline (ns on the
//! transport's [`Clock`], 0 = none), and out-of-line argument and result windows; responses a
//! [`Status`], the inline result, and how many result bytes the handler wrote.
//!
//! Statuses: `UnknownService`/`UnknownMethod`/`VersionMismatch` (checked on every call),
//! `AccessDenied` (registry access check on the transport's peer id), `BadArguments` (unknown
//! flag bits, reserved fields not zero, a window outside the data region or with a non-zero
//! offset and zero length, inline arguments not exactly the method's type, or the handler's
//! verdict), `TooLarge` (inline length over 192, a result that does not fit its window, a
//! handler asking to move more than [`MAX_CALL_COPY`] bytes), `DeadlineExceeded` (deadline
//! passed before dispatch; the handler does not run), `Busy` (handler out of capacity, e.g. a
//! kv quota), `HandlerFault` (the handler failed), `BudgetExceeded` (the handler ran past its
//! CPU budget and was stopped).
//! Ring states no correct client writes break the connection instead ([`Violation`]): a
//! response consumer index out of range, and a two-way request while all response slots are
//! unconsumed (the in-flight cap, at most `slots` two-way calls awaiting responses, exceeded).
//! A slot whose `seq` is not the index expected there holds nothing yet (a client that laps
//! its own ring loses its requests, nobody else's).
//!
//! ## Using it
//! - Client: [`ClientConnection::new`] (lays out the ring region), then
//!   `start(&service::client::method(&args))` → [`Pending`], `publish()` → "notify the server?",
//!   `poll_response()` → [`Completion`] (or `poll_response_into(&mut completion)`, into one the
//!   caller keeps, so that an answer is copied once and moved no further),
//!   `pending.finish(&completion)` → [`Reply`]. Before
//!   sleeping: `prepare_to_wait()` (false = sleep until notified). In-flight calls are capped.
//! - Server: [`ServerConnection::attach`], then `poll(&mut registry, &clock, budget)` →
//!   [`PollOutcome`] (`notify`: wake the client; `more`: budget ran out; `broken`: tear down;
//!   `work`: units charged; `earned`: well-formed two-way requests, what a storm guard
//!   credits), before sleeping `prepare_to_sleep()` (false = sleep until notified). The budget
//!   is **work**, not a request count ([`fair`]): [`REQUEST_COST`] per request plus every
//!   byte its handler moved through the windows (at most [`MAX_CALL_COPY`] per call); a
//!   request starts only if its worst case fits, so a poll never does more than
//!   `max(budget, MAX_REQUEST_COST)`; a server loop passes [`PASS_BUDGET`] to each connection
//!   in turn. Counters: [`ConnectionStats`]; broken state: [`ServerConnection::broken`]
//!   ([`Violation`]).
//! - Services: declare once with [`define_service!`] (see its docs); implement the generated
//!   `Server` trait; put `Handler(impl)` into a [`Registry`] (the [`Dispatcher`] the server
//!   polls with), optionally with an access check per peer. The registry answers the built-in
//!   introspection service. Built in: [`services::introspection`], [`services::echo`]
//!   ([`services::echo::EchoServer`]), [`services::arith`] ([`services::arith::ArithServer`]),
//!   [`services::kv`] (`KvStore` with feature `alloc`, bounded per peer and by a
//!   [`services::kv::KvBudget`] for the whole store). When a tenant goes, the transport calls
//!   [`Registry::forget_peer`]: every handler drops the tenant's state (`forget_peer` of
//!   `ServiceHandler` and of the generated `Server` traits), its counters are cleared.
//!   Introspection's `list_stats` shows a caller its own counts, the totals only to a peer
//!   accepted by [`Registry::set_privileged`].
//! - Handlers get a [`CallContext`]: the peer id (from the transport), private copies of header
//!   and inline arguments, [`OolArgs`] to read the argument window and [`OolResult`] to write
//!   the result straight into the client's buffer (the only copy on the zero-copy path).
//!
//! ## Rules the code keeps
//! Shared memory is reached only through [`region::RegionView`] (all `unsafe` that touches it
//! is in `region.rs`; `mem.rs` has the heap buffer's own): aligned 32-bit atomics, never a
//! reference to peer-writable bytes. Every slot
//! is copied once into private memory, then validated; every index, length and window is
//! checked against private state with checked arithmetic. A request the server can read gets a
//! status; ring state no correct client writes breaks the connection; both are counted. The
//! client validates responses the same way. Neither side blocks: waiting is the transport's
//! job (`publish`/`poll` say whether to notify; `prepare_to_*` arm the event threshold and
//! re-check, closing the sleep/publish race as in Xen's `io/ring.h`).
//!
//! ## Tests
//! `cargo test -p xenrpc-proto` (the tests turn on `std` and `fuzzing` themselves): unit and
//! property tests of the ring arithmetic and of arbitrary client/server interleavings with a
//! hostile peer (`tests/ring_props.rs`), conversations for every status (`conversation.rs`),
//! notification thresholds (`notify.rs`), hostile rings in both directions (`hostile.rs`), a
//! server thread racing a scribbling thread with guard pages checked (`concurrent.rs`), a
//! client and a server thread that really sleep and wake each other (`threads.rs`), an
//! honest client beside greedy attackers in a round-robin loop, served after at most one budget
//! of each (`fairness.rs`), storm allowance earned only by well-formed two-way calls
//! (`storm.rs`), tenants kept apart in introspection and kv (`tenants.rs`), the kv store's
//! global budget (`kv_budget.rs`) and its footprint charge against a counting allocator
//! (`kv_footprint.rs`), and a seeded 20,000-case replay of the fuzz harness
//! (`fuzz_replay.rs`). The cargo-fuzz target
//! of the same harness is in `fuzz/` at the repository root (see `fuzz/README.md`). Costs of
//! the protocol alone: `cargo run --release -p xenrpc-proto --example proto_bench`.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

// `define_pod!` names the crate `::xenrpc_proto` (zerocopy's derives take a path string), in
// this crate too.
extern crate self as xenrpc_proto;

#[cfg(feature = "alloc")]
extern crate alloc;

/// For `define_service!` expansions (the client objects' `Vec`).
#[cfg(feature = "alloc")]
#[doc(hidden)]
pub mod __alloc {
    pub use alloc::vec;
}

#[cfg(feature = "alloc")]
pub mod caller;
pub mod client;
pub mod fair;
pub mod layout;
#[cfg(feature = "alloc")]
pub mod mem;
pub mod region;
pub mod ring;
pub mod server;
pub mod service;
pub mod services;
pub mod signature;
pub mod storm;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
pub mod wait;
pub mod windows;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

/// Re-exported for `define_service!` expansions in crates without their own zerocopy import.
pub use zerocopy;

#[cfg(feature = "alloc")]
pub use caller::{decode_reply, Caller};
#[cfg(feature = "alloc")]
pub use client::{Arrival, CallTable};
pub use client::{
    CallError, CallRequest, ClientConnection, ClientViolation, Completion, Pending, Reply,
    TypedCall, MAX_IN_FLIGHT,
};
pub use fair::{CopyMeter, MAX_CALL_COPY, MAX_REQUEST_COST, PASS_BUDGET, REQUEST_COST};
pub use layout::{
    GeometryError, OolRef, RequestHeader, ResponseHeader, RingGeometry, SetupError, Status,
    CLIENT_ALIVE, FLAG_ONE_WAY, HEADER_SIZE, INLINE_CAPACITY, PAGE_SIZE, SLOT_SIZE,
};
pub use region::{OutOfBounds, RegionError, RegionView, SharedRegion};
pub use server::{ConnectionStats, PollOutcome, RejectReason, ServerConnection, Violation};
pub use service::{
    AccessCheck, BatchedCall, BytesIn, BytesOut, CallContext, Dispatcher, MethodInfo, OolArgs,
    OolError, OolResult, Platform, PlatformError, Registry, RegistryError, Restricted,
    ServiceCounters, ServiceEnv, ServiceHandler, ServiceInfo, ServiceSet, ServiceUnavailable,
    FIRST_USER_SERVICE_ID, MAX_BATCH, MAX_COUNTED_PEERS, MAX_SERVICES,
};
pub use storm::{EventStorm, EventStormGuard};
pub use transport::{Clock, Notify, PeerId, SharedMemory};
