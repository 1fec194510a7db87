//! Guest user mode: entry and exit, and that whatever user code does — overflow its stack into
//! the guard page, read kernel memory, write its own code, execute its stack, run a privileged
//! instruction, divide by zero, loop forever — ends as one exit and the kernel goes on.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;
use xen_abi::pv_user::UserStack;

use super::{Test, TestError, When};
use crate::fail;
use crate::mm::{self, pagetable::AddressSpace};
use crate::user::{self, UserExit};
use crate::xen::start_info::BootInfo;

pub const TESTS: &[Test] = &[
    Test {
        name: "user-mode-entry-exit",
        when: When::Always,
        run: entry_and_exit,
    },
    Test {
        name: "user-stack-guard-page",
        when: When::Always,
        run: stack_overflow,
    },
    Test {
        name: "user-mode-faults",
        when: When::Always,
        run: faults,
    },
    Test {
        name: "user-mode-budget",
        when: When::Always,
        run: budget,
    },
    Test {
        name: "user-mode-budget-renewed-by-progress",
        when: When::Always,
        run: budget_renewed,
    },
];

// User-mode code for the tests: assembly, so that nothing but what is written touches memory.
core::arch::global_asm!(
    r#"
    .pushsection .text.xenrpc_user_tests, "ax", @progbits
    .globl xenrpc_utest_increment
    xenrpc_utest_increment:
        lea rdi, [rdi + 1]
        xor eax, eax
        syscall
        ud2
    .globl xenrpc_utest_recurse
    xenrpc_utest_recurse:
        push rdi
        jmp xenrpc_utest_recurse
    .globl xenrpc_utest_load
    xenrpc_utest_load:
        mov rdi, [rdi]
        xor eax, eax
        syscall
        ud2
    .globl xenrpc_utest_store
    xenrpc_utest_store:
        mov byte ptr [rdi], 0
        xor eax, eax
        syscall
        ud2
    .globl xenrpc_utest_jump
    xenrpc_utest_jump:
        jmp rdi
    .globl xenrpc_utest_cli
    xenrpc_utest_cli:
        cli
        xor eax, eax
        syscall
        ud2
    .globl xenrpc_utest_divide
    xenrpc_utest_divide:
        xor edx, edx
        xor ecx, ecx
        mov eax, 1
        div rcx
        ud2
    .globl xenrpc_utest_spin
    xenrpc_utest_spin:
        jmp xenrpc_utest_spin
    .globl xenrpc_utest_progress_once
    xenrpc_utest_progress_once:
        mov dword ptr [rdi], 1
    1:  jmp 1b
    .globl xenrpc_utest_progress_forever
    xenrpc_utest_progress_forever:
        xor eax, eax
    2:  inc eax
        mov dword ptr [rdi], eax
        jmp 2b
    .globl xenrpc_utest_bad_syscall
    xenrpc_utest_bad_syscall:
        mov eax, 0x7777
        syscall
        ud2
    .popsection
    "#
);

extern "C" {
    fn xenrpc_utest_increment();
    fn xenrpc_utest_recurse();
    fn xenrpc_utest_load();
    fn xenrpc_utest_store();
    fn xenrpc_utest_jump();
    fn xenrpc_utest_cli();
    fn xenrpc_utest_divide();
    fn xenrpc_utest_spin();
    fn xenrpc_utest_bad_syscall();
    fn xenrpc_utest_progress_once();
    fn xenrpc_utest_progress_forever();
}

/// Where the test space's stack lies (L4 slot 6, far from everything of the kernel's).
const STACK_BASE: u64 = 0x0000_0300_0000_0000;
const STACK_PAGES: u64 = 4;
/// Generous: a run takes microseconds, but TCG is slow and the host may be busy.
const BUDGET_NS: u64 = 200_000_000;

/// A kernel variable user mode must not see.
static KERNEL_SECRET: AtomicU64 = AtomicU64::new(0x5ec2e7);

struct TestSpace {
    space: AddressSpace,
    stack: UserStack,
    /// The kernel's address of the stack's lowest page (user code's progress count).
    low_kva: u64,
}

static SPACE: Once<Result<TestSpace, alloc::string::String>> = Once::new();

fn test_space() -> Result<&'static TestSpace, TestError> {
    let built = SPACE.call_once(|| {
        let space = mm::new_user_space().map_err(|e| alloc::format!("{e}"))?;
        let stack = UserStack::at(STACK_BASE, STACK_PAGES).map_err(|e| alloc::format!("{e}"))?;
        let mut low_kva = 0;
        for va in stack.pages() {
            let pfn = mm::alloc_frame().ok_or("no frame for the user stack")?;
            mm::map_frames(Some(&space), va, pfn.va(), 1, mm::USER_RW_NX)
                .map_err(|e| alloc::format!("mapping the user stack: {e}"))?;
            if va == stack.low {
                low_kva = pfn.va();
            }
        }
        Ok(TestSpace {
            space,
            stack,
            low_kva,
        })
    });
    match built {
        Ok(space) => Ok(space),
        Err(e) => Err(TestError(alloc::format!("building a user space: {e}"))),
    }
}

fn run(f: unsafe extern "C" fn(), arg: u64) -> Result<UserExit, TestError> {
    let t = test_space()?;
    Ok(user::run(
        &t.space,
        f as usize as u64,
        t.stack.top,
        arg,
        BUDGET_NS,
        None,
    ))
}

fn entry_and_exit(_: &BootInfo) -> Result<(), TestError> {
    for value in [0u64, 41, u64::MAX - 1] {
        match run(xenrpc_utest_increment, value)? {
            UserExit::Returned(v) if v == value + 1 => {}
            other => fail!(
                "user code given {value} ended: {other}, expected to return {}",
                value + 1
            ),
        }
    }
    match run(xenrpc_utest_bad_syscall, 0)? {
        UserExit::BadSyscall { rax: 0x7777, .. } => {}
        other => fail!("an unknown system call ended: {other}"),
    }
    log_entry_cost()
}

/// Entries timed for the cost line (in one batch: a clock read per entry would be timed too).
const COST_ROUNDS: u64 = 1000;

/// Logs what an empty entry into user mode and back costs here, beside a null hypercall and a
/// TLB flush, for the protection's cost in `docs/protected-execution.md` (a figure, not a
/// verdict: asserted is only that every entry returned and every flush succeeded).
fn log_entry_cost() -> Result<(), TestError> {
    use crate::xen::{hypercall, time};
    let started = time::now_ns();
    for value in 0..COST_ROUNDS {
        match run(xenrpc_utest_increment, value)? {
            UserExit::Returned(v) if v == value + 1 => {}
            other => fail!("timed entry {value} ended: {other}"),
        }
    }
    let entered = time::now_ns();
    for _ in 0..COST_ROUNDS {
        core::hint::black_box(hypercall::xen_version());
    }
    let hypercalled = time::now_ns();
    for _ in 0..COST_ROUNDS {
        if let Err(e) = hypercall::tlb_flush_local() {
            fail!("MMUEXT_TLB_FLUSH_LOCAL failed: {e}");
        }
    }
    let flushed = time::now_ns();
    let entry_ns = (entered - started) / COST_ROUNDS;
    let hypercall_ns = (hypercalled - entered) / COST_ROUNDS;
    let flush_ns = (flushed - hypercalled) / COST_ROUNDS;
    // An entry and its exit are two page-table switches, each a TLB flush.
    crate::log!(
        "measure user-mode entry and exit: {entry_ns} ns (mean of {COST_ROUNDS}; a null hypercall {hypercall_ns} ns, a local TLB flush {flush_ns} ns)"
    );
    Ok(())
}

fn stack_overflow(_: &BootInfo) -> Result<(), TestError> {
    let t = test_space()?;
    match run(xenrpc_utest_recurse, 0)? {
        UserExit::Fault {
            vector: 14, cr2, ..
        } if t.stack.in_guard(cr2) => {}
        other => {
            fail!("unbounded recursion ended: {other}, expected a page fault in the guard page")
        }
    }
    // And the kernel and user mode still work.
    match run(xenrpc_utest_increment, 1)? {
        UserExit::Returned(2) => Ok(()),
        other => fail!("after the overflow a plain run ended: {other}"),
    }
}

/// Page-fault error code bits.
const PF_WRITE: u64 = 1 << 1;
const PF_FETCH: u64 = 1 << 4;

fn faults(_: &BootInfo) -> Result<(), TestError> {
    let t = test_space()?;
    let secret = KERNEL_SECRET.as_ptr() as u64;
    match run(xenrpc_utest_load, secret)? {
        UserExit::Fault {
            vector: 14, cr2, ..
        } if cr2 == secret => {}
        other => fail!("reading kernel data ended: {other}"),
    }
    let code = xenrpc_utest_increment as *const () as u64;
    match run(xenrpc_utest_store, code)? {
        UserExit::Fault {
            vector: 14,
            cr2,
            error,
            ..
        } if cr2 == code && error & PF_WRITE != 0 => {}
        other => fail!("writing its own code ended: {other}"),
    }
    match run(xenrpc_utest_jump, t.stack.low)? {
        UserExit::Fault {
            vector: 14,
            cr2,
            error,
            ..
        } if cr2 == t.stack.low && error & PF_FETCH != 0 => {}
        other => fail!("jumping into its stack ended: {other}"),
    }
    match run(xenrpc_utest_cli, 0)? {
        UserExit::Fault { vector: 13, .. } => {}
        other => fail!("cli in user mode ended: {other}"),
    }
    match run(xenrpc_utest_divide, 0)? {
        UserExit::Fault { vector: 0, .. } => {}
        other => fail!("dividing by zero ended: {other}"),
    }
    if KERNEL_SECRET.load(Ordering::SeqCst) != 0x5ec2e7 {
        fail!("the kernel variable changed");
    }
    Ok(())
}

fn budget(_: &BootInfo) -> Result<(), TestError> {
    let t = test_space()?;
    let code = xenrpc_utest_spin as *const () as u64;
    match user::run(&t.space, code, t.stack.top, 0, 20_000_000, None) {
        UserExit::BudgetExceeded { rip } if rip == code => {}
        other => fail!("an endless loop ended: {other}, expected its budget to run out"),
    }
    match run(xenrpc_utest_increment, 7)? {
        UserExit::Returned(8) => Ok(()),
        other => fail!("after the preemption a plain run ended: {other}"),
    }
}

/// A run that publishes progress gets a fresh budget when its count grew, and only then: one
/// that counts one piece and then loops is stopped after two budgets, not one; one that
/// counts for ever (forging progress) is stopped all the same: its count is past the maximum.
fn budget_renewed(_: &BootInfo) -> Result<(), TestError> {
    const BUDGET: u64 = 20_000_000;
    let t = test_space()?;
    let progress = user::Progress {
        count_va: t.low_kva,
        max: 4,
    };
    for (f, name, renewed) in [
        (
            xenrpc_utest_progress_once as unsafe extern "C" fn(),
            "one piece",
            true,
        ),
        (
            xenrpc_utest_progress_forever,
            "a count past its maximum",
            false,
        ),
    ] {
        // SAFETY: the stack's lowest page, a frame of the test space's, unused by the runs
        // (they touch only their counter there); user mode is not running.
        unsafe { core::ptr::write_volatile(t.low_kva as *mut u32, 0) };
        let code = f as usize as u64;
        let started = crate::xen::time::now_ns();
        let exit = user::run(
            &t.space,
            code,
            t.stack.top,
            t.stack.low,
            BUDGET,
            Some(progress),
        );
        let took = crate::xen::time::now_ns().saturating_sub(started);
        if !matches!(exit, UserExit::BudgetExceeded { .. }) {
            fail!("{name}: the run ended {exit}, expected its budget to run out");
        }
        // Not a speed check: without a renewal the timer stops the run after one budget.
        if renewed && took < 2 * BUDGET {
            fail!("{name}: stopped after {took} ns, before a renewed budget ran out");
        }
    }
    match run(xenrpc_utest_increment, 7)? {
        UserExit::Returned(8) => Ok(()),
        other => fail!("after the renewed runs a plain run ended: {other}"),
    }
}
