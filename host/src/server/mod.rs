//! The server process's event loop: accepts clients on a Unix socket, serves every connection's
//! ring, spins while there is traffic and sleeps in `epoll_wait` when there is none, and drops a
//! connection as soon as its client hangs up or breaks the protocol.
//!
//! The rules, each against a hostile client that plays by the protocol greedily:
//!
//! - **Identity is the uid** from `SO_PEERCRED` at connect ([`PeerCredentials::peer_id`]).
//!   Nothing a client sends, and no later change of the process holding the socket, alters it:
//!   a process that inherits or is passed a connection's fds acts as the tenant that connected
//!   (a forked child of a client is that client's tenant). The dispatcher hears
//!   [`TenantDispatcher::forget_peer`] when a uid's last connection goes, so its per-tenant
//!   state (the kv namespace) dies with the tenant.
//! - **Connections are capped**: `max_clients` in all, `max_per_uid` per uid. A newcomer that
//!   finds either cap reached displaces the connection idle longest (no request for at least
//!   `idle_reap`; of its own uid first if its uid is at its cap), or is refused with a counted
//!   reason. Nothing is reaped when nobody is waiting for a slot.
//! - **Work is shared by cost**: each pass polls every connection with requests once, in a
//!   fixed order, with a budget of `poll_budget`; so from the moment a request is in its ring,
//!   a connection waits for at most one budget of every other connection.
//! - **Time-based servicing**: sockets (accepts, hangups, set-up messages) and set-up
//!   time-outs are looked at every [`SERVICE_INTERVAL`] of elapsed time, checked between
//!   connections, so a busy ring cannot keep a newcomer from finishing its set-up. The clock
//!   is read after every poll budget of work or every [`POLLS_PER_CLOCK_READ`] polls, whichever
//!   comes first (a read costs as much as a null call's poll): so between connections that
//!   each do little, and after each that does much.
//! - **Wake-up storms**: every eventfd wake-up that found no request is fed to the
//!   connection's `EventStormGuard`; a client raising far more wake-ups than its calls explain
//!   is dropped with the storm as the reason.

mod setup;
pub mod tenants;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use xenrpc_proto::{
    CallContext, Clock, Dispatcher, EventStorm, EventStormGuard, PeerId, Registry, RingGeometry,
    ServerConnection, Status,
};

use crate::client::monotonic_ns;
use crate::event::EventFd;
use crate::link::Link;
use crate::rendezvous::{self, PeerCredentials};
use crate::shm::MemfdRegion;
use crate::wait::{timespec, MonotonicClock, SpinBudget, SpinPolicy};
use tenants::{Refusal, TenantCounts};

/// How often, in elapsed time, sockets and set-up time-outs are serviced while the server is
/// busy or spinning.
pub const SERVICE_INTERVAL: Duration = Duration::from_millis(1);
/// Polls (or spins with nothing to do) between two looks at the clock: a few µs.
pub const POLLS_PER_CLOCK_READ: u32 = 64;

/// The server loop's clock: deadlines read it; responses are stamped with its last reading
/// (`recent_ns`), which the loop refreshes whenever it looks at the time (at most
/// [`POLLS_PER_CLOCK_READ`] polls or one poll budget of work ago, and after every sleep).
#[derive(Debug, Default)]
struct LoopClock {
    recent: std::cell::Cell<u64>,
}

impl Clock for LoopClock {
    fn now_ns(&self) -> u64 {
        let now = monotonic_ns();
        self.recent.set(now);
        now
    }

    fn recent_ns(&self) -> u64 {
        self.recent.get()
    }
}

/// How the server serves and what it allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// How long the loop spins with nothing to do before it sleeps in `epoll_wait`.
    pub spin: SpinPolicy,
    /// Ring slots per connection (a power of two, see `RingGeometry`).
    pub slots: u32,
    /// Largest data region a client may ask for.
    pub max_data_len: usize,
    /// Connections (including ones still setting up) served at once.
    pub max_clients: usize,
    /// Connections one uid may hold (including ones still setting up).
    pub max_per_uid: usize,
    /// A connection with no request for this long may be reaped when a newcomer needs its slot.
    pub idle_reap: Duration,
    /// Work units (see `xenrpc_proto::fair`) one connection may use per pass before the others
    /// get a turn.
    pub poll_budget: u64,
    /// A client that has not finished set-up within this time is dropped.
    pub setup_timeout: Duration,
}

impl ServerConfig {
    /// The default per-uid cap for a server of `max_clients`: a quarter, at least one.
    pub fn default_per_uid(max_clients: usize) -> usize {
        (max_clients / 4).max(1)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let max_clients = 64;
        Self {
            spin: SpinPolicy::DEFAULT,
            slots: 64,
            max_data_len: 64 << 20,
            max_clients,
            max_per_uid: Self::default_per_uid(max_clients),
            idle_reap: Duration::from_secs(10),
            poll_budget: xenrpc_proto::PASS_BUDGET,
            setup_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a serving connection was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The client broke the protocol (the text says how).
    Protocol(String),
    /// idle connection reaped under pressure
    Reaped,
    /// The client raised its wake-up event far more often than its calls explain.
    EventStorm(EventStorm),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Protocol(why) => write!(f, "{why}"),
            DropReason::Reaped => write!(f, "idle connection reaped under pressure"),
            DropReason::EventStorm(storm) => write!(f, "{storm}"),
        }
    }
}

/// What happened to a connection, for the server's log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client finished set-up (sent `READY`); its connection is served from now on.
    Connected(PeerCredentials),
    /// The client hung up; `requests` were served on the connection.
    Disconnected {
        /// Who the client was.
        peer: PeerCredentials,
        /// Requests served on the connection.
        requests: u64,
    },
    /// The connection was dropped because the client misbehaved or idled under pressure.
    Dropped {
        /// Who the client was.
        peer: PeerCredentials,
        /// Why it was dropped.
        reason: DropReason,
    },
    /// A connection attempt was refused (bad hello, caps, set-up timeout).
    Refused {
        /// Who tried, if the kernel told us.
        peer: Option<PeerCredentials>,
        /// Why it was refused.
        reason: Refusal,
    },
    /// The last connection of `uid` went; its per-tenant state was forgotten.
    TenantGone {
        /// The tenant's uid.
        uid: u32,
    },
}

/// A dispatcher that keeps per-tenant state: told when a tenant's last connection is gone.
pub trait TenantDispatcher: Dispatcher {
    /// Drops everything kept for `peer`: its last connection is gone.
    fn forget_peer(&mut self, peer: PeerId);
}

impl TenantDispatcher for Registry<'_> {
    fn forget_peer(&mut self, peer: PeerId) {
        Registry::forget_peer(self, peer);
    }
}

/// Runs handlers with panics caught: a handler that panics answers `HandlerFault` instead of
/// taking down the server and every other client with it.
pub struct CatchPanics<'a, D>(pub &'a mut D);

impl<D: Dispatcher> Dispatcher for CatchPanics<'_, D> {
    #[inline]
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        catch_unwind(AssertUnwindSafe(|| self.0.dispatch(call))).unwrap_or(Status::HandlerFault)
    }
}

impl<D: TenantDispatcher> CatchPanics<'_, D> {
    /// Forgets a tenant; a handler panicking meanwhile is reported, not fatal.
    fn forget_peer(&mut self, peer: PeerId) -> bool {
        catch_unwind(AssertUnwindSafe(|| self.0.forget_peer(peer))).is_ok()
    }
}

const TOKEN_LISTENER: u64 = u64::MAX;
/// Event tokens are `connection id << 1 | kind`.
const KIND_SOCKET: u64 = 0;
const KIND_WAKEUP: u64 = 1;

enum Stage {
    /// Connected; waiting for the hello.
    Hello,
    /// Welcome sent; waiting for the client to lay out the ring.
    Ready(Link),
    Serving(Box<Active>),
}

struct Active {
    conn: ServerConnection<MemfdRegion, MemfdRegion>,
    to_client: EventFd,
    // Kept so its epoll registration stays valid for the connection's life.
    to_server: EventFd,
    storm: EventStormGuard,
    /// A wake-up arrived that the next poll answers (then it counts as earned, or spurious).
    woken: bool,
    /// When the connection last had a request handled (or finished set-up), as the loop last
    /// read the clock.
    last_request: Instant,
}

struct Entry {
    socket: OwnedFd,
    peer: PeerCredentials,
    since: Instant,
    stage: Stage,
}

/// The host server: its listening socket, its connections and their rings.
pub struct Server {
    listener: OwnedFd,
    epoll: OwnedFd,
    config: ServerConfig,
    geometry: RingGeometry,
    /// Ordered by id, so every pass polls in the same order (newcomers last).
    entries: BTreeMap<u64, Entry>,
    /// The ids of the entries being served, ascending: what a pass walks (a look-up in a
    /// short sorted list where a range of the table would cost more than the idle poll).
    serving: Vec<u64>,
    tenants: TenantCounts,
    /// Uids whose last connection went; forgotten by the dispatcher at the next chance.
    gone_tenants: Vec<u32>,
    next_id: u64,
    next_service: Instant,
    /// The clock as the loop last read it, and the polls and work since.
    now: Instant,
    polls_since_clock: u32,
    work_since_clock: u64,
}

impl Server {
    /// Listens on the Unix socket `path` (refused if a server already listens there) with
    /// `config`, checked first.
    pub fn bind(path: &Path, config: ServerConfig) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let geometry =
            RingGeometry::new(config.slots).map_err(|e| invalid(format!("bad slot count: {e}")))?;
        if config.max_clients == 0 || config.max_per_uid == 0 {
            return Err(invalid(
                "--max-clients and --max-per-uid must be at least 1".into(),
            ));
        }
        let listener = rendezvous::listen(path)?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &listener,
            epoll::EventData::new_u64(TOKEN_LISTENER),
            epoll::EventFlags::IN,
        )?;
        Ok(Self {
            listener,
            epoll,
            config,
            geometry,
            entries: BTreeMap::new(),
            serving: Vec::new(),
            tenants: TenantCounts::default(),
            gone_tenants: Vec::new(),
            next_id: 0,
            next_service: Instant::now(),
            now: Instant::now(),
            polls_since_clock: 0,
            work_since_clock: 0,
        })
    }

    /// Connections being served or set up.
    pub fn connections(&self) -> usize {
        self.entries.len()
    }

    /// Serves until an I/O error on the listener or epoll itself. `events` hears about every
    /// connection change (e.g. to log or count it).
    pub fn run(
        &mut self,
        dispatcher: &mut impl TenantDispatcher,
        mut events: impl FnMut(&ServerEvent),
    ) -> io::Result<()> {
        let clock = LoopClock::default();
        self.read_clock(&clock);
        let mut dispatcher = CatchPanics(dispatcher);
        let mut spin = SpinBudget::adaptive(self.config.spin);
        loop {
            let progressed = self.serve_all(&mut dispatcher, &clock, &mut events)?;
            self.forget_gone_tenants(&mut dispatcher, &mut events);
            if progressed {
                spin.work_came(&MonotonicClock);
                continue;
            }
            if spin.keep_spinning(&MonotonicClock) {
                if self.clock_due(0) {
                    self.read_clock(&clock);
                    if self.now >= self.next_service {
                        self.service(&mut events)?;
                    }
                }
                std::hint::spin_loop();
                continue;
            }
            // Woken, the loop spins again (a wake-up may not be for work); it learns how long
            // the idle spell lasted when work comes.
            spin.restart();
            if self.arm_all() {
                continue;
            }
            let timeout = self
                .has_pending_setups()
                .then_some(Duration::from_millis(200));
            self.handle_events(timeout, &mut events)?;
            self.expire_setups(&mut events);
            self.read_clock(&clock);
            self.next_service = self.now + SERVICE_INTERVAL;
        }
    }

    /// Counts a poll (or an idle spin) that did `work` units; whether the clock is due.
    fn clock_due(&mut self, work: u64) -> bool {
        self.polls_since_clock += 1;
        self.work_since_clock = self.work_since_clock.saturating_add(work);
        self.polls_since_clock >= POLLS_PER_CLOCK_READ
            || self.work_since_clock >= self.config.poll_budget
    }

    /// Looks at the clock: what `now` and the responses' stamps go by until the next look.
    fn read_clock(&mut self, clock: &LoopClock) {
        clock.now_ns();
        self.now = Instant::now();
        self.polls_since_clock = 0;
        self.work_since_clock = 0;
    }

    /// Looks at the sockets without waiting and expires overdue set-ups (`now` was just read).
    fn service(&mut self, events: &mut impl FnMut(&ServerEvent)) -> io::Result<()> {
        self.handle_events(Some(Duration::ZERO), events)?;
        self.expire_setups(events);
        self.next_service = self.now + SERVICE_INTERVAL;
        Ok(())
    }

    /// Polls every serving connection that has requests (or a wake-up to account for) once, in
    /// id order, servicing the sockets between connections whenever `SERVICE_INTERVAL` has
    /// passed (as far as the clock, read by cost, tells); whether any connection made
    /// progress.
    fn serve_all(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        clock: &LoopClock,
        events: &mut impl FnMut(&ServerEvent),
    ) -> io::Result<bool> {
        // The pass walks the live table in id order: whether a connection has requests is
        // asked at its turn, and a connection set up mid-pass (a larger id) is reached in this
        // pass. So a request published mid-pass is served before any other connection is
        // polled twice: it waits for at most one poll of every other connection.
        let mut progressed = false;
        let mut at = 0;
        while let Some(&id) = self.serving.get(at) {
            if let Some((handled, work)) = self.serve_one(id, dispatcher, clock, events) {
                progressed |= handled;
                if self.clock_due(work) {
                    self.read_clock(clock);
                    if self.now >= self.next_service {
                        self.service(events)?;
                    }
                }
            }
            // The first connection after `id` (connections may have gone or come meanwhile).
            at = self.serving.partition_point(|&other| other <= id);
        }
        Ok(progressed)
    }

    /// Counts `id` among the connections served (it finished set-up).
    fn start_serving(&mut self, id: u64) {
        let at = self.serving.partition_point(|&other| other < id);
        if self.serving.get(at) != Some(&id) {
            self.serving.insert(at, id);
        }
    }

    /// Polls one connection if it is still there and has something (else `None`); whether it
    /// handled requests, and the work they cost.
    fn serve_one(
        &mut self,
        id: u64,
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
        events: &mut impl FnMut(&ServerEvent),
    ) -> Option<(bool, u64)> {
        let Some(Entry {
            stage: Stage::Serving(active),
            ..
        }) = self.entries.get_mut(&id)
        else {
            return None;
        };
        if !active.woken && !active.conn.has_requests() {
            return None;
        }
        let outcome = active.conn.poll(dispatcher, clock, self.config.poll_budget);
        if outcome.notify {
            let _ = active.to_client.signal();
        }
        if outcome.handled > 0 {
            active.last_request = self.now;
        }
        let storm = if std::mem::take(&mut active.woken) {
            active
                .storm
                .record_wakeup(clock.now_ns(), outcome.earned)
                .err()
        } else {
            active.storm.record_handled(outcome.earned);
            None
        };
        let reason = if outcome.broken {
            Some(DropReason::Protocol(match active.conn.broken() {
                Some(violation) => format!("protocol violation: {violation}"),
                None => "protocol violation".to_string(),
            }))
        } else {
            storm.map(DropReason::EventStorm)
        };
        if let Some(reason) = reason {
            self.drop_entry(id, Some(reason), events);
        }
        Some((outcome.handled > 0, outcome.work))
    }

    /// Arms every connection's wake-up threshold; whether any already has work (then the loop
    /// must not sleep).
    fn arm_all(&mut self) -> bool {
        let mut work = false;
        for entry in self.entries.values_mut() {
            if let Stage::Serving(active) = &mut entry.stage {
                work |= active.conn.prepare_to_sleep();
            }
        }
        work
    }

    fn has_pending_setups(&self) -> bool {
        self.entries
            .values()
            .any(|e| !matches!(e.stage, Stage::Serving(_)))
    }

    fn handle_events(
        &mut self,
        timeout: Option<Duration>,
        events: &mut impl FnMut(&ServerEvent),
    ) -> io::Result<()> {
        let mut ready = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 32];
        let timeout = timeout.map(timespec);
        let count = match epoll::wait(self.epoll.as_fd(), &mut ready[..], timeout.as_ref()) {
            Ok(count) => count,
            Err(rustix::io::Errno::INTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for event in &ready[..count] {
            let token = event.data.u64();
            if token == TOKEN_LISTENER {
                self.accept_all(events)?;
            } else if token & 1 == KIND_SOCKET {
                self.socket_readable(token >> 1, events);
            } else {
                self.woken(token >> 1, events);
            }
        }
        Ok(())
    }

    /// The client raised its eventfd (edge-triggered: never drained, one report per burst of
    /// writes). With requests waiting, the next poll decides whether it was earned; with none,
    /// it was spurious now.
    fn woken(&mut self, id: u64, events: &mut impl FnMut(&ServerEvent)) {
        let Some(Entry {
            stage: Stage::Serving(active),
            ..
        }) = self.entries.get_mut(&id)
        else {
            return;
        };
        if active.conn.has_requests() {
            active.woken = true;
            return;
        }
        if let Err(storm) = active.storm.record_wakeup(monotonic_ns(), 0) {
            self.drop_entry(id, Some(DropReason::EventStorm(storm)), events);
        }
    }

    /// Tells the dispatcher about every uid whose last connection went (unless it is back).
    fn forget_gone_tenants(
        &mut self,
        dispatcher: &mut CatchPanics<'_, impl TenantDispatcher>,
        events: &mut impl FnMut(&ServerEvent),
    ) {
        if self.gone_tenants.is_empty() {
            return;
        }
        for uid in std::mem::take(&mut self.gone_tenants) {
            if self.tenants.of(uid) == 0 && dispatcher.forget_peer(PeerId(uid)) {
                events(&ServerEvent::TenantGone { uid });
            }
        }
    }

    /// Tears a connection down: unmaps its regions and closes its fds (by dropping them).
    /// Requests it had in its ring are abandoned: the client is gone or misbehaved.
    fn drop_entry(
        &mut self,
        id: u64,
        reason: Option<DropReason>,
        events: &mut impl FnMut(&ServerEvent),
    ) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &entry.socket);
        if let Stage::Serving(active) = &entry.stage {
            let _ = epoll::delete(&self.epoll, active.to_server.fd());
            self.serving.retain(|&other| other != id);
        }
        if self.tenants.remove(entry.peer.uid) {
            self.gone_tenants.push(entry.peer.uid);
        }
        let event = match (reason, &entry.stage) {
            (None, Stage::Serving(active)) => ServerEvent::Disconnected {
                peer: entry.peer,
                requests: active.conn.stats().requests,
            },
            (Some(reason), Stage::Serving(_)) => ServerEvent::Dropped {
                peer: entry.peer,
                reason,
            },
            (reason, _) => ServerEvent::Refused {
                peer: Some(entry.peer),
                reason: Refusal::SetUp(
                    reason.map_or_else(|| "hung up during set-up".into(), |r| r.to_string()),
                ),
            },
        };
        events(&event);
    }
}
