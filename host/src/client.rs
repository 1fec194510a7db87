//! The client process's end of a host connection.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use xenrpc_proto::{
    CallError, CallRequest, CallTable, Caller, ClientConnection, Completion, Pending, RegionView,
    Reply, Status, TypedCall, MAX_IN_FLIGHT,
};
use zerocopy::FromBytes;

use crate::event::EventFd;
use crate::link::Link;
use crate::shm::MemfdRegion;
use crate::wait::{Deadline, SpinBudget, SpinPolicy, WaitOutcome, Waiter};

/// How a client connects and waits.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Bytes of data region to ask for (the client's out-of-line buffers).
    pub data_len: usize,
    /// How long a wait for a reply spins, at most, before it blocks (less while replies
    /// keep coming later than that: see [`SpinBudget`]).
    pub spin: SpinPolicy,
    /// Two-way calls allowed in flight at once (at most `MAX_IN_FLIGHT` and the ring's slots).
    pub max_in_flight: usize,
    /// How long to wait for the server during set-up.
    pub setup_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            data_len: 64 * 1024,
            spin: SpinPolicy::DEFAULT,
            max_in_flight: 16,
            setup_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a host client's call or set-up failed.
#[derive(Debug)]
pub enum ClientError {
    /// The server process went away (its socket hung up); the connection is unusable.
    ServerGone,
    /// No reply within the caller's timeout (the call stays in flight).
    TimedOut,
    /// The protocol refused the call, the server answered with an error status, or the server
    /// broke the protocol.
    Call(CallError),
    /// A system call failed (set-up, the socket, the eventfds).
    Io(io::Error),
}

impl ClientError {
    /// The remote status, when the server answered with one.
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Call(CallError::Remote(status)) => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::ServerGone => write!(f, "server gone (its end of the connection closed)"),
            ClientError::TimedOut => write!(f, "timed out waiting for the reply"),
            ClientError::Call(CallError::Remote(status)) => {
                write!(f, "server replied {}", status.ident())
            }
            ClientError::Call(e) => write!(f, "call failed: {e}"),
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> Self {
        ClientError::Call(e)
    }
}

/// A connection to a `xenrpc-hostd` server.
pub struct Client {
    conn: ClientConnection<MemfdRegion, MemfdRegion>,
    to_server: EventFd,
    waiter: Waiter,
    // Kept open for the connection's life: the server watches it to learn of our death.
    _socket: std::os::fd::OwnedFd,
    _to_client: EventFd,
    /// How waits spin: the policy's time at most, less when answers keep coming late.
    spin: SpinBudget,
    /// Answers that arrived while waiting for another call.
    calls: CallTable<()>,
    server_gone: bool,
    /// How long a [`Caller`] call waits for its reply.
    call_timeout: Option<Duration>,
    /// Where answers are copied off the ring: the awaited call's is decoded from here, moved
    /// nowhere (others' answers are moved into `calls`).
    answer: Completion,
}

impl Client {
    /// Connects to the server listening on the Unix socket `path`.
    pub fn connect(path: &Path, options: ClientOptions) -> Result<Self, ClientError> {
        let link = Link::connect(path, options.data_len, options.setup_timeout)?;
        Self::from_link(link, options)
    }

    /// Finishes set-up over a link obtained with [`Link::connect`]: lays out the ring and tells
    /// the server it may attach. (Tests use this to keep a second mapping of the regions.)
    pub fn from_link(link: Link, options: ClientOptions) -> Result<Self, ClientError> {
        let Link {
            socket,
            ring,
            data,
            to_server,
            to_client,
            geometry,
        } = link;
        let max_in_flight = options
            .max_in_flight
            .clamp(1, MAX_IN_FLIGHT.min(geometry.slots() as usize));
        let conn = ClientConnection::new(ring, data, geometry, max_in_flight).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ring set-up failed: {e}"),
            )
        })?;
        crate::rendezvous::send_message(
            std::os::fd::AsFd::as_fd(&socket),
            &crate::rendezvous::READY,
            &[],
        )?;
        let waiter = Waiter::new(&to_client, std::os::fd::AsFd::as_fd(&socket))?;
        Ok(Self {
            conn,
            to_server,
            waiter,
            _socket: socket,
            _to_client: to_client,
            spin: SpinBudget::adaptive(options.spin),
            calls: CallTable::new(),
            server_gone: false,
            call_timeout: None,
            answer: Completion::default(),
        })
    }

    /// The data region: write out-of-line arguments here, read results from here.
    pub fn data(&self) -> RegionView<'_> {
        self.conn.data()
    }

    /// The ring region (diagnostics and adversarial tests).
    pub fn ring(&self) -> RegionView<'_> {
        self.conn.ring()
    }

    /// How long later waits spin before they block (at most: see [`SpinBudget`]).
    pub fn set_spin(&mut self, spin: SpinPolicy) {
        self.spin = SpinBudget::adaptive(spin);
    }

    /// How long a wait spins now: the spin policy's time, or less after answers came late.
    pub fn spin_window(&self) -> Duration {
        self.spin.window()
    }

    /// Two-way calls started and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.conn.in_flight()
    }

    /// Two-way calls allowed in flight at once (the option, clamped to the ring).
    pub fn max_in_flight(&self) -> usize {
        self.conn.max_in_flight()
    }

    /// Makes a call and waits for its reply.
    pub fn call<R: FromBytes>(
        &mut self,
        call: &TypedCall<'_, R>,
        timeout: Option<Duration>,
    ) -> Result<Reply<R>, ClientError> {
        let pending = self.start(call)?;
        self.flush();
        self.finish(pending, timeout)
    }

    /// Writes a call into the ring without publishing it; [`Self::flush`] publishes a batch
    /// with at most one wake-up.
    pub fn start<R>(&mut self, call: &TypedCall<'_, R>) -> Result<Pending<R>, ClientError> {
        if self.server_gone {
            return Err(ClientError::ServerGone);
        }
        Ok(self.conn.start(call)?)
    }

    /// Starts a one-way call (no reply).
    pub fn start_one_way<R>(&mut self, call: TypedCall<'_, R>) -> Result<u64, ClientError> {
        if self.server_gone {
            return Err(ClientError::ServerGone);
        }
        Ok(self.conn.start_one_way(call)?)
    }

    /// Publishes started calls, waking the server if it sleeps.
    #[inline]
    pub fn flush(&mut self) {
        if self.conn.publish() {
            let _ = self.to_server.signal();
        }
    }

    /// Waits for a started call's reply and decodes it.
    pub fn finish<R: FromBytes>(
        &mut self,
        pending: Pending<R>,
        timeout: Option<Duration>,
    ) -> Result<Reply<R>, ClientError> {
        if let Some(completion) = self.calls.take(pending.call_id()) {
            return Ok(pending.finish(&completion)?);
        }
        self.receive_answer(pending.call_id(), timeout)?;
        Ok(pending.finish(&self.answer)?)
    }

    /// Waits for the completion of call `call_id`, keeping others that arrive meanwhile.
    pub fn wait_for(
        &mut self,
        call_id: u64,
        timeout: Option<Duration>,
    ) -> Result<Completion, ClientError> {
        if let Some(completion) = self.calls.take(call_id) {
            return Ok(completion);
        }
        self.receive_answer(call_id, timeout)?;
        Ok(std::mem::take(&mut self.answer))
    }

    /// Waits until the answer to call `call_id` is in `self.answer`, keeping others that arrive
    /// meanwhile in the table (which held none for `call_id`: the caller looked).
    fn receive_answer(
        &mut self,
        call_id: u64,
        timeout: Option<Duration>,
    ) -> Result<(), ClientError> {
        // Fixed at the first look at the clock: an answer that comes at once costs no read.
        let mut deadline = timeout.map_or(Deadline::Never, Deadline::After);
        loop {
            match self.receive(&mut deadline) {
                // Ours: decoded where it is (the table holds only others' answers and given-up
                // calls).
                Ok(()) if self.answer.call_id == call_id => return Ok(()),
                Ok(()) => {
                    self.calls.arrived(std::mem::take(&mut self.answer));
                }
                Err(e) => {
                    // Given up: its answer, if it ever comes, is dropped.
                    self.calls.abandon(call_id);
                    return Err(e);
                }
            }
        }
    }

    /// Waits for the next completion of any call.
    pub fn next_completion(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Completion, ClientError> {
        if let Some(completion) = self.calls.take_any() {
            return Ok(completion);
        }
        self.receive(&mut deadline.into())?;
        Ok(std::mem::take(&mut self.answer))
    }

    /// Waits for the next completion off the ring, copied into `self.answer`.
    fn receive(&mut self, deadline: &mut Deadline) -> Result<(), ClientError> {
        if self.server_gone {
            return Err(ClientError::ServerGone);
        }
        let Self {
            conn,
            waiter,
            answer,
            spin,
            ..
        } = self;
        let outcome = waiter.wait(
            spin,
            // A broken connection ends the wait too (with its error).
            conn,
            |conn| {
                // The spin's poll for nothing: one look at the next slot's sequence word.
                if !conn.has_responses() && conn.broken().is_none() {
                    return None;
                }
                match conn.poll_response_into(answer) {
                    Ok(true) => Some(Ok(())),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                }
            },
            |conn| conn.prepare_to_wait(),
            deadline,
        );
        match outcome? {
            WaitOutcome::Ready(taken) => Ok(taken?),
            WaitOutcome::TimedOut => Err(ClientError::TimedOut),
            WaitOutcome::PeerGone => {
                // Responses published before the server died are still valid.
                if let Ok(true) = self.conn.poll_response_into(&mut self.answer) {
                    return Ok(());
                }
                self.server_gone = true;
                Err(ClientError::ServerGone)
            }
        }
    }

    /// How long calls made through [`Caller`] (the typed client objects) wait for their
    /// reply; `None` (the default) waits until the reply or the server's death.
    pub fn set_call_timeout(&mut self, timeout: Option<Duration>) {
        self.call_timeout = timeout;
    }

    /// Whether the server has gone away (checked without blocking).
    pub fn server_gone(&mut self) -> bool {
        if !self.server_gone {
            self.server_gone = self.waiter.peer_gone().unwrap_or(true);
        }
        self.server_gone
    }
}

impl Caller for Client {
    type Error = ClientError;

    /// Places `input` and the result window in the data region itself, then waits as
    /// [`Client::set_call_timeout`] says.
    fn call_raw(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Completion, ClientError> {
        if self.server_gone {
            return Err(ClientError::ServerGone);
        }
        let call_id = self
            .conn
            .enqueue_with_bytes(request, input, output_capacity)?;
        self.flush();
        self.wait_for(call_id, self.call_timeout)
    }
}

/// The clock call deadlines are written in: `CLOCK_MONOTONIC` nanoseconds, which every process
/// on the machine shares.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// An absolute deadline `after` from now, on [`monotonic_ns`]'s clock.
pub fn deadline_after(after: Duration) -> u64 {
    monotonic_ns().saturating_add(after.as_nanos().min(u128::from(u64::MAX)) as u64)
}
