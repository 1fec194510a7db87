//! The RPC service: the xenbus backend that attaches clients, and the dispatch loop that serves
//! their calls with the built-in services.
//!
//! The loop polls every connection whose event channel fired (or that has requests left over
//! from its budget), spins briefly while calls keep arriving, then arms every ring's event
//! threshold and blocks in `SCHEDOP_block` until an event. Handlers never block.

pub mod backend;
mod connection;

use alloc::boxed::Box;
use core::sync::atomic::Ordering;

use spin::Mutex;
use xen_abi::DomId;
use xenrpc_proto::services::{arith, echo, kv};
use xenrpc_proto::{PeerId, Registry, ServiceCounters};

use self::backend::{Backend, RESCAN};
use crate::log;
use crate::xen::{control, events, time, xenstore};

/// Work units (see `xenrpc_proto::fair`) served per connection before moving to the next.
const BUDGET_PER_CONNECTION: u64 = xenrpc_proto::PASS_BUDGET;
/// How long the loop keeps polling after the last request before it blocks: a client that
/// sends its next call within this window is served without a wake-up.
const SPIN_NS: u64 = 50_000;

static BACKEND: Mutex<Option<Backend>> = Mutex::new(None);

/// What the service VM was configured with at boot.
#[derive(Clone, Copy, Debug)]
pub struct RpcConfig {
    /// The kv store's memory limits for all tenants together.
    pub kv_budget: kv::KvBudget,
}

impl RpcConfig {
    /// Sized from the heap (a quarter of it for kv, see `KvBudget::for_heap`); the command
    /// line's `kv-budget=<bytes>` (the xl config's `extra`) lowers the byte budget, never
    /// past what the heap allows.
    pub fn from_boot(heap_bytes: usize, cmdline: &str) -> Self {
        let mut kv_budget = kv::KvBudget::for_heap(heap_bytes);
        if let Some(value) = cmdline
            .split_ascii_whitespace()
            .find_map(|word| word.strip_prefix("kv-budget="))
        {
            match xenrpc_rendezvous::parse_decimal(value.as_bytes(), u32::MAX) {
                Ok(bytes) if (bytes as usize) <= kv_budget.max_bytes => {
                    kv_budget.max_bytes = bytes as usize;
                }
                Ok(bytes) => log!(
                    "rpc: kv-budget={bytes} exceeds a quarter of the heap; keeping {}",
                    kv_budget.max_bytes
                ),
                Err(e) => log!("rpc: ignoring kv-budget={value}: {e}"),
            }
        }
        RpcConfig { kv_budget }
    }
}

/// Domain 0 (the toolstack's) sees every tenant's counters; other domains only their own.
fn is_privileged(peer: PeerId) -> bool {
    peer == PeerId(0)
}

/// The built-in services' state, owned by the loop.
struct Services {
    echo: echo::Handler<echo::EchoServer>,
    arith: arith::Handler<arith::ArithServer>,
    kv: kv::Handler<kv::KvStore>,
    /// Calls and errors per service and tenant since boot, reported by introspection (boxed:
    /// too large for the stack).
    counters: Box<ServiceCounters>,
}

impl Services {
    fn new(config: &RpcConfig) -> Self {
        Self {
            echo: echo::Handler(echo::EchoServer),
            arith: arith::Handler(arith::ArithServer),
            kv: kv::Handler(kv::KvStore::with_budget(config.kv_budget)),
            counters: ServiceCounters::new_boxed(),
        }
    }

    fn registry(&mut self) -> Registry<'_> {
        let mut registry = Registry::with_counters(&mut self.counters);
        let registered = registry
            .register(&mut self.echo)
            .and_then(|()| registry.register(&mut self.arith))
            .and_then(|()| registry.register(&mut self.kv));
        // Distinct ids, far below the registry's capacity: cannot fail.
        assert_eq!(registered, Ok(()), "built-in services clash");
        registry.set_privileged(is_privileged);
        registry
    }
}

/// Closes every client when the VM is asked to shut down.
fn close_all_on_shutdown() {
    if let Some(backend) = BACKEND.lock().as_mut() {
        backend.shutdown();
        log!("rpc: all clients closed");
    }
}

/// Starts the backend (domU only: it needs xenstore).
pub fn init(own: DomId) -> Result<(), xenstore::XsError> {
    *BACKEND.lock() = Some(Backend::start(own)?);
    control::on_shutdown(close_all_on_shutdown);
    log!(
        "rpc: serving echo, arith, kv, introspection; backend at {}",
        xenrpc_rendezvous::backend_root(own)
    );
    Ok(())
}

/// The dispatch loop. Never returns: the VM ends through `control/shutdown`.
pub fn run(config: RpcConfig) -> ! {
    log!(
        "rpc: kv budget {} bytes, {} entries",
        config.kv_budget.max_bytes,
        config.kv_budget.max_entries
    );
    let mut services = Services::new(&config);
    let mut registry = services.registry();
    let mut last_work = 0u64;
    let mut lost_events = xenstore::lost_events();
    loop {
        events::dispatch_pending();
        xenstore::service();
        // Watch events were dropped (queue full): look at every device again.
        let lost = xenstore::lost_events();
        if lost != lost_events {
            lost_events = lost;
            RESCAN.store(true, Ordering::SeqCst);
        }
        let mut guard = BACKEND.lock();
        let backend = guard.as_mut().expect("rpc::init ran");
        if RESCAN.swap(false, Ordering::SeqCst) {
            backend.rescan();
        }
        let handled = backend.serve(&mut registry, BUDGET_PER_CONNECTION);
        let now = time::now_ns();
        if handled > 0 {
            last_work = now;
            continue;
        }
        if now.saturating_sub(last_work) < SPIN_NS {
            core::hint::spin_loop();
            continue;
        }
        if !backend.ready_to_sleep() {
            continue;
        }
        // Unlocked first: a watch handler may take BACKEND itself (the shutdown hook closes
        // every client), and delivering one under the lock hung `xl shutdown` once in CI.
        drop(guard);
        // Watch events that came in while the rescan's xenstore calls waited for replies are
        // queued with no event pending to wake us: deliver them (their handlers set RESCAN)
        // instead of sleeping on them.
        if xenstore::service() > 0 {
            continue;
        }
        if let Err(e) = events::idle(None) {
            crate::fatal(format_args!("idle failed: {e}"));
        }
    }
}
