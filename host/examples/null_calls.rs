//! Spin null calls over the host transport in one process, for profiling the host path
//! (`perf record`) and quick comparisons: a server thread on CPU 1 and a client on CPU 0, as
//! `xenrpc-hostbench` pins its processes. Prints ns per call (the median of batches of 100);
//! asserts nothing about time.
//! `cargo run --release -p xenrpc-host --example null_calls -- [CALLS]`

use std::sync::mpsc;
use std::time::{Duration, Instant};

use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::process::pin_to_cpu;
use xenrpc_host::server::{Server, ServerConfig};
use xenrpc_host::services::host_registry;
use xenrpc_proto::services::echo;
use xenrpc_proto::services::{builtins, kv::KvBudget};
use xenrpc_proto::ServiceEnv;

const BATCH: u32 = 100;

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .map_or(2_000_000, |n| n.parse().expect("CALLS is a count"));
    let socket =
        std::env::temp_dir().join(format!("xenrpc-null-calls-{}.sock", std::process::id()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = socket.clone();
    std::thread::spawn(move || {
        pin_to_cpu(1);
        let mut server = Server::bind(&path, ServerConfig::default()).expect("bind");
        let env = ServiceEnv::new("", KvBudget::DEFAULT_HEAP_BYTES);
        let mut services = builtins(&env);
        let mut registry = host_registry();
        registry.register_set(&mut services).expect("services");
        ready_tx.send(()).unwrap();
        let _ = server.run(&mut registry, |_| {});
    });
    ready_rx.recv().unwrap();
    pin_to_cpu(0);
    let options = ClientOptions {
        max_in_flight: 1,
        ..ClientOptions::default()
    };
    let mut client = Client::connect(&socket, options).expect("connect");
    let ping = echo::client::ping(&());
    let timeout = Some(Duration::from_secs(5));
    for _ in 0..calls / 10 {
        client.call(&ping, timeout).expect("ping");
    }
    let mut samples = Vec::with_capacity((calls / BATCH) as usize);
    for _ in 0..calls / BATCH {
        let start = Instant::now();
        for _ in 0..BATCH {
            client.call(&ping, timeout).expect("ping");
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "spin null call, batches of {BATCH}: p50 {:.0} ns, p10 {:.0} ns, p90 {:.0} ns",
        at(0.5),
        at(0.1),
        at(0.9)
    );
    let _ = std::fs::remove_file(&socket);
}
