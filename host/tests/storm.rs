//! The wake-up storm guard on the host: a client raising its eventfd in a tight loop with no
//! requests behind it is dropped with the storm as the reason; a busy honest client, whose
//! wake-ups find requests, never is.

mod common;

use std::time::Instant;

use common::{ServerProcess, TIMEOUT};
use xenrpc_host::attack::Attack;
use xenrpc_host::client::ClientOptions;
use xenrpc_host::services::admin;
use xenrpc_host::wait::SpinPolicy;
use xenrpc_proto::services::echo;

#[test]
fn an_eventfd_storm_is_dropped_and_a_busy_honest_client_is_not() {
    // A blocking server: every wake-up reaches it, as it would an idle production server.
    let server = ServerProcess::start(&["--spin-us", "0"]);
    let path = server.path().to_path_buf();
    let stormer = std::thread::spawn(move || {
        let end = Instant::now() + TIMEOUT;
        Attack::EventStorm.run(&path, || {}, || Instant::now() < end)
    });
    // Meanwhile an honest client blocks between calls too, so each of its calls is a wake-up.
    let mut honest = server.connect_with(ClientOptions {
        spin: SpinPolicy::BLOCKING,
        ..ClientOptions::default()
    });
    for i in 0..5_000 {
        if let Err(e) = honest.call(&echo::client::ping(&()), Some(TIMEOUT)) {
            panic!("honest call {i}: {e}");
        }
    }
    let dropped = stormer.join().unwrap().expect("storm client failed");
    assert!(dropped, "the storming client was not dropped");
    let stats = honest
        .call(&admin::client::stats(&()), Some(TIMEOUT))
        .unwrap()
        .value;
    assert_eq!((stats.event_storms, stats.dropped), (1, 1), "{stats:?}");
    assert_eq!(stats.connected, 1);
}
