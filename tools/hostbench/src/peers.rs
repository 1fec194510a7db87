//! The peers xenrpc is measured beside in the same run (`xenrpc_peers`): SunRPC over TCP and
//! over a Unix socket (libtirpc, rpcgen stubs) and gRPC over TCP (tonic). Each server is a
//! process of its own on the server CPU, as xenrpc's is, so that CPU per call counts both
//! processes alike; the client runs in this process on the client CPU, one call at a time.
//!
//! A peer that was not built here (its package missing) is named with the reason and left out;
//! a peer that answers wrongly fails the run, naming the peer and the call.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use xenrpc_host::process::{pin_to_cpu, ChildGuard};
use xenrpc_peers::PeerClient;

use crate::{own_and_server_cpu, read_line_within, spawn_piped, SERVER_CPU};

/// The first line a peer server prints: `peer listening on ADDRESS`.
const READY: &str = "peer listening on ";

pub use xenrpc_peers::System as Peer;

/// Server process role: `--role-peer-server KIND SOCKET_PATH`; binds (TCP on 127.0.0.1, an
/// ephemeral port; Unix at SOCKET_PATH), prints the ready line with the address, serves.
pub fn server_role(args: &[String]) -> io::Result<()> {
    let usage = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: --role-peer-server sunrpc-tcp|sunrpc-unix|grpc SOCKET_PATH",
        )
    };
    let [kind, path] = args else {
        return Err(usage());
    };
    let peer = Peer::from_arg(kind).ok_or_else(usage)?;
    pin_to_cpu(SERVER_CPU);
    let address = match peer {
        Peer::SunRpcUnix => path.as_str(),
        _ => "127.0.0.1:0",
    };
    peer.serve(address, |bound| println!("{READY}{bound}"))?;
    Ok(())
}

/// A running peer server.
pub struct PeerServer {
    pub peer: Peer,
    child: ChildGuard,
    address: String,
    socket: PathBuf,
}

impl PeerServer {
    /// Starts `peer`'s server process and waits for it to listen.
    pub fn start(peer: Peer) -> io::Result<Self> {
        let socket = std::env::temp_dir().join(format!(
            "xenrpc-hostbench-{}-{}.sock",
            std::process::id(),
            peer.arg()
        ));
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--role-peer-server")
            .arg(peer.arg())
            .arg(&socket);
        let (child, stdout) = spawn_piped(command)?;
        let line = read_line_within(stdout, Duration::from_secs(10))?;
        let address = line
            .trim_end()
            .strip_prefix(READY)
            .ok_or_else(|| {
                io::Error::other(format!("{} server did not start: {line:?}", peer.name()))
            })?
            .to_string();
        Ok(Self {
            peer,
            child,
            address,
            socket,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client connected to it.
    pub fn connect(&self) -> io::Result<Box<dyn PeerClient + Send>> {
        self.peer.connect(&self.address)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The servers of every peer built here, started; prints the ones left out and why.
pub fn start_available() -> io::Result<Vec<(PeerServer, Box<dyn PeerClient + Send>)>> {
    let mut started = Vec::new();
    for peer in Peer::ALL {
        if let Err(why) = peer.available() {
            println!("peer {}: not measured: {why}", peer.name());
            continue;
        }
        let server = PeerServer::start(peer)?;
        let client = server.connect()?;
        started.push((server, client));
    }
    Ok(started)
}

fn failed(peer: Peer, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{} {what} failed: {e}", peer.name()))
}

/// A null call on `client`, its failure naming `server`'s peer.
pub fn null<'a>(
    server: &PeerServer,
    client: &'a mut dyn PeerClient,
) -> impl FnMut() -> io::Result<()> + 'a {
    let peer = server.peer;
    move || client.null().map_err(|e| failed(peer, "null call", e))
}

/// Echoes `size` bytes for `duration`, one call at a time, every answer checked. Returns
/// (calls, elapsed, CPU ns per call).
pub fn echo_loop(
    server: &PeerServer,
    client: &mut dyn PeerClient,
    size: usize,
    duration: Duration,
) -> io::Result<(u64, Duration, f64)> {
    let peer = server.peer;
    let payload: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let mut answer = Vec::with_capacity(size);
    let mut echo = |client: &mut dyn PeerClient| -> io::Result<()> {
        client
            .echo(&payload, &mut answer)
            .map_err(|e| failed(peer, "echo", e))?;
        if answer != payload {
            return Err(io::Error::other(format!(
                "{} echo of {size} bytes answered {} different bytes",
                peer.name(),
                answer.len()
            )));
        }
        Ok(())
    };
    for _ in 0..3 {
        echo(client)?;
    }
    let cpu_before = own_and_server_cpu(Some(server.pid()))?;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < duration {
        echo(client)?;
        calls += 1;
    }
    let elapsed = start.elapsed();
    let cpu = own_and_server_cpu(Some(server.pid()))? - cpu_before;
    Ok((calls, elapsed, cpu.as_nanos() as f64 / calls.max(1) as f64))
}
