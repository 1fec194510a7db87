//! Talking to xenstore: the [`Xenstore`] trait the attach and handshake logic use, the real
//! connection ([`XenbusConnection`]: the kernel's `/dev/xen/xenbus` device in a guest, or
//! xenstored's socket in dom0; both speak the same `xsd_sockmsg` wire format, which xen-abi
//! encodes and validates), and helpers built on the trait.
//!
//! xenstored is a peer too: every reply is checked against the request it answers
//! (`xen_abi::xenstore::check_reply`), every value is parsed strictly by the caller, and every
//! wait has a deadline.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use xen_abi::xenstore::{
    check_reply, parse_directory, parse_ok, parse_permissions, parse_transaction_id,
    parse_watch_event, MessageAssembler, Permission, ReplyError, Request, XsErrno, XsType,
    MAX_REQUEST_SIZE,
};

use crate::error::{Error, Result, XenstoreFailure};
use crate::wait::{poll_readable, Readiness};

/// A xenstore transaction id; [`NO_TX`] outside a transaction.
pub type TxId = u32;
/// The transaction id of a request outside any transaction.
pub const NO_TX: TxId = 0;

/// A fired watch: the node that changed (or the watched path, on registration) and the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchFired {
    /// The node that changed, or the watched path itself on registration.
    pub path: String,
    /// The token the watch was registered with.
    pub token: String,
}

/// The xenstore operations the client needs. `None` results mean the node does not exist.
pub trait Xenstore {
    /// The node's value.
    fn read(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>>;
    /// Creates the node (and missing parents) if needed.
    fn write(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<()>;
    /// Creates the node (and missing parents) with an empty value if it does not exist.
    fn mkdir(&mut self, tx: TxId, path: &str) -> Result<()>;
    /// Removes the node and its children; a missing node is not an error.
    fn rm(&mut self, tx: TxId, path: &str) -> Result<()>;
    /// The names of the node's children.
    fn directory(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<String>>>;
    /// The node's permissions; the first entry is the owner and the access of every domain
    /// not listed.
    fn get_perms(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<Permission>>>;
    /// The first entry is the owner and the access of every domain not listed.
    fn set_perms(&mut self, tx: TxId, path: &str, perms: &[Permission]) -> Result<()>;
    /// Starts a transaction; requests that carry its id see and change one snapshot.
    fn transaction_start(&mut self) -> Result<TxId>;
    /// `Ok(false)`: the transaction conflicted with another writer and must be redone.
    fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<bool>;
    /// Registers a watch; xenstored fires it once at once, then on every change at or below `path`.
    fn watch(&mut self, path: &str, token: &str) -> Result<()>;
    /// Removes the watch registered with `path` and `token`.
    fn unwatch(&mut self, path: &str, token: &str) -> Result<()>;
    /// The next watch event, waiting until `deadline`; `None` once the deadline has passed.
    fn next_event(&mut self, deadline: Instant) -> Result<Option<WatchFired>>;
    /// Whether a watch event is already buffered (then [`Self::next_event`] returns at once).
    fn has_buffered_event(&self) -> bool;
    /// An fd that becomes readable when a watch event may have arrived, for waiting on it
    /// together with an event channel.
    fn event_fd(&self) -> RawFd;
}

/// Default time one xenstore request may take before the connection is declared dead.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a guest reaches xenstore: the kernel's xenbus device.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// Where dom0 reaches xenstored directly (in this order).
pub const XENSTORED_SOCKETS: &[&str] = &["/run/xenstored/socket", "/var/run/xenstored/socket"];

enum Channel {
    Device(File),
    Socket(UnixStream),
}

impl Channel {
    fn raw_fd(&self) -> RawFd {
        match self {
            Channel::Device(f) => f.as_raw_fd(),
            Channel::Socket(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Device(f) => f.read(buf),
            Channel::Socket(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Channel::Device(f) => f.write_all(buf),
            Channel::Socket(s) => s.write_all(buf),
        }
    }
}

/// A connection to xenstored over the xenbus device or xenstored's socket.
pub struct XenbusConnection {
    channel: Channel,
    what: String,
    assembler: Box<MessageAssembler>,
    events: std::collections::VecDeque<WatchFired>,
    next_req_id: u32,
    request_timeout: Duration,
    /// Set when the stream can no longer be trusted (a timed-out request, a framing error).
    broken: Option<String>,
}

impl XenbusConnection {
    /// xenstored's socket if one exists (dom0), else the xenbus device (guests).
    pub fn open_default() -> Result<Self> {
        for socket in XENSTORED_SOCKETS {
            if Path::new(socket).exists() {
                return Self::open_socket(socket);
            }
        }
        if !Path::new(XENBUS_DEVICE).exists() {
            return Err(Error::NoXenDevices(format!(
                "neither {XENBUS_DEVICE} nor xenstored's socket ({}) exists: is this a Xen \
                 domain?",
                XENSTORED_SOCKETS.join(", ")
            )));
        }
        Self::open_device(XENBUS_DEVICE)
    }

    /// Opens the xenbus device at `path` (a guest's way to xenstore).
    pub fn open_device(path: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::device(format!("open {path}"), e))?;
        Ok(Self::new(Channel::Device(file), path))
    }

    /// Connects to xenstored's Unix socket at `path` (dom0's way).
    pub fn open_socket(path: &str) -> Result<Self> {
        let socket =
            UnixStream::connect(path).map_err(|e| Error::device(format!("connect {path}"), e))?;
        Ok(Self::new(Channel::Socket(socket), path))
    }

    fn new(channel: Channel, what: &str) -> Self {
        XenbusConnection {
            channel,
            what: what.to_string(),
            assembler: Box::new(MessageAssembler::new()),
            events: Default::default(),
            next_req_id: 1,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            broken: None,
        }
    }

    /// How long one request may wait for its reply before the connection is declared dead
    /// (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    fn broken_error(&self) -> Option<Error> {
        self.broken.as_ref().map(|why| {
            Error::device(
                self.what.clone(),
                io::Error::new(io::ErrorKind::BrokenPipe, why.clone()),
            )
        })
    }

    fn break_stream(&mut self, why: String) -> Error {
        self.broken = Some(why.clone());
        Error::device(
            self.what.clone(),
            io::Error::new(io::ErrorKind::InvalidData, why),
        )
    }

    /// Reads bytes until one whole message is assembled, waiting until `deadline`.
    /// `Ok(false)`: the deadline passed first (a partial message stays buffered).
    fn fill_message(&mut self, deadline: Instant) -> Result<bool> {
        while self.assembler.message().is_none() {
            match poll_readable(&[self.channel.raw_fd()], deadline)
                .map_err(|e| Error::device(format!("poll {}", self.what), e))?
            {
                Readiness::TimedOut => return Ok(false),
                Readiness::Ready(_) => {}
            }
            let spare = self.assembler.spare_mut();
            let n = match self.channel.read(spare) {
                Ok(0) => return Err(self.break_stream("xenstore closed the connection".into())),
                Ok(n) => n,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    continue
                }
                Err(e) => return Err(Error::device(format!("read {}", self.what), e)),
            };
            if let Err(e) = self.assembler.advance(n) {
                return Err(self.break_stream(format!("bad message from xenstore: {e}")));
            }
        }
        Ok(true)
    }

    /// Queues the assembled message if it is a watch event; returns whether it was.
    fn take_event_if_any(&mut self) -> Result<bool> {
        let Some(message) = self.assembler.message() else {
            return Ok(false);
        };
        if !message.is_watch_event() {
            return Ok(false);
        }
        let event = match parse_watch_event(&message) {
            Ok(e) => WatchFired {
                path: e.path.to_string(),
                token: e.token.to_string(),
            },
            Err(e) => {
                self.assembler.clear_message();
                return Err(self.break_stream(format!("malformed watch event: {e}")));
            }
        };
        self.assembler.clear_message();
        self.events.push_back(event);
        Ok(true)
    }

    /// Sends one request and returns its reply payload, checked against the request.
    fn transact(&mut self, request: &Request<'_>, tx: TxId, path: &str) -> Result<Vec<u8>> {
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        let op = op_name(request);
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let mut buf = vec![0u8; MAX_REQUEST_SIZE];
        let len = request
            .encode(req_id, tx, &mut buf)
            .map_err(|e| Error::Xenstore {
                op,
                path: path.to_string(),
                error: XenstoreFailure::Request(e),
            })?;
        self.channel
            .write_all(&buf[..len])
            .map_err(|e| Error::device(format!("write {}", self.what), e))?;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            if !self.fill_message(deadline)? {
                return Err(self.break_stream(format!(
                    "no reply to xenstore {op} {path} within {:.1} s",
                    self.request_timeout.as_secs_f64()
                )));
            }
            if self.take_event_if_any()? {
                continue;
            }
            let Some(message) = self.assembler.message() else {
                continue;
            };
            let result = check_reply(&message, request.msg_type(), req_id).map(<[u8]>::to_vec);
            self.assembler.clear_message();
            return match result {
                Ok(payload) => Ok(payload),
                Err(e @ ReplyError::WrongRequestId { .. })
                | Err(e @ ReplyError::WrongType { .. }) => {
                    Err(self.break_stream(format!("xenstore {op} {path}: {e}")))
                }
                Err(e) => Err(Error::xenstore(op, path, e)),
            };
        }
    }

    fn expect_ok(&mut self, request: &Request<'_>, tx: TxId, path: &str) -> Result<()> {
        let payload = self.transact(request, tx, path)?;
        parse_ok(&payload).map_err(|e| Error::xenstore(op_name(request), path, e))
    }
}

fn op_name(request: &Request<'_>) -> &'static str {
    match request.msg_type() {
        XsType::Read => "read",
        XsType::Write => "write",
        XsType::Mkdir => "mkdir",
        XsType::Rm => "rm",
        XsType::Directory => "directory",
        XsType::GetPerms => "get-perms",
        XsType::SetPerms => "set-perms",
        XsType::Watch => "watch",
        XsType::Unwatch => "unwatch",
        XsType::TransactionStart => "transaction-start",
        XsType::TransactionEnd => "transaction-end",
        _ => "request",
    }
}

/// `Ok(None)` for ENOENT, the error otherwise.
fn absent_is_none<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(Error::Xenstore {
            error: XenstoreFailure::Reply(ReplyError::Xenstore(XsErrno::Enoent)),
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Xenstore for XenbusConnection {
    fn read(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        absent_is_none(self.transact(&Request::Read { path }, tx, path))
    }

    fn write(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        self.expect_ok(&Request::Write { path, value }, tx, path)
    }

    fn mkdir(&mut self, tx: TxId, path: &str) -> Result<()> {
        self.expect_ok(&Request::Mkdir { path }, tx, path)
    }

    fn rm(&mut self, tx: TxId, path: &str) -> Result<()> {
        absent_is_none(self.expect_ok(&Request::Rm { path }, tx, path)).map(|_| ())
    }

    fn directory(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<String>>> {
        let Some(payload) = absent_is_none(self.transact(&Request::Directory { path }, tx, path))?
        else {
            return Ok(None);
        };
        let entries =
            parse_directory(&payload).map_err(|e| Error::xenstore("directory", path, e))?;
        Ok(Some(entries.map(str::to_string).collect()))
    }

    fn get_perms(&mut self, tx: TxId, path: &str) -> Result<Option<Vec<Permission>>> {
        let Some(payload) = absent_is_none(self.transact(&Request::GetPerms { path }, tx, path))?
        else {
            return Ok(None);
        };
        let perms =
            parse_permissions(&payload).map_err(|e| Error::xenstore("get-perms", path, e))?;
        Ok(Some(perms.collect()))
    }

    fn set_perms(&mut self, tx: TxId, path: &str, perms: &[Permission]) -> Result<()> {
        self.expect_ok(&Request::SetPerms { path, perms }, tx, path)
    }

    fn transaction_start(&mut self) -> Result<TxId> {
        let payload = self.transact(&Request::TransactionStart, NO_TX, "")?;
        parse_transaction_id(&payload).map_err(|e| Error::xenstore("transaction-start", "", e))
    }

    fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<bool> {
        match self.expect_ok(&Request::TransactionEnd { commit }, tx, "") {
            Ok(()) => Ok(true),
            Err(Error::Xenstore {
                error: XenstoreFailure::Reply(ReplyError::Xenstore(XsErrno::Eagain)),
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.expect_ok(&Request::Watch { path, token }, NO_TX, path)
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.expect_ok(&Request::Unwatch { path, token }, NO_TX, path)
    }

    fn next_event(&mut self, deadline: Instant) -> Result<Option<WatchFired>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if let Some(e) = self.broken_error() {
                return Err(e);
            }
            if !self.fill_message(deadline)? {
                return Ok(None);
            }
            if !self.take_event_if_any()? {
                // A reply nobody waits for: only a confused xenstored sends one.
                self.assembler.clear_message();
                return Err(self.break_stream("unsolicited reply from xenstore".into()));
            }
        }
    }

    fn has_buffered_event(&self) -> bool {
        !self.events.is_empty()
    }

    fn event_fd(&self) -> RawFd {
        self.channel.raw_fd()
    }
}

/// Reads a node as text (UTF-8, no NUL); `None` if it does not exist.
pub fn read_text(store: &mut dyn Xenstore, tx: TxId, path: &str) -> Result<Option<String>> {
    match store.read(tx, path)? {
        None => Ok(None),
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Ok(Some(s)),
            _ => Err(Error::Protocol(format!("{path} is not text"))),
        },
    }
}

/// Runs `body` in a transaction, redoing it when it conflicts, at most `attempts` times.
pub fn in_transaction<T>(
    store: &mut dyn Xenstore,
    attempts: u32,
    mut body: impl FnMut(&mut dyn Xenstore, TxId) -> Result<T>,
) -> Result<T> {
    for _ in 0..attempts.max(1) {
        let tx = store.transaction_start()?;
        let value = match body(store, tx) {
            Ok(v) => v,
            Err(e) => {
                // Best effort: the transaction is abandoned either way.
                let _ = store.transaction_end(tx, false);
                return Err(e);
            }
        };
        if store.transaction_end(tx, true)? {
            return Ok(value);
        }
    }
    Err(Error::Xenstore {
        op: "transaction",
        path: String::new(),
        error: XenstoreFailure::Conflict,
    })
}
