//! Xenstore client over the shared ring page (domU only: dom0 has no xenstore at boot).
//!
//! One request is in flight at a time. Everything that comes back is checked by
//! `xen_abi::xenstore` before use: ring indices, message framing and length, request id,
//! reply type, string shape. A broken stream (bad index, oversized message) cannot be
//! resynchronised, so the connection is then marked broken and every later call fails with the
//! reason; a reply that is merely wrong fails that one call.
//!
//! Watch events arrive interleaved with replies; they are queued (bounded) and delivered by
//! [`service`], which the main loop calls, to the handler registered with [`watch`]. Handlers
//! run with no xenstore lock held and may make xenstore calls.
//!
//! Paths without a leading `/` are relative to the domain's home, `/local/domain/<id>`.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use xen_abi::evtchn::port_bit;
use xen_abi::ring::{read_ring, write_ring, RingBytes, RingIndexError};
use xen_abi::xenstore::{
    check_reply, parse_directory, parse_ok, parse_permissions, parse_read, parse_read_text,
    parse_transaction_id, parse_watch_event, retry_transaction, FrameError, MessageAssembler,
    Permission, ReplyError, Request, RequestError, RetryError, Retryable, XenstoreDomainInterface,
    XsErrno, DEFAULT_TRANSACTION_ATTEMPTS, MAX_REQUEST_SIZE, XENSTORE_CONNECTED, XENSTORE_RING,
};

use super::events::{self, EventError, Port};
use super::start_info::BootInfo;
use crate::log;
use crate::mm::StaticPage;

/// How long one request may wait for its reply (or for ring space).
const REPLY_TIMEOUT_NS: u64 = 10_000_000_000;

/// Watch events kept for [`service`]; beyond this the oldest is dropped (and counted). An
/// event equal to one already queued is not queued again: a peer rewriting one node in a loop
/// costs one queued event, not a flood.
const MAX_QUEUED_EVENTS: usize = 256;

/// Watch events dropped because the queue was full (see [`lost_events`]).
static LOST_EVENTS: AtomicU64 = AtomicU64::new(0);
/// Watch events for a token nobody watches any more (queued before an unwatch).
static STALE_EVENTS: AtomicU64 = AtomicU64::new(0);

/// Watch events dropped since boot because the queue was full: a watcher that sees this grow
/// must look at everything it watches again.
pub fn lost_events() -> u64 {
    LOST_EVENTS.load(Ordering::Relaxed)
}

/// Counts one more of something peers can cause; whether to log it (the 1st, 2nd, 4th, 8th,
/// ... time), so that a flood costs a logarithmic number of lines.
fn count_and_log(counter: &AtomicU64) -> Option<u64> {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}

/// Why a xenstore call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XsError {
    /// No xenstore: dom0 at boot, or `init` has not run.
    Unavailable,
    /// The request was refused locally before sending (bad path, too long, ...).
    Request(RequestError),
    /// The reply was wrong, or xenstored reported an error (`Reply(Xenstore(ENOENT))`).
    Reply(ReplyError),
    /// No reply within the time limit.
    Timeout,
    /// The connection is unusable; the string says why it broke.
    Broken(String),
    /// An event-channel operation failed.
    Event(EventError),
    /// Called from an event handler while another xenstore call is waiting for its reply.
    Reentrant,
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Unavailable => f.write_str("xenstore unavailable"),
            XsError::Request(e) => write!(f, "request refused: {e}"),
            XsError::Reply(e) => write!(f, "{e}"),
            XsError::Timeout => f.write_str("xenstore did not answer in time"),
            XsError::Broken(why) => write!(f, "xenstore connection broken: {why}"),
            XsError::Event(e) => write!(f, "event channel: {e}"),
            XsError::Reentrant => f.write_str("xenstore called from inside a xenstore wait"),
        }
    }
}

impl XsError {
    /// Whether xenstored answered with error `errno`.
    pub fn is(&self, errno: XsErrno) -> bool {
        *self == XsError::Reply(ReplyError::Xenstore(errno))
    }
}

impl Retryable for XsError {
    fn is_conflict(&self) -> bool {
        matches!(self, XsError::Reply(e) if e.is_conflict())
    }
}

impl From<RequestError> for XsError {
    fn from(e: RequestError) -> Self {
        XsError::Request(e)
    }
}

impl From<ReplyError> for XsError {
    fn from(e: ReplyError) -> Self {
        XsError::Reply(e)
    }
}

impl From<EventError> for XsError {
    fn from(e: EventError) -> Self {
        XsError::Event(e)
    }
}

/// A watch event owned by the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed.
    pub path: String,
    /// The watch's token.
    pub token: String,
}

/// Called with the changed path.
pub type WatchHandler = Arc<dyn Fn(&str) + Send + Sync>;

/// One of the two rings of the page, accessed with volatile byte copies.
struct VolatileRing(*mut u8);

impl RingBytes for VolatileRing {
    fn load(&self, offset: usize, dst: &mut [u8]) {
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: `offset + dst.len() <= XENSTORE_RING_SIZE` (the ring helpers' contract),
            // inside the mapped page; a peer-written byte is read once, volatile.
            *byte = unsafe { core::ptr::read_volatile(self.0.add(offset + i)) };
        }
    }

    fn store(&mut self, offset: usize, src: &[u8]) {
        for (i, byte) in src.iter().enumerate() {
            // SAFETY: as in `load`.
            unsafe { core::ptr::write_volatile(self.0.add(offset + i), *byte) };
        }
    }
}

/// One xenstore ring connection (the boot one lives in `CONNECTION`).
pub(crate) struct Connection {
    page: *mut XenstoreDomainInterface,
    port: Port,
    /// Our producer index of `req`, kept privately (the shared copy is only written from it).
    req_prod: u32,
    /// Our consumer index of `rsp`, likewise.
    rsp_cons: u32,
    next_req_id: u32,
    /// The id of a request that timed out: its late reply is discarded, not an error.
    abandoned_req_id: Option<u32>,
    assembler: alloc::boxed::Box<MessageAssembler>,
    events: VecDeque<WatchEvent>,
    broken: Option<String>,
}

// SAFETY: the page pointer is only used under the connection mutex.
unsafe impl Send for Connection {}

static CONNECTION: Mutex<Option<Connection>> = Mutex::new(None);
static WATCHES: Mutex<BTreeMap<String, WatchHandler>> = Mutex::new(BTreeMap::new());
/// Set by the event handler: xenstored signalled (reply, event or ring space).
static KICKED: AtomicBool = AtomicBool::new(false);
static STORE_PAGE: StaticPage = StaticPage::new();

/// The address of a field of the xenstore page (use inside `unsafe`: derefs the raw pointer).
macro_rules! field {
    ($page:expr, $field:ident) => {
        core::ptr::addr_of_mut!((*$page).$field)
    };
}

impl Connection {
    /// A connection over a mapped xenstore page whose peer is signalled through `port`: the
    /// boot page, or (self-tests) a private page playing a hostile xenstored.
    pub(crate) fn over_page(
        page: *mut XenstoreDomainInterface,
        port: Port,
    ) -> Result<Connection, XsError> {
        let mut connection = Connection {
            page,
            port,
            req_prod: 0,
            rsp_cons: 0,
            next_req_id: 1,
            abandoned_req_id: None,
            assembler: alloc::boxed::Box::new(MessageAssembler::new()),
            events: VecDeque::new(),
            broken: None,
        };
        // SAFETY: field addresses of the mapped page (no access yet).
        let (req_cons, req_prod, rsp_cons, rsp_prod, state) = unsafe {
            (
                field!(page, req_cons),
                field!(page, req_prod),
                field!(page, rsp_cons),
                field!(page, rsp_prod),
                field!(page, connection),
            )
        };
        connection.req_prod = connection.read_index(req_prod);
        connection.rsp_cons = connection.read_index(rsp_cons);
        let (req_used, rsp_used) = (
            XENSTORE_RING.used(connection.read_index(req_cons), connection.req_prod),
            XENSTORE_RING.used(connection.rsp_cons, connection.read_index(rsp_prod)),
        );
        if let Err(e) = req_used.and(rsp_used) {
            return Err(XsError::Broken(alloc::format!(
                "ring indices at start: {e}"
            )));
        }
        let connection_state = connection.read_index(state);
        if connection_state != XENSTORE_CONNECTED {
            log!("xenstore: ring connection state {connection_state} (expected connected)");
        }
        Ok(connection)
    }

    fn read_index(&self, index: *mut u32) -> u32 {
        // SAFETY: `index` is an aligned u32 field of the mapped page; read once, volatile.
        let value = unsafe { core::ptr::read_volatile(index) };
        fence(Ordering::SeqCst);
        value
    }

    fn publish_index(&self, index: *mut u32, value: u32) {
        fence(Ordering::SeqCst);
        // SAFETY: as in `read_index`.
        unsafe { core::ptr::write_volatile(index, value) };
    }

    fn fail(&mut self, why: String) -> XsError {
        log!("xenstore: connection broken: {why}");
        self.broken = Some(why.clone());
        XsError::Broken(why)
    }

    fn check_usable(&self) -> Result<(), XsError> {
        match &self.broken {
            Some(why) => Err(XsError::Broken(why.clone())),
            None => Ok(()),
        }
    }

    /// Copies as much of `bytes` as fits onto the request ring; returns how much.
    fn push_request_bytes(&mut self, bytes: &[u8]) -> Result<usize, XsError> {
        // SAFETY: field addresses of the mapped page (no access yet).
        let (cons_ptr, prod_ptr, req) = unsafe {
            (
                field!(self.page, req_cons),
                field!(self.page, req_prod),
                field!(self.page, req) as *mut u8,
            )
        };
        let cons = self.read_index(cons_ptr);
        let written = write_ring(
            XENSTORE_RING,
            &mut VolatileRing(req),
            cons,
            self.req_prod,
            bytes,
        )
        .map_err(|e: RingIndexError| self.fail(alloc::format!("request ring: {e}")))?;
        if written > 0 {
            self.req_prod = self.req_prod.wrapping_add(written as u32);
            self.publish_index(prod_ptr, self.req_prod);
            let _ = events::send(self.port);
        }
        Ok(written)
    }

    /// Moves response bytes into the assembler until a message is complete or the ring is
    /// empty; returns whether a message is complete.
    fn pull_response_bytes(&mut self) -> Result<bool, XsError> {
        // SAFETY: field addresses of the mapped page (no access yet).
        let (cons_ptr, prod_ptr, rsp) = unsafe {
            (
                field!(self.page, rsp_cons),
                field!(self.page, rsp_prod),
                field!(self.page, rsp) as *mut u8,
            )
        };
        let mut consumed = false;
        let complete = loop {
            if self.assembler.message().is_some() {
                break true;
            }
            let prod = self.read_index(prod_ptr);
            let spare = self.assembler.spare_mut();
            let got = read_ring(
                XENSTORE_RING,
                &VolatileRing(rsp),
                self.rsp_cons,
                prod,
                spare,
            )
            .map_err(|e| self.fail(alloc::format!("response ring: {e}")))?;
            if got == 0 {
                break false;
            }
            self.rsp_cons = self.rsp_cons.wrapping_add(got as u32);
            consumed = true;
            if let Err(e) = self.assembler.advance(got) {
                return Err(self.fail(frame_error_text(e)));
            }
        };
        if consumed {
            self.publish_index(cons_ptr, self.rsp_cons);
            let _ = events::send(self.port);
        }
        Ok(complete)
    }

    /// Takes the complete message: queues a watch event and returns `None`, or returns a
    /// reply's header and payload.
    fn take_message(&mut self) -> Option<(xen_abi::xenstore::XsdSockmsg, Vec<u8>)> {
        let message = self.assembler.message()?;
        let result = if message.is_watch_event() {
            match parse_watch_event(&message) {
                Ok(event) => {
                    let queued = self
                        .events
                        .iter()
                        .any(|e| e.path == event.path && e.token == event.token);
                    if !queued {
                        if self.events.len() == MAX_QUEUED_EVENTS {
                            self.events.pop_front();
                            if let Some(n) = count_and_log(&LOST_EVENTS) {
                                log!("xenstore: event queue full, {n} watch events dropped so far");
                            }
                        }
                        self.events.push_back(WatchEvent {
                            path: event.path.to_string(),
                            token: event.token.to_string(),
                        });
                    }
                }
                Err(e) => log!("xenstore: malformed watch event dropped: {e}"),
            }
            None
        } else {
            Some((message.header, message.payload.to_vec()))
        };
        self.assembler.clear_message();
        result
    }

    /// Repeats `progress` until it reports completion, sleeping on the event channel in
    /// between, for at most `REPLY_TIMEOUT_NS`.
    fn wait_for(
        &mut self,
        mut progress: impl FnMut(&mut Connection) -> Result<bool, XsError>,
    ) -> Result<(), XsError> {
        let start = super::time::now_ns();
        loop {
            KICKED.store(false, Ordering::SeqCst);
            if progress(self)? {
                return Ok(());
            }
            let elapsed = super::time::now_ns().saturating_sub(start);
            if elapsed >= REPLY_TIMEOUT_NS {
                return Err(XsError::Timeout);
            }
            // Only xenstored's port wakes us: this call holds up everything else anyway.
            match events::wait_on(&[self.port], REPLY_TIMEOUT_NS - elapsed, || {
                KICKED.load(Ordering::SeqCst)
            }) {
                Ok(()) | Err(EventError::TimedOut) => {}
                Err(e) => return Err(XsError::Event(e)),
            }
        }
    }

    /// Sends `request` and returns the validated reply payload.
    pub(crate) fn call(&mut self, request: &Request<'_>, tx_id: u32) -> Result<Vec<u8>, XsError> {
        self.check_usable()?;
        let mut buf = alloc::vec![0u8; MAX_REQUEST_SIZE];
        let req_id = self.next_req_id;
        let len = request.encode(req_id, tx_id, &mut buf)?;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let mut sent = 0;
        let written = self.wait_for(|this| {
            sent += this.push_request_bytes(&buf[sent..len])?;
            Ok(sent == len)
        });
        match written {
            Ok(()) => {}
            // Part of the request may be on the ring: the stream cannot be trusted any more.
            Err(XsError::Timeout) if sent > 0 => {
                return Err(self.fail(alloc::format!(
                    "request ring stalled after {sent} of {len} bytes"
                )))
            }
            Err(e) => return Err(e),
        }

        let mut reply = None;
        let outcome = self.wait_for(|this| {
            while this.pull_response_bytes()? {
                if let Some((header, payload)) = this.take_message() {
                    if Some(header.req_id) == this.abandoned_req_id && header.req_id != req_id {
                        log!(
                            "xenstore: discarded late reply to request {}",
                            header.req_id
                        );
                        this.abandoned_req_id = None;
                        continue;
                    }
                    reply = Some((header, payload));
                    return Ok(true);
                }
            }
            Ok(false)
        });
        if let Err(e) = outcome {
            if e == XsError::Timeout {
                self.abandoned_req_id = Some(req_id);
            }
            return Err(e);
        }
        let (header, payload) = reply.ok_or(XsError::Timeout)?;
        let message = xen_abi::xenstore::Message {
            header,
            payload: &payload,
        };
        if let Err(e) = check_reply(&message, request.msg_type(), req_id) {
            if let ReplyError::WrongRequestId { got, .. } = e {
                // Our own reply may still come: drop it then instead of taking it for the next.
                log!("xenstore: reply to request {got} while waiting for {req_id}");
                self.abandoned_req_id = Some(req_id);
            }
            return Err(e.into());
        }
        Ok(payload)
    }
}

fn frame_error_text(e: FrameError) -> String {
    alloc::format!("{e}")
}

/// Connects to xenstore through the ring page and event channel of `start_info`.
pub fn init(boot: &BootInfo) -> Result<(), XsError> {
    if boot.is_dom0() {
        return Err(XsError::Unavailable);
    }
    if boot.store_mfn == 0 {
        log!("xenstore: start_info has no xenstore page");
        return Err(XsError::Unavailable);
    }
    let port = boot.store_evtchn;
    if port_bit(port).is_none() || port == 0 {
        return Err(XsError::Event(EventError::PortOutOfRange(port)));
    }
    STORE_PAGE
        .map_frame(boot.store_mfn)
        .map_err(|e| XsError::Broken(alloc::format!("cannot map xenstore page: {e}")))?;
    let page: *mut XenstoreDomainInterface = STORE_PAGE.as_ptr().cast();
    let connection = Connection::over_page(page, port)?;
    events::set_handler(port, Arc::new(|_| KICKED.store(true, Ordering::SeqCst)))?;
    *CONNECTION.lock() = Some(connection);
    events::unmask(port).map_err(|e| XsError::Event(EventError::Xen(e)))?;
    Ok(())
}

fn call(request: &Request<'_>, tx_id: u32) -> Result<Vec<u8>, XsError> {
    // One vCPU: a held lock means this call came from an event handler run while another call
    // waits for its reply. Refuse it rather than spin forever.
    let Some(mut guard) = CONNECTION.try_lock() else {
        return Err(XsError::Reentrant);
    };
    match guard.as_mut() {
        Some(connection) => connection.call(request, tx_id),
        None => Err(XsError::Unavailable),
    }
}

/// A transaction in progress (see [`transaction`]); 0 means "no transaction".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tx(u32);

/// Outside any transaction.
pub const NO_TX: Tx = Tx(0);

/// Reads a node's value (any bytes).
pub fn read_in(tx: Tx, path: &str) -> Result<Vec<u8>, XsError> {
    let payload = call(&Request::Read { path }, tx.0)?;
    Ok(parse_read(&payload).to_vec())
}

/// Reads a node's value as text (UTF-8, no NUL).
pub fn read_text_in(tx: Tx, path: &str) -> Result<String, XsError> {
    let payload = call(&Request::Read { path }, tx.0)?;
    Ok(parse_read_text(&payload)?.to_string())
}

/// Writes a node's value, creating the node if needed.
pub fn write_in(tx: Tx, path: &str, value: &[u8]) -> Result<(), XsError> {
    parse_ok(&call(&Request::Write { path, value }, tx.0)?)?;
    Ok(())
}

/// Creates a node (no error if it exists).
pub fn mkdir_in(tx: Tx, path: &str) -> Result<(), XsError> {
    parse_ok(&call(&Request::Mkdir { path }, tx.0)?)?;
    Ok(())
}

/// Removes a node and everything below it.
pub fn rm_in(tx: Tx, path: &str) -> Result<(), XsError> {
    parse_ok(&call(&Request::Rm { path }, tx.0)?)?;
    Ok(())
}

/// Lists a node's children.
pub fn directory_in(tx: Tx, path: &str) -> Result<Vec<String>, XsError> {
    let payload = call(&Request::Directory { path }, tx.0)?;
    Ok(parse_directory(&payload)?
        .map(ToString::to_string)
        .collect())
}

/// Reads a node's permissions (owner/default first).
pub fn get_perms_in(tx: Tx, path: &str) -> Result<Vec<Permission>, XsError> {
    let payload = call(&Request::GetPerms { path }, tx.0)?;
    Ok(parse_permissions(&payload)?.collect())
}

/// Sets a node's permissions: the first entry is the owner and everyone's default.
pub fn set_perms_in(tx: Tx, path: &str, perms: &[Permission]) -> Result<(), XsError> {
    parse_ok(&call(&Request::SetPerms { path, perms }, tx.0)?)?;
    Ok(())
}

/// [`read_in`] outside a transaction.
pub fn read(path: &str) -> Result<Vec<u8>, XsError> {
    read_in(NO_TX, path)
}

/// [`read_text_in`] outside a transaction.
pub fn read_text(path: &str) -> Result<String, XsError> {
    read_text_in(NO_TX, path)
}

/// [`write_in`] outside a transaction.
pub fn write(path: &str, value: &[u8]) -> Result<(), XsError> {
    write_in(NO_TX, path, value)
}

/// [`mkdir_in`] outside a transaction.
pub fn mkdir(path: &str) -> Result<(), XsError> {
    mkdir_in(NO_TX, path)
}

/// [`rm_in`] outside a transaction.
pub fn rm(path: &str) -> Result<(), XsError> {
    rm_in(NO_TX, path)
}

/// [`directory_in`] outside a transaction.
pub fn directory(path: &str) -> Result<Vec<String>, XsError> {
    directory_in(NO_TX, path)
}

/// [`get_perms_in`] outside a transaction.
pub fn get_perms(path: &str) -> Result<Vec<Permission>, XsError> {
    get_perms_in(NO_TX, path)
}

/// [`set_perms_in`] outside a transaction.
pub fn set_perms(path: &str, perms: &[Permission]) -> Result<(), XsError> {
    set_perms_in(NO_TX, path, perms)
}

/// Registers a watch on `path` (and below); `handler` gets each changed path from [`service`].
/// xenstored fires a new watch once at registration. Tokens must be unique.
pub fn watch(path: &str, token: &str, handler: WatchHandler) -> Result<(), XsError> {
    WATCHES.lock().insert(token.to_string(), handler);
    let result = call(&Request::Watch { path, token }, 0).and_then(|p| Ok(parse_ok(&p)?));
    if result.is_err() {
        WATCHES.lock().remove(token);
    }
    result
}

/// Removes a watch.
pub fn unwatch(path: &str, token: &str) -> Result<(), XsError> {
    let result = call(&Request::Unwatch { path, token }, 0).and_then(|p| Ok(parse_ok(&p)?));
    WATCHES.lock().remove(token);
    result
}

/// Runs `body` in a transaction, committing at the end; a commit that conflicts (`EAGAIN`)
/// reruns the whole body, at most `DEFAULT_TRANSACTION_ATTEMPTS` times. A body error aborts.
pub fn transaction<T>(mut body: impl FnMut(Tx) -> Result<T, XsError>) -> Result<T, XsError> {
    let result = retry_transaction(DEFAULT_TRANSACTION_ATTEMPTS, |_attempt| {
        let payload = call(&Request::TransactionStart, 0)?;
        let tx = Tx(parse_transaction_id(&payload)?);
        match body(tx) {
            Ok(value) => {
                parse_ok(&call(&Request::TransactionEnd { commit: true }, tx.0)?)?;
                Ok(value)
            }
            Err(e) => {
                if let Err(abort) = call(&Request::TransactionEnd { commit: false }, tx.0) {
                    log!("xenstore: aborting transaction {} failed: {abort}", tx.0);
                }
                Err(e)
            }
        }
    });
    match result {
        Ok(value) => Ok(value),
        Err(RetryError::Failed(e)) => Err(e),
        Err(RetryError::Exhausted { attempts, last }) => {
            log!("xenstore: transaction still conflicting after {attempts} attempts");
            Err(last)
        }
    }
}

/// Reads incoming messages without a request outstanding and runs the handlers of queued
/// watch events. Call from the main loop after `events::dispatch_pending`. Returns how many
/// events were delivered.
pub fn service() -> usize {
    {
        // Held only if we are inside an event handler during a call: deliver later.
        let Some(mut guard) = CONNECTION.try_lock() else {
            return 0;
        };
        let Some(connection) = guard.as_mut() else {
            return 0;
        };
        if connection.broken.is_none() {
            KICKED.store(false, Ordering::SeqCst);
            // A stream error marks the connection broken (and is logged) inside the pull.
            while let Ok(true) = connection.pull_response_bytes() {
                if let Some((header, _)) = connection.take_message() {
                    log!(
                        "xenstore: unexpected reply (type {}, request {}) dropped",
                        header.msg_type,
                        header.req_id
                    );
                }
            }
        }
    }
    let mut delivered = 0;
    loop {
        let event = match CONNECTION.try_lock().as_mut().and_then(|g| g.as_mut()) {
            Some(connection) => connection.events.pop_front(),
            None => None,
        };
        let Some(event) = event else {
            break;
        };
        let handler = WATCHES.lock().get(&event.token).cloned();
        match handler {
            Some(handler) => {
                handler(&event.path);
                delivered += 1;
            }
            None => {
                if let Some(n) = count_and_log(&STALE_EVENTS) {
                    log!(
                        "xenstore: event for unknown watch token '{}' ({}) dropped ({n} so far)",
                        event.token,
                        event.path
                    );
                }
            }
        }
    }
    delivered
}
