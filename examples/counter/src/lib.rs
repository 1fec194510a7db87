//! An example xenrpc service in a crate of its own: a counter per calling peer.
//!
//! `cargo xtask build --services examples/counter` turns it into a service VM image
//! (`build/counter-service.elf`, booted with `xl create build/counter-service.cfg`) and a host
//! server (`build/counter-service-hostd --socket PATH`); both serve [`services`].
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::collections::BTreeMap;

use xenrpc_proto::{define_service, BytesOut, CallContext, PeerId, ServiceEnv, Status};

/// Most bytes `get_blob` writes.
pub const MAX_BLOB: u32 = 1 << 20;

define_service! {
    /// One counter per calling peer (a domain in the service VM, a uid on the host).
    pub mod counter {
        name = "counter", id = 1024, version = 1;
        /// Adds its argument to the caller's counter and returns the new value
        /// (`BadArguments` if that would overflow; the counter is then unchanged).
        fn incr = 1 (u64) -> u64;
        /// Returns the caller's counter (0 before its first `incr`).
        fn get = 2 (()) -> u64;
        /// Writes `n` bytes (`i % 251` at offset `i`, at most `MAX_BLOB`) out of line.
        fn get_blob = 3 (u32) -> u32, blob: bytes;
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

    fn get_blob(
        &mut self,
        _call: &mut CallContext<'_>,
        n: u32,
        blob: &mut BytesOut<'_>,
    ) -> Result<u32, Status> {
        if n > MAX_BLOB {
            return Err(Status::BadArguments);
        }
        let pattern: [u8; 251] = core::array::from_fn(|i| i as u8);
        let mut left = n as usize;
        while left > 0 {
            let chunk = left.min(pattern.len());
            blob.write_all(&pattern[..chunk])?;
            left -= chunk;
        }
        Ok(n)
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
    use xenrpc_proto::testing::{TestError, TestServer};
    use xenrpc_proto::CallError;

    #[test]
    fn counts_per_peer_and_forgets_a_peer() {
        let mut server = TestServer::new(services(&ServiceEnv::new("", 1 << 20)));
        let mut as_peer =
            |peer, f: &dyn Fn(&mut counter::Client<'_, _>) -> Result<u64, TestError>| {
                server.set_peer(PeerId(peer));
                f(&mut counter::Client::new(&mut server))
            };
        assert_eq!(as_peer(7, &|c| c.incr(&5)), Ok(5));
        assert_eq!(as_peer(7, &|c| c.incr(&2)), Ok(7));
        assert_eq!(as_peer(8, &|c| c.get(&())), Ok(0));
        assert_eq!(as_peer(8, &|c| c.incr(&1)), Ok(1));
        assert_eq!(
            as_peer(7, &|c| c.incr(&u64::MAX)),
            Err(TestError::Call(CallError::Remote(Status::BadArguments)))
        );
        assert_eq!(as_peer(7, &|c| c.get(&())), Ok(7));
        server.forget_peer(PeerId(7)).unwrap();
        server.set_peer(PeerId(7));
        assert_eq!(counter::Client::new(&mut server).get(&()), Ok(0));
    }

    #[test]
    fn a_blob_travels_out_of_line() {
        let mut server = TestServer::new(services(&ServiceEnv::new("", 1 << 20)));
        let (len, blob) = counter::Client::new(&mut server).get_blob(&10_000).unwrap();
        assert_eq!((len, blob.len()), (10_000, 10_000));
        assert!(blob.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(
            counter::Client::new(&mut server).get_blob(&(MAX_BLOB + 1)),
            Err(TestError::Call(CallError::Remote(Status::BadArguments)))
        );
    }
}
