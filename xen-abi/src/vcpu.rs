//! `vcpu_op` hypercall ABI (`vcpu.h`), as far as the kernel uses it: the single-shot timer
//! that wakes a blocked vCPU (delivered as `VIRQ_TIMER`).

use core::mem::{offset_of, size_of};

/// `VCPUOP_is_up`.
pub const VCPUOP_IS_UP: u32 = 3;
/// `VCPUOP_set_periodic_timer`.
pub const VCPUOP_SET_PERIODIC_TIMER: u32 = 6;
/// `VCPUOP_stop_periodic_timer`: guests that use only the single-shot timer stop the
/// default 100 Hz periodic tick with this.
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
/// `VCPUOP_set_singleshot_timer`: arg is a [`VcpuSetSingleshotTimer`].
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// `VCPUOP_stop_singleshot_timer`.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// `VCPUOP_register_vcpu_info`.
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;

/// `VCPU_SSHOTTMR_future`: fail with `-ETIME` if the deadline has already passed (instead
/// of firing at once). Xen versions differ on honouring it; firing at once is the safe choice.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_set_singleshot_timer`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute Xen system time (ns, as in `vcpu_time_info.system_time`) of the deadline.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<VcpuSetSingleshotTimer>() == 16);
const _: () = assert!(offset_of!(VcpuSetSingleshotTimer, timeout_abs_ns) == 0);
const _: () = assert!(offset_of!(VcpuSetSingleshotTimer, flags) == 8);

/// `struct vcpu_set_periodic_timer`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns.
    pub period_ns: u64,
}
const _: () = assert!(size_of::<VcpuSetPeriodicTimer>() == 8);

/// `VCPUOP_register_runstate_memory_area`: arg is a [`VcpuRegisterRunstateMemoryArea`].
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// `RUNSTATE_running`: the vCPU is running on a physical CPU.
pub const RUNSTATE_RUNNING: u32 = 0;
/// `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` while Xen rewrites the area (only with
/// `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `struct vcpu_runstate_info`: what the vCPU did and for how long, kept up to date by Xen in
/// guest memory once registered.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*` the vCPU is in.
    pub state: u32,
    /// Xen system time at which it entered that state.
    pub state_entry_time: u64,
    /// Time spent in each state (running, runnable, blocked, offline) before entering the
    /// current one, in ns.
    pub time: [u64; 4],
}
const _: () = assert!(size_of::<VcpuRunstateInfo>() == 48);
const _: () = assert!(offset_of!(VcpuRunstateInfo, state_entry_time) == 8);
const _: () = assert!(offset_of!(VcpuRunstateInfo, time) == 16);

/// `struct vcpu_register_runstate_memory_area` (a PV guest names the area by its address).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest virtual address of the [`VcpuRunstateInfo`].
    pub addr: u64,
}
const _: () = assert!(size_of::<VcpuRegisterRunstateMemoryArea>() == 8);

impl VcpuRunstateInfo {
    /// How long the vCPU has run, in ns, at system time `now` (the time it spent running
    /// before, and if it runs now, since it started to).
    pub fn running_ns(&self, now: u64) -> u64 {
        let entered = self.state_entry_time & !XEN_RUNSTATE_UPDATE;
        let before = self.time[RUNSTATE_RUNNING as usize];
        if self.state == RUNSTATE_RUNNING {
            before.saturating_add(now.saturating_sub(entered))
        } else {
            before
        }
    }
}

#[cfg(test)]
mod runstate_tests {
    use super::*;

    #[test]
    fn running_time_counts_the_current_stretch_only_while_running() {
        let mut info = VcpuRunstateInfo {
            state: RUNSTATE_RUNNING,
            state_entry_time: 1_000,
            time: [500, 7_000, 0, 0],
        };
        assert_eq!(info.running_ns(1_300), 800);
        // Descheduled at 1_300: runnable time does not count.
        info = VcpuRunstateInfo {
            state: 1,
            state_entry_time: 1_300,
            time: [800, 7_000, 0, 0],
        };
        assert_eq!(info.running_ns(90_000), 800);
        // The update flag is not part of the time.
        info.state = RUNSTATE_RUNNING;
        info.state_entry_time = 2_000 | XEN_RUNSTATE_UPDATE;
        assert_eq!(info.running_ns(2_500), 1_300);
    }
}
