//! Memory: pages of the image remapped onto Xen-provided frames, the page-table layer, the
//! frame allocator and the heap.

use core::cell::UnsafeCell;

use crate::xen::hypercall::{self, XenResult};

pub const PAGE_SIZE: usize = 4096;
/// [`PAGE_SIZE`] for virtual-address arithmetic.
pub const PAGE_SIZE_U64: u64 = PAGE_SIZE as u64;

/// A page-aligned page inside the kernel image whose mapping is later replaced by a frame Xen
/// shares with us (shared_info, the console ring, the xenstore ring). Only raw pointers to it
/// are handed out: Xen or a peer writes these frames at any moment.
#[repr(C, align(4096))] // PAGE_SIZE: `align` takes only a literal
pub struct StaticPage(UnsafeCell<[u8; PAGE_SIZE]>);

const _: () = assert!(core::mem::align_of::<StaticPage>() == PAGE_SIZE);

// SAFETY: the contents are only reached through raw pointers with volatile/atomic accesses.
unsafe impl Sync for StaticPage {}

impl StaticPage {
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; PAGE_SIZE]))
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }

    /// Maps machine frame `mfn` (one of this domain's own frames, or shared_info) at this page.
    pub fn map_frame(&self, mfn: u64) -> XenResult<()> {
        self.map_maddr(mfn << 12)
    }

    /// Maps the frame at machine address `maddr` at this page, read-write.
    pub fn map_maddr(&self, maddr: u64) -> XenResult<()> {
        const PRESENT_RW_USER: u64 =
            PteFlags::PRESENT.bits() | PteFlags::WRITABLE.bits() | PteFlags::USER.bits();
        // SAFETY: the page is dedicated to this use; nothing holds a reference into it, and
        // after the call it is backed by the given frame, which is what users expect.
        unsafe {
            hypercall::update_va_mapping(
                self.as_ptr() as u64,
                (maddr & !0xfff) | PRESENT_RW_USER,
                hypercall::UVMF_INVLPG,
            )
        }
    }
}

impl Default for StaticPage {
    fn default() -> Self {
        Self::new()
    }
}

pub mod frames;
pub mod p2m;
pub mod pagetable;
pub mod space;

use spin::Mutex;
use xen_abi::pte::{Mfn, PteFlags};

use self::frames::FramePool;
use self::p2m::{P2m, Pfn};
use self::pagetable::{AddressSpace, MapError};
use crate::xen::start_info::BootInfo;

#[global_allocator]
static ALLOCATOR: space::SpaceAllocator = space::SpaceAllocator;

/// Frames kept aside (inside Xen's bootstrap mapping) for page tables, stacks and shared pages.
const POOL_FRAMES: u64 = 256;

/// Virtual window where peers' granted pages are mapped: L4 slot 2 (1 TiB), 1 GiB, cut into
/// fixed slots of [`FOREIGN_SLOT_PAGES`] pages, one per connection.
pub const FOREIGN_WINDOW_BASE: u64 = 0x0000_0100_0000_0000;
pub const FOREIGN_SLOT_PAGES: u64 = 1024;
pub const FOREIGN_SLOTS: usize = 256;

const RW_NX: PteFlags = PteFlags::PRESENT
    .union(PteFlags::WRITABLE)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::NO_EXECUTE);

struct Memory {
    p2m: P2m,
    pool: FramePool,
    kernel: AddressSpace,
    foreign_slots_used: [bool; FOREIGN_SLOTS],
}

static MEMORY: Mutex<Option<Memory>> = Mutex::new(None);

/// What `init` found and set up.
#[derive(Clone, Copy, Debug)]
pub struct MemoryReport {
    pub nr_pages: u64,
    pub first_free: u64,
    pub bootstrap_end: u64,
    pub pool_frames: u64,
    pub heap_bytes: u64,
    pub image_pages: u64,
}

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __image_end: u8;
    static xenrpc_boot_stack_guard: u8;
}

fn symbol_va(sym: *const u8) -> u64 {
    sym as u64
}

/// Takes over memory: finds the free frames after Xen's bootstrap area, keeps a frame pool,
/// extends the direct map over all of the domain's frames, puts the heap there, and protects
/// the image (text read-only, data non-executable, a guard page under the boot stack, page 0
/// unmapped).
pub fn init(boot: &BootInfo) -> Result<MemoryReport, MapError> {
    // SAFETY: start_info's mfn_list covers nr_pages entries and stays mapped.
    let p2m = unsafe { P2m::new(boot.mfn_list, boot.nr_pages) };
    let pt_pfn = Pfn::of_va(boot.pt_base);
    let kernel = AddressSpace::from_l4(p2m.mfn(pt_pfn));
    // Xen's bootstrap area ends with the page tables and then one stack page.
    let first_free = pt_pfn.0 + boot.nr_pt_frames + 1;
    let image_end = symbol_va(core::ptr::addr_of!(__image_end));
    assert!(
        first_free > Pfn::of_va(image_end).0,
        "bootstrap area overlaps the image"
    );
    assert!(first_free < boot.nr_pages, "no free memory");

    let mut bootstrap_end = first_free;
    while bootstrap_end < boot.nr_pages
        && kernel.translate(&p2m, Pfn(bootstrap_end).va())?.is_some()
    {
        bootstrap_end += 1;
    }
    let pool_end = (first_free + POOL_FRAMES).min(bootstrap_end);
    let mut pool = FramePool::new(Pfn(first_free), Pfn(pool_end));

    // Extend the direct map (va == pfn << 12) over every frame Xen did not map.
    kernel.map_pages(
        &p2m,
        &mut pool,
        Pfn(bootstrap_end).va(),
        boot.nr_pages - bootstrap_end,
        RW_NX,
        |i| Ok(p2m.mfn(Pfn(bootstrap_end + i))),
    )?;

    // The allocator reads the heap to use from the space page: map the kernel's first.
    let space_va = space::KERNEL_SPACE_PAGE.as_ptr() as u64;
    let space_mfn = kernel
        .translate(&p2m, space_va)?
        .and_then(|e| e.mfn())
        .ok_or(MapError::NotMapped(space_va))?;
    kernel.map(&p2m, &mut pool, space::SPACE_PAGE_VA, space_mfn, RW_NX)?;
    space::name_kernel_heap();

    let heap_start = Pfn(pool_end).va();
    let heap_bytes = Pfn(boot.nr_pages).va() - heap_start;
    // SAFETY: [heap_start, +heap_bytes) is mapped read-write, ours, and used by nothing else.
    unsafe {
        space::KERNEL_HEAP
            .lock()
            .init(heap_start as *mut u8, heap_bytes as usize)
    };

    // The part of Xen's bootstrap mapping that became heap need not be executable.
    for pfn in pool_end..bootstrap_end {
        kernel.protect(&p2m, Pfn(pfn).va(), RW_NX)?;
    }

    // Protect the image.
    let text =
        symbol_va(core::ptr::addr_of!(__image_start))..symbol_va(core::ptr::addr_of!(__text_end));
    let rodata = symbol_va(core::ptr::addr_of!(__rodata_start))
        ..symbol_va(core::ptr::addr_of!(__rodata_end));
    let data = symbol_va(core::ptr::addr_of!(__data_start))..image_end;
    let ro_x = PteFlags::PRESENT | PteFlags::USER | PteFlags::ACCESSED;
    for (range, flags) in [
        (text, ro_x),
        (rodata, ro_x | PteFlags::NO_EXECUTE),
        (data, RW_NX),
    ] {
        let mut va = range.start & !0xfff;
        while va < range.end {
            // Pages remapped onto Xen's or a peer's frames keep their frame: protect() only
            // rewrites the flags.
            kernel.protect(&p2m, va, flags)?;
            va += PAGE_SIZE_U64;
        }
    }
    kernel.unmap(
        &p2m,
        symbol_va(core::ptr::addr_of!(xenrpc_boot_stack_guard)),
    )?;
    kernel.unmap(&p2m, 0)?;

    let report = MemoryReport {
        nr_pages: boot.nr_pages,
        first_free,
        bootstrap_end,
        pool_frames: pool.available(),
        heap_bytes,
        image_pages: (image_end - symbol_va(core::ptr::addr_of!(__image_start))) / PAGE_SIZE_U64,
    };
    *MEMORY.lock() = Some(Memory {
        p2m,
        pool,
        kernel,
        foreign_slots_used: [false; FOREIGN_SLOTS],
    });
    Ok(report)
}

fn with_memory<R>(f: impl FnOnce(&mut Memory) -> R) -> R {
    let mut guard = MEMORY.lock();
    f(guard.as_mut().expect("mm::init has run"))
}

/// The kernel's own machine frame number for pseudo-physical frame `pfn`.
pub fn pfn_to_mfn(pfn: Pfn) -> Mfn {
    with_memory(|m| m.p2m.mfn(pfn))
}

/// A zeroed frame from the pool, mapped read-write at `pfn.va()`.
pub fn alloc_frame() -> Option<Pfn> {
    with_memory(|m| m.pool.alloc())
}

/// Frames left in the pool (page tables and shared pages come from it).
#[cfg_attr(feature = "unprotected", allow(dead_code))]
pub fn pool_available() -> u64 {
    with_memory(|m| m.pool.available())
}

/// Gives a frame back to the pool (it must be mapped read-write at its direct-map address).
pub fn free_frame(pfn: Pfn) {
    with_memory(|m| m.pool.free(pfn))
}

/// The current L1 entry of a kernel page.
pub fn translate(va: u64) -> Result<Option<xen_abi::pte::Pte>, MapError> {
    with_memory(|m| m.kernel.translate(&m.p2m, va))
}

/// A slot of the foreign-mapping window: `pages` page addresses starting at `base`, each with
/// its L1 table already present (Xen's grant map into a PV guest needs one at the address).
#[derive(Debug)]
pub struct ForeignSlot {
    index: usize,
    pub base: u64,
    pub pages: u64,
}

/// Reserves a slot of the foreign window and makes sure its L1 tables exist.
pub fn reserve_foreign_slot() -> Result<ForeignSlot, MapError> {
    with_memory(|m| {
        let index = m
            .foreign_slots_used
            .iter()
            .position(|used| !used)
            .ok_or(MapError::OutOfFrames)?;
        let base = FOREIGN_WINDOW_BASE + index as u64 * FOREIGN_SLOT_PAGES * PAGE_SIZE_U64;
        let mut va = base;
        while va < base + FOREIGN_SLOT_PAGES * PAGE_SIZE_U64 {
            m.kernel.ensure_l1(&m.p2m, &mut m.pool, va)?;
            va += 512 * PAGE_SIZE_U64;
        }
        m.foreign_slots_used[index] = true;
        Ok(ForeignSlot {
            index,
            base,
            pages: FOREIGN_SLOT_PAGES,
        })
    })
}

/// Returns a slot. Every grant mapped in it must have been unmapped first.
pub fn release_foreign_slot(slot: ForeignSlot) -> Result<(), MapError> {
    with_memory(|m| {
        for page in 0..slot.pages {
            let va = slot.base + page * PAGE_SIZE_U64;
            if m.kernel.translate(&m.p2m, va)?.is_some() {
                return Err(MapError::AlreadyMapped(va));
            }
        }
        m.foreign_slots_used[slot.index] = false;
        Ok(())
    })
}

/// Maps one of the domain's own frames at a free kernel address (used for tests and for
/// user-mode address spaces later).
pub fn map_page(va: u64, mfn: Mfn, flags: PteFlags) -> Result<(), MapError> {
    with_memory(|m| m.kernel.map(&m.p2m, &mut m.pool, va, mfn, flags))
}

/// Unmaps one kernel page; returns what it mapped.
pub fn unmap_page(va: u64) -> Result<xen_abi::pte::Pte, MapError> {
    with_memory(|m| m.kernel.unmap(&m.p2m, va))
}

/// A new user address space holding only the image's code (read-only, executable) and
/// read-only data (read-only, not executable), at the addresses the kernel sees them: nothing
/// of the kernel's data, heap, stacks, rings or grant windows.
pub fn new_user_space() -> Result<AddressSpace, MapError> {
    let text =
        symbol_va(core::ptr::addr_of!(__image_start))..symbol_va(core::ptr::addr_of!(__text_end));
    let rodata = symbol_va(core::ptr::addr_of!(__rodata_start))
        ..symbol_va(core::ptr::addr_of!(__rodata_end));
    let ro_x = PteFlags::PRESENT | PteFlags::USER | PteFlags::ACCESSED;
    with_memory(|m| {
        let space = AddressSpace::new_root(&m.p2m, &mut m.pool)?;
        for (range, flags) in [(text, ro_x), (rodata, ro_x | PteFlags::NO_EXECUTE)] {
            let start = range.start & !0xfff;
            let pages = (range.end - start).div_ceil(PAGE_SIZE_U64);
            let kernel = m.kernel;
            let p2m = &m.p2m;
            space.map_pages(p2m, &mut m.pool, start, pages, flags, |i| {
                let page = start + i * PAGE_SIZE_U64;
                kernel
                    .translate(p2m, page)?
                    .and_then(|e| e.mfn())
                    .ok_or(MapError::NotMapped(page))
            })?;
        }
        Ok(space)
    })
}

/// Read-write, not executable: user stacks and data.
pub const USER_RW_NX: PteFlags = RW_NX;

/// Maps `pages` frames of the kernel's own memory, starting at direct-map address `kva`, at
/// `va` in `space` (the kernel's own when `None`).
pub fn map_frames(
    space: Option<&AddressSpace>,
    va: u64,
    kva: u64,
    pages: u64,
    flags: PteFlags,
) -> Result<(), MapError> {
    with_memory(|m| {
        let space = space.copied().unwrap_or(m.kernel);
        let first = Pfn::of_va(kva).0;
        let p2m = &m.p2m;
        space.map_pages(p2m, &mut m.pool, va, pages, flags, |i| {
            Ok(p2m.mfn(Pfn(first + i)))
        })
    })
}

/// Read-only, not executable: what user mode may read but not change.
#[cfg_attr(feature = "unprotected", allow(dead_code))]
pub const USER_RO_NX: PteFlags = PteFlags::PRESENT
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::NO_EXECUTE);
