//! Receiving from xenstored: [`MessageAssembler`] rebuilds whole messages from the bytes that
//! come off the response ring, and the `parse_*` functions check each reply against the
//! request it answers before anything in it is used. xenstored is a peer like any other: every
//! length, id, type and string is checked, and each way a reply can be wrong has its own
//! [`ReplyError`].

use super::perms::{InvalidPermission, Permission};
use super::wire::{XsErrno, XsType, XsdSockmsg, XENSTORE_PAYLOAD_MAX, XSD_SOCKMSG_SIZE};
use core::fmt;

/// A broken stream: the connection cannot be resynchronised after this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A header announced a payload longer than `XENSTORE_PAYLOAD_MAX`.
    PayloadTooLong {
        /// The announced length.
        len: u32,
    },
    /// More bytes were offered than the current message needs.
    Overfilled,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::PayloadTooLong { len } => write!(
                f,
                "xenstore message announces {len} payload bytes (max {XENSTORE_PAYLOAD_MAX})"
            ),
            FrameError::Overfilled => f.write_str("more bytes pushed than the message needs"),
        }
    }
}

/// A whole message: its header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header as received.
    pub header: XsdSockmsg,
    /// Exactly `header.len` payload bytes.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// Whether this is an asynchronous watch event rather than a reply.
    pub fn is_watch_event(&self) -> bool {
        self.header.msg_type == XsType::WatchEvent as u32
    }
}

/// Rebuilds messages from a byte stream. It asks for exactly the bytes the current message
/// still needs ([`wanted`](Self::wanted)), so the caller never takes bytes of the next message
/// off the ring, and it checks the announced length as soon as the header is complete.
pub struct MessageAssembler {
    buf: [u8; XSD_SOCKMSG_SIZE + XENSTORE_PAYLOAD_MAX],
    filled: usize,
    /// Set once the header is in; its `len` has been checked.
    header: Option<XsdSockmsg>,
    broken: Option<FrameError>,
}

impl Default for MessageAssembler {
    fn default() -> Self {
        MessageAssembler::new()
    }
}

impl MessageAssembler {
    /// An empty assembler.
    pub const fn new() -> MessageAssembler {
        MessageAssembler {
            buf: [0; XSD_SOCKMSG_SIZE + XENSTORE_PAYLOAD_MAX],
            filled: 0,
            header: None,
            broken: None,
        }
    }

    /// Bytes still needed to complete the header or the message (0 when complete or broken).
    pub fn wanted(&self) -> usize {
        if self.broken.is_some() {
            return 0;
        }
        match self.header {
            None => XSD_SOCKMSG_SIZE - self.filled,
            Some(header) => XSD_SOCKMSG_SIZE + header.len as usize - self.filled,
        }
    }

    /// The buffer space for the next [`wanted`](Self::wanted) bytes, for copying straight from
    /// the ring; follow with [`advance`](Self::advance).
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let end = self.filled + self.wanted();
        &mut self.buf[self.filled..end]
    }

    /// Records that `count` bytes were written into [`spare_mut`](Self::spare_mut).
    pub fn advance(&mut self, count: usize) -> Result<(), FrameError> {
        if let Some(err) = self.broken {
            return Err(err);
        }
        if count > self.wanted() {
            self.broken = Some(FrameError::Overfilled);
            return Err(FrameError::Overfilled);
        }
        self.filled += count;
        if self.header.is_none() && self.filled == XSD_SOCKMSG_SIZE {
            let mut raw = [0u8; XSD_SOCKMSG_SIZE];
            raw.copy_from_slice(&self.buf[..XSD_SOCKMSG_SIZE]);
            let header = XsdSockmsg::from_bytes(&raw);
            if header.len as usize > XENSTORE_PAYLOAD_MAX {
                let err = FrameError::PayloadTooLong { len: header.len };
                self.broken = Some(err);
                return Err(err);
            }
            self.header = Some(header);
        }
        Ok(())
    }

    /// Copies in as many of `bytes` as the current message needs; returns how many it took.
    pub fn push(&mut self, bytes: &[u8]) -> Result<usize, FrameError> {
        let mut taken = 0;
        while taken < bytes.len() && self.wanted() > 0 {
            let spare = self.spare_mut();
            let count = spare.len().min(bytes.len() - taken);
            spare[..count].copy_from_slice(&bytes[taken..taken + count]);
            self.advance(count)?;
            taken += count;
        }
        match self.broken {
            Some(err) => Err(err),
            None => Ok(taken),
        }
    }

    /// The stream error, if the stream is broken.
    pub fn error(&self) -> Option<FrameError> {
        self.broken
    }

    /// The complete message, if there is one.
    pub fn message(&self) -> Option<Message<'_>> {
        let header = self.header?;
        if self.broken.is_some() || self.wanted() != 0 {
            return None;
        }
        Some(Message {
            header,
            payload: &self.buf[XSD_SOCKMSG_SIZE..self.filled],
        })
    }

    /// Drops the complete message to start on the next one. Does not clear a broken stream.
    pub fn clear_message(&mut self) {
        if self.broken.is_none() {
            self.filled = 0;
            self.header = None;
        }
    }
}

/// Every way a reply (or watch event) can be wrong, plus the errors xenstored reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// xenstored answered `XS_ERROR` with this error.
    Xenstore(XsErrno),
    /// xenstored answered `XS_ERROR` with a name we do not know (or a malformed one).
    UnknownError,
    /// The reply's `req_id` is not the request's.
    WrongRequestId {
        /// The id we sent.
        expected: u32,
        /// The id received.
        got: u32,
    },
    /// The reply's type is neither the request's nor `XS_ERROR`.
    WrongType {
        /// The request's type.
        expected: u32,
        /// The type received.
        got: u32,
    },
    /// A string field lacks its NUL terminator.
    MissingNul,
    /// A string field contains a NUL where none is allowed.
    InteriorNul,
    /// A string field is not UTF-8.
    InvalidUtf8,
    /// A string field is empty where a value is needed.
    EmptyString,
    /// A name or path contains characters xenstore never produces.
    InvalidName,
    /// The payload has the wrong shape (e.g. not `OK\0`, extra fields).
    UnexpectedPayload,
    /// A transaction id is not a non-zero decimal `u32`.
    InvalidTransactionId,
    /// A permission entry is malformed.
    InvalidPermission,
    /// A reply with no permission entries.
    NoPermissions,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Xenstore(errno) => write!(f, "xenstore error {errno}"),
            ReplyError::UnknownError => f.write_str("xenstore error with an unknown name"),
            ReplyError::WrongRequestId { expected, got } => {
                write!(f, "reply for request {got}, expected {expected}")
            }
            ReplyError::WrongType { expected, got } => {
                write!(f, "reply of type {got}, expected {expected}")
            }
            ReplyError::MissingNul => f.write_str("string without NUL terminator"),
            ReplyError::InteriorNul => f.write_str("string with an interior NUL"),
            ReplyError::InvalidUtf8 => f.write_str("string is not UTF-8"),
            ReplyError::EmptyString => f.write_str("empty string"),
            ReplyError::InvalidName => f.write_str("invalid characters in a name"),
            ReplyError::UnexpectedPayload => f.write_str("unexpected payload"),
            ReplyError::InvalidTransactionId => f.write_str("invalid transaction id"),
            ReplyError::InvalidPermission => f.write_str("invalid permission entry"),
            ReplyError::NoPermissions => f.write_str("no permission entries"),
        }
    }
}

impl From<InvalidPermission> for ReplyError {
    fn from(_: InvalidPermission) -> ReplyError {
        ReplyError::InvalidPermission
    }
}

/// Checks that `message` answers the request with id `req_id` and type `request`, turning an
/// `XS_ERROR` reply into [`ReplyError::Xenstore`]. Returns the payload for a `parse_*`
/// function.
pub fn check_reply<'a>(
    message: &Message<'a>,
    request: XsType,
    req_id: u32,
) -> Result<&'a [u8], ReplyError> {
    let header = message.header;
    if header.req_id != req_id {
        return Err(ReplyError::WrongRequestId {
            expected: req_id,
            got: header.req_id,
        });
    }
    if header.msg_type == XsType::Error as u32 {
        return Err(parse_error_reply(message.payload));
    }
    if header.msg_type != request as u32 {
        return Err(ReplyError::WrongType {
            expected: request as u32,
            got: header.msg_type,
        });
    }
    Ok(message.payload)
}

/// The error an `XS_ERROR` payload (`"ENOENT\0"`) names.
fn parse_error_reply(payload: &[u8]) -> ReplyError {
    match nul_terminated(payload) {
        Ok(name) => match XsErrno::from_name(name) {
            Some(errno) => ReplyError::Xenstore(errno),
            None => ReplyError::UnknownError,
        },
        Err(_) => ReplyError::UnknownError,
    }
}

/// The bytes before a final NUL, which must be the only NUL.
fn nul_terminated(field: &[u8]) -> Result<&[u8], ReplyError> {
    match field.split_last() {
        Some((0, text)) if !text.contains(&0) => Ok(text),
        Some((0, _)) => Err(ReplyError::InteriorNul),
        _ => Err(ReplyError::MissingNul),
    }
}

/// Text with no NUL, as UTF-8.
fn text(bytes: &[u8]) -> Result<&str, ReplyError> {
    if bytes.contains(&0) {
        return Err(ReplyError::InteriorNul);
    }
    core::str::from_utf8(bytes).map_err(|_| ReplyError::InvalidUtf8)
}

/// Whether every byte may appear in a xenstore node name or path.
fn is_path_text(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'))
}

/// Replies to `XS_WRITE`, `XS_MKDIR`, `XS_RM`, `XS_SET_PERMS`, `XS_WATCH`, `XS_UNWATCH` and
/// `XS_TRANSACTION_END` carry exactly `OK\0`.
pub fn parse_ok(payload: &[u8]) -> Result<(), ReplyError> {
    if payload == b"OK\0" {
        Ok(())
    } else {
        Err(ReplyError::UnexpectedPayload)
    }
}

/// An `XS_READ` reply is the node's value: any bytes, no terminator.
pub fn parse_read(payload: &[u8]) -> &[u8] {
    payload
}

/// An `XS_READ` value that the caller needs as text: UTF-8 without NUL.
pub fn parse_read_text(payload: &[u8]) -> Result<&str, ReplyError> {
    text(payload)
}

/// The children listed in an `XS_DIRECTORY` reply, checked as a whole before iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryEntries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for DirectoryEntries<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let end = self.rest.iter().position(|b| *b == 0)?;
        let name = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        // Checked in `parse_directory`: never fails here.
        core::str::from_utf8(name).ok()
    }
}

/// Parses an `XS_DIRECTORY` payload: NUL-terminated child names (`a\0b\0`); an empty payload
/// is an empty directory. Each name must be non-empty, UTF-8 and free of `/`.
pub fn parse_directory(payload: &[u8]) -> Result<DirectoryEntries<'_>, ReplyError> {
    if payload.is_empty() {
        return Ok(DirectoryEntries { rest: payload });
    }
    if payload.last() != Some(&0) {
        return Err(ReplyError::MissingNul);
    }
    for name in payload[..payload.len() - 1].split(|b| *b == 0) {
        if name.is_empty() {
            return Err(ReplyError::EmptyString);
        }
        let name = core::str::from_utf8(name).map_err(|_| ReplyError::InvalidUtf8)?;
        if name.contains('/') || !is_path_text(name) {
            return Err(ReplyError::InvalidName);
        }
    }
    Ok(DirectoryEntries { rest: payload })
}

/// Parses an `XS_TRANSACTION_START` reply: a non-zero decimal id, NUL-terminated.
pub fn parse_transaction_id(payload: &[u8]) -> Result<u32, ReplyError> {
    let digits = nul_terminated(payload)?;
    if digits.is_empty()
        || digits.len() > 10
        || (digits.len() > 1 && digits[0] == b'0')
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(ReplyError::InvalidTransactionId);
    }
    let value = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    match u32::try_from(value) {
        Ok(id) if id != 0 => Ok(id),
        _ => Err(ReplyError::InvalidTransactionId),
    }
}

/// Parses an `XS_GET_DOMAIN_PATH` reply: an absolute path, NUL-terminated.
pub fn parse_domain_path(payload: &[u8]) -> Result<&str, ReplyError> {
    let path = text(nul_terminated(payload)?)?;
    if !path.starts_with('/') || !is_path_text(path) {
        return Err(ReplyError::InvalidName);
    }
    Ok(path)
}

/// The entries of an `XS_GET_PERMS` reply, checked as a whole before iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionEntries<'a> {
    rest: &'a [u8],
}

impl Iterator for PermissionEntries<'_> {
    type Item = Permission;
    fn next(&mut self) -> Option<Permission> {
        let end = self.rest.iter().position(|b| *b == 0)?;
        let entry = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        // Checked in `parse_permissions`: never fails here.
        Permission::parse(entry).ok()
    }
}

/// Parses an `XS_GET_PERMS` reply: one or more NUL-terminated entries (`n0\0r5\0`).
pub fn parse_permissions(payload: &[u8]) -> Result<PermissionEntries<'_>, ReplyError> {
    if payload.is_empty() {
        return Err(ReplyError::NoPermissions);
    }
    if payload.last() != Some(&0) {
        return Err(ReplyError::MissingNul);
    }
    for entry in payload[..payload.len() - 1].split(|b| *b == 0) {
        Permission::parse(entry)?;
    }
    Ok(PermissionEntries { rest: payload })
}

/// A fired watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchEvent<'a> {
    /// The node that changed (or the watched path itself on registration).
    pub path: &'a str,
    /// The token given when the watch was registered.
    pub token: &'a str,
}

/// Parses an `XS_WATCH_EVENT` message: `path\0token\0`, exactly two strings.
pub fn parse_watch_event<'a>(message: &Message<'a>) -> Result<WatchEvent<'a>, ReplyError> {
    if !message.is_watch_event() {
        return Err(ReplyError::WrongType {
            expected: XsType::WatchEvent as u32,
            got: message.header.msg_type,
        });
    }
    let payload = message.payload;
    if payload.last() != Some(&0) {
        return Err(ReplyError::MissingNul);
    }
    let mut fields = payload[..payload.len() - 1].split(|b| *b == 0);
    let (Some(path), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ReplyError::UnexpectedPayload);
    };
    if path.is_empty() || token.is_empty() {
        return Err(ReplyError::EmptyString);
    }
    let path = text(path)?;
    let token = text(token)?;
    if !is_path_text(path) {
        return Err(ReplyError::InvalidName);
    }
    Ok(WatchEvent { path, token })
}

#[cfg(test)]
mod tests {
    use super::super::perms::Access;
    use super::*;

    fn frame(msg_type: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let header = XsdSockmsg {
            msg_type,
            req_id,
            tx_id: 0,
            len: payload.len() as u32,
        };
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn message(msg_type: XsType, req_id: u32, payload: &[u8]) -> Message<'_> {
        Message {
            header: XsdSockmsg {
                msg_type: msg_type as u32,
                req_id,
                tx_id: 0,
                len: payload.len() as u32,
            },
            payload,
        }
    }

    #[test]
    fn assembles_messages_from_arbitrary_chunks() {
        let mut stream = frame(XsType::Read as u32, 1, b"hello");
        stream.extend(frame(XsType::WatchEvent as u32, 0, b"/a\0tok\0"));
        stream.extend(frame(XsType::Write as u32, 2, b""));
        stream.extend(frame(
            XsType::Directory as u32,
            3,
            &[b'x'; XENSTORE_PAYLOAD_MAX],
        ));
        for chunk in [1, 3, 7, 16, 17, 1000, stream.len()] {
            let mut assembler = MessageAssembler::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut offset = 0;
                while offset < piece.len() {
                    offset += assembler.push(&piece[offset..]).unwrap();
                    if let Some(m) = assembler.message() {
                        got.push((m.header.msg_type, m.header.req_id, m.payload.to_vec()));
                        assembler.clear_message();
                    }
                }
            }
            assert_eq!(got.len(), 4, "chunk {chunk}");
            assert_eq!(got[0], (2, 1, b"hello".to_vec()));
            assert_eq!(got[1], (15, 0, b"/a\0tok\0".to_vec()));
            assert_eq!(got[2], (11, 2, Vec::new()));
            assert_eq!(got[3].2.len(), XENSTORE_PAYLOAD_MAX);
            assert_eq!(assembler.wanted(), XSD_SOCKMSG_SIZE);
        }
    }

    #[test]
    fn takes_only_the_bytes_of_the_current_message() {
        let mut stream = frame(2, 1, b"ab");
        stream.extend(frame(2, 2, b"cd"));
        let mut assembler = MessageAssembler::new();
        assert_eq!(assembler.push(&stream), Ok(18));
        assert_eq!(assembler.wanted(), 0);
        assert_eq!(assembler.push(&stream[18..]), Ok(0));
        assert_eq!(assembler.message().unwrap().payload, b"ab");
        assembler.clear_message();
        assert_eq!(assembler.push(&stream[18..]), Ok(18));
        assert_eq!(assembler.message().unwrap().payload, b"cd");
    }

    #[test]
    fn spare_and_advance_copy_in_place() {
        let stream = frame(2, 7, b"xyz");
        let mut assembler = MessageAssembler::new();
        let spare = assembler.spare_mut();
        assert_eq!(spare.len(), 16);
        spare.copy_from_slice(&stream[..16]);
        assembler.advance(16).unwrap();
        assert_eq!(assembler.spare_mut().len(), 3);
        assembler.spare_mut()[..2].copy_from_slice(&stream[16..18]);
        assembler.advance(2).unwrap();
        assert!(assembler.message().is_none());
        assembler.spare_mut().copy_from_slice(&stream[18..]);
        assembler.advance(1).unwrap();
        assert_eq!(assembler.message().unwrap().payload, b"xyz");
        assert_eq!(assembler.advance(1), Err(FrameError::Overfilled));
        assert_eq!(assembler.error(), Some(FrameError::Overfilled));
    }

    #[test]
    fn oversized_payload_breaks_the_stream() {
        let header = XsdSockmsg {
            msg_type: 2,
            req_id: 1,
            tx_id: 0,
            len: 4097,
        };
        let mut assembler = MessageAssembler::new();
        assert_eq!(
            assembler.push(&header.to_bytes()),
            Err(FrameError::PayloadTooLong { len: 4097 })
        );
        assert_eq!(assembler.wanted(), 0);
        assert!(assembler.message().is_none());
        assembler.clear_message();
        assert_eq!(
            assembler.push(b"more"),
            Err(FrameError::PayloadTooLong { len: 4097 })
        );
        let huge = XsdSockmsg {
            len: u32::MAX,
            ..header
        };
        assert!(MessageAssembler::new().push(&huge.to_bytes()).is_err());
    }

    #[test]
    fn replies_must_match_the_request() {
        let ok = message(XsType::Write, 5, b"OK\0");
        assert_eq!(check_reply(&ok, XsType::Write, 5), Ok(&b"OK\0"[..]));
        assert_eq!(
            check_reply(&ok, XsType::Write, 6),
            Err(ReplyError::WrongRequestId {
                expected: 6,
                got: 5
            })
        );
        assert_eq!(
            check_reply(&ok, XsType::Read, 5),
            Err(ReplyError::WrongType {
                expected: 2,
                got: 11
            })
        );
        let err = message(XsType::Error, 5, b"ENOENT\0");
        assert_eq!(
            check_reply(&err, XsType::Read, 5),
            Err(ReplyError::Xenstore(XsErrno::Enoent))
        );
        let again = message(XsType::Error, 5, b"EAGAIN\0");
        assert_eq!(
            check_reply(&again, XsType::TransactionEnd, 5),
            Err(ReplyError::Xenstore(XsErrno::Eagain))
        );
        for bad in [&b"ENOENT"[..], b"EWHAT\0", b"\0", b"", b"ENO\0ENT\0"] {
            let err = message(XsType::Error, 5, bad);
            assert_eq!(
                check_reply(&err, XsType::Read, 5),
                Err(ReplyError::UnknownError)
            );
        }
        let unknown_type = Message {
            header: XsdSockmsg {
                msg_type: 999,
                ..ok.header
            },
            ..ok
        };
        assert!(matches!(
            check_reply(&unknown_type, XsType::Write, 5),
            Err(ReplyError::WrongType { got: 999, .. })
        ));
    }

    #[test]
    fn ok_replies() {
        assert_eq!(parse_ok(b"OK\0"), Ok(()));
        for bad in [&b"OK"[..], b"OK\0\0", b"ok\0", b"", b"OKAY\0"] {
            assert_eq!(parse_ok(bad), Err(ReplyError::UnexpectedPayload));
        }
    }

    #[test]
    fn read_replies() {
        assert_eq!(parse_read(b"a\0b"), b"a\0b");
        assert_eq!(parse_read_text(b"poweroff"), Ok("poweroff"));
        assert_eq!(parse_read_text(b""), Ok(""));
        assert_eq!(parse_read_text(b"a\0"), Err(ReplyError::InteriorNul));
        assert_eq!(parse_read_text(b"\xff"), Err(ReplyError::InvalidUtf8));
    }

    #[test]
    fn directory_replies() {
        let entries: Vec<&str> = parse_directory(b"a\0bc\0d-1_x\0").unwrap().collect();
        assert_eq!(entries, ["a", "bc", "d-1_x"]);
        assert_eq!(parse_directory(b"").unwrap().count(), 0);
        assert_eq!(
            parse_directory(b"a\0b").unwrap_err(),
            ReplyError::MissingNul
        );
        assert_eq!(
            parse_directory(b"a\0\0b\0").unwrap_err(),
            ReplyError::EmptyString
        );
        assert_eq!(parse_directory(b"\0").unwrap_err(), ReplyError::EmptyString);
        assert_eq!(
            parse_directory(b"a/b\0").unwrap_err(),
            ReplyError::InvalidName
        );
        assert_eq!(
            parse_directory(b"a b\0").unwrap_err(),
            ReplyError::InvalidName
        );
        assert_eq!(
            parse_directory(b"\xc3\0").unwrap_err(),
            ReplyError::InvalidUtf8
        );
    }

    #[test]
    fn transaction_ids() {
        assert_eq!(parse_transaction_id(b"1\0"), Ok(1));
        assert_eq!(parse_transaction_id(b"4294967295\0"), Ok(u32::MAX));
        for bad in [
            &b"0\0"[..],
            b"4294967296\0",
            b"99999999999\0",
            b"12",
            b"\0",
            b"01\0",
            b"-1\0",
            b"1a\0",
            b"1\0\0",
        ] {
            assert!(parse_transaction_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn domain_paths() {
        assert_eq!(
            parse_domain_path(b"/local/domain/3\0"),
            Ok("/local/domain/3")
        );
        assert_eq!(
            parse_domain_path(b"/local/domain/3"),
            Err(ReplyError::MissingNul)
        );
        assert_eq!(parse_domain_path(b"local\0"), Err(ReplyError::InvalidName));
        assert_eq!(parse_domain_path(b"/a b\0"), Err(ReplyError::InvalidName));
    }

    #[test]
    fn permission_replies() {
        let perms: Vec<Permission> = parse_permissions(b"n3\0r0\0b7\0").unwrap().collect();
        assert_eq!(
            perms,
            [
                Permission::new(Access::None, 3),
                Permission::new(Access::Read, 0),
                Permission::new(Access::Both, 7)
            ]
        );
        assert_eq!(
            parse_permissions(b"").unwrap_err(),
            ReplyError::NoPermissions
        );
        assert_eq!(
            parse_permissions(b"n3").unwrap_err(),
            ReplyError::MissingNul
        );
        assert_eq!(
            parse_permissions(b"n3\0x1\0").unwrap_err(),
            ReplyError::InvalidPermission
        );
        assert_eq!(
            parse_permissions(b"n3\0\0").unwrap_err(),
            ReplyError::InvalidPermission
        );
    }

    /// Deterministic xorshift, so a failure reproduces.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn hostile_streams_never_panic_and_respect_the_length_cap() {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut completed = 0;
        for round in 0..2000 {
            let mut assembler = MessageAssembler::new();
            // Mostly plausible headers with random fields, sometimes pure garbage.
            let mut stream = Vec::new();
            for _ in 0..4 {
                let len = match noise.next() % 4 {
                    0 => (noise.next() % 64) as u32,
                    1 => (noise.next() % 5000) as u32,
                    2 => noise.next() as u32,
                    _ => 0,
                };
                let header = XsdSockmsg {
                    msg_type: (noise.next() % 24) as u32,
                    req_id: (noise.next() % 3) as u32,
                    tx_id: 0,
                    len,
                };
                stream.extend_from_slice(&header.to_bytes());
                let body = (len as usize).min(300);
                stream.extend((0..body).map(|_| match noise.next() % 5 {
                    0 => 0,
                    1 => b'/',
                    _ => noise.next() as u8,
                }));
            }
            let mut offset = 0;
            while offset < stream.len() {
                let chunk = 1 + (noise.next() % 40) as usize;
                let end = (offset + chunk).min(stream.len());
                match assembler.push(&stream[offset..end]) {
                    Ok(taken) => offset += taken,
                    Err(FrameError::PayloadTooLong { len }) => {
                        assert!(len as usize > XENSTORE_PAYLOAD_MAX, "round {round}");
                        break;
                    }
                    Err(e) => panic!("round {round}: {e}"),
                }
                if let Some(message) = assembler.message() {
                    assert!(message.payload.len() <= XENSTORE_PAYLOAD_MAX);
                    assert_eq!(message.payload.len(), message.header.len as usize);
                    for ty in [XsType::Read, XsType::Directory, XsType::Write] {
                        if let Ok(payload) = check_reply(&message, ty, 1) {
                            let _ = parse_ok(payload);
                            let _ = parse_read_text(payload);
                            let _ = parse_directory(payload).map(|d| d.count());
                            let _ = parse_permissions(payload).map(|p| p.count());
                            let _ = parse_transaction_id(payload);
                            let _ = parse_domain_path(payload);
                        }
                    }
                    let _ = parse_watch_event(&message);
                    assembler.clear_message();
                    completed += 1;
                }
            }
        }
        // The stream generator must really produce whole messages, not just broken streams.
        assert!(completed > 2000, "only {completed} messages completed");
    }

    #[test]
    fn watch_events() {
        let event = message(
            XsType::WatchEvent,
            0,
            b"/local/domain/3/control/shutdown\0ctl\0",
        );
        assert_eq!(
            parse_watch_event(&event),
            Ok(WatchEvent {
                path: "/local/domain/3/control/shutdown",
                token: "ctl"
            })
        );
        let cases: [(&[u8], ReplyError); 7] = [
            (b"/a\0tok", ReplyError::MissingNul),
            (b"", ReplyError::MissingNul),
            (b"/a\0", ReplyError::UnexpectedPayload),
            (b"/a\0t\0extra\0", ReplyError::UnexpectedPayload),
            (b"\0tok\0", ReplyError::EmptyString),
            (b"/a b\0tok\0", ReplyError::InvalidName),
            (b"/a\0t\xff\0", ReplyError::InvalidUtf8),
        ];
        for (payload, expected) in cases {
            let event = message(XsType::WatchEvent, 0, payload);
            assert_eq!(parse_watch_event(&event), Err(expected), "{payload:?}");
        }
        let not_event = message(XsType::Read, 0, b"/a\0t\0");
        assert!(matches!(
            parse_watch_event(&not_event),
            Err(ReplyError::WrongType { .. })
        ));
    }
}
