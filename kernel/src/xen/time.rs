//! Monotonic time from Xen's per-vCPU time record, and the one-shot timer.

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
