//! Fixtures for the protocol tests: a connection over two guarded heap regions, the built-in
//! services in a registry, and a synchronous round trip (client start → server poll → client
//! poll) in one thread.
#![allow(dead_code)]

use std::sync::atomic::Ordering;
use xenrpc_proto::mem::HeapRegion;
use xenrpc_proto::services::arith::{self, ArithServer};
use xenrpc_proto::services::echo::{self, EchoServer};
use xenrpc_proto::services::kv::{self, KvStore};

use xenrpc_proto::layout::{ctrl, slot_seq};
use xenrpc_proto::{
    CallError, ClientConnection, Dispatcher, PeerId, Registry, Reply, RequestHeader,
    ResponseHeader, RingGeometry, ServerConnection, SharedRegion, TypedCall, HEADER_SIZE,
    INLINE_CAPACITY, PAGE_SIZE,
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
        self.connect_at(max_in_flight, peer, 0)
    }

    /// A connection whose ring indices start at `start`.
    pub fn connect_at(
        &self,
        max_in_flight: usize,
        peer: u32,
        start: u32,
    ) -> (Client<'_>, Server<'_>) {
        let client = ClientConnection::with_start_index(
            &self.ring,
            &self.data,
            self.geometry,
            max_in_flight,
            start,
        )
        .unwrap();
        let server =
            ServerConnection::attach(&self.ring, &self.data, self.geometry, PeerId(peer)).unwrap();
        (client, server)
    }

    /// A hostile client writing raw slots (see [`RawClient`]) and the server attached to it.
    pub fn connect_raw(&self, peer: u32) -> (RawClient<'_>, Server<'_>) {
        let raw = RawClient::new(self);
        let server =
            ServerConnection::attach(&self.ring, &self.data, self.geometry, PeerId(peer)).unwrap();
        (raw, server)
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

/// A client that writes raw headers and indices (a hostile or buggy peer), bypassing every
/// check `ClientConnection` makes.
pub struct RawClient<'m> {
    pub ring: SharedRegion<&'m HeapRegion>,
    pub data: SharedRegion<&'m HeapRegion>,
    pub geometry: RingGeometry,
    pub req_prod: u32,
    pub rsp_cons: u32,
}

impl<'m> RawClient<'m> {
    /// Lays out the ring region as a real client does (magic, slot count, indices at 0).
    pub fn lay_out(mem: &Memory) {
        ClientConnection::new(&mem.ring, &mem.data, mem.geometry, 1).unwrap();
    }

    /// Lays out the ring region like a real client, then takes over.
    pub fn new(mem: &'m Memory) -> Self {
        Self::lay_out(mem);
        RawClient {
            ring: SharedRegion::new(&mem.ring).unwrap(),
            data: SharedRegion::new(&mem.data).unwrap(),
            geometry: mem.geometry,
            req_prod: 0,
            rsp_cons: 0,
        }
    }

    pub fn header(service_id: u32, method_id: u32, version: u32, call_id: u64) -> RequestHeader {
        RequestHeader {
            call_id,
            service_id,
            method_id,
            version,
            ..RequestHeader::default()
        }
    }

    /// Writes a request into the next slot and publishes it.
    pub fn push(&mut self, header: &RequestHeader, inline: &[u8]) {
        let slot = self.geometry.request_slot_offset(self.req_prod);
        let view = self.ring.view();
        view.write_pod(slot, header).unwrap();
        view.write(slot + HEADER_SIZE, inline).unwrap();
        self.tag_request(self.req_prod, self.req_prod);
        self.req_prod = self.req_prod.wrapping_add(1);
    }

    /// Stores `seq` in the sequence word of the request slot of index `index` (`seq == index`
    /// publishes it).
    pub fn tag_request(&self, index: u32, seq: u32) {
        let offset = self.geometry.request_slot_offset(index) + slot_seq::REQUEST;
        self.ring
            .view()
            .store_u32(offset, seq, Ordering::Release)
            .unwrap();
    }

    pub fn set_rsp_cons(&self, value: u32) {
        self.ring
            .view()
            .store_u32(ctrl::RSP_CONS, value, Ordering::Release)
            .unwrap();
    }

    pub fn load(&self, offset: usize) -> u32 {
        self.ring
            .view()
            .load_u32(offset, Ordering::Acquire)
            .unwrap()
    }

    /// The next response (header and inline bytes), if published; consumes it.
    pub fn pop(&mut self) -> Option<(ResponseHeader, Vec<u8>)> {
        let slot = self.geometry.response_slot_offset(self.rsp_cons);
        if self.load(slot + slot_seq::RESPONSE) != self.rsp_cons {
            return None;
        }
        let header: ResponseHeader = self.ring.view().read_pod(slot).unwrap();
        let mut inline = vec![0u8; (header.inline_len as usize).min(INLINE_CAPACITY)];
        self.ring
            .view()
            .read(slot + HEADER_SIZE, &mut inline)
            .unwrap();
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        self.set_rsp_cons(self.rsp_cons);
        Some((header, inline))
    }
}

/// A server that writes raw responses (a hostile server), for testing the client's checks:
/// `header` into the response slot of index `index`, then `seq` into its sequence word
/// (`seq == index` publishes it).
pub fn write_raw_response(mem: &Memory, index: u32, header: &ResponseHeader, seq: u32) {
    let ring = SharedRegion::new(&mem.ring).unwrap();
    let slot = mem.geometry.response_slot_offset(index);
    ring.view().write_pod(slot, header).unwrap();
    ring.view()
        .store_u32(slot + slot_seq::RESPONSE, seq, Ordering::Release)
        .unwrap();
}
