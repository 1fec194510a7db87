//! Fault injection, for the `handler-faults` testbed scenario only (never in a production
//! image): every method but `ok`, `remember` and `recall` breaks its handler in one way. In the service VM each must
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
        /// Keeps a number in the service's memory; returns the one kept before.
        fn remember = 12 (u64) -> u64;
        /// The number kept (0 as built: after a reset of the domain too).
        fn recall = 13 (()) -> u64;
    }
}

define_service! {
    /// Another service, in a protection domain of its own: what `faults.read_at` must not
    /// reach.
    pub mod neighbour {
        name = "neighbour", id = 1201, version = 1;
        /// Where its secret lives (an address on its own heap).
        fn secret_at = 1 (()) -> u64;
        /// Its secret, read by itself.
        fn secret = 2 (()) -> u64;
    }
}

/// The fault injector; its one piece of state is the number `remember` keeps.
#[derive(Debug, Default)]
pub struct Faults {
    kept: u64,
}

/// The neighbour: a secret on its heap.
#[derive(Debug)]
pub struct Neighbour {
    secret: Box<u64>,
}

/// The neighbour's secret: a recognisable value.
pub const NEIGHBOUR_SECRET: u64 = 0x5ec2_e7ed_0b1e_c7ed;

impl neighbour::Server for Neighbour {
    fn secret_at(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        Ok(&*self.secret as *const u64 as u64)
    }

    fn secret(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        Ok(*self.secret)
    }
}

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

    fn remember(&mut self, _: &mut CallContext<'_>, n: u64) -> Result<u64, Status> {
        Ok(core::mem::replace(&mut self.kept, n))
    }

    fn recall(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<u64, Status> {
        Ok(self.kept)
    }
}

/// The fault injector, in a protection domain of its own.
pub fn services(_env: &ServiceEnv<'_>) -> faults::Handler<Faults> {
    faults::Handler(Faults::default())
}

/// The neighbour, in another.
pub fn neighbour(_env: &ServiceEnv<'_>) -> neighbour::Handler<Neighbour> {
    neighbour::Handler(Neighbour {
        secret: Box::new(NEIGHBOUR_SECRET),
    })
}
