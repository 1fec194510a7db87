//! The xenrpc service VM as a library: a Xen PV unikernel that boots straight into an RPC
//! dispatch loop serving the [`ServiceSet`](xenrpc_proto::ServiceSet) it is given.
//!
//! An image is a binary crate of one line, `xenrpc_kernel::service_vm!(path::to::services);`,
//! naming a function `fn(&ServiceEnv<'_>) -> S` with `S: ServiceSet`; the stock image
//! (`src/main.rs`) serves [`builtins`](xenrpc_proto::services::builtins). `cargo xtask build
//! --services PATH` writes and builds that crate for a user's service crate (see
//! `docs/writing-a-service.md`). The environment's parameters are the `key=value` words of the
//! kernel command line (the xl config's `extra`); its memory is the heap.
//!
//! On the host this crate compiles to nothing; images are built for `x86_64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]
#![warn(missing_docs)]

/// The protocol crate, for images that name the built-in services.
pub use xenrpc_proto as proto;

/// The PV entry `service_vm!` names its function with (and that links the entry code in).
#[doc(hidden)]
pub use xenrpc_boot as __boot;

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod mm;
#[cfg(target_os = "none")]
mod rpc;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod user;
#[cfg(target_os = "none")]
mod xen;

/// Declares a service VM image's entry: boots, then serves the set `$services(env)` returns
/// (`$services`: `fn(&ServiceEnv<'_>) -> S`, `S: ServiceSet`). Use once, in a `#![no_std]`
/// `#![no_main]` binary built for `x86_64-unknown-none` with the kernel's linker script (what
/// `cargo xtask build --services PATH` does).
#[macro_export]
macro_rules! service_vm {
    ($services:path) => {
        fn __xenrpc_service_vm_main(start_info_va: usize) -> ! {
            $crate::run_service_vm(start_info_va, $services)
        }
        $crate::__boot::entry_point!(__xenrpc_service_vm_main);
    };
}

#[cfg(target_os = "none")]
pub use service_vm::run_service_vm;

#[cfg(target_os = "none")]
mod service_vm {
    use core::fmt;

    use xenrpc_proto::{ServiceEnv, ServiceSet};

    use crate::xen::hypercall;
    use crate::xen::start_info::{BootInfo, ConsoleSource};
    use crate::xen::{console, control, events, grant, shared_info, time, traps, xenstore};
    use crate::{log, mm, rpc, selftest, user};

    /// How long one handler call may run, unless `handler-budget-ms=` says otherwise.
    const DEFAULT_HANDLER_BUDGET_MS: u64 = 200;

    /// The platform, with the kernel heap current while it works (it runs while a domain's
    /// services are built on the domain's heap).
    struct KernelHeapPlatform<'a>(&'a dyn xenrpc_proto::Platform);

    impl xenrpc_proto::Platform for KernelHeapPlatform<'_> {
        fn take_secret(
            &self,
            name: &str,
            buf: &mut [u8],
        ) -> Result<Option<usize>, xenrpc_proto::PlatformError> {
            mm::space::with_kernel_heap(|| self.0.take_secret(name, buf))
        }

        fn fill_random(&self, buf: &mut [u8]) -> Result<(), xenrpc_proto::PlatformError> {
            mm::space::with_kernel_heap(|| self.0.fill_random(buf))
        }
    }

    /// Boots the service VM and serves the set `make_services` builds (see [`service_vm!`]).
    /// `start_info_va` must be the address Xen passed to `_start` (the macro passes it).
    pub fn run_service_vm<S: ServiceSet + 'static>(
        start_info_va: usize,
        make_services: impl FnOnce(&ServiceEnv<'_>) -> S,
    ) -> ! {
        // SAFETY: `service_vm!` passes the address Xen gave `_start`, before anything else ran.
        let boot = unsafe { BootInfo::capture(start_info_va) };
        traps::init();
        crate::user::init();
        console::init(&boot);
        if let Err(e) = shared_info::map(boot.shared_info_maddr) {
            fatal(format_args!("cannot map shared_info: {e}"));
        }
        shared_info::mask_upcalls();
        let memory = match mm::init(&boot) {
            Ok(report) => report,
            Err(e) => fatal(format_args!("memory setup failed: {e}")),
        };
        let (major, minor) = hypercall::xen_version();
        log!(
            "booting as {} on Xen {major}.{minor} ({}), {} pages, cmdline '{}'",
            if boot.is_dom0() { "dom0" } else { "domU" },
            boot.magic_str(),
            boot.nr_pages,
            boot.cmdline_str()
        );
        log!(
            "memory: {} pages, image {} pages, free from pfn {:#x}, Xen mapped up to {:#x}, pool {} frames, heap {} KiB",
            memory.nr_pages,
            memory.image_pages,
            memory.first_free,
            memory.bootstrap_end,
            memory.pool_frames,
            memory.heap_bytes / 1024
        );
        let entered_ns = time::now_ns();
        log!("system time {} ms", entered_ns / 1_000_000);
        xen_init(&boot);

        // A production boot goes straight to serving: the self-tests (about 150 xenstore round
        // trips) run as dom0 (the XTF-style vehicle) or when the command line says `selftest`.
        let wants_selftests = boot.is_dom0()
            || boot
                .cmdline_str()
                .split_ascii_whitespace()
                .any(|word| word == "selftest");
        if !wants_selftests {
            log!("selftest: skipped (boot with extra=\"selftest\" to run them)");
        }
        let report = if wants_selftests {
            selftest::run_all(&boot)
        } else {
            selftest::Report::default()
        };
        if boot.is_dom0() {
            // As dom0 the VM is a self-test vehicle (XTF style): report and power off.
            if report.failed == 0 {
                log!("selftest: PASS ({} tests)", report.passed);
            } else {
                log!(
                    "selftest: FAIL ({} of {} tests failed)",
                    report.failed,
                    report.passed + report.failed
                );
            }
            power_off();
        }
        if wants_selftests {
            if let Err(e) = control::publish_selftest_verdict(report.failed == 0) {
                log!("cannot publish the self-test verdict: {e}");
            }
        }
        let own = match xenstore::read_text("domid")
            .map(|d| xenrpc_rendezvous::parse_domid(d.as_bytes()))
        {
            Ok(Ok(id)) => id,
            other => fatal(format_args!(
                "cannot read our domid from xenstore: {other:?}"
            )),
        };
        // The services run in a protection domain of their own (guest user mode): built on
        // its heap, with kernel work (logging, xenstore) kept on the kernel's.
        let log_line =
            |args: fmt::Arguments<'_>| mm::space::with_kernel_heap(|| log!("rpc: {args}"));
        let platform = KernelHeapPlatform(&rpc::platform::ServiceVmPlatform);
        let domain_heap = (memory.heap_bytes as usize / 4) & !(mm::PAGE_SIZE - 1);
        let env = ServiceEnv::new(boot.cmdline_str(), domain_heap)
            .with_log(&log_line)
            .with_platform(&platform);
        let budget_ns = env
            .param("handler-budget-ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .unwrap_or(DEFAULT_HANDLER_BUDGET_MS)
            .saturating_mul(1_000_000);
        let stand_ins =
            match user::domain::Domain::build(domain_heap, budget_ns, || make_services(&env)) {
                Ok(stand_ins) => stand_ins,
                Err(e) => fatal(format_args!("cannot serve the services: {e}")),
            };
        let stand_ins = alloc::boxed::Box::leak(stand_ins.into_boxed_slice());
        let mut counters = xenrpc_proto::ServiceCounters::new_boxed();
        let mut registry = rpc::registry(&mut counters);
        for stand_in in stand_ins.iter_mut() {
            let registered = match stand_in.access() {
                Some(access) => registry.register_restricted(stand_in, access),
                None => registry.register(stand_in),
            };
            if let Err(e) = registered {
                fatal(format_args!("cannot serve the services: {e}"));
            }
        }
        if let Err(e) = rpc::init(own, &registry) {
            fatal(format_args!("starting the RPC backend failed: {e}"));
        }
        log!(
            "ready ({} ms after entry)",
            time::now_ns().saturating_sub(entered_ns) / 1_000_000
        );
        rpc::run(&mut registry)
    }

    /// Grant table, and for a domU xenstore and the shutdown watch.
    fn xen_init(boot: &BootInfo) {
        if let Err(e) = grant::init() {
            fatal(format_args!("grant table setup failed: {e}"));
        }
        if let ConsoleSource::Ring { evtchn, .. } = boot.console {
            // xenconsoled signals when it drained output; the console polls its ring instead.
            if let Err(e) = events::set_handler(evtchn, alloc::sync::Arc::new(|_| {})) {
                log!("console event channel {evtchn}: {e}");
            }
        }
        if boot.is_dom0() {
            return;
        }
        if let Err(e) = xenstore::init(boot) {
            fatal(format_args!("xenstore setup failed: {e}"));
        }
        if let Err(e) = control::init() {
            fatal(format_args!("watching control/shutdown failed: {e}"));
        }
    }

    /// Powers the domain off cleanly.
    pub fn power_off() -> ! {
        log!("powering off");
        console::drain();
        let e = hypercall::shutdown(xen_sys::SHUTDOWN_poweroff);
        fatal(format_args!("SCHEDOP_shutdown(poweroff) returned {e}"));
    }

    /// Reports an unrecoverable error and crashes the domain.
    pub fn fatal(args: fmt::Arguments<'_>) -> ! {
        console::break_lock();
        log!("FATAL: {args}");
        console::drain();
        loop {
            hypercall::shutdown(xen_sys::SHUTDOWN_crash);
            hypercall::sched_yield();
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        // A handler's panic is one failed call: it goes back to the kernel, not to `fatal`.
        if mm::space::in_user_mode() {
            user::domain::user_panic(info);
        }
        match info.location() {
            Some(at) => fatal(format_args!(
                "panic at {}:{}: {}",
                at.file(),
                at.line(),
                info.message()
            )),
            None => fatal(format_args!("panic: {}", info.message())),
        }
    }
}

#[cfg(target_os = "none")]
pub(crate) use service_vm::{fatal, power_off};
