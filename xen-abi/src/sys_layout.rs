//! Compile-time checks of the `xen-sys` structs we use against Xen's public headers (x86-64):
//! `xen.h`, `arch-x86/xen.h`, `arch-x86/xen-x86_64.h`, `event_channel.h`, `sched.h`.
//! A mismatch fails the build, so a wrong binding can never reach a hypercall or a shared page.
//!
//! Header facts not visible in the `xen-sys` types:
//! - `vcpu_time_info.pad1[0]` is the `flags` byte (`XEN_PVCLOCK_*`) of interface versions after
//!   0x040600; `xen-sys` was generated with the pre-4.6 layout that calls it padding.
//! - `start_info.console` is a union: `domU { mfn, evtchn }` for guests, `dom0 { info_off,
//!   info_size }` when `SIF_INITDOMAIN` is set.

use crate::sys;
use core::mem::{offset_of, size_of};

/// Number of `vcpu_info` slots embedded in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_MAX_VCPUS: usize = 32;

/// Words of the two-level `evtchn_pending`/`evtchn_mask` bitmaps (`sizeof(xen_ulong_t) * 8`).
pub const EVTCHN_WORDS: usize = 64;

/// Bits per event-channel bitmap word.
pub const EVTCHN_BITS_PER_WORD: usize = 64;

/// Ports addressable by the two-level ABI: 64 words of 64 bits.
pub const EVTCHN_2L_NR_CHANNELS: usize = EVTCHN_WORDS * EVTCHN_BITS_PER_WORD;

// start_info (xen.h): 1168 bytes on x86-64.
const _: () = assert!(size_of::<sys::start_info>() == 1168);
const _: () = assert!(offset_of!(sys::start_info, magic) == 0);
const _: () = assert!(offset_of!(sys::start_info, nr_pages) == 32);
const _: () = assert!(offset_of!(sys::start_info, shared_info) == 40);
const _: () = assert!(offset_of!(sys::start_info, flags) == 48);
const _: () = assert!(offset_of!(sys::start_info, store_mfn) == 56);
const _: () = assert!(offset_of!(sys::start_info, store_evtchn) == 64);
const _: () = assert!(offset_of!(sys::start_info, console) == 72);
const _: () = assert!(size_of::<sys::start_info__bindgen_ty_1>() == 16);
const _: () = assert!(offset_of!(sys::start_info__bindgen_ty_1__bindgen_ty_1, mfn) == 0);
const _: () = assert!(offset_of!(sys::start_info__bindgen_ty_1__bindgen_ty_1, evtchn) == 8);
const _: () = assert!(offset_of!(sys::start_info__bindgen_ty_1__bindgen_ty_2, info_off) == 0);
const _: () = assert!(offset_of!(sys::start_info__bindgen_ty_1__bindgen_ty_2, info_size) == 4);
const _: () = assert!(offset_of!(sys::start_info, pt_base) == 88);
const _: () = assert!(offset_of!(sys::start_info, nr_pt_frames) == 96);
const _: () = assert!(offset_of!(sys::start_info, mfn_list) == 104);
const _: () = assert!(offset_of!(sys::start_info, mod_start) == 112);
const _: () = assert!(offset_of!(sys::start_info, mod_len) == 120);
const _: () = assert!(offset_of!(sys::start_info, cmd_line) == 128);
const _: () = assert!(offset_of!(sys::start_info, first_p2m_pfn) == 1152);
const _: () = assert!(offset_of!(sys::start_info, nr_p2m_frames) == 1160);

// vcpu_time_info (xen.h): 32 bytes.
const _: () = assert!(size_of::<sys::vcpu_time_info>() == 32);
const _: () = assert!(offset_of!(sys::vcpu_time_info, version) == 0);
const _: () = assert!(offset_of!(sys::vcpu_time_info, tsc_timestamp) == 8);
const _: () = assert!(offset_of!(sys::vcpu_time_info, system_time) == 16);
const _: () = assert!(offset_of!(sys::vcpu_time_info, tsc_to_system_mul) == 24);
const _: () = assert!(offset_of!(sys::vcpu_time_info, tsc_shift) == 28);
const _: () = assert!(offset_of!(sys::vcpu_time_info, pad1) == 29);

// arch_vcpu_info (arch-x86/xen-x86_64.h): cr2 + pad.
const _: () = assert!(size_of::<sys::arch_vcpu_info>() == 16);

// vcpu_info (xen.h): 64 bytes, one cache line.
const _: () = assert!(size_of::<sys::vcpu_info>() == 64);
const _: () = assert!(offset_of!(sys::vcpu_info, evtchn_upcall_pending) == 0);
const _: () = assert!(offset_of!(sys::vcpu_info, evtchn_upcall_mask) == 1);
const _: () = assert!(offset_of!(sys::vcpu_info, evtchn_pending_sel) == 8);
const _: () = assert!(offset_of!(sys::vcpu_info, arch) == 16);
const _: () = assert!(offset_of!(sys::vcpu_info, time) == 32);

// arch_shared_info (arch-x86/xen.h): six unsigned longs.
const _: () = assert!(size_of::<sys::arch_shared_info>() == 48);

// shared_info (xen.h): 32 vcpu_info, then the two-level event bitmaps, then wallclock.
const _: () = assert!(offset_of!(sys::shared_info, vcpu_info) == 0);
const _: () = assert!(offset_of!(sys::shared_info, evtchn_pending) == 2048);
const _: () = assert!(offset_of!(sys::shared_info, evtchn_mask) == 2560);
const _: () = assert!(offset_of!(sys::shared_info, wc_version) == 3072);
const _: () = assert!(offset_of!(sys::shared_info, wc_sec) == 3076);
const _: () = assert!(offset_of!(sys::shared_info, wc_nsec) == 3080);
const _: () = assert!(offset_of!(sys::shared_info, wc_sec_hi) == 3084);
const _: () = assert!(offset_of!(sys::shared_info, arch) == 3088);
const _: () = assert!(size_of::<sys::shared_info>() == 3136);
const _: () = assert!(size_of::<sys::shared_info>() <= crate::PAGE_SIZE);
const _: () = assert!(
    size_of::<[sys::xen_ulong_t; EVTCHN_WORDS]>() == EVTCHN_WORDS * EVTCHN_BITS_PER_WORD / 8
);
const _: () = assert!(sys::XEN_LEGACY_MAX_VCPUS as usize == LEGACY_MAX_VCPUS);

// trap_info (arch-x86/xen.h): 16 bytes.
const _: () = assert!(size_of::<sys::trap_info>() == 16);
const _: () = assert!(offset_of!(sys::trap_info, vector) == 0);
const _: () = assert!(offset_of!(sys::trap_info, flags) == 1);
const _: () = assert!(offset_of!(sys::trap_info, cs) == 2);
const _: () = assert!(offset_of!(sys::trap_info, address) == 8);

// mmu_update (xen.h): ptr, val.
const _: () = assert!(size_of::<sys::mmu_update>() == 16);
const _: () = assert!(offset_of!(sys::mmu_update, ptr) == 0);
const _: () = assert!(offset_of!(sys::mmu_update, val) == 8);

// mmuext_op (xen.h): cmd, arg1 union, arg2 union.
const _: () = assert!(size_of::<sys::mmuext_op>() == 24);
const _: () = assert!(offset_of!(sys::mmuext_op, cmd) == 0);
const _: () = assert!(offset_of!(sys::mmuext_op, arg1) == 8);
const _: () = assert!(offset_of!(sys::mmuext_op, arg2) == 16);

// event_channel.h ops.
const _: () = assert!(size_of::<sys::evtchn_port_t>() == 4);
const _: () = assert!(size_of::<sys::evtchn_alloc_unbound>() == 8);
const _: () = assert!(offset_of!(sys::evtchn_alloc_unbound, dom) == 0);
const _: () = assert!(offset_of!(sys::evtchn_alloc_unbound, remote_dom) == 2);
const _: () = assert!(offset_of!(sys::evtchn_alloc_unbound, port) == 4);
const _: () = assert!(size_of::<sys::evtchn_bind_interdomain>() == 12);
const _: () = assert!(offset_of!(sys::evtchn_bind_interdomain, remote_dom) == 0);
const _: () = assert!(offset_of!(sys::evtchn_bind_interdomain, remote_port) == 4);
const _: () = assert!(offset_of!(sys::evtchn_bind_interdomain, local_port) == 8);
const _: () = assert!(size_of::<sys::evtchn_bind_virq>() == 12);
const _: () = assert!(offset_of!(sys::evtchn_bind_virq, virq) == 0);
const _: () = assert!(offset_of!(sys::evtchn_bind_virq, vcpu) == 4);
const _: () = assert!(offset_of!(sys::evtchn_bind_virq, port) == 8);
const _: () = assert!(size_of::<sys::evtchn_send>() == 4);
const _: () = assert!(size_of::<sys::evtchn_close>() == 4);
const _: () = assert!(size_of::<sys::evtchn_unmask>() == 4);
const _: () = assert!(sys::EVTCHNOP_bind_interdomain == 0);
const _: () = assert!(sys::EVTCHNOP_close == 3);
const _: () = assert!(sys::EVTCHNOP_send == 4);
const _: () = assert!(sys::EVTCHNOP_alloc_unbound == 6);
const _: () = assert!(sys::EVTCHNOP_unmask == 9);

// sched.h ops.
const _: () = assert!(size_of::<sys::sched_shutdown>() == 4);
const _: () = assert!(size_of::<sys::sched_poll>() == 24);
const _: () = assert!(offset_of!(sys::sched_poll, ports) == 0);
const _: () = assert!(offset_of!(sys::sched_poll, nr_ports) == 8);
const _: () = assert!(offset_of!(sys::sched_poll, timeout) == 16);
const _: () = assert!(sys::SCHEDOP_yield == 0);
const _: () = assert!(sys::SCHEDOP_block == 1);
const _: () = assert!(sys::SCHEDOP_shutdown == 2);
const _: () = assert!(sys::SCHEDOP_poll == 3);
const _: () = assert!(sys::SHUTDOWN_poweroff == 0);
const _: () = assert!(sys::SHUTDOWN_crash == 3);

// Hypercall numbers the kernel uses (xen.h).
const _: () = assert!(sys::__HYPERVISOR_mmu_update == 1);
const _: () = assert!(sys::__HYPERVISOR_console_io == 18);
const _: () = assert!(sys::__HYPERVISOR_grant_table_op == 20);
const _: () = assert!(sys::__HYPERVISOR_vcpu_op == 24);
const _: () = assert!(sys::__HYPERVISOR_mmuext_op == 26);
const _: () = assert!(sys::__HYPERVISOR_sched_op == 29);
const _: () = assert!(sys::__HYPERVISOR_callback_op == 30);
const _: () = assert!(sys::__HYPERVISOR_event_channel_op == 32);

// start_info flags (xen.h).
const _: () = assert!(sys::SIF_PRIVILEGED == 1);
const _: () = assert!(sys::SIF_INITDOMAIN == 2);
