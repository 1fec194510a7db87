//! The RPC service: the xenbus backend that attaches clients, and the dispatch loop that serves
//! their calls with the services the image was given.
//!
//! The loop polls every connection whose event channel fired (or that has requests left over
//! from its budget), spins briefly while calls keep arriving, then arms every ring's event
//! threshold and blocks in `SCHEDOP_block` until an event. Handlers never block.

pub mod backend;
mod connection;
pub mod platform;

use spin::Mutex;
use xen_abi::DomId;
use xenrpc_proto::wait::{SpinBudget, SpinPolicy};
use xenrpc_proto::{PeerId, Registry, ServiceCounters};

use self::backend::{deliver_watch_events, Backend, KernelConnector, KernelStore};
use self::connection::ConnectionEnd;
use crate::log;
use crate::xen::{console, control, events, time, xenstore};
use xenrpc_rendezvous::backend::DeviceKey;
use xenrpc_rendezvous::backend::EndKind;

/// Work units (see `xenrpc_proto::fair`) served per connection before moving to the next.
const BUDGET_PER_CONNECTION: u64 = xenrpc_proto::PASS_BUDGET;
/// How long the loop keeps polling after the last request before it blocks (the protocol's
/// spin-then-block policy, `xenrpc_proto::wait`): a client that sends its next call within
/// this window is served without a wake-up. A fixed window, not an adaptive one: a wake-up of
/// this vCPU can take longer than the window (hundreds of µs under emulation), so every wait
/// that blocked would look too long to spin for and the window would never reopen (measured:
/// an adaptive window made null calls several times slower in bench-guest).
const SPIN_NS: u64 = 50_000;
/// How often a sleeping loop looks whether xenconsoled caught up with a dropping console.
const CONSOLE_RECHECK_NS: u64 = 100_000_000;

static BACKEND: Mutex<Option<Backend>> = Mutex::new(None);

/// Domain 0 (the toolstack's) sees every tenant's counters; other domains only their own.
fn is_privileged(peer: PeerId) -> bool {
    peer == PeerId(0)
}

/// An empty registry for the service VM: calls counted into `counters` (reported by
/// introspection), dom0 privileged.
pub fn registry(counters: &mut ServiceCounters) -> Registry<'_> {
    let mut registry = Registry::with_counters(counters);
    registry.set_privileged(is_privileged);
    registry
}

/// Closes every client when the VM is asked to shut down.
fn close_all_on_shutdown() {
    if let Some(backend) = BACKEND.lock().as_mut() {
        backend.shutdown(&mut KernelStore);
        log!("rpc: all clients closed");
        #[cfg(not(feature = "unprotected"))]
        crate::user::domain::log_usage();
    }
}

/// Starts the backend (domU only: it needs xenstore).
pub fn init(
    own: DomId,
    registry: &Registry<'_>,
) -> Result<(), xenrpc_rendezvous::backend::StoreError> {
    let backend = Backend::start(&mut KernelStore, own)?;
    *BACKEND.lock() = Some(backend);
    control::on_shutdown(close_all_on_shutdown);
    log!(
        "rpc: serving {}; backend at {}",
        registry.serving(),
        xenrpc_rendezvous::backend_root(own)
    );
    Ok(())
}

/// Serves connection `k` once (up to one budget of work); ends it if the client broke or
/// abused it. Returns the requests handled.
fn serve_one(k: DeviceKey, registry: &mut Registry<'_>) -> u32 {
    let mut guard = BACKEND.lock();
    let Some(backend) = guard.as_mut() else {
        return 0;
    };
    let Some(conn) = backend.connection_mut(k) else {
        return 0;
    };
    let end = match conn.serve(registry, BUDGET_PER_CONNECTION) {
        Ok(handled) => return handled,
        Err(end) => end,
    };
    let kind = match end {
        ConnectionEnd::Violation(_) => EndKind::Violation,
        ConnectionEnd::ClientLetGo => EndKind::ClientLetGo,
        ConnectionEnd::Storm(_) => EndKind::EventStorm,
        ConnectionEnd::PingStorm(_) => EndKind::PingStorm,
    };
    backend.end(&mut KernelStore, k, kind, &end);
    0
}

/// Delivers events and xenstore replies, then lets the backend act on the watch events:
/// handshakes, refusals, released tenants (whose services' state is freed here). Runs with
/// the backend unlocked on entry: a watch handler may take it (the shutdown hook).
fn service_backend(registry: &mut Registry<'_>, lost_events: &mut u64) {
    events::dispatch_pending();
    xenstore::service();
    console::catch_up();
    let mut guard = BACKEND.lock();
    let Some(backend) = guard.as_mut() else {
        return;
    };
    // Watch events were dropped (queue full): look at every device again.
    let lost = xenstore::lost_events();
    if lost != *lost_events {
        *lost_events = lost;
        backend.request_rescan();
    }
    deliver_watch_events(backend);
    backend.service(&mut KernelStore, &mut KernelConnector);
    for (client, why) in backend.take_released() {
        registry.forget_peer(PeerId(client.into()));
        log!("rpc: dom{client}: tenant released ({why}), kv namespace freed");
    }
    backend.publish_totals(
        &mut KernelStore,
        &[("console_dropped", console::dropped_lines())],
    );
}

/// The connection after `after` (the first if `None`).
fn next_connection(after: Option<DeviceKey>) -> Option<DeviceKey> {
    BACKEND.lock().as_ref()?.next_connected(after)
}

/// Arms every connection for sleep; false if any has work after all.
fn ready_to_sleep(backend: &mut Backend) -> bool {
    let mut ready = true;
    for (_, conn) in backend.connections_mut() {
        ready &= conn.ready_to_sleep();
    }
    ready
}

/// The dispatch loop. Never returns: the VM ends through `control/shutdown`.
pub fn run(registry: &mut Registry<'_>) -> ! {
    let mut spin = SpinBudget::new(SpinPolicy::nanos(SPIN_NS));
    let mut lost_events = xenstore::lost_events();
    loop {
        service_backend(registry, &mut lost_events);
        // One budget per connection, with events, xenstore and handshakes serviced between
        // connections: nobody waits for a whole pass of everyone else's work.
        let mut handled = 0;
        let mut after = None;
        while let Some(k) = next_connection(after) {
            after = Some(k);
            handled += serve_one(k, registry);
            service_backend(registry, &mut lost_events);
        }
        if handled > 0 {
            spin.work_came(&time::now_ns);
            continue;
        }
        if spin.keep_spinning(&time::now_ns) {
            core::hint::spin_loop();
            continue;
        }
        // Woken, the loop spins again (a wake-up may not be for work).
        spin.restart();
        let now = time::now_ns();
        let mut guard = BACKEND.lock();
        let Some(backend) = guard.as_mut() else {
            continue;
        };
        if !ready_to_sleep(backend) {
            continue;
        }
        // Steps the rate limits postponed wake the loop when they are due; a console that is
        // dropping lines is looked at every CONSOLE_RECHECK_NS, to say what it dropped.
        let console_due = console::dropping().then(|| now + CONSOLE_RECHECK_NS);
        let wake_at = match (backend.next_deferred_ns(), console_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Unlocked first: a watch handler may take BACKEND itself (the shutdown hook closes
        // every client), and delivering one under the lock hung `xl shutdown` once in CI.
        drop(guard);
        // Watch events that came in while the rescan's xenstore calls waited for replies are
        // queued with no event pending to wake us: deliver them (their handlers queue them for
        // the backend) instead of sleeping on them.
        if xenstore::service() > 0 {
            continue;
        }
        if let Err(e) = events::idle(wake_at) {
            crate::fatal(format_args!("idle failed: {e}"));
        }
    }
}
