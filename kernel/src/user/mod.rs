//! Guest user mode: running code in an address space of its own, on a stack with guard pages,
//! under a CPU budget, so that whatever it does ends as one [`UserExit`] and the kernel goes
//! on (see `docs/protected-execution.md`).
//!
//! [`run`] loads the space as the user L4 (`MMUEXT_NEW_USER_BASEPTR`), arms the one-shot timer,
//! saves the kernel's callee-saved registers and stack pointer, and `iret`s into user mode
//! with every other register cleared. User mode comes back only through the kernel's entry
//! points, on the entry stack named by `stack_switch`: a `syscall` (the exit call, or anything
//! else: refused), an exception, or the timer's upcall. Each ends the run by recording the
//! exit and jumping back onto the saved kernel stack ([`from_user`]); an upcall for any other
//! event leaves its ports pending for the dispatch loop and resumes user mode.
//!
//! Faults taken in kernel mode are not handled here: they stay fatal (`xen::traps`).

#[cfg(not(feature = "unprotected"))]
mod clean_copy;
#[cfg(not(feature = "unprotected"))]
pub mod domain;
#[cfg(not(feature = "unprotected"))]
mod stand_in;

/// How a protection domain's calls are bounded and its faults answered.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "unprotected", allow(dead_code))]
pub struct FaultPolicy {
    /// System time one call may run.
    pub budget_ns: u64,
    /// Reset the domain to its clean copy after this many faults (0: never).
    pub reset_after: u64,
}

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use xen_abi::pv_user::{self, IretFrame};

use crate::mm::pagetable::AddressSpace;
use crate::xen::events::{self, Port};
use crate::xen::traps::TrapFrame;
use crate::xen::{hypercall, shared_info, time};

/// `rax` of the exit call: `syscall` with `rdi` the value to hand back.
pub const SYSCALL_EXIT: u64 = 0;
/// `rax` of the panic call: the code panicked (its message is in its domain's page).
pub const SYSCALL_PANIC: u64 = 1;

/// How a run of user code ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserExit {
    /// It made the exit call with this value.
    Returned(u64),
    /// It took an exception: vector, error code, faulting address (page faults), rip.
    Fault {
        vector: u64,
        error: u64,
        cr2: u64,
        rip: u64,
    },
    /// It panicked (the panic call, made at `rip`).
    Panicked { rip: u64 },
    /// It was still running when its budget ran out, at `rip`.
    BudgetExceeded { rip: u64 },
    /// It made a `syscall` other than the exit call (`rax`), at `rip`.
    BadSyscall { rax: u64, rip: u64 },
}

impl core::fmt::Display for UserExit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            UserExit::Returned(v) => write!(f, "returned {v:#x}"),
            UserExit::Fault {
                vector,
                error,
                cr2,
                rip,
            } => write!(
                f,
                "{} (vector {vector}) at rip={rip:#x} cr2={cr2:#x} error={error:#x}",
                crate::xen::traps::vector_name(vector)
            ),
            UserExit::Panicked { rip } => write!(f, "panicked (rip={rip:#x})"),
            UserExit::BudgetExceeded { rip } => {
                write!(f, "ran past its CPU budget (preempted at rip={rip:#x})")
            }
            UserExit::BadSyscall { rax, rip } => {
                write!(f, "made an unknown system call {rax:#x} at rip={rip:#x}")
            }
        }
    }
}

/// Bytes of the stack Xen enters the kernel on from user mode.
const ENTRY_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct EntryStack([u8; ENTRY_STACK_BYTES]);

/// The entry stack; only Xen (pushing bounce frames) and the entry path touch it.
static mut ENTRY_STACK: EntryStack = EntryStack([0; ENTRY_STACK_BYTES]);

/// The kernel stack pointer saved by `xenrpc_user_enter`, restored by `xenrpc_user_resume`.
#[no_mangle]
static XENRPC_USER_KERNEL_RSP: AtomicU64 = AtomicU64::new(0);

/// Absolute system time the budget timer is due next; 0 when no run is on.
static DEADLINE_NS: AtomicU64 = AtomicU64::new(0);
/// The vCPU's running time ([`time::running_ns`]) when the current piece of the run began:
/// a budget is CPU time, so time the vCPU waited for a physical CPU does not count.
static PIECE_STARTED_NS: AtomicU64 = AtomicU64::new(0);
/// The current run's budget, and where (a kernel address) the run counts the work it has
/// done, 0 for none (see [`Progress`]), and the count seen when the budget was last renewed.
static BUDGET_NS: AtomicU64 = AtomicU64::new(0);
static PROGRESS_VA: AtomicU64 = AtomicU64::new(0);
static PROGRESS_SEEN: AtomicU64 = AtomicU64::new(0);
static PROGRESS_MAX: AtomicU64 = AtomicU64::new(0);
/// How the current run ended (written by the entry path, taken by [`run`]).
static EXIT: Mutex<Option<UserExit>> = Mutex::new(None);
/// The user L4 loaded last (its machine frame), so a run of the same space needs no switch.
static LOADED_L4: AtomicU64 = AtomicU64::new(0);
/// The VIRQ_TIMER port, bound at the first run (the self-tests bind and close it before).
static TIMER_PORT: Mutex<Option<Port>> = Mutex::new(None);

core::arch::global_asm!(
    r#"
    .pushsection .text.xenrpc_user, "ax", @progbits
    /* xenrpc_user_enter(frame: *const IretFrame, arg): iret into user mode with `arg` in rdi;
       "returns" when the entry path jumps to xenrpc_user_resume. */
    .globl xenrpc_user_enter
    xenrpc_user_enter:
        push rbx
        push rbp
        push r12
        push r13
        push r14
        push r15
        mov [rip + XENRPC_USER_KERNEL_RSP], rsp
        push qword ptr [rdi + {ss}]
        push qword ptr [rdi + {rsp}]
        push qword ptr [rdi + {rflags}]
        push qword ptr [rdi + {cs}]
        push qword ptr [rdi + {rip}]
        push qword ptr [rdi + {flags}]
        mov rdi, rsi
        xor eax, eax
        xor ebx, ebx
        xor ecx, ecx
        xor edx, edx
        xor esi, esi
        xor ebp, ebp
        xor r8d, r8d
        xor r9d, r9d
        xor r10d, r10d
        xor r11d, r11d
        xor r12d, r12d
        xor r13d, r13d
        xor r14d, r14d
        xor r15d, r15d
        jmp HYPERCALL_PAGE + 32 * {iret}

    .globl xenrpc_user_resume
    xenrpc_user_resume:
        mov rsp, [rip + XENRPC_USER_KERNEL_RSP]
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbp
        pop rbx
        ret
    .popsection
    "#,
    ss = const core::mem::offset_of!(IretFrame, ss),
    rsp = const core::mem::offset_of!(IretFrame, rsp),
    rflags = const core::mem::offset_of!(IretFrame, rflags),
    cs = const core::mem::offset_of!(IretFrame, cs),
    rip = const core::mem::offset_of!(IretFrame, rip),
    flags = const core::mem::offset_of!(IretFrame, flags),
    iret = const xen_sys::__HYPERVISOR_iret,
);

extern "C" {
    fn xenrpc_user_enter(frame: *const IretFrame, arg: u64);
    fn xenrpc_user_resume() -> !;
}

/// Names the entry stack to Xen. Called once at boot, after the trap table.
pub fn init() {
    let top = core::ptr::addr_of!(ENTRY_STACK) as u64 + ENTRY_STACK_BYTES as u64;
    // SAFETY: ENTRY_STACK is reserved for entries from user mode and nothing else uses it.
    if let Err(e) = unsafe { hypercall::stack_switch(pv_user::FLAT_KERNEL_SS64, top) } {
        crate::fatal(format_args!("stack_switch failed: {e}"));
    }
}

fn timer_port() -> Port {
    let mut guard = TIMER_PORT.lock();
    if let Some(port) = *guard {
        return port;
    }
    // Budgets count the vCPU's running time; without the runstate area, system time.
    if let Err(e) = time::register_runstate() {
        crate::log!("user: no vCPU runstate area ({e}): handler budgets count system time");
    }
    let port = match events::bind_virq(xen_sys::VIRQ_TIMER) {
        Ok(port) => port,
        Err(e) => crate::fatal(format_args!("binding VIRQ_TIMER for user budgets: {e}")),
    };
    // The timer only has to interrupt user mode; in kernel mode its event means nothing.
    if let Err(e) = events::set_handler(port, alloc::sync::Arc::new(|_| {})) {
        crate::fatal(format_args!("VIRQ_TIMER handler: {e}"));
    }
    if let Err(e) = events::unmask(port) {
        crate::fatal(format_args!("unmasking VIRQ_TIMER: {e}"));
    }
    *guard = Some(port);
    port
}

/// Makes the budget timer fire by `deadline` (an earlier firing is re-armed from the entry
/// path), its port cleared so its firing raises an upcall.
fn arm_budget(deadline: u64) {
    shared_info::clear_pending(timer_port());
    if let Err(e) = time::set_timer_by(deadline) {
        crate::fatal(format_args!("arming the user budget timer failed: {e}"));
    }
}

/// A count of finished pieces of work that a run publishes in memory the kernel reads (a
/// batch's calls done): each time the budget runs out the kernel looks at it, and if it grew
/// (by at most `max` in all) the run gets a fresh budget for the next piece. So every piece
/// has at least one budget and at most two, and a run at most `max + 1` budgets, whatever it
/// writes there. Budgets are the vCPU's running time (its runstate): a run the hypervisor
/// preempts is not charged for the wait.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The kernel's address of the `u32` count.
    pub count_va: u64,
    /// The most the count may reach.
    pub max: u32,
}

/// Runs user code of `space` at `entry` with stack pointer `stack_top` and `arg` in `rdi`,
/// for at most `budget_ns` of system time (renewed as `progress` says).
pub fn run(
    space: &AddressSpace,
    entry: u64,
    stack_top: u64,
    arg: u64,
    budget_ns: u64,
    progress: Option<Progress>,
) -> UserExit {
    let l4 = space.root().0;
    if LOADED_L4.swap(l4, Ordering::SeqCst) != l4 {
        if let Err(e) = hypercall::new_user_baseptr(l4) {
            LOADED_L4.store(0, Ordering::SeqCst);
            crate::fatal(format_args!("MMUEXT_NEW_USER_BASEPTR failed: {e}"));
        }
    }
    *EXIT.lock() = None;
    BUDGET_NS.store(budget_ns.max(1), Ordering::SeqCst);
    PROGRESS_VA.store(progress.map_or(0, |p| p.count_va), Ordering::SeqCst);
    PROGRESS_MAX.store(progress.map_or(0, |p| p.max.into()), Ordering::SeqCst);
    PROGRESS_SEEN.store(0, Ordering::SeqCst);
    // Binds the timer and registers the runstate area at the first run, before its clock is
    // read.
    timer_port();
    PIECE_STARTED_NS.store(time::running_ns(), Ordering::SeqCst);
    let deadline = time::now_ns().saturating_add(budget_ns.max(1));
    DEADLINE_NS.store(deadline, Ordering::SeqCst);
    arm_budget(deadline);
    // SAFETY: enters user mode on the user's own stack; the only way back is the entry path,
    // which restores this stack and the callee-saved registers (a C call as far as the
    // compiler knows). User mode cannot reach kernel memory: its L4 maps none.
    unsafe { xenrpc_user_enter(&IretFrame::to_user(entry, stack_top), arg) };
    DEADLINE_NS.store(0, Ordering::SeqCst);
    match EXIT.lock().take() {
        Some(exit) => exit,
        None => crate::fatal(format_args!("user mode came back without an exit")),
    }
}

/// Whether the current run's progress count grew since its budget was last renewed (never
/// past its maximum); notes the new count.
fn progressed() -> bool {
    let va = PROGRESS_VA.load(Ordering::SeqCst);
    if va == 0 {
        return false;
    }
    // SAFETY: the count's kernel address, named by `run`'s caller for this run, 4-aligned and
    // mapped for as long as the run lasts; user code may write it at any time (read once).
    let count = u64::from(unsafe { core::ptr::read_volatile(va as *const u32) });
    let (seen, max) = (
        PROGRESS_SEEN.load(Ordering::SeqCst),
        PROGRESS_MAX.load(Ordering::SeqCst),
    );
    if count > seen && count <= max {
        PROGRESS_SEEN.store(count, Ordering::SeqCst);
        true
    } else {
        false
    }
}

fn finish(exit: UserExit) -> ! {
    *EXIT.lock() = Some(exit);
    // SAFETY: a run is on (the frame came from user mode), so the saved kernel stack is that
    // of `run`'s call to xenrpc_user_enter, below which nothing is live.
    unsafe { xenrpc_user_resume() }
}

/// Entry from user mode (the trap handler saw a user CS): ends the run, or for an event that
/// is not the budget's end, leaves it for the dispatch loop and returns to user mode.
pub fn from_user(frame: &mut TrapFrame, syscall_vector: u64, event_vector: u64) {
    let rip = frame.rip;
    if frame.vector == syscall_vector {
        finish(match frame.rax {
            SYSCALL_EXIT => UserExit::Returned(frame.rdi),
            SYSCALL_PANIC => UserExit::Panicked { rip },
            rax => UserExit::BadSyscall { rax, rip },
        });
    }
    if frame.vector == event_vector {
        let mut deadline = DEADLINE_NS.load(Ordering::SeqCst);
        let now = time::now_ns();
        if now >= deadline {
            // Due: how much CPU the piece has had (the vCPU may have waited meanwhile).
            let budget = BUDGET_NS.load(Ordering::SeqCst);
            let running = time::running_ns();
            let used = running.saturating_sub(PIECE_STARTED_NS.load(Ordering::SeqCst));
            let left = if used < budget {
                budget - used
            } else if progressed() {
                PIECE_STARTED_NS.store(running, Ordering::SeqCst);
                budget
            } else {
                finish(UserExit::BudgetExceeded { rip });
            };
            deadline = now.saturating_add(left);
            DEADLINE_NS.store(deadline, Ordering::SeqCst);
        }
        // Another event, or the timer a little early: keep its ports for the dispatch loop,
        // re-arm, and let user mode go on (the frame keeps IF set).
        events::defer_pending();
        arm_budget(deadline);
        return;
    }
    let cr2 = if frame.vector == 14 {
        shared_info::cr2()
    } else {
        0
    };
    finish(UserExit::Fault {
        vector: frame.vector,
        error: frame.error,
        cr2,
        rip,
    });
}
