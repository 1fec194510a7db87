//! Fakes of the Xen layer for host tests: an in-memory xenstore with permissions and watches
//! ([`FakeStore`]), heap "grants" and eventfd "event channels" ([`FakeXen`]), and a backend
//! that walks the handshake and serves calls with the protocol crate's real server
//! ([`FakeServer`]), optionally misbehaving.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xen_abi::xenstore::{Access, Permission, ReplyError, XsErrno};
use xenrpc_proto::mem::HeapRegion;
use xenrpc_proto::services::{arith, echo};
use xenrpc_proto::{PeerId, Registry, RingGeometry, ServerConnection, SharedMemory};
use xenrpc_rendezvous::{self as rv, key};

use crate::devices::{DomId, EventChannel, GrantedPages, Window, XenDevices, PAGE_SIZE};
use crate::error::{Error, Result};
use crate::wait::poll_readable;
use crate::xenstore::{TxId, WatchFired, Xenstore};

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local u64 to an eventfd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Drains an eventfd; whether it was signalled.
fn drain(fd: RawFd) -> bool {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live local u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) == 8 }
}

// ---- xenstore -----------------------------------------------------------------------------

struct Node {
    value: Vec<u8>,
    perms: Vec<Permission>,
}

struct Handle {
    watches: Vec<(String, String)>,
    queue: VecDeque<WatchFired>,
    signal: Arc<OwnedFd>,
}

#[derive(Default)]
struct StoreState {
    nodes: BTreeMap<String, Node>,
    handles: HashMap<u64, Handle>,
    next_handle: u64,
    next_tx: u32,
}

/// An in-memory xenstore shared by several domains' handles. Transactions are not isolated
/// (operations apply at once); permissions and watches follow xenstored's rules closely
/// enough for the attach contract: dom0 may do anything, a node's owner may do anything to
/// it, others get their explicit entry or the default (the first entry's access).
#[derive(Clone, Default)]
pub struct FakeXenstore {
    state: Arc<Mutex<StoreState>>,
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/')
        .map(|(p, _)| if p.is_empty() { "/" } else { p })
}

fn allows(perms: &[Permission], domid: DomId, write: bool) -> bool {
    if domid == 0 || perms.first().is_some_and(|p| p.domid == domid) {
        return true;
    }
    let access = perms
        .iter()
        .skip(1)
        .find(|p| p.domid == domid)
        .or(perms.first())
        .map(|p| p.access);
    match access {
        Some(Access::Both) => true,
        Some(Access::Read) => !write,
        Some(Access::Write) => write,
        _ => false,
    }
}

fn denied(op: &'static str, path: &str) -> Error {
    Error::xenstore(op, path, ReplyError::Xenstore(XsErrno::Eacces))
}

impl FakeXenstore {
    pub fn new() -> Self {
        let store = FakeXenstore::default();
        store.state.lock().unwrap().nodes.insert(
            "/".into(),
            Node {
                value: vec![],
                perms: vec![Permission::new(Access::None, 0)],
            },
        );
        store
    }

    /// Creates `/local/domain/<domid>` as the toolstack does (owner dom0, readable by the domain).
    pub fn add_domain(&self, domid: DomId) {
        let mut dom0 = self.connect(0);
        let home = format!("/local/domain/{domid}");
        dom0.write(0, &format!("{home}/domid"), domid.to_string().as_bytes())
            .unwrap();
        let perms = [
            Permission::new(Access::None, 0),
            Permission::new(Access::Read, domid),
        ];
        dom0.set_perms(0, &home, &perms).unwrap();
        dom0.set_perms(0, &format!("{home}/domid"), &perms).unwrap();
    }

    /// Removes a domain's home (what the toolstack does when it is destroyed).
    pub fn remove_domain(&self, domid: DomId) {
        self.connect(0)
            .rm(0, &format!("/local/domain/{domid}"))
            .unwrap();
    }

    /// A connection as domain `domid`.
    pub fn connect(&self, domid: DomId) -> FakeStore {
        let mut state = self.state.lock().unwrap();
        let id = state.next_handle;
        state.next_handle += 1;
        let signal = Arc::new(eventfd());
        state.handles.insert(
            id,
            Handle {
                watches: vec![],
                queue: VecDeque::new(),
                signal: signal.clone(),
            },
        );
        FakeStore {
            store: self.clone(),
            id,
            domid,
            signal,
            hold: None,
        }
    }

    /// The raw value and permissions of a node (for assertions).
    pub fn node(&self, path: &str) -> Option<(Vec<u8>, Vec<Permission>)> {
        self.state
            .lock()
            .unwrap()
            .nodes
            .get(path)
            .map(|n| (n.value.clone(), n.perms.clone()))
    }
}

/// One domain's connection to a [`FakeXenstore`].
pub struct FakeStore {
    store: FakeXenstore,
    id: u64,
    domid: DomId,
    signal: Arc<OwnedFd>,
    /// See [`FakeStore::hold_first_write`].
    hold: Option<Hold>,
}

/// A write that returns only once another node changed.
struct Hold {
    written: String,
    watched: String,
}

/// How long a held write waits for the other side before the test fails.
const HOLD_LIMIT: Duration = Duration::from_secs(20);

impl Drop for FakeStore {
    fn drop(&mut self) {
        self.store.state.lock().unwrap().handles.remove(&self.id);
    }
}

impl StoreState {
    fn fire(&mut self, changed: &str) {
        for handle in self.handles.values_mut() {
            let mut fired = false;
            for (path, token) in &handle.watches {
                let below = changed == path || changed.starts_with(&format!("{path}/"));
                let above = path.starts_with(&format!("{changed}/"));
                if below || above {
                    handle.queue.push_back(WatchFired {
                        path: changed.to_string(),
                        token: token.clone(),
                    });
                    fired = true;
                }
            }
            if fired {
                signal(handle.signal.as_raw_fd());
            }
        }
    }

    /// Creates `path` (and missing parents) as `domid` would; checks write access on the
    /// nearest existing ancestor.
    fn create(&mut self, domid: DomId, path: &str) -> Result<()> {
        if self.nodes.contains_key(path) {
            return Ok(());
        }
        let up = parent(path).ok_or_else(|| denied("write", path))?;
        self.create(domid, up)?;
        let parent_perms = self.nodes[up].perms.clone();
        if !allows(&parent_perms, domid, true) {
            return Err(denied("write", path));
        }
        let mut perms = parent_perms;
        if domid != 0 {
            perms[0].domid = domid;
        }
        self.nodes.insert(
            path.to_string(),
            Node {
                value: vec![],
                perms,
            },
        );
        Ok(())
    }
}

impl FakeStore {
    /// Forces an interleaving: the next write to `written` returns only once `watched` has
    /// changed (e.g. a client descheduled right after a write while the server reacts to it).
    /// Panics if `watched` has not changed within [`HOLD_LIMIT`].
    pub fn hold_first_write(&mut self, written: &str, watched: &str) {
        self.hold = Some(Hold {
            written: self.absolute(written),
            watched: self.absolute(watched),
        });
    }

    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/local/domain/{}/{path}", self.domid)
        }
    }
}

impl Xenstore for FakeStore {
    fn read(&mut self, _tx: TxId, path: &str) -> Result<Option<Vec<u8>>> {
        let path = self.absolute(path);
        let state = self.store.state.lock().unwrap();
        match state.nodes.get(&path) {
            // Like xenstored: a missing node is ENOENT only if its nearest existing ancestor
            // is readable, EACCES otherwise.
            None => {
                let mut up = parent(&path);
                while let Some(p) = up {
                    if let Some(n) = state.nodes.get(p) {
                        if allows(&n.perms, self.domid, false) {
                            return Ok(None);
                        }
                        return Err(denied("read", &path));
                    }
                    up = parent(p);
                }
                Ok(None)
            }
            Some(n) if allows(&n.perms, self.domid, false) => Ok(Some(n.value.clone())),
            Some(_) => Err(denied("read", &path)),
        }
    }

    fn write(&mut self, _tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        let path = self.absolute(path);
        let mut state = self.store.state.lock().unwrap();
        if let Some(n) = state.nodes.get(&path) {
            if !allows(&n.perms, self.domid, true) {
                return Err(denied("write", &path));
            }
        }
        let held = match self.hold.take() {
            Some(hold) if hold.written == path => {
                let before = state.nodes.get(&hold.watched).map(|n| n.value.clone());
                Some((hold.watched, before))
            }
            other => {
                self.hold = other;
                None
            }
        };
        state.create(self.domid, &path)?;
        state.nodes.get_mut(&path).expect("just created").value = value.to_vec();
        state.fire(&path);
        drop(state);
        if let Some((watched, before)) = held {
            let limit = Instant::now() + HOLD_LIMIT;
            while self.store.node(&watched).map(|n| n.0) == before {
                assert!(
                    Instant::now() < limit,
                    "held write to {path}: {watched} did not change"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, _tx: TxId, path: &str) -> Result<()> {
        let path = self.absolute(path);
        let mut state = self.store.state.lock().unwrap();
        if !state.nodes.contains_key(&path) {
            state.create(self.domid, &path)?;
            state.fire(&path);
        }
        Ok(())
    }

    fn rm(&mut self, _tx: TxId, path: &str) -> Result<()> {
        let path = self.absolute(path);
        let mut state = self.store.state.lock().unwrap();
        let Some(n) = state.nodes.get(&path) else {
            return Ok(());
        };
        if !allows(&n.perms, self.domid, true) {
            return Err(denied("rm", &path));
        }
        let prefix = format!("{path}/");
        state
            .nodes
            .retain(|p, _| p != &path && !p.starts_with(&prefix));
        state.fire(&path);
        Ok(())
    }

    fn directory(&mut self, _tx: TxId, path: &str) -> Result<Option<Vec<String>>> {
        let path = self.absolute(path);
        let state = self.store.state.lock().unwrap();
        let Some(n) = state.nodes.get(&path) else {
            return Ok(None);
        };
        if !allows(&n.perms, self.domid, false) {
            return Err(denied("directory", &path));
        }
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        let children = state
            .nodes
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect();
        Ok(Some(children))
    }

    fn get_perms(&mut self, _tx: TxId, path: &str) -> Result<Option<Vec<Permission>>> {
        let path = self.absolute(path);
        let state = self.store.state.lock().unwrap();
        match state.nodes.get(&path) {
            None => Ok(None),
            Some(n) if allows(&n.perms, self.domid, false) => Ok(Some(n.perms.clone())),
            Some(_) => Err(denied("get-perms", &path)),
        }
    }

    fn set_perms(&mut self, _tx: TxId, path: &str, perms: &[Permission]) -> Result<()> {
        let path = self.absolute(path);
        let mut state = self.store.state.lock().unwrap();
        let domid = self.domid;
        let Some(n) = state.nodes.get_mut(&path) else {
            return Err(Error::xenstore(
                "set-perms",
                &path,
                ReplyError::Xenstore(XsErrno::Enoent),
            ));
        };
        if !allows(&n.perms, domid, true) || perms.is_empty() {
            return Err(denied("set-perms", &path));
        }
        n.perms = perms.to_vec();
        state.fire(&path);
        Ok(())
    }

    fn transaction_start(&mut self) -> Result<TxId> {
        let mut state = self.store.state.lock().unwrap();
        state.next_tx += 1;
        Ok(state.next_tx)
    }

    fn transaction_end(&mut self, _tx: TxId, _commit: bool) -> Result<bool> {
        Ok(true)
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        let path = self.absolute(path);
        let mut state = self.store.state.lock().unwrap();
        let handle = state.handles.get_mut(&self.id).expect("handle registered");
        handle.watches.push((path.clone(), token.to_string()));
        handle.queue.push_back(WatchFired {
            path,
            token: token.to_string(),
        });
        signal(handle.signal.as_raw_fd());
        Ok(())
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        let path = self.absolute(path);
        let mut state = self.store.state.lock().unwrap();
        let handle = state.handles.get_mut(&self.id).expect("handle registered");
        handle.watches.retain(|(p, t)| !(p == &path && t == token));
        Ok(())
    }

    fn next_event(&mut self, deadline: Instant) -> Result<Option<WatchFired>> {
        loop {
            {
                let mut state = self.store.state.lock().unwrap();
                let handle = state.handles.get_mut(&self.id).expect("handle registered");
                let event = handle.queue.pop_front();
                // Readable exactly while events are queued (as a socket with bytes would be).
                if handle.queue.is_empty() {
                    drain(self.signal.as_raw_fd());
                }
                if event.is_some() {
                    return Ok(event);
                }
            }
            match poll_readable(&[self.signal.as_raw_fd()], deadline)
                .map_err(|e| Error::device("poll", e))?
            {
                crate::wait::Readiness::TimedOut => return Ok(None),
                crate::wait::Readiness::Ready(_) => {}
            }
        }
    }

    fn has_buffered_event(&self) -> bool {
        let state = self.store.state.lock().unwrap();
        state
            .handles
            .get(&self.id)
            .is_some_and(|h| !h.queue.is_empty())
    }

    fn event_fd(&self) -> RawFd {
        self.signal.as_raw_fd()
    }
}

// ---- grants and event channels ------------------------------------------------------------

struct PagesInner {
    region: HeapRegion,
}

/// Heap pages standing in for granted pages.
pub struct FakePages {
    inner: Arc<PagesInner>,
    refs: Vec<u32>,
    xen: FakeXen,
}

/// What gntalloc's unmap notify does when the pages are let go of: clear a byte, send an event.
struct ReleaseNotify {
    pages: Arc<PagesInner>,
    offset: usize,
    to_server: Arc<OwnedFd>,
}

impl ReleaseNotify {
    fn fire(self) {
        // SAFETY: `offset` was checked against the region's length when registered; the
        // region lives while `pages` does; the byte is written atomically, as the server may
        // read it at any moment.
        unsafe {
            std::sync::atomic::AtomicU8::from_ptr(self.pages.region.base().add(self.offset))
                .store(0, Ordering::Release)
        };
        signal(self.to_server.as_raw_fd());
    }
}

// SAFETY: the heap region is page aligned, readable and writable while `inner` lives.
unsafe impl GrantedPages for FakePages {
    fn grant_refs(&self) -> &[u32] {
        &self.refs
    }
    fn base(&self) -> *mut u8 {
        self.inner.region.base()
    }
    fn len(&self) -> usize {
        self.inner.region.len()
    }
}

/// A server-side "mapping" of granted pages (keeps them alive after the client revokes).
pub struct MappedPages {
    inner: Arc<PagesInner>,
    first_page: usize,
    count: usize,
}

// SAFETY: a page-aligned window inside the heap region, which `inner` keeps alive.
unsafe impl GrantedPages for MappedPages {
    fn grant_refs(&self) -> &[u32] {
        &[]
    }
    fn base(&self) -> *mut u8 {
        self.inner
            .region
            .base()
            .wrapping_add(self.first_page * PAGE_SIZE)
    }
    fn len(&self) -> usize {
        self.count * PAGE_SIZE
    }
}

impl Drop for FakePages {
    fn drop(&mut self) {
        let mut grants = self.xen.state.lock().unwrap();
        for r in &self.refs {
            grants.grants.remove(r);
        }
        let (mine, others) = std::mem::take(&mut grants.release_notifies)
            .into_iter()
            .partition(|n| Arc::ptr_eq(&n.pages, &self.inner));
        grants.release_notifies = others;
        drop(grants);
        mine.into_iter().for_each(ReleaseNotify::fire);
    }
}

struct Grant {
    pages: Arc<PagesInner>,
    page: usize,
    peer: DomId,
    writable: bool,
}

struct Port {
    peer: DomId,
    to_client: Arc<OwnedFd>,
    to_server: Arc<OwnedFd>,
    bound: bool,
}

#[derive(Default)]
struct XenState {
    grants: HashMap<u32, Grant>,
    next_gref: u32,
    ports: HashMap<u32, Port>,
    next_port: u32,
    /// When set, `grant_pages` fails (tests of device errors).
    fail_grants: bool,
    release_notifies: Vec<ReleaseNotify>,
}

/// The "hypervisor" shared by a fake client domain and the fake server.
#[derive(Clone, Default)]
pub struct FakeXen {
    state: Arc<Mutex<XenState>>,
}

impl FakeXen {
    pub fn new() -> Self {
        let xen = FakeXen::default();
        {
            let mut s = xen.state.lock().unwrap();
            s.next_gref = 8;
            s.next_port = 5;
        }
        xen
    }

    /// What the client's kernel does when the client process is killed: every registered
    /// release notify fires (its pages stay allocated while the server maps them).
    pub fn kill_client_process(&self) {
        let notifies = std::mem::take(&mut self.state.lock().unwrap().release_notifies);
        notifies.into_iter().for_each(ReleaseNotify::fire);
    }

    pub fn fail_grants(&self, fail: bool) {
        self.state.lock().unwrap().fail_grants = fail;
    }

    /// Live grants (revoked ones are gone).
    pub fn grant_count(&self) -> usize {
        self.state.lock().unwrap().grants.len()
    }

    /// Maps granted pages as domain `mapper` would: each ref must be granted to `mapper`, and
    /// (like the server's contiguous mapping) consecutive pages of one allocation.
    pub fn map(&self, mapper: DomId, refs: &[u32], need_write: bool) -> Option<MappedPages> {
        let s = self.state.lock().unwrap();
        let first = s.grants.get(refs.first()?)?;
        for (i, r) in refs.iter().enumerate() {
            let g = s.grants.get(r)?;
            if g.peer != mapper
                || (need_write && !g.writable)
                || !Arc::ptr_eq(&g.pages, &first.pages)
                || g.page != first.page + i
            {
                return None;
            }
        }
        Some(MappedPages {
            inner: first.pages.clone(),
            first_page: first.page,
            count: refs.len(),
        })
    }

    /// Binds to an unbound port allocated for `binder`: (wait fd, notify fd) of the server end.
    pub fn bind(&self, binder: DomId, port: u32) -> Option<(Arc<OwnedFd>, Arc<OwnedFd>)> {
        let mut s = self.state.lock().unwrap();
        let p = s.ports.get_mut(&port)?;
        if p.peer != binder || p.bound {
            return None;
        }
        p.bound = true;
        Some((p.to_server.clone(), p.to_client.clone()))
    }
}

/// The client end of a fake event channel.
pub struct FakeChannel {
    port: u32,
    to_client: Arc<OwnedFd>,
    to_server: Arc<OwnedFd>,
}

impl EventChannel for FakeChannel {
    fn port(&self) -> u32 {
        self.port
    }
    fn notify(&self) -> Result<()> {
        signal(self.to_server.as_raw_fd());
        Ok(())
    }
    fn fd(&self) -> RawFd {
        self.to_client.as_raw_fd()
    }
    fn acknowledge(&self) -> Result<bool> {
        Ok(drain(self.to_client.as_raw_fd()))
    }
}

impl XenDevices for FakeXen {
    type Pages = FakePages;
    type Channel = FakeChannel;

    fn grant_pages(&self, peer: DomId, count: usize, writable: bool) -> Result<FakePages> {
        let mut s = self.state.lock().unwrap();
        if s.fail_grants {
            return Err(Error::device(
                "gntalloc: grant pages",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let inner = Arc::new(PagesInner {
            region: HeapRegion::new(count * PAGE_SIZE),
        });
        let mut refs = Vec::new();
        for page in 0..count {
            let r = s.next_gref;
            s.next_gref += 1;
            s.grants.insert(
                r,
                Grant {
                    pages: inner.clone(),
                    page,
                    peer,
                    writable,
                },
            );
            refs.push(r);
        }
        Ok(FakePages {
            inner,
            refs,
            xen: self.clone(),
        })
    }

    fn notify_on_release(
        &self,
        pages: &FakePages,
        byte_offset: usize,
        channel: &FakeChannel,
    ) -> Result<()> {
        if byte_offset >= pages.len() {
            return Err(Error::BadArguments(format!(
                "release notify at byte {byte_offset} of {} bytes",
                pages.len()
            )));
        }
        self.state
            .lock()
            .unwrap()
            .release_notifies
            .push(ReleaseNotify {
                pages: pages.inner.clone(),
                offset: byte_offset,
                to_server: channel.to_server.clone(),
            });
        Ok(())
    }

    fn alloc_unbound(&self, peer: DomId) -> Result<FakeChannel> {
        let mut s = self.state.lock().unwrap();
        let port = s.next_port;
        s.next_port += 1;
        let (to_client, to_server) = (Arc::new(eventfd()), Arc::new(eventfd()));
        s.ports.insert(
            port,
            Port {
                peer,
                to_client: to_client.clone(),
                to_server: to_server.clone(),
                bound: false,
            },
        );
        Ok(FakeChannel {
            port,
            to_client,
            to_server,
        })
    }
}

// ---- the backend --------------------------------------------------------------------------

/// How the fake server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Walks the handshake and answers every call.
    Normal,
    /// Connects but never answers (calls must hit their deadline).
    Silent,
    /// Refuses the connection at Initialised (backend Closed).
    Refuse,
    /// Answers, but first publishes an impossible response producer index.
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

struct Served {
    client: DomId,
    devid: u32,
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
            serve(store.connect(domid), xen, domid, behaviour, &flag, epoch)
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

fn read_str(store: &mut FakeStore, path: &str) -> Option<Vec<u8>> {
    store.read(0, path).ok().flatten()
}

fn set_state(store: &mut FakeStore, dir: &str, state: rv::XenbusState) {
    // Best effort: the server's own home may be gone (domain destroyed).
    let _ = store.write(
        0,
        &format!("{dir}/{}", key::STATE),
        state.as_str().as_bytes(),
    );
}

fn serve(
    mut store: FakeStore,
    xen: FakeXen,
    domid: DomId,
    behaviour: Behaviour,
    stop: &AtomicBool,
    epoch: Instant,
) {
    use rv::XenbusState as S;
    let root = rv::backend_root(domid).to_string();
    store.watch(&root, "be").expect("watch backend root");
    let mut served: Vec<Served> = Vec::new();
    let mut echo_handler = echo::Handler(echo::EchoServer);
    let mut arith_handler = arith::Handler(arith::ArithServer);
    let mut registry = Registry::new();
    registry.register(&mut echo_handler).unwrap();
    registry.register(&mut arith_handler).unwrap();
    let clock = move || epoch.elapsed().as_nanos() as u64;
    let mut watched_frontends: Vec<String> = Vec::new();
    let mut restarted: Vec<(DomId, u32)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // Handshake: like the service VM, look at every device under our backend root, but
        // only when a watch fired (our own state writes fire the root watch too).
        let mut fired = Vec::new();
        while store.has_buffered_event() {
            fired.extend(store.next_event(Instant::now()).unwrap().map(|e| e.path));
        }
        let devices = if fired.is_empty() {
            Vec::new()
        } else {
            store.directory(0, &root).unwrap().unwrap_or_default()
        };
        for client_name in devices {
            let Ok(client) = rv::parse_domid(client_name.as_bytes()) else {
                continue;
            };
            for dev_name in store
                .directory(0, &format!("{root}/{client_name}"))
                .unwrap()
                .unwrap_or_default()
            {
                let Ok(devid) = rv::parse_decimal(dev_name.as_bytes(), rv::DEVID_MAX) else {
                    continue;
                };
                let be = rv::backend_dir(domid, client, devid).to_string();
                let fe = rv::frontend_dir(client, devid).to_string();
                if !watched_frontends.contains(&fe) {
                    store.watch(&fe, "fe").unwrap();
                    watched_frontends.push(fe.clone());
                }
                let be_state = read_str(&mut store, &format!("{be}/state"))
                    .and_then(|v| rv::parse_state(&v).ok());
                let fe_state = read_str(&mut store, &format!("{fe}/state"))
                    .and_then(|v| rv::parse_state(&v).ok());
                let online =
                    read_str(&mut store, &format!("{be}/online")).is_some_and(|v| v == b"1");
                let is_served = served
                    .iter()
                    .any(|s| s.client == client && s.devid == devid);
                // Like the service VM: Initialising (or InitWait) from a connected client
                // means it restarted (crashed and came back); the old connection ends.
                let client_restarted = matches!(fe_state, Some(S::Initialising | S::InitWait));
                let client_closing = matches!(fe_state, Some(S::Closing | S::Closed));
                if client_closing && behaviour == Behaviour::IgnoresClose {
                    continue;
                }
                let teardown = !online
                    || fe_state.is_none()
                    || client_closing
                    || client_restarted
                    || be_state == Some(S::Closing);
                let fe_state_path = format!("{fe}/state");
                let mut offer_again = false;
                if fired.contains(&fe_state_path) && fe_state != Some(S::Initialising) {
                    restarted.retain(|k| *k != (client, devid));
                }
                if is_served && teardown {
                    served.retain(|s| !(s.client == client && s.devid == devid));
                    set_state(&mut store, &be, S::Closed);
                    if !(online && client_restarted) {
                        continue;
                    }
                    offer_again = true;
                    if behaviour == Behaviour::ReoffersOnNextWrite {
                        // Reacting to changes only: this Initialising ended the old
                        // connection; only a new write of it offers the device again.
                        restarted.push((client, devid));
                        continue;
                    }
                    // Like the service VM: the restarted client is offered the device at
                    // once (no further watch event is coming to prompt it).
                }
                if restarted.contains(&(client, devid)) {
                    if !fired.contains(&fe_state_path) {
                        continue;
                    }
                    restarted.retain(|k| *k != (client, devid));
                }
                let offer = offer_again
                    || matches!(
                        (be_state, fe_state),
                        (Some(S::Initialising), _) | (Some(S::Closed), Some(S::Initialising))
                    );
                match (be_state, fe_state) {
                    // Like the service VM: a device it offered (InitWait) and that is taken
                    // offline or asked to close is closed; a Closed one is left alone.
                    (Some(S::InitWait), _) if !online => set_state(&mut store, &be, S::Closed),
                    _ if !online || behaviour == Behaviour::Absent => {}
                    _ if offer => {
                        let frontend =
                            read_str(&mut store, &format!("{be}/frontend")).unwrap_or_default();
                        if rv::check_frontend_path(&frontend, client, devid).is_err() {
                            set_state(&mut store, &be, S::Closed);
                            continue;
                        }
                        store
                            .write(0, &format!("{be}/{}", key::MAX_PAGES), b"1020")
                            .unwrap();
                        store
                            .write(
                                0,
                                &format!("{be}/{}", key::PROTOCOL),
                                rv::PROTOCOL.as_bytes(),
                            )
                            .unwrap();
                        set_state(&mut store, &be, S::InitWait);
                    }
                    (Some(S::InitWait), Some(S::Initialised)) => {
                        if behaviour == Behaviour::Refuse {
                            set_state(&mut store, &be, S::Closed);
                            continue;
                        }
                        match attach_client(&mut store, &xen, client, devid, &fe) {
                            Some(s) => {
                                if behaviour == Behaviour::CorruptRing {
                                    s.poke(xenrpc_proto::layout::ctrl::RSP_PROD, 1_000_000);
                                }
                                s.notify();
                                served.push(s);
                                set_state(&mut store, &be, S::Connected);
                            }
                            None => set_state(&mut store, &be, S::Closed),
                        }
                    }
                    _ => {}
                }
            }
        }
        // Like the service VM: bounce pings, and end a connection whose client let go of its
        // pages (the unmap notify cleared `client_alive`).
        for s in &served {
            if let Some((wake, back)) = &s.ping {
                if drain(wake.as_raw_fd()) {
                    signal(back.as_raw_fd());
                }
            }
        }
        let (gone, alive): (Vec<Served>, Vec<Served>) =
            served.into_iter().partition(|s| !s.conn.client_alive());
        served = alive;
        for s in gone {
            set_state(
                &mut store,
                &rv::backend_dir(domid, s.client, s.devid).to_string(),
                S::Closed,
            );
        }
        // Serve.
        if behaviour == Behaviour::CorruptRing {
            // Never a valid response: only an impossible producer index, on every wake-up.
            for s in &served {
                if drain(s.wake.as_raw_fd()) {
                    s.poke(xenrpc_proto::layout::ctrl::RSP_PROD, 1_000_000);
                    s.notify();
                }
            }
        } else if behaviour != Behaviour::Silent {
            for s in &mut served {
                drain(s.wake.as_raw_fd());
                loop {
                    let outcome = s
                        .conn
                        .poll(&mut registry, &clock, xenrpc_proto::PASS_BUDGET);
                    if outcome.notify {
                        signal(s.notify_client.as_raw_fd());
                    }
                    if outcome.more {
                        continue;
                    }
                    if !s.conn.prepare_to_sleep() {
                        break;
                    }
                }
            }
        }
        let mut fds = vec![store.event_fd()];
        fds.extend(served.iter().map(|s| s.wake.as_raw_fd()));
        fds.extend(
            served
                .iter()
                .filter_map(|s| s.ping.as_ref().map(|p| p.0.as_raw_fd())),
        );
        fds.truncate(32);
        let _ = poll_readable(&fds, Instant::now() + Duration::from_millis(20));
    }
}

impl Served {
    fn notify(&self) {
        signal(self.notify_client.as_raw_fd());
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

fn attach_client(
    store: &mut FakeStore,
    xen: &FakeXen,
    client: DomId,
    devid: u32,
    fe: &str,
) -> Option<Served> {
    let index_ref = rv::parse_decimal(
        &read_str(store, &format!("{fe}/{}", key::INDEX_REF))?,
        u32::MAX,
    )
    .ok()?;
    let port = rv::parse_decimal(
        &read_str(store, &format!("{fe}/{}", key::EVENT_CHANNEL))?,
        u32::MAX,
    )
    .ok()?;
    rv::check_protocol(&read_str(store, &format!("{fe}/{}", key::PROTOCOL))?).ok()?;
    let index = xen.map(server_id(store), &[index_ref], false)?;
    let mut copy = [0u8; PAGE_SIZE];
    // Copy the index page once into private memory, then validate the copy.
    let window = Window::new(Arc::new(index), 0, 1)?;
    let region = xenrpc_proto::SharedRegion::new(window).ok()?;
    region.view().read(0, &mut copy).ok()?;
    let header = xenrpc_proto::zerocopy::FromBytes::read_from_bytes(&copy[..16]).ok();
    let header: rv::IndexHeader = header?;
    if header.magic != rv::INDEX_MAGIC || header.version != rv::INDEX_VERSION {
        return None;
    }
    let ring_pages = header.ring_pages as usize;
    let data_pages = header.data_pages as usize;
    if ring_pages < 3 || ring_pages + data_pages > rv::MAX_PAGES {
        return None;
    }
    let slots = u32::try_from((ring_pages - 1) * PAGE_SIZE / 512).ok()?;
    let geometry = RingGeometry::new(slots).ok()?;
    if geometry.region_pages() != ring_pages {
        return None;
    }
    let refs: Vec<u32> = (0..ring_pages + data_pages)
        .map(|i| u32::from_le_bytes(copy[16 + 4 * i..20 + 4 * i].try_into().unwrap()))
        .collect();
    let mapped = Arc::new(xen.map(server_id(store), &refs, true)?);
    let ring = Window::new(mapped.clone(), 0, ring_pages)?;
    let data = Window::new(mapped.clone(), ring_pages, data_pages)?;
    let ring_for_tests = Window::new(mapped, 0, ring_pages)?;
    let conn = ServerConnection::attach(ring, data, geometry, PeerId(client.into())).ok()?;
    let (wake, notify_client) = xen.bind(server_id(store), port)?;
    let ping = match read_str(store, &format!("{fe}/{}", key::PING_EVENT_CHANNEL)) {
        None => None,
        Some(v) => Some(xen.bind(server_id(store), rv::parse_decimal(&v, u32::MAX).ok()?)?),
    };
    Some(Served {
        client,
        devid,
        conn,
        wake,
        notify_client,
        ring: Arc::new(ring_for_tests),
        ping,
    })
}

fn server_id(store: &FakeStore) -> DomId {
    store.domid
}
