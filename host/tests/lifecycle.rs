//! Processes dying: a client that dies mid-call is cleaned up while the others keep being
//! served; a client whose server dies gets "server gone", not a hang.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fork_as, write_line, Forked, ServerProcess, TIMEOUT};
use xenrpc_host::client::{Client, ClientError};
use xenrpc_host::services::{admin, selftest, SleepArgs};
use xenrpc_proto::services::echo;

/// Polls the admin counters until `done` holds (bounded by `TIMEOUT`).
fn wait_for_stats(
    client: &mut xenrpc_host::client::Client,
    done: impl Fn(&xenrpc_host::services::AdminStats) -> bool,
) -> xenrpc_host::services::AdminStats {
    let end = Instant::now() + TIMEOUT;
    loop {
        let stats = client
            .call(&admin::client::stats(&()), Some(TIMEOUT))
            .unwrap()
            .value;
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < end,
            "server counters never reached the expected state: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client process that connects, starts a `millis` call to `selftest.sleep`, says `sent`
/// once the call is in the ring, and waits for the reply (if it lives that long).
fn sleeper(server: &Path, millis: u32) -> Forked {
    let path = server.to_path_buf();
    fork_as(None, move |mut control| {
        let mut client =
            Client::connect(&path, Default::default()).map_err(|e| format!("connect: {e}"))?;
        let pending = client
            .start(&selftest::client::sleep(&SleepArgs { millis }))
            .map_err(|e| format!("start: {e}"))?;
        client.flush();
        write_line(&mut control, "sent")?;
        client
            .finish(pending, Some(TIMEOUT))
            .map(drop)
            .map_err(|e| format!("sleep: {e}"))
    })
}

#[test]
fn client_killed_mid_call_is_dropped_and_others_keep_being_served() {
    let server = ServerProcess::start(&[]);
    let mut survivor = server.connect();
    survivor
        .call(&echo::client::ping(&()), Some(TIMEOUT))
        .unwrap();

    // A client process that makes a 1.5 s call; kill it once the call is in the ring.
    let mut victim = sleeper(server.path(), 1500);
    assert_eq!(victim.hear(), "sent");
    std::thread::sleep(Duration::from_millis(100));
    drop(victim); // SIGKILL, and reaped

    // The server notices the hangup, drops that connection, and serves the survivor.
    let stats = wait_for_stats(&mut survivor, |s| s.disconnected == 1);
    assert_eq!((stats.connected, stats.dropped), (1, 0));
    for _ in 0..100 {
        survivor
            .call(&echo::client::ping(&()), Some(TIMEOUT))
            .unwrap();
    }
    // And new clients are still accepted.
    let mut late = server.connect();
    late.call(&echo::client::ping(&()), Some(TIMEOUT)).unwrap();
}

#[test]
fn many_clients_dying_leave_the_server_serving() {
    let server = ServerProcess::start(&["--spin-us", "0"]);
    let mut survivor = server.connect();
    let victims: Vec<Forked> = (0..8).map(|_| sleeper(server.path(), 100)).collect();
    std::thread::sleep(Duration::from_millis(150));
    // SIGKILL, and reaped: some during set-up, some mid-call.
    drop(victims);
    let stats = wait_for_stats(&mut survivor, |s| {
        s.connected == 1 && s.connected_total + s.refused >= 9
    });
    assert_eq!(stats.dropped, 0);
    survivor
        .call(&echo::client::ping(&()), Some(TIMEOUT))
        .unwrap();
}

#[test]
fn server_death_mid_call_is_reported_as_server_gone() {
    for spin in ["0", "1000"] {
        let server = ServerProcess::start(&["--spin-us", spin]);
        let mut client = server.connect();
        client
            .call(&echo::client::ping(&()), Some(TIMEOUT))
            .unwrap();
        let pending = client
            .start(&selftest::client::sleep(&SleepArgs { millis: 1500 }))
            .unwrap();
        client.flush();
        std::thread::sleep(Duration::from_millis(200));
        let ServerProcess { child, .. } = &server;
        let started = Instant::now();
        // SIGKILL: no chance to say goodbye.
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        match client.finish(pending, Some(TIMEOUT)) {
            Err(ClientError::ServerGone) => {}
            other => panic!("expected ServerGone (spin {spin}), got {other:?}"),
        }
        assert!(started.elapsed() < TIMEOUT, "noticed only by timeout");
        // Later calls fail at once, too.
        assert!(matches!(
            client.call(&echo::client::ping(&()), Some(TIMEOUT)),
            Err(ClientError::ServerGone)
        ));
    }
}

#[test]
fn connecting_to_no_server_is_a_clear_error() {
    let missing =
        std::env::temp_dir().join(format!("xenrpc-no-server-{}.sock", std::process::id()));
    let result = xenrpc_host::client::Client::connect(&missing, Default::default());
    assert!(matches!(result, Err(ClientError::Io(_))));
}

#[test]
fn silent_and_rude_connections_are_closed_without_disturbing_others() {
    use std::os::fd::AsFd;
    use xenrpc_host::rendezvous;

    // Room for every attempt below, so that each is refused for what it does, never by the
    // per-uid cap (which would close it before it speaks, and race the test's own send).
    let server = ServerProcess::start(&[
        "--setup-timeout-ms",
        "200",
        "--max-clients",
        "4",
        "--max-per-uid",
        "4",
    ]);
    let mut survivor = server.connect();
    let connect_raw = || {
        let socket = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            None,
        )
        .unwrap();
        let addr = rustix::net::SocketAddrUnix::new(server.path()).unwrap();
        rustix::net::connect(&socket, &addr).unwrap();
        socket
    };
    let closed_by_server = |socket: &std::os::fd::OwnedFd| {
        let mut fds = [rustix::event::PollFd::new(
            socket,
            rustix::event::PollFlags::IN,
        )];
        xenrpc_host::event::poll_retrying(&mut fds, Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        matches!(
            rendezvous::recv_message(socket.as_fd(), &mut buf),
            Ok((0, _)) | Err(_)
        )
    };

    // Says nothing: dropped after the set-up time-out.
    let silent = connect_raw();
    assert!(closed_by_server(&silent));
    // Says garbage instead of a hello: dropped at once.
    let rude = connect_raw();
    rendezvous::send_message(rude.as_fd(), b"GET / HTTP/1.1\r\n", &[]).unwrap();
    assert!(closed_by_server(&rude));
    // Asks for an absurd data region: refused.
    let greedy = connect_raw();
    let hello = rendezvous::Hello { data_len: 1 << 40 };
    rendezvous::send_message(greedy.as_fd(), &hello.encode(), &[]).unwrap();
    assert!(closed_by_server(&greedy));

    let stats = wait_for_stats(&mut survivor, |s| s.refused >= 3);
    assert_eq!((stats.connected, stats.dropped), (1, 0));
    assert_eq!(
        stats.refused_uid_cap, 0,
        "each attempt is refused for itself"
    );
    survivor
        .call(&echo::client::ping(&()), Some(TIMEOUT))
        .unwrap();
}
