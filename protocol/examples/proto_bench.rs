//! Cost of the protocol itself, without any transport: prints numbers, asserts nothing about
//! time. `cargo run --release -p xenrpc-proto --example proto_bench`
//!
//! - one thread: client start + publish, server poll, client poll (ping, add, 4 KiB echo);
//! - two threads spinning on the shared indices (no wake-ups): round-trip time of a ping
//!   (skipped with `-- --one-thread`);
//! - `-- --pings N`: only N typed pings in one thread (start, publish, poll,
//!   poll_response_into, finish), nothing timed: for instruction counts under callgrind (run it with two N and
//!   divide the difference).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use xenrpc_proto::mem::HeapRegion;
use xenrpc_proto::services::arith::{self, ArithServer, Operands};
use xenrpc_proto::services::echo::{self, EchoServer};
use xenrpc_proto::{
    CallRequest, ClientConnection, Completion, OolRef, PeerId, Registry, RingGeometry,
    ServerConnection, PASS_BUDGET,
};

const CALLS: u32 = 200_000;

fn main() {
    let geometry = RingGeometry::new(64).unwrap();
    let ring = HeapRegion::new(geometry.region_bytes());
    let data = HeapRegion::new(16 * 4096);
    let clock = || 0u64;

    let mut echo_handler = echo::Handler(EchoServer);
    if let Some(pings) = pings_only() {
        let mut client = ClientConnection::new(&ring, &data, geometry, 32).unwrap();
        let mut server = ServerConnection::attach(&ring, &data, geometry, PeerId(1)).unwrap();
        let mut registry = Registry::new();
        registry.register(&mut echo_handler).unwrap();
        let ping = echo::client::ping(&());
        let mut completion = Completion::default();
        for _ in 0..pings {
            let pending = client.start(&ping).unwrap();
            client.publish();
            server.poll(&mut registry, &clock, PASS_BUDGET);
            assert!(client.poll_response_into(&mut completion).unwrap());
            pending.finish(&completion).unwrap();
        }
        return;
    }
    let mut arith_handler = arith::Handler(ArithServer);
    {
        let mut client = ClientConnection::new(&ring, &data, geometry, 32).unwrap();
        let mut server = ServerConnection::attach(&ring, &data, geometry, PeerId(1)).unwrap();
        let mut registry = Registry::new();
        registry.register(&mut echo_handler).unwrap();
        registry.register(&mut arith_handler).unwrap();
        let payload = vec![0xA5u8; 4096];
        client.data().write(0, &payload).unwrap();

        let ops = Operands { a: 1, b: 2 };
        let echo_4k = echo::client::echo_ool(&())
            .ool_args(OolRef::new(0, 4096))
            .ool_result(OolRef::new(8192, 4096));
        // Untyped requests (the replies are not decoded here).
        let ping = echo::client::ping(&());
        let add = arith::client::add(&ops);
        let calls: [(&str, &CallRequest<'_>); 3] = [
            ("ping", ping.request()),
            ("add (16 B inline)", add.request()),
            ("echo 4 KiB out of line", echo_4k.request()),
        ];
        // Warm-up: fault in the regions' pages and the code paths before measuring.
        for _ in 0..20_000 {
            client.enqueue(calls[0].1).unwrap();
            client.publish();
            server.poll(&mut registry, &clock, PASS_BUDGET);
            client.poll_response().unwrap().unwrap();
        }
        for (name, request) in calls {
            for batch in [1u32, 16] {
                let start = Instant::now();
                let mut done = 0;
                while done < CALLS {
                    for _ in 0..batch {
                        client.enqueue(request).unwrap();
                    }
                    client.publish();
                    server.poll(&mut registry, &clock, PASS_BUDGET);
                    for _ in 0..batch {
                        client.poll_response().unwrap().unwrap();
                    }
                    done += batch;
                }
                let ns = start.elapsed().as_nanos() as f64 / f64::from(done);
                println!("one thread, {name:24} batch {batch:2}: {ns:7.1} ns/call");
            }
        }
    }

    if std::env::args().any(|a| a == "--one-thread") {
        return;
    }
    // Two threads, spinning: the server polls in a loop, the client issues one call at a time.
    let stop = AtomicBool::new(false);
    let client = ClientConnection::new(&ring, &data, geometry, 32).unwrap();
    let server = ServerConnection::attach(&ring, &data, geometry, PeerId(1)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut server = server;
            let mut echo_handler = echo::Handler(EchoServer);
            let mut registry = Registry::new();
            registry.register(&mut echo_handler).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if server.poll(&mut registry, &clock, PASS_BUDGET).handled == 0 {
                    std::hint::spin_loop();
                }
            }
        });
        let mut client = client;
        let ping = echo::client::ping(&());
        let mut samples = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            for _ in 0..20_000 {
                let pending = client.start(&ping).unwrap();
                client.publish();
                let completion = loop {
                    if let Some(c) = client.poll_response().unwrap() {
                        break c;
                    }
                    std::hint::spin_loop();
                };
                pending.finish(&completion).unwrap();
            }
            samples.push(start.elapsed().as_nanos() as f64 / 20_000.0);
        }
        stop.store(true, Ordering::Relaxed);
        samples.sort_by(f64::total_cmp);
        println!(
            "two threads spinning, ping round trip: median {:.0} ns (min {:.0}, max {:.0}) over 20 x 20000",
            samples[10], samples[0], samples[19]
        );
    });
}

/// `--pings N`: the count of the pings-only mode.
fn pings_only() -> Option<u32> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--pings")?;
    Some(args.get(at + 1)?.parse().expect("--pings takes a count"))
}
