//! x86-64 page-table entry arithmetic for a PV guest, whose page tables hold machine frame
//! numbers (MFNs) and are changed only through `mmu_update` / `update_va_mapping`.
//!
//! Xen rules encoded here: a not-present entry must be all zero (a non-present entry that still
//! holds an address trips Xen's L1TF mitigation), and `mmu_update` takes the machine address
//! of the entry being changed.

use bitflags::bitflags;
use core::fmt;

/// Bits of a page offset.
pub const PAGE_SHIFT: u32 = 12;
/// Entries per page-table page.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bits 12..=51: the frame number field of an entry (52-bit physical addresses).
pub const FRAME_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Largest machine frame number an entry can hold.
pub const MAX_MFN: u64 = FRAME_ADDRESS_MASK >> PAGE_SHIFT;

bitflags! {
    /// Flag bits of a page-table entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// The entry maps something.
        const PRESENT = 1 << 0;
        /// Writes allowed (Xen refuses it on page-table pages and the M2P).
        const WRITABLE = 1 << 1;
        /// User-mode access (Xen forces it on for 64-bit PV guest kernels, which run in ring 3).
        const USER = 1 << 2;
        /// Write-through caching.
        const WRITE_THROUGH = 1 << 3;
        /// Caching disabled.
        const CACHE_DISABLE = 1 << 4;
        /// Set by the CPU on access.
        const ACCESSED = 1 << 5;
        /// Set by the CPU on write (L1 entries).
        const DIRTY = 1 << 6;
        /// L1: PAT index bit; L2/L3: large page (not allowed for PV guests by default).
        const PAT_OR_HUGE = 1 << 7;
        /// Global mapping.
        const GLOBAL = 1 << 8;
        /// Software-available bit 9.
        const AVAILABLE_9 = 1 << 9;
        /// Software-available bit 10.
        const AVAILABLE_10 = 1 << 10;
        /// Software-available bit 11.
        const AVAILABLE_11 = 1 << 11;
        /// No execute.
        const NO_EXECUTE = 1 << 63;
    }
}

/// A machine frame number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Mfn(pub u64);

impl Mfn {
    /// The frame's machine address.
    pub const fn machine_address(self) -> u64 {
        self.0 << PAGE_SHIFT
    }
}

/// Why an entry cannot be built or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PteError {
    /// The MFN does not fit the 40-bit frame field.
    MfnTooLarge(Mfn),
    /// Building a mapping needs `PRESENT`; use [`Pte::NOT_PRESENT`] for an empty entry.
    NotPresent,
    /// A not-present entry with other bits set (Xen's L1TF handling rejects it).
    NonZeroNotPresent(u64),
    /// Bits 52..=62 are set; this kernel never uses them (protection keys, ignored bits).
    ReservedBits(u64),
}

impl fmt::Display for PteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PteError::MfnTooLarge(mfn) => write!(f, "mfn {:#x} exceeds {MAX_MFN:#x}", mfn.0),
            PteError::NotPresent => f.write_str("a mapping entry needs PRESENT"),
            PteError::NonZeroNotPresent(raw) => {
                write!(f, "not-present entry {raw:#x} is not all zero")
            }
            PteError::ReservedBits(raw) => write!(f, "entry {raw:#x} sets bits 52..=62"),
        }
    }
}

/// Bits 52..=62, which no entry this kernel writes may carry.
const HIGH_RESERVED_MASK: u64 = 0x7ff0_0000_0000_0000;

/// A page-table entry (any level).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Pte(u64);

impl Pte {
    /// The empty entry: all zero, as Xen requires for not-present entries.
    pub const NOT_PRESENT: Pte = Pte(0);

    /// An entry mapping frame `mfn` with `flags` (which must include `PRESENT`).
    pub fn new(mfn: Mfn, flags: PteFlags) -> Result<Pte, PteError> {
        if mfn.0 > MAX_MFN {
            return Err(PteError::MfnTooLarge(mfn));
        }
        if !flags.contains(PteFlags::PRESENT) {
            return Err(PteError::NotPresent);
        }
        Ok(Pte(mfn.machine_address() | flags.bits()))
    }

    /// Interprets a raw entry read from a page table, refusing the shapes Xen or this kernel
    /// never produce (non-zero not-present entries, reserved high bits).
    pub const fn from_raw(raw: u64) -> Result<Pte, PteError> {
        if raw & PteFlags::PRESENT.bits() == 0 && raw != 0 {
            return Err(PteError::NonZeroNotPresent(raw));
        }
        if raw & HIGH_RESERVED_MASK != 0 {
            return Err(PteError::ReservedBits(raw));
        }
        Ok(Pte(raw))
    }

    /// The raw 64-bit value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the entry maps something.
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }

    /// The mapped frame, if present.
    pub const fn mfn(self) -> Option<Mfn> {
        if self.is_present() {
            Some(Mfn((self.0 & FRAME_ADDRESS_MASK) >> PAGE_SHIFT))
        } else {
            None
        }
    }

    /// The flag bits (unknown bits dropped).
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }

    /// The same frame with different flags.
    pub fn with_flags(self, flags: PteFlags) -> Result<Pte, PteError> {
        match self.mfn() {
            Some(mfn) => Pte::new(mfn, flags),
            None => Err(PteError::NotPresent),
        }
    }
}

impl fmt::Debug for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mfn() {
            Some(mfn) => write!(f, "Pte(mfn {:#x}, {:?})", mfn.0, self.flags()),
            None => write!(f, "Pte(not present)"),
        }
    }
}

/// Whether `raw` is a valid not-present entry (all zero) or a present one.
pub const fn not_present_is_zero(raw: u64) -> bool {
    raw & PteFlags::PRESENT.bits() != 0 || raw == 0
}

/// The four table indices and page offset of a virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableIndices {
    /// Index into the L4 (PML4) table.
    pub l4: usize,
    /// Index into the L3 (PDPT).
    pub l3: usize,
    /// Index into the L2 (page directory).
    pub l2: usize,
    /// Index into the L1 (page table).
    pub l1: usize,
    /// Byte offset in the 4 KiB page.
    pub offset: usize,
}

/// Splits a virtual address into its table indices (the address need not be canonical; check
/// with [`is_canonical`] first where that matters).
pub const fn table_indices(va: u64) -> TableIndices {
    TableIndices {
        l4: ((va >> 39) & 0x1ff) as usize,
        l3: ((va >> 30) & 0x1ff) as usize,
        l2: ((va >> 21) & 0x1ff) as usize,
        l1: ((va >> 12) & 0x1ff) as usize,
        offset: (va & 0xfff) as usize,
    }
}

/// Rebuilds the canonical virtual address from table indices (inverse of [`table_indices`]).
pub const fn address_of(indices: TableIndices) -> u64 {
    let raw = ((indices.l4 as u64 & 0x1ff) << 39)
        | ((indices.l3 as u64 & 0x1ff) << 30)
        | ((indices.l2 as u64 & 0x1ff) << 21)
        | ((indices.l1 as u64 & 0x1ff) << 12)
        | (indices.offset as u64 & 0xfff);
    sign_extend_48(raw)
}

/// Whether bits 48..=63 of `va` all equal bit 47 (4-level paging).
pub const fn is_canonical(va: u64) -> bool {
    sign_extend_48(va) == va
}

const fn sign_extend_48(va: u64) -> u64 {
    (((va << 16) as i64) >> 16) as u64
}

/// The `ptr` field of an `MMU_NORMAL_PT_UPDATE` request: the machine address of entry `index`
/// of the table in frame `table`. The command (`MMU_NORMAL_PT_UPDATE` = 0) sits in the low
/// bits, which are zero for an 8-byte-aligned entry address. `index` must be below 512 (an
/// index from [`table_indices`] always is); anything else is a kernel bug and panics.
pub const fn entry_machine_address(table: Mfn, index: usize) -> u64 {
    assert!(index < ENTRIES_PER_TABLE, "page-table index out of range");
    table.machine_address() + index as u64 * 8
}

/// An `mmu_update` request setting entry `index` of table `table` to `pte`.
pub const fn normal_update(table: Mfn, index: usize, pte: Pte) -> xen_sys::mmu_update {
    xen_sys::mmu_update {
        ptr: entry_machine_address(table, index) | xen_sys::MMU_NORMAL_PT_UPDATE as u64,
        val: pte.raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_decompose() {
        let flags = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | PteFlags::NO_EXECUTE;
        let pte = Pte::new(Mfn(0x12345), flags).unwrap();
        assert_eq!(pte.raw(), 0x8000_0000_1234_5007);
        assert_eq!(pte.mfn(), Some(Mfn(0x12345)));
        assert_eq!(pte.flags(), flags);
        assert!(pte.is_present());
        let read_only = pte.with_flags(PteFlags::PRESENT | PteFlags::USER).unwrap();
        assert_eq!(read_only.raw(), 0x1234_5005);
        assert_eq!(
            Pte::new(Mfn(MAX_MFN), PteFlags::PRESENT).unwrap().mfn(),
            Some(Mfn(MAX_MFN))
        );
    }

    #[test]
    fn invalid_entries_are_refused() {
        assert_eq!(
            Pte::new(Mfn(MAX_MFN + 1), PteFlags::PRESENT),
            Err(PteError::MfnTooLarge(Mfn(MAX_MFN + 1)))
        );
        assert_eq!(
            Pte::new(Mfn(1), PteFlags::WRITABLE),
            Err(PteError::NotPresent)
        );
        assert_eq!(
            Pte::NOT_PRESENT.with_flags(PteFlags::PRESENT),
            Err(PteError::NotPresent)
        );
        assert_eq!(
            Pte::from_raw(0x1000),
            Err(PteError::NonZeroNotPresent(0x1000))
        );
        assert_eq!(Pte::from_raw(0x2), Err(PteError::NonZeroNotPresent(0x2)));
        assert_eq!(
            Pte::from_raw(0x0010_0000_0000_1001),
            Err(PteError::ReservedBits(0x0010_0000_0000_1001))
        );
        assert_eq!(Pte::from_raw(0), Ok(Pte::NOT_PRESENT));
        assert_eq!(
            Pte::from_raw(0x8000_0000_0000_1063).unwrap().mfn(),
            Some(Mfn(1))
        );
    }

    #[test]
    fn not_present_entries_must_be_zero() {
        assert!(not_present_is_zero(0));
        assert!(not_present_is_zero(0x1001));
        assert!(!not_present_is_zero(0x1000));
        assert!(!not_present_is_zero(PteFlags::NO_EXECUTE.bits()));
        assert_eq!(Pte::NOT_PRESENT.raw(), 0);
        assert_eq!(Pte::NOT_PRESENT.mfn(), None);
    }

    #[test]
    fn indices_of_addresses() {
        assert_eq!(
            table_indices(0x0000_7fff_ffff_f123),
            TableIndices {
                l4: 255,
                l3: 511,
                l2: 511,
                l1: 511,
                offset: 0x123
            }
        );
        assert_eq!(
            table_indices(0xffff_8000_0000_0000),
            TableIndices {
                l4: 256,
                l3: 0,
                l2: 0,
                l1: 0,
                offset: 0
            }
        );
        let va = 0x0000_0040_3060_9abc;
        let ix = table_indices(va);
        assert_eq!(
            (ix.l4, ix.l3, ix.l2, ix.l1, ix.offset),
            (0, 256, 387, 9, 0xabc)
        );
        assert_eq!(address_of(ix), va);
        assert_eq!(
            address_of(table_indices(0xffff_8123_4567_8000)),
            0xffff_8123_4567_8000
        );
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(is_canonical(u64::MAX));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0xffff_7fff_ffff_ffff));
        assert!(!is_canonical(0x0001_0000_0000_0000));
    }

    #[test]
    fn mmu_update_targets_the_entry_machine_address() {
        assert_eq!(entry_machine_address(Mfn(0x10), 0), 0x10000);
        assert_eq!(entry_machine_address(Mfn(0x10), 511), 0x10ff8);
        let pte = Pte::new(Mfn(0x22), PteFlags::PRESENT).unwrap();
        let update = normal_update(Mfn(0x10), 3, pte);
        assert_eq!(update.ptr, 0x10018);
        assert_eq!(update.val, 0x22001);
    }

    #[test]
    #[should_panic(expected = "page-table index out of range")]
    fn entry_index_beyond_the_table_is_a_bug() {
        entry_machine_address(Mfn(1), ENTRIES_PER_TABLE);
    }
}
