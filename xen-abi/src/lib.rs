//! Everything about Xen that is pure data or pure logic, so the kernel's Xen modules stay thin
//! wrappers around hypercalls and shared-memory accesses, and the logic is unit-tested on Linux.
//!
//! Module map:
//! - [`sys`]: re-export of `xen-sys` (ABI constants and structs of `xen.h`, `event_channel.h`,
//!   `sched.h`); its hypercall functions are NOT to be used (wrong register for argument 5,
//!   `nostack` around a `call`). [`sys_layout`] checks its structs against Xen's headers.
//! - [`grant`]: grant table v1 ABI (`grant_table.h`), typed `GNTST_*` errors, and
//!   [`grant::GrantRefAllocator`], a free list of grant references.
//! - [`callback`]: `callback_op` ABI (`callback.h`).
//! - [`vcpu`]: `vcpu_op` ABI (`vcpu.h`): single-shot timer.
//! - [`console`]: PV console ring page (`io/console.h`).
//! - [`ring`]: index arithmetic of byte rings (console, xenstore), with hostile-index checks.
//! - [`xenstore`]: xenstore ring page and wire ABI (`io/xs_wire.h`), request encoding, reply
//!   reassembly and validation, permissions, transaction retry policy.
//! - [`xenbus`]: `XenbusState` (`io/xenbus.h`).
//! - [`evtchn`]: the fair two-level scan of pending event-channel ports.
//! - [`pte`]: x86-64 PV page-table entry arithmetic.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub use xen_sys as sys;

pub mod callback;
pub mod console;
pub mod evtchn;
pub mod grant;
pub mod pte;
pub mod pv_user;
pub mod ring;
pub mod sys_layout;
pub mod vcpu;
pub mod xenbus;
pub mod xenstore;

/// Xen's domain identifier (`domid_t`).
pub type DomId = u16;

/// `DOMID_SELF` (`xen.h`): "the calling domain" in hypercall arguments.
pub const DOMID_SELF: DomId = 0x7FF0;

/// The guest page size on x86.
pub const PAGE_SIZE: usize = 4096;
