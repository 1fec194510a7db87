//! Which heap the global allocator uses: the one named by the *space page*, a page at
//! [`SPACE_PAGE_VA`] that every address space maps to a frame of its own. In the kernel's it
//! names the kernel heap (or, while a protection domain's services are being built, that
//! domain's heap); in a domain's user space it names the domain's own heap, which lives in
//! that page. The allocator cannot ask the CPU which mode it runs in, and in user mode it
//! cannot read a kernel variable: the page is the one thing both can read.
//!
//! Frees go back to the heap that holds the block: the space's heap if the block lies in it,
//! else the kernel heap (a kernel allocation freed while a domain's heap is current).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::LockedHeap;

/// The space page's address in every address space (L4 slot 8, nothing else there).
pub const SPACE_PAGE_VA: u64 = 0x0000_0400_0000_0000;

/// The start of every space page.
#[repr(C)]
pub struct SpaceHeader {
    /// The heap allocations come from.
    pub heap: *const LockedHeap,
    /// Non-zero in a protection domain's page, zero in the kernel's.
    pub user: u64,
}

/// Whether the code asking runs in a protection domain (guest user mode): what the panic
/// handler needs to know, and cannot ask the CPU.
#[cfg_attr(feature = "unprotected", allow(dead_code))]
pub fn in_user_mode() -> bool {
    // SAFETY: as in `current_heap`: the page is mapped in every space.
    unsafe {
        core::ptr::read_volatile(core::ptr::addr_of!(
            (*(SPACE_PAGE_VA as *const SpaceHeader)).user
        )) != 0
    }
}

/// The kernel's heap.
pub static KERNEL_HEAP: LockedHeap = LockedHeap::empty();

/// The global allocator (see the module docs).
pub struct SpaceAllocator;

fn current_heap() -> &'static LockedHeap {
    // SAFETY: SPACE_PAGE_VA is mapped in every address space before anything allocates
    // (mm::init maps the kernel's before it fills the heap; every user space maps its own),
    // and its header always names a live heap.
    unsafe { &*core::ptr::read_volatile(SPACE_PAGE_VA as *const *const LockedHeap) }
}

fn holds(heap: &LockedHeap, ptr: *mut u8) -> bool {
    let heap = heap.lock();
    let bottom = heap.bottom() as usize;
    (bottom..bottom + heap.size()).contains(&(ptr as usize))
}

// SAFETY: both heaps are linked-list heaps behind spin locks; a block is freed into the heap
// whose range holds it, which is the one that handed it out.
unsafe impl GlobalAlloc for SpaceAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        current_heap()
            .lock()
            .allocate_first_fit(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let heap = current_heap();
        let heap = if holds(heap, ptr) { heap } else { &KERNEL_HEAP };
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `p` came from this heap's allocate_first_fit with `layout`.
            unsafe { heap.lock().deallocate(p, layout) };
        }
    }
}

/// The kernel's space page: also mapped at [`SPACE_PAGE_VA`] (by `mm::init`).
pub(super) static KERNEL_SPACE_PAGE: super::StaticPage = super::StaticPage::new();

fn kernel_header() -> *mut SpaceHeader {
    KERNEL_SPACE_PAGE.as_ptr().cast()
}

/// Names the kernel heap in the kernel's space page (`mm::init`, before the first allocation).
pub(super) fn name_kernel_heap() {
    // SAFETY: the kernel's space page is ours; the kernel heap lives for ever.
    unsafe {
        core::ptr::write(
            core::ptr::addr_of_mut!((*kernel_header()).heap),
            &KERNEL_HEAP,
        )
    };
}

/// Runs `f` in the kernel's space with its allocations from `heap`, then puts back the heap
/// that was current.
///
/// # Safety
/// `heap` must be live, initialised and mapped in the kernel's space for the whole of `f`.
pub unsafe fn with_heap<R>(heap: *const LockedHeap, f: impl FnOnce() -> R) -> R {
    let slot = kernel_header();
    // SAFETY: the kernel's space page is ours; the caller vouches for `heap`.
    let previous = unsafe { core::ptr::replace(core::ptr::addr_of_mut!((*slot).heap), heap) };
    let result = f();
    // SAFETY: puts back what was there, itself a live heap.
    unsafe { core::ptr::write(core::ptr::addr_of_mut!((*slot).heap), previous) };
    result
}

/// Runs `f` with allocations from the kernel heap (kernel work done while a domain's
/// services are being built, such as reading xenstore, must not land in the domain's heap).
pub fn with_kernel_heap<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the kernel heap lives for ever and is mapped in the kernel's space.
    unsafe { with_heap(&KERNEL_HEAP, f) }
}
