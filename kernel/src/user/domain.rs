//! A protection domain: the services one constructor builds, running their handlers in guest
//! user mode in an address space of their own (see `docs/protected-execution.md`). An image
//! names one constructor per domain (`service_vm!(a, b, ...)`): services built together trust
//! each other, services of different constructors never see each other's memory.
//!
//! Layout of domain `i`, the same addresses in the kernel's space and the domain's, in an L4
//! slot of its own (`DOMAIN_BASE + i * DOMAIN_STRIDE`):
//! - its heap at `HEAP_OFFSET` (the kernel maps it too: the services are built in kernel mode,
//!   on that heap, before any of their code runs in user mode, and a reset rewrites it);
//! - in the domain's space only: its stack between guard pages at `STACK_OFFSET`, and its
//!   space page at `SPACE_PAGE_VA` (the heap's allocator state and the handler table);
//! - the gate, shared by every domain: the batch record (read-only to user mode), the reply
//!   record, and the two windows, arguments (read-only) then result. The kernel reaches the
//!   gate through its own addresses; only one domain runs at a time (one vCPU), and the gate
//!   is cleared whenever a different domain enters (`gate::WindowOwner`), so a domain finds
//!   in it only its own calls.
//!
//! The kernel never calls into a service object once user code of its domain has run: the
//! services' descriptions are taken while they are built, and every later call (a request, a
//! tenant's release) is a run of the trampoline in user mode.
//!
//! A fault may leave the domain's memory in any state (a wild write before the fault, a lock
//! held, a heap used up), so after every `reset_after`-th fault the kernel puts the domain
//! back as its constructor left it: its [`CleanCopy`].

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;

use linked_list_allocator::LockedHeap;
use xen_abi::pv_user::UserStack;
use xenrpc_proto::service::gate::{self, GateBatch, GateBatchReply, GateCall, WindowOwner};
use xenrpc_proto::{
    Registry, RegistryError, ServiceHandler, ServiceSet, SharedMemory, SharedRegion, MAX_BATCH,
    MAX_CALL_COPY, MAX_SERVICES,
};

use super::clean_copy::CleanCopy;
use super::stand_in::StandIn;
use super::{FaultPolicy, Progress, UserExit, SYSCALL_EXIT};
use crate::log;
use crate::mm::pagetable::{AddressSpace, MapError};
use crate::mm::space::{self, SpaceHeader, SPACE_PAGE_VA};
use crate::mm::{self, PAGE_SIZE, PAGE_SIZE_U64};

/// Where domain 0's memory starts: L4 slot 10.
const DOMAIN_BASE: u64 = 0x0000_0500_0000_0000;
/// One L4 slot (512 GiB) per domain.
const DOMAIN_STRIDE: u64 = 1 << 39;
/// Domains an image may have: L4 slots 10 to 25, below the foreign window's neighbours and
/// far below the canonical hole.
pub const MAX_DOMAINS: usize = 16;
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
const _: () = assert!(core::mem::size_of::<GateBatch>() <= PAGE_SIZE);
const _: () = assert!(core::mem::size_of::<GateBatchReply>() <= PAGE_SIZE);

/// Why a domain could not be set up.
#[derive(Debug)]
pub enum DomainError {
    /// The kernel heap could not give the domain's memory.
    OutOfMemory,
    /// A mapping was refused.
    Map(MapError),
    /// Its services could not be registered.
    Registry(RegistryError),
    /// More constructors than there are domain slots.
    TooMany,
}

impl core::fmt::Display for DomainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DomainError::OutOfMemory => f.write_str("the kernel heap cannot hold its memory"),
            DomainError::Map(e) => write!(f, "mapping its memory failed: {e}"),
            DomainError::Registry(e) => write!(f, "{e}"),
            DomainError::TooMany => write!(
                f,
                "an image has at most {MAX_DOMAINS} protection domains (service constructors)"
            ),
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

/// The gate's memory at its kernel addresses, and whose bytes it may hold.
pub(super) struct Gate {
    pub(super) call: u64,
    pub(super) reply: u64,
    pub(super) windows: u64,
    owner: spin::Mutex<WindowOwner>,
}

impl Gate {
    /// The two windows, arguments and result, at the kernel's addresses: take them once per
    /// entry's caller and pass them along (never two at a time).
    pub(super) fn windows(&self) -> (&'static mut [u8], &'static mut [u8]) {
        // SAFETY: the gate's memory is the kernel's; user mode does not run while the kernel
        // does (one vCPU), and one call of the kernel at a time uses it (calls are served one
        // connection and one batch at a time).
        unsafe {
            (
                core::slice::from_raw_parts_mut(self.windows as *mut u8, WINDOW_BYTES),
                core::slice::from_raw_parts_mut(
                    (self.windows + WINDOW_BYTES as u64) as *mut u8,
                    WINDOW_BYTES,
                ),
            )
        }
    }
}

static GATE: spin::Once<Result<Gate, ()>> = spin::Once::new();

fn gate_memory() -> Result<&'static Gate, DomainError> {
    let gate = GATE.call_once(|| {
        Ok(Gate {
            call: pages(1).map_err(drop)?,
            reply: pages(1).map_err(drop)?,
            windows: pages(2 * WINDOW_BYTES / PAGE_SIZE).map_err(drop)?,
            owner: spin::Mutex::new(WindowOwner::new()),
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

/// The first code a domain runs for each entry, in user mode: serves the gate's batch with the
/// domain's handler, writing each reply and then the count done to the reply page (the kernel
/// watches that count to renew the budget call by call). Touches nothing but the domain's own
/// memory and the gate.
extern "C" fn xenrpc_domain_entry() -> ! {
    let batch = GATE_CALL_VA as *const GateBatch;
    // SAFETY: in user mode the gate's call page is mapped read-only, and nothing writes it
    // while user mode runs (the kernel does not run then): the header read once, the calls
    // read in place.
    let (slot, calls) = unsafe {
        let count = core::ptr::read(core::ptr::addr_of!((*batch).count)) as usize;
        let calls = core::ptr::addr_of!((*batch).calls).cast::<GateCall>();
        (
            core::ptr::read(core::ptr::addr_of!((*batch).handler)),
            core::slice::from_raw_parts(calls, count.min(MAX_BATCH)),
        )
    };
    let page = SPACE_PAGE_VA as *const DomainPage;
    // SAFETY: the domain's space page, written by the kernel before the first entry.
    let handler = unsafe { (*page).handlers.get(slot as usize).copied().flatten() };
    let replies = GATE_REPLY_VA as *mut GateBatchReply;
    if let (Some(mut handler), Ok(windows)) = (handler, SharedRegion::new(UserWindows)) {
        // SAFETY: the handler object lives on the domain's heap, built for this table.
        let handler = unsafe { handler.as_mut() };
        gate::serve_batch(
            handler,
            slot,
            calls,
            windows.view(),
            WINDOW_BYTES,
            |i, reply| {
                // SAFETY: the reply page is mapped read-write in every domain's space; `i` is
                // below MAX_BATCH (serve_batch's index into the batch). The count is written
                // after the reply (the kernel's budget watch reads it at any moment).
                unsafe {
                    core::ptr::write(core::ptr::addr_of_mut!((*replies).replies[i]), *reply);
                    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
                    core::ptr::write_volatile(
                        core::ptr::addr_of_mut!((*replies).done),
                        i as u32 + 1,
                    );
                }
            },
        );
    }
    // SAFETY: the exit call; the kernel does not come back here.
    unsafe {
        core::arch::asm!("syscall", in("rax") SYSCALL_EXIT, in("rdi") 0u64, options(noreturn))
    }
}

/// Every domain built, for the shutdown report.
static DOMAINS: spin::Mutex<Vec<&'static Domain>> = spin::Mutex::new(Vec::new());

/// Logs each domain's entries into user mode, the calls they carried and its faults (at
/// shutdown: how well calls were batched).
pub fn log_usage() {
    use core::sync::atomic::Ordering::Relaxed;
    for d in DOMAINS.lock().iter() {
        log!(
            "user: domain {} ({}): {} calls in {} entries, {} faults",
            d.index,
            d.names,
            d.calls.load(Relaxed),
            d.entries.load(Relaxed),
            d.faults.load(Relaxed)
        );
    }
}

/// One protection domain.
pub struct Domain {
    /// Its number, in constructor order.
    pub index: usize,
    space: AddressSpace,
    /// The gate's memory (the same for every domain).
    pub(super) gate: &'static Gate,
    /// The domain's space page, at the kernel's address of it.
    page: *mut DomainPage,
    stack: UserStack,
    /// The stack's frames, at the kernel's address of them.
    stack_kva: u64,
    /// The heap, at the address both spaces map it at.
    heap_va: u64,
    heap_bytes: usize,
    policy: FaultPolicy,
    clean: CleanCopy,
    /// Entries into user mode, and the calls they carried.
    entries: core::sync::atomic::AtomicU64,
    calls: core::sync::atomic::AtomicU64,
    /// Faults since boot, and since the last reset.
    faults: core::sync::atomic::AtomicU64,
    faults_since_reset: core::sync::atomic::AtomicU64,
    /// Its services' names, for log lines: `faults, neighbour`.
    pub names: alloc::string::String,
}

// SAFETY: `page` is the domain's own page; the kernel touches it only while user mode is not
// running, on its one vCPU.
unsafe impl Sync for Domain {}
// SAFETY: as for Sync.
unsafe impl Send for Domain {}

impl Domain {
    /// Sets up domain `index` with `heap_bytes` of heap, and builds its services there with
    /// `build` (in kernel mode, allocating from the domain's heap). Returns a stand-in for
    /// each of its services, to register with the kernel's registry (the domain lives as long
    /// as they do: for ever).
    pub fn build(
        index: usize,
        heap_bytes: usize,
        policy: FaultPolicy,
        build: impl FnOnce() -> Box<dyn ServiceSet>,
    ) -> Result<Vec<StandIn>, DomainError> {
        if index >= MAX_DOMAINS {
            return Err(DomainError::TooMany);
        }
        let base = DOMAIN_BASE + index as u64 * DOMAIN_STRIDE;
        let gate = gate_memory()?;
        let pool_before = mm::pool_available();
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

        let stack = UserStack::at(base + STACK_OFFSET, STACK_PAGES)
            .map_err(|_| DomainError::Map(MapError::BadAddress(base)))?;
        let stack_kva = pages(STACK_PAGES as usize)?;
        mm::map_frames(Some(&space), stack.low, stack_kva, STACK_PAGES, rw)?;

        let heap_pages = heap_bytes.div_ceil(PAGE_SIZE);
        let heap_kva = pages(heap_pages)?;
        let heap_va = base + HEAP_OFFSET;
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
        let services: &'static mut dyn ServiceSet =
            unsafe { space::with_heap(core::ptr::addr_of!((*page).heap), || Box::leak(build())) };

        let mut collected = Registry::new();
        services
            .register_into(&mut collected)
            .map_err(DomainError::Registry)?;
        let mut slots = Vec::new();
        let mut names = alloc::string::String::new();
        for (slot, (handler, access)) in collected.into_services().enumerate() {
            // Taken now, while the object is as its constructor made it: never again.
            let info = handler.info();
            // SAFETY: the table is in the domain's page; the object is on its heap.
            unsafe { (*page).handlers[slot] = Some(NonNull::from(handler)) };
            if !names.is_empty() {
                names.push_str(", ");
            }
            names.push_str(info.name);
            slots.push((slot as u32, info, access));
        }
        // SAFETY: user code of this domain has not run: the page and heap are as the
        // constructor left them, and nothing else writes them now.
        let clean = unsafe {
            CleanCopy::take(
                page.cast::<u8>(),
                core::slice::from_raw_parts(heap_va as *const u8, heap_pages * PAGE_SIZE),
            )
        }
        .ok_or(DomainError::OutOfMemory)?;
        let domain: &'static Domain = Box::leak(Box::new(Domain {
            index,
            space,
            gate,
            page,
            stack,
            stack_kva,
            heap_va,
            heap_bytes: heap_pages * PAGE_SIZE,
            policy,
            clean,
            entries: core::sync::atomic::AtomicU64::new(0),
            calls: core::sync::atomic::AtomicU64::new(0),
            faults: core::sync::atomic::AtomicU64::new(0),
            faults_since_reset: core::sync::atomic::AtomicU64::new(0),
            names,
        }));
        log!(
            "user: domain {index} serves {}: heap {} KiB, stack {} KiB, {} page-table frames, clean copy {} bytes",
            domain.names,
            domain.heap_bytes / 1024,
            STACK_PAGES as usize * PAGE_SIZE / 1024,
            pool_before.saturating_sub(mm::pool_available()),
            domain.clean.heap_bytes()
        );
        DOMAINS.lock().push(domain);
        Ok(slots
            .into_iter()
            .map(|(slot, info, access)| StandIn::new(domain, slot, info, access))
            .collect())
    }

    /// The last panic's message, as the domain wrote it (bounded, printable ASCII only).
    pub(super) fn panic_message(&self) -> alloc::string::String {
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

    /// Hands `batch` to the domain through the gate (its argument bytes already in the
    /// argument window) and runs its entry in user mode: the domain's replies (a private copy),
    /// and how the entry ended if it did not return. What another domain left in the gate is
    /// cleared first; what this one leaves stays until another enters (it is its own).
    /// `args` and `result` are the gate's windows ([`Gate::windows`]).
    pub(super) fn run(
        &self,
        batch: &GateBatch,
        args: &mut [u8],
        result: &mut [u8],
    ) -> (GateBatchReply, Result<(), UserExit>) {
        let calls = batch.calls();
        {
            use core::sync::atomic::Ordering::Relaxed;
            self.entries.fetch_add(1, Relaxed);
            self.calls.fetch_add(calls.len() as u64, Relaxed);
        }
        let call_page = self.gate.call as *mut GateBatch;
        let reply_page = self.gate.reply as *mut GateBatchReply;
        let switched = self.gate.owner.lock().claim(
            self.index as u32,
            WindowOwner::reach(calls),
            args,
            result,
        );
        // SAFETY: the gate's pages are the kernel's and page-sized; user mode is not running
        // (it runs only from `super::run`, an opaque call after these writes).
        unsafe {
            if switched {
                core::ptr::write_bytes(call_page, 0, 1);
                core::ptr::write_bytes(reply_page, 0, 1);
            }
            core::ptr::addr_of_mut!((*call_page).count).write(calls.len() as u32);
            core::ptr::addr_of_mut!((*call_page).handler).write(batch.handler);
            core::ptr::copy_nonoverlapping(
                calls.as_ptr(),
                core::ptr::addr_of_mut!((*call_page).calls).cast::<GateCall>(),
                calls.len(),
            );
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*reply_page).done), 0);
        }
        let entry = xenrpc_domain_entry as *const () as u64;
        let progress = Progress {
            count_va: self.gate.reply + core::mem::offset_of!(GateBatchReply, done) as u64,
            max: calls.len() as u32,
        };
        // As if called: the ABI wants rsp + 8 16-byte aligned at a function's first
        // instruction.
        let top = self.stack.top - 8;
        let exit = super::run(
            &self.space,
            entry,
            top,
            0,
            self.policy.budget_ns,
            Some(progress),
        );
        let mut reply = GateBatchReply::zeroed();
        // SAFETY: as above; user mode is not running any more. Only the replies it says are
        // done are read (each checked later), the count once.
        unsafe {
            let done = core::ptr::read_volatile(core::ptr::addr_of!((*reply_page).done));
            let done = (done as usize).min(calls.len());
            reply.done = done as u32;
            core::ptr::copy_nonoverlapping(
                core::ptr::addr_of!((*reply_page).replies).cast::<gate::GateReply>(),
                reply.replies.as_mut_ptr(),
                done,
            );
        }
        match exit {
            UserExit::Returned(_) => (reply, Ok(())),
            exit => (reply, Err(exit)),
        }
    }

    /// Counts a fault of the domain's code and logs `what` with the count. The fault that
    /// completes `reset_after` since the last reset puts the domain back to its clean copy.
    pub(super) fn fault(&self, what: core::fmt::Arguments<'_>) {
        use core::sync::atomic::Ordering::SeqCst;
        let n = self.faults.fetch_add(1, SeqCst) + 1;
        log!("{what}; {n} in domain {}", self.index);
        let since = self.faults_since_reset.fetch_add(1, SeqCst) + 1;
        if self.policy.reset_after != 0 && since >= self.policy.reset_after {
            self.faults_since_reset.store(0, SeqCst);
            self.reset();
            log!(
                "rpc: domain {} ({}) reset to its clean copy after {since} fault{}",
                self.index,
                self.names,
                if since == 1 { "" } else { "s" }
            );
        }
    }

    /// Puts the domain's memory back as its constructor left it: the space page (allocator
    /// state, handler table) and the heap from the clean copy, the stack zeroed.
    fn reset(&self) {
        // What the gate holds was this domain's: after the reset it starts from nothing.
        self.gate.owner.lock().disown();
        // SAFETY: user mode is not running (one vCPU, the kernel is); the page, the heap (at
        // its kernel mapping) and the stack frames are the domain's own and nothing else
        // holds a reference into them.
        unsafe {
            self.clean.restore(
                self.page.cast::<u8>(),
                core::slice::from_raw_parts_mut(self.heap_va as *mut u8, self.heap_bytes),
            );
            core::ptr::write_bytes(
                self.stack_kva as *mut u8,
                0,
                STACK_PAGES as usize * PAGE_SIZE,
            );
        }
    }
}
