//! The SunRPC peer end to end: its server on TCP and on a Unix socket, in this process,
//! called by its client.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::thread;

use xenrpc_peers::sunrpc::{self, SunRpcClient};
use xenrpc_peers::{PeerClient, MAX_ECHO};

mod common;
use common::{null_and_echoes, pattern};

/// Whether to skip: the peer was not built. Under CI that is a failure.
fn unavailable() -> bool {
    match sunrpc::available() {
        Ok(()) => false,
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            true
        }
    }
}

/// The servers every test shares: (TCP address, Unix socket path).
fn servers() -> &'static (SocketAddr, PathBuf) {
    static SERVERS: OnceLock<(SocketAddr, PathBuf)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        spawn_server(tcp.into());

        let dir = std::env::temp_dir().join(format!("xenrpc-sunrpc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("echo.sock");
        let _ = std::fs::remove_file(&path);
        let unix = UnixListener::bind(&path).unwrap();
        spawn_server(unix.into());
        // Connections queue on the bound listeners, so clients need not wait for the loop.
        (addr, path)
    })
}

fn spawn_server(listener: OwnedFd) {
    thread::spawn(move || {
        let e = sunrpc::serve(listener).unwrap_err();
        panic!("the SunRPC server ended: {e}");
    });
}

#[test]
fn tcp() {
    if unavailable() {
        return;
    }
    let mut client = SunRpcClient::connect_tcp(servers().0).unwrap();
    null_and_echoes(&mut client);
}

#[test]
fn unix() {
    if unavailable() {
        return;
    }
    let mut client = SunRpcClient::connect_unix(&servers().1).unwrap();
    null_and_echoes(&mut client);
}

#[test]
fn clients_side_by_side() {
    if unavailable() {
        return;
    }
    let (addr, path) = servers();
    let mut clients = [
        SunRpcClient::connect_tcp(*addr).unwrap(),
        SunRpcClient::connect_unix(path).unwrap(),
        SunRpcClient::connect_tcp(*addr).unwrap(),
    ];
    let mut answer = Vec::new();
    for round in 0..100 {
        for client in &mut clients {
            client.null().unwrap();
            let data = pattern(round * 10);
            client.echo(&data, &mut answer).unwrap();
            assert_eq!(answer, data);
        }
    }
}

#[test]
fn too_long_echo_is_refused() {
    if unavailable() {
        return;
    }
    let mut client = SunRpcClient::connect_tcp(servers().0).unwrap();
    let mut answer = Vec::new();
    let e = client
        .echo(&pattern(MAX_ECHO + 1), &mut answer)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    // Refused before anything was sent: the connection still works.
    client.null().unwrap();
}

#[test]
fn nobody_listening_is_an_error() {
    if unavailable() {
        return;
    }
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    drop(tcp);
    let e = SunRpcClient::connect_tcp(addr)
        .err()
        .expect("connected to nobody");
    assert!(e.to_string().starts_with("SunRPC"), "{e}");

    let path = std::env::temp_dir().join(format!("xenrpc-sunrpc-none-{}.sock", std::process::id()));
    assert!(SunRpcClient::connect_unix(&path).is_err());
}

#[test]
fn closed_connection_is_an_error() {
    if unavailable() {
        return;
    }
    // A "server" that accepts and hangs up at once.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = thread::spawn(move || drop(tcp.accept().unwrap()));
    let mut client = SunRpcClient::connect_tcp(addr).unwrap();
    server.join().unwrap();
    let e = client.null().unwrap_err();
    assert!(
        e.to_string().starts_with("SunRPC ping failed: RPC: "),
        "{e}"
    );
    let e = client.echo(b"hello", &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string().starts_with("SunRPC echo failed: RPC: "),
        "{e}"
    );
}

#[test]
fn serving_what_does_not_listen_is_an_error() {
    if unavailable() {
        return;
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = sunrpc::serve(socket.into()).unwrap_err();
    assert!(
        e.to_string().contains("not a listening stream socket"),
        "{e}"
    );
}
