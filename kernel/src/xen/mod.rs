//! Xen interfaces, one file per subsystem (in the manner of Mini-OS).

pub mod console;
pub mod control;
pub mod events;
pub mod grant;
pub mod hypercall;
pub mod shared_info;
pub mod start_info;
pub mod time;
pub mod traps;
pub mod xenstore;
