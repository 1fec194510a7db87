//! The RPC systems xenrpc is measured against, built by the project itself so that a benchmark
//! runs them beside xenrpc in one run: **SunRPC** ([`sunrpc`]: libtirpc with `rpcgen` stubs,
//! over TCP or a Unix socket) and **gRPC** ([`grpc`]: tonic, over TCP), and Xen's own byte
//! channel between two domains, **libxenvchan** ([`vchan`]: no RPC system, a framing of our
//! own; the native floor in Xen). Each has a server that serves two procedures, `null` (no
//! arguments, no result) and `echo` (bytes in, the same bytes out), and a blocking client; all
//! tuned fairly (TCP_NODELAY, release builds, buffers, windows and rings large enough for the
//! biggest echo).
//!
//! A peer whose tools were missing at build time (`rpcgen`/libtirpc, `protoc`, libxenvchan)
//! is built as unavailable: its `available()` says why, and everything else of it returns that
//! reason as an error. libxenvchan is also unavailable outside a Xen domain.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

pub mod grpc;
pub mod sunrpc;
pub mod vchan;

/// Most bytes one echo carries each way (the benchmarks' largest size is 1 MiB).
pub const MAX_ECHO: usize = 1 << 20;

/// Why a peer cannot run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The peer's name (`SunRPC`, `gRPC`, `libxenvchan`).
    pub peer: &'static str,
    /// What was missing when it was built.
    pub why: &'static str,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not available: {}", self.peer, self.why)
    }
}

impl std::error::Error for Unavailable {}

impl From<Unavailable> for io::Error {
    fn from(e: Unavailable) -> Self {
        io::Error::new(io::ErrorKind::Unsupported, e)
    }
}

/// A connected client of a peer: one call at a time, blocking until its answer.
pub trait PeerClient {
    /// The `null` procedure.
    fn null(&mut self) -> io::Result<()>;
    /// The `echo` procedure: sends `data` (at most [`MAX_ECHO`] bytes), puts the answer in
    /// `answer` (replacing what it held). The caller checks the answer.
    fn echo(&mut self, data: &[u8], answer: &mut Vec<u8>) -> io::Result<()>;
}

/// One peer over one transport: the names the benchmarks and `xenrpc-peer` use, how to serve
/// it and how to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// SunRPC over TCP.
    SunRpcTcp,
    /// SunRPC over a Unix stream socket.
    SunRpcUnix,
    /// gRPC over TCP.
    Grpc,
    /// libxenvchan between two Xen domains.
    Vchan,
}

impl System {
    /// Every peer, in the order tables show them.
    pub const ALL: [System; 4] = [
        System::SunRpcTcp,
        System::SunRpcUnix,
        System::Grpc,
        System::Vchan,
    ];

    /// The name tables show (`SunRPC TCP`).
    pub fn name(self) -> &'static str {
        match self {
            System::SunRpcTcp => "SunRPC TCP",
            System::SunRpcUnix => "SunRPC Unix",
            System::Grpc => "gRPC TCP",
            System::Vchan => "libxenvchan",
        }
    }

    /// The name command lines use (`sunrpc-tcp`).
    pub fn arg(self) -> &'static str {
        match self {
            System::SunRpcTcp => "sunrpc-tcp",
            System::SunRpcUnix => "sunrpc-unix",
            System::Grpc => "grpc",
            System::Vchan => "vchan",
        }
    }

    /// The peer a command line names.
    pub fn from_arg(arg: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.arg() == arg)
    }

    /// Whether it was built here and can run here (libxenvchan only in a Xen domain).
    pub fn available(self) -> Result<(), Unavailable> {
        match self {
            System::SunRpcTcp | System::SunRpcUnix => sunrpc::available(),
            System::Grpc => grpc::available(),
            System::Vchan => vchan::available(),
        }
    }

    /// Binds `address` (`host:port` for TCP, port 0 for any; a socket path for Unix, replacing
    /// a stale socket there; for libxenvchan `DOMID[:PATH]`, the client's domain and the
    /// xenstore path, [`vchan::DEFAULT_PATH`] if none), hands the address bound to `ready`, and
    /// serves until the process ends.
    pub fn serve(self, address: &str, ready: impl FnOnce(&str)) -> io::Result<Infallible> {
        match self {
            System::Vchan => {
                let (client, path) = vchan::parse_address(address)?;
                vchan::serve(client, path.unwrap_or(vchan::DEFAULT_PATH), ready)
            }
            System::SunRpcTcp | System::Grpc => {
                let listener = TcpListener::bind(address)?;
                ready(&listener.local_addr()?.to_string());
                match self {
                    System::Grpc => grpc::serve(listener),
                    _ => sunrpc::serve(OwnedFd::from(listener)),
                }
            }
            System::SunRpcUnix => {
                let _ = std::fs::remove_file(address);
                let listener = UnixListener::bind(address)?;
                ready(address);
                sunrpc::serve(OwnedFd::from(listener))
            }
        }
    }

    /// A client connected to the server at `address` (as for [`Self::serve`]; for
    /// libxenvchan the server's domain, and the absolute xenstore path if not the default).
    pub fn connect(self, address: &str) -> io::Result<Box<dyn PeerClient + Send>> {
        let tcp = || -> io::Result<SocketAddr> {
            address.parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad address {address:?}: {e}"),
                )
            })
        };
        Ok(match self {
            System::SunRpcTcp => Box::new(sunrpc::SunRpcClient::connect_tcp(tcp()?)?),
            System::SunRpcUnix => Box::new(sunrpc::SunRpcClient::connect_unix(Path::new(address))?),
            System::Grpc => Box::new(grpc::GrpcClient::connect_tcp(tcp()?)?),
            System::Vchan => {
                let (server, path) = vchan::parse_address(address)?;
                Box::new(vchan::VchanClient::connect(server, path)?)
            }
        })
    }
}
