//! Event channels: allocation and binding, send/close/mask/unmask, and dispatch of pending
//! ports to handlers.
//!
//! Upcalls stay masked (see `traps`): the kernel finds pending ports itself, with the fair
//! two-level scan of `xen_abi::evtchn`, from [`dispatch_pending`], which the main loop and
//! every wait call. Races handled there:
//! - a port's pending bit is cleared *before* its handler runs, so an event that arrives while
//!   the handler runs sets it again and is served on the next round, never lost;
//! - a port masked after the scan read its word is skipped (re-checked before clearing);
//! - unmasking goes through `EVTCHNOP_unmask`, which re-raises the selector if the port became
//!   pending while masked (a plain bit clear would leave such an event stranded).
//!
//! An event on a port without a handler is unexpected: it is logged once and the port is
//! masked (the event stays pending for a handler installed later), so a peer cannot make the
//! kernel spin on it.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::fmt;

use spin::Mutex;
pub use xen_abi::evtchn::Port;
use xen_abi::evtchn::{port_bit, FairScanner, PendingWords};
use xen_abi::DomId;
use xen_sys as abi;

use super::hypercall::{self, XenError, XenResult};
use super::{shared_info, time};
use crate::log;

/// A port handler. It runs from [`dispatch_pending`] with no event lock held; it should only
/// note the event (set a flag, wake a state machine) and must not wait for events itself.
pub type Handler = Arc<dyn Fn(Port) + Send + Sync>;

struct Registry {
    handlers: BTreeMap<Port, Handler>,
    /// Ports already reported as unexpected (reported once each).
    reported_unexpected: BTreeMap<Port, u64>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    handlers: BTreeMap::new(),
    reported_unexpected: BTreeMap::new(),
});

/// The resume point of the fair scan; copied out for a scan so no lock is held over handlers.
static SCANNER: Mutex<FairScanner> = Mutex::new(FairScanner::new());

/// `SCHEDOP_poll` accepts at most this many ports.
const MAX_POLL_PORTS: usize = 128;

/// Rounds of (selector swap, scan) one dispatch makes at most: a peer that re-raises its port
/// as fast as it can delays the caller by a bounded amount, and the rest waits for the next
/// dispatch.
const MAX_DISPATCH_ROUNDS: u32 = 16;

/// Why an event-channel operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventError {
    /// Xen refused the hypercall.
    Xen(XenError),
    /// Xen handed out a port the two-level ABI cannot address (the port was closed again).
    PortOutOfRange(Port),
    /// A wait passed its deadline.
    TimedOut,
    /// More ports have handlers than `SCHEDOP_poll` can watch at once.
    TooManyPorts(usize),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::Xen(e) => write!(f, "Xen refused: {e}"),
            EventError::PortOutOfRange(p) => write!(f, "port {p} is beyond the 2-level ABI"),
            EventError::TimedOut => f.write_str("timed out"),
            EventError::TooManyPorts(n) => {
                write!(
                    f,
                    "{n} ports to wait on, SCHEDOP_poll takes {MAX_POLL_PORTS}"
                )
            }
        }
    }
}

impl From<XenError> for EventError {
    fn from(e: XenError) -> Self {
        EventError::Xen(e)
    }
}

/// Checks a port Xen returned; closes it if unusable.
fn checked_new_port(port: Port) -> Result<Port, EventError> {
    if port_bit(port).is_some() {
        Ok(port)
    } else {
        let _ = close_raw(port);
        Err(EventError::PortOutOfRange(port))
    }
}

/// `EVTCHNOP_alloc_unbound`: a new port that domain `remote` may bind to. The port starts
/// masked; register a handler and [`unmask`] it to receive events.
pub fn alloc_unbound(remote: DomId) -> Result<Port, EventError> {
    let mut op = abi::evtchn_alloc_unbound {
        dom: xen_abi::DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    // SAFETY: `op` is a live evtchn_alloc_unbound for the duration of the call.
    unsafe { hypercall::event_channel_op(abi::EVTCHNOP_alloc_unbound, &mut op) }?;
    let port = checked_new_port(op.port)?;
    shared_info::set_mask(port);
    Ok(port)
}

/// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote_port` of `remote`. The
/// port starts masked.
pub fn bind_interdomain(remote: DomId, remote_port: Port) -> Result<Port, EventError> {
    let mut op = abi::evtchn_bind_interdomain {
        remote_dom: remote,
        remote_port,
        local_port: 0,
    };
    // SAFETY: `op` is a live evtchn_bind_interdomain for the duration of the call.
    unsafe { hypercall::event_channel_op(abi::EVTCHNOP_bind_interdomain, &mut op) }?;
    let port = checked_new_port(op.local_port)?;
    shared_info::set_mask(port);
    Ok(port)
}

/// `EVTCHNOP_bind_virq` on vCPU 0. The port starts masked.
pub fn bind_virq(virq: u32) -> Result<Port, EventError> {
    let mut op = abi::evtchn_bind_virq {
        virq,
        vcpu: 0,
        port: 0,
    };
    // SAFETY: `op` is a live evtchn_bind_virq for the duration of the call.
    unsafe { hypercall::event_channel_op(abi::EVTCHNOP_bind_virq, &mut op) }?;
    let port = checked_new_port(op.port)?;
    shared_info::set_mask(port);
    Ok(port)
}

/// `EVTCHNOP_send`: notifies the other end of `port`.
pub fn send(port: Port) -> XenResult<()> {
    hypercall::evtchn_send(port)
}

fn close_raw(port: Port) -> XenResult<()> {
    let mut op = abi::evtchn_close { port };
    // SAFETY: `op` is a live evtchn_close for the duration of the call.
    unsafe { hypercall::event_channel_op(abi::EVTCHNOP_close, &mut op) }
}

/// `EVTCHNOP_close`: removes the handler, masks the port and closes it.
pub fn close(port: Port) -> XenResult<()> {
    remove_handler(port);
    if port_bit(port).is_some() {
        shared_info::set_mask(port);
        shared_info::clear_pending(port);
    }
    close_raw(port)
}

/// Masks `port`: its events stay pending and are not dispatched.
pub fn mask(port: Port) {
    if port_bit(port).is_some() {
        shared_info::set_mask(port);
    }
}

/// Unmasks `port` through Xen, which re-raises the event if it arrived while masked.
pub fn unmask(port: Port) -> XenResult<()> {
    let mut op = abi::evtchn_unmask { port };
    // SAFETY: `op` is a live evtchn_unmask for the duration of the call.
    unsafe { hypercall::event_channel_op(abi::EVTCHNOP_unmask, &mut op) }
}

/// Installs `handler` for `port` (replacing any previous one). Does not unmask.
pub fn set_handler(port: Port, handler: Handler) -> Result<(), EventError> {
    if port_bit(port).is_none() {
        return Err(EventError::PortOutOfRange(port));
    }
    let mut registry = REGISTRY.lock();
    registry.handlers.insert(port, handler);
    registry.reported_unexpected.remove(&port);
    Ok(())
}

/// Removes `port`'s handler; returns whether there was one.
pub fn remove_handler(port: Port) -> bool {
    REGISTRY.lock().handlers.remove(&port).is_some()
}

/// The live shared_info bitmaps, read fresh for every word the scan looks at.
struct LiveBitmaps;

impl PendingWords for LiveBitmaps {
    fn active(&mut self, word: usize) -> u64 {
        shared_info::pending_bits(word) & !shared_info::mask_bits(word)
    }
}

/// Serves one pending port: re-checks the mask, clears the pending bit, runs the handler. A
/// port without a handler is masked with its event left pending, so a handler installed later
/// (a peer may signal between our bind and `set_handler`) still gets it when it unmasks.
fn serve(port: Port) {
    if shared_info::is_masked(port) {
        return;
    }
    let handler = {
        let mut registry = REGISTRY.lock();
        match registry.handlers.get(&port) {
            Some(h) => Some(h.clone()),
            None => {
                shared_info::set_mask(port);
                let seen = registry.reported_unexpected.entry(port).or_insert(0);
                *seen += 1;
                if *seen == 1 {
                    log!("events: unexpected event on port {port} (no handler): port masked");
                }
                None
            }
        }
    };
    if let Some(handler) = handler {
        if shared_info::clear_pending(port) {
            handler(port);
        }
    }
}

/// Selector bits taken while guest user mode ran (see [`defer_pending`]).
static DEFERRED_SELECTOR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// An upcall interrupted guest user mode: takes the pending flag and selector, so that the
/// next event raises a fresh upcall (the budget timer must be able to), and keeps the
/// selector for the next [`dispatch_pending`].
pub fn defer_pending() {
    shared_info::take_upcall_pending();
    let selector = shared_info::take_pending_sel();
    DEFERRED_SELECTOR.fetch_or(selector, core::sync::atomic::Ordering::SeqCst);
}

/// Runs the handlers of every pending, unmasked port. Returns how many ports were served.
pub fn dispatch_pending() -> usize {
    let mut served = 0;
    for _ in 0..MAX_DISPATCH_ROUNDS {
        // Clear the flag before taking the selector: an event after this point sets both again.
        let flagged = shared_info::take_upcall_pending();
        let selector = shared_info::take_pending_sel()
            | DEFERRED_SELECTOR.swap(0, core::sync::atomic::Ordering::SeqCst);
        if selector == 0 && !flagged {
            break;
        }
        let mut scanner = *SCANNER.lock();
        served += scanner.scan(selector, &mut LiveBitmaps, serve);
        *SCANNER.lock() = scanner;
    }
    served
}

/// Longest single sleep when more ports have handlers than `SCHEDOP_poll` can watch: the
/// wait then polls no port (any event or the timeout ends it) in slices this long.
const OVERFLOW_POLL_SLICE_NS: u64 = 1_000_000;

/// Unmasked ports that have handlers, or `None` if there are more than `SCHEDOP_poll` takes.
/// Masked ones are left out: Xen's poll ignores the mask, so a masked pending port would end
/// every poll at once.
fn handled_ports() -> Option<([Port; MAX_POLL_PORTS], usize)> {
    let registry = REGISTRY.lock();
    let mut ports = [0; MAX_POLL_PORTS];
    let mut count = 0;
    for &port in registry.handlers.keys() {
        if shared_info::is_masked(port) {
            continue;
        }
        if count == MAX_POLL_PORTS {
            return None;
        }
        ports[count] = port;
        count += 1;
    }
    Some((ports, count))
}

/// Sleeps until an event is pending on a port with a handler, or until absolute system time
/// `deadline_ns`; `None` sleeps until any unmasked event (`SCHEDOP_block`). Runs no handlers:
/// follow with [`dispatch_pending`].
pub fn idle(deadline_ns: Option<u64>) -> Result<(), EventError> {
    match deadline_ns {
        None => {
            // Xen unmasks upcalls, returns at once if one is pending, and the event callback
            // masks them again before we get back here.
            hypercall::sched_block();
            shared_info::mask_upcalls();
            Ok(())
        }
        Some(deadline) => match handled_ports() {
            Some((ports, count)) => poll(&ports[..count], deadline),
            None => {
                let slice_end = time::now_ns().saturating_add(OVERFLOW_POLL_SLICE_NS);
                poll(&[], deadline.min(slice_end))
            }
        },
    }
}

/// Sleeps with events masked until one of `ports` is pending or absolute system time
/// `deadline_ns` passes. `SCHEDOP_poll` checks the ports after marking us blocked, so an event
/// that arrived since the caller's last dispatch ends it at once.
pub fn poll(ports: &[Port], deadline_ns: u64) -> Result<(), EventError> {
    if ports.len() > MAX_POLL_PORTS {
        return Err(EventError::TooManyPorts(ports.len()));
    }
    if let Some(&bad) = ports.iter().find(|p| port_bit(**p).is_none()) {
        return Err(EventError::PortOutOfRange(bad));
    }
    if time::now_ns() >= deadline_ns {
        return Ok(());
    }
    hypercall::sched_poll(ports, deadline_ns)?;
    Ok(())
}

/// Dispatches events until `done()` holds or `timeout_ns` passes, sleeping until an event on
/// one of `ports` (after each wake every pending handler runs, whatever its port).
pub fn wait_on(
    ports: &[Port],
    timeout_ns: u64,
    mut done: impl FnMut() -> bool,
) -> Result<(), EventError> {
    let deadline = time::now_ns().saturating_add(timeout_ns);
    loop {
        dispatch_pending();
        if done() {
            return Ok(());
        }
        if time::now_ns() >= deadline {
            return Err(EventError::TimedOut);
        }
        poll(ports, deadline)?;
    }
}

/// Dispatches events until `done()` holds or `timeout_ns` passes.
pub fn wait_until(timeout_ns: u64, mut done: impl FnMut() -> bool) -> Result<(), EventError> {
    let deadline = time::now_ns().saturating_add(timeout_ns);
    loop {
        dispatch_pending();
        if done() {
            return Ok(());
        }
        if time::now_ns() >= deadline {
            return Err(EventError::TimedOut);
        }
        idle(Some(deadline))?;
    }
}
