//! Grant table v1 (`grant_table.h`): the shared entry format, the `GNTTABOP_*` argument
//! structs, typed `GNTST_*` errors, the end-access rule, and a grant reference allocator.

use crate::DomId;
use core::fmt;
use core::mem::{offset_of, size_of};

/// Index of an entry in our grant table, handed to a peer so it can map or copy our frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

/// A mapping handle returned by `GNTTABOP_map_grant_ref`, needed to unmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct GrantHandle(pub u32);

/// One v1 grant table entry (`struct grant_entry_v1`). The table lives in frames shared with
/// Xen; the peer's use shows up asynchronously in `flags`, so the kernel accesses entries only
/// through raw pointers with volatile/atomic operations.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and access bits; written last by the granter (after domid and frame).
    pub flags: u16,
    /// The domain being granted access.
    pub domid: DomId,
    /// The granted frame (machine frame number for a PV granter).
    pub frame: u32,
}
const _: () = assert!(size_of::<GrantEntryV1>() == 8);
const _: () = assert!(offset_of!(GrantEntryV1, flags) == 0);
const _: () = assert!(offset_of!(GrantEntryV1, domid) == 2);
const _: () = assert!(offset_of!(GrantEntryV1, frame) == 4);

/// v1 entries in one 4 KiB grant table frame.
pub const ENTRIES_PER_FRAME_V1: usize = crate::PAGE_SIZE / size_of::<GrantEntryV1>();
const _: () = assert!(ENTRIES_PER_FRAME_V1 == 512);

/// Entries reserved for the toolstack (console, xenstore, ...): never allocate these.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry the toolstack uses to grant our console ring to the console backend.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Reserved entry the toolstack uses to grant our xenstore ring to xenstored.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

// `grant_entry_v1.flags`: the type field (bits 0-1) ...
/// Entry is unused / access revoked.
pub const GTF_INVALID: u16 = 0;
/// Peer may map or copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Peer may transfer a page to us into this entry.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Transitive grant.
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the type field.
pub const GTF_TYPE_MASK: u16 = 3;
// ... and the sub-flags.
/// Peer may only map/copy for reading.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by Xen while the peer has the frame mapped or is copying from it.
pub const GTF_READING: u16 = 1 << 3;
/// Set by Xen while the peer has the frame mapped writable or is copying to it.
pub const GTF_WRITING: u16 = 1 << 4;
/// Cache attribute hints.
pub const GTF_PWT: u16 = 1 << 5;
/// Cache attribute hint: cache disable.
pub const GTF_PCD: u16 = 1 << 6;
/// Cache attribute hint: PAT.
pub const GTF_PAT: u16 = 1 << 7;
/// Sub-page grant (v2 only).
pub const GTF_SUB_PAGE: u16 = 1 << 8;

/// Access a peer is given to a granted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantAccess {
    /// The peer may only read.
    ReadOnly,
    /// The peer may read and write.
    ReadWrite,
}

impl GrantAccess {
    /// The `flags` value that activates an entry with this access.
    pub const fn entry_flags(self) -> u16 {
        match self {
            GrantAccess::ReadOnly => GTF_PERMIT_ACCESS | GTF_READONLY,
            GrantAccess::ReadWrite => GTF_PERMIT_ACCESS,
        }
    }
}

/// The peer still has the frame mapped (or a copy is in flight): access cannot be ended now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantStillInUse {
    /// The entry's flags as read.
    pub flags: u16,
}

impl fmt::Display for GrantStillInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grant still in use by the peer (flags {:#06x}: reading={}, writing={})",
            self.flags,
            self.flags & GTF_READING != 0,
            self.flags & GTF_WRITING != 0
        )
    }
}

/// Whether an entry whose flags currently read `flags` may be revoked (flags swapped to 0).
/// The kernel runs this inside a compare-and-swap loop on the live `flags` word: Xen sets
/// `GTF_READING`/`GTF_WRITING` atomically when the peer maps, so a plain store could revoke
/// a frame the peer is still using.
pub const fn check_revocable(flags: u16) -> Result<(), GrantStillInUse> {
    if flags & (GTF_READING | GTF_WRITING) != 0 {
        Err(GrantStillInUse { flags })
    } else {
        Ok(())
    }
}

/// `GNTTABOP_*` commands (`grant_table_op` hypercall, argument 1).
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// Unmap a previously mapped grant.
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// Tell Xen where our grant table frames are / get their frame numbers.
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// Dump the table to Xen's console (debugging).
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// Transfer a page.
pub const GNTTABOP_TRANSFER: u32 = 4;
/// Copy between granted frames.
pub const GNTTABOP_COPY: u32 = 5;
/// Query the current and maximum table size.
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// Unmap and replace a mapping.
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
/// Select grant table version 1 or 2.
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// Get the version in use.
pub const GNTTABOP_GET_VERSION: u32 = 10;

/// `GNTMAP_*` flags of `gnttab_map_grant_ref.flags`: map for device DMA.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// Map into the caller's page tables at `host_addr` (PV: an L1 table must already cover it).
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// Map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// The mapping is for a user-mode address.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `host_addr` is the machine address of the PTE to update rather than a virtual address.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

/// `struct gnttab_setup_table`: IN dom, nr_frames, frame_list; OUT status, frame numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GnttabSetupTable {
    /// Domain whose table to set up (`DOMID_SELF`).
    pub dom: DomId,
    /// Number of frames wanted.
    pub nr_frames: u32,
    /// `GNTST_*` result.
    pub status: i16,
    /// Guest buffer of `nr_frames` entries that receives the frames' MFNs.
    pub frame_list: *mut u64,
}
const _: () = assert!(size_of::<GnttabSetupTable>() == 24);
const _: () = assert!(offset_of!(GnttabSetupTable, dom) == 0);
const _: () = assert!(offset_of!(GnttabSetupTable, nr_frames) == 4);
const _: () = assert!(offset_of!(GnttabSetupTable, status) == 8);
const _: () = assert!(offset_of!(GnttabSetupTable, frame_list) == 16);

/// `struct gnttab_query_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GnttabQuerySize {
    /// IN: domain (`DOMID_SELF`).
    pub dom: DomId,
    /// OUT: current number of frames.
    pub nr_frames: u32,
    /// OUT: maximum number of frames.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabQuerySize>() == 16);
const _: () = assert!(offset_of!(GnttabQuerySize, dom) == 0);
const _: () = assert!(offset_of!(GnttabQuerySize, nr_frames) == 4);
const _: () = assert!(offset_of!(GnttabQuerySize, max_nr_frames) == 8);
const _: () = assert!(offset_of!(GnttabQuerySize, status) == 12);

/// `struct gnttab_map_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GnttabMapGrantRef {
    /// IN: virtual address to map at (with `GNTMAP_HOST_MAP`).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: the peer's grant reference.
    pub r#ref: u32,
    /// IN: the granting domain.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: u32,
    /// OUT: bus address (with `GNTMAP_DEVICE_MAP`).
    pub dev_bus_addr: u64,
}
const _: () = assert!(size_of::<GnttabMapGrantRef>() == 32);
const _: () = assert!(offset_of!(GnttabMapGrantRef, host_addr) == 0);
const _: () = assert!(offset_of!(GnttabMapGrantRef, flags) == 8);
const _: () = assert!(offset_of!(GnttabMapGrantRef, r#ref) == 12);
const _: () = assert!(offset_of!(GnttabMapGrantRef, dom) == 16);
const _: () = assert!(offset_of!(GnttabMapGrantRef, status) == 18);
const _: () = assert!(offset_of!(GnttabMapGrantRef, handle) == 20);
const _: () = assert!(offset_of!(GnttabMapGrantRef, dev_bus_addr) == 24);

/// `struct gnttab_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GnttabUnmapGrantRef {
    /// IN: the virtual address the grant is mapped at.
    pub host_addr: u64,
    /// IN: bus address (0 unless device-mapped).
    pub dev_bus_addr: u64,
    /// IN: handle from the map operation.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
}
const _: () = assert!(size_of::<GnttabUnmapGrantRef>() == 24);
const _: () = assert!(offset_of!(GnttabUnmapGrantRef, host_addr) == 0);
const _: () = assert!(offset_of!(GnttabUnmapGrantRef, dev_bus_addr) == 8);
const _: () = assert!(offset_of!(GnttabUnmapGrantRef, handle) == 16);
const _: () = assert!(offset_of!(GnttabUnmapGrantRef, status) == 20);

/// `GNTST_okay`: the only success status.
pub const GNTST_OKAY: i16 = 0;

/// A failed grant operation's `GNTST_*` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// `GNTST_general_error` (-1).
    GeneralError,
    /// `GNTST_bad_domain` (-2): unrecognised domain id.
    BadDomain,
    /// `GNTST_bad_gntref` (-3): unrecognised or inappropriate grant reference.
    BadGntref,
    /// `GNTST_bad_handle` (-4): unrecognised or inappropriate handle.
    BadHandle,
    /// `GNTST_bad_virt_addr` (-5): inappropriate virtual address to map.
    BadVirtAddr,
    /// `GNTST_bad_dev_addr` (-6): inappropriate device address to unmap.
    BadDevAddr,
    /// `GNTST_no_device_space` (-7): out of space in the I/O MMU.
    NoDeviceSpace,
    /// `GNTST_permission_denied` (-8): not enough privilege for the operation.
    PermissionDenied,
    /// `GNTST_bad_page` (-9): the page was invalid for the operation.
    BadPage,
    /// `GNTST_bad_copy_arg` (-10): copy arguments cross a page boundary.
    BadCopyArg,
    /// `GNTST_address_too_big` (-11): transfer page address too large.
    AddressTooBig,
    /// `GNTST_eagain` (-12): operation not done; try again.
    Again,
    /// `GNTST_no_space` (-13): out of space (handles etc).
    NoSpace,
    /// A status this ABI version does not define.
    Unknown(i16),
}

impl GrantError {
    /// Maps a non-zero `GNTST_*` status to its error.
    pub const fn from_status(status: i16) -> GrantError {
        match status {
            -1 => GrantError::GeneralError,
            -2 => GrantError::BadDomain,
            -3 => GrantError::BadGntref,
            -4 => GrantError::BadHandle,
            -5 => GrantError::BadVirtAddr,
            -6 => GrantError::BadDevAddr,
            -7 => GrantError::NoDeviceSpace,
            -8 => GrantError::PermissionDenied,
            -9 => GrantError::BadPage,
            -10 => GrantError::BadCopyArg,
            -11 => GrantError::AddressTooBig,
            -12 => GrantError::Again,
            -13 => GrantError::NoSpace,
            other => GrantError::Unknown(other),
        }
    }

    /// The raw `GNTST_*` value.
    pub const fn status(self) -> i16 {
        match self {
            GrantError::GeneralError => -1,
            GrantError::BadDomain => -2,
            GrantError::BadGntref => -3,
            GrantError::BadHandle => -4,
            GrantError::BadVirtAddr => -5,
            GrantError::BadDevAddr => -6,
            GrantError::NoDeviceSpace => -7,
            GrantError::PermissionDenied => -8,
            GrantError::BadPage => -9,
            GrantError::BadCopyArg => -10,
            GrantError::AddressTooBig => -11,
            GrantError::Again => -12,
            GrantError::NoSpace => -13,
            GrantError::Unknown(raw) => raw,
        }
    }

    /// Xen's message for the status (`GNTTABOP_error_msgs`).
    pub const fn message(self) -> &'static str {
        match self {
            GrantError::GeneralError => "general error",
            GrantError::BadDomain => "invalid domain",
            GrantError::BadGntref => "invalid grant reference",
            GrantError::BadHandle => "invalid mapping handle",
            GrantError::BadVirtAddr => "invalid virtual address",
            GrantError::BadDevAddr => "invalid device address",
            GrantError::NoDeviceSpace => "no spare translation slot in the I/O MMU",
            GrantError::PermissionDenied => "permission denied",
            GrantError::BadPage => "bad page",
            GrantError::BadCopyArg => "copy arguments cross page boundary",
            GrantError::AddressTooBig => "page address size too large",
            GrantError::Again => "operation not done; try again",
            GrantError::NoSpace => "out of space",
            GrantError::Unknown(_) => "unknown grant status",
        }
    }
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GNTST {}: {}", self.status(), self.message())
    }
}

/// Turns an operation's `status` field into a `Result`.
pub const fn check_status(status: i16) -> Result<(), GrantError> {
    if status == GNTST_OKAY {
        Ok(())
    } else {
        Err(GrantError::from_status(status))
    }
}

/// Why a grant reference could not be returned to the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRefError {
    /// The reference is one of the toolstack's reserved entries (0..8).
    Reserved(GrantRef),
    /// The reference is beyond the allocator's table size.
    OutOfRange(GrantRef),
    /// The reference is already free: a double free.
    NotAllocated(GrantRef),
}

impl fmt::Display for GrantRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantRefError::Reserved(r) => write!(f, "grant ref {} is reserved", r.0),
            GrantRefError::OutOfRange(r) => write!(f, "grant ref {} is out of range", r.0),
            GrantRefError::NotAllocated(r) => write!(f, "grant ref {} is not allocated", r.0),
        }
    }
}

/// Free-list marker: end of the list.
const LIST_END: u32 = u32::MAX;
/// Free-list marker: the entry is allocated.
const IN_USE: u32 = u32::MAX - 1;
/// Free-list marker: the entry is reserved or beyond the usable size; never handed out.
const UNUSABLE: u32 = u32::MAX - 2;

/// A free list over the grant references of a table with up to `CAPACITY` entries.
/// Freed references go to the back of the list (FIFO), so a just-revoked reference is
/// reused as late as possible; a peer holding a stale reference then hits an invalid entry
/// rather than a new grant. Fixed size and `const`-constructible, so it can live in a static.
pub struct GrantRefAllocator<const CAPACITY: usize> {
    /// For a free entry: the next free entry or `LIST_END`; otherwise a marker.
    next: [u32; CAPACITY],
    head: u32,
    tail: u32,
    free_count: usize,
    usable: usize,
}

impl<const CAPACITY: usize> GrantRefAllocator<CAPACITY> {
    /// An allocator for a table of `usable_entries` entries (at most `CAPACITY`; clamped),
    /// with every non-reserved reference free.
    pub const fn new(usable_entries: usize) -> Self {
        let usable = if usable_entries < CAPACITY {
            usable_entries
        } else {
            CAPACITY
        };
        // The free list indexes with u32 and keeps three marker values out of range.
        assert!(CAPACITY < UNUSABLE as usize);
        let mut next = [UNUSABLE; CAPACITY];
        let first = GNTTAB_NR_RESERVED_ENTRIES as usize;
        let mut index = first;
        while index < usable {
            next[index] = if index + 1 < usable {
                (index + 1) as u32
            } else {
                LIST_END
            };
            index += 1;
        }
        let (head, tail, free_count) = if usable > first {
            (first as u32, (usable - 1) as u32, usable - first)
        } else {
            (LIST_END, LIST_END, 0)
        };
        GrantRefAllocator {
            next,
            head,
            tail,
            free_count,
            usable,
        }
    }

    /// Takes a free reference, or `None` when all are in use.
    pub fn alloc(&mut self) -> Option<GrantRef> {
        if self.head == LIST_END {
            return None;
        }
        let taken = self.head;
        let successor = self.next[taken as usize];
        self.head = successor;
        if successor == LIST_END {
            self.tail = LIST_END;
        }
        self.next[taken as usize] = IN_USE;
        self.free_count -= 1;
        Some(GrantRef(taken))
    }

    /// Returns a reference; the caller must have ended the peer's access first.
    pub fn free(&mut self, grant: GrantRef) -> Result<(), GrantRefError> {
        let index = grant.0 as usize;
        if grant.0 < GNTTAB_NR_RESERVED_ENTRIES {
            return Err(GrantRefError::Reserved(grant));
        }
        if index >= self.usable {
            return Err(GrantRefError::OutOfRange(grant));
        }
        if self.next[index] != IN_USE {
            return Err(GrantRefError::NotAllocated(grant));
        }
        self.next[index] = LIST_END;
        if self.tail == LIST_END {
            self.head = grant.0;
        } else {
            self.next[self.tail as usize] = grant.0;
        }
        self.tail = grant.0;
        self.free_count += 1;
        Ok(())
    }

    /// Whether `grant` is currently handed out.
    pub fn is_allocated(&self, grant: GrantRef) -> bool {
        (grant.0 as usize) < self.usable && self.next[grant.0 as usize] == IN_USE
    }

    /// Number of references that can still be allocated.
    pub fn free_count(&self) -> usize {
        self.free_count
    }

    /// Number of table entries this allocator covers (including the reserved ones).
    pub fn usable_entries(&self) -> usize {
        self.usable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_okay_is_ok() {
        assert_eq!(check_status(GNTST_OKAY), Ok(()));
        for raw in -13..=-1 {
            let err = check_status(raw).unwrap_err();
            assert_eq!(err.status(), raw);
            assert!(!matches!(err, GrantError::Unknown(_)), "{raw}");
        }
        assert_eq!(check_status(-99), Err(GrantError::Unknown(-99)));
        assert_eq!(check_status(5), Err(GrantError::Unknown(5)));
        assert_eq!(GrantError::from_status(-12), GrantError::Again);
        assert_eq!(GrantError::from_status(-3), GrantError::BadGntref);
    }

    #[test]
    fn access_flags_match_header() {
        assert_eq!(GrantAccess::ReadWrite.entry_flags(), 0x1);
        assert_eq!(GrantAccess::ReadOnly.entry_flags(), 0x5);
    }

    #[test]
    fn revocation_refused_while_peer_uses_frame() {
        assert!(check_revocable(GTF_PERMIT_ACCESS).is_ok());
        assert!(check_revocable(GTF_PERMIT_ACCESS | GTF_READONLY).is_ok());
        assert!(check_revocable(GTF_INVALID).is_ok());
        let err = check_revocable(GTF_PERMIT_ACCESS | GTF_READING).unwrap_err();
        assert_eq!(err.flags, GTF_PERMIT_ACCESS | GTF_READING);
        assert!(check_revocable(GTF_PERMIT_ACCESS | GTF_WRITING).is_err());
        assert!(check_revocable(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING).is_err());
    }

    #[test]
    fn allocator_never_hands_out_reserved_refs() {
        let mut refs = GrantRefAllocator::<64>::new(64);
        assert_eq!(refs.free_count(), 56);
        let mut seen = [false; 64];
        while let Some(r) = refs.alloc() {
            assert!(r.0 >= GNTTAB_NR_RESERVED_ENTRIES, "{r:?}");
            assert!(!seen[r.0 as usize], "handed out twice: {r:?}");
            seen[r.0 as usize] = true;
        }
        assert_eq!(seen.iter().filter(|s| **s).count(), 56);
        assert_eq!(refs.free_count(), 0);
        assert_eq!(refs.alloc(), None);
    }

    #[test]
    fn allocator_reuses_freed_refs_last() {
        let mut refs = GrantRefAllocator::<16>::new(16);
        let a = refs.alloc().unwrap();
        let b = refs.alloc().unwrap();
        assert_eq!((a, b), (GrantRef(8), GrantRef(9)));
        refs.free(a).unwrap();
        // 10..16 come before the freed 8.
        let order: Vec<u32> = core::iter::from_fn(|| refs.alloc()).map(|r| r.0).collect();
        assert_eq!(order, vec![10, 11, 12, 13, 14, 15, 8]);
        refs.free(GrantRef(13)).unwrap();
        refs.free(GrantRef(9)).unwrap();
        assert_eq!(refs.alloc(), Some(GrantRef(13)));
        assert_eq!(refs.alloc(), Some(GrantRef(9)));
        assert_eq!(refs.alloc(), None);
    }

    #[test]
    fn allocator_rejects_bad_frees() {
        let mut refs = GrantRefAllocator::<32>::new(20);
        assert_eq!(refs.usable_entries(), 20);
        let r = refs.alloc().unwrap();
        assert!(refs.is_allocated(r));
        assert_eq!(
            refs.free(GrantRef(1)),
            Err(GrantRefError::Reserved(GrantRef(1)))
        );
        assert_eq!(
            refs.free(GrantRef(20)),
            Err(GrantRefError::OutOfRange(GrantRef(20)))
        );
        assert_eq!(
            refs.free(GrantRef(9)),
            Err(GrantRefError::NotAllocated(GrantRef(9)))
        );
        refs.free(r).unwrap();
        assert!(!refs.is_allocated(r));
        assert_eq!(refs.free(r), Err(GrantRefError::NotAllocated(r)));
        assert_eq!(refs.free_count(), 12);
    }

    #[test]
    fn allocator_sizes_clamp_and_tiny_tables_are_empty() {
        let mut tiny = GrantRefAllocator::<8>::new(8);
        assert_eq!(tiny.free_count(), 0);
        assert_eq!(tiny.alloc(), None);
        let clamped = GrantRefAllocator::<10>::new(1000);
        assert_eq!(clamped.usable_entries(), 10);
        assert_eq!(clamped.free_count(), 2);
    }

    #[test]
    fn allocator_works_in_a_static_context() {
        static REFS: GrantRefAllocator<{ 2 * ENTRIES_PER_FRAME_V1 }> =
            GrantRefAllocator::new(2 * ENTRIES_PER_FRAME_V1);
        assert_eq!(REFS.free_count(), 1024 - 8);
    }
}
