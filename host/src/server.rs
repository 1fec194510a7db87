//! The server process's event loop: accepts clients on a Unix socket, serves every connection's
//! ring, spins while there is traffic and sleeps in `epoll_wait` when there is none, and drops a
//! connection as soon as its client hangs up or breaks the protocol.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use xenrpc_proto::{CallContext, Clock, Dispatcher, RingGeometry, ServerConnection, Status};

use crate::client::monotonic_ns;
use crate::event::EventFd;
use crate::link::{Link, LinkLimits};
use crate::rendezvous::{self, Hello, PeerCredentials, READY};
use crate::shm::MemfdRegion;
use crate::wait::{timespec, SpinBudget, SpinPolicy};

#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    pub spin: SpinPolicy,
    /// Ring slots per connection (a power of two, see `RingGeometry`).
    pub slots: u32,
    /// Largest data region a client may ask for.
    pub max_data_len: usize,
    /// Connections (including ones still setting up) served at once; more are refused.
    pub max_clients: usize,
    /// Work units (see `xenrpc_proto::fair`) one connection may use before the others get a
    /// turn.
    pub poll_budget: u64,
    /// A client that has not finished set-up within this time is dropped.
    pub setup_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            spin: SpinPolicy::DEFAULT,
            slots: 64,
            max_data_len: 64 << 20,
            max_clients: 64,
            poll_budget: xenrpc_proto::PASS_BUDGET,
            setup_timeout: Duration::from_secs(5),
        }
    }
}

/// What happened to a connection, for the server's log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    Connected(PeerCredentials),
    /// The client hung up; `requests` were served on the connection.
    Disconnected {
        peer: PeerCredentials,
        requests: u64,
    },
    /// The connection was dropped because the client misbehaved.
    Dropped {
        peer: PeerCredentials,
        reason: String,
    },
    /// A connection attempt was refused (bad hello, too many clients, set-up timeout).
    Refused {
        peer: Option<PeerCredentials>,
        reason: String,
    },
}

/// Runs handlers with panics caught: a handler that panics answers `HandlerFault` instead of
/// taking down the server and every other client with it.
pub struct CatchPanics<'a, D>(pub &'a mut D);

impl<D: Dispatcher> Dispatcher for CatchPanics<'_, D> {
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        catch_unwind(AssertUnwindSafe(|| self.0.dispatch(call))).unwrap_or(Status::HandlerFault)
    }
}

struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
}

const TOKEN_LISTENER: u64 = u64::MAX;
/// Event tokens are `connection id << 1 | kind`.
const KIND_SOCKET: u64 = 0;
const KIND_WAKEUP: u64 = 1;
/// Loop iterations between non-blocking looks at the sockets (accepts and hangups are noticed
/// while busy or spinning, too).
const EVENT_CHECK_INTERVAL: u32 = 512;

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
    _to_server: EventFd,
}

struct Entry {
    socket: OwnedFd,
    peer: PeerCredentials,
    since: Instant,
    stage: Stage,
}

pub struct Server {
    listener: OwnedFd,
    epoll: OwnedFd,
    config: ServerConfig,
    geometry: RingGeometry,
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

impl Server {
    pub fn bind(path: &Path, config: ServerConfig) -> io::Result<Self> {
        let geometry = RingGeometry::new(config.slots).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad slot count: {e:?}"),
            )
        })?;
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
            entries: HashMap::new(),
            next_id: 0,
        })
    }

    /// Connections being served or set up.
    pub fn connections(&self) -> usize {
        self.entries.len()
    }

    /// Serves until an I/O error on the listener or epoll itself. `events` hears about every
    /// connection change (e.g. to log it, or to drop a peer's state when it leaves).
    pub fn run(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        mut events: impl FnMut(&ServerEvent),
    ) -> io::Result<()> {
        let clock = MonotonicClock;
        let mut dispatcher = CatchPanics(dispatcher);
        let mut spin = SpinBudget::new(self.config.spin);
        let mut iterations: u32 = 0;
        loop {
            // Look at the sockets now and then even while busy, so that a client hammering its
            // ring cannot keep new clients waiting or dead ones mapped.
            iterations = iterations.wrapping_add(1);
            if iterations % EVENT_CHECK_INTERVAL == 0 {
                self.handle_events(Some(Duration::ZERO), &mut events)?;
                self.expire_setups(&mut events);
            }
            if self.serve_all(&mut dispatcher, &clock, &mut events) {
                spin.reset();
                continue;
            }
            if spin.keep_spinning() {
                std::hint::spin_loop();
                continue;
            }
            spin.reset();
            if self.arm_all() {
                continue;
            }
            let timeout = self
                .has_pending_setups()
                .then_some(Duration::from_millis(200));
            self.handle_events(timeout, &mut events)?;
            self.expire_setups(&mut events);
        }
    }

    /// Polls every serving connection once; whether any made progress.
    fn serve_all(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
        events: &mut impl FnMut(&ServerEvent),
    ) -> bool {
        let mut progressed = false;
        let mut broken = Vec::new();
        for (&id, entry) in &mut self.entries {
            let Stage::Serving(active) = &mut entry.stage else {
                continue;
            };
            if !active.conn.has_requests() {
                continue;
            }
            let outcome = active.conn.poll(dispatcher, clock, self.config.poll_budget);
            if outcome.notify {
                let _ = active.to_client.signal();
            }
            progressed |= outcome.handled > 0;
            if outcome.broken {
                broken.push((
                    id,
                    format!("protocol violation: {:?}", active.conn.broken()),
                ));
            }
        }
        for (id, reason) in broken {
            self.drop_entry(id, Some(reason), events);
        }
        progressed
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

    fn expire_setups(&mut self, events: &mut impl FnMut(&ServerEvent)) {
        let limit = self.config.setup_timeout;
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| !matches!(e.stage, Stage::Serving(_)) && e.since.elapsed() > limit)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.drop_entry(id, Some("set-up not finished in time".into()), events);
        }
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
            }
            // KIND_WAKEUP needs nothing: the eventfd is edge-triggered (never drained), and the
            // loop polls every ring after any wake-up.
        }
        Ok(())
    }

    fn accept_all(&mut self, events: &mut impl FnMut(&ServerEvent)) -> io::Result<()> {
        loop {
            let (socket, peer) = match rendezvous::accept(self.listener.as_fd()) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return Ok(()),
                // The peer vanished between connect and accept, or we are out of fds: refuse
                // this one and keep serving the others.
                Err(e) => {
                    events(&ServerEvent::Refused {
                        peer: None,
                        reason: format!("accept failed: {e}"),
                    });
                    return Ok(());
                }
            };
            if self.entries.len() >= self.config.max_clients {
                events(&ServerEvent::Refused {
                    peer: Some(peer),
                    reason: "too many clients".into(),
                });
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) = epoll::add(
                &self.epoll,
                &socket,
                epoll::EventData::new_u64(id << 1 | KIND_SOCKET),
                epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
            ) {
                events(&ServerEvent::Refused {
                    peer: Some(peer),
                    reason: format!("epoll: {e}"),
                });
                continue;
            }
            self.entries.insert(
                id,
                Entry {
                    socket,
                    peer,
                    since: Instant::now(),
                    stage: Stage::Hello,
                },
            );
        }
    }

    /// A client's socket became readable: the next set-up message, or (once serving) its
    /// hangup, or a protocol breach (the socket must stay silent).
    fn socket_readable(&mut self, id: u64, events: &mut impl FnMut(&ServerEvent)) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let mut buf = [0u8; 64];
        let received = rendezvous::recv_plain(entry.socket.as_fd(), &mut buf);
        let len = match received {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.drop_entry(id, Some(format!("bad set-up message: {e}")), events);
                return;
            }
        };
        if len == 0 {
            self.drop_entry(id, None, events);
            return;
        }
        let stage = std::mem::replace(&mut entry.stage, Stage::Hello);
        let next = match stage {
            Stage::Hello => self.answer_hello(id, &buf[..len]),
            Stage::Ready(link) => self.attach(id, link, &buf[..len]),
            Stage::Serving(_) => Err("client wrote to its socket after set-up".to_string()),
        };
        match next {
            Ok(stage) => {
                let serving = matches!(stage, Stage::Serving(_));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.stage = stage;
                    if serving {
                        events(&ServerEvent::Connected(entry.peer));
                    }
                }
            }
            Err(reason) => self.drop_entry(id, Some(reason), events),
        }
    }

    fn answer_hello(&mut self, id: u64, message: &[u8]) -> Result<Stage, String> {
        let hello = Hello::decode(message).map_err(|e| format!("bad hello: {e}"))?;
        let entry = self.entries.get_mut(&id).ok_or("gone")?;
        let socket = entry.socket.try_clone().map_err(|e| e.to_string())?;
        let limits = LinkLimits {
            geometry: self.geometry,
            max_data_len: self.config.max_data_len,
        };
        let link =
            Link::accept(socket, hello, limits).map_err(|e| format!("set-up failed: {e}"))?;
        Ok(Stage::Ready(link))
    }

    fn attach(&mut self, id: u64, link: Link, message: &[u8]) -> Result<Stage, String> {
        if message != READY {
            return Err("expected the ready message".into());
        }
        let peer = self.entries.get(&id).ok_or("gone")?.peer;
        let Link {
            ring,
            data,
            to_server,
            to_client,
            geometry,
            ..
        } = link;
        let conn = ServerConnection::attach(ring, data, geometry, peer.peer_id())
            .map_err(|e| format!("ring not laid out: {e:?}"))?;
        epoll::add(
            &self.epoll,
            to_server.fd(),
            epoll::EventData::new_u64(id << 1 | KIND_WAKEUP),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .map_err(|e| format!("epoll: {e}"))?;
        Ok(Stage::Serving(Box::new(Active {
            conn,
            to_client,
            _to_server: to_server,
        })))
    }

    /// Tears a connection down: unmaps its regions and closes its fds (by dropping them).
    /// Requests it had in its ring are abandoned: the client is gone or misbehaved.
    fn drop_entry(
        &mut self,
        id: u64,
        reason: Option<String>,
        events: &mut impl FnMut(&ServerEvent),
    ) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &entry.socket);
        if let Stage::Serving(active) = &entry.stage {
            let _ = epoll::delete(&self.epoll, active._to_server.fd());
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
                reason: reason.unwrap_or_else(|| "hung up during set-up".into()),
            },
        };
        events(&event);
    }
}
