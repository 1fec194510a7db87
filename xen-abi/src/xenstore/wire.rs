//! The xenstore wire ABI (`io/xs_wire.h`, Xen 4.17): message header, message types, error
//! names, and the shared ring page.

use crate::ring::RingGeometry;
use core::fmt;
use core::mem::{offset_of, size_of};

/// Bytes of each of the two rings in the xenstore page.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest payload a message may carry; longer ones break the connection.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path xenstored accepts.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path xenstored accepts.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// `server_features` bit: the ring can be reconnected.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features` bit: the `error` field is maintained.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `connection` value: steady state.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection` value: the guest requested a reconnect.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error` value: no error.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error` value: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error` value: invalid ring index (the server saw a bad index from us).
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error` value: protocol violation (payload too long).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// `struct xenstore_domain_interface`: the page shared with xenstored. The guest produces on
/// `req` and consumes `rsp`.
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests to xenstored.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events from xenstored.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Server's consumer index of `req`.
    pub req_cons: u32,
    /// Guest's producer index of `req`.
    pub req_prod: u32,
    /// Guest's consumer index of `rsp`.
    pub rsp_cons: u32,
    /// Server's producer index of `rsp`.
    pub rsp_prod: u32,
    /// `XENSTORE_SERVER_FEATURE_*` bits.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*` (valid with `XENSTORE_SERVER_FEATURE_ERROR`).
    pub error: u32,
}
const _: () = assert!(offset_of!(XenstoreDomainInterface, req) == 0);
const _: () = assert!(offset_of!(XenstoreDomainInterface, rsp) == 1024);
const _: () = assert!(offset_of!(XenstoreDomainInterface, req_cons) == 2048);
const _: () = assert!(offset_of!(XenstoreDomainInterface, req_prod) == 2052);
const _: () = assert!(offset_of!(XenstoreDomainInterface, rsp_cons) == 2056);
const _: () = assert!(offset_of!(XenstoreDomainInterface, rsp_prod) == 2060);
const _: () = assert!(offset_of!(XenstoreDomainInterface, server_features) == 2064);
const _: () = assert!(offset_of!(XenstoreDomainInterface, connection) == 2068);
const _: () = assert!(offset_of!(XenstoreDomainInterface, error) == 2072);
const _: () = assert!(size_of::<XenstoreDomainInterface>() == 2076);
const _: () = assert!(size_of::<XenstoreDomainInterface>() <= crate::PAGE_SIZE);

/// Geometry of both xenstore rings (`MASK_XENSTORE_IDX`).
pub const XENSTORE_RING: RingGeometry = RingGeometry::new(XENSTORE_RING_SIZE as u32);

/// `struct xsd_sockmsg`: the header before every message's payload.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XsdSockmsg {
    /// `XS_*` message type.
    pub msg_type: u32,
    /// Request id, echoed in the reply (0 in watch events).
    pub req_id: u32,
    /// Transaction id, 0 outside transactions.
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}
const _: () = assert!(size_of::<XsdSockmsg>() == 16);
const _: () = assert!(offset_of!(XsdSockmsg, msg_type) == 0);
const _: () = assert!(offset_of!(XsdSockmsg, req_id) == 4);
const _: () = assert!(offset_of!(XsdSockmsg, tx_id) == 8);
const _: () = assert!(offset_of!(XsdSockmsg, len) == 12);

/// Bytes of the header on the wire.
pub const XSD_SOCKMSG_SIZE: usize = size_of::<XsdSockmsg>();

impl XsdSockmsg {
    /// The header as it goes on the wire (native endianness, as the C struct).
    pub fn to_bytes(&self) -> [u8; XSD_SOCKMSG_SIZE] {
        let mut out = [0u8; XSD_SOCKMSG_SIZE];
        out[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        out[12..16].copy_from_slice(&self.len.to_ne_bytes());
        out
    }

    /// Decodes a header from its wire bytes (no validation: see the reply module).
    pub fn from_bytes(bytes: &[u8; XSD_SOCKMSG_SIZE]) -> XsdSockmsg {
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        XsdSockmsg {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }
}

/// `enum xsd_sockmsg_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XsType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// List the children of a node.
    Directory = 1,
    /// Read a node's value.
    Read = 2,
    /// Read a node's permissions.
    GetPerms = 3,
    /// Register a watch.
    Watch = 4,
    /// Remove a watch.
    Unwatch = 5,
    /// Start a transaction.
    TransactionStart = 6,
    /// Commit ("T") or abort ("F") a transaction.
    TransactionEnd = 7,
    /// Introduce a domain (dom0 only).
    Introduce = 8,
    /// Release a domain (dom0 only).
    Release = 9,
    /// Get `/local/domain/<id>`.
    GetDomainPath = 10,
    /// Write a node's value.
    Write = 11,
    /// Create a node.
    Mkdir = 12,
    /// Remove a node and its children.
    Rm = 13,
    /// Set a node's permissions.
    SetPerms = 14,
    /// Asynchronous watch notification: payload `path\0token\0`.
    WatchEvent = 15,
    /// Error reply: payload is an error name such as `ENOENT\0`.
    Error = 16,
    /// Whether a domain is introduced.
    IsDomainIntroduced = 17,
    /// Resume a domain.
    Resume = 18,
    /// Set a device model's target domain.
    SetTarget = 19,
    /// Remove all watches of the connection (20 was `XS_RESTRICT`, removed).
    ResetWatches = 21,
    /// Partial directory listing.
    DirectoryPart = 22,
}

/// An `XS_*` value this ABI version does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownXsType(pub u32);

impl TryFrom<u32> for XsType {
    type Error = UnknownXsType;
    fn try_from(raw: u32) -> Result<XsType, UnknownXsType> {
        Ok(match raw {
            0 => XsType::Control,
            1 => XsType::Directory,
            2 => XsType::Read,
            3 => XsType::GetPerms,
            4 => XsType::Watch,
            5 => XsType::Unwatch,
            6 => XsType::TransactionStart,
            7 => XsType::TransactionEnd,
            8 => XsType::Introduce,
            9 => XsType::Release,
            10 => XsType::GetDomainPath,
            11 => XsType::Write,
            12 => XsType::Mkdir,
            13 => XsType::Rm,
            14 => XsType::SetPerms,
            15 => XsType::WatchEvent,
            16 => XsType::Error,
            17 => XsType::IsDomainIntroduced,
            18 => XsType::Resume,
            19 => XsType::SetTarget,
            21 => XsType::ResetWatches,
            22 => XsType::DirectoryPart,
            other => return Err(UnknownXsType(other)),
        })
    }
}

/// `XS_INVALID`: guaranteed never to be a valid type.
pub const XS_INVALID: u32 = 0xffff;

/// The error names xenstored sends in `XS_ERROR` replies (`xsd_errors[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XsErrno {
    /// Invalid argument.
    Einval,
    /// Permission denied.
    Eacces,
    /// Node exists.
    Eexist,
    /// Is a directory.
    Eisdir,
    /// No such node.
    Enoent,
    /// Out of memory.
    Enomem,
    /// Quota exceeded.
    Enospc,
    /// I/O error.
    Eio,
    /// Directory not empty.
    Enotempty,
    /// Operation not supported.
    Enosys,
    /// Read-only.
    Erofs,
    /// Busy.
    Ebusy,
    /// Transaction conflict: retry.
    Eagain,
    /// Already connected.
    Eisconn,
    /// Too big.
    E2big,
    /// Operation not permitted.
    Eperm,
}

impl XsErrno {
    /// Every error name, in `xsd_errors[]` order.
    pub const ALL: [XsErrno; 16] = [
        XsErrno::Einval,
        XsErrno::Eacces,
        XsErrno::Eexist,
        XsErrno::Eisdir,
        XsErrno::Enoent,
        XsErrno::Enomem,
        XsErrno::Enospc,
        XsErrno::Eio,
        XsErrno::Enotempty,
        XsErrno::Enosys,
        XsErrno::Erofs,
        XsErrno::Ebusy,
        XsErrno::Eagain,
        XsErrno::Eisconn,
        XsErrno::E2big,
        XsErrno::Eperm,
    ];

    /// The name on the wire, e.g. `"ENOENT"`.
    pub const fn name(self) -> &'static str {
        match self {
            XsErrno::Einval => "EINVAL",
            XsErrno::Eacces => "EACCES",
            XsErrno::Eexist => "EEXIST",
            XsErrno::Eisdir => "EISDIR",
            XsErrno::Enoent => "ENOENT",
            XsErrno::Enomem => "ENOMEM",
            XsErrno::Enospc => "ENOSPC",
            XsErrno::Eio => "EIO",
            XsErrno::Enotempty => "ENOTEMPTY",
            XsErrno::Enosys => "ENOSYS",
            XsErrno::Erofs => "EROFS",
            XsErrno::Ebusy => "EBUSY",
            XsErrno::Eagain => "EAGAIN",
            XsErrno::Eisconn => "EISCONN",
            XsErrno::E2big => "E2BIG",
            XsErrno::Eperm => "EPERM",
        }
    }

    /// Looks up a name as sent on the wire (without its NUL).
    pub fn from_name(name: &[u8]) -> Option<XsErrno> {
        XsErrno::ALL
            .iter()
            .copied()
            .find(|errno| errno.name().as_bytes() == name)
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `XS_WRITE_NONE` etc. are historic write modes; modern xenstored takes none.
/// Index of the path in a watch event's payload (`XS_WATCH_PATH`).
pub const XS_WATCH_PATH: usize = 0;
/// Index of the token in a watch event's payload (`XS_WATCH_TOKEN`).
pub const XS_WATCH_TOKEN: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = XsdSockmsg {
            msg_type: XsType::Write as u32,
            req_id: 0x0102_0304,
            tx_id: 7,
            len: 4096,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[0..4], &11u32.to_ne_bytes());
        assert_eq!(&bytes[12..16], &4096u32.to_ne_bytes());
        assert_eq!(XsdSockmsg::from_bytes(&bytes), header);
    }

    #[test]
    fn message_types_match_header_numbering() {
        for raw in 0..32u32 {
            match XsType::try_from(raw) {
                Ok(ty) => assert_eq!(ty as u32, raw),
                Err(UnknownXsType(r)) => assert!(r == 20 || r > 22, "{r}"),
            }
        }
        assert_eq!(XsType::Error as u32, 16);
        assert_eq!(XsType::WatchEvent as u32, 15);
        assert_eq!(XsType::try_from(XS_INVALID), Err(UnknownXsType(XS_INVALID)));
    }

    #[test]
    fn error_names_round_trip() {
        for errno in XsErrno::ALL {
            assert_eq!(XsErrno::from_name(errno.name().as_bytes()), Some(errno));
        }
        assert_eq!(XsErrno::from_name(b"ENOENT"), Some(XsErrno::Enoent));
        assert_eq!(XsErrno::from_name(b"enoent"), None);
        assert_eq!(XsErrno::from_name(b"ENOENT\0"), None);
        assert_eq!(XsErrno::from_name(b""), None);
    }
}
