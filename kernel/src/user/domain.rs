//! A protection domain: the services one constructor builds, running their handlers in guest
//! user mode in an address space of their own (see `docs/protected-execution.md`).
//!
//! Layout, the same addresses in the kernel's space and the domain's:
//! - the domain's heap at `DOMAIN_BASE + HEAP_OFFSET` (the kernel maps it too: the services
//!   are built in kernel mode, on that heap, before any of their code runs in user mode);
//! - in the domain's space only: its space page at `SPACE_PAGE_VA` (the heap's allocator state
//!   and the handler table), its stack between guard pages;
//! - the gate, shared by every domain: the call record (read-only to user mode), the reply
//!   record, and the two windows, arguments (read-only) then result. The kernel reaches the
//!   gate through its own addresses, and clears what a call put there before the next.
//!
//! The kernel never calls into a service object once user code of its domain has run: the
//! services' descriptions are taken while they are built, and every later call (a request, a
//! tenant's release) is a run of the trampoline in user mode.

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;

use linked_list_allocator::LockedHeap;
use xen_abi::pv_user::UserStack;
use xenrpc_proto::service::gate::{self, GateCall, GateReply};
use xenrpc_proto::{
    AccessCheck, CallContext, PeerId, Registry, RegistryError, ServiceHandler, ServiceInfo,
    ServiceSet, SharedMemory, SharedRegion, Status, MAX_CALL_COPY, MAX_SERVICES,
};

use super::{UserExit, SYSCALL_EXIT};
use crate::log;
use crate::mm::pagetable::{AddressSpace, MapError};
use crate::mm::space::{self, SpaceHeader, SPACE_PAGE_VA};
use crate::mm::{self, PAGE_SIZE, PAGE_SIZE_U64};

/// Where the (first) domain's memory starts: L4 slot 10.
const DOMAIN_BASE: u64 = 0x0000_0500_0000_0000;
const STACK_OFFSET: u64 = 1 << 20;
const STACK_PAGES: u64 = 16;
const HEAP_OFFSET: u64 = 1 << 24;
/// The gate: L4 slot 9, the same in every domain.
const GATE_CALL_VA: u64 = 0x0000_0480_0000_0000;
const GATE_REPLY_VA: u64 = GATE_CALL_VA + PAGE_SIZE_U64;
const GATE_WINDOWS_VA: u64 = GATE_CALL_VA + (1 << 20);
/// Each window holds what one call may move.
const WINDOW_BYTES: usize = MAX_CALL_COPY;

/// A domain's space page.
#[repr(C)]
struct DomainPage {
    header: SpaceHeader,
    heap: LockedHeap,
    handlers: [Option<NonNull<dyn ServiceHandler>>; MAX_SERVICES],
    /// Bytes of `panic_text` the last panic wrote (the domain's own claim: bounded on read).
    panic_len: usize,
    panic_text: [u8; PANIC_TEXT_MAX],
}

/// Most bytes of a panic message kept.
const PANIC_TEXT_MAX: usize = 256;

/// A panic in guest user mode (the panic handler found itself in a domain): the message into
/// the domain's page, then the panic call. Runs in user mode: touches only the domain's page.
pub fn user_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    struct Text<'a>(&'a mut [u8], usize);
    impl core::fmt::Write for Text<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.0.len() - self.1);
            self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
            self.1 += n;
            Ok(())
        }
    }
    let page = SPACE_PAGE_VA as *mut DomainPage;
    // SAFETY: in user mode the space page is the domain's own, mapped read-write.
    let text = unsafe { &mut *core::ptr::addr_of_mut!((*page).panic_text) };
    let mut out = Text(text, 0);
    let _ = match info.location() {
        Some(at) => core::fmt::write(
            &mut out,
            format_args!("at {}:{}: {}", at.file(), at.line(), info.message()),
        ),
        None => core::fmt::write(&mut out, format_args!("{}", info.message())),
    };
    let len = out.1;
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*page).panic_len), len) };
    // SAFETY: the panic call; the kernel does not come back here.
    unsafe { core::arch::asm!("syscall", in("rax") super::SYSCALL_PANIC, options(noreturn)) }
}

const _: () = assert!(core::mem::size_of::<DomainPage>() <= PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(DomainPage, header) == 0);
const _: () = assert!(core::mem::size_of::<GateCall>() <= PAGE_SIZE);
const _: () = assert!(core::mem::size_of::<GateReply>() <= PAGE_SIZE);

/// Why a domain could not be set up.
#[derive(Debug)]
pub enum DomainError {
    /// The kernel heap could not give the domain's memory.
    OutOfMemory,
    /// A mapping was refused.
    Map(MapError),
    /// Its services could not be registered.
    Registry(RegistryError),
}

impl core::fmt::Display for DomainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DomainError::OutOfMemory => f.write_str("the kernel heap cannot hold its memory"),
            DomainError::Map(e) => write!(f, "mapping its memory failed: {e}"),
            DomainError::Registry(e) => write!(f, "{e}"),
        }
    }
}

impl From<MapError> for DomainError {
    fn from(e: MapError) -> Self {
        DomainError::Map(e)
    }
}

/// Zeroed, page-aligned kernel memory, never freed (a domain lives as long as the VM).
fn pages(count: usize) -> Result<u64, DomainError> {
    let layout = Layout::from_size_align(count * PAGE_SIZE, PAGE_SIZE)
        .map_err(|_| DomainError::OutOfMemory)?;
    // SAFETY: a non-zero size, checked above.
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        Err(DomainError::OutOfMemory)
    } else {
        Ok(p as u64)
    }
}

/// The gate's memory at its kernel addresses.
struct Gate {
    call: u64,
    reply: u64,
    windows: u64,
}

static GATE: spin::Once<Result<Gate, ()>> = spin::Once::new();

fn gate_memory() -> Result<&'static Gate, DomainError> {
    let gate = GATE.call_once(|| {
        Ok(Gate {
            call: pages(1).map_err(drop)?,
            reply: pages(1).map_err(drop)?,
            windows: pages(2 * WINDOW_BYTES / PAGE_SIZE).map_err(drop)?,
        })
    });
    gate.as_ref().map_err(|()| DomainError::OutOfMemory)
}

/// The window region as user mode sees it.
struct UserWindows;

// SAFETY: GATE_WINDOWS_VA is mapped (arguments read-only, result read-write) in every domain's
// space for as long as the VM runs; it is page aligned.
unsafe impl SharedMemory for UserWindows {
    fn base(&self) -> *mut u8 {
        GATE_WINDOWS_VA as *mut u8
    }

    fn len(&self) -> usize {
        2 * WINDOW_BYTES
    }
}

/// The first code a domain runs for each entry, in user mode: serves the gate's call record
/// with the domain's handler and writes the reply record. Touches nothing but the domain's own
/// memory and the gate.
extern "C" fn xenrpc_domain_entry() -> ! {
    // SAFETY: in user mode the gate's call page is mapped read-only; read once.
    let record = unsafe { core::ptr::read_volatile(GATE_CALL_VA as *const GateCall) };
    let page = SPACE_PAGE_VA as *const DomainPage;
    // SAFETY: the domain's space page, written by the kernel before the first entry.
    let handler = unsafe {
        (*page)
            .handlers
            .get(record.handler as usize)
            .copied()
            .flatten()
    };
    let mut reply = GateReply::zeroed();
    match (handler, SharedRegion::new(UserWindows)) {
        (Some(mut handler), Ok(windows)) => {
            // SAFETY: the handler object lives on the domain's heap, built for this table.
            let handler = unsafe { handler.as_mut() };
            gate::serve(
                handler,
                &record,
                windows.view(),
                0,
                WINDOW_BYTES,
                &mut reply,
            );
        }
        _ => reply.status = Status::HandlerFault.to_wire(),
    }
    // SAFETY: the reply page is mapped read-write in every domain's space.
    unsafe { core::ptr::write_volatile(GATE_REPLY_VA as *mut GateReply, reply) };
    // SAFETY: the exit call; the kernel does not come back here.
    unsafe {
        core::arch::asm!("syscall", in("rax") SYSCALL_EXIT, in("rdi") 0u64, options(noreturn))
    }
}

/// One protection domain.
pub struct Domain {
    space: AddressSpace,
    /// The gate's memory (the same for every domain).
    gate: &'static Gate,
    /// The domain's space page, at the kernel's address of it.
    page: *const DomainPage,
    stack: UserStack,
    budget_ns: u64,
    faults: core::sync::atomic::AtomicU64,
}

impl Domain {
    /// Sets up a domain with `heap_bytes` of heap, and builds its services there with
    /// `build` (in kernel mode, allocating from the domain's heap). Returns a stand-in for
    /// each of its services, to register with the kernel's registry (the domain lives as long
    /// as they do: for ever).
    pub fn build<S: ServiceSet + 'static>(
        heap_bytes: usize,
        budget_ns: u64,
        build: impl FnOnce() -> S,
    ) -> Result<Vec<StandIn>, DomainError> {
        let gate = gate_memory()?;
        let space = mm::new_user_space()?;
        let ro = mm::USER_RO_NX;
        let rw = mm::USER_RW_NX;
        let window_pages = (WINDOW_BYTES / PAGE_SIZE) as u64;
        mm::map_frames(Some(&space), GATE_CALL_VA, gate.call, 1, ro)?;
        mm::map_frames(Some(&space), GATE_REPLY_VA, gate.reply, 1, rw)?;
        mm::map_frames(
            Some(&space),
            GATE_WINDOWS_VA,
            gate.windows,
            window_pages,
            ro,
        )?;
        let result_kva = gate.windows + WINDOW_BYTES as u64;
        let result_va = GATE_WINDOWS_VA + WINDOW_BYTES as u64;
        mm::map_frames(Some(&space), result_va, result_kva, window_pages, rw)?;

        let stack = UserStack::at(DOMAIN_BASE + STACK_OFFSET, STACK_PAGES)
            .map_err(|_| DomainError::Map(MapError::BadAddress(DOMAIN_BASE)))?;
        let stack_kva = pages(STACK_PAGES as usize)?;
        mm::map_frames(Some(&space), stack.low, stack_kva, STACK_PAGES, rw)?;

        let heap_pages = heap_bytes.div_ceil(PAGE_SIZE);
        let heap_kva = pages(heap_pages)?;
        let heap_va = DOMAIN_BASE + HEAP_OFFSET;
        mm::map_frames(None, heap_va, heap_kva, heap_pages as u64, rw)?;
        mm::map_frames(Some(&space), heap_va, heap_kva, heap_pages as u64, rw)?;

        let page_kva = pages(1)?;
        mm::map_frames(Some(&space), SPACE_PAGE_VA, page_kva, 1, rw)?;
        let page = page_kva as *mut DomainPage;
        // SAFETY: a fresh zeroed page of ours; the heap range was just mapped at heap_va in
        // the kernel's space, and the same frames at the same address in the domain's.
        unsafe {
            core::ptr::write(
                page,
                DomainPage {
                    header: SpaceHeader {
                        heap: (SPACE_PAGE_VA + core::mem::offset_of!(DomainPage, heap) as u64)
                            as *const LockedHeap,
                        user: 1,
                    },
                    heap: LockedHeap::empty(),
                    handlers: [None; MAX_SERVICES],
                    panic_len: 0,
                    panic_text: [0; PANIC_TEXT_MAX],
                },
            );
            (*page)
                .heap
                .lock()
                .init(heap_va as *mut u8, heap_pages * PAGE_SIZE);
        }

        // Build on the domain's heap (its kernel-side alias of the allocator state).
        // SAFETY: the domain's heap state lives in `page` for ever, over memory mapped at the
        // same address in the kernel's space.
        let services: &'static mut S = unsafe {
            space::with_heap(core::ptr::addr_of!((*page).heap), || {
                Box::leak(Box::new(build()))
            })
        };

        let mut collected = Registry::new();
        collected
            .register_set(services)
            .map_err(DomainError::Registry)?;
        let domain: &'static Domain = Box::leak(Box::new(Domain {
            space,
            gate,
            page,
            stack,
            budget_ns,
            faults: core::sync::atomic::AtomicU64::new(0),
        }));
        let mut stand_ins = Vec::new();
        for (slot, (handler, access)) in collected.into_services().enumerate() {
            // Taken now, while the object is as its constructor made it: never again.
            let info = handler.info();
            // SAFETY: the table is in the domain's page; the object is on its heap.
            unsafe { (*page).handlers[slot] = Some(NonNull::from(handler)) };
            stand_ins.push(StandIn {
                domain,
                slot: slot as u32,
                info,
                access,
            });
        }
        Ok(stand_ins)
    }

    /// The last panic's message, as the domain wrote it (bounded, printable ASCII only).
    fn panic_message(&self) -> alloc::string::String {
        // SAFETY: the domain's page is the kernel's memory too; user mode is not running.
        let (len, text) = unsafe {
            (
                core::ptr::read_volatile(core::ptr::addr_of!((*self.page).panic_len)),
                core::ptr::read_volatile(core::ptr::addr_of!((*self.page).panic_text)),
            )
        };
        text[..len.min(PANIC_TEXT_MAX)]
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Hands `record` to the domain through the gate and runs its entry in user mode.
    fn run(&self, record: &GateCall) -> UserExit {
        // SAFETY: the call page is the kernel's and page-sized; user mode is not running.
        unsafe { core::ptr::write_volatile(self.gate.call as *mut GateCall, *record) };
        self.enter()
    }

    fn enter(&self) -> UserExit {
        let entry = xenrpc_domain_entry as *const () as u64;
        // As if called: the ABI wants rsp + 8 16-byte aligned at a function's first
        // instruction.
        super::run(&self.space, entry, self.stack.top - 8, 0, self.budget_ns)
    }
}

/// The kernel-side stand-in for one of a domain's services: what the kernel's registry holds.
pub struct StandIn {
    domain: &'static Domain,
    slot: u32,
    info: &'static ServiceInfo,
    access: Option<AccessCheck>,
}

impl StandIn {
    /// The service's access check, as its set registered it.
    pub fn access(&self) -> Option<AccessCheck> {
        self.access
    }

    fn method_name(&self, method: u32) -> &'static str {
        self.info
            .methods
            .iter()
            .find(|m| m.id == method)
            .map_or("?", |m| m.name)
    }

    fn report(&self, call: &CallContext<'_>, exit: &UserExit) {
        let n = self
            .domain
            .faults
            .fetch_add(1, core::sync::atomic::Ordering::SeqCst)
            + 1;
        let message = match exit {
            UserExit::Panicked { .. } => alloc::format!(": {}", self.domain.panic_message()),
            _ => alloc::string::String::new(),
        };
        log!(
            "rpc: handler fault in {}.{} (dom{}): {exit}{message}; {n} in this domain",
            self.info.name,
            self.method_name(call.method()),
            call.peer().0,
        );
    }
}

impl ServiceHandler for StandIn {
    fn info(&self) -> &'static ServiceInfo {
        self.info
    }

    fn handle(&mut self, call: &mut CallContext<'_>) -> Status {
        let gate = self.domain.gate;
        // SAFETY: the gate's memory is the kernel's; user mode does not run while the kernel
        // does (one vCPU), so these are the only references to it.
        let (args, result) = unsafe {
            (
                core::slice::from_raw_parts_mut(gate.windows as *mut u8, WINDOW_BYTES),
                core::slice::from_raw_parts_mut(
                    (gate.windows + WINDOW_BYTES as u64) as *mut u8,
                    WINDOW_BYTES,
                ),
            )
        };
        let mut record = GateCall::zeroed();
        if let Err(status) = gate::export(call, self.slot, &mut record, args, WINDOW_BYTES) {
            return status;
        }
        let exit = self.domain.run(&record);
        let (status, dirty) = match exit {
            UserExit::Returned(_) => {
                // SAFETY: the reply page is ours; user mode is not running.
                let reply = unsafe { core::ptr::read_volatile(gate.reply as *const GateReply) };
                let status = gate::import(call, &record, &reply, result);
                let written = (reply.ool_written as usize).min(record.result_capacity as usize);
                (status, written)
            }
            UserExit::BudgetExceeded { .. } => {
                self.report(call, &exit);
                (Status::DeadlineExceeded, record.result_capacity as usize)
            }
            _ => {
                self.report(call, &exit);
                (Status::HandlerFault, record.result_capacity as usize)
            }
        };
        // Nothing of this call stays for the next, whoever's it is.
        args[..record.args_len as usize].fill(0);
        result[..dirty].fill(0);
        status
    }

    fn forget_peer(&mut self, peer: PeerId) {
        let exit = self.domain.run(&gate::export_forget_peer(self.slot, peer));
        if !matches!(exit, UserExit::Returned(_)) {
            log!(
                "rpc: handler fault in {} forgetting dom{}: {exit}",
                self.info.name,
                peer.0
            );
        }
    }
}
