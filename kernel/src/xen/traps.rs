//! Exceptions and the event callback.
//!
//! Xen delivers an exception or an event upcall to a 64-bit PV kernel on its kernel stack with
//! `rcx` and `r11` pushed above the hardware-style frame: `[rcx, r11, (error), rip, cs, rflags,
//! rsp, ss]`. Each entry stub reloads rcx/r11, pushes a uniform `(vector, error)` pair and joins
//! a common path that saves every register and calls [`xenrpc_trap_handler`]. Return is through
//! the `iret` hypercall: push a flags word and jump to its transfer point.
//!
//! Faults are fatal with an exact message unless the faulting instruction is one of the probe
//! instructions below, which lets self-tests prove that a protected page really faults.

use core::sync::atomic::{AtomicU64, Ordering};

use xen_sys as abi;

use super::{hypercall, shared_info};

/// `FLAT_KERNEL_CS64`: the code selector Xen gives 64-bit PV kernels.
const FLAT_KERNEL_CS64: u16 = 0xe033;
/// trap_info flag: mask event upcalls on entry (an interrupt gate).
const TI_MASK_EVENTS: u8 = 4;
/// Pseudo vectors for the callbacks sharing the common path.
const VECTOR_EVENT_CALLBACK: u64 = 256;
const VECTOR_FAILSAFE: u64 = 257;
const VECTOR_SYSCALL: u64 = 258;
/// rflags.IF: in a PV frame it mirrors "upcalls unmasked"; `iret` restores the mask from it.
const RFLAGS_IF: u64 = 1 << 9;

/// The registers saved by the common path, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, vector) == 15 * 8);

core::arch::global_asm!(
    r#"
    .macro trap_entry name:req, vector:req, has_error:req
        .globl \name
    \name:
        mov rcx, [rsp]
        mov r11, [rsp + 8]
        add rsp, 16
        .if \has_error == 0
        push 0
        .endif
        push \vector
        jmp xenrpc_trap_common
    .endm

    .pushsection .text.xenrpc_traps, "ax", @progbits
    trap_entry xenrpc_trap_0, 0, 0
    trap_entry xenrpc_trap_1, 1, 0
    trap_entry xenrpc_trap_3, 3, 0
    trap_entry xenrpc_trap_4, 4, 0
    trap_entry xenrpc_trap_5, 5, 0
    trap_entry xenrpc_trap_6, 6, 0
    trap_entry xenrpc_trap_7, 7, 0
    trap_entry xenrpc_trap_8, 8, 1
    trap_entry xenrpc_trap_10, 10, 1
    trap_entry xenrpc_trap_11, 11, 1
    trap_entry xenrpc_trap_12, 12, 1
    trap_entry xenrpc_trap_13, 13, 1
    trap_entry xenrpc_trap_14, 14, 1
    trap_entry xenrpc_trap_16, 16, 0
    trap_entry xenrpc_trap_17, 17, 1
    trap_entry xenrpc_trap_18, 18, 0
    trap_entry xenrpc_trap_19, 19, 0
    trap_entry xenrpc_event_callback, 256, 0
    trap_entry xenrpc_failsafe_callback, 257, 0
    trap_entry xenrpc_syscall_callback, 258, 0

    xenrpc_trap_common:
        push rax
        push rbx
        push rcx
        push rdx
        push rsi
        push rdi
        push rbp
        push r8
        push r9
        push r10
        push r11
        push r12
        push r13
        push r14
        push r15
        mov rdi, rsp
        mov rbx, rsp
        and rsp, -16
        call xenrpc_trap_handler
        mov rsp, rbx
        pop r15
        pop r14
        pop r13
        pop r12
        pop r11
        pop r10
        pop r9
        pop r8
        pop rbp
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rbx
        pop rax
        add rsp, 16
        push 0
        jmp HYPERCALL_PAGE + 32 * {iret}

    /* Probes: one instruction that may fault, and where to resume if it does. */
    .globl xenrpc_probe_write_u8
    xenrpc_probe_write_u8:
    xenrpc_probe_write_insn:
        mov byte ptr [rdi], sil
        xor eax, eax
        ret
    xenrpc_probe_write_fixup:
        mov eax, 1
        ret

    .globl xenrpc_probe_read_u8
    xenrpc_probe_read_u8:
    xenrpc_probe_read_insn:
        movzx eax, byte ptr [rdi]
        ret
    xenrpc_probe_read_fixup:
        mov eax, 0x100
        ret
    .popsection

    .pushsection .rodata.xenrpc_extable, "a", @progbits
    .balign 8
    .globl XENRPC_EXTABLE
    XENRPC_EXTABLE:
        .quad xenrpc_probe_write_insn, xenrpc_probe_write_fixup
        .quad xenrpc_probe_read_insn, xenrpc_probe_read_fixup
    .popsection
    "#,
    iret = const abi::__HYPERVISOR_iret,
);

extern "C" {
    fn xenrpc_trap_0();
    fn xenrpc_trap_1();
    fn xenrpc_trap_3();
    fn xenrpc_trap_4();
    fn xenrpc_trap_5();
    fn xenrpc_trap_6();
    fn xenrpc_trap_7();
    fn xenrpc_trap_8();
    fn xenrpc_trap_10();
    fn xenrpc_trap_11();
    fn xenrpc_trap_12();
    fn xenrpc_trap_13();
    fn xenrpc_trap_14();
    fn xenrpc_trap_16();
    fn xenrpc_trap_17();
    fn xenrpc_trap_18();
    fn xenrpc_trap_19();
    fn xenrpc_event_callback();
    fn xenrpc_failsafe_callback();
    fn xenrpc_syscall_callback();
    fn xenrpc_probe_write_u8(addr: *mut u8, value: u8) -> u32;
    fn xenrpc_probe_read_u8(addr: *const u8) -> u32;
    static XENRPC_EXTABLE: [[u64; 2]; 2];
}

pub(crate) fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        _ => "unknown exception",
    }
}

/// Installs the trap table and the event and failsafe callbacks. Upcalls stay masked: the
/// kernel polls event state itself and only lets Xen deliver an upcall to end `SCHEDOP_block`.
pub fn init() {
    let entries: [(u8, u8, unsafe extern "C" fn()); 17] = [
        (0, 0, xenrpc_trap_0),
        (1, 0, xenrpc_trap_1),
        (3, 3, xenrpc_trap_3),
        (4, 3, xenrpc_trap_4),
        (5, 0, xenrpc_trap_5),
        (6, 0, xenrpc_trap_6),
        (7, 0, xenrpc_trap_7),
        (8, 0, xenrpc_trap_8),
        (10, 0, xenrpc_trap_10),
        (11, 0, xenrpc_trap_11),
        (12, 0, xenrpc_trap_12),
        (13, 0, xenrpc_trap_13),
        (14, 0, xenrpc_trap_14),
        (16, 0, xenrpc_trap_16),
        (17, 0, xenrpc_trap_17),
        (18, 0, xenrpc_trap_18),
        (19, 0, xenrpc_trap_19),
    ];
    let mut table = [abi::trap_info {
        vector: 0,
        flags: 0,
        cs: 0,
        address: 0,
    }; 18];
    for (slot, (vector, dpl, entry)) in table.iter_mut().zip(entries) {
        *slot = abi::trap_info {
            vector,
            flags: TI_MASK_EVENTS | dpl,
            cs: FLAT_KERNEL_CS64,
            address: entry as usize as u64,
        };
    }
    if let Err(e) = hypercall::set_trap_table(&table) {
        crate::fatal(format_args!("set_trap_table failed: {e}"));
    }
    let callbacks = [
        (
            hypercall::CALLBACKTYPE_EVENT,
            hypercall::CALLBACKF_MASK_EVENTS,
            xenrpc_event_callback as *const () as u64,
            "event",
        ),
        (
            hypercall::CALLBACKTYPE_FAILSAFE,
            0,
            xenrpc_failsafe_callback as *const () as u64,
            "failsafe",
        ),
        // Guest user mode's `syscall` (the only way out of `user::run` but a fault).
        (
            hypercall::CALLBACKTYPE_SYSCALL,
            hypercall::CALLBACKF_MASK_EVENTS,
            xenrpc_syscall_callback as *const () as u64,
            "syscall",
        ),
    ];
    for (kind, flags, address, name) in callbacks {
        if let Err(e) = hypercall::callback_register(kind, flags, address) {
            crate::fatal(format_args!("registering the {name} callback failed: {e}"));
        }
    }
}

/// What an expected fault looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u64,
    pub error: u64,
    pub cr2: u64,
}

static LAST_FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static LAST_FAULT_ERROR: AtomicU64 = AtomicU64::new(0);
static LAST_FAULT_CR2: AtomicU64 = AtomicU64::new(0);

fn last_fault() -> Fault {
    Fault {
        vector: LAST_FAULT_VECTOR.load(Ordering::SeqCst),
        error: LAST_FAULT_ERROR.load(Ordering::SeqCst),
        cr2: LAST_FAULT_CR2.load(Ordering::SeqCst),
    }
}

/// Writes `value` at `addr`, reporting a fault instead of dying of it.
pub fn probe_write(addr: *mut u8, value: u8) -> Result<(), Fault> {
    // SAFETY: the probe is a single byte store whose fault is caught by the trap handler; a
    // caller probes only pages whose contents it owns (or that are meant to be unwritable).
    match unsafe { xenrpc_probe_write_u8(addr, value) } {
        0 => Ok(()),
        _ => Err(last_fault()),
    }
}

/// Reads the byte at `addr`, reporting a fault instead of dying of it.
pub fn probe_read(addr: *const u8) -> Result<u8, Fault> {
    // SAFETY: a single byte load whose fault is caught by the trap handler.
    let v = unsafe { xenrpc_probe_read_u8(addr) };
    if v & 0x100 != 0 {
        Err(last_fault())
    } else {
        Ok(v as u8)
    }
}

fn fixup_for(rip: u64) -> Option<u64> {
    // SAFETY: a read-only table in our image, written by the assembler.
    let table = unsafe { &*core::ptr::addr_of!(XENRPC_EXTABLE) };
    table.iter().find(|e| e[0] == rip).map(|e| e[1])
}

#[no_mangle]
extern "C" fn xenrpc_trap_handler(frame: &mut TrapFrame) {
    if xen_abi::pv_user::frame_from_user(frame.cs) {
        return crate::user::from_user(frame, VECTOR_SYSCALL, VECTOR_EVENT_CALLBACK);
    }
    match frame.vector {
        VECTOR_EVENT_CALLBACK => {
            // Keep upcalls masked when `iret` returns: the interrupted code (the end of
            // SCHEDOP_block) scans the pending bitmaps itself.
            frame.rflags &= !RFLAGS_IF;
        }
        VECTOR_SYSCALL => crate::fatal(format_args!(
            "syscall callback entered from kernel mode at rip={:#x}",
            frame.rip
        )),
        VECTOR_FAILSAFE => crate::fatal(format_args!(
            "failsafe callback: Xen could not return to the kernel"
        )),
        vector => {
            let cr2 = if vector == 14 { shared_info::cr2() } else { 0 };
            if let Some(fixup) = fixup_for(frame.rip) {
                LAST_FAULT_VECTOR.store(vector, Ordering::SeqCst);
                LAST_FAULT_ERROR.store(frame.error, Ordering::SeqCst);
                LAST_FAULT_CR2.store(cr2, Ordering::SeqCst);
                frame.rip = fixup;
                return;
            }
            crate::fatal(format_args!(
                "{} (vector {}) at rip={:#x} cr2={:#x} error={:#x} rsp={:#x}",
                vector_name(vector),
                vector,
                frame.rip,
                cr2,
                frame.error,
                frame.rsp
            ));
        }
    }
}
