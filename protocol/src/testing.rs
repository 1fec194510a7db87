//! Testing a service in-process, without any transport (feature `testing`): a
//! [`TestServer`] serves a [`ServiceSet`] over a real client and server connection on heap
//! memory, in the calling thread, and is a [`Caller`], so the typed client objects
//! `define_service!` generates work against it exactly as against a service VM.
//!
//! ```
//! use xenrpc_proto::services::{arith, builtins};
//! use xenrpc_proto::testing::TestServer;
//! use xenrpc_proto::{PeerId, ServiceEnv};
//!
//! let env = ServiceEnv::new("", 1 << 20);
//! let mut server = TestServer::new(builtins(&env)).as_peer(PeerId(7));
//! let sum = arith::Client::new(&mut server).add(&arith::Operands { a: 40, b: 2 }).unwrap();
//! assert_eq!(sum.value, 42);
//! ```

use alloc::boxed::Box;
use alloc::sync::Arc;

use crate::caller::Caller;
use crate::client::{CallError, CallRequest, ClientConnection, Completion, TypedCall};
use crate::layout::{RingGeometry, PAGE_SIZE};
use crate::mem::HeapRegion;
use crate::server::{ServerConnection, Violation};
use crate::service::{Registry, ServiceCounters, ServiceSet};
use crate::transport::PeerId;

/// What went wrong in a [`TestServer`] call besides the call's own status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestError {
    /// The call could not be made or its reply not be used.
    Call(CallError),
    /// The server broke the connection (the request broke the protocol).
    Broken(Option<Violation>),
    /// The services could not be registered.
    Registry(crate::RegistryError),
    /// The server did not answer the call (a one-way call, or a deadline that passed).
    NoResponse,
}

impl core::fmt::Display for TestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TestError::Call(e) => write!(f, "the call failed: {e:?}"),
            TestError::Broken(Some(v)) => write!(f, "the server broke the connection: {v:?}"),
            TestError::Broken(None) => f.write_str("the server broke the connection"),
            TestError::Registry(e) => write!(f, "{e}"),
            TestError::NoResponse => f.write_str("the server did not answer the call"),
        }
    }
}

impl std::error::Error for TestError {}

impl From<CallError> for TestError {
    fn from(e: CallError) -> Self {
        TestError::Call(e)
    }
}

type Memory = Arc<HeapRegion>;

/// A service set served in-process (see the module docs).
pub struct TestServer<S> {
    services: S,
    counters: Box<ServiceCounters>,
    ring: Memory,
    data: Memory,
    client: ClientConnection<Memory, Memory>,
    server: ServerConnection<Memory, Memory>,
    peer: PeerId,
    now_ns: u64,
}

impl<S: ServiceSet> TestServer<S> {
    /// Serves `services` to peer 1 over 32 ring slots and 16 data pages.
    pub fn new(services: S) -> Self {
        Self::with_memory(services, 32, 16)
    }

    /// Serves `services` over `slots` ring slots (a power of two in 16..=1024) and
    /// `data_pages` pages of out-of-line data.
    pub fn with_memory(services: S, slots: u32, data_pages: usize) -> Self {
        let geometry = RingGeometry::new(slots).expect("slots: a power of two in 16..=1024");
        let ring: Memory = Arc::new(HeapRegion::new(geometry.region_bytes()));
        let data: Memory = Arc::new(HeapRegion::new(data_pages * PAGE_SIZE));
        let client = ClientConnection::new(ring.clone(), data.clone(), geometry, 1)
            .expect("a fresh ring region lays out");
        let peer = PeerId(1);
        let server = ServerConnection::attach(ring.clone(), data.clone(), geometry, peer)
            .expect("the server attaches to a laid-out ring");
        TestServer {
            services,
            counters: ServiceCounters::new_boxed(),
            ring,
            data,
            client,
            server,
            peer,
            now_ns: 1,
        }
    }

    /// Calls from here on come from `peer` (what the transport would report: a domain id
    /// in the service VM, a uid on the host).
    pub fn as_peer(mut self, peer: PeerId) -> Self {
        self.set_peer(peer);
        self
    }

    /// Switches the calling peer (tenants kept apart, access checks).
    pub fn set_peer(&mut self, peer: PeerId) {
        // The connection's peer is fixed when the server attaches, as in a real transport:
        // attach a fresh server end to the same memory.
        let geometry = self.client.geometry();
        self.client = ClientConnection::new(self.ring.clone(), self.data.clone(), geometry, 1)
            .expect("the ring region lays out again");
        self.server =
            ServerConnection::attach(self.ring.clone(), self.data.clone(), geometry, peer)
                .expect("the server attaches to a laid-out ring");
        self.peer = peer;
    }

    /// The peer calls come from.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The services, e.g. to look at their state after calls.
    pub fn services(&mut self) -> &mut S {
        &mut self.services
    }

    /// The tenant `peer` went away: what a transport does when a client domain is
    /// destroyed (every service drops the peer's state).
    pub fn forget_peer(&mut self, peer: PeerId) -> Result<(), TestError> {
        let mut registry = Registry::with_counters(&mut self.counters);
        registry
            .register_set(&mut self.services)
            .map_err(TestError::Registry)?;
        registry.forget_peer(peer);
        Ok(())
    }

    /// Makes a typed call with no out-of-line bytes.
    pub fn call<R: zerocopy::FromBytes>(
        &mut self,
        call: &TypedCall<'_, R>,
    ) -> Result<R, TestError> {
        let completion = self.call_raw(call.request(), &[], Some(0))?;
        Ok(crate::caller::decode_reply(&completion)?)
    }
}

impl<S: ServiceSet> Caller for TestServer<S> {
    type Error = TestError;

    fn call_raw(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Completion, TestError> {
        let call_id = self
            .client
            .enqueue_with_bytes(request, input, output_capacity)?;
        self.client.publish();
        let mut registry = Registry::with_counters(&mut self.counters);
        registry
            .register_set(&mut self.services)
            .map_err(TestError::Registry)?;
        self.now_ns += 1;
        let now = self.now_ns;
        let outcome = self
            .server
            .poll(&mut registry, &move || now, crate::PASS_BUDGET);
        if outcome.broken {
            return Err(TestError::Broken(self.server.broken()));
        }
        let completion = self.client.poll_response()?.ok_or(TestError::NoResponse)?;
        debug_assert_eq!(completion.call_id, call_id);
        Ok(completion)
    }
}
