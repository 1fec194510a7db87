//! Grant tables (v1): our table, through which we let one other domain map one of our frames,
//! and the mapping of other domains' grants into our foreign-mapping window.
//!
//! The table frames are shared with Xen, which sets `GTF_reading`/`GTF_writing` in an entry's
//! flags while the grantee has the frame mapped; entries are therefore only touched through
//! raw pointers, with the flags word accessed atomically. Ending access is a compare-and-swap
//! that refuses while either bit is set ([`xen_abi::grant::check_revocable`]), so a frame is
//! never reused while a peer can still reach it.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{fence, AtomicU16, Ordering};

use spin::Mutex;
use xen_abi::grant::{
    check_revocable, check_status, GnttabMapGrantRef, GnttabQuerySize, GnttabSetupTable,
    GnttabUnmapGrantRef, GrantAccess, GrantEntryV1, GrantError, GrantHandle, GrantRef,
    GrantRefAllocator, GrantRefError, GrantStillInUse, ENTRIES_PER_FRAME_V1, GNTMAP_HOST_MAP,
    GNTMAP_READONLY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE, GNTTABOP_SETUP_TABLE,
    GNTTABOP_UNMAP_GRANT_REF,
};
use xen_abi::pte::Mfn;
use xen_abi::{DomId, DOMID_SELF};

use super::hypercall::{self, XenError};
use crate::mm::{self, StaticPage};

/// Frames of our grant table: 4 × 512 entries (8 reserved for the toolstack).
const TABLE_FRAMES: usize = 4;
const TABLE_ENTRIES: usize = TABLE_FRAMES * ENTRIES_PER_FRAME_V1;

/// Bounded retries of the end-access compare-and-swap when Xen changes the flags under us
/// without setting reading/writing (it never should; a bound keeps a hostile change finite).
const END_ACCESS_CAS_ATTEMPTS: u32 = 64;

/// Image pages remapped onto the table frames Xen gives us; contiguous, so entry `i` is at
/// byte `8 * i` of the first.
static TABLE_PAGES: [StaticPage; TABLE_FRAMES] = [const { StaticPage::new() }; TABLE_FRAMES];

struct GrantTable {
    refs: GrantRefAllocator<TABLE_ENTRIES>,
    entries: *mut GrantEntryV1,
}

// SAFETY: the entry pointer is only used under the table mutex, and the entries themselves are
// accessed with volatile/atomic operations.
unsafe impl Send for GrantTable {}

static TABLE: Mutex<Option<GrantTable>> = Mutex::new(None);

/// Why a grant operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantTableError {
    /// `init` has not run (or failed).
    NotInitialised,
    /// The hypercall itself failed.
    Xen(XenError),
    /// Xen ran the operation and reported a `GNTST_*` failure.
    Status(GrantError),
    /// Every grant reference is in use.
    OutOfRefs,
    /// A v1 entry holds a 32-bit frame number; this frame does not fit.
    FrameTooLarge(Mfn),
    /// The grantee still has the frame mapped: access was not ended.
    StillInUse(GrantStillInUse),
    /// The reference is not one of ours that is in use.
    BadRef(GrantRefError),
    /// Xen returned fewer table frames than asked, or none.
    TableTooSmall(u32),
    /// The table frames could not be mapped.
    MapTable(XenError),
    /// A grant may only be mapped at a page of the foreign-mapping window: anywhere else Xen
    /// would replace one of the kernel's own mappings.
    OutsideForeignWindow(u64),
}

impl fmt::Display for GrantTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantTableError::NotInitialised => f.write_str("grant table not set up"),
            GrantTableError::Xen(e) => write!(f, "grant_table_op failed: {e}"),
            GrantTableError::Status(e) => write!(f, "{e}"),
            GrantTableError::OutOfRefs => f.write_str("no free grant reference"),
            GrantTableError::FrameTooLarge(m) => {
                write!(f, "frame {:#x} does not fit a v1 grant entry", m.0)
            }
            GrantTableError::StillInUse(e) => write!(f, "{e}"),
            GrantTableError::BadRef(e) => write!(f, "{e}"),
            GrantTableError::TableTooSmall(n) => write!(f, "Xen allows only {n} table frames"),
            GrantTableError::MapTable(e) => write!(f, "mapping the table frames failed: {e}"),
            GrantTableError::OutsideForeignWindow(va) => {
                write!(f, "{va:#x} is not a page of the foreign-mapping window")
            }
        }
    }
}

impl From<XenError> for GrantTableError {
    fn from(e: XenError) -> Self {
        GrantTableError::Xen(e)
    }
}

impl From<GrantError> for GrantTableError {
    fn from(e: GrantError) -> Self {
        GrantTableError::Status(e)
    }
}

/// Sets up our grant table: asks Xen for `TABLE_FRAMES` frames and maps them.
pub fn init() -> Result<(), GrantTableError> {
    let mut query = GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: `query` is one live gnttab_query_size for the duration of the call.
    unsafe { hypercall::grant_table_op(GNTTABOP_QUERY_SIZE, &mut query, 1) }?;
    check_status(query.status)?;
    if (query.max_nr_frames as usize) < TABLE_FRAMES {
        return Err(GrantTableError::TableTooSmall(query.max_nr_frames));
    }

    let mut frames = [0u64; TABLE_FRAMES];
    let mut setup = GnttabSetupTable {
        dom: DOMID_SELF,
        nr_frames: TABLE_FRAMES as u32,
        status: 0,
        frame_list: frames.as_mut_ptr(),
    };
    // SAFETY: `setup` is live and its frame list has room for `nr_frames` entries.
    unsafe { hypercall::grant_table_op(GNTTABOP_SETUP_TABLE, &mut setup, 1) }?;
    check_status(setup.status)?;
    for (page, &mfn) in TABLE_PAGES.iter().zip(frames.iter()) {
        page.map_frame(mfn).map_err(GrantTableError::MapTable)?;
    }
    *TABLE.lock() = Some(GrantTable {
        refs: GrantRefAllocator::new(TABLE_ENTRIES),
        entries: TABLE_PAGES[0].as_ptr().cast(),
    });
    Ok(())
}

fn with_table<R>(
    f: impl FnOnce(&mut GrantTable) -> Result<R, GrantTableError>,
) -> Result<R, GrantTableError> {
    match TABLE.lock().as_mut() {
        Some(table) => f(table),
        None => Err(GrantTableError::NotInitialised),
    }
}

impl GrantTable {
    fn entry(&self, grant: GrantRef) -> *mut GrantEntryV1 {
        assert!((grant.0 as usize) < TABLE_ENTRIES, "grant ref out of range");
        // SAFETY: in bounds of the mapped table pages (checked above).
        unsafe { self.entries.add(grant.0 as usize) }
    }

    fn flags(&self, grant: GrantRef) -> &'static AtomicU16 {
        let entry = self.entry(grant);
        // SAFETY: an aligned u16 in a table page that stays mapped for the life of the domain;
        // Xen and we access it only atomically.
        unsafe { AtomicU16::from_ptr(core::ptr::addr_of_mut!((*entry).flags)) }
    }
}

/// Lets domain `grantee` map (or copy) our frame `mfn` with `access`. Returns the reference to
/// hand to the grantee.
pub fn grant_access(
    grantee: DomId,
    mfn: Mfn,
    access: GrantAccess,
) -> Result<GrantRef, GrantTableError> {
    let frame = u32::try_from(mfn.0).map_err(|_| GrantTableError::FrameTooLarge(mfn))?;
    with_table(|table| {
        let grant = table.refs.alloc().ok_or(GrantTableError::OutOfRefs)?;
        let entry = table.entry(grant);
        // SAFETY: the entry is ours (just allocated, flags 0: Xen ignores it); domid and frame
        // are written before the flags make the entry valid.
        unsafe {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*entry).domid), grantee);
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*entry).frame), frame);
        }
        fence(Ordering::Release);
        table
            .flags(grant)
            .store(access.entry_flags(), Ordering::Release);
        Ok(grant)
    })
}

/// Ends the grantee's access and frees the reference. Refused (the grant stays valid and
/// allocated) while the grantee still has the frame mapped: call again after it unmaps.
pub fn end_access(grant: GrantRef) -> Result<(), GrantTableError> {
    with_table(|table| {
        if !table.refs.is_allocated(grant) {
            return Err(GrantTableError::BadRef(GrantRefError::NotAllocated(grant)));
        }
        let flags = table.flags(grant);
        let mut current = flags.load(Ordering::Acquire);
        let mut attempts = 0;
        loop {
            check_revocable(current).map_err(GrantTableError::StillInUse)?;
            match flags.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) if attempts < END_ACCESS_CAS_ATTEMPTS => {
                    current = now;
                    attempts += 1;
                }
                Err(now) => {
                    return Err(GrantTableError::StillInUse(GrantStillInUse { flags: now }))
                }
            }
        }
        table.refs.free(grant).map_err(GrantTableError::BadRef)
    })
}

/// A private copy of one of our entries (for checks and diagnostics).
pub fn read_entry(grant: GrantRef) -> Result<GrantEntryV1, GrantTableError> {
    with_table(|table| {
        if (grant.0 as usize) >= TABLE_ENTRIES {
            return Err(GrantTableError::BadRef(GrantRefError::OutOfRange(grant)));
        }
        // SAFETY: an in-bounds entry of the mapped table, copied with a volatile read.
        Ok(unsafe { core::ptr::read_volatile(table.entry(grant)) })
    })
}

/// References still free.
pub fn free_refs() -> Result<usize, GrantTableError> {
    with_table(|table| Ok(table.refs.free_count()))
}

fn check_foreign_address(va: u64) -> Result<(), GrantTableError> {
    let window = mm::FOREIGN_WINDOW_BASE
        ..mm::FOREIGN_WINDOW_BASE
            + mm::FOREIGN_SLOTS as u64 * mm::FOREIGN_SLOT_PAGES * mm::PAGE_SIZE_U64;
    if window.contains(&va) && va % mm::PAGE_SIZE_U64 == 0 {
        Ok(())
    } else {
        Err(GrantTableError::OutsideForeignWindow(va))
    }
}

/// Maps domain `granter`'s grant `grant` at `host_addr`, a page of a reserved foreign slot
/// (whose L1 table exists: `mm::reserve_foreign_slot`). Returns the handle for unmapping.
pub fn map_grant(
    granter: DomId,
    grant: GrantRef,
    host_addr: u64,
    access: GrantAccess,
) -> Result<GrantHandle, GrantTableError> {
    check_foreign_address(host_addr)?;
    let mut op = GnttabMapGrantRef {
        host_addr,
        flags: GNTMAP_HOST_MAP
            | match access {
                GrantAccess::ReadOnly => GNTMAP_READONLY,
                GrantAccess::ReadWrite => 0,
            },
        r#ref: grant.0,
        dom: granter,
        ..Default::default()
    };
    // SAFETY: `op` is one live gnttab_map_grant_ref; the mapping lands in the foreign window,
    // which nothing else uses.
    unsafe { hypercall::grant_table_op(GNTTABOP_MAP_GRANT_REF, &mut op, 1) }?;
    check_status(op.status)?;
    Ok(GrantHandle(op.handle))
}

/// Unmaps a grant mapped with [`map_grant`].
pub fn unmap_grant(host_addr: u64, handle: GrantHandle) -> Result<(), GrantTableError> {
    check_foreign_address(host_addr)?;
    let mut op = GnttabUnmapGrantRef {
        host_addr,
        dev_bus_addr: 0,
        handle: handle.0,
        status: 0,
    };
    // SAFETY: `op` is one live gnttab_unmap_grant_ref.
    unsafe { hypercall::grant_table_op(GNTTABOP_UNMAP_GRANT_REF, &mut op, 1) }?;
    check_status(op.status)?;
    Ok(())
}

/// Grant operations per `grant_table_op` call in the batch functions.
const BATCH: usize = 64;

/// `GNTST_*` never returned by Xen: marks batch entries Xen did not get to.
const STATUS_NOT_DONE: i16 = i16::MIN;

/// Maps `grants` of domain `granter` at consecutive pages from `base` (in the foreign window),
/// [`BATCH`] per hypercall instead of one each. All or nothing: if any grant fails, the ones
/// mapped are unmapped again and the first failure is returned. Returns one handle per grant.
pub fn map_grants(
    granter: DomId,
    grants: &[GrantRef],
    base: u64,
    access: GrantAccess,
) -> Result<Vec<GrantHandle>, GrantTableError> {
    let pages: Vec<u64> = (0..grants.len() as u64)
        .map(|i| base + i * mm::PAGE_SIZE_U64)
        .collect();
    for &va in &pages {
        check_foreign_address(va)?;
    }
    let flags = GNTMAP_HOST_MAP
        | match access {
            GrantAccess::ReadOnly => GNTMAP_READONLY,
            GrantAccess::ReadWrite => 0,
        };
    let mut mapped: Vec<(u64, GrantHandle)> = Vec::with_capacity(grants.len());
    let mut failure = None;
    for (grants, pages) in grants.chunks(BATCH).zip(pages.chunks(BATCH)) {
        let mut ops = [GnttabMapGrantRef::default(); BATCH];
        for ((op, grant), &va) in ops.iter_mut().zip(grants).zip(pages) {
            *op = GnttabMapGrantRef {
                host_addr: va,
                flags,
                r#ref: grant.0,
                dom: granter,
                status: STATUS_NOT_DONE,
                ..Default::default()
            };
        }
        // SAFETY: `ops` holds `grants.len()` live gnttab_map_grant_ref entries whose addresses
        // were checked to lie in the foreign window.
        let rc = unsafe {
            hypercall::grant_table_op(
                GNTTABOP_MAP_GRANT_REF,
                ops.as_mut_ptr(),
                grants.len() as u32,
            )
        };
        for op in &ops[..grants.len()] {
            match op.status {
                0 => mapped.push((op.host_addr, GrantHandle(op.handle))),
                STATUS_NOT_DONE => {}
                status => {
                    failure.get_or_insert(GrantTableError::Status(GrantError::from_status(status)));
                }
            }
        }
        if let Err(e) = rc {
            failure.get_or_insert(GrantTableError::Xen(e));
        }
        if failure.is_some() {
            break;
        }
    }
    if failure.is_none() && mapped.len() != grants.len() {
        failure = Some(GrantTableError::Xen(XenError::EINVAL));
    }
    match failure {
        None => Ok(mapped.into_iter().map(|(_, handle)| handle).collect()),
        Some(error) => {
            if let Err(e) = unmap_pages(&mapped) {
                crate::log!("grant: undoing a failed batch map failed: {e}");
            }
            Err(error)
        }
    }
}

/// Unmaps `handles` mapped by [`map_grants`] at consecutive pages from `base`, batched. Tries
/// every page; returns the first failure.
pub fn unmap_grants(base: u64, handles: &[GrantHandle]) -> Result<(), GrantTableError> {
    let pages: Vec<(u64, GrantHandle)> = handles
        .iter()
        .enumerate()
        .map(|(i, &handle)| (base + i as u64 * mm::PAGE_SIZE_U64, handle))
        .collect();
    unmap_pages(&pages)
}

fn unmap_pages(pages: &[(u64, GrantHandle)]) -> Result<(), GrantTableError> {
    for &(va, _) in pages {
        check_foreign_address(va)?;
    }
    let mut first_error = None;
    for chunk in pages.chunks(BATCH) {
        let mut ops = [GnttabUnmapGrantRef::default(); BATCH];
        for (op, &(va, handle)) in ops.iter_mut().zip(chunk) {
            *op = GnttabUnmapGrantRef {
                host_addr: va,
                dev_bus_addr: 0,
                handle: handle.0,
                status: STATUS_NOT_DONE,
            };
        }
        // SAFETY: `ops` holds `chunk.len()` live gnttab_unmap_grant_ref entries.
        let rc = unsafe {
            hypercall::grant_table_op(
                GNTTABOP_UNMAP_GRANT_REF,
                ops.as_mut_ptr(),
                chunk.len() as u32,
            )
        };
        if let Err(e) = rc {
            first_error.get_or_insert(GrantTableError::Xen(e));
        }
        for op in &ops[..chunk.len()] {
            if op.status != 0 && op.status != STATUS_NOT_DONE {
                first_error
                    .get_or_insert(GrantTableError::Status(GrantError::from_status(op.status)));
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
