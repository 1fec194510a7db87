//! The fake xenstore: nodes with permissions, transactions that always commit, watches
//! delivered through an eventfd, domains that come and go.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_abi::xenstore::{Access, Permission, ReplyError, XsErrno};

use super::{drain, eventfd, signal};
use crate::devices::DomId;
use crate::error::{Error, Result};
use crate::wait::poll_readable;
use crate::xenstore::{TxId, WatchFired, Xenstore};

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
