//! The gRPC peer end to end over loopback TCP: a server on a thread, a client calling it.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use xenrpc_peers::grpc::{self, GrpcClient};
use xenrpc_peers::{PeerClient, MAX_ECHO};

/// Whether the peer was built; without it the tests pass with a note, except under CI
/// (`CI` set), where a missing peer is a failure.
fn built() -> bool {
    match grpc::available() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// Starts a server on an ephemeral loopback port; it runs until the test process ends.
fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    std::thread::spawn(move || {
        let e = grpc::serve(listener).expect_err("serve returns only on error");
        panic!("gRPC server: {e}");
    });
    addr
}

/// `len` bytes that differ from one offset to the next and from one size to another.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8) ^ len) as u8)
        .collect()
}

#[test]
fn null_and_echo() {
    if !built() {
        return;
    }
    let addr = start_server();
    let mut client = GrpcClient::connect_tcp(addr).expect("connect");
    client.null().expect("null");
    let mut answer = vec![0xAA; 7]; // replaced, not appended to
    for len in [0, 1, 64, 4096, 65536, MAX_ECHO] {
        let data = pattern(len);
        client.echo(&data, &mut answer).expect("echo");
        assert!(answer == data, "echo of {len} bytes answered differently");
    }
    client.null().expect("null after echoes");
}

#[test]
fn echo_too_big_is_refused() {
    if !built() {
        return;
    }
    let addr = start_server();
    let mut client = GrpcClient::connect_tcp(addr).expect("connect");
    let mut answer = Vec::new();
    let e = client
        .echo(&vec![0; MAX_ECHO + 1], &mut answer)
        .expect_err("more than MAX_ECHO");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    // The connection is still good.
    client
        .echo(b"after", &mut answer)
        .expect("echo after refusal");
    assert_eq!(answer, b"after");
}

#[test]
fn nobody_listening_is_an_error() {
    if !built() {
        return;
    }
    // A port that was free a moment ago: bound, then closed.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local_addr")
    };
    let start = Instant::now();
    let e = match GrpcClient::connect_tcp(addr) {
        Ok(_) => panic!("connected to {addr} where nobody listens"),
        Err(e) => e,
    };
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?} to fail: {e}",
        start.elapsed()
    );
    assert!(e.to_string().starts_with("gRPC"), "{e}");
}
