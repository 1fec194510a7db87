//! Xenstore: the wire ABI and the pure logic of a client.
//! - [`wire`]: the ring page, message header, message types and error names.
//! - [`request`]: checked encoding of requests into a caller buffer.
//! - [`reply`]: reassembly of messages off the ring, reply and watch-event validation.
//! - [`perms`]: permission entries (`n0`, `r5`, ...).
//! - [`retry`]: the bounded retry of transactions that end in `EAGAIN`.

pub mod perms;
pub mod reply;
pub mod request;
pub mod retry;
pub mod wire;

pub use perms::{Access, Permission};
pub use reply::{
    check_reply, parse_directory, parse_domain_path, parse_ok, parse_permissions, parse_read,
    parse_read_text, parse_transaction_id, parse_watch_event, DirectoryEntries, FrameError,
    Message, MessageAssembler, ReplyError, WatchEvent,
};
pub use request::{
    validate_path, validate_token, PathKind, Request, RequestError, MAX_REQUEST_SIZE,
};
pub use retry::{retry_transaction, RetryError, Retryable, DEFAULT_TRANSACTION_ATTEMPTS};
pub use wire::*;
