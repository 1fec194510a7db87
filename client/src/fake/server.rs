//! The fake service VM: the rendezvous crate's [`Backend`] — the same handshake code the
//! service VM runs — over the fake xenstore, with a connector over the fake grants and event
//! channels, serving echo and arith with the protocol crate's real server. A [`Behaviour`]
//! makes it misbehave for the client's tests.

use std::collections::HashSet;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xenrpc_proto::services::builtins;
use xenrpc_proto::{PeerId, Registry, RingGeometry, ServerConnection, ServiceEnv, SharedMemory};
use xenrpc_rendezvous as rv;
use xenrpc_rendezvous::backend::{
    Backend, BackendStore, Connector, EndKind, FrontendParams, StoreError,
};

use super::xen::{FakeXen, MappedPages};
use super::xenstore::{FakeStore, FakeXenstore};
use super::{drain, signal};
use crate::devices::{DomId, Window, PAGE_SIZE};
use crate::error::Error;
use crate::wait::poll_readable;
use crate::xenstore::Xenstore;

/// How the fake server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Walks the handshake and answers every call.
    Normal,
    /// Connects but never answers (calls must hit their deadline).
    Silent,
    /// Refuses the connection at Initialised (backend Closed).
    Refuse,
    /// Answers, but first publishes an impossible request consumer index.
    CorruptRing,
    /// Never leaves Initialising (the handshake must time out).
    Absent,
    /// Like `Normal`, except that a connection ended by the client's restart (FE Initialising
    /// while connected) is only offered again on a *further* FE state write, as the service VM
    /// did before it learnt to offer at once: a client must write Initialising again when it
    /// sees the backend Closed.
    ReoffersOnNextWrite,
    /// Like `Normal`, but never closes its side when the client says goodbye (FE Closing or
    /// Closed): a server too slow (or too busy) to finish the close handshake.
    IgnoresClose,
}

/// One served connection.
pub struct Served {
    conn: ServerConnection<Window<MappedPages>, Window<MappedPages>>,
    wake: Arc<OwnedFd>,
    notify_client: Arc<OwnedFd>,
    ring: Arc<Window<MappedPages>>,
    /// The ping port, if the client asked for one: (wake fd, notify-client fd).
    ping: Option<(Arc<OwnedFd>, Arc<OwnedFd>)>,
}

/// A backend domain serving echo and arith, run in a thread until dropped.
pub struct FakeServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    epoch: Instant,
}

impl FakeServer {
    pub fn start(
        store: FakeXenstore,
        xen: FakeXen,
        domid: DomId,
        behaviour: Behaviour,
    ) -> FakeServer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // The server's clock: its own epoch, unknown to the client (like Xen system time).
        let epoch = Instant::now() - Duration::from_secs(1000);
        let thread = std::thread::spawn(move || {
            let store = BehavingStore {
                store: store.connect(domid),
                epoch,
                behaviour,
                fresh_closes: HashSet::new(),
                held_offers: HashSet::new(),
            };
            serve(store, xen, domid, behaviour, &flag, epoch)
        });
        FakeServer {
            stop,
            thread: Some(thread),
            epoch,
        }
    }

    /// The server's clock now (what it checks deadlines against and stamps responses with).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("fake server thread panicked");
        }
    }
}

/// The fake xenstore as the backend sees it, bent by the behaviours that concern the
/// handshake.
struct BehavingStore {
    store: FakeStore,
    epoch: Instant,
    behaviour: Behaviour,
    /// BE state nodes written Closed since the last watch events were delivered.
    fresh_closes: HashSet<String>,
    /// `ReoffersOnNextWrite`: BE state nodes whose InitWait waits for a frontend write.
    held_offers: HashSet<String>,
}

fn store_error(e: Error) -> StoreError {
    if e.is_access_denied() {
        StoreError::AccessDenied
    } else {
        StoreError::Other(format!("{e}"))
    }
}

impl BehavingStore {
    /// Watch events came in: the handshake moves on from what it wrote before.
    fn events_delivered(&mut self, fired_frontends: &[String]) {
        self.fresh_closes.clear();
        for fe_state in fired_frontends {
            let held: Vec<String> = self
                .held_offers
                .iter()
                .filter(|be| frontend_of(be).as_deref() == Some(fe_state.as_str()))
                .cloned()
                .collect();
            for be_state in held {
                self.held_offers.remove(&be_state);
                let _ = self.store.write(0, &be_state, b"2");
            }
        }
    }
}

/// The frontend state node of the device whose BE state node is `be_state`.
fn frontend_of(be_state: &str) -> Option<String> {
    let dir = be_state.strip_suffix("/state")?;
    let mut parts = dir.rsplit('/');
    let devid = parts.next()?;
    let client = parts.next()?;
    Some(format!(
        "/local/domain/{client}/device/xenrpc/{devid}/state"
    ))
}

impl BackendStore for BehavingStore {
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.store.read(0, path).map_err(store_error)?;
        if self.behaviour == Behaviour::IgnoresClose
            && path.ends_with("/state")
            && path.contains("/device/")
            && matches!(value.as_deref(), Some(b"5" | b"6"))
        {
            // Never sees the goodbye: the connection stays up.
            return Ok(Some(b"4".to_vec()));
        }
        Ok(value)
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        if self.behaviour == Behaviour::ReoffersOnNextWrite && path.ends_with("/state") {
            if value == b"6" {
                self.fresh_closes.insert(path.to_string());
            } else if value == b"2" && self.fresh_closes.contains(path) {
                // Closed and offered again in one step (the client restarted): hold the
                // offer until the frontend writes again.
                self.held_offers.insert(path.to_string());
                return Ok(());
            }
        }
        // Best effort for the caller: the server's own home may be gone (domain destroyed).
        self.store.write(0, path, value).map_err(store_error)
    }

    fn directory(&mut self, path: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .directory(0, path)
            .map_err(store_error)?
            .unwrap_or_default())
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.store.watch(path, token).map_err(store_error)
    }

    fn unwatch(&mut self, path: &str, token: &str) {
        let _ = self.store.unwatch(path, token);
    }

    fn now_ns(&mut self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn log(&mut self, _line: fmt::Arguments<'_>) {}
}

/// Maps a client's pages and binds its ports in the fake Xen.
struct FakeConnector {
    xen: FakeXen,
    domid: DomId,
    behaviour: Behaviour,
}

impl Connector for FakeConnector {
    type Connection = Served;

    fn connect(
        &mut self,
        client: DomId,
        _devid: u32,
        params: FrontendParams,
    ) -> Result<Served, String> {
        if self.behaviour == Behaviour::Refuse {
            return Err("refused by the fake server".into());
        }
        let s = attach_client(&self.xen, self.domid, client, params)?;
        if self.behaviour == Behaviour::CorruptRing {
            s.poke(xenrpc_proto::layout::ctrl::REQ_CONS, 1_000_000);
        }
        s.notify();
        Ok(s)
    }

    fn describe(&self, s: &Served) -> String {
        format!("{} ring slots", s.conn.geometry().slots())
    }
}

fn serve(
    mut store: BehavingStore,
    xen: FakeXen,
    domid: DomId,
    behaviour: Behaviour,
    stop: &AtomicBool,
    epoch: Instant,
) {
    let mut connector = FakeConnector {
        xen,
        domid,
        behaviour,
    };
    let mut backend = match behaviour {
        // Never answers the handshake: no backend at all.
        Behaviour::Absent => None,
        _ => Some(Backend::<Served>::start(&mut store, domid).expect("watch the backend root")),
    };
    // The stock image's set, registered the way every server registers services.
    let mut services = builtins(&ServiceEnv::new("", 16 << 20));
    let mut registry = Registry::new();
    registry
        .register_set(&mut services)
        .expect("the built-in services fit an empty registry");
    let clock = move || epoch.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(backend) = backend.as_mut() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let mut fired_frontends = Vec::new();
        while store.store.has_buffered_event() {
            if let Ok(Some(event)) = store.store.next_event(Instant::now()) {
                backend.watch_fired(&event.path, &event.token);
                if event.path.contains("/device/") {
                    fired_frontends.push(event.path);
                }
            }
        }
        store.events_delivered(&fired_frontends);
        backend.service(&mut store, &mut connector);
        // Like the service VM: bounce pings, end a connection whose client let go of its
        // pages (the unmap notify cleared `client_alive`), serve the rest.
        let mut let_go = Vec::new();
        for (k, s) in backend.connections_mut() {
            if let Some((wake, back)) = &s.ping {
                if drain(wake.as_raw_fd()) {
                    signal(back.as_raw_fd());
                }
            }
            if !s.conn.client_alive() {
                let_go.push(k);
                continue;
            }
            match behaviour {
                Behaviour::Silent => {}
                Behaviour::CorruptRing => {
                    // Never a valid answer: only an impossible request consumer index, on
                    // every wake-up.
                    if drain(s.wake.as_raw_fd()) {
                        s.poke(xenrpc_proto::layout::ctrl::REQ_CONS, 1_000_000);
                        s.notify();
                    }
                }
                _ => s.serve(&mut registry, &clock),
            }
        }
        for k in let_go {
            backend.end(
                &mut store,
                k,
                EndKind::ClientLetGo,
                &"client let go of its pages",
            );
        }
        backend.publish_totals(&mut store, &[]);
        let mut fds = vec![store.store.event_fd()];
        for (_, s) in backend.connections_mut() {
            fds.push(s.wake.as_raw_fd());
            fds.extend(s.ping.as_ref().map(|p| p.0.as_raw_fd()));
        }
        fds.truncate(32);
        let wait = if backend.next_deferred_ns().is_some() {
            5
        } else {
            20
        };
        let _ = poll_readable(&fds, Instant::now() + Duration::from_millis(wait));
    }
}

impl Served {
    fn notify(&self) {
        signal(self.notify_client.as_raw_fd());
    }

    /// Serves the ring until it is empty and armed for sleep.
    fn serve(&mut self, registry: &mut Registry<'_>, clock: &impl Fn() -> u64) {
        drain(self.wake.as_raw_fd());
        loop {
            let outcome = self.conn.poll(registry, clock, xenrpc_proto::PASS_BUDGET);
            if outcome.notify {
                self.notify();
            }
            if outcome.more {
                continue;
            }
            if !self.conn.prepare_to_sleep() {
                break;
            }
        }
    }

    /// Writes a u32 into the ring's control page (misbehaving servers).
    fn poke(&self, offset: usize, value: u32) {
        assert!(offset % 4 == 0 && offset < PAGE_SIZE);
        // SAFETY: `offset` is a 4-aligned offset inside the control page of the mapped ring
        // region, which `self.ring` keeps alive; shared memory is accessed atomically.
        let cell = unsafe {
            std::sync::atomic::AtomicU32::from_ptr(self.ring.base().add(offset).cast::<u32>())
        };
        cell.store(value, Ordering::Release);
    }
}

/// Maps the index page, copies it once and validates the copy with the contract's codec
/// (`rv::Index`), then maps ring and data pages and binds the ports.
fn attach_client(
    xen: &FakeXen,
    server: DomId,
    client: DomId,
    params: FrontendParams,
) -> Result<Served, String> {
    let index = xen
        .map(server, &[params.index_ref], false)
        .ok_or("mapping the index page failed")?;
    let mut copy = [0u8; PAGE_SIZE];
    let window = Window::new(Arc::new(index), 0, 1).ok_or("index window")?;
    let region = xenrpc_proto::SharedRegion::new(window).map_err(|e| format!("{e:?}"))?;
    region
        .view()
        .read(0, &mut copy)
        .map_err(|e| format!("{e:?}"))?;
    let index = rv::Index::parse(&copy, rv::MAX_PAGES).map_err(|e| format!("index page: {e}"))?;
    let ring_pages = index.ring_pages();
    let data_pages = index.data_pages();
    let geometry = RingGeometry::for_region_pages(ring_pages)
        .ok_or_else(|| format!("{ring_pages} ring pages do not make a ring"))?;
    let refs: Vec<u32> = index
        .ring_refs()
        .iter()
        .chain(index.data_refs())
        .copied()
        .collect();
    let mapped = Arc::new(
        xen.map(server, &refs, true)
            .ok_or("mapping the pages failed")?,
    );
    let ring = Window::new(mapped.clone(), 0, ring_pages).ok_or("ring window")?;
    let data = Window::new(mapped.clone(), ring_pages, data_pages).ok_or("data window")?;
    let ring_for_tests = Window::new(mapped, 0, ring_pages).ok_or("ring window")?;
    let conn = ServerConnection::attach(ring, data, geometry, PeerId(client.into()))
        .map_err(|e| format!("{e:?}"))?;
    let (wake, notify_client) = xen
        .bind(server, params.event_channel)
        .ok_or("binding the event channel failed")?;
    let ping = match params.ping_event_channel {
        None => None,
        Some(port) => Some(
            xen.bind(server, port)
                .ok_or("binding the ping port failed")?,
        ),
    };
    Ok(Served {
        conn,
        wake,
        notify_client,
        ring: Arc::new(ring_for_tests),
        ping,
    })
}
