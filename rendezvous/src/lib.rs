//! The attach contract between the xenrpc service VM (backend) and a client guest (frontend),
//! shared by both ends: xenstore paths and keys, strict parsing of what a peer wrote, and the
//! index page that lists the client's granted pages. See `docs/rendezvous.md`.
//!
//! Everything here is pure: the caller reads xenstore or a granted page once into private
//! memory, and these functions validate the copy.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod backend;
pub mod limits;

use core::fmt::{self, Write};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use xen_abi::xenbus::XenbusState;

/// The device type in xenstore paths.
pub const DEVICE_TYPE: &str = "xenrpc";
/// The protocol both ends write under `protocol`.
pub const PROTOCOL: &str = "xenrpc/1";

/// Keys of the frontend and backend directories.
pub mod key {
    /// Frontend: the path of the backend directory (written by the toolstack).
    pub const BACKEND: &str = "backend";
    /// Frontend: the server's domid (written by the toolstack).
    pub const BACKEND_ID: &str = "backend-id";
    /// Backend: the path of the frontend directory (written by the toolstack).
    pub const FRONTEND: &str = "frontend";
    /// Backend: the client's domid (written by the toolstack).
    pub const FRONTEND_ID: &str = "frontend-id";
    /// Both: the end's XenbusState, as a decimal number.
    pub const STATE: &str = "state";
    /// Backend: "1" while the toolstack wants the device attached.
    pub const ONLINE: &str = "online";
    /// Frontend: the grant reference of the index page (granted read-only to the server).
    pub const INDEX_REF: &str = "index-ref";
    /// Frontend: the port the client allocated unbound for the server.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Optional: a second port the server only bounces back (the raw event round trip that
    /// benchmarks compare calls with).
    pub const PING_EVENT_CHANNEL: &str = "ping-event-channel";
    /// Both: the protocol the end speaks ([`PROTOCOL`](crate::PROTOCOL)).
    pub const PROTOCOL: &str = "protocol";
    /// Backend: the largest ring + data page count the server accepts.
    pub const MAX_PAGES: &str = "max-pages";
}

/// A domain id as xenstore paths carry it.
pub type DomId = u16;

/// Largest domid of a real domain (DOMID_FIRST_RESERVED is 0x7FF0).
pub const DOMID_MAX: u32 = 0x7FEF;

/// Largest device id accepted.
pub const DEVID_MAX: u32 = 255;

/// A small fixed-capacity string for paths (xenstore paths are at most 3072 bytes; ours are short).
#[derive(Clone, PartialEq, Eq)]
pub struct Path {
    buf: [u8; 128],
    len: usize,
}

impl Path {
    fn new() -> Self {
        Path {
            buf: [0; 128],
            len: 0,
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        // Only ever written through `write_str`, so always UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn path(args: fmt::Arguments<'_>) -> Path {
    let mut p = Path::new();
    // Every path built here is far below 128 bytes (numbers are bounded above).
    p.write_fmt(args).expect("xenstore path fits");
    p
}

/// `/local/domain/<client>/device/xenrpc/<devid>`
pub fn frontend_dir(client: DomId, devid: u32) -> Path {
    path(format_args!(
        "/local/domain/{client}/device/{DEVICE_TYPE}/{devid}"
    ))
}

/// `/local/domain/<server>/backend/xenrpc`: the directory the service VM watches.
pub fn backend_root(server: DomId) -> Path {
    path(format_args!("/local/domain/{server}/backend/{DEVICE_TYPE}"))
}

/// `/local/domain/<server>/data/xenrpc-totals`: the service VM's running totals of attaches,
/// connections, refusals and ends by reason (`name=count` words), for the toolstack to read.
pub fn totals_path(server: DomId) -> Path {
    path(format_args!("/local/domain/{server}/data/xenrpc-totals"))
}

/// Longest totals value a reader accepts.
pub const TOTALS_MAX_LEN: usize = 1024;

/// `/local/domain/<server>/backend/xenrpc/<client>/<devid>`
pub fn backend_dir(server: DomId, client: DomId, devid: u32) -> Path {
    path(format_args!(
        "/local/domain/{server}/backend/{DEVICE_TYPE}/{client}/{devid}"
    ))
}

/// `<dir>/<key>`
pub fn key_path(dir: &Path, key: &str) -> Path {
    path(format_args!("{dir}/{key}"))
}

/// Why a value a peer wrote was refused. Each variant's doc comment is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// Empty value.
    Empty,
    /// Not a plain decimal number.
    NotDecimal,
    /// Number out of range.
    TooLarge,
    /// Path does not match the attach contract (a path that is not the one the contract
    /// names).
    WrongPath,
    /// Not a XenbusState.
    BadState,
    /// Unsupported protocol.
    WrongProtocol,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueError::Empty => "empty value",
            ValueError::NotDecimal => "not a plain decimal number",
            ValueError::TooLarge => "number out of range",
            ValueError::WrongPath => "path does not match the attach contract",
            ValueError::BadState => "not a XenbusState",
            ValueError::WrongProtocol => "unsupported protocol",
        })
    }
}

/// Parses a plain decimal number (no sign, no spaces, no leading zeros but "0") up to `max`.
pub fn parse_decimal(value: &[u8], max: u32) -> Result<u32, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if value.len() > 1 && value[0] == b'0' {
        return Err(ValueError::NotDecimal);
    }
    let mut n: u32 = 0;
    for &c in value {
        if !c.is_ascii_digit() {
            return Err(ValueError::NotDecimal);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add((c - b'0') as u32))
            .ok_or(ValueError::TooLarge)?;
    }
    if n > max {
        return Err(ValueError::TooLarge);
    }
    Ok(n)
}

/// Parses a domain id.
pub fn parse_domid(value: &[u8]) -> Result<DomId, ValueError> {
    parse_decimal(value, DOMID_MAX).map(|n| n as DomId)
}

/// Parses a XenbusState value.
pub fn parse_state(value: &[u8]) -> Result<XenbusState, ValueError> {
    XenbusState::parse(value).map_err(|_| ValueError::BadState)
}

/// Checks a peer's `protocol` value.
pub fn check_protocol(value: &[u8]) -> Result<(), ValueError> {
    if value == PROTOCOL.as_bytes() {
        Ok(())
    } else {
        Err(ValueError::WrongProtocol)
    }
}

/// Splits `<client>/<devid>` (a path below [`backend_root`]) into its numbers.
pub fn parse_backend_entry(client: &[u8], devid: &[u8]) -> Result<(DomId, u32), ValueError> {
    Ok((parse_domid(client)?, parse_decimal(devid, DEVID_MAX)?))
}

/// Checks that a `frontend` value written in the backend directory names exactly the frontend
/// directory of (`client`, `devid`): the backend never follows a path it did not expect.
pub fn check_frontend_path(value: &[u8], client: DomId, devid: u32) -> Result<(), ValueError> {
    if value == frontend_dir(client, devid).as_str().as_bytes() {
        Ok(())
    } else {
        Err(ValueError::WrongPath)
    }
}

/// Checks that a `backend` value in the frontend directory names the backend directory of
/// (`server`, `client`, `devid`).
pub fn check_backend_path(
    value: &[u8],
    server: DomId,
    client: DomId,
    devid: u32,
) -> Result<(), ValueError> {
    if value == backend_dir(server, client, devid).as_str().as_bytes() {
        Ok(())
    } else {
        Err(ValueError::WrongPath)
    }
}

/// The index page's magic ("XRPC" as little-endian bytes).
pub const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"XRPC");
/// The index page layout's version.
pub const INDEX_VERSION: u32 = 1;
/// Ring + data pages one connection may share: what fits in one index page, and in one slot of
/// the service VM's foreign-mapping window.
pub const MAX_PAGES: usize = (4096 - core::mem::size_of::<IndexHeader>()) / 4;

/// The header of the index page.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IndexHeader {
    /// [`INDEX_MAGIC`].
    pub magic: u32,
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// Pages of the ring region (at least 1: the control page and both rings).
    pub ring_pages: u32,
    /// Pages of the data region (0 or more).
    pub data_pages: u32,
}
const _: () = assert!(core::mem::size_of::<IndexHeader>() == 16);
const _: () = assert!(core::mem::offset_of!(IndexHeader, data_pages) == 12);
const _: () = assert!(MAX_PAGES == 1020);

/// The whole index page as laid out in shared memory.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IndexPage {
    /// Magic, version and page counts.
    pub header: IndexHeader,
    /// Grant references: `ring_pages` ring pages first, then `data_pages` data pages; the
    /// rest unused.
    pub refs: [u32; MAX_PAGES],
}
const _: () = assert!(core::mem::size_of::<IndexPage>() == 4096);

/// Why an index page was refused. Each variant's doc comment is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexError {
    /// Bad magic {0:#x}.
    BadMagic(u32),
    /// Unsupported version {0}.
    BadVersion(u32),
    /// Ring pages {0}: at least one is needed (ring_pages is zero; the ring region's own
    /// geometry is checked by the protocol).
    BadRingPages(u32),
    /// {requested} pages requested, limit {limit} (ring_pages + data_pages exceeds
    /// [`MAX_PAGES`] or the server's own limit).
    TooManyPages {
        /// ring_pages + data_pages as the page asks.
        requested: u64,
        /// The largest count accepted: [`MAX_PAGES`] or the server's lower limit.
        limit: usize,
    },
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            IndexError::BadVersion(v) => write!(f, "unsupported version {v}"),
            IndexError::BadRingPages(n) => write!(f, "ring pages {n}: at least one is needed"),
            IndexError::TooManyPages { requested, limit } => {
                write!(f, "{requested} pages requested, limit {limit}")
            }
        }
    }
}

/// A validated private copy of an index page.
#[derive(Clone)]
pub struct Index {
    page: IndexPage,
}

impl Index {
    /// Validates a private copy of the index page against the protocol and `limit` pages.
    pub fn parse(copy: &[u8; 4096], limit: usize) -> Result<Index, IndexError> {
        let page = IndexPage::read_from_bytes(copy).expect("4096 bytes is exactly one IndexPage");
        let h = page.header;
        if h.magic != INDEX_MAGIC {
            return Err(IndexError::BadMagic(h.magic));
        }
        if h.version != INDEX_VERSION {
            return Err(IndexError::BadVersion(h.version));
        }
        if h.ring_pages == 0 {
            return Err(IndexError::BadRingPages(h.ring_pages));
        }
        let requested = h.ring_pages as u64 + h.data_pages as u64;
        let limit = limit.min(MAX_PAGES);
        if requested > limit as u64 {
            return Err(IndexError::TooManyPages { requested, limit });
        }
        Ok(Index { page })
    }

    /// Builds an index page (the client's side).
    pub fn build(ring_refs: &[u32], data_refs: &[u32]) -> Result<[u8; 4096], IndexError> {
        let requested = ring_refs.len() as u64 + data_refs.len() as u64;
        if requested > MAX_PAGES as u64 {
            return Err(IndexError::TooManyPages {
                requested,
                limit: MAX_PAGES,
            });
        }
        if ring_refs.is_empty() {
            return Err(IndexError::BadRingPages(ring_refs.len() as u32));
        }
        let mut page = IndexPage {
            header: IndexHeader {
                magic: INDEX_MAGIC,
                version: INDEX_VERSION,
                ring_pages: ring_refs.len() as u32,
                data_pages: data_refs.len() as u32,
            },
            refs: [0; MAX_PAGES],
        };
        page.refs[..ring_refs.len()].copy_from_slice(ring_refs);
        page.refs[ring_refs.len()..requested as usize].copy_from_slice(data_refs);
        let mut out = [0u8; 4096];
        out.copy_from_slice(page.as_bytes());
        Ok(out)
    }

    /// Pages of the ring region.
    pub fn ring_pages(&self) -> usize {
        self.page.header.ring_pages as usize
    }

    /// Pages of the data region.
    pub fn data_pages(&self) -> usize {
        self.page.header.data_pages as usize
    }

    /// Grant references of the ring pages, in order.
    pub fn ring_refs(&self) -> &[u32] {
        &self.page.refs[..self.ring_pages()]
    }

    /// Grant references of the data pages, in order.
    pub fn data_refs(&self) -> &[u32] {
        &self.page.refs[self.ring_pages()..self.ring_pages() + self.data_pages()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_contract() {
        assert_eq!(
            frontend_dir(5, 0).as_str(),
            "/local/domain/5/device/xenrpc/0"
        );
        assert_eq!(
            backend_dir(1, 5, 2).as_str(),
            "/local/domain/1/backend/xenrpc/5/2"
        );
        assert_eq!(backend_root(1).as_str(), "/local/domain/1/backend/xenrpc");
        assert_eq!(
            key_path(&frontend_dir(5, 0), key::STATE).as_str(),
            "/local/domain/5/device/xenrpc/0/state"
        );
    }

    #[test]
    fn decimal_parsing_is_strict() {
        assert_eq!(parse_decimal(b"0", 10), Ok(0));
        assert_eq!(parse_decimal(b"42", 100), Ok(42));
        assert_eq!(parse_decimal(b"", 10), Err(ValueError::Empty));
        assert_eq!(parse_decimal(b"007", 10), Err(ValueError::NotDecimal));
        assert_eq!(parse_decimal(b"-1", 10), Err(ValueError::NotDecimal));
        assert_eq!(parse_decimal(b" 1", 10), Err(ValueError::NotDecimal));
        assert_eq!(parse_decimal(b"1\0", 10), Err(ValueError::NotDecimal));
        assert_eq!(parse_decimal(b"11", 10), Err(ValueError::TooLarge));
        assert_eq!(
            parse_decimal(b"99999999999999999999", u32::MAX),
            Err(ValueError::TooLarge)
        );
        assert_eq!(parse_domid(b"32752"), Err(ValueError::TooLarge)); // DOMID_FIRST_RESERVED
        assert_eq!(parse_domid(b"32751"), Ok(32751));
    }

    #[test]
    fn frontend_path_must_match_exactly() {
        assert!(check_frontend_path(b"/local/domain/5/device/xenrpc/0", 5, 0).is_ok());
        assert_eq!(
            check_frontend_path(b"/local/domain/6/device/xenrpc/0", 5, 0),
            Err(ValueError::WrongPath)
        );
        assert_eq!(
            check_frontend_path(b"/local/domain/5/device/xenrpc/0/", 5, 0),
            Err(ValueError::WrongPath)
        );
        assert_eq!(
            check_frontend_path(b"/local/domain/0/data", 5, 0),
            Err(ValueError::WrongPath)
        );
        assert!(check_backend_path(b"/local/domain/1/backend/xenrpc/5/0", 1, 5, 0).is_ok());
        assert_eq!(
            check_backend_path(b"/local/domain/2/backend/xenrpc/5/0", 1, 5, 0),
            Err(ValueError::WrongPath)
        );
    }

    #[test]
    fn index_round_trips() {
        let page = Index::build(&[10, 11], &[20, 21, 22]).unwrap();
        let index = Index::parse(&page, MAX_PAGES).unwrap();
        assert_eq!(index.ring_refs(), &[10, 11]);
        assert_eq!(index.data_refs(), &[20, 21, 22]);
    }

    #[test]
    fn index_rejects_bad_pages() {
        let good = Index::build(&[1], &[2]).unwrap();
        let mut bad = good;
        bad[0] ^= 1;
        assert!(matches!(
            Index::parse(&bad, MAX_PAGES),
            Err(IndexError::BadMagic(_))
        ));
        let mut bad = good;
        bad[4] = 2;
        assert_eq!(
            Index::parse(&bad, MAX_PAGES).err(),
            Some(IndexError::BadVersion(2))
        );
        let mut bad = good;
        bad[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            Index::parse(&bad, MAX_PAGES).err(),
            Some(IndexError::BadRingPages(0))
        );
        let mut bad = good;
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Index::parse(&bad, MAX_PAGES),
            Err(IndexError::TooManyPages { .. })
        ));
        // The server's own, smaller limit applies too.
        let big = Index::build(&[1, 2, 3, 4], &[5; 100]).unwrap();
        assert!(matches!(
            Index::parse(&big, 50),
            Err(IndexError::TooManyPages {
                requested: 104,
                limit: 50
            })
        ));
        assert!(Index::build(&[], &[1]).is_err());
        assert!(Index::build(&[1; 4], &[0; MAX_PAGES]).is_err());
    }

    #[test]
    fn arbitrary_index_bytes_never_panic() {
        // A hostile client controls all 4096 bytes: walk a deterministic spread of patterns.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut page = [0u8; 4096];
            for chunk in page.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            page[0..4].copy_from_slice(&INDEX_MAGIC.to_le_bytes());
            page[4..8].copy_from_slice(&INDEX_VERSION.to_le_bytes());
            if let Ok(index) = Index::parse(&page, MAX_PAGES) {
                assert!(index.ring_refs().len() + index.data_refs().len() <= MAX_PAGES);
            }
        }
    }
}
