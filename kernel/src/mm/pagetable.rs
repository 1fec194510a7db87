//! PV page tables. Xen owns the final say: every table page is mapped read-only in the guest,
//! entries hold machine frame numbers, and every change goes through `mmu_update`, which
//! validates it. An [`AddressSpace`] is one L4 table; the kernel's is the one Xen built, and a
//! second one (for handlers running in PV user mode, installed with
//! `MMUEXT_NEW_USER_BASEPTR`) is built with the same operations.

use xen_abi::pte::{self, Mfn, Pte, PteError, PteFlags};

use super::frames::FramePool;
use super::p2m::{P2m, Pfn};
use crate::xen::hypercall::{self, XenError};

/// Why a mapping operation failed.
#[derive(Clone, Copy, Debug)]
pub enum MapError {
    /// The address is not canonical or lies in Xen's reserved hole.
    BadAddress(u64),
    /// No frame left for a new page-table page.
    OutOfFrames,
    /// A table entry refers to a frame that is not ours (never expected: a kernel bug).
    ForeignTable(Mfn),
    /// The address is not mapped.
    NotMapped(u64),
    /// The address is already mapped (refusing to replace a mapping silently).
    AlreadyMapped(u64),
    Pte(PteError),
    Xen(XenError),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::BadAddress(va) => write!(f, "address {va:#x} is not usable"),
            MapError::OutOfFrames => f.write_str("no free frame for a page table"),
            MapError::ForeignTable(m) => write!(f, "table frame {:#x} is not ours", m.0),
            MapError::NotMapped(va) => write!(f, "{va:#x} is not mapped"),
            MapError::AlreadyMapped(va) => write!(f, "{va:#x} is already mapped"),
            MapError::Pte(e) => write!(f, "bad entry: {e}"),
            MapError::Xen(e) => write!(f, "Xen refused: {e}"),
        }
    }
}

impl From<XenError> for MapError {
    fn from(e: XenError) -> Self {
        MapError::Xen(e)
    }
}

impl From<PteError> for MapError {
    fn from(e: PteError) -> Self {
        MapError::Pte(e)
    }
}

/// Flags of an intermediate (L4/L3/L2) entry: permissions are decided at the L1 level.
const TABLE_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::WRITABLE)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED);

/// Bits 52..=62 of an entry as Xen stores it.
const XEN_SOFTWARE_BITS: u64 = 0x7ff0_0000_0000_0000;

/// Xen's reserved hole in the upper half (L4 slots 256..=271): never ours to map.
const XEN_HOLE: core::ops::Range<u64> = 0xFFFF_8000_0000_0000..0xFFFF_8800_0000_0000;

/// One 4-level address space, identified by the machine frame of its L4 table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressSpace {
    l4: Mfn,
}

impl AddressSpace {
    pub fn from_l4(l4: Mfn) -> Self {
        Self { l4 }
    }

    /// A new, empty address space (for PV user mode): a zeroed pool frame made read-only and
    /// pinned as an L4 table, which makes Xen validate it and fill in its own slots.
    pub fn new_root(p2m: &P2m, pool: &mut FramePool) -> Result<Self, MapError> {
        let mfn = Self::alloc_table_frame(p2m, pool)?;
        let mut op = xen_sys::mmuext_op {
            cmd: xen_sys::MMUEXT_PIN_L4_TABLE,
            arg1: xen_sys::mmuext_op__bindgen_ty_1 { mfn: mfn.0 },
            arg2: xen_sys::mmuext_op__bindgen_ty_2 { nr_ents: 0 },
        };
        // SAFETY: pins a zeroed, read-only frame of ours as an L4: it maps nothing yet.
        unsafe { hypercall::mmuext_op(core::slice::from_mut(&mut op))? };
        Ok(Self { l4: mfn })
    }

    /// The machine frame of the L4 table.
    pub fn root(&self) -> Mfn {
        self.l4
    }

    /// Reads entry `index` of table `table` through its (read-only) direct mapping.
    fn read_entry(p2m: &P2m, table: Mfn, index: usize) -> Result<Pte, MapError> {
        let pfn = p2m.pfn(table).ok_or(MapError::ForeignTable(table))?;
        // SAFETY: every table frame of ours is mapped (read-only) at its direct-map address,
        // and index < 512 keeps the read inside it.
        let raw = unsafe { core::ptr::read_volatile((pfn.va() as *const u64).add(index)) };
        // Xen keeps software bits of its own in 52..=62 (e.g. "guest kernel" on 64-bit PV
        // entries) and recomputes them on every update: they are not ours to carry.
        Ok(Pte::from_raw(raw & !XEN_SOFTWARE_BITS)?)
    }

    fn check_va(va: u64) -> Result<(), MapError> {
        if !pte::is_canonical(va) || XEN_HOLE.contains(&va) || va & 0xfff != 0 {
            return Err(MapError::BadAddress(va));
        }
        Ok(())
    }

    /// The L1 entry mapping `va`, or `None` where a level is not present.
    pub fn translate(&self, p2m: &P2m, va: u64) -> Result<Option<Pte>, MapError> {
        Self::check_va(va & !0xfff)?;
        let ix = pte::table_indices(va);
        let mut table = self.l4;
        for index in [ix.l4, ix.l3, ix.l2] {
            let e = Self::read_entry(p2m, table, index)?;
            match e.mfn() {
                Some(next) => table = next,
                None => return Ok(None),
            }
        }
        let e = Self::read_entry(p2m, table, ix.l1)?;
        Ok(e.is_present().then_some(e))
    }

    /// Makes `pfn` a page-table page: zeroed (the pool hands out zeroed frames) and mapped
    /// read-only, as Xen requires before it can be hooked in.
    fn prepare_table_frame(p2m: &P2m, pfn: Pfn) -> Result<Mfn, MapError> {
        let mfn = p2m.mfn(pfn);
        let ro = Pte::new(
            mfn,
            PteFlags::PRESENT | PteFlags::USER | PteFlags::ACCESSED | PteFlags::NO_EXECUTE,
        )?;
        // SAFETY: the frame is a fresh pool frame that nothing references; making its direct
        // mapping read-only is what turning it into a page table requires.
        unsafe { hypercall::update_va_mapping(pfn.va(), ro.raw(), hypercall::UVMF_INVLPG)? };
        Ok(mfn)
    }

    /// A pool frame made ready to become a page table (given back if that fails).
    fn alloc_table_frame(p2m: &P2m, pool: &mut FramePool) -> Result<Mfn, MapError> {
        let pfn = pool.alloc().ok_or(MapError::OutOfFrames)?;
        Self::prepare_table_frame(p2m, pfn).inspect_err(|_| pool.free(pfn))
    }

    /// The L1 table covering `va`, creating missing L3/L2/L1 tables from `pool`.
    pub fn ensure_l1(&self, p2m: &P2m, pool: &mut FramePool, va: u64) -> Result<Mfn, MapError> {
        Self::check_va(va & !0xfff)?;
        let ix = pte::table_indices(va);
        let mut table = self.l4;
        for index in [ix.l4, ix.l3, ix.l2] {
            let e = Self::read_entry(p2m, table, index)?;
            table = match e.mfn() {
                Some(next) => next,
                None => {
                    let child = Self::alloc_table_frame(p2m, pool)?;
                    let update = pte::normal_update(table, index, Pte::new(child, TABLE_FLAGS)?);
                    // SAFETY: hooks a zeroed, read-only table into an empty slot: it maps nothing.
                    unsafe { hypercall::mmu_update(&[update])? };
                    child
                }
            };
        }
        Ok(table)
    }

    /// Maps `va` to machine frame `mfn` with `flags`; refuses to replace a present mapping.
    pub fn map(
        &self,
        p2m: &P2m,
        pool: &mut FramePool,
        va: u64,
        mfn: Mfn,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let l1 = self.ensure_l1(p2m, pool, va)?;
        let index = pte::table_indices(va).l1;
        if Self::read_entry(p2m, l1, index)?.is_present() {
            return Err(MapError::AlreadyMapped(va));
        }
        let update = pte::normal_update(l1, index, Pte::new(mfn, flags | PteFlags::PRESENT)?);
        // SAFETY: the slot was empty, so nothing the kernel uses changes; Xen validates the frame.
        unsafe { hypercall::mmu_update(&[update])? };
        Ok(())
    }

    /// Maps up to 512 consecutive pages that share one L1 table, in one hypercall.
    pub fn map_run(
        &self,
        p2m: &P2m,
        pool: &mut FramePool,
        va: u64,
        mfns: &mut dyn Iterator<Item = Mfn>,
        count: usize,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let first = pte::table_indices(va).l1;
        assert!(
            count > 0 && first + count <= pte::ENTRIES_PER_TABLE,
            "run crosses an L1 table"
        );
        let l1 = self.ensure_l1(p2m, pool, va)?;
        let mut updates = [xen_sys::mmu_update { ptr: 0, val: 0 }; pte::ENTRIES_PER_TABLE];
        for (i, slot) in updates[..count].iter_mut().enumerate() {
            if Self::read_entry(p2m, l1, first + i)?.is_present() {
                return Err(MapError::AlreadyMapped(
                    va + i as u64 * super::PAGE_SIZE_U64,
                ));
            }
            let mfn = mfns.next().ok_or(MapError::OutOfFrames)?;
            *slot = pte::normal_update(l1, first + i, Pte::new(mfn, flags | PteFlags::PRESENT)?);
        }
        // SAFETY: every slot was empty; Xen validates each frame.
        unsafe { hypercall::mmu_update(&updates[..count])? };
        Ok(())
    }

    /// Maps `pages` consecutive pages from `va` on, page `i` to frame `mfn_of(i)`, one
    /// hypercall per run of pages that share an L1 table.
    pub fn map_pages(
        &self,
        p2m: &P2m,
        pool: &mut FramePool,
        va: u64,
        pages: u64,
        flags: PteFlags,
        mut mfn_of: impl FnMut(u64) -> Result<Mfn, MapError>,
    ) -> Result<(), MapError> {
        let mut done = 0;
        while done < pages {
            let at = va + done * super::PAGE_SIZE_U64;
            let in_table = (pte::ENTRIES_PER_TABLE - pte::table_indices(at).l1) as u64;
            let count = in_table.min(pages - done);
            let mut frames = [Mfn(0); pte::ENTRIES_PER_TABLE];
            for (i, slot) in frames[..count as usize].iter_mut().enumerate() {
                *slot = mfn_of(done + i as u64)?;
            }
            let mut mfns = frames[..count as usize].iter().copied();
            self.map_run(p2m, pool, at, &mut mfns, count as usize, flags)?;
            done += count;
        }
        Ok(())
    }

    /// Changes the permission flags of the mapping at `va`, keeping its frame.
    pub fn protect(&self, p2m: &P2m, va: u64, flags: PteFlags) -> Result<(), MapError> {
        let old = self.translate(p2m, va)?.ok_or(MapError::NotMapped(va))?;
        let new = old.with_flags(flags | PteFlags::PRESENT)?;
        self.write_l1(p2m, va, new)
    }

    /// Removes the mapping at `va`; returns what it mapped.
    pub fn unmap(&self, p2m: &P2m, va: u64) -> Result<Pte, MapError> {
        let old = self.translate(p2m, va)?.ok_or(MapError::NotMapped(va))?;
        self.write_l1(p2m, va, Pte::NOT_PRESENT)?;
        Ok(old)
    }

    fn write_l1(&self, p2m: &P2m, va: u64, new: Pte) -> Result<(), MapError> {
        let ix = pte::table_indices(va);
        let mut table = self.l4;
        for index in [ix.l4, ix.l3, ix.l2] {
            table = Self::read_entry(p2m, table, index)?
                .mfn()
                .ok_or(MapError::NotMapped(va))?;
        }
        let update = pte::normal_update(table, ix.l1, new);
        // SAFETY: callers change only mappings they own; Xen validates the entry.
        unsafe { hypercall::mmu_update(&[update])? };
        invalidate(va)
    }
}

/// Drops `va` from this vCPU's TLB.
pub fn invalidate(va: u64) -> Result<(), MapError> {
    let mut op = xen_sys::mmuext_op {
        cmd: xen_sys::MMUEXT_INVLPG_LOCAL,
        arg1: xen_sys::mmuext_op__bindgen_ty_1 { linear_addr: va },
        arg2: xen_sys::mmuext_op__bindgen_ty_2 { nr_ents: 0 },
    };
    // SAFETY: a TLB flush of one address has no effect beyond the TLB.
    unsafe { hypercall::mmuext_op(core::slice::from_mut(&mut op))? };
    Ok(())
}
