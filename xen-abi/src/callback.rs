//! `callback_op` hypercall ABI (`callback.h`): registering the event upcall, failsafe and
//! syscall entry points of a PV guest.

use core::mem::{offset_of, size_of};

/// `CALLBACKOP_register`: install a callback.
pub const CALLBACKOP_REGISTER: u32 = 0;
/// `CALLBACKOP_unregister`: remove a callback.
pub const CALLBACKOP_UNREGISTER: u32 = 1;

/// `CALLBACKTYPE_event`: the event-channel upcall.
pub const CALLBACKTYPE_EVENT: u16 = 0;
/// `CALLBACKTYPE_failsafe`: Xen could not return to the guest (bad segment on iret).
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
/// `CALLBACKTYPE_syscall`: 64-bit `syscall` entry (x86-64 only).
pub const CALLBACKTYPE_SYSCALL: u16 = 2;
/// `CALLBACKTYPE_nmi`.
pub const CALLBACKTYPE_NMI: u16 = 4;
/// `CALLBACKTYPE_sysenter`.
pub const CALLBACKTYPE_SYSENTER: u16 = 5;
/// `CALLBACKTYPE_syscall32`.
pub const CALLBACKTYPE_SYSCALL32: u16 = 7;

/// `CALLBACKF_mask_events`: Xen masks event upcalls when it enters this callback.
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// `struct callback_register` (x86-64: `xen_callback_t` is an `unsigned long` address).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackRegister {
    /// `CALLBACKTYPE_*`.
    pub callback_type: u16,
    /// `CALLBACKF_*`.
    pub flags: u16,
    /// Entry point (virtual address).
    pub address: u64,
}
const _: () = assert!(size_of::<CallbackRegister>() == 16);
const _: () = assert!(offset_of!(CallbackRegister, callback_type) == 0);
const _: () = assert!(offset_of!(CallbackRegister, flags) == 2);
const _: () = assert!(offset_of!(CallbackRegister, address) == 8);

/// `struct callback_unregister`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackUnregister {
    /// `CALLBACKTYPE_*`.
    pub callback_type: u16,
    /// Padding in the header.
    pub unused: u16,
}
const _: () = assert!(size_of::<CallbackUnregister>() == 4);
