//! Encoding xenstore requests: a [`XsdSockmsg`] header followed by NUL-separated payload
//! strings, written into a caller buffer that the kernel then copies onto the request ring.
//! Everything is checked before a byte is written: path syntax and length, token and payload
//! size, so xenstored never sees a request it would reject for its form.

use super::perms::{Permission, PERMISSION_MAX_LEN};
use super::wire::{
    XsType, XsdSockmsg, XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX,
    XSD_SOCKMSG_SIZE,
};
use crate::DomId;
use core::fmt;

/// Largest encoded request: header plus maximal payload.
pub const MAX_REQUEST_SIZE: usize = XSD_SOCKMSG_SIZE + XENSTORE_PAYLOAD_MAX;

/// A request to xenstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `XS_READ path`.
    Read {
        /// Node to read.
        path: &'a str,
    },
    /// `XS_WRITE path value`: creates the node if needed.
    Write {
        /// Node to write.
        path: &'a str,
        /// New value (any bytes).
        value: &'a [u8],
    },
    /// `XS_MKDIR path`.
    Mkdir {
        /// Node to create.
        path: &'a str,
    },
    /// `XS_RM path`: removes the node and its children.
    Rm {
        /// Node to remove.
        path: &'a str,
    },
    /// `XS_DIRECTORY path`: lists children.
    Directory {
        /// Node to list.
        path: &'a str,
    },
    /// `XS_GET_PERMS path`.
    GetPerms {
        /// Node whose permissions to read.
        path: &'a str,
    },
    /// `XS_SET_PERMS path perm...`: the first entry is owner and default.
    SetPerms {
        /// Node whose permissions to set.
        path: &'a str,
        /// At least one entry.
        perms: &'a [Permission],
    },
    /// `XS_WATCH path token`: xenstored fires the watch once at registration, then on every
    /// change at or below `path`.
    Watch {
        /// Node (or `@introduceDomain` / `@releaseDomain`) to watch.
        path: &'a str,
        /// Our token, echoed in each event.
        token: &'a str,
    },
    /// `XS_UNWATCH path token`.
    Unwatch {
        /// The watched node.
        path: &'a str,
        /// The watch's token.
        token: &'a str,
    },
    /// `XS_TRANSACTION_START`: the reply carries the new transaction id.
    TransactionStart,
    /// `XS_TRANSACTION_END T|F`: commit or abort the header's transaction.
    TransactionEnd {
        /// `true` commits, `false` aborts.
        commit: bool,
    },
    /// `XS_GET_DOMAIN_PATH domid`.
    GetDomainPath {
        /// The domain.
        domid: DomId,
    },
}

/// Why a request cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The path breaks xenstore's node-name syntax (see [`validate_path`]).
    InvalidPath,
    /// The path exceeds `XENSTORE_ABS_PATH_MAX` / `XENSTORE_REL_PATH_MAX`.
    PathTooLong,
    /// A watch token is empty or contains a NUL.
    InvalidToken,
    /// `XS_SET_PERMS` needs at least one entry.
    NoPermissions,
    /// The payload would exceed `XENSTORE_PAYLOAD_MAX`.
    PayloadTooLong {
        /// Payload length that was needed.
        len: usize,
    },
    /// The caller's buffer is too small.
    BufferTooSmall {
        /// Bytes that were needed.
        needed: usize,
    },
    /// A transaction start must not itself be inside a transaction.
    NestedTransaction,
    /// A transaction end needs the transaction's (non-zero) id.
    NoTransaction,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::InvalidPath => f.write_str("invalid xenstore path"),
            RequestError::PathTooLong => f.write_str("xenstore path too long"),
            RequestError::InvalidToken => f.write_str("invalid watch token"),
            RequestError::NoPermissions => f.write_str("empty permission list"),
            RequestError::PayloadTooLong { len } => {
                write!(f, "payload of {len} bytes exceeds {XENSTORE_PAYLOAD_MAX}")
            }
            RequestError::BufferTooSmall { needed } => {
                write!(f, "request buffer too small ({needed} bytes needed)")
            }
            RequestError::NestedTransaction => {
                f.write_str("transaction start inside a transaction")
            }
            RequestError::NoTransaction => f.write_str("transaction end outside a transaction"),
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A node: absolute (`/local/domain/3/data`) or relative to the domain's home.
    Node,
    /// A watch target: a node or a special `@name` path.
    WatchTarget,
}

/// Checks xenstored's node-name rules: characters `[A-Za-z0-9_@/-]`, no `//`, no trailing
/// `/` (except the root `/`), non-empty, within the length limits. Special paths
/// (`@introduceDomain`) are allowed only as watch targets.
pub fn validate_path(path: &str, kind: PathKind) -> Result<(), RequestError> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return Err(RequestError::InvalidPath);
    }
    if bytes[0] == b'@' {
        if kind != PathKind::WatchTarget || bytes.len() < 2 {
            return Err(RequestError::InvalidPath);
        }
        return if bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            Ok(())
        } else {
            Err(RequestError::InvalidPath)
        };
    }
    let limit = if bytes[0] == b'/' {
        XENSTORE_ABS_PATH_MAX
    } else {
        XENSTORE_REL_PATH_MAX
    };
    if bytes.len() > limit {
        return Err(RequestError::PathTooLong);
    }
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'));
    let doubled_slash = bytes.windows(2).any(|w| w == b"//");
    let trailing_slash = bytes.len() > 1 && bytes[bytes.len() - 1] == b'/';
    if !valid_chars || doubled_slash || trailing_slash {
        return Err(RequestError::InvalidPath);
    }
    Ok(())
}

/// A watch token: non-empty, no NUL (it is sent NUL-terminated), printable ASCII so that
/// events echoing it can be compared byte for byte.
pub fn validate_token(token: &str) -> Result<(), RequestError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        Err(RequestError::InvalidToken)
    } else {
        Ok(())
    }
}

/// Appends to a buffer, tracking the length a larger buffer would have needed.
struct PayloadWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl PayloadWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
        }
        self.len = end;
    }

    fn put_str_nul(&mut self, text: &str) {
        self.put(text.as_bytes());
        self.put(&[0]);
    }
}

/// Writes `value` in decimal.
fn decimal(mut value: u32, out: &mut [u8; 10]) -> &[u8] {
    let mut start = out.len();
    loop {
        start -= 1;
        out[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &out[start..]
}

impl Request<'_> {
    /// The message type on the wire.
    pub const fn msg_type(&self) -> XsType {
        match self {
            Request::Read { .. } => XsType::Read,
            Request::Write { .. } => XsType::Write,
            Request::Mkdir { .. } => XsType::Mkdir,
            Request::Rm { .. } => XsType::Rm,
            Request::Directory { .. } => XsType::Directory,
            Request::GetPerms { .. } => XsType::GetPerms,
            Request::SetPerms { .. } => XsType::SetPerms,
            Request::Watch { .. } => XsType::Watch,
            Request::Unwatch { .. } => XsType::Unwatch,
            Request::TransactionStart => XsType::TransactionStart,
            Request::TransactionEnd { .. } => XsType::TransactionEnd,
            Request::GetDomainPath { .. } => XsType::GetDomainPath,
        }
    }

    fn validate(&self, tx_id: u32) -> Result<(), RequestError> {
        match *self {
            Request::Read { path }
            | Request::Write { path, .. }
            | Request::Mkdir { path }
            | Request::Rm { path }
            | Request::Directory { path }
            | Request::GetPerms { path } => validate_path(path, PathKind::Node),
            Request::SetPerms { path, perms } => {
                validate_path(path, PathKind::Node)?;
                if perms.is_empty() {
                    Err(RequestError::NoPermissions)
                } else {
                    Ok(())
                }
            }
            Request::Watch { path, token } | Request::Unwatch { path, token } => {
                validate_path(path, PathKind::WatchTarget)?;
                validate_token(token)
            }
            Request::TransactionStart if tx_id != 0 => Err(RequestError::NestedTransaction),
            Request::TransactionEnd { .. } if tx_id == 0 => Err(RequestError::NoTransaction),
            Request::TransactionStart
            | Request::TransactionEnd { .. }
            | Request::GetDomainPath { .. } => Ok(()),
        }
    }

    fn write_payload(&self, out: &mut PayloadWriter<'_>) {
        match *self {
            Request::Read { path }
            | Request::Mkdir { path }
            | Request::Rm { path }
            | Request::Directory { path }
            | Request::GetPerms { path } => out.put_str_nul(path),
            Request::Write { path, value } => {
                out.put_str_nul(path);
                out.put(value);
            }
            Request::SetPerms { path, perms } => {
                out.put_str_nul(path);
                for perm in perms {
                    let mut entry = [0u8; PERMISSION_MAX_LEN];
                    // A 7-byte buffer always holds one entry.
                    let len = perm.encode(&mut entry).unwrap_or(0);
                    out.put(&entry[..len]);
                }
            }
            Request::Watch { path, token } | Request::Unwatch { path, token } => {
                out.put_str_nul(path);
                out.put_str_nul(token);
            }
            Request::TransactionStart => out.put(&[0]),
            Request::TransactionEnd { commit } => out.put(if commit { b"T\0" } else { b"F\0" }),
            Request::GetDomainPath { domid } => {
                let mut digits = [0u8; 10];
                out.put(decimal(u32::from(domid), &mut digits));
                out.put(&[0]);
            }
        }
    }

    /// Validates the request and writes header and payload into `buf`, returning the total
    /// length. `req_id` is echoed in the reply; `tx_id` is the transaction (0 for none).
    pub fn encode(&self, req_id: u32, tx_id: u32, buf: &mut [u8]) -> Result<usize, RequestError> {
        self.validate(tx_id)?;
        let room = buf.len();
        let (header, body) = buf.split_at_mut(XSD_SOCKMSG_SIZE.min(room));
        let mut payload = PayloadWriter { buf: body, len: 0 };
        self.write_payload(&mut payload);
        let payload_len = payload.len;
        if payload_len > XENSTORE_PAYLOAD_MAX {
            return Err(RequestError::PayloadTooLong { len: payload_len });
        }
        let total = XSD_SOCKMSG_SIZE + payload_len;
        if room < total {
            return Err(RequestError::BufferTooSmall { needed: total });
        }
        let msg = XsdSockmsg {
            msg_type: self.msg_type() as u32,
            req_id,
            tx_id,
            len: payload_len as u32,
        };
        header.copy_from_slice(&msg.to_bytes());
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::super::perms::Access;
    use super::*;

    fn encode(request: Request<'_>, req_id: u32, tx_id: u32) -> (XsdSockmsg, Vec<u8>) {
        let mut buf = [0u8; MAX_REQUEST_SIZE];
        let len = request.encode(req_id, tx_id, &mut buf).unwrap();
        let header = XsdSockmsg::from_bytes(buf[..16].try_into().unwrap());
        assert_eq!(header.len as usize, len - 16);
        (header, buf[16..len].to_vec())
    }

    #[test]
    fn payloads_follow_the_wire_format() {
        let cases: [(Request<'_>, &[u8]); 12] = [
            (Request::Read { path: "/a/b" }, b"/a/b\0"),
            (
                Request::Write {
                    path: "data/x",
                    value: b"v\x001",
                },
                b"data/x\0v\x001",
            ),
            (
                Request::Write {
                    path: "/e",
                    value: b"",
                },
                b"/e\0",
            ),
            (Request::Mkdir { path: "/m" }, b"/m\0"),
            (Request::Rm { path: "/r" }, b"/r\0"),
            (Request::Directory { path: "/" }, b"/\0"),
            (Request::GetPerms { path: "/p" }, b"/p\0"),
            (
                Request::SetPerms {
                    path: "/p",
                    perms: &[
                        Permission::new(Access::None, 3),
                        Permission::new(Access::Read, 0),
                    ],
                },
                b"/p\0n3\0r0\0",
            ),
            (
                Request::Watch {
                    path: "control/shutdown",
                    token: "t1",
                },
                b"control/shutdown\0t1\0",
            ),
            (
                Request::Unwatch {
                    path: "@releaseDomain",
                    token: "t1",
                },
                b"@releaseDomain\0t1\0",
            ),
            (Request::TransactionStart, b"\0"),
            (Request::GetDomainPath { domid: 65535 }, b"65535\0"),
        ];
        for (request, payload) in cases {
            let (header, body) = encode(request, 9, 0);
            assert_eq!(body, payload, "{request:?}");
            assert_eq!(header.msg_type, request.msg_type() as u32);
            assert_eq!((header.req_id, header.tx_id), (9, 0));
        }
        let (header, body) = encode(Request::TransactionEnd { commit: true }, 1, 77);
        assert_eq!((header.tx_id, body.as_slice()), (77, &b"T\0"[..]));
        let (_, body) = encode(Request::TransactionEnd { commit: false }, 1, 77);
        assert_eq!(body, b"F\0");
        let (header, _) = encode(Request::Read { path: "/x" }, 0xdead_beef, 5);
        assert_eq!((header.req_id, header.tx_id), (0xdead_beef, 5));
        assert_eq!(header.msg_type, 2);
    }

    #[test]
    fn path_rules() {
        for good in [
            "/",
            "/local/domain/0",
            "data",
            "a-b_c@d/e0",
            "device/vif/0/state",
        ] {
            assert_eq!(validate_path(good, PathKind::Node), Ok(()), "{good}");
        }
        for bad in [
            "", "/a/", "a//b", "/a b", "/a\0b", "/ä", "a/", "/a/./b\n", "@x",
        ] {
            assert_eq!(
                validate_path(bad, PathKind::Node),
                Err(RequestError::InvalidPath),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_path("@introduceDomain", PathKind::WatchTarget),
            Ok(())
        );
        assert_eq!(
            validate_path("@", PathKind::WatchTarget),
            Err(RequestError::InvalidPath)
        );
        assert_eq!(
            validate_path("@a/b", PathKind::WatchTarget),
            Err(RequestError::InvalidPath)
        );
        let long_abs = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX));
        assert_eq!(
            validate_path(&long_abs, PathKind::Node),
            Err(RequestError::PathTooLong)
        );
        let max_abs = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX - 1));
        assert_eq!(validate_path(&max_abs, PathKind::Node), Ok(()));
        let long_rel = "a".repeat(XENSTORE_REL_PATH_MAX + 1);
        assert_eq!(
            validate_path(&long_rel, PathKind::Node),
            Err(RequestError::PathTooLong)
        );
    }

    #[test]
    fn invalid_requests_are_refused_before_encoding() {
        let mut buf = [0u8; MAX_REQUEST_SIZE];
        let refuse = |r: Request<'_>, tx: u32, buf: &mut [u8]| r.encode(1, tx, buf).unwrap_err();
        assert_eq!(
            refuse(Request::Read { path: "/a//b" }, 0, &mut buf),
            RequestError::InvalidPath
        );
        assert_eq!(
            refuse(
                Request::Watch {
                    path: "/a",
                    token: ""
                },
                0,
                &mut buf
            ),
            RequestError::InvalidToken
        );
        assert_eq!(
            refuse(
                Request::Watch {
                    path: "/a",
                    token: "has space"
                },
                0,
                &mut buf
            ),
            RequestError::InvalidToken
        );
        assert_eq!(
            refuse(
                Request::SetPerms {
                    path: "/a",
                    perms: &[]
                },
                0,
                &mut buf
            ),
            RequestError::NoPermissions
        );
        assert_eq!(
            refuse(Request::TransactionStart, 4, &mut buf),
            RequestError::NestedTransaction
        );
        assert_eq!(
            refuse(Request::TransactionEnd { commit: true }, 0, &mut buf),
            RequestError::NoTransaction
        );
        let big = vec![b'x'; XENSTORE_PAYLOAD_MAX];
        assert_eq!(
            refuse(
                Request::Write {
                    path: "/a",
                    value: &big
                },
                0,
                &mut buf
            ),
            RequestError::PayloadTooLong {
                len: XENSTORE_PAYLOAD_MAX + 3
            }
        );
        let fits = vec![b'x'; XENSTORE_PAYLOAD_MAX - 3];
        assert_eq!(
            Request::Write {
                path: "/a",
                value: &fits
            }
            .encode(1, 0, &mut buf),
            Ok(MAX_REQUEST_SIZE)
        );
    }

    #[test]
    fn small_buffers_are_reported_not_overrun() {
        let request = Request::Read { path: "/abc" };
        for size in 0..21 {
            let mut buf = vec![0xaa; size];
            assert_eq!(
                request.encode(1, 0, &mut buf),
                Err(RequestError::BufferTooSmall { needed: 21 }),
                "{size}"
            );
        }
        let mut exact = [0u8; 21];
        assert_eq!(request.encode(1, 0, &mut exact), Ok(21));
    }
}
