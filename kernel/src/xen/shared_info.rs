//! The shared_info page: per-vCPU upcall state and time, and the event-channel pending/mask
//! bitmaps. Xen writes it at any moment, so every access is a raw volatile or atomic access
//! (never a Rust reference to the structure).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use xen_sys as abi;

use super::hypercall;
use crate::mm::StaticPage;

const _: () = assert!(core::mem::size_of::<abi::vcpu_info>() == 64);
const _: () = assert!(core::mem::offset_of!(abi::vcpu_info, evtchn_upcall_mask) == 1);
const _: () = assert!(core::mem::offset_of!(abi::vcpu_info, evtchn_pending_sel) == 8);
const _: () = assert!(core::mem::offset_of!(abi::vcpu_info, arch) == 16);
const _: () = assert!(core::mem::offset_of!(abi::vcpu_info, time) == 32);
const _: () = assert!(core::mem::size_of::<abi::vcpu_time_info>() == 32);
const _: () = assert!(core::mem::offset_of!(abi::shared_info, evtchn_pending) == 2048);
const _: () = assert!(core::mem::offset_of!(abi::shared_info, evtchn_mask) == 2560);
const _: () = assert!(core::mem::size_of::<abi::shared_info>() <= crate::mm::PAGE_SIZE);

/// Number of 2-level event channels: 64 words of 64 bits.
pub const NR_EVENT_CHANNELS: u32 = 64 * 64;

/// A page of our image whose mapping is replaced by Xen's shared_info frame.
static SHARED_INFO_PAGE: StaticPage = StaticPage::new();

fn base() -> *mut abi::shared_info {
    SHARED_INFO_PAGE.as_ptr().cast()
}

/// Maps Xen's shared_info frame (machine address from start_info) over our reserved page.
pub fn map(maddr: u64) -> hypercall::XenResult<()> {
    SHARED_INFO_PAGE.map_maddr(maddr)
}

fn vcpu0() -> *mut abi::vcpu_info {
    // SAFETY: in bounds of the shared_info page (vcpu_info is its first field).
    unsafe { core::ptr::addr_of_mut!((*base()).vcpu_info[0]) }
}

fn upcall_mask() -> &'static AtomicU8 {
    // SAFETY: a byte Xen and we both access only atomically; the page stays mapped for the
    // life of the domain. An atomic reference is the sound way to share a mutable byte.
    unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vcpu0()).evtchn_upcall_mask)) }
}

fn upcall_pending() -> &'static AtomicU8 {
    // SAFETY: as `upcall_mask`.
    unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vcpu0()).evtchn_upcall_pending)) }
}

/// Masks event upcalls on vCPU 0; returns whether they were masked before.
pub fn mask_upcalls() -> bool {
    upcall_mask().swap(1, Ordering::SeqCst) != 0
}

/// Reads and clears the "an event is pending" flag.
pub fn take_upcall_pending() -> bool {
    upcall_pending().swap(0, Ordering::SeqCst) != 0
}

/// Atomically takes the pending selector word (which 64-port words have pending bits).
pub fn take_pending_sel() -> u64 {
    // SAFETY: an 8-byte aligned word inside the mapped page, accessed only atomically.
    let sel =
        unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*vcpu0()).evtchn_pending_sel)) };
    sel.swap(0, Ordering::SeqCst)
}

fn pending_word(word: usize) -> &'static AtomicU64 {
    assert!(word < 64);
    // SAFETY: in bounds (checked above), aligned, accessed only atomically.
    unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*base()).evtchn_pending[word])) }
}

fn mask_word(word: usize) -> &'static AtomicU64 {
    assert!(word < 64);
    // SAFETY: as `pending_word`.
    unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*base()).evtchn_mask[word])) }
}

fn split(port: u32) -> (usize, u64) {
    assert!(port < NR_EVENT_CHANNELS, "event port out of range");
    ((port / 64) as usize, 1u64 << (port % 64))
}

/// The pending word `word` (ports word*64 .. word*64+63).
pub fn pending_bits(word: usize) -> u64 {
    pending_word(word).load(Ordering::SeqCst)
}

/// The mask word `word`.
pub fn mask_bits(word: usize) -> u64 {
    mask_word(word).load(Ordering::SeqCst)
}

pub fn is_pending(port: u32) -> bool {
    let (w, b) = split(port);
    pending_word(w).load(Ordering::SeqCst) & b != 0
}

/// Clears `port`'s pending bit; returns whether it was set.
pub fn clear_pending(port: u32) -> bool {
    let (w, b) = split(port);
    pending_word(w).fetch_and(!b, Ordering::SeqCst) & b != 0
}

pub fn set_mask(port: u32) {
    let (w, b) = split(port);
    mask_word(w).fetch_or(b, Ordering::SeqCst);
}

pub fn is_masked(port: u32) -> bool {
    let (w, b) = split(port);
    mask_word(w).load(Ordering::SeqCst) & b != 0
}

/// The faulting address of the last page fault (Xen stores it in vcpu_info.arch.cr2).
pub fn cr2() -> u64 {
    // SAFETY: an aligned field of the mapped page; a volatile read of a word Xen writes.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*vcpu0()).arch.cr2)) }
}

/// A consistent copy of vCPU 0's time record.
pub fn time_info() -> abi::vcpu_time_info {
    let t = unsafe_time_ptr();
    loop {
        // SAFETY: aligned fields of the mapped page, read volatile; consistency is checked by
        // the version protocol (odd = update in progress, changed = torn).
        let (v1, copy, v2) = unsafe {
            let v1 = core::ptr::read_volatile(core::ptr::addr_of!((*t).version));
            core::sync::atomic::fence(Ordering::Acquire);
            let copy = core::ptr::read_volatile(t);
            core::sync::atomic::fence(Ordering::Acquire);
            let v2 = core::ptr::read_volatile(core::ptr::addr_of!((*t).version));
            (v1, copy, v2)
        };
        if v1 & 1 == 0 && v1 == v2 {
            return copy;
        }
        core::hint::spin_loop();
    }
}

fn unsafe_time_ptr() -> *const abi::vcpu_time_info {
    // SAFETY: in bounds of vcpu_info[0].
    unsafe { core::ptr::addr_of!((*vcpu0()).time) }
}
