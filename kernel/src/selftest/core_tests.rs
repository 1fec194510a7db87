//! Self-tests of the core: time, the one-shot timer, page protection and fault reporting.

use super::{Test, TestError, When};
use crate::fail;
use crate::mm::StaticPage;
use crate::xen::start_info::BootInfo;
use xen_abi::pte::PteFlags;

use crate::xen::{events, hypercall, shared_info, time, traps};

pub const TESTS: &[Test] = &[
    Test {
        name: "time",
        when: When::Always,
        run: time_advances,
    },
    Test {
        name: "timer",
        when: When::Always,
        run: one_shot_timer,
    },
    Test {
        name: "page-protection",
        when: When::Always,
        run: read_only_page_faults,
    },
    Test {
        name: "unmapped-page",
        when: When::Always,
        run: unmapped_page_faults,
    },
];

fn time_advances(_: &BootInfo) -> Result<(), TestError> {
    let t0 = time::now_ns();
    if t0 == 0 {
        fail!("system time is zero");
    }
    let mut last = t0;
    for _ in 0..10_000_000u32 {
        let t = time::now_ns();
        if t < last {
            fail!("time went backwards: {last} then {t}");
        }
        last = t;
        if t - t0 >= 1_000_000 {
            return Ok(());
        }
    }
    fail!("time advanced only {} ns over 10M reads", last - t0)
}

fn one_shot_timer(_: &BootInfo) -> Result<(), TestError> {
    let port = match events::bind_virq(xen_sys::VIRQ_TIMER) {
        Ok(port) => port,
        Err(e) => fail!("bind_virq(VIRQ_TIMER) failed: {e:?}"),
    };
    let result = (|| {
        shared_info::clear_pending(port);
        let deadline = time::now_ns() + 5_000_000;
        if let Err(e) = time::set_timer(deadline) {
            fail!("set_timer_op failed: {e}");
        }
        // Poll with events masked until the timer port is pending; SCHEDOP_poll may return
        // early (another event can end it), and the 1 s bound ends the test if it never fires.
        let give_up = time::now_ns() + 1_000_000_000;
        while !shared_info::is_pending(port) && time::now_ns() < give_up {
            if let Err(e) = hypercall::sched_poll(&[port], give_up) {
                fail!("SCHEDOP_poll failed: {e}");
            }
        }
        let woke = time::now_ns();
        if !shared_info::clear_pending(port) {
            fail!("the timer did not fire within 1 s of its deadline");
        }
        // Xen's timer and our TSC-extrapolated clock may disagree by a little under
        // emulation; an early fire by more than the slack is a real fault.
        const SLACK_NS: u64 = 10_000_000;
        if woke + SLACK_NS < deadline {
            fail!("timer fired {} ns early", deadline - woke);
        }
        Ok(())
    })();
    if let Err(e) = events::close(port) {
        fail!("closing the timer port failed: {e}");
    }
    result
}

static PROBE_PAGE: StaticPage = StaticPage::new();

const PTE_PRESENT: u64 = PteFlags::PRESENT.bits();
const PTE_RW: u64 = PteFlags::WRITABLE.bits();
const PTE_USER: u64 = PteFlags::USER.bits();
const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;

fn probe_page_mfn(boot: &BootInfo) -> u64 {
    // virt_base is 0: an image page's virtual address is its pseudo-physical address.
    let pfn = PROBE_PAGE.as_ptr() as u64 >> 12;
    // SAFETY: the p2m list Xen built covers every pfn below nr_pages and stays mapped.
    unsafe { core::ptr::read_volatile((boot.mfn_list as *const u64).add(pfn as usize)) }
}

fn remap_probe_page(pte: u64) -> Result<(), TestError> {
    // SAFETY: the probe page is used by nothing but these tests.
    if let Err(e) = unsafe {
        hypercall::update_va_mapping(PROBE_PAGE.as_ptr() as u64, pte, hypercall::UVMF_INVLPG)
    } {
        fail!("update_va_mapping({pte:#x}) failed: {e}");
    }
    Ok(())
}

fn read_only_page_faults(boot: &BootInfo) -> Result<(), TestError> {
    let page = PROBE_PAGE.as_ptr();
    let maddr = probe_page_mfn(boot) << 12;
    if traps::probe_write(page, 0x5a).is_err() {
        fail!("writing the writable probe page faulted");
    }
    remap_probe_page(maddr | PTE_PRESENT | PTE_USER)?;
    let write = traps::probe_write(page, 0xa5);
    let read = traps::probe_read(page);
    remap_probe_page(maddr | PTE_PRESENT | PTE_RW | PTE_USER)?;
    match write {
        Ok(()) => fail!("a write to a read-only page did not fault"),
        Err(f) if f.vector != 14 => fail!("expected a page fault, got vector {}", f.vector),
        Err(f) if f.cr2 != page as u64 => fail!(
            "fault reported cr2 {:#x}, expected {:#x}",
            f.cr2,
            page as u64
        ),
        Err(f) if f.error & (PF_PRESENT | PF_WRITE) != (PF_PRESENT | PF_WRITE) => {
            fail!("fault error code {:#x} lacks present|write", f.error)
        }
        Err(_) => {}
    }
    match read {
        Ok(0x5a) => {}
        Ok(v) => fail!("read-only page read back {v:#x}, expected 0x5a"),
        Err(f) => fail!("reading the read-only page faulted: {f:?}"),
    }
    if traps::probe_write(page, 0x77).is_err() {
        fail!("the page stayed read-only after restoring write access");
    }
    Ok(())
}

fn unmapped_page_faults(boot: &BootInfo) -> Result<(), TestError> {
    let page = PROBE_PAGE.as_ptr();
    let maddr = probe_page_mfn(boot) << 12;
    remap_probe_page(0)?;
    let read = traps::probe_read(page);
    remap_probe_page(maddr | PTE_PRESENT | PTE_RW | PTE_USER)?;
    match read {
        Ok(v) => fail!("reading an unmapped page returned {v:#x} instead of faulting"),
        Err(f) if f.vector != 14 || f.cr2 != page as u64 || f.error & PF_PRESENT != 0 => {
            fail!("unexpected fault report {f:?}")
        }
        Err(_) => Ok(()),
    }
}
