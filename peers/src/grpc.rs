//! The gRPC peer: tonic over TCP, the service of `proto/echo.proto` (`Null`, `Echo`).
//!
//! Tuned as a careful user of gRPC would tune it, so that the comparison with xenrpc is fair:
//! TCP_NODELAY on both sides (unary calls are small writes that Nagle would hold back), HTTP/2
//! stream and connection windows of [`WINDOW`] on both sides with the adaptive window off (a
//! 1 MiB echo is never throttled by flow control, and every run behaves the same), message
//! limits of [`MAX_MESSAGE`] (tonic's default of 4 MiB would do, but the limit then says what
//! the peer carries), `bytes::Bytes` for the payload so that the server answers the request's
//! buffer without copying it, and no logging. Both the server and the client run a
//! current-thread tokio runtime: one call at a time needs no thread pool, and the client's
//! calls then run on the caller's thread as the other peers' do.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};

#[cfg(not(grpc_missing))]
use std::{error::Error, time::Duration};

use crate::Unavailable;
#[cfg(not(grpc_missing))]
use crate::MAX_ECHO;

/// The stubs `build/grpc.rs` generated from `proto/echo.proto`. Generated code, not held to
/// the workspace's lints.
#[cfg(not(grpc_missing))]
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    dead_code,
    unreachable_pub,
    unused_qualifications
)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/xenrpc.peer.rs"));
}

/// Most bytes of one gRPC message, either way: the largest echo and room for its protobuf
/// framing (a few bytes; a page is generous).
#[cfg(not(grpc_missing))]
pub const MAX_MESSAGE: usize = MAX_ECHO + 4096;

/// The HTTP/2 initial stream and connection window, both sides: four times the largest
/// echo, so that neither the request nor the answer waits for a WINDOW_UPDATE.
#[cfg(not(grpc_missing))]
pub const WINDOW: u32 = 4 * MAX_ECHO as u32;

/// How long the client waits for one call (and for connecting): a dead server is an error
/// after this, never a hang.
#[cfg(not(grpc_missing))]
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this build has the gRPC peer (it has unless `protoc` was missing at build time).
pub fn available() -> Result<(), Unavailable> {
    #[cfg(grpc_missing)]
    return Err(UNAVAILABLE);
    #[cfg(not(grpc_missing))]
    Ok(())
}

#[cfg(grpc_missing)]
const UNAVAILABLE: Unavailable = Unavailable {
    peer: "gRPC",
    why: env!("XENRPC_GRPC_MISSING"),
};

/// Serves the `Echo` service on `listener` until the process ends, on a current-thread tokio
/// runtime (one connection or many, one call at a time each), with TCP_NODELAY on every
/// accepted connection and HTTP/2 windows sized for [`MAX_ECHO`].
///
/// Returns only if the server cannot run or stops.
pub fn serve(listener: TcpListener) -> io::Result<Infallible> {
    #[cfg(grpc_missing)]
    {
        drop(listener);
        Err(UNAVAILABLE.into())
    }
    #[cfg(not(grpc_missing))]
    {
        use tonic::transport::server::TcpIncoming;
        use tonic::transport::Server;

        let runtime = runtime()?;
        runtime.block_on(async {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            // `serve_with_incoming` ignores the builder's `tcp_nodelay`: the incoming sets it.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let service = proto::echo_server::EchoServer::new(EchoService)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(WINDOW)
                .initial_connection_window_size(WINDOW)
                .http2_adaptive_window(Some(false))
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .map_err(|e| io::Error::other(format!("gRPC server failed: {}", chain(&e))))?;
            Err(io::Error::other("gRPC server stopped"))
        })
    }
}

/// The current-thread runtime both sides run on.
#[cfg(not(grpc_missing))]
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| io::Error::new(e.kind(), format!("gRPC cannot start tokio: {e}")))
}

/// The server's procedures.
#[cfg(not(grpc_missing))]
struct EchoService;

#[cfg(not(grpc_missing))]
#[tonic::async_trait]
impl proto::echo_server::Echo for EchoService {
    async fn null(
        &self,
        _request: tonic::Request<proto::Empty>,
    ) -> Result<tonic::Response<proto::Empty>, tonic::Status> {
        Ok(tonic::Response::new(proto::Empty {}))
    }

    /// Answers the request's message itself: its `Bytes` go back without a copy.
    async fn echo(
        &self,
        request: tonic::Request<proto::Bytes>,
    ) -> Result<tonic::Response<proto::Bytes>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// A blocking client of the gRPC peer over one HTTP/2 connection: each call is one unary
/// call run to its end on the client's own current-thread runtime.
pub struct GrpcClient {
    #[cfg(not(grpc_missing))]
    runtime: tokio::runtime::Runtime,
    #[cfg(not(grpc_missing))]
    client: proto::echo_client::EchoClient<tonic::transport::Channel>,
    #[cfg(grpc_missing)]
    never: Infallible,
}

impl GrpcClient {
    /// Connects to the server at `addr` (TCP_NODELAY, HTTP/2 windows sized for
    /// [`MAX_ECHO`], 10 s per call and for connecting).
    pub fn connect_tcp(addr: SocketAddr) -> io::Result<Self> {
        #[cfg(grpc_missing)]
        {
            let _ = addr;
            Err(UNAVAILABLE.into())
        }
        #[cfg(not(grpc_missing))]
        {
            use tonic::transport::Endpoint;

            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("gRPC cannot address {addr}: {}", chain(&e)),
                    )
                })?
                .tcp_nodelay(true)
                .connect_timeout(CALL_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .initial_stream_window_size(WINDOW)
                .initial_connection_window_size(WINDOW)
                .http2_adaptive_window(false);
            let runtime = runtime()?;
            let channel = runtime.block_on(endpoint.connect()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("gRPC could not connect to {addr}: {}", chain(&e)),
                )
            })?;
            let client = proto::echo_client::EchoClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            Ok(Self { runtime, client })
        }
    }
}

impl crate::PeerClient for GrpcClient {
    fn null(&mut self) -> io::Result<()> {
        #[cfg(grpc_missing)]
        match self.never {}
        #[cfg(not(grpc_missing))]
        {
            self.runtime
                .block_on(self.client.null(proto::Empty {}))
                .map_err(|status| status_error("null", &status))?;
            Ok(())
        }
    }

    fn echo(&mut self, data: &[u8], answer: &mut Vec<u8>) -> io::Result<()> {
        #[cfg(grpc_missing)]
        {
            let _ = (data, answer);
            match self.never {}
        }
        #[cfg(not(grpc_missing))]
        {
            if data.len() > MAX_ECHO {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "gRPC echo refused: {} bytes is more than the {MAX_ECHO} an echo carries",
                        data.len()
                    ),
                ));
            }
            let request = proto::Bytes {
                data: prost::bytes::Bytes::copy_from_slice(data),
            };
            let reply = self
                .runtime
                .block_on(self.client.echo(request))
                .map_err(|status| status_error("echo", &status))?
                .into_inner();
            answer.clear();
            answer.extend_from_slice(&reply.data);
            Ok(())
        }
    }
}

/// `status` of a failed `call` as an `io::Error` that reads as a sentence.
#[cfg(not(grpc_missing))]
fn status_error(call: &str, status: &tonic::Status) -> io::Error {
    use tonic::Code;

    // The client's own timeout (`CALL_TIMEOUT`) ends a call as `Cancelled`, with the cause
    // somewhere in the status's sources.
    let mut source = status.source();
    let mut timed_out = false;
    while let Some(e) = source {
        timed_out |= e.is::<tonic::TimeoutExpired>();
        source = e.source();
    }
    let kind = match status.code() {
        _ if timed_out => io::ErrorKind::TimedOut,
        Code::DeadlineExceeded => io::ErrorKind::TimedOut,
        Code::Unavailable => io::ErrorKind::ConnectionAborted,
        Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => {
            io::ErrorKind::InvalidInput
        }
        Code::Unimplemented => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    let mut text = format!("gRPC {call} failed: status: {:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(", message: ");
        text.push_str(status.message());
    }
    if let Some(source) = status.source() {
        text.push_str(" (");
        text.push_str(&chain(source));
        text.push(')');
    }
    io::Error::new(kind, text)
}

/// `error` and its sources, joined by `: ` (tonic's transport errors say little by
/// themselves: "transport error").
#[cfg(not(grpc_missing))]
fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        // Some layers repeat their source's text in their own.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}
