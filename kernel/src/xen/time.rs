//! Monotonic time from Xen's per-vCPU time record, the vCPU's running time (its runstate
//! area), and the one-shot timer.

use super::{hypercall, shared_info};

fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed in PV guest mode (Xen does not set CR4.TSD for PV guests) and
    // has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Scales a TSC delta to nanoseconds as public/xen.h's vcpu_time_info defines.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift < 0 {
        delta >> (-shift) as u32
    } else {
        delta << shift as u32
    };
    ((shifted as u128 * mul as u128) >> 32) as u64
}

/// Nanoseconds of Xen system time (since the host booted), monotonic.
pub fn now_ns() -> u64 {
    let t = shared_info::time_info();
    let delta = rdtsc().wrapping_sub(t.tsc_timestamp);
    t.system_time + scale_delta(delta, t.tsc_to_system_mul, t.tsc_shift)
}

/// When the one-shot timer was last armed to fire (system time; 0: never or cancelled).
static TIMER_AT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Arms the one-shot timer: VIRQ_TIMER fires at absolute system time `deadline_ns`.
pub fn set_timer(deadline_ns: u64) -> hypercall::XenResult<()> {
    hypercall::set_timer_op(deadline_ns)?;
    TIMER_AT.store(deadline_ns, core::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Makes VIRQ_TIMER fire no later than `deadline_ns`: no hypercall when the timer is already
/// armed for a time between now and then (it fires early, and whoever waits for
/// `deadline_ns` arms it again then). What a run of user code per call pays instead of a
/// hypercall.
pub fn set_timer_by(deadline_ns: u64) -> hypercall::XenResult<()> {
    let at = TIMER_AT.load(core::sync::atomic::Ordering::SeqCst);
    if at > now_ns() && at <= deadline_ns {
        return Ok(());
    }
    set_timer(deadline_ns)
}

/// The vCPU's runstate, which Xen keeps up to date once registered ([`register_runstate`]).
/// Xen writes it while this vCPU is not running (at a context switch, or as it enters kernel
/// mode after one that happened in user mode, whose space does not map it).
#[repr(C, align(64))]
struct RunstateArea(core::cell::UnsafeCell<xen_abi::vcpu::VcpuRunstateInfo>);

// SAFETY: one vCPU; Xen writes the area only while the vCPU does not run, and the kernel only
// reads it.
unsafe impl Sync for RunstateArea {}

static RUNSTATE: RunstateArea = RunstateArea(core::cell::UnsafeCell::new(
    xen_abi::vcpu::VcpuRunstateInfo {
        state: 0,
        state_entry_time: 0,
        time: [0; 4],
    },
));
static RUNSTATE_REGISTERED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Asks Xen to keep the vCPU's runstate in [`RUNSTATE`] (what [`running_ns`] reads).
pub fn register_runstate() -> hypercall::XenResult<()> {
    let mut arg = xen_abi::vcpu::VcpuRegisterRunstateMemoryArea {
        addr: RUNSTATE.0.get() as u64,
    };
    // SAFETY: the area is a static of the right layout, live for ever; `arg` lives for the call.
    unsafe {
        hypercall::vcpu_op(
            xen_abi::vcpu::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
            0,
            &mut arg,
        )
    }?;
    RUNSTATE_REGISTERED.store(true, core::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// How long this vCPU has run (ns): time it waited for a physical CPU does not count. Xen
/// system time when the runstate area could not be registered.
pub fn running_ns() -> u64 {
    let now = now_ns();
    if !RUNSTATE_REGISTERED.load(core::sync::atomic::Ordering::SeqCst) {
        return now;
    }
    // SAFETY: Xen does not write the area while this vCPU runs (see RunstateArea); read once.
    let info = unsafe { core::ptr::read_volatile(RUNSTATE.0.get()) };
    info.running_ns(now)
}
