//! The client's errors: each says what went wrong in words a user can act on.

use std::fmt;
use std::io;

use xen_abi::xenstore::{ReplyError, RequestError};
use xenrpc_proto::{CallError, Status};

/// Everything that can go wrong between a client and the service VM.
#[derive(Debug)]
pub enum Error {
    /// No xenrpc device is attached to this domain (no frontend directory, or it names no
    /// backend): run `xenrpc attach` in dom0 first.
    NotAttached(String),
    /// The server's backend directory or the server domain vanished.
    ServerGone(String),
    /// The server (or `xenrpc detach`) closed the connection (backend Closing / Closed).
    ServerClosed,
    /// A wait ran past its deadline (`what` says which).
    DeadlineExceeded(String),
    /// The caller's input is wrong (unknown method, unparsable argument, too large).
    BadArguments(String),
    /// The server answered the call with an error status.
    Remote(Status),
    /// The server broke the protocol (ring indices, response headers, xenstore values).
    Protocol(String),
    /// No room for another call right now (ring full or in-flight cap reached).
    Busy(String),
    /// A xenstore operation failed.
    Xenstore {
        /// The operation, in xenstore's words ("directory", "get-perms", ...).
        op: &'static str,
        /// The node it was on.
        path: String,
        /// Why it failed.
        error: XenstoreFailure,
    },
    /// A Xen device (gntalloc, evtchn, xenbus) failed.
    Device {
        /// What was being done, naming the device.
        what: String,
        /// The system's error.
        source: io::Error,
    },
    /// This is not a Xen domain, or its Xen devices are not loaded (which, and what to do).
    NoXenDevices(String),
}

impl Error {
    /// xenstored refused access (EACCES).
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self,
            Error::Xenstore {
                error: XenstoreFailure::Reply(ReplyError::Xenstore(
                    xen_abi::xenstore::XsErrno::Eacces
                )),
                ..
            }
        )
    }
}

/// Why a xenstore operation failed.
#[derive(Debug)]
pub enum XenstoreFailure {
    /// xenstored (or a malformed reply) said no.
    Reply(ReplyError),
    /// The request could not be encoded (bad path, too long).
    Request(RequestError),
    /// The transaction kept conflicting.
    Conflict,
}

impl fmt::Display for XenstoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenstoreFailure::Reply(e) => write!(f, "{e}"),
            XenstoreFailure::Request(e) => write!(f, "{e}"),
            XenstoreFailure::Conflict => {
                f.write_str("transaction kept conflicting with other writers")
            }
        }
    }
}

impl Error {
    /// An [`Error::Device`]: `what` failed with `source`.
    pub fn device(what: impl Into<String>, source: io::Error) -> Error {
        Error::Device {
            what: what.into(),
            source,
        }
    }

    /// An [`Error::Xenstore`]: xenstored answered `op` on `path` with `error`.
    pub fn xenstore(op: &'static str, path: &str, error: ReplyError) -> Error {
        Error::Xenstore {
            op,
            path: path.to_string(),
            error: XenstoreFailure::Reply(error),
        }
    }

    /// A short machine-readable kind, for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotAttached(_) => "not-attached",
            Error::ServerGone(_) => "server-gone",
            Error::ServerClosed => "server-closed",
            Error::DeadlineExceeded(_) => "deadline-exceeded",
            Error::BadArguments(_) => "bad-arguments",
            Error::Remote(_) => "remote-error",
            Error::Protocol(_) => "protocol-violation",
            Error::Busy(_) => "busy",
            Error::Xenstore { .. } => "xenstore",
            Error::Device { .. } => "device",
            Error::NoXenDevices(_) => "no-xen-devices",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotAttached(why) => write!(f, "not attached: {why}"),
            Error::ServerGone(why) => write!(f, "server gone: {why}"),
            Error::ServerClosed => f.write_str("server closed the connection"),
            Error::DeadlineExceeded(what) => write!(f, "deadline exceeded: {what}"),
            Error::BadArguments(why) => write!(f, "bad arguments: {why}"),
            Error::Remote(status) => write!(f, "server answered {}", status.ident()),
            Error::Protocol(why) => write!(f, "server broke the protocol: {why}"),
            Error::Busy(why) => write!(f, "busy: {why}"),
            Error::Xenstore { op, path, error } => write!(f, "xenstore {op} {path}: {error}"),
            Error::Device { what, source } => write!(f, "{what}: {source}"),
            Error::NoXenDevices(why) => write!(f, "no Xen devices: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Device { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        match e {
            CallError::Remote(status) => Error::Remote(status),
            CallError::Broken(v) => Error::Protocol(v.to_string()),
            CallError::RingFull => Error::Busy("request ring full".into()),
            CallError::TooManyInFlight => Error::Busy("too many calls in flight".into()),
            CallError::InlineTooLarge(n) => {
                Error::BadArguments(format!("{n} bytes of inline arguments"))
            }
            CallError::BadOolRef(r) => Error::BadArguments(format!(
                "out-of-line window {}+{} outside the data region",
                r.offset, r.len
            )),
            CallError::WrongCompletion { expected, got } => Error::Protocol(format!(
                "completion of call {got} given for call {expected}"
            )),
            CallError::MalformedReply => {
                Error::Protocol("reply bytes do not decode as the reply type".into())
            }
            CallError::NoRoom { needed } => Error::Busy(format!(
                "no free {needed}-byte window in the data region (calls in flight hold the rest)"
            )),
        }
    }
}

/// A result whose error is the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
