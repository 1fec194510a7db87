//! In-kernel self-tests, run at boot. Each prints `selftest <name>: ok` or the reason it failed;
//! the testbed passes or fails on those exact lines.

use crate::log;
use crate::xen::start_info::BootInfo;

mod core_tests;
mod mm_tests;
mod xen_ifaces;

/// A self-test: `Err` carries a sentence saying what went wrong.
pub type TestFn = fn(&BootInfo) -> Result<(), TestError>;

/// Why a self-test failed (a fixed-size message: tests run before and without the heap too).
pub struct TestError(pub heapless_msg::Msg);

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
                log!("selftest {}: FAIL: {}", t.name, e.0.as_str());
            }
        }
    }
    report
}

/// Fails the current test with a formatted message: `fail!("expected {a}, got {b}")`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::selftest::TestError($crate::selftest::heapless_msg::Msg::format(format_args!($($arg)*))))
    };
}

pub mod heapless_msg {
    use core::fmt::{self, Write};

    /// A message formatted into a fixed buffer (truncated if longer).
    pub struct Msg {
        buf: [u8; 200],
        len: usize,
    }

    impl Msg {
        pub fn format(args: fmt::Arguments<'_>) -> Self {
            let mut m = Msg {
                buf: [0; 200],
                len: 0,
            };
            let _ = m.write_fmt(args);
            m
        }

        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<bad message>")
        }
    }

    impl Write for Msg {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                let mut tmp = [0u8; 4];
                let bytes = c.encode_utf8(&mut tmp).as_bytes();
                if self.len + bytes.len() > self.buf.len() {
                    return Ok(());
                }
                self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
                self.len += bytes.len();
            }
            Ok(())
        }
    }
}
