//! The RPC systems xenrpc is measured against, built by the project itself so that a benchmark
//! runs them beside xenrpc in one run: **SunRPC** ([`sunrpc`]: libtirpc with `rpcgen` stubs,
//! over TCP or a Unix socket) and **gRPC** ([`grpc`]: tonic, over TCP). Each has a server that
//! serves one program of two procedures, `null` (no arguments, no result) and `echo` (bytes
//! in, the same bytes out), and a blocking client; both tuned fairly (TCP_NODELAY, release
//! builds, buffers and windows large enough for the biggest echo).
//!
//! A peer whose tools were missing at build time (`rpcgen`/libtirpc, `protoc`) is built as
//! unavailable: its `available()` says why, and everything else of it returns that reason
//! as an error.

use std::fmt;
use std::io;

pub mod grpc;
pub mod sunrpc;

/// Most bytes one echo carries each way (the benchmarks' largest size is 1 MiB).
pub const MAX_ECHO: usize = 1 << 20;

/// Why a peer cannot run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The peer's name (`SunRPC`, `gRPC`).
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
