//! One client connection in the service VM: the client's granted ring and data pages mapped
//! once into a slot of the foreign window, the interdomain event channel, and the protocol's
//! server end over them. Dropping a connection closes the port and unmaps every grant.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use xen_abi::grant::{GrantAccess, GrantHandle, GrantRef};
use xen_abi::DomId;
use xenrpc_proto::{
    EventStorm, EventStormGuard, PeerId, RingGeometry, ServerConnection, SetupError, SharedMemory,
    Violation,
};
use xenrpc_rendezvous::{Index, IndexError};

use crate::log;
use crate::mm::pagetable::MapError;
use crate::mm::{self, ForeignSlot};
use crate::xen::events::{self, EventError, Port};
use crate::xen::grant::{self, GrantTableError};

/// Why a connection could not be established.
#[derive(Debug)]
pub enum ConnectError {
    NoSlot(MapError),
    MapIndex(GrantTableError),
    Index(IndexError),
    /// The ring page count matches no ring geometry.
    RingPages(usize),
    MapPages(GrantTableError),
    Setup(SetupError),
    Bind(EventError),
    /// The slot was quarantined: a grant in it could not be unmapped.
    SlotQuarantined,
    /// The heap could not hold the connection's bookkeeping.
    OutOfMemory,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NoSlot(e) => write!(f, "no foreign slot: {e}"),
            ConnectError::MapIndex(e) => write!(f, "mapping the index page failed: {e:?}"),
            ConnectError::Index(e) => write!(f, "bad index page: {e}"),
            ConnectError::RingPages(n) => write!(f, "{n} ring pages match no ring geometry"),
            ConnectError::MapPages(e) => write!(f, "mapping the ring and data pages failed: {e:?}"),
            ConnectError::Setup(e) => write!(f, "ring setup refused: {e:?}"),
            ConnectError::Bind(e) => write!(f, "binding the event channel failed: {e:?}"),
            ConnectError::SlotQuarantined => {
                write!(f, "the index page could not be unmapped (slot quarantined)")
            }
            ConnectError::OutOfMemory => write!(f, "out of memory for the connection"),
        }
    }
}

/// Why a live connection must end.
#[derive(Debug, Clone, Copy)]
pub enum ConnectionEnd {
    /// The client broke the protocol.
    Violation(Violation),
    /// The client cleared `client_alive`: its process let go of the pages (exited, killed, or
    /// revoked them), and its kernel's unmap notify told us.
    ClientLetGo,
    /// The client raised its event far more often than its calls explain.
    Storm(EventStorm),
    /// The client raised its ping port far more often than its calls explain.
    PingStorm(EventStorm),
}

impl fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionEnd::Violation(v) => write!(f, "protocol violation: {v:?}"),
            ConnectionEnd::ClientLetGo => {
                write!(
                    f,
                    "client let go of its pages (process ended or revoked them)"
                )
            }
            ConnectionEnd::Storm(storm) => write!(f, "{storm}"),
            ConnectionEnd::PingStorm(storm) => write!(
                f,
                "ping storm: {} pings against {} calls within {} ms",
                storm.spurious,
                storm.earned,
                xenrpc_proto::storm::STORM_WINDOW_NS / 1_000_000
            ),
        }
    }
}

/// Pages of a foreign slot mapped from one client's grants.
#[derive(Clone, Copy)]
pub struct GrantedRegion {
    base: u64,
    len: usize,
}

// SAFETY: the region lies in a foreign slot whose pages stay mapped until the `Mappings` that
// owns the slot is dropped, which happens only after the `ServerConnection` holding this region
// (field order in `Connection`, and `Connection::drop`). The base is page aligned.
unsafe impl SharedMemory for GrantedRegion {
    fn base(&self) -> *mut u8 {
        self.base as *mut u8
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The grants mapped into one slot; unmaps them all and frees the slot when dropped.
struct Mappings {
    client: DomId,
    slot: Option<ForeignSlot>,
    mapped: Vec<(u64, GrantHandle)>,
}

impl Mappings {
    fn new(client: DomId, slot: ForeignSlot) -> Self {
        Self {
            client,
            slot: Some(slot),
            mapped: Vec::new(),
        }
    }

    fn base(&self) -> u64 {
        self.slot.as_ref().map_or(0, |s| s.base)
    }

    fn pages(&self) -> u64 {
        self.slot.as_ref().map_or(0, |s| s.pages)
    }

    /// The slot, unless it was quarantined.
    fn usable_slot(&self) -> Result<&ForeignSlot, ConnectError> {
        self.slot.as_ref().ok_or(ConnectError::SlotQuarantined)
    }

    /// Maps one grant at `page` of the slot (the index page: the slot's last page).
    fn map(&mut self, page: u64, grant: u32, access: GrantAccess) -> Result<u64, ConnectError> {
        let slot = self.usable_slot()?;
        if page >= slot.pages {
            return Err(ConnectError::RingPages(page as usize));
        }
        let va = slot.base + page * mm::PAGE_SIZE_U64;
        self.mapped
            .try_reserve(1)
            .map_err(|_| ConnectError::OutOfMemory)?;
        let handle = grant::map_grant(self.client, GrantRef(grant), va, access)
            .map_err(ConnectError::MapIndex)?;
        self.mapped.push((va, handle));
        Ok(va)
    }

    /// Maps `grants` at the first pages of the slot, batched, all or nothing. The index page
    /// (the slot's last) must be unmapped already, and the grants must leave it free.
    fn map_all(&mut self, grants: &[GrantRef]) -> Result<(), ConnectError> {
        let slot = self.usable_slot()?;
        let base = slot.base;
        if !self.mapped.is_empty() || grants.len() as u64 >= slot.pages {
            return Err(ConnectError::RingPages(grants.len()));
        }
        self.mapped
            .try_reserve_exact(grants.len())
            .map_err(|_| ConnectError::OutOfMemory)?;
        let handles = grant::map_grants(self.client, grants, base, GrantAccess::ReadWrite)
            .map_err(ConnectError::MapPages)?;
        self.mapped.extend(
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| (base + i as u64 * mm::PAGE_SIZE_U64, h)),
        );
        Ok(())
    }

    fn unmap_last(&mut self) {
        if let Some((va, handle)) = self.mapped.pop() {
            if let Err(e) = grant::unmap_grant(va, handle) {
                log!("rpc: dom{}: unmapping {va:#x} failed: {e:?}", self.client);
                self.quarantine();
            }
        }
    }

    /// A slot whose grants could not all be unmapped is never reused.
    fn quarantine(&mut self) {
        // Never handed back to mm, the slot stays marked in use: nothing maps there again.
        if let Some(slot) = self.slot.take() {
            log!("rpc: foreign slot at {:#x} quarantined", slot.base);
        }
    }
}

impl Drop for Mappings {
    fn drop(&mut self) {
        while !self.mapped.is_empty() {
            self.unmap_last();
        }
        if let Some(slot) = self.slot.take() {
            if let Err(e) = mm::release_foreign_slot(slot) {
                log!("rpc: releasing a foreign slot failed: {e}");
            }
        }
    }
}

pub struct Connection {
    pub client: DomId,
    /// Set by the event-channel handler; cleared by the dispatch loop.
    kicked: Arc<AtomicBool>,
    /// Requests were left over when the budget ran out: serve again without an event.
    leftover: bool,
    storm_guard: EventStormGuard,
    port: Port,
    /// The client's optional ping port: the loop sends one event back for each pass in which
    /// it fired (never from the event handler: a flood costs one bounce per pass, and is
    /// counted by `ping_guard`).
    ping: Option<Port>,
    ping_kicked: Arc<AtomicBool>,
    ping_guard: EventStormGuard,
    /// Event sends to the client that failed (its port closed under us).
    send_failures: u64,
    /// Declared before `mappings`: the server end goes away before the pages it reads.
    server: ServerConnection<GrantedRegion, GrantedRegion>,
    mappings: Mappings,
    pub ring_pages: usize,
}

impl Connection {
    /// Maps the client's pages named by its index page, attaches the protocol's server end and
    /// binds the client's event channel. Anything wrong undoes what was done and says why.
    pub fn establish(
        client: DomId,
        index_ref: u32,
        remote_port: u32,
        remote_ping_port: Option<u32>,
    ) -> Result<Self, ConnectError> {
        let slot = mm::reserve_foreign_slot().map_err(ConnectError::NoSlot)?;
        let mut mappings = Mappings::new(client, slot);
        let index_page = mappings.pages() - 1;

        let va = mappings.map(index_page, index_ref, GrantAccess::ReadOnly)?;
        let mut copy = [0u8; mm::PAGE_SIZE];
        for (i, byte) in copy.iter_mut().enumerate() {
            // SAFETY: the index page is mapped read-only at `va` (just above); each byte the
            // client can change is read exactly once into the private copy.
            *byte = unsafe { core::ptr::read_volatile((va + i as u64) as *const u8) };
        }
        mappings.unmap_last();
        let index = Index::parse(&copy, index_page as usize).map_err(ConnectError::Index)?;
        let geometry = RingGeometry::for_region_pages(index.ring_pages())
            .ok_or(ConnectError::RingPages(index.ring_pages()))?;

        let mut grants: Vec<GrantRef> = Vec::new();
        grants
            .try_reserve_exact(index.ring_pages() + index.data_pages())
            .map_err(|_| ConnectError::OutOfMemory)?;
        grants.extend(
            index
                .ring_refs()
                .iter()
                .chain(index.data_refs())
                .map(|&g| GrantRef(g)),
        );
        mappings.map_all(&grants)?;
        let ring_len = index.ring_pages() * mm::PAGE_SIZE;
        let ring = GrantedRegion {
            base: mappings.base(),
            len: ring_len,
        };
        let data = GrantedRegion {
            base: mappings.base() + ring_len as u64,
            len: index.data_pages() * mm::PAGE_SIZE,
        };
        let server = ServerConnection::attach(ring, data, geometry, PeerId(client as u32))
            .map_err(ConnectError::Setup)?;

        let kicked = Arc::new(AtomicBool::new(true));
        let flag = kicked.clone();
        let port = bind_with_handler(
            client,
            remote_port,
            Arc::new(move |_| flag.store(true, Ordering::SeqCst)),
        )?;
        let ping_kicked = Arc::new(AtomicBool::new(false));
        let ping = match remote_ping_port {
            None => None,
            Some(remote) => {
                let flag = ping_kicked.clone();
                let kick = Arc::new(move |_| flag.store(true, Ordering::SeqCst));
                match bind_with_handler(client, remote, kick) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        unbind(client, port);
                        return Err(e);
                    }
                }
            }
        };
        let now = crate::xen::time::now_ns();
        Ok(Connection {
            client,
            kicked,
            leftover: false,
            storm_guard: EventStormGuard::new(now),
            port,
            ping,
            ping_kicked,
            ping_guard: EventStormGuard::with_base_allowance(
                now,
                xenrpc_proto::storm::PING_BASE_ALLOWANCE,
            ),
            send_failures: 0,
            server,
            mappings,
            ring_pages: index.ring_pages(),
        })
    }

    /// Serves requests worth up to `budget` work units if the client signalled or left
    /// requests queued, and bounces a pending ping. Returns the requests handled plus pings
    /// bounced (0: nothing to do), or why the connection must end.
    pub fn serve(
        &mut self,
        dispatcher: &mut impl xenrpc_proto::Dispatcher,
        budget: u64,
    ) -> Result<u32, ConnectionEnd> {
        let clock = crate::xen::time::now_ns;
        let pinged = self.bounce_ping(clock())?;
        let kicked = self.kicked.swap(false, Ordering::SeqCst);
        let leftover = core::mem::take(&mut self.leftover);
        if let Some(v) = self.server.broken() {
            return Err(ConnectionEnd::Violation(v));
        }
        if !kicked && !leftover && !self.server.has_requests() {
            return Ok(pinged);
        }
        // The unmap notify clears the flag and then raises the event, so an event is the
        // moment to look.
        if kicked && !self.server.client_alive() {
            return Err(ConnectionEnd::ClientLetGo);
        }
        let outcome = self.server.poll(dispatcher, &clock, budget);
        if let Some(v) = self.server.broken() {
            return Err(ConnectionEnd::Violation(v));
        }
        if outcome.notify {
            if let Err(e) = events::send(self.port) {
                self.send_failed("notify", e);
            }
        }
        // Not everything fit the budget: come back without waiting for an event.
        self.leftover = outcome.more;
        let earned = outcome.earned;
        self.ping_guard.record_handled(earned);
        if kicked {
            self.storm_guard
                .record_wakeup(clock(), earned)
                .map_err(ConnectionEnd::Storm)?;
        } else {
            self.storm_guard.record_handled(earned);
        }
        Ok(outcome.handled + pinged)
    }

    /// Sends the ping back if it fired since the last pass (1) or not (0); a client that
    /// pings far more often than its calls explain is cut off like an event storm.
    fn bounce_ping(&mut self, now_ns: u64) -> Result<u32, ConnectionEnd> {
        let Some(port) = self.ping else {
            return Ok(0);
        };
        if !self.ping_kicked.swap(false, Ordering::SeqCst) {
            return Ok(0);
        }
        self.ping_guard
            .record_wakeup(now_ns, 0)
            .map_err(ConnectionEnd::PingStorm)?;
        if let Err(e) = events::send(port) {
            self.send_failed("ping bounce", e);
        }
        Ok(1)
    }

    /// A client that closed its end of a port makes every send fail: count them, and log the
    /// 1st, 2nd, 4th, 8th, ... so that it cannot flood the console.
    fn send_failed(&mut self, what: &str, e: impl fmt::Display) {
        self.send_failures += 1;
        if self.send_failures.is_power_of_two() {
            log!(
                "rpc: dom{} {what} failed: {e} ({} sends failed so far)",
                self.client,
                self.send_failures
            );
        }
    }

    /// Arms the event threshold before the loop sleeps; false if requests (or a ping) arrived
    /// meanwhile (`prepare_to_sleep` is true when there is work after all).
    pub fn ready_to_sleep(&mut self) -> bool {
        !self.kicked.load(Ordering::SeqCst)
            && !self.ping_kicked.load(Ordering::SeqCst)
            && !self.leftover
            && !self.server.prepare_to_sleep()
    }

    /// Data pages mapped (all mapped pages but the ring's).
    pub fn data_pages(&self) -> usize {
        self.mappings.mapped.len() - self.ring_pages
    }

    /// Whether the client asked for a ping port (raw event round trips).
    pub fn has_ping(&self) -> bool {
        self.ping.is_some()
    }
}

/// Binds `remote_port` of `client`, installs `handler` for it and unmasks it; undoes all of it
/// on failure.
fn bind_with_handler(
    client: DomId,
    remote_port: u32,
    handler: events::Handler,
) -> Result<Port, ConnectError> {
    let port = events::bind_interdomain(client, remote_port).map_err(ConnectError::Bind)?;
    let installed = events::set_handler(port, handler)
        .and_then(|()| events::unmask(port).map_err(EventError::Xen));
    if let Err(e) = installed {
        unbind(client, port);
        return Err(ConnectError::Bind(e));
    }
    Ok(port)
}

/// Closes `port` (which removes its handler first).
fn unbind(client: DomId, port: Port) {
    if let Err(e) = events::close(port) {
        log!("rpc: dom{client}: closing port {port} failed: {e}");
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        unbind(self.client, self.port);
        if let Some(ping) = self.ping {
            unbind(self.client, ping);
        }
        // `server` then `mappings` drop after this, in declaration order.
    }
}
