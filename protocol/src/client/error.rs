//! What can go wrong on the client end of a connection. Each variant's doc comment is its
//! message.

use core::fmt;

use crate::layout::{OolRef, Status, INLINE_CAPACITY};

/// Why a server broke the protocol, as seen by the client (the connection is then broken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientViolation {
    /// The server's request consumer index {req_cons} is ahead of the producer index
    /// {req_prod} or more than a ring behind it.
    ReqConsOutOfRange {
        /// The request consumer index the server published.
        req_cons: u32,
        /// The client's private request producer index.
        req_prod: u32,
    },
    /// The server answered with status {0}, which no protocol revision defines.
    UnknownStatus(u32),
    /// The server's inline result of {0} bytes is longer than a slot holds.
    InlineTooLong(u32),
    /// The server answered call {0}, which is not in flight (never sent, one-way, or already
    /// answered).
    UnknownCallId(u64),
    /// The server claims {written} result bytes in a window of {window}.
    OolWrittenTooLong {
        /// Result bytes the response says the handler wrote.
        written: u32,
        /// Length in bytes of the call's result window.
        window: u32,
    },
}

impl fmt::Display for ClientViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClientViolation::ReqConsOutOfRange { req_cons, req_prod } => write!(
                f,
                "the server's request consumer index {req_cons} is ahead of the producer index \
                 {req_prod} or more than a ring behind it"
            ),
            ClientViolation::UnknownStatus(status) => write!(
                f,
                "the server answered with status {status}, which no protocol revision defines"
            ),
            ClientViolation::InlineTooLong(len) => write!(
                f,
                "the server's inline result of {len} bytes is longer than a slot holds"
            ),
            ClientViolation::UnknownCallId(id) => write!(
                f,
                "the server answered call {id}, which is not in flight (never sent, one-way, or \
                 already answered)"
            ),
            ClientViolation::OolWrittenTooLong { written, window } => write!(
                f,
                "the server claims {written} result bytes in a window of {window}"
            ),
        }
    }
}

impl core::error::Error for ClientViolation {}

/// Why a call could not be started or its reply not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The server answered {0}.
    Remote(Status),
    /// The connection is broken: {0}.
    Broken(ClientViolation),
    /// The request ring is full; retry after the server consumed some requests.
    RingFull,
    /// As many two-way calls are in flight as the cap allows; collect responses first.
    TooManyInFlight,
    /// {0} bytes of inline arguments do not fit a slot's [`INLINE_CAPACITY`] bytes.
    InlineTooLarge(usize),
    /// The out-of-line window {0.offset}+{0.len} does not lie in the data region (or has an
    /// offset with zero length).
    BadOolRef(OolRef),
    /// The completion of call {got} was given for call {expected}.
    WrongCompletion {
        /// The id of the pending call.
        expected: u64,
        /// The id of the call the completion answers.
        got: u64,
    },
    /// The reply's inline bytes are not a valid value of the reply type.
    MalformedReply,
    /// The data region has no free window of {needed} bytes for the call's out-of-line bytes
    /// (calls in flight hold the rest).
    NoRoom {
        /// Size in bytes of the window that could not be placed.
        needed: usize,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CallError::Remote(status) => write!(f, "the server answered {status}"),
            CallError::Broken(violation) => write!(f, "the connection is broken: {violation}"),
            CallError::RingFull => f.write_str(
                "the request ring is full; retry after the server consumed some requests",
            ),
            CallError::TooManyInFlight => f.write_str(
                "as many two-way calls are in flight as the cap allows; collect responses first",
            ),
            CallError::InlineTooLarge(len) => write!(
                f,
                "{len} bytes of inline arguments do not fit a slot's {INLINE_CAPACITY} bytes"
            ),
            CallError::BadOolRef(window) => write!(
                f,
                "the out-of-line window {}+{} does not lie in the data region (or has an offset \
                 with zero length)",
                window.offset, window.len
            ),
            CallError::WrongCompletion { expected, got } => write!(
                f,
                "the completion of call {got} was given for call {expected}"
            ),
            CallError::MalformedReply => {
                f.write_str("the reply's inline bytes are not a valid value of the reply type")
            }
            CallError::NoRoom { needed } => write!(
                f,
                "the data region has no free window of {needed} bytes for the call's \
                 out-of-line bytes (calls in flight hold the rest)"
            ),
        }
    }
}

impl core::error::Error for CallError {}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_values() {
        assert_eq!(
            CallError::Broken(ClientViolation::OolWrittenTooLong {
                written: 9,
                window: 8
            })
            .to_string(),
            "the connection is broken: the server claims 9 result bytes in a window of 8"
        );
        assert_eq!(
            CallError::Remote(Status::Busy).to_string(),
            "the server answered busy"
        );
        assert_eq!(
            CallError::BadOolRef(OolRef::new(4096, 0)).to_string(),
            "the out-of-line window 4096+0 does not lie in the data region (or has an offset \
             with zero length)"
        );
        assert_eq!(
            CallError::InlineTooLarge(500).to_string(),
            "500 bytes of inline arguments do not fit a slot's 192 bytes"
        );
    }
}
