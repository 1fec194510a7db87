//! Raw hypercalls through the hypercall page, and one typed wrapper per hypercall the kernel uses.
//!
//! 64-bit PV ABI: the guest calls `HYPERCALL_PAGE + 32 * op`; arguments in rdi, rsi, rdx, r10, r8;
//! result in rax. Xen's stub saves rcx/r11 around its `syscall`, but a debug hypervisor poisons
//! the argument registers, so every argument register is treated as clobbered. The stub is
//! reached with `call`, which pushes: no `nostack`.

use core::arch::asm;
use core::fmt;

use xen_sys as abi;

extern "C" {
    /// The page Xen fills with hypercall stubs (defined in the boot crate).
    static HYPERCALL_PAGE: [u8; crate::mm::PAGE_SIZE];
}

/// A negative errno returned by Xen.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct XenError(pub i64);

impl XenError {
    pub const EINVAL: Self = Self(-22);

    pub fn name(self) -> &'static str {
        match self.0 {
            -1 => "EPERM",
            -2 => "ENOENT",
            -3 => "ESRCH",
            -11 => "EAGAIN",
            -12 => "ENOMEM",
            -14 => "EFAULT",
            -16 => "EBUSY",
            -17 => "EEXIST",
            -22 => "EINVAL",
            -28 => "ENOSPC",
            -38 => "ENOSYS",
            _ => "errno",
        }
    }
}

impl fmt::Debug for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

pub type XenResult<T> = Result<T, XenError>;

fn check(rc: i64) -> XenResult<i64> {
    if rc < 0 {
        Err(XenError(rc))
    } else {
        Ok(rc)
    }
}

fn stub(op: u32) -> usize {
    debug_assert!(op < 128);
    // Only the address of the extern static is taken; it is never read here.
    core::ptr::addr_of!(HYPERCALL_PAGE) as usize + 32 * op as usize
}

/// Issues hypercall `op` with five arguments (unused ones are passed as 0).
///
/// # Safety
/// The arguments must be valid for `op` as Xen's public headers define it: pointers point to
/// live, correctly laid out structures for the duration of the call.
pub unsafe fn hypercall5(op: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments; the stub is Xen's own code, preserves
    // every register but rax and the argument registers (declared clobbered), and returns.
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) stub(op),
            inlateout("rax") 0i64 => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

// ---- typed wrappers, one per hypercall ----------------------------------------------------

/// `console_io(CONSOLEIO_write)`: Xen's own console. Works for dom0; a release hypervisor drops
/// writes from a domU.
pub fn console_write(bytes: &[u8]) {
    // SAFETY: Xen reads `bytes.len()` bytes from a live slice.
    unsafe {
        hypercall5(
            abi::__HYPERVISOR_console_io,
            abi::CONSOLEIO_write as u64,
            bytes.len() as u64,
            bytes.as_ptr() as u64,
            0,
            0,
        );
    }
}

/// `sched_op(SCHEDOP_shutdown)`. Returns only if Xen refused.
pub fn shutdown(reason: u32) -> XenError {
    let mut arg = abi::sched_shutdown { reason };
    // SAFETY: `arg` is a live sched_shutdown for the duration of the call.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_sched_op,
            abi::SCHEDOP_shutdown as u64,
            &mut arg as *mut _ as u64,
            0,
            0,
            0,
        )
    };
    XenError(rc)
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe {
        hypercall5(
            abi::__HYPERVISOR_sched_op,
            abi::SCHEDOP_yield as u64,
            0,
            0,
            0,
            0,
        );
    }
}

/// `sched_op(SCHEDOP_block)`: sleep until an event is pending. Xen clears the upcall mask; the
/// event callback (see `traps`) masks it again before this returns.
pub fn sched_block() {
    // SAFETY: SCHEDOP_block takes no argument.
    unsafe {
        hypercall5(
            abi::__HYPERVISOR_sched_op,
            abi::SCHEDOP_block as u64,
            0,
            0,
            0,
            0,
        );
    }
}

/// `sched_op(SCHEDOP_poll)`: sleep (with events masked) until one of `ports` is pending or the
/// absolute system time `timeout_ns` passes (0: no timeout).
pub fn sched_poll(ports: &[u32], timeout_ns: u64) -> XenResult<()> {
    let mut arg = abi::sched_poll {
        ports: ports.as_ptr() as *mut _,
        nr_ports: ports.len() as u32,
        timeout: timeout_ns,
    };
    // SAFETY: `arg` and the port array it points to are live for the duration of the call.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_sched_op,
            abi::SCHEDOP_poll as u64,
            &mut arg as *mut _ as u64,
            0,
            0,
            0,
        )
    };
    check(rc).map(drop)
}

/// `set_trap_table`. The table ends with an entry whose address is 0.
pub fn set_trap_table(table: &[abi::trap_info]) -> XenResult<()> {
    assert!(
        table.last().is_some_and(|t| t.address == 0),
        "trap table must be terminated"
    );
    // SAFETY: Xen reads the terminated table during the call.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_set_trap_table,
            table.as_ptr() as u64,
            0,
            0,
            0,
            0,
        )
    };
    check(rc).map(drop)
}

use xen_abi::callback::{CallbackRegister, CALLBACKOP_REGISTER};
pub use xen_abi::callback::{
    CALLBACKF_MASK_EVENTS, CALLBACKTYPE_EVENT, CALLBACKTYPE_FAILSAFE, CALLBACKTYPE_SYSCALL,
};
const HYPERVISOR_CALLBACK_OP: u32 = 30;

/// `callback_op(CALLBACKOP_register)`.
pub fn callback_register(kind: u16, flags: u16, address: u64) -> XenResult<()> {
    let mut arg = CallbackRegister {
        callback_type: kind,
        flags,
        address,
    };
    // SAFETY: `arg` is live for the duration of the call.
    let rc = unsafe {
        hypercall5(
            HYPERVISOR_CALLBACK_OP,
            CALLBACKOP_REGISTER as u64,
            &mut arg as *mut _ as u64,
            0,
            0,
            0,
        )
    };
    check(rc).map(drop)
}

/// `mmu_update`: apply page-table writes (machine addresses) validated by Xen.
///
/// # Safety
/// The updates must not unmap or make writable anything the kernel relies on (its own image,
/// stacks, page tables).
pub unsafe fn mmu_update(updates: &[abi::mmu_update]) -> XenResult<()> {
    let mut done: u32 = 0;
    // SAFETY: the caller vouches for the effect; the array and `done` are live.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_mmu_update,
            updates.as_ptr() as u64,
            updates.len() as u64,
            &mut done as *mut u32 as u64,
            xen_abi::DOMID_SELF as u64,
            0,
        )
    };
    check(rc)?;
    if done as usize != updates.len() {
        return Err(XenError::EINVAL);
    }
    Ok(())
}

/// `UVMF_INVLPG`: flush this one address from the local TLB.
pub const UVMF_INVLPG: u64 = 2;

/// `update_va_mapping(va, pte, flags)`: replace the L1 entry that maps `va`.
///
/// # Safety
/// As [`mmu_update`]: the new mapping must not break anything the kernel relies on.
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> XenResult<()> {
    // SAFETY: the caller vouches for the effect.
    let rc = unsafe { hypercall5(abi::__HYPERVISOR_update_va_mapping, va, pte, flags, 0, 0) };
    check(rc).map(drop)
}

/// `mmuext_op`: pin/unpin tables, TLB flushes, base pointer switches.
///
/// # Safety
/// As [`mmu_update`].
pub unsafe fn mmuext_op(ops: &mut [abi::mmuext_op]) -> XenResult<()> {
    let mut done: u32 = 0;
    // SAFETY: the caller vouches for the effect; the array and `done` are live.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_mmuext_op,
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
            &mut done as *mut u32 as u64,
            xen_abi::DOMID_SELF as u64,
            0,
        )
    };
    check(rc).map(drop)
}

/// `event_channel_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point to the live structure `cmd` takes.
pub unsafe fn event_channel_op<T>(cmd: u32, arg: *mut T) -> XenResult<()> {
    // SAFETY: the caller vouches for `arg`.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_event_channel_op,
            cmd as u64,
            arg as u64,
            0,
            0,
            0,
        )
    };
    check(rc).map(drop)
}

/// `EVTCHNOP_send`.
pub fn evtchn_send(port: u32) -> XenResult<()> {
    let mut arg = abi::evtchn_send { port };
    // SAFETY: `arg` is a live evtchn_send.
    unsafe { event_channel_op(abi::EVTCHNOP_send, &mut arg) }
}

/// `grant_table_op(cmd, args, count)`.
///
/// # Safety
/// `args` must point to `count` live structures of the type `cmd` takes.
pub unsafe fn grant_table_op<T>(cmd: u32, args: *mut T, count: u32) -> XenResult<()> {
    // SAFETY: the caller vouches for `args`.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_grant_table_op,
            cmd as u64,
            args as u64,
            count as u64,
            0,
            0,
        )
    };
    check(rc).map(drop)
}

/// `set_timer_op(deadline)`: one-shot timer at absolute system time `deadline_ns` (0 cancels).
/// It raises VIRQ_TIMER.
pub fn set_timer_op(deadline_ns: u64) -> XenResult<()> {
    // SAFETY: set_timer_op takes a plain integer.
    let rc = unsafe { hypercall5(abi::__HYPERVISOR_set_timer_op, deadline_ns, 0, 0, 0, 0) };
    check(rc).map(drop)
}

/// `vcpu_op(cmd, vcpu, arg)`.
///
/// # Safety
/// `arg` must be what `cmd` expects, valid for the call (and for as long as Xen keeps it, for
/// the registration commands).
pub unsafe fn vcpu_op<T>(cmd: u32, vcpu: u32, arg: *mut T) -> XenResult<()> {
    // SAFETY: the caller's contract.
    let rc = unsafe {
        hypercall5(
            abi::__HYPERVISOR_vcpu_op,
            cmd.into(),
            vcpu.into(),
            arg as u64,
            0,
            0,
        )
    };
    check(rc).map(drop)
}

/// `xen_version(XENVER_version)`: (major, minor).
pub fn xen_version() -> (u32, u32) {
    // SAFETY: XENVER_version (0) takes no argument.
    let v = unsafe { hypercall5(abi::__HYPERVISOR_xen_version, 0, 0, 0, 0, 0) } as u32;
    (v >> 16, v & 0xffff)
}

/// `stack_switch(ss, esp)`: the kernel stack Xen switches to when guest user mode enters the
/// kernel (a syscall, an exception, an event).
///
/// # Safety
/// `esp` must be the top of a stack reserved for these entries, mapped and writable.
pub unsafe fn stack_switch(ss: u64, esp: u64) -> XenResult<()> {
    // SAFETY: plain integers; the caller vouches for the stack.
    let rc = unsafe { hypercall5(abi::__HYPERVISOR_stack_switch, ss, esp, 0, 0, 0) };
    check(rc).map(drop)
}

/// `MMUEXT_NEW_USER_BASEPTR`: the L4 table guest user mode runs on.
pub fn new_user_baseptr(l4_mfn: u64) -> XenResult<()> {
    let mut op = abi::mmuext_op {
        cmd: abi::MMUEXT_NEW_USER_BASEPTR,
        arg1: abi::mmuext_op__bindgen_ty_1 { mfn: l4_mfn },
        arg2: abi::mmuext_op__bindgen_ty_2 { nr_ents: 0 },
    };
    // SAFETY: changes only what user mode sees; the kernel's own tables stay loaded.
    unsafe { mmuext_op(core::slice::from_mut(&mut op)) }
}

/// `MMUEXT_TLB_FLUSH_LOCAL`: flushes this vCPU's TLB (what a switch between the kernel's and
/// user mode's tables costs, measured by a self-test).
pub fn tlb_flush_local() -> XenResult<()> {
    let mut op = abi::mmuext_op {
        cmd: abi::MMUEXT_TLB_FLUSH_LOCAL,
        arg1: abi::mmuext_op__bindgen_ty_1 { mfn: 0 },
        arg2: abi::mmuext_op__bindgen_ty_2 { nr_ents: 0 },
    };
    // SAFETY: a flush changes no mapping; the TLB refills from the same tables.
    unsafe { mmuext_op(core::slice::from_mut(&mut op)) }
}
