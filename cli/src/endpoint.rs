//! One calling interface over both transports: [`Endpoint::call_raw`] makes a call given as
//! ids and bytes ([`RawCall`]) and returns the status and bytes of its answer ([`RawReply`]),
//! over the Xen devices of a guest ([`XenEndpoint`]) or a `xenrpc-hostd` socket
//! ([`HostEndpoint`]). Commands written against it behave the same over either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::Connection;
use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_proto::zerocopy::FromBytes;
use xenrpc_proto::{Completion, OolRef, RegionView, Status, TypedCall};

use crate::conn::{self, ConnArgs};
use crate::error::{bad, CliError, Result};

/// A call as ids and bytes: inline arguments, out-of-line arguments, and how many bytes of
/// out-of-line result the caller accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawCall {
    pub service: u32,
    pub method: u32,
    pub version: u32,
    pub inline: Vec<u8>,
    pub ool_in: Vec<u8>,
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
    pub status: Status,
    pub inline: Vec<u8>,
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

/// A connection to a server that makes calls.
pub trait Endpoint {
    /// Makes `call` and waits (within the connection's per-call limit) for its answer, of any
    /// status.
    fn call_raw(&mut self, call: &RawCall) -> Result<RawReply>;

    /// Bytes of the data region, which holds a call's out-of-line arguments and result.
    fn data_len(&self) -> usize;

    /// Ends the connection, its work done.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Where a call's out-of-line bytes go in a `data_len`-byte data region: the arguments at
/// offset 0, the result window right after them (8-byte aligned). One call at a time, so
/// nothing else is in the region.
pub fn place(call: &RawCall, data_len: usize) -> Result<(OolRef, OolRef)> {
    let args = call.ool_in.len();
    let result_at = args.next_multiple_of(8);
    let end = result_at.checked_add(call.ool_out_capacity);
    let fits = end.is_some_and(|end| end <= data_len && u32::try_from(end).is_ok());
    if !fits {
        return Err(bad(format!(
            "{args} bytes of out-of-line arguments and a {}-byte result window do not fit the \
             {data_len}-byte data region (raise --data-pages)",
            call.ool_out_capacity
        )));
    }
    // Both fit in u32: checked above.
    let window = |offset: usize, len: usize| match len {
        0 => OolRef::NONE,
        len => OolRef::new(offset as u32, len as u32),
    };
    Ok((window(0, args), window(result_at, call.ool_out_capacity)))
}

/// Writes `call`'s out-of-line arguments into `data` and builds the request.
fn prepare<'a>(call: &'a RawCall, data: RegionView<'_>) -> Result<(TypedCall<'a, ()>, OolRef)> {
    let (args, result) = place(call, data.len())?;
    if args.len > 0 {
        data.write(0, &call.ool_in)
            .map_err(|e| CliError::Protocol(format!("writing the arguments: {e}")))?;
    }
    let typed = TypedCall::new(call.service, call.method, call.version, &call.inline)
        .ool_args(args)
        .ool_result(result);
    Ok((typed, result))
}

/// The reply in `completion`, with the result bytes copied out of `data`.
fn reply_from(completion: &Completion, data: RegionView<'_>, result: OolRef) -> Result<RawReply> {
    // The protocol checked `ool_written` against the window.
    let mut ool_out = vec![0u8; completion.ool_written.min(result.len) as usize];
    if !ool_out.is_empty() {
        data.read(result.offset as usize, &mut ool_out)
            .map_err(|e| CliError::Protocol(format!("reading the result: {e}")))?;
    }
    Ok(RawReply {
        status: completion.status,
        inline: completion.inline().to_vec(),
        ool_out,
    })
}

/// A connection to the service VM over this guest's Xen devices.
pub struct XenEndpoint {
    conn: Connection<LinuxDevices>,
    args: ConnArgs,
}

impl XenEndpoint {
    pub fn connect(args: &ConnArgs) -> Result<XenEndpoint> {
        Ok(XenEndpoint {
            conn: conn::connect(args)?,
            args: args.clone(),
        })
    }

    /// The connection underneath (its device, geometry and client counters).
    pub fn connection(&self) -> &Connection<LinuxDevices> {
        &self.conn
    }
}

impl Endpoint for XenEndpoint {
    fn call_raw(&mut self, call: &RawCall) -> Result<RawReply> {
        let (typed, result) = prepare(call, self.conn.data())?;
        let completion = self.conn.call_completion(&typed, self.args.timeout())?;
        reply_from(&completion, self.conn.data(), result)
    }

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
    timeout: Duration,
}

impl HostEndpoint {
    /// Connects to `socket` with a data region of `args.data_pages` and `args`' time limits.
    pub fn connect(socket: &Path, args: &ConnArgs) -> Result<HostEndpoint> {
        let options = ClientOptions {
            data_len: args.data_bytes(),
            setup_timeout: Duration::from_millis(args.connect_timeout_ms),
            ..ClientOptions::default()
        };
        let client = Client::connect(socket, options).map_err(|error| CliError::HostConnect {
            socket: socket.to_path_buf(),
            error,
        })?;
        Ok(HostEndpoint {
            client,
            socket: socket.to_path_buf(),
            timeout: args.timeout(),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Endpoint for HostEndpoint {
    fn call_raw(&mut self, call: &RawCall) -> Result<RawReply> {
        let (typed, result) = prepare(call, self.client.data())?;
        let pending = self
            .client
            .start(&typed)
            .map_err(|e| CliError::host(&self.socket, e))?;
        self.client.flush();
        let completion = self
            .client
            .wait_for(pending.call_id(), Some(self.timeout))
            .map_err(|e| CliError::host(&self.socket, e))?;
        reply_from(&completion, self.client.data(), result)
    }

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
    fn arguments_go_first_and_the_result_window_follows_aligned() {
        let call = RawCall::of(&echo::client::echo_ool(&()))
            .ool_in(b"hello")
            .ool_out(5);
        assert_eq!(
            place(&call, 4096).unwrap(),
            (OolRef::new(0, 5), OolRef::new(8, 5))
        );
        let no_ool = RawCall::of(&arith::client::add(&arith::Operands { a: 1, b: 2 }));
        assert_eq!(no_ool.inline.len(), 16);
        assert_eq!(place(&no_ool, 0).unwrap(), (OolRef::NONE, OolRef::NONE));
        let result_only = RawCall::default().ool_out(4096);
        assert_eq!(
            place(&result_only, 4096).unwrap(),
            (OolRef::NONE, OolRef::new(0, 4096))
        );
    }

    #[test]
    fn what_does_not_fit_the_data_region_is_a_usage_error() {
        let call = RawCall::default().ool_in(&[7; 4001]).ool_out(88);
        // 4001 rounds up to 4008; 4008 + 88 = 4096 fits, one more byte does not.
        assert!(place(&call, 4096).is_ok());
        let err = place(&call.clone().ool_out(89), 4096).unwrap_err();
        assert_eq!(err.exit_status(), 2);
        assert_eq!(
            err.to_string(),
            "bad arguments: 4001 bytes of out-of-line arguments and a 89-byte result window do \
             not fit the 4096-byte data region (raise --data-pages)"
        );
        assert!(place(&RawCall::default().ool_out(usize::MAX), 4096).is_err());
    }

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
