//! Fixtures for the protocol tests: a connection over two guarded heap regions, the built-in
//! services in a registry, and a synchronous round trip (client start → server poll → client
//! poll) in one thread.
#![allow(dead_code)]

use xenrpc_proto::mem::HeapRegion;
use xenrpc_proto::services::arith::{self, ArithServer};
use xenrpc_proto::services::echo::{self, EchoServer};
use xenrpc_proto::services::kv::{self, KvStore};
use xenrpc_proto::{
    CallError, ClientConnection, Dispatcher, PeerId, Registry, Reply, RingGeometry,
    ServerConnection, TypedCall, PAGE_SIZE,
};

pub type Client<'m> = ClientConnection<&'m HeapRegion, &'m HeapRegion>;
pub type Server<'m> = ServerConnection<&'m HeapRegion, &'m HeapRegion>;

/// The fixed time of the test clock.
pub const NOW: u64 = 1_000_000_000;

pub fn clock() -> impl Fn() -> u64 {
    || NOW
}

pub struct Memory {
    pub geometry: RingGeometry,
    pub ring: HeapRegion,
    pub data: HeapRegion,
}

impl Memory {
    pub fn new(slots: u32, data_pages: usize) -> Self {
        let geometry = RingGeometry::new(slots).unwrap();
        Memory {
            geometry,
            ring: HeapRegion::with_guards(geometry.region_bytes()),
            data: HeapRegion::with_guards(data_pages * PAGE_SIZE),
        }
    }

    pub fn connect(&self, max_in_flight: usize, peer: u32) -> (Client<'_>, Server<'_>) {
        let client =
            ClientConnection::new(&self.ring, &self.data, self.geometry, max_in_flight).unwrap();
        let server =
            ServerConnection::attach(&self.ring, &self.data, self.geometry, PeerId(peer)).unwrap();
        (client, server)
    }

    pub fn guards_intact(&self) -> bool {
        self.ring.guards_intact() && self.data.guards_intact()
    }
}

pub struct Services {
    pub echo: echo::Handler<EchoServer>,
    pub arith: arith::Handler<ArithServer>,
    pub kv: kv::Handler<KvStore>,
}

impl Services {
    pub fn new() -> Self {
        Services {
            echo: echo::Handler(EchoServer),
            arith: arith::Handler(ArithServer),
            kv: kv::Handler(KvStore::new()),
        }
    }

    pub fn registry(&mut self) -> Registry<'_> {
        let mut registry = Registry::new();
        registry.register(&mut self.echo).unwrap();
        registry.register(&mut self.arith).unwrap();
        registry.register(&mut self.kv).unwrap();
        registry
    }
}

/// One call, served and answered in this thread.
pub fn round_trip<R: zerocopy::FromBytes>(
    client: &mut Client<'_>,
    server: &mut Server<'_>,
    dispatcher: &mut impl Dispatcher,
    call: &TypedCall<'_, R>,
) -> Result<Reply<R>, CallError> {
    let pending = client.start(call)?;
    client.publish();
    let outcome = server.poll(dispatcher, &clock(), 64);
    assert!(
        !outcome.broken,
        "server broke the connection: {:?}",
        server.broken()
    );
    let completion = client
        .poll_response()?
        .expect("a response after the server's poll");
    pending.finish(&completion)
}
