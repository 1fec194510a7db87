//! Fault injection, for the `handler-faults` testbed scenario only (never in a production
//! image): every method but `ok` breaks its handler in one way. In the service VM each must
//! end as that one call's `HandlerFault` (or `DeadlineExceeded`), logged and counted, with the
//! VM and every other call going on. On the host (its generated `faults-service-hostd`) the
//! same methods would take the server process down: it is not meant to be run there.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use xenrpc_proto::{define_service, CallContext, ServiceEnv, Status};

define_service! {
    /// Methods that each break their handler in one way.
    pub mod faults {
        name = "faults", id = 1200, version = 1;
        /// An ordinary call: returns its argument plus one.
        fn ok = 1 (u64) -> u64;
        /// Overwrites its own return address and returns through it.
        fn smash_return = 2 (()) -> u64;
        /// Recurses without bound, with a page of locals per level.
        fn overflow_stack = 3 (()) -> u64;
        /// Writes a byte at the given address (the argument window, its code, the kernel).
        fn write_at = 4 (u64) -> u64;
        /// Reads a byte at the given address.
        fn read_at = 5 (u64) -> u64;
        /// Jumps into a data page of its own heap.
        fn jump_into_data = 6 (()) -> u64;
        /// Executes a privileged instruction (`cli`).
        fn privileged = 7 (()) -> u64;
        /// Divides by zero (the instruction, not Rust's checked division).
        fn divide_by_zero = 8 (()) -> u64;
        /// Panics.
        fn panic = 9 (()) -> u64;
        /// Loops for ever.
        fn spin = 10 (()) -> u64;
        /// Allocates until the heap is gone.
        fn allocate_without_bound = 11 (()) -> u64;
    }
}

/// The fault injector (stateless).
#[derive(Debug, Default)]
pub struct Faults;

#[inline(never)]
fn deeper(level: u64) -> u64 {
    // Never true; only there so the recursion is not unconditional to the compiler.
    if core::hint::black_box(level) == u64::MAX {
        return 0;
    }
    let locals = [level; 512];
    core::hint::black_box(&locals);
    deeper(level + 1).wrapping_add(locals[level as usize % 512])
}

impl faults::Server for Faults {
    fn ok(&mut self, _: &mut CallContext<'_>, n: u64) -> Result<u64, Status> {
        Ok(n.wrapping_add(1))
    }

    fn smash_return(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        // SAFETY: none: the point is to return to an address an attacker chose.
        unsafe {
            core::arch::asm!("push {0}", "ret", in(reg) 0x4141_4141_4141u64, options(noreturn))
        }
    }

    fn overflow_stack(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        Ok(deeper(0))
    }

    fn write_at(&mut self, _: &mut CallContext<'_>, addr: u64) -> Result<u64, Status> {
        // SAFETY: none: the address is whatever the caller named.
        unsafe { core::ptr::write_volatile(addr as *mut u8, 0x5a) };
        Ok(0)
    }

    fn read_at(&mut self, _: &mut CallContext<'_>, addr: u64) -> Result<u64, Status> {
        // SAFETY: none: the address is whatever the caller named.
        Ok(unsafe { core::ptr::read_volatile(addr as *const u8) }.into())
    }

    fn jump_into_data(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        // `ret`, on the heap.
        let code = Box::new([0xc3u8; 16]);
        // SAFETY: none: heap pages are not executable, which is the point.
        let f: extern "C" fn() = unsafe { core::mem::transmute(code.as_ptr()) };
        f();
        Ok(0)
    }

    fn privileged(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        // SAFETY: none: a privileged instruction in user mode.
        unsafe { core::arch::asm!("cli") };
        Ok(0)
    }

    fn divide_by_zero(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        let divisor = core::hint::black_box(0u64);
        let quotient: u64;
        // SAFETY: none: divides by zero.
        unsafe {
            core::arch::asm!("div {d}", d = in(reg) divisor, inout("rax") 1u64 => quotient,
                inout("rdx") 0u64 => _)
        };
        Ok(quotient)
    }

    fn panic(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        panic!("faults.panic was called")
    }

    fn spin(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        loop {
            core::hint::spin_loop();
        }
    }

    fn allocate_without_bound(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        let mut hoard: Vec<Box<[u8; 4096]>> = Vec::new();
        loop {
            hoard.push(Box::new([1u8; 4096]));
            core::hint::black_box(&hoard);
        }
    }
}

/// The services of this crate.
pub fn services(_env: &ServiceEnv<'_>) -> faults::Handler<Faults> {
    faults::Handler(Faults)
}
