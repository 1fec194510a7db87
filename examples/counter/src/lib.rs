//! An example xenrpc service in a crate of its own: a counter per calling peer.
//!
//! `cargo xtask build --services examples/counter` turns it into a service VM image
//! (`build/counter-service.elf`, booted with `xl create build/counter-service.cfg`) and a host
//! server (`build/counter-service-hostd --socket PATH`); both serve [`services`].
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::collections::BTreeMap;

use xenrpc_proto::{define_service, CallContext, PeerId, ServiceEnv, Status};

define_service! {
    /// One counter per calling peer (a domain in the service VM, a uid on the host).
    pub mod counter {
        name = "counter", id = 1024, version = 1;
        /// Adds its argument to the caller's counter and returns the new value
        /// (`BadArguments` if that would overflow; the counter is then unchanged).
        fn incr = 1 (u64) -> u64;
        /// Returns the caller's counter (0 before its first `incr`).
        fn get = 2 (()) -> u64;
    }
}

/// The counters, by peer.
#[derive(Debug, Default)]
pub struct Counter {
    by_peer: BTreeMap<PeerId, u64>,
}

impl counter::Server for Counter {
    fn incr(&mut self, call: &mut CallContext<'_>, by: u64) -> Result<u64, Status> {
        let value = self.by_peer.entry(call.peer()).or_default();
        *value = value.checked_add(by).ok_or(Status::BadArguments)?;
        Ok(*value)
    }

    fn get(&mut self, call: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        Ok(self.by_peer.get(&call.peer()).copied().unwrap_or(0))
    }

    // A peer that went away (its domain, its device, its last connection) starts from 0 if it
    // comes back, and its entry no longer takes memory.
    fn forget_peer(&mut self, peer: PeerId) {
        self.by_peer.remove(&peer);
    }
}

/// The services of this crate: what the service VM image and the host server serve.
pub fn services(_env: &ServiceEnv<'_>) -> counter::Handler<Counter> {
    counter::Handler(Counter::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenrpc_proto::mem::HeapRegion;
    use xenrpc_proto::{
        CallError, ClientConnection, Registry, RingGeometry, ServerConnection, TypedCall, PAGE_SIZE,
    };

    /// The two shared regions of one connection, on the heap (as in the protocol's tests).
    struct Memory {
        geometry: RingGeometry,
        ring: HeapRegion,
        data: HeapRegion,
    }

    impl Memory {
        fn new() -> Self {
            let geometry = RingGeometry::new(16).unwrap();
            Memory {
                geometry,
                ring: HeapRegion::with_guards(geometry.region_bytes()),
                data: HeapRegion::with_guards(PAGE_SIZE),
            }
        }
    }

    /// A client of peer `peer`, served by `registry` in this thread.
    struct Peer<'m> {
        client: ClientConnection<&'m HeapRegion, &'m HeapRegion>,
        server: ServerConnection<&'m HeapRegion, &'m HeapRegion>,
    }

    impl<'m> Peer<'m> {
        fn connect(memory: &'m Memory, peer: u32) -> Self {
            let (ring, data, geometry) = (&memory.ring, &memory.data, memory.geometry);
            Peer {
                client: ClientConnection::new(ring, data, geometry, 1).unwrap(),
                server: ServerConnection::attach(ring, data, geometry, PeerId(peer)).unwrap(),
            }
        }

        /// One call: the client starts it, the server polls once, the client reads the reply.
        fn call(
            &mut self,
            registry: &mut Registry<'_>,
            call: &TypedCall<'_, u64>,
        ) -> Result<u64, CallError> {
            let pending = self.client.start(call)?;
            self.client.publish();
            let clock = || 1_000_000_000u64;
            let outcome = self.server.poll(registry, &clock, 64);
            assert!(!outcome.broken, "the server broke the connection");
            let completion = self.client.poll_response()?.expect("a response");
            Ok(pending.finish(&completion)?.value)
        }
    }

    #[test]
    fn counts_per_peer_and_forgets_a_peer() {
        let mut set = services(&ServiceEnv::new("", 1 << 20));
        let mut registry = Registry::new();
        registry.register_set(&mut set).unwrap();
        let (memory_a, memory_b) = (Memory::new(), Memory::new());
        let (mut a, mut b) = (Peer::connect(&memory_a, 7), Peer::connect(&memory_b, 8));

        assert_eq!(a.call(&mut registry, &counter::client::incr(&5)), Ok(5));
        assert_eq!(a.call(&mut registry, &counter::client::incr(&2)), Ok(7));
        assert_eq!(b.call(&mut registry, &counter::client::get(&())), Ok(0));
        assert_eq!(b.call(&mut registry, &counter::client::incr(&1)), Ok(1));
        assert_eq!(a.call(&mut registry, &counter::client::get(&())), Ok(7));

        let overflow = a.call(&mut registry, &counter::client::incr(&u64::MAX));
        assert_eq!(overflow, Err(CallError::Remote(Status::BadArguments)));
        assert_eq!(a.call(&mut registry, &counter::client::get(&())), Ok(7));

        registry.forget_peer(PeerId(7));
        assert_eq!(a.call(&mut registry, &counter::client::get(&())), Ok(0));
        assert_eq!(b.call(&mut registry, &counter::client::get(&())), Ok(1));
    }
}
