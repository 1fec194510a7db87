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

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use xen_abi::evtchn::port_bit;
use xen_abi::xenstore::{
    parse_directory, parse_ok, parse_permissions, parse_read, parse_read_text,
    parse_transaction_id, retry_transaction, Permission, ReplyError, Request, RequestError,
    RetryError, Retryable, XenstoreDomainInterface, XsErrno, DEFAULT_TRANSACTION_ATTEMPTS,
};

use super::events::{self, EventError};
use super::start_info::BootInfo;
use crate::log;
use crate::mm::StaticPage;

mod connection;

pub(crate) use connection::Connection;

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

static CONNECTION: Mutex<Option<Connection>> = Mutex::new(None);
static WATCHES: Mutex<BTreeMap<String, WatchHandler>> = Mutex::new(BTreeMap::new());
/// Set by the event handler: xenstored signalled (reply, event or ring space).
static KICKED: AtomicBool = AtomicBool::new(false);
static STORE_PAGE: StaticPage = StaticPage::new();

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
