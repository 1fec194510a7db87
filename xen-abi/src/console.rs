//! The PV console ring page (`io/console.h`, Xen 4.17 layout): the guest writes `out` and
//! reads `in`; `xenconsoled` does the opposite. The page is shared with the backend, so the
//! kernel accesses it through raw pointers only; [`crate::ring`] does the index arithmetic.

use crate::ring::RingGeometry;
use core::mem::{offset_of, size_of};

/// Bytes of the backend-to-guest (`in`) ring.
pub const CONSOLE_IN_SIZE: usize = 1024;
/// Bytes of the guest-to-backend (`out`) ring.
pub const CONSOLE_OUT_SIZE: usize = 2048;

/// `struct xencons_interface`.
#[repr(C)]
pub struct XenconsInterface {
    /// Input from the backend (keyboard).
    pub input: [u8; CONSOLE_IN_SIZE],
    /// Output to the backend.
    pub output: [u8; CONSOLE_OUT_SIZE],
    /// Guest's consumer index of `input`.
    pub in_cons: u32,
    /// Backend's producer index of `input`.
    pub in_prod: u32,
    /// Backend's consumer index of `output`.
    pub out_cons: u32,
    /// Guest's producer index of `output`.
    pub out_prod: u32,
}
const _: () = assert!(offset_of!(XenconsInterface, input) == 0);
const _: () = assert!(offset_of!(XenconsInterface, output) == 1024);
const _: () = assert!(offset_of!(XenconsInterface, in_cons) == 3072);
const _: () = assert!(offset_of!(XenconsInterface, in_prod) == 3076);
const _: () = assert!(offset_of!(XenconsInterface, out_cons) == 3080);
const _: () = assert!(offset_of!(XenconsInterface, out_prod) == 3084);
const _: () = assert!(size_of::<XenconsInterface>() == 3088);
const _: () = assert!(size_of::<XenconsInterface>() <= crate::PAGE_SIZE);

/// Geometry of the `in` ring (`MASK_XENCONS_IDX(idx, intf->in)`).
pub const CONSOLE_IN_RING: RingGeometry = RingGeometry::new(CONSOLE_IN_SIZE as u32);
/// Geometry of the `out` ring.
pub const CONSOLE_OUT_RING: RingGeometry = RingGeometry::new(CONSOLE_OUT_SIZE as u32);
