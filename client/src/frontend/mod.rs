//! The frontend (client) end of docs/rendezvous.md: finds this domain's device in xenstore,
//! walks the XenbusState handshake with the service VM, and then makes calls over the shared
//! ring ([`Connection`]). Every wait has a deadline; the backend's state is watched throughout,
//! so a server that closes or vanishes fails calls with a clear error instead of a hang.

mod device;
mod handshake;

pub use device::{find_device, list_own_devices, own_domid, DeviceInfo, OwnDevice};
pub use handshake::{connect, ConnectOptions};

use std::time::{Duration, Instant};

use xenrpc_proto::wait::{spin_then_arm, SpinBudget, StdClock, WaitStep};
use xenrpc_proto::zerocopy::FromBytes;
use xenrpc_proto::{
    Arrival, CallRequest, CallTable, Caller, ClientConnection, Completion, Notify, Pending,
    RegionView, Reply, RingGeometry, TypedCall,
};
use xenrpc_rendezvous::{key, XenbusState};

use crate::devices::{EventChannel, Window, XenDevices};
use crate::error::{Error, Result};
use crate::server_clock::ServerClock;
use crate::wait::{poll_readable, Readiness};
use crate::xenstore::{Xenstore, NO_TX};

use device::{look_at_backend, BackendLook};

/// The watch token for the backend state.
const BACKEND_TOKEN: &str = "xenrpc-backend";

/// Client-side counters of one connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientStats {
    /// Calls started (submitted to the ring).
    pub calls_started: u64,
    /// Calls answered with a reply.
    pub calls_ok: u64,
    /// Calls the server answered with an error status.
    pub calls_remote_error: u64,
    /// Calls that missed their deadline.
    pub calls_timed_out: u64,
    /// Event-channel notifications sent to the server.
    pub notifications_sent: u64,
    /// Times a wait found its response while spinning (no sleep).
    pub spin_hits: u64,
    /// Times a wait slept on the event channel.
    pub sleeps: u64,
    /// Late responses to calls that had already timed out (dropped).
    pub late_responses: u64,
}

/// A connected client: the ring, the event channel and a watch on the backend.
pub struct Connection<D: XenDevices> {
    info: DeviceInfo,
    client: ClientConnection<Window<D::Pages>, Window<D::Pages>>,
    channel: D::Channel,
    ping: Option<D::Channel>,
    store: Box<dyn Xenstore>,
    // Kept alive (and granted) for the connection's lifetime.
    _index: D::Pages,
    ring_refs: Vec<u32>,
    index_ref: u32,
    /// The calls in flight, each with when it was sent (to learn the server's clock from its
    /// answer), and the answers not taken yet.
    calls: CallTable<Instant>,
    server_clock: ServerClock,
    /// How waits spin: the options' time, fixed (a PV guest's wake-ups can take longer than
    /// the whole window, which an adaptive one would take for answers too late to spin for).
    spin: SpinBudget,
    failed: Option<Failure>,
    closed: bool,
    stats: ClientStats,
    geometry: RingGeometry,
    data_pages: usize,
    /// How long a [`Caller`] call waits.
    call_timeout: Duration,
}

/// Why a connection stopped working (every later call fails the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Gone,
    Closed,
}

struct ChannelNotify<'a, C: EventChannel>(&'a C, &'a mut u64);

impl<C: EventChannel> ChannelNotify<'_, C> {
    fn send(&mut self) -> Result<()> {
        *self.1 += 1;
        self.0.notify()
    }
}

impl<D: XenDevices> Connection<D> {
    /// The device this connection runs over.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The counters so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The ring's geometry (slots, pages).
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// Pages of the data region.
    pub fn data_pages(&self) -> usize {
        self.data_pages
    }

    /// The local port of the connection's event channel (what `event-channel` says).
    pub fn event_channel_port(&self) -> u32 {
        self.channel.port()
    }

    /// The grant reference of the index page (what `index-ref` says).
    pub fn index_ref(&self) -> u32 {
        self.index_ref
    }

    /// The grant references of the ring pages, in order.
    pub fn ring_refs(&self) -> &[u32] {
        &self.ring_refs
    }

    /// The data region, for out-of-line arguments and results.
    pub fn data(&self) -> RegionView<'_> {
        self.client.data()
    }

    /// The ring region, shared with the server. Only for exercising the server's defences
    /// (a correct client never writes it by hand: the protocol does).
    pub fn ring_for_hostile_tests(&self) -> RegionView<'_> {
        self.client.ring()
    }

    /// Calls started and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.client.in_flight()
    }

    fn check_failed(&self) -> Result<()> {
        match self.failed {
            Some(Failure::Gone) => {
                Err(Error::ServerGone(format!("{} vanished", self.info.backend)))
            }
            Some(Failure::Closed) => Err(Error::ServerClosed),
            None => Ok(()),
        }
    }

    /// Starts a call and publishes it (notifying the server if it asked to be).
    pub fn submit<R>(&mut self, call: &TypedCall<'_, R>) -> Result<Pending<R>> {
        self.submit_at(call, Instant::now())
    }

    /// [`Self::submit`] for a caller that read the clock already (`now`): a caller starting
    /// several calls reads it once for all of them (a clock read is a system call in a PV
    /// guest).
    pub fn submit_at<R>(&mut self, call: &TypedCall<'_, R>, now: Instant) -> Result<Pending<R>> {
        let pending = self.start_at(call, now)?;
        self.flush()?;
        Ok(pending)
    }

    /// Starts a call (clock read at `now`) without publishing it: calls started one after
    /// another and then published by one [`Self::flush`] reach the server together, so it can
    /// serve them as one batch (one entry into a protected service for all of them), for one
    /// index store and at most one notification. A wait publishes first.
    pub fn start_at<R>(&mut self, call: &TypedCall<'_, R>, now: Instant) -> Result<Pending<R>> {
        self.check_failed()?;
        let pending = self.client.start(call)?;
        self.stats.calls_started += 1;
        self.calls.started(pending.call_id(), now);
        Ok(pending)
    }

    /// Publishes the calls started since the last publish, notifying the server if it asked
    /// to be.
    pub fn flush(&mut self) -> Result<()> {
        if self.client.publish() {
            ChannelNotify(&self.channel, &mut self.stats.notifications_sent).send()?;
        }
        Ok(())
    }

    /// Starts several calls and publishes them with at most one notification. Returns the
    /// calls started: fewer than given when the ring or the in-flight cap filled up (the rest
    /// were not sent); an error only if none could be started.
    pub fn submit_batch<R>(&mut self, calls: &[TypedCall<'_, R>]) -> Result<Vec<Pending<R>>> {
        self.check_failed()?;
        let mut started = Vec::with_capacity(calls.len());
        let mut error = None;
        let now = Instant::now();
        for call in calls {
            match self.client.start(call) {
                Ok(p) => {
                    self.stats.calls_started += 1;
                    self.calls.started(p.call_id(), now);
                    started.push(p);
                }
                Err(e) => {
                    error = Some(Error::from(e));
                    break;
                }
            }
        }
        if self.client.publish() {
            ChannelNotify(&self.channel, &mut self.stats.notifications_sent).send()?;
        }
        match error {
            Some(e) if started.is_empty() => Err(e),
            _ => Ok(started),
        }
    }

    /// Starts up to `most` one-way copies of `call` (fewer when the ring fills) and publishes
    /// them with at most one notification. Returns how many were started. Nobody learns a
    /// one-way call's fate: for load and attack tests, which see a closed server through
    /// their next two-way call.
    pub fn submit_one_way<R: Copy>(
        &mut self,
        call: &TypedCall<'_, R>,
        most: usize,
    ) -> Result<usize> {
        self.check_failed()?;
        let mut started = 0;
        while started < most {
            match self.client.start_one_way(*call) {
                Ok(_) => started += 1,
                Err(xenrpc_proto::CallError::RingFull) => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.stats.calls_started += started as u64;
        if self.client.publish() {
            ChannelNotify(&self.channel, &mut self.stats.notifications_sent).send()?;
        }
        Ok(started)
    }

    /// Takes every response that arrived, stashing them by call id.
    fn drain(&mut self) -> Result<()> {
        while let Some(completion) = self.client.poll_response()? {
            let server_time = completion.server_time_ns;
            match self.calls.arrived(completion) {
                Arrival::Kept(Some(sent)) => self.server_clock.observe(sent, server_time),
                Arrival::Kept(None) => {}
                Arrival::Late => self.stats.late_responses += 1,
            }
        }
        Ok(())
    }

    /// Looks at the backend after a watch fired: a closed or vanished server fails every call.
    fn check_backend(&mut self) -> Result<()> {
        while self.store.has_buffered_event() {
            // Buffered, so this returns at once.
            self.store.next_event(Instant::now())?;
        }
        // Once connected, anything but Connected means the server is not serving us any more
        // (closed, detached, or restarted the device): calls would never be answered.
        let failure = match look_at_backend(self.store.as_mut(), &self.info)? {
            BackendLook::State(XenbusState::Connected) => return Ok(()),
            BackendLook::Gone => Failure::Gone,
            _ => Failure::Closed,
        };
        self.failed = Some(failure);
        self.check_failed()
    }

    /// Waits for `pending`'s response until `deadline`. Spins briefly, then sleeps on the
    /// event channel (and the backend watch). On timeout the call is abandoned: a late
    /// response is dropped when it arrives.
    pub fn wait<R: FromBytes>(
        &mut self,
        pending: Pending<R>,
        deadline: Instant,
    ) -> Result<Reply<R>> {
        let completion = self.wait_completion(pending.call_id(), deadline)?;
        self.finish(pending, &completion)
    }

    /// `pending`'s response if it has arrived, without waiting (and without reading the
    /// clock); else `pending` back.
    pub fn try_take<R: FromBytes>(
        &mut self,
        pending: Pending<R>,
    ) -> Result<std::result::Result<Reply<R>, Pending<R>>> {
        self.check_failed()?;
        self.drain()?;
        match self.calls.take(pending.call_id()) {
            Some(completion) => self.finish(pending, &completion).map(Ok),
            None => Ok(Err(pending)),
        }
    }

    /// [`Self::wait`] for call `id`, returning its completion whatever its status.
    fn wait_completion(&mut self, id: u64, deadline: Instant) -> Result<Completion> {
        // A call started but not published would never be answered.
        self.flush()?;
        // A fresh wait (whatever ended the last one): it spins once, then only arms and
        // re-checks after each wake-up.
        self.spin.abandon();
        loop {
            if let Some(c) = self.calls.take(id) {
                self.spin.work_came(&StdClock);
                return Ok(c);
            }
            self.check_failed()?;
            self.drain()?;
            if let Some(c) = self.calls.take(id) {
                return Ok(c);
            }
            let spinning = !self.spin.window().is_zero();
            let step = spin_then_arm(
                &mut self.spin,
                &StdClock,
                &mut self.client,
                |client| client.has_responses().then_some(()),
                |client| client.prepare_to_wait(),
                || false,
            );
            if step != WaitStep::Block {
                if spinning {
                    self.stats.spin_hits += 1;
                }
                continue;
            }
            if self.store.has_buffered_event() {
                self.check_backend()?;
            }
            self.stats.sleeps += 1;
            let fds = [self.channel.fd(), self.store.event_fd()];
            match poll_readable(&fds, deadline)
                .map_err(|e| Error::device("poll event channel", e))?
            {
                Readiness::TimedOut => {
                    self.drain()?;
                    if let Some(c) = self.calls.take(id) {
                        return Ok(c);
                    }
                    self.calls.abandon(id);
                    self.stats.calls_timed_out += 1;
                    return Err(Error::DeadlineExceeded(format!("no response to call {id}")));
                }
                Readiness::Ready(mask) => {
                    if mask & 1 != 0 {
                        self.channel.acknowledge()?;
                    }
                    if mask & 2 != 0 {
                        // Takes what has arrived without waiting: the call's response must
                        // not wait behind a partial xenstore message.
                        if self.store.next_event(Instant::now())?.is_some() {
                            self.check_backend()?;
                        }
                    }
                }
            }
        }
    }

    fn finish<R: FromBytes>(
        &mut self,
        pending: Pending<R>,
        completion: &Completion,
    ) -> Result<Reply<R>> {
        match pending.finish(completion) {
            Ok(reply) => {
                self.stats.calls_ok += 1;
                Ok(reply)
            }
            Err(e) => {
                if matches!(e, xenrpc_proto::CallError::Remote(_)) {
                    self.stats.calls_remote_error += 1;
                }
                Err(e.into())
            }
        }
    }

    /// Submits a call and waits for its reply, at most `timeout`.
    pub fn call<R: FromBytes>(
        &mut self,
        call: &TypedCall<'_, R>,
        timeout: Duration,
    ) -> Result<Reply<R>> {
        let deadline = Instant::now() + timeout;
        let pending = self.submit_with_deadline(call, deadline)?;
        self.wait(pending, deadline)
    }

    /// Like [`Self::call`], but gives the completion as the server wrote it: any status, the
    /// inline bytes undecoded (for callers that decode replies themselves).
    pub fn call_completion<R>(
        &mut self,
        call: &TypedCall<'_, R>,
        timeout: Duration,
    ) -> Result<Completion> {
        let deadline = Instant::now() + timeout;
        let pending = self.submit_with_deadline(call, deadline)?;
        let completion = self.wait_completion(pending.call_id(), deadline)?;
        if completion.status == xenrpc_proto::Status::Ok {
            self.stats.calls_ok += 1;
        } else {
            self.stats.calls_remote_error += 1;
        }
        Ok(completion)
    }

    /// Submits `call`, which the caller waits for until `deadline`.
    fn submit_with_deadline<R>(
        &mut self,
        call: &TypedCall<'_, R>,
        deadline: Instant,
    ) -> Result<Pending<R>> {
        match self.server_deadline_for(call.request(), deadline) {
            Some(at) => self.submit(&call.with_deadline_ns(at)),
            None => self.submit(call),
        }
    }

    /// Once an answer has shown the server's clock, the server gets the deadline too: a call
    /// it reads only after the client gave up is refused there, not run. A deadline the
    /// caller put in the call itself is left alone.
    fn server_deadline_for(&self, request: &CallRequest<'_>, deadline: Instant) -> Option<u64> {
        match request.deadline_ns {
            0 => self.server_clock.server_deadline(deadline),
            _ => None,
        }
    }

    /// How long calls made through [`Caller`] (the typed client objects) wait for their
    /// reply (5 s unless set).
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
    }

    /// One raw event round trip on the ping port (set up with
    /// [`ConnectOptions::ping_channel`]): sends an event, which the server's event dispatch
    /// bounces straight back, and waits for it until `deadline` as a call waits for its
    /// response. No ring, no call: what a null call is set beside in benchmarks.
    pub fn ping(&mut self, deadline: Instant) -> Result<()> {
        self.check_failed()?;
        let ping = self.ping.as_ref().ok_or_else(|| {
            Error::BadArguments(
                "this connection has no ping port (ConnectOptions::ping_channel)".into(),
            )
        })?;
        ping.acknowledge()?;
        ping.notify()?;
        // Waits the way calls do (spin, then sleep), so the two differ only in what the
        // server does. Linux gives user space no shared pending bit: the spin is a loop of
        // non-blocking reads of the port.
        let budget = &mut self.spin;
        budget.abandon();
        while budget.keep_spinning(&StdClock) {
            if ping.acknowledge()? {
                budget.work_came(&StdClock);
                return Ok(());
            }
        }
        loop {
            match poll_readable(&[ping.fd()], deadline)
                .map_err(|e| Error::device("poll ping port", e))?
            {
                Readiness::TimedOut => {
                    return Err(Error::DeadlineExceeded(
                        "no ping back from the server".into(),
                    ))
                }
                Readiness::Ready(_) => {
                    if ping.acknowledge()? {
                        budget.work_came(&StdClock);
                        return Ok(());
                    }
                }
            }
        }
    }

    /// `deadline` on the server's clock, never earlier than it, once an answer has shown that
    /// clock (see [`crate::server_clock`]); `None` before. [`Self::call`] sends it with every
    /// call; a caller of [`Self::submit`] may put it in the call with `deadline_ns`.
    pub fn server_deadline(&self, deadline: Instant) -> Option<u64> {
        self.server_clock.server_deadline(deadline)
    }

    /// Raises the connection's event with no request behind it. Only for exercising the
    /// server's event-storm defence: a correct client never needs it.
    pub fn raise_event_without_request(&self) -> Result<()> {
        self.channel.notify()
    }

    /// Raises the ping port without waiting for the bounce. Only for exercising the server's
    /// ping-storm defence: a correct client waits for each ping ([`Self::ping`]).
    pub fn raise_ping_without_waiting(&self) -> Result<()> {
        let ping = self.ping.as_ref().ok_or_else(|| {
            Error::BadArguments(
                "this connection has no ping port (ConnectOptions::ping_channel)".into(),
            )
        })?;
        ping.acknowledge()?;
        ping.notify()
    }

    /// Ends the connection: FE Closing, wait up to `timeout` for the server to close its side,
    /// then FE Closed in every case (the server must stop using our pages). A server slow to
    /// close is not an error (every call already has its answer): the outcome says so. The
    /// pages are released when the connection is dropped.
    pub fn close(mut self, timeout: Duration) -> Result<CloseOutcome> {
        self.shutdown(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<CloseOutcome> {
        self.closed = true;
        let fe_state = format!("{}/{}", self.info.frontend, key::STATE);
        let waited = self.wait_backend_closed(&fe_state, timeout);
        // Closed either way: the server must stop using our pages.
        let closed = self
            .store
            .write(NO_TX, &fe_state, XenbusState::Closed.as_str().as_bytes());
        let be_state = format!("{}/{}", self.info.backend, key::STATE);
        let _ = self.store.unwatch(&be_state, BACKEND_TOKEN);
        let outcome = waited?;
        closed?;
        Ok(outcome)
    }

    /// FE Closing, then waits (bounded) for the backend to reach Closed (or vanish).
    fn wait_backend_closed(&mut self, fe_state: &str, timeout: Duration) -> Result<CloseOutcome> {
        self.store
            .write(NO_TX, fe_state, XenbusState::Closing.as_str().as_bytes())?;
        let deadline = Instant::now() + timeout;
        loop {
            let look = look_at_backend(self.store.as_mut(), &self.info)?;
            match look {
                BackendLook::State(XenbusState::Closed)
                | BackendLook::Gone
                | BackendLook::Offline => return Ok(CloseOutcome::Acknowledged),
                _ => {}
            }
            if self.store.next_event(deadline)?.is_none() {
                let now = look.label();
                return Ok(CloseOutcome::Unacknowledged(format!(
                    "the server did not confirm the close within {:.1} s ({} is still {now}); \
                     this side is Closed, so the server tears the connection down when it \
                     notices",
                    timeout.as_secs_f64(),
                    self.info.backend
                )));
            }
        }
    }
}

/// How [`Connection::close`] went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The server closed its side (or its device is gone or offline).
    Acknowledged,
    /// The server had not closed its side by the deadline (why, for a warning). This side is
    /// Closed anyway; the server tears down when it notices.
    Unacknowledged(String),
}

impl<D: XenDevices> Drop for Connection<D> {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort, no waiting: the server tears down when it sees Closed; pages it
            // still maps stay allocated until it unmaps them.
            let fe_state = format!("{}/{}", self.info.frontend, key::STATE);
            let _ = self
                .store
                .write(NO_TX, &fe_state, XenbusState::Closed.as_str().as_bytes());
        }
    }
}

impl<D: XenDevices> Notify for Connection<D> {
    fn notify(&self) {
        // Best effort: a failed notify surfaces as a deadline on the call.
        let _ = self.channel.notify();
    }
}

impl<D: XenDevices> Caller for Connection<D> {
    type Error = Error;

    /// Places `input` and the result window in the data pages itself, then waits at most
    /// [`Connection::set_call_timeout`].
    fn call_raw(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Completion> {
        self.check_failed()?;
        let deadline = Instant::now() + self.call_timeout;
        let request = CallRequest {
            deadline_ns: self
                .server_deadline_for(request, deadline)
                .unwrap_or(request.deadline_ns),
            ..*request
        };
        let id = self
            .client
            .enqueue_with_bytes(&request, input, output_capacity)?;
        self.stats.calls_started += 1;
        self.calls.started(id, Instant::now());
        if self.client.publish() {
            ChannelNotify(&self.channel, &mut self.stats.notifications_sent).send()?;
        }
        let completion = self.wait_completion(id, deadline)?;
        if completion.status == xenrpc_proto::Status::Ok {
            self.stats.calls_ok += 1;
        } else {
            self.stats.calls_remote_error += 1;
        }
        Ok(completion)
    }
}
