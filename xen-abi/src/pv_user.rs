//! 64-bit PV user mode: the selectors and flags an `iret` into guest user mode carries, how a
//! bounce frame tells which mode it interrupted, and the frame the kernel pushes for the
//! `iret` hypercall (`struct iret_context` without the three registers the hypercall page's
//! stub pushes itself).
//!
//! Xen runs a 64-bit PV kernel and its user mode both in ring 3 and tells them apart by which
//! L4 is loaded. The selectors are the same (`FLAT_RING3_CS64`), but a bounce frame for an
//! event or exception taken in kernel mode has the CS RPL cleared ("indicate kernel context
//! to guest", Xen's `create_bounce_frame`), and `HYPERVISOR_iret` switches to user mode
//! exactly when the CS it restores has RPL 3.

use core::mem::{offset_of, size_of};

/// `FLAT_RING3_CS64`: code selector of both 64-bit PV modes.
pub const FLAT_USER_CS64: u64 = 0xe033;
/// `FLAT_RING3_SS64`: stack selector of both 64-bit PV modes.
pub const FLAT_USER_SS64: u64 = 0xe02b;
/// `FLAT_KERNEL_SS64`, what `HYPERVISOR_stack_switch` takes.
pub const FLAT_KERNEL_SS64: u64 = 0xe02b;
/// rflags for user mode: IF (upcalls unmasked, so the budget timer can preempt) and the
/// always-one bit 1.
pub const USER_RFLAGS: u64 = (1 << 9) | (1 << 1);

/// Whether a bounce frame's CS says it interrupted guest user mode.
pub const fn frame_from_user(cs: u64) -> bool {
    cs & 3 == 3
}

/// What the kernel pushes before jumping to the `iret` hypercall stub, lowest address first
/// (the stub pushes r11, rcx and rax below it to complete Xen's `struct iret_context`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IretFrame {
    /// `VGCF_*` flags: 0 (a plain iret, not the return half of a syscall).
    pub flags: u64,
    /// Where user mode starts.
    pub rip: u64,
    /// [`FLAT_USER_CS64`].
    pub cs: u64,
    /// [`USER_RFLAGS`].
    pub rflags: u64,
    /// The user stack pointer.
    pub rsp: u64,
    /// [`FLAT_USER_SS64`].
    pub ss: u64,
}

const _: () = assert!(size_of::<IretFrame>() == 48);
const _: () = assert!(offset_of!(IretFrame, rip) == 8);
const _: () = assert!(offset_of!(IretFrame, ss) == 40);

impl IretFrame {
    /// The frame that enters user mode at `rip` on stack `rsp`.
    pub const fn to_user(rip: u64, rsp: u64) -> Self {
        IretFrame {
            flags: 0,
            rip,
            cs: FLAT_USER_CS64,
            rflags: USER_RFLAGS,
            rsp,
            ss: FLAT_USER_SS64,
        }
    }
}

/// A user stack: `pages` pages ending at `top`, an unmapped guard page below and above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserStack {
    /// The guard page below the stack (the first address an overflow touches is below `low`).
    pub guard_below: u64,
    /// The lowest stack address.
    pub low: u64,
    /// One past the highest stack address: the initial stack pointer.
    pub top: u64,
    /// The guard page above.
    pub guard_above: u64,
}

/// Why a user stack cannot be laid out at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackLayoutError {
    /// The base is not page aligned.
    Misaligned,
    /// The stack has no pages.
    Empty,
    /// The stack and its guards do not fit in the lower (user) half of the address space.
    OutOfRange,
}

impl core::fmt::Display for StackLayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StackLayoutError::Misaligned => "The stack's base is not page aligned.",
            StackLayoutError::Empty => "The stack has no pages.",
            StackLayoutError::OutOfRange => {
                "The stack and its guard pages do not fit in the lower half."
            }
        })
    }
}

/// Lowest address above the canonical lower half.
const LOWER_HALF_END: u64 = 1 << 47;

impl UserStack {
    /// The stack whose lower guard page starts at `base`, with `pages` pages above it.
    pub const fn at(base: u64, pages: u64) -> Result<Self, StackLayoutError> {
        const PAGE: u64 = 4096;
        if base % PAGE != 0 {
            return Err(StackLayoutError::Misaligned);
        }
        if pages == 0 {
            return Err(StackLayoutError::Empty);
        }
        let end = match pages.checked_add(2) {
            Some(n) => match n.checked_mul(PAGE) {
                Some(bytes) => base.checked_add(bytes),
                None => None,
            },
            None => None,
        };
        match end {
            Some(end) if end <= LOWER_HALF_END && base != 0 => {
                let low = base + PAGE;
                let top = low + pages * PAGE;
                Ok(UserStack {
                    guard_below: base,
                    low,
                    top,
                    guard_above: top,
                })
            }
            _ => Err(StackLayoutError::OutOfRange),
        }
    }

    /// Whether a fault address lies in one of the guard pages (an overflow or underflow).
    pub const fn in_guard(&self, addr: u64) -> bool {
        (addr >= self.guard_below && addr < self.low)
            || (addr >= self.guard_above && addr < self.guard_above + 4096)
    }

    /// The stack's page addresses.
    pub fn pages(&self) -> impl Iterator<Item = u64> {
        (self.low..self.top).step_by(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_user_frames_are_told_apart_by_the_rpl() {
        assert!(frame_from_user(FLAT_USER_CS64));
        // What create_bounce_frame leaves for a frame taken in kernel mode.
        assert!(!frame_from_user(FLAT_USER_CS64 & !3));
    }

    #[test]
    fn the_iret_frame_enters_user_mode_with_upcalls_on() {
        let f = IretFrame::to_user(0x1000, 0x2000);
        assert!(frame_from_user(f.cs));
        assert_eq!(f.rflags & (1 << 9), 1 << 9);
        assert_eq!((f.rip, f.rsp, f.flags), (0x1000, 0x2000, 0));
    }

    #[test]
    fn stacks_have_guards_on_both_sides() {
        let s = UserStack::at(0x20_0000, 4).unwrap();
        assert_eq!(s.low, 0x20_1000);
        assert_eq!(s.top, 0x20_5000);
        assert!(s.in_guard(0x20_0ff8));
        assert!(s.in_guard(0x20_5000));
        assert!(!s.in_guard(0x20_1000));
        assert!(!s.in_guard(0x20_4fff));
        assert!(!s.in_guard(0x20_6000));
        assert_eq!(s.pages().count(), 4);
    }

    #[test]
    fn bad_stack_layouts_are_refused() {
        assert_eq!(UserStack::at(0x1001, 1), Err(StackLayoutError::Misaligned));
        assert_eq!(UserStack::at(0x1000, 0), Err(StackLayoutError::Empty));
        assert_eq!(UserStack::at(0, 1), Err(StackLayoutError::OutOfRange));
        assert_eq!(
            UserStack::at(LOWER_HALF_END - 4096, 1),
            Err(StackLayoutError::OutOfRange)
        );
        assert_eq!(
            UserStack::at(0x1000, u64::MAX),
            Err(StackLayoutError::OutOfRange)
        );
    }
}
