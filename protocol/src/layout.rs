//! Wire layouts shared with the peer: the ring region's control block, the slot headers, the
//! status codes and the ring geometry. Everything here is `#[repr(C)]` with compile-time size and
//! offset checks; nothing here is ever referenced in place in shared memory (see
//! [`crate::region`]): slots are copied out into these types, and these types are copied in.

use core::mem::{offset_of, size_of};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Page size of both transports (Xen x86 pages, Linux x86-64 pages).
pub const PAGE_SIZE: usize = 4096;

/// Bytes of one request or response slot.
pub const SLOT_SIZE: usize = 256;

/// Bytes of a slot header (request and response headers have the same size).
pub const HEADER_SIZE: usize = 64;

/// Bytes of inline arguments (request) or inline result (response) a slot carries.
pub const INLINE_CAPACITY: usize = SLOT_SIZE - HEADER_SIZE;

/// Smallest ring: one page of slots per ring.
pub const MIN_SLOTS: u32 = (PAGE_SIZE / SLOT_SIZE) as u32;

/// Largest ring accepted (64 pages per ring).
pub const MAX_SLOTS: u32 = 1024;

/// `"XRPC"` little-endian: written by the client when it lays out a fresh ring region.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"XRPC");

/// Layout revision of the ring region; bumped on any incompatible change (2: `client_alive`,
/// `ResponseHeader::server_time_ns`; 3: sequence-tagged slots instead of producer indices,
/// each index and threshold on a block of its own).
pub const LAYOUT_VERSION: u32 = 3;

/// What the client keeps in [`ControlBlock::client_alive`] while it is there. Only the low byte
/// is set, so clearing the byte at [`ctrl::CLIENT_ALIVE`] (what Linux's gntalloc unmap notify
/// does when the client's process lets go of its pages) makes the field read 0.
pub const CLIENT_ALIVE: u32 = 1;

/// Request flag: the client wants no response.
pub const FLAG_ONE_WAY: u32 = 1 << 0;

/// All request flags this revision knows; any other bit gets `BadArguments`.
pub const KNOWN_REQUEST_FLAGS: u32 = FLAG_ONE_WAY;

/// Bytes of one block of the control page: two cache lines, so that the adjacent-line
/// prefetcher does not pull a neighbouring block's line in with it.
pub const CONTROL_BLOCK_SPACING: usize = 128;

/// The first page of a ring region. Never referenced in place: the offsets of its fields are
/// what the code uses (through [`crate::region::RegionView`]'s atomic index accessors).
///
/// There are no producer indices: a slot says itself that it holds a published entry, by its
/// header's `seq` (see [`RequestHeader::seq`]), so a call moves one cache line each way, the
/// one that carries it. What is left here is read seldom by the other side, and each field
/// sits on a block of its own (128 bytes) so that a write to one never takes a line the other
/// side reads at every call:
/// - the consumer indices, written at every call by the consumer and read by the producer
///   only when the free slots it last counted have run out;
/// - the event thresholds (as in Xen's `io/ring.h`), written only by a side about to sleep
///   and read by the other after every publish, so while both spin they stay in both caches.
#[repr(C)]
pub struct ControlBlock {
    /// Written once by the client before the server attaches.
    pub magic: u32,
    /// Written once by the client: the [`LAYOUT_VERSION`] it laid the region out by.
    pub layout_version: u32,
    /// Written once by the client: slots per ring (must equal the agreed geometry's).
    pub slots: u32,
    /// The value all indices start from (any value; lets tests start near the wrap).
    pub start_index: u32,
    _pad0: [u8; CONTROL_BLOCK_SPACING - 16],
    /// Client-written: responses consumed so far (free-running, wraps).
    pub rsp_cons: u32,
    _pad1: [u8; CONTROL_BLOCK_SPACING - 4],
    /// Client-written before it sleeps: "notify me when you publish response `rsp_event - 1`".
    pub rsp_event: u32,
    /// Client-written: [`CLIENT_ALIVE`] while the client holds its pages; 0 once it let go
    /// (the Xen client registers a gntalloc unmap notify that clears it and sends an event).
    pub client_alive: u32,
    _pad2: [u8; CONTROL_BLOCK_SPACING - 8],
    /// Server-written: requests consumed so far (their slots may be reused).
    pub req_cons: u32,
    _pad3: [u8; CONTROL_BLOCK_SPACING - 4],
    /// Server-written before it sleeps: "notify me when you publish request `req_event - 1`".
    pub req_event: u32,
    _pad4: [u8; PAGE_SIZE - 4 * CONTROL_BLOCK_SPACING - 4],
}

const _: () = assert!(size_of::<ControlBlock>() == PAGE_SIZE);
const _: () = assert!(offset_of!(ControlBlock, magic) == 0);
const _: () = assert!(offset_of!(ControlBlock, layout_version) == 4);
const _: () = assert!(offset_of!(ControlBlock, slots) == 8);
const _: () = assert!(offset_of!(ControlBlock, start_index) == 12);
const _: () = assert!(offset_of!(ControlBlock, rsp_cons) == 128);
const _: () = assert!(offset_of!(ControlBlock, rsp_event) == 256);
const _: () = assert!(offset_of!(ControlBlock, client_alive) == 260);
const _: () = assert!(offset_of!(ControlBlock, req_cons) == 384);
const _: () = assert!(offset_of!(ControlBlock, req_event) == 512);

/// Byte offsets of the control-block fields inside the ring region.
pub mod ctrl {
    use super::ControlBlock;
    use core::mem::offset_of;
    /// Offset of [`ControlBlock::magic`] (0).
    pub const MAGIC: usize = offset_of!(ControlBlock, magic);
    /// Offset of [`ControlBlock::layout_version`] (4).
    pub const LAYOUT_VERSION: usize = offset_of!(ControlBlock, layout_version);
    /// Offset of [`ControlBlock::slots`] (8).
    pub const SLOTS: usize = offset_of!(ControlBlock, slots);
    /// Offset of [`ControlBlock::start_index`] (12).
    pub const START_INDEX: usize = offset_of!(ControlBlock, start_index);
    /// Offset of [`ControlBlock::rsp_cons`] (128, the client's block).
    pub const RSP_CONS: usize = offset_of!(ControlBlock, rsp_cons);
    /// Offset of [`ControlBlock::rsp_event`] (256, the client's seldom-written block).
    pub const RSP_EVENT: usize = offset_of!(ControlBlock, rsp_event);
    /// Offset of [`ControlBlock::client_alive`] (260).
    pub const CLIENT_ALIVE: usize = offset_of!(ControlBlock, client_alive);
    /// Offset of [`ControlBlock::req_cons`] (384, the server's block).
    pub const REQ_CONS: usize = offset_of!(ControlBlock, req_cons);
    /// Offset of [`ControlBlock::req_event`] (512, the server's seldom-written block).
    pub const REQ_EVENT: usize = offset_of!(ControlBlock, req_event);
}

/// The `seq` a slot holds while it does not hold entry `index` (the value of the slot's
/// previous lap, `index - slots`): what the client lays every slot out with, and what every
/// header is written with until its entry is published.
#[inline]
pub const fn unpublished_seq(index: u32, slots: u32) -> u32 {
    index.wrapping_sub(slots)
}

/// A reference to bytes in the connection's data region: `len` bytes at `offset`.
/// `len == 0` means "none" and then `offset` must be 0 too.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct OolRef {
    /// Byte offset of the window from the start of the data region.
    pub offset: u32,
    /// Length of the window in bytes; 0 = no window.
    pub len: u32,
}

impl OolRef {
    /// No window (offset 0, length 0).
    pub const NONE: OolRef = OolRef { offset: 0, len: 0 };

    /// The window of `len` bytes at `offset` (not checked against any region here).
    pub const fn new(offset: u32, len: u32) -> Self {
        OolRef { offset, len }
    }
}

const _: () = assert!(size_of::<OolRef>() == 8);

/// Header of a request slot; `inline_len` bytes of inline arguments follow it in the slot.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RequestHeader {
    /// Chosen by the client; echoed in the response.
    pub call_id: u64,
    /// Absolute deadline in nanoseconds of the transport's clock; 0 = none.
    pub deadline_ns: u64,
    /// The service called.
    pub service_id: u32,
    /// The method called, by id within the service.
    pub method_id: u32,
    /// Interface version the client was built against; must equal the server's.
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Bytes of inline arguments after the header, at most [`INLINE_CAPACITY`] (192).
    pub inline_len: u32,
    /// The request's free-running ring index once it is published; until then the slot's
    /// previous one ([`unpublished_seq`]). Written last, alone, with release ordering (see
    /// [`slot_seq`]): the server takes the slot at its index when `seq` equals that index.
    pub seq: u32,
    /// Out-of-line arguments in the data region.
    pub ool_args: OolRef,
    /// Where the handler writes an out-of-line result, in the data region.
    pub ool_result: OolRef,
    /// Must be zero.
    pub reserved1: [u32; 2],
}

const _: () = assert!(size_of::<RequestHeader>() == HEADER_SIZE);
const _: () = assert!(offset_of!(RequestHeader, call_id) == 0);
const _: () = assert!(offset_of!(RequestHeader, deadline_ns) == 8);
const _: () = assert!(offset_of!(RequestHeader, service_id) == 16);
const _: () = assert!(offset_of!(RequestHeader, method_id) == 20);
const _: () = assert!(offset_of!(RequestHeader, version) == 24);
const _: () = assert!(offset_of!(RequestHeader, flags) == 28);
const _: () = assert!(offset_of!(RequestHeader, inline_len) == 32);
const _: () = assert!(offset_of!(RequestHeader, seq) == slot_seq::REQUEST);
const _: () = assert!(offset_of!(RequestHeader, ool_args) == 40);
const _: () = assert!(offset_of!(RequestHeader, ool_result) == 48);
const _: () = assert!(offset_of!(RequestHeader, reserved1) == 56);

/// Header of a response slot; `inline_len` bytes of inline result follow it in the slot.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ResponseHeader {
    /// The `call_id` of the request answered.
    pub call_id: u64,
    /// A [`Status`] value.
    pub status: u32,
    /// Bytes of inline result after the header, at most [`INLINE_CAPACITY`] (192).
    pub inline_len: u32,
    /// Bytes the handler wrote into the request's `ool_result` window (from its start).
    pub ool_written: u32,
    /// The response's free-running ring index once it is published, as
    /// [`RequestHeader::seq`]: the client takes the slot at its index when `seq` equals it.
    pub seq: u32,
    /// The server's clock (the one `deadline_ns` is measured against) shortly before it wrote
    /// this response (a recent reading: [`crate::Clock::recent_ns`]): lets a client that
    /// cannot read that clock translate its own deadlines.
    pub server_time_ns: u64,
    /// Must be zero.
    pub reserved: [u32; 8],
}

const _: () = assert!(size_of::<ResponseHeader>() == HEADER_SIZE);
const _: () = assert!(offset_of!(ResponseHeader, call_id) == 0);
const _: () = assert!(offset_of!(ResponseHeader, status) == 8);
const _: () = assert!(offset_of!(ResponseHeader, inline_len) == 12);
const _: () = assert!(offset_of!(ResponseHeader, ool_written) == 16);
const _: () = assert!(offset_of!(ResponseHeader, seq) == slot_seq::RESPONSE);
const _: () = assert!(offset_of!(ResponseHeader, server_time_ns) == 24);

/// Byte offsets, within a slot, of the `seq` word of its header: the word a side polls, and
/// stores last, alone, with release ordering.
pub mod slot_seq {
    /// Offset of [`super::RequestHeader::seq`] in a request slot (36).
    pub const REQUEST: usize = 36;
    /// Offset of [`super::ResponseHeader::seq`] in a response slot (20).
    pub const RESPONSE: usize = 20;
}

/// Outcome of a call, carried in the response header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The handler ran and succeeded; the response carries its result.
    Ok = 0,
    /// No service with the call's service id is registered.
    UnknownService = 1,
    /// The service has no method with the call's method id.
    UnknownMethod = 2,
    /// The call's interface version is not the service's.
    VersionMismatch = 3,
    /// The request is malformed (unknown flags, reserved fields not zero, a bad window,
    /// inline arguments not exactly the method's type) or the handler refused its arguments.
    BadArguments = 4,
    /// Inline arguments over [`INLINE_CAPACITY`] bytes, a result that does not fit its window,
    /// or a handler asking to move more than [`MAX_CALL_COPY`](crate::MAX_CALL_COPY) bytes.
    TooLarge = 5,
    /// The deadline had passed before dispatch; the handler did not run.
    DeadlineExceeded = 6,
    /// The handler is out of capacity (e.g. a kv quota).
    Busy = 7,
    /// The handler failed (in the service VM: it faulted, panicked or wrote a reply no honest
    /// handler writes).
    HandlerFault = 8,
    /// The registry's access check refused the caller's peer id for this service.
    AccessDenied = 9,
    /// The handler ran past its CPU budget and was stopped (the service VM: see
    /// `docs/protected-execution.md`); what it did before is undone with its domain's reset.
    BudgetExceeded = 10,
}

impl Status {
    /// Number of status values (for per-status counters).
    pub const COUNT: usize = 11;

    /// Every status, in wire order (`ALL[s.index()] == s`).
    pub const ALL: [Status; Status::COUNT] = [
        Status::Ok,
        Status::UnknownService,
        Status::UnknownMethod,
        Status::VersionMismatch,
        Status::BadArguments,
        Status::TooLarge,
        Status::DeadlineExceeded,
        Status::Busy,
        Status::HandlerFault,
        Status::AccessDenied,
        Status::BudgetExceeded,
    ];

    /// The status for a wire value, `None` for a value no revision defines.
    #[inline]
    pub const fn from_wire(value: u32) -> Option<Status> {
        if (value as usize) < Status::COUNT {
            Some(Status::ALL[value as usize])
        } else {
            None
        }
    }

    /// The value carried in [`ResponseHeader::status`].
    #[inline]
    pub const fn to_wire(self) -> u32 {
        self as u32
    }

    /// Index into per-status counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The variant's name as written here (`BadArguments`): what the CLI prints and scripts
    /// match ("server answered BadArguments").
    pub const fn ident(self) -> &'static str {
        match self {
            Status::Ok => "Ok",
            Status::UnknownService => "UnknownService",
            Status::UnknownMethod => "UnknownMethod",
            Status::VersionMismatch => "VersionMismatch",
            Status::BadArguments => "BadArguments",
            Status::TooLarge => "TooLarge",
            Status::DeadlineExceeded => "DeadlineExceeded",
            Status::Busy => "Busy",
            Status::HandlerFault => "HandlerFault",
            Status::AccessDenied => "AccessDenied",
            Status::BudgetExceeded => "BudgetExceeded",
        }
    }

    /// The status whose [`Status::ident`] is `ident`.
    pub fn from_ident(ident: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.ident() == ident)
    }

    /// A short name for logs and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UnknownService => "unknown service",
            Status::UnknownMethod => "unknown method",
            Status::VersionMismatch => "version mismatch",
            Status::BadArguments => "bad arguments",
            Status::TooLarge => "too large",
            Status::DeadlineExceeded => "deadline exceeded",
            Status::Busy => "busy",
            Status::HandlerFault => "handler fault",
            Status::AccessDenied => "access denied",
            Status::BudgetExceeded => "CPU budget exceeded",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Size of a connection's rings, agreed out of band at connection setup and held privately by
/// both sides (never read back from shared memory to size anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    slots: u32,
}

/// Why a ring geometry or a region does not fit. Each variant's doc comment is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// {0} ring slots: the count must be a power of two in [`MIN_SLOTS`]..=[`MAX_SLOTS`].
    BadSlotCount(u32),
    /// The ring region has {have} bytes, the geometry needs {needed}.
    RingRegionTooSmall {
        /// Bytes the geometry needs ([`RingGeometry::region_bytes`]).
        needed: usize,
        /// Bytes the ring region has.
        have: usize,
    },
}

impl core::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            GeometryError::BadSlotCount(slots) => write!(
                f,
                "{slots} ring slots: the count must be a power of two in {MIN_SLOTS}..={MAX_SLOTS}"
            ),
            GeometryError::RingRegionTooSmall { needed, have } => write!(
                f,
                "the ring region has {have} bytes, the geometry needs {needed}"
            ),
        }
    }
}

impl core::error::Error for GeometryError {}

impl RingGeometry {
    /// `slots` requests and `slots` responses; a power of two in `MIN_SLOTS..=MAX_SLOTS`.
    pub const fn new(slots: u32) -> Result<Self, GeometryError> {
        if slots.is_power_of_two() && slots >= MIN_SLOTS && slots <= MAX_SLOTS {
            Ok(RingGeometry { slots })
        } else {
            Err(GeometryError::BadSlotCount(slots))
        }
    }

    /// Slots per ring (each of the request and response rings has this many).
    #[inline]
    pub const fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes of one ring (request or response).
    #[inline]
    pub const fn ring_bytes(&self) -> usize {
        self.slots as usize * SLOT_SIZE
    }

    /// Bytes the ring region needs: control page + request ring + response ring.
    pub const fn region_bytes(&self) -> usize {
        PAGE_SIZE + 2 * self.ring_bytes()
    }

    /// Pages the ring region needs.
    pub const fn region_pages(&self) -> usize {
        self.region_bytes() / PAGE_SIZE
    }

    /// The geometry whose ring region is exactly `pages` pages, if any (slot counts are
    /// powers of two, so at most one matches): what a server derives from a client's index
    /// page.
    pub fn for_region_pages(pages: usize) -> Option<RingGeometry> {
        (MIN_SLOTS.trailing_zeros()..=MAX_SLOTS.trailing_zeros())
            .filter_map(|shift| RingGeometry::new(1u32 << shift).ok())
            .find(|g| g.region_pages() == pages)
    }

    /// Offset of request slot for free-running index `idx`.
    #[inline]
    pub const fn request_slot_offset(&self, idx: u32) -> usize {
        PAGE_SIZE + (idx & (self.slots - 1)) as usize * SLOT_SIZE
    }

    /// Offset of response slot for free-running index `idx`.
    #[inline]
    pub const fn response_slot_offset(&self, idx: u32) -> usize {
        PAGE_SIZE + self.ring_bytes() + (idx & (self.slots - 1)) as usize * SLOT_SIZE
    }

    /// Offset of the sequence word of the request slot for index `idx`.
    #[inline]
    pub const fn request_seq_offset(&self, idx: u32) -> usize {
        self.request_slot_offset(idx) + slot_seq::REQUEST
    }

    /// Offset of the sequence word of the response slot for index `idx`.
    #[inline]
    pub const fn response_seq_offset(&self, idx: u32) -> usize {
        self.response_slot_offset(idx) + slot_seq::RESPONSE
    }
}

/// Why a connection could not be set up over the given memory. Each variant's doc comment is
/// its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// {0}
    Geometry(GeometryError),
    /// {0}
    Region(crate::region::RegionError),
    /// The ring region starts with {0:#010x}, not the ring magic [`RING_MAGIC`] (server side).
    BadMagic(u32),
    /// The ring region was laid out by layout revision {0}, not [`LAYOUT_VERSION`] (server
    /// side).
    LayoutVersionMismatch(u32),
    /// The ring region claims {found} slots, {agreed} were agreed (server side).
    SlotCountMismatch {
        /// Slots per ring of the geometry agreed out of band.
        agreed: u32,
        /// Slots per ring the control block says.
        found: u32,
    },
    /// An in-flight cap of {0} is outside 1..=min(slots, `MAX_IN_FLIGHT`) (client side).
    BadInFlightCap(usize),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            SetupError::Geometry(e) => write!(f, "{e}"),
            SetupError::Region(e) => write!(f, "{e}"),
            SetupError::BadMagic(found) => write!(
                f,
                "the ring region starts with {found:#010x}, not the ring magic {RING_MAGIC:#010x}"
            ),
            SetupError::LayoutVersionMismatch(found) => write!(
                f,
                "the ring region was laid out by layout revision {found}, not {LAYOUT_VERSION}"
            ),
            SetupError::SlotCountMismatch { agreed, found } => write!(
                f,
                "the ring region claims {found} slots, {agreed} were agreed"
            ),
            SetupError::BadInFlightCap(cap) => write!(
                f,
                "an in-flight cap of {cap} is outside 1..=min(slots, {})",
                crate::client::MAX_IN_FLIGHT
            ),
        }
    }
}

impl core::error::Error for SetupError {}

impl From<GeometryError> for SetupError {
    fn from(e: GeometryError) -> Self {
        SetupError::Geometry(e)
    }
}

impl From<crate::region::RegionError> for SetupError {
    fn from(e: crate::region::RegionError) -> Self {
        SetupError::Region(e)
    }
}

impl RingGeometry {
    /// Checks that a ring region of `len` bytes is large enough for this geometry.
    pub const fn check_region_len(&self, len: usize) -> Result<(), GeometryError> {
        if len < self.region_bytes() {
            Err(GeometryError::RingRegionTooSmall {
                needed: self.region_bytes(),
                have: len,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "std")]
    #[test]
    fn status_idents_are_the_variant_names() {
        for status in Status::ALL {
            assert_eq!(status.ident(), std::format!("{status:?}"));
            assert_eq!(Status::from_ident(status.ident()), Some(status));
        }
        assert_eq!(Status::from_ident("bad arguments"), None);
    }

    #[cfg(feature = "std")]
    #[test]
    fn setup_errors_read_as_sentences() {
        use std::string::ToString;
        assert_eq!(
            SetupError::from(GeometryError::BadSlotCount(24)).to_string(),
            "24 ring slots: the count must be a power of two in 16..=1024"
        );
        assert_eq!(
            SetupError::BadMagic(0x1234).to_string(),
            "the ring region starts with 0x00001234, not the ring magic 0x43505258"
        );
        assert_eq!(
            SetupError::SlotCountMismatch {
                agreed: 32,
                found: 64
            }
            .to_string(),
            "the ring region claims 64 slots, 32 were agreed"
        );
    }

    #[test]
    fn geometry_accepts_only_page_multiples_of_power_of_two() {
        assert!(RingGeometry::new(16).is_ok());
        assert_eq!(
            RingGeometry::for_region_pages(5),
            RingGeometry::new(32).ok()
        );
        assert_eq!(RingGeometry::for_region_pages(4), None);
        assert!(RingGeometry::new(1024).is_ok());
        assert_eq!(RingGeometry::new(8), Err(GeometryError::BadSlotCount(8)));
        assert_eq!(RingGeometry::new(24), Err(GeometryError::BadSlotCount(24)));
        assert_eq!(
            RingGeometry::new(2048),
            Err(GeometryError::BadSlotCount(2048))
        );
        assert_eq!(RingGeometry::new(0), Err(GeometryError::BadSlotCount(0)));
        let g = RingGeometry::new(32).unwrap();
        assert_eq!(g.region_bytes(), 4096 + 2 * 32 * 256);
        assert_eq!(g.region_pages(), 5);
        assert_eq!(g.request_slot_offset(33), 4096 + 256);
        assert_eq!(g.response_slot_offset(31), 4096 + 32 * 256 + 31 * 256);
    }

    #[test]
    fn status_round_trips_and_rejects_unknown() {
        for s in Status::ALL {
            assert_eq!(Status::from_wire(s.to_wire()), Some(s));
        }
        assert_eq!(Status::from_wire(Status::COUNT as u32), None);
        assert_eq!(Status::from_wire(u32::MAX), None);
    }
}
