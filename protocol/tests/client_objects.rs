//! Bytes without hand-placed offsets: the client's window allocator, the typed client objects
//! `define_service!` generates, every combination of `bytes` in and out, and the public
//! in-process fixture (`testing::TestServer`) they run against.

mod common;

use common::{clock, Memory, Services};
use xenrpc_proto::services::{arith, builtins, echo, introspection, kv};
use xenrpc_proto::testing::{TestError, TestServer};
use xenrpc_proto::{
    define_pod, define_service, BytesIn, BytesOut, CallContext, CallError, PeerId, ServiceEnv,
    Status, PAGE_SIZE,
};

define_pod! {
    pub struct Repeat {
        pub times: u32,
        pub fill: u8,
        pub reserved: [u8; 3],
    }
}

define_service! {
    /// One method per combination of out-of-line bytes.
    pub mod shapes {
        name = "shapes", id = 2000, version = 1;
        /// No bytes: the sum of the argument's fields.
        fn plain = 1 (Repeat) -> u64;
        /// Bytes in: how many bytes equal `fill`.
        fn count = 2 (Repeat, data: bytes) -> u64;
        /// Bytes out: `fill` repeated `times` times.
        fn make = 3 (Repeat) -> u32, out: bytes;
        /// Both: the input repeated `times` times.
        fn repeat = 4 (Repeat, data: bytes) -> u32, out: bytes;
    }
}

struct ShapesServer;

impl shapes::Server for ShapesServer {
    fn plain(&mut self, _: &mut CallContext<'_>, args: Repeat) -> Result<u64, Status> {
        Ok(u64::from(args.times) + u64::from(args.fill))
    }

    fn count(
        &mut self,
        _: &mut CallContext<'_>,
        args: Repeat,
        data: &BytesIn<'_>,
    ) -> Result<u64, Status> {
        let mut n = 0;
        data.for_each_chunk(|chunk| {
            n += chunk.iter().filter(|&&b| b == args.fill).count() as u64;
            Ok::<(), Status>(())
        })?;
        Ok(n)
    }

    fn make(
        &mut self,
        _: &mut CallContext<'_>,
        args: Repeat,
        out: &mut BytesOut<'_>,
    ) -> Result<u32, Status> {
        for _ in 0..args.times {
            out.write_all(&[args.fill])?;
        }
        Ok(out.written() as u32)
    }

    fn repeat(
        &mut self,
        _: &mut CallContext<'_>,
        args: Repeat,
        data: &BytesIn<'_>,
        out: &mut BytesOut<'_>,
    ) -> Result<u32, Status> {
        for _ in 0..args.times {
            out.copy_from(data, 0, data.len())?;
        }
        Ok(out.written() as u32)
    }
}

fn repeat(times: u32, fill: u8) -> Repeat {
    Repeat {
        times,
        fill,
        reserved: [0; 3],
    }
}

#[test]
fn every_combination_of_bytes_travels_through_the_client_object() {
    let mut server = TestServer::new(shapes::Handler(ShapesServer));
    let mut client = shapes::Client::new(&mut server);
    assert_eq!(client.plain(&repeat(40, 2)).unwrap(), 42);
    assert_eq!(client.count(&repeat(0, b'a'), b"banana").unwrap(), 3);
    let (n, bytes) = client.make(&repeat(10_000, b'x')).unwrap();
    assert_eq!((n, bytes.len()), (10_000, 10_000));
    assert!(bytes.iter().all(|&b| b == b'x'));
    let (n, bytes) = client.repeat(&repeat(3, 0), b"ab").unwrap();
    assert_eq!((n, bytes.as_slice()), (6, &b"ababab"[..]));
    // A result larger than the room the caller gave is refused as such.
    let mut small = shapes::Client::new(&mut server).output_capacity(4);
    assert_eq!(
        small.make(&repeat(5, b'x')).unwrap_err(),
        TestError::Call(CallError::Remote(Status::TooLarge))
    );
    assert_eq!(small.make(&repeat(4, b'x')).unwrap().1, b"xxxx");
}

#[test]
fn the_built_ins_answer_through_their_client_objects() {
    let env = ServiceEnv::new("", 16 << 20);
    let mut server = TestServer::new(builtins(&env)).as_peer(PeerId(3));
    let key = kv::Key::new(b"colour").unwrap();
    kv::Client::new(&mut server).put(&key, b"green").unwrap();
    let (info, value) = kv::Client::new(&mut server).get(&key).unwrap();
    assert_eq!((info.found, value.as_slice()), (1, &b"green"[..]));
    let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let (len, echoed) = echo::Client::new(&mut server)
        .echo_ool(&(), &payload)
        .unwrap();
    assert_eq!((len.len, echoed), (10_000, payload));
    let (listing, entries) = introspection::Client::new(&mut server)
        .list_services(&())
        .unwrap();
    assert_eq!(listing.total, 4);
    assert_eq!(entries.len(), 4 * 32);
    // Another tenant does not see the first one's key; forgetting the first frees it.
    server.set_peer(PeerId(4));
    assert_eq!(kv::Client::new(&mut server).get(&key).unwrap().0.found, 0);
    server.forget_peer(PeerId(3)).unwrap();
    server.set_peer(PeerId(3));
    assert_eq!(kv::Client::new(&mut server).get(&key).unwrap().0.found, 0);
    assert_eq!(
        arith::Client::new(&mut server)
            .div(&arith::Operands { a: 1, b: 0 })
            .unwrap_err(),
        TestError::Call(CallError::Remote(Status::BadArguments))
    );
}

#[test]
fn calls_in_flight_get_disjoint_windows_given_back_on_completion() {
    let mem = Memory::new(16, 4);
    let (mut client, mut server) = mem.connect(8, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    let inputs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
    let pending: Vec<_> = inputs
        .iter()
        .map(|input| {
            client
                .start_with_bytes(&echo::client::echo_ool(&()), input, Some(input.len()))
                .unwrap()
        })
        .collect();
    assert_eq!(client.windows().held(), 12);
    client.publish();
    server.poll(&mut registry, &clock(), u64::MAX);
    for (input, pending) in inputs.iter().zip(pending) {
        let completion = client.poll_response().unwrap().unwrap();
        assert_eq!(completion.bytes(), input.as_slice());
        assert_eq!(
            pending.finish(&completion).unwrap().value.len as usize,
            input.len()
        );
    }
    assert_eq!(client.windows().held(), 0);
    // More than the region holds is refused before anything is sent.
    let too_big = vec![0u8; 4 * PAGE_SIZE + 1];
    assert_eq!(
        client
            .start_with_bytes(&echo::client::echo_ool(&()), &too_big, Some(0))
            .unwrap_err(),
        CallError::NoRoom {
            needed: 4 * PAGE_SIZE + 1
        }
    );
    assert_eq!((client.windows().held(), client.in_flight()), (0, 0));
}
