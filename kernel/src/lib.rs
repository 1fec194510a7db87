//! The xenrpc service VM as a library: a Xen PV unikernel that boots straight into an RPC
//! dispatch loop serving the [`ServiceSet`](xenrpc_proto::ServiceSet) it is given.
//!
//! An image is a binary crate of one line, `xenrpc_kernel::service_vm!(path::to::services);`,
//! naming functions `fn(&ServiceEnv<'_>) -> S` with `S: ServiceSet`, each of which builds the
//! services of one protection domain; the stock image (`src/main.rs`) serves the built-ins,
//! each in a domain of its own. `cargo xtask build --services PATH` writes and builds that
//! crate for a user's service crate (see `docs/writing-a-service.md`). The environment's
//! parameters are the `key=value` words of the kernel command line (the xl config's `extra`);
//! its memory is the domain's heap.
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

/// Declares a service VM image's entry: boots, then serves the sets `$services(env)` return
/// (each `$services`: `fn(&ServiceEnv<'_>) -> S`, `S: ServiceSet`), each set in a protection
/// domain of its own: services of one set share an address space, services of different sets
/// never see each other's memory. Use once, in a `#![no_std]` `#![no_main]` binary built for
/// `x86_64-unknown-none` with the kernel's linker script (what `cargo xtask build --services
/// PATH` does).
#[macro_export]
macro_rules! service_vm {
    ($($services:path),+ $(,)?) => {
        fn __xenrpc_service_vm_main(start_info_va: usize) -> ! {
            $crate::run_service_vm(
                start_info_va,
                &[$(&|env: &$crate::proto::ServiceEnv<'_>| $crate::__boxed_set($services(env))),+],
            )
        }
        $crate::__boot::entry_point!(__xenrpc_service_vm_main);
    };
}

/// Builds the services of one protection domain (on that domain's heap: see [`service_vm!`]).
#[cfg(target_os = "none")]
pub type DomainConstructor<'a> =
    &'a dyn Fn(&xenrpc_proto::ServiceEnv<'_>) -> alloc::boxed::Box<dyn xenrpc_proto::ServiceSet>;

/// A set, boxed on the current heap (the macro's constructors call it on the domain's).
#[cfg(target_os = "none")]
#[doc(hidden)]
pub fn __boxed_set<S: xenrpc_proto::ServiceSet + 'static>(
    set: S,
) -> alloc::boxed::Box<dyn xenrpc_proto::ServiceSet> {
    alloc::boxed::Box::new(set)
}

#[cfg(target_os = "none")]
pub use service_vm::run_service_vm;

#[cfg(target_os = "none")]
mod service_vm {
    use core::fmt;

    use xenrpc_proto::ServiceEnv;

    use crate::DomainConstructor;

    use crate::xen::hypercall;
    use crate::xen::start_info::{BootInfo, ConsoleSource};
    use crate::xen::{console, control, events, grant, shared_info, time, traps, xenstore};
    use crate::{log, mm, rpc, selftest, user};

    /// How long one handler call may run, unless `handler-budget-ms=` says otherwise.
    const DEFAULT_HANDLER_BUDGET_MS: u64 = 200;
    /// Faults after which a domain is reset to its clean copy, unless `handler-reset-after=`
    /// says otherwise: every fault (its memory can no longer be trusted).
    const DEFAULT_RESET_AFTER: u64 = 1;

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

    /// Boots the service VM and serves the sets `constructors` build, one protection domain
    /// each (see [`service_vm!`]). `start_info_va` must be the address Xen passed to `_start`
    /// (the macro passes it).
    pub fn run_service_vm(start_info_va: usize, constructors: &[DomainConstructor<'_>]) -> ! {
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
        let counters = alloc::boxed::Box::leak(xenrpc_proto::ServiceCounters::new_boxed());
        let mut registry = rpc::registry(counters);
        if let Err(e) = register_services(
            &boot,
            memory.heap_bytes as usize,
            constructors,
            &mut registry,
        ) {
            fatal(format_args!("cannot serve the services: {e}"));
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

    /// The environment constructors see, on the kernel heap, and the handlers' fault policy.
    fn with_env<R>(
        boot: &BootInfo,
        memory_bytes: usize,
        f: impl FnOnce(&ServiceEnv<'_>, user::FaultPolicy) -> R,
    ) -> R {
        let log_line =
            |args: fmt::Arguments<'_>| mm::space::with_kernel_heap(|| log!("rpc: {args}"));
        let platform = KernelHeapPlatform(&rpc::platform::ServiceVmPlatform);
        let env = ServiceEnv::new(boot.cmdline_str(), memory_bytes)
            .with_log(&log_line)
            .with_platform(&platform);
        let param = |key: &str, default: u64| {
            env.param(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let policy = user::FaultPolicy {
            budget_ns: param("handler-budget-ms", DEFAULT_HANDLER_BUDGET_MS)
                .saturating_mul(1_000_000),
            reset_after: param("handler-reset-after", DEFAULT_RESET_AFTER),
        };
        f(&env, policy)
    }

    /// The heap of each of `domains` protection domains: a third of the VM's, shared evenly.
    fn domain_share(heap_bytes: usize, domains: usize) -> usize {
        (heap_bytes / 3 / domains.max(1)) & !(mm::PAGE_SIZE - 1)
    }

    /// Builds each constructor's services in a protection domain of its own (guest user mode),
    /// on its heap, with kernel work (logging, xenstore) kept on the kernel's, and registers
    /// their stand-ins. The domains share a third of the heap evenly.
    #[cfg(not(feature = "unprotected"))]
    fn register_services(
        boot: &BootInfo,
        heap_bytes: usize,
        constructors: &[DomainConstructor<'_>],
        registry: &mut xenrpc_proto::Registry<'static>,
    ) -> Result<(), alloc::string::String> {
        let domain_heap = domain_share(heap_bytes, constructors.len());
        let mut stand_ins = alloc::vec::Vec::new();
        with_env(boot, domain_heap, |env, policy| {
            for (index, construct) in constructors.iter().enumerate() {
                let built =
                    user::domain::Domain::build(index, domain_heap, policy, || construct(env));
                match built {
                    Ok(more) => stand_ins.extend(more),
                    Err(e) => return Err(alloc::format!("domain {index}: {e}")),
                }
            }
            Ok(())
        })?;
        for stand_in in alloc::boxed::Box::leak(stand_ins.into_boxed_slice()) {
            match stand_in.access() {
                Some(access) => registry.register_restricted(stand_in, access),
                None => registry.register(stand_in),
            }
            .map_err(|e| alloc::format!("{e}"))?;
        }
        Ok(())
    }

    /// The unprotected build (a test image: the bench's baseline): each constructor's
    /// services on the kernel heap, their handlers called in kernel mode, with as much memory
    /// each as a domain would have.
    #[cfg(feature = "unprotected")]
    fn register_services(
        boot: &BootInfo,
        heap_bytes: usize,
        constructors: &[DomainConstructor<'_>],
        registry: &mut xenrpc_proto::Registry<'static>,
    ) -> Result<(), alloc::string::String> {
        log!("user: UNPROTECTED build: handlers run in kernel mode (a test image only)");
        with_env(
            boot,
            domain_share(heap_bytes, constructors.len()),
            |env, _| {
                for construct in constructors {
                    alloc::boxed::Box::leak(construct(env))
                        .register_into(registry)
                        .map_err(|e| alloc::format!("{e}"))?;
                }
                Ok(())
            },
        )
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
        #[cfg(not(feature = "unprotected"))]
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
