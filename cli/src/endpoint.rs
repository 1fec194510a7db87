//! One calling interface over both transports: [`Endpoint::call_bytes`] makes a call given as
//! ids and bytes ([`RawCall`]) and returns the status and bytes of its answer ([`RawReply`]),
//! over the Xen devices of a guest ([`XenEndpoint`]) or a `xenrpc-hostd` socket
//! ([`HostEndpoint`]). Commands written against it behave the same over either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::Connection;
use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_proto::zerocopy::FromBytes;
use xenrpc_proto::{CallRequest, Caller, Completion, Status, TypedCall};

use crate::conn::{self, ConnArgs};
use crate::error::{CliError, Result};

/// A call as ids and bytes: inline arguments, out-of-line arguments, and how many bytes of
/// out-of-line result the caller accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawCall {
    /// The service id.
    pub service: u32,
    /// The method id within the service.
    pub method: u32,
    /// The service version the call is for.
    pub version: u32,
    /// The inline argument bytes.
    pub inline: Vec<u8>,
    /// The out-of-line argument bytes (none: empty).
    pub ool_in: Vec<u8>,
    /// Most bytes of out-of-line result accepted (0: none).
    pub ool_out_capacity: usize,
}

impl RawCall {
    /// The call a generated stub built (ids, version, inline arguments), with no out-of-line
    /// bytes yet.
    pub fn of<R>(call: &TypedCall<'_, R>) -> RawCall {
        let request = call.request();
        RawCall {
            service: request.service_id,
            method: request.method_id,
            version: request.version,
            inline: request.inline.to_vec(),
            ool_in: Vec::new(),
            ool_out_capacity: 0,
        }
    }

    /// Sends `bytes` out of line.
    pub fn ool_in(mut self, bytes: &[u8]) -> RawCall {
        self.ool_in = bytes.to_vec();
        self
    }

    /// Accepts up to `capacity` bytes of out-of-line result.
    pub fn ool_out(mut self, capacity: usize) -> RawCall {
        self.ool_out_capacity = capacity;
        self
    }
}

/// A call's answer: its status, the inline reply bytes, and the out-of-line result bytes the
/// handler wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawReply {
    /// The status the server answered with.
    pub status: Status,
    /// The inline reply bytes.
    pub inline: Vec<u8>,
    /// The out-of-line result bytes the handler wrote.
    pub ool_out: Vec<u8>,
}

impl RawReply {
    /// The reply if the server answered `Ok`, else its status as the error.
    pub fn ok(self) -> Result<RawReply> {
        match self.status {
            Status::Ok => Ok(self),
            status => Err(CliError::Remote(status)),
        }
    }

    /// The inline reply as a `T`, which it must be exactly.
    pub fn value<T: FromBytes>(&self) -> Result<T> {
        T::read_from_bytes(&self.inline).map_err(|_| {
            CliError::Protocol(format!(
                "an inline reply of {} bytes, expected {}",
                self.inline.len(),
                std::mem::size_of::<T>()
            ))
        })
    }
}

/// A connection to a server that makes calls: a [`Caller`] (so the generated client objects
/// and calls by signature work over it) that can also be closed.
pub trait Endpoint: Caller<Error = CliError> {
    /// Makes `call` and waits (within the connection's per-call limit) for its answer, of any
    /// status; its out-of-line bytes placed by the connection's window allocator.
    fn call_bytes(&mut self, call: &RawCall) -> Result<RawReply> {
        let typed = TypedCall::<()>::new(call.service, call.method, call.version, &call.inline);
        let capacity = Some(call.ool_out_capacity);
        let completion = self.call_raw(typed.request(), &call.ool_in, capacity)?;
        Ok(RawReply {
            status: completion.status,
            inline: completion.inline().to_vec(),
            ool_out: completion.into_bytes(),
        })
    }

    /// Bytes of the data region, which holds calls' out-of-line arguments and results.
    fn data_len(&self) -> usize;

    /// Ends the connection, its work done.
    fn close(self: Box<Self>) -> Result<()>;
}

/// A connection to the service VM over this guest's Xen devices.
pub struct XenEndpoint {
    conn: Connection<LinuxDevices>,
    args: ConnArgs,
}

impl XenEndpoint {
    /// Connects over device `args.devid` with `args`' ring, data region and time limits.
    pub fn connect(args: &ConnArgs) -> Result<XenEndpoint> {
        let mut conn = conn::connect(args)?;
        conn.set_call_timeout(args.timeout());
        Ok(XenEndpoint {
            conn,
            args: args.clone(),
        })
    }

    /// The connection underneath (its device, geometry and client counters).
    pub fn connection(&self) -> &Connection<LinuxDevices> {
        &self.conn
    }
}

impl Caller for XenEndpoint {
    type Error = CliError;

    fn call_raw(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Completion> {
        Ok(self.conn.call_raw(request, input, output_capacity)?)
    }
}

impl Endpoint for XenEndpoint {
    fn data_len(&self) -> usize {
        self.conn.data().len()
    }

    fn close(self: Box<Self>) -> Result<()> {
        conn::close(self.conn, &self.args)
    }
}

/// A connection to a `xenrpc-hostd` server on a Unix socket.
pub struct HostEndpoint {
    client: Client,
    socket: PathBuf,
}

impl HostEndpoint {
    /// Connects to `socket` with a data region of `args.data_pages` and `args`' time limits.
    pub fn connect(socket: &Path, args: &ConnArgs) -> Result<HostEndpoint> {
        let options = ClientOptions {
            data_len: args.data_bytes(),
            setup_timeout: Duration::from_millis(args.connect_timeout_ms),
            ..ClientOptions::default()
        };
        let mut client =
            Client::connect(socket, options).map_err(|error| CliError::HostConnect {
                socket: socket.to_path_buf(),
                error,
            })?;
        client.set_call_timeout(Some(args.timeout()));
        Ok(HostEndpoint {
            client,
            socket: socket.to_path_buf(),
        })
    }

    /// The server's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Caller for HostEndpoint {
    type Error = CliError;

    fn call_raw(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Completion> {
        self.client
            .call_raw(request, input, output_capacity)
            .map_err(|e| CliError::host(&self.socket, e))
    }
}

impl Endpoint for HostEndpoint {
    fn data_len(&self) -> usize {
        self.client.data().len()
    }

    fn close(self: Box<Self>) -> Result<()> {
        // The server notices the hang-up of the socket: nothing to confirm.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenrpc_proto::services::{arith, echo};

    #[test]
    fn replies_decode_only_as_their_exact_type() {
        let reply = RawReply {
            status: Status::Ok,
            inline: 42i64.to_le_bytes().to_vec(),
            ool_out: Vec::new(),
        };
        assert_eq!(reply.value::<arith::Value>().unwrap().value, 42);
        let err = reply.value::<echo::OolLen>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "server broke the protocol: an inline reply of 8 bytes, expected 4"
        );
        let refused = RawReply {
            status: Status::DeadlineExceeded,
            ..reply
        };
        assert!(matches!(
            refused.ok(),
            Err(CliError::Remote(Status::DeadlineExceeded))
        ));
    }
}
