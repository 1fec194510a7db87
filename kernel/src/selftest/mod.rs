//! In-kernel self-tests, run at boot. Each prints `selftest <name>: ok` or the reason it failed;
//! the testbed passes or fails on those exact lines.

use crate::log;
use crate::xen::start_info::BootInfo;

mod core_tests;
mod mm_tests;
mod user_tests;
mod xen_ifaces;

/// A self-test: `Err` carries a sentence saying what went wrong.
pub type TestFn = fn(&BootInfo) -> Result<(), TestError>;

/// Why a self-test failed. Self-tests run after `mm::init`, so the message may use the heap.
pub struct TestError(pub alloc::string::String);

/// How many self-tests passed and failed (none ran: both 0).
#[derive(Default)]
pub struct Report {
    pub passed: u32,
    pub failed: u32,
}

/// Whether a test applies to this boot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    DomUOnly,
}

pub struct Test {
    pub name: &'static str,
    pub when: When,
    pub run: TestFn,
}

pub fn run_all(boot: &BootInfo) -> Report {
    let mut report = Report {
        passed: 0,
        failed: 0,
    };
    for t in core_tests::TESTS
        .iter()
        .chain(mm_tests::TESTS)
        .chain(xen_ifaces::TESTS)
        .chain(user_tests::TESTS)
    {
        if t.when == When::DomUOnly && boot.is_dom0() {
            continue;
        }
        match (t.run)(boot) {
            Ok(()) => {
                report.passed += 1;
                log!("selftest {}: ok", t.name);
            }
            Err(e) => {
                report.failed += 1;
                log!("selftest {}: FAIL: {}", t.name, e.0);
            }
        }
    }
    report
}

/// Fails the current test with a formatted message: `fail!("expected {a}, got {b}")`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::selftest::TestError(alloc::format!($($arg)*)))
    };
}
