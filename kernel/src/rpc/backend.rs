//! The xenbus backend of the service VM: watches its backend directory, walks the XenbusState
//! handshake with each attached client (docs/rendezvous.md), and owns the connections.
//!
//! Everything a client wrote is read once and validated by `xenrpc-rendezvous`; anything
//! wrong ends that device with BE state Closed and a counted, logged reason. The toolstack
//! decides who may connect: only devices under our backend directory exist for us.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use xen_abi::xenstore::XsErrno;
use xen_abi::DomId;
use xenrpc_rendezvous::{self as rdv, key, XenbusState};

use super::connection::{Connection, ConnectionEnd};
use crate::log;
use crate::xen::xenstore::{self, XsError};

/// Set by the xenstore watches; the loop rescans when it sees it.
pub static RESCAN: AtomicBool = AtomicBool::new(true);

const ROOT_TOKEN: &str = "xenrpc-backend";
const RELEASE_TOKEN: &str = "xenrpc-release-domain";

/// Why devices were refused or closed.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    pub attached: u64,
    pub connected: u64,
    pub refused_entry: u64,
    pub refused_frontend: u64,
    pub refused_connect: u64,
    pub closed_by_client: u64,
    pub client_gone: u64,
    pub detached: u64,
    pub broken: u64,
    pub client_let_go: u64,
    pub event_storms: u64,
}

impl core::fmt::Display for BackendStats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "attached={} connected={} refused_entry={} refused_frontend={} refused_connect={} \
             closed_by_client={} client_gone={} detached={} broken={} client_let_go={} \
             event_storms={}",
            self.attached,
            self.connected,
            self.refused_entry,
            self.refused_frontend,
            self.refused_connect,
            self.closed_by_client,
            self.client_gone,
            self.detached,
            self.broken,
            self.client_let_go,
            self.event_storms
        )
    }
}

enum Phase {
    /// Waiting for the frontend to publish its pages (BE InitWait).
    InitWait,
    Connected(Box<Connection>),
    /// Closed (BE Closed); waits for the frontend to start over or the toolstack to remove it.
    Closed,
}

struct Device {
    client: DomId,
    devid: u32,
    be_dir: rdv::Path,
    fe_dir: rdv::Path,
    watch_token: Option<String>,
    phase: Phase,
}

pub struct Backend {
    own: DomId,
    root: rdv::Path,
    devices: BTreeMap<(DomId, u32), Device>,
    pub stats: BackendStats,
    /// What `publish_totals` last wrote to xenstore.
    published: Option<BackendStats>,
}

fn mark_rescan() -> xenstore::WatchHandler {
    Arc::new(|_| RESCAN.store(true, Ordering::SeqCst))
}

fn read_opt(path: &rdv::Path) -> Result<Option<Vec<u8>>, XsError> {
    match xenstore::read(path.as_str()) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(XsErrno::Enoent) => Ok(None),
        Err(e) => Err(e),
    }
}

fn list(path: &str) -> Vec<String> {
    match xenstore::directory(path) {
        Ok(entries) => entries,
        Err(e) if e.is(XsErrno::Enoent) => Vec::new(),
        Err(e) => {
            log!("rpc: listing {path} failed: {e}");
            Vec::new()
        }
    }
}

impl Backend {
    /// Watches the backend directory and domain releases.
    pub fn start(own: DomId) -> Result<Backend, XsError> {
        let root = rdv::backend_root(own);
        xenstore::watch(root.as_str(), ROOT_TOKEN, mark_rescan())?;
        xenstore::watch("@releaseDomain", RELEASE_TOKEN, mark_rescan())?;
        Ok(Backend {
            own,
            root,
            devices: BTreeMap::new(),
            stats: BackendStats::default(),
            published: None,
        })
    }

    fn write_state(&self, dev: &Device, state: XenbusState) {
        let path = rdv::key_path(&dev.be_dir, key::STATE);
        let value = format!("{}", state as u32);
        if let Err(e) = xenstore::write(path.as_str(), value.as_bytes()) {
            log!(
                "rpc: dom{}/{}: writing state {value} failed: {e}",
                dev.client,
                dev.devid
            );
        }
    }

    /// Writes the totals to `data/xenrpc-totals` when they changed, so the toolstack sees
    /// every counted refusal (`xenrpc list` in dom0 prints them). Called where they change:
    /// after a rescan and after connections end.
    fn publish_totals(&mut self) {
        if self.published == Some(self.stats) {
            return;
        }
        let value = format!("{}", self.stats);
        match xenstore::write(rdv::totals_path(self.own).as_str(), value.as_bytes()) {
            Ok(()) => self.published = Some(self.stats),
            Err(e) => log!("rpc: publishing the totals failed: {e}"),
        }
    }

    /// Brings our view in line with xenstore: new devices, removed devices, state changes.
    pub fn rescan(&mut self) {
        let mut listed = Vec::new();
        for client in list(self.root.as_str()) {
            for devid in list(&format!("{}/{client}", self.root)) {
                match rdv::parse_backend_entry(client.as_bytes(), devid.as_bytes()) {
                    Ok((c, d)) if c != self.own => listed.push((c, d)),
                    Ok(_) => {}
                    Err(e) => {
                        self.stats.refused_entry += 1;
                        log!("rpc: ignoring backend entry {client}/{devid}: {e}");
                    }
                }
            }
        }
        let gone: Vec<(DomId, u32)> = self
            .devices
            .keys()
            .filter(|k| !listed.contains(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(dev) = self.devices.remove(&k) {
                self.stats.detached += 1;
                log!("rpc: dom{}/{}: backend entry removed", k.0, k.1);
                Self::forget(dev);
            }
        }
        for k in listed {
            if !self.devices.contains_key(&k) {
                self.add(k.0, k.1);
            }
        }
        let keys: Vec<(DomId, u32)> = self.devices.keys().copied().collect();
        for k in keys {
            self.step(k);
        }
        self.publish_totals();
    }

    fn forget(mut dev: Device) {
        if let Some(token) = dev.watch_token.take() {
            let _ = xenstore::unwatch(rdv::key_path(&dev.fe_dir, key::STATE).as_str(), &token);
        }
        dev.phase = Phase::Closed; // drops any connection: unmaps, closes the port
    }

    fn add(&mut self, client: DomId, devid: u32) {
        let mut dev = Device {
            client,
            devid,
            be_dir: rdv::backend_dir(self.own, client, devid),
            fe_dir: rdv::frontend_dir(client, devid),
            watch_token: None,
            phase: Phase::Closed,
        };
        let check = (|| -> Result<(), String> {
            let id = read_opt(&rdv::key_path(&dev.be_dir, key::FRONTEND_ID))
                .map_err(|e| format!("{e}"))?;
            let id = id.ok_or("no frontend-id")?;
            let id = rdv::parse_domid(&id).map_err(|e| format!("frontend-id: {e}"))?;
            if id != client {
                return Err(format!("frontend-id {id} does not match entry {client}"));
            }
            let fe =
                read_opt(&rdv::key_path(&dev.be_dir, key::FRONTEND)).map_err(|e| format!("{e}"))?;
            let fe = fe.ok_or("no frontend path")?;
            rdv::check_frontend_path(&fe, client, devid).map_err(|e| format!("frontend: {e}"))?;
            Ok(())
        })();
        match check {
            Err(why) => {
                self.stats.refused_frontend += 1;
                log!("rpc: dom{client}/{devid}: refused: {why}");
                self.write_state(&dev, XenbusState::Closed);
            }
            Ok(()) => {
                let token = format!("xenrpc-fe-{client}-{devid}");
                let state_path = rdv::key_path(&dev.fe_dir, key::STATE);
                match xenstore::watch(state_path.as_str(), &token, mark_rescan()) {
                    Ok(()) => dev.watch_token = Some(token),
                    Err(e) => log!("rpc: dom{client}/{devid}: watching the frontend failed: {e}"),
                }
                let _ =
                    xenstore::write(rdv::key_path(&dev.be_dir, key::MAX_PAGES).as_str(), b"1020");
                let _ = xenstore::write(
                    rdv::key_path(&dev.be_dir, key::PROTOCOL).as_str(),
                    rdv::PROTOCOL.as_bytes(),
                );
                self.write_state(&dev, XenbusState::InitWait);
                dev.phase = Phase::InitWait;
                self.stats.attached += 1;
                log!("rpc: dom{client}/{devid}: attached, waiting for the client");
            }
        }
        self.devices.insert((client, devid), dev);
    }

    fn close(&mut self, k: (DomId, u32), why: &str) {
        let Some(mut dev) = self.devices.remove(&k) else {
            return;
        };
        if matches!(dev.phase, Phase::Connected(_) | Phase::InitWait) {
            log!("rpc: dom{}/{}: closed: {why}", k.0, k.1);
            log!("rpc: totals: {}", self.stats);
        }
        dev.phase = Phase::Closed;
        self.write_state(&dev, XenbusState::Closed);
        self.devices.insert(k, dev);
    }

    fn step(&mut self, k: (DomId, u32)) {
        let Some(dev) = self.devices.get(&k) else {
            return;
        };
        let online = read_opt(&rdv::key_path(&dev.be_dir, key::ONLINE))
            .ok()
            .flatten();
        if online.as_deref() == Some(b"0") {
            if !matches!(dev.phase, Phase::Closed) {
                self.stats.detached += 1;
                self.close(k, "detached by the toolstack");
            }
            return;
        }
        let fe_state = match read_opt(&rdv::key_path(&dev.fe_dir, key::STATE)) {
            Ok(Some(v)) => rdv::parse_state(&v).ok(),
            Ok(None) => None,
            // A closed device is left alone until the toolstack removes it or the frontend
            // starts over; only a live one reports that its frontend became unreadable.
            Err(e) if matches!(dev.phase, Phase::Closed) => {
                let _ = e;
                None
            }
            Err(e) => {
                log!(
                    "rpc: dom{}/{}: reading the frontend state failed: {e}",
                    k.0,
                    k.1
                );
                None
            }
        };
        match (&dev.phase, fe_state) {
            (Phase::InitWait, Some(XenbusState::Initialised | XenbusState::Connected)) => {
                self.connect(k)
            }
            (Phase::InitWait, None) => {
                self.stats.client_gone += 1;
                self.close(k, "frontend vanished");
            }
            (Phase::Connected(_), Some(XenbusState::Closing | XenbusState::Closed)) => {
                self.stats.closed_by_client += 1;
                self.close(k, "client closed");
            }
            (Phase::Connected(_), None) => {
                self.stats.client_gone += 1;
                self.close(k, "client gone");
            }
            (Phase::Connected(_), Some(XenbusState::Initialising | XenbusState::InitWait)) => {
                // The client restarted (it crashed, or dropped a stale session): tear the old
                // connection down and offer the device again at once; no further watch event
                // is coming to prompt it.
                self.stats.closed_by_client += 1;
                self.close(k, "client restarted");
                self.offer_again(k);
            }
            (Phase::Closed, Some(XenbusState::Initialising)) => self.offer_again(k),
            _ => {}
        }
    }

    /// The client starts over (reconnect): offer the device again (BE InitWait).
    fn offer_again(&mut self, k: (DomId, u32)) {
        let Some(dev) = self.devices.get_mut(&k) else {
            return;
        };
        dev.phase = Phase::InitWait;
        let dev = self.devices.get(&k).expect("present");
        self.write_state(dev, XenbusState::InitWait);
        log!("rpc: dom{}/{}: client reconnecting", k.0, k.1);
    }

    fn connect(&mut self, k: (DomId, u32)) {
        let dev = self.devices.get(&k).expect("present");
        let read_num = |name: &str, max: u32| -> Result<u32, String> {
            let v =
                read_opt(&rdv::key_path(&dev.fe_dir, name)).map_err(|e| format!("{name}: {e}"))?;
            let v = v.ok_or_else(|| format!("{name} missing"))?;
            rdv::parse_decimal(&v, max).map_err(|e| format!("{name}: {e}"))
        };
        let params = (|| -> Result<(u32, u32, Option<u32>), String> {
            let protocol = read_opt(&rdv::key_path(&dev.fe_dir, key::PROTOCOL))
                .map_err(|e| format!("protocol: {e}"))?
                .ok_or("protocol missing")?;
            rdv::check_protocol(&protocol).map_err(|e| format!("protocol: {e}"))?;
            let ping = match read_opt(&rdv::key_path(&dev.fe_dir, key::PING_EVENT_CHANNEL)) {
                Ok(None) => None,
                Ok(Some(_)) => Some(read_num(key::PING_EVENT_CHANNEL, 4095)?),
                Err(e) => return Err(format!("{}: {e}", key::PING_EVENT_CHANNEL)),
            };
            Ok((
                read_num(key::INDEX_REF, u32::MAX)?,
                read_num(key::EVENT_CHANNEL, 4095)?,
                ping,
            ))
        })();
        let result = params.and_then(|(index_ref, port, ping)| {
            Connection::establish(k.0, index_ref, port, ping).map_err(|e| format!("{e}"))
        });
        match result {
            Ok(conn) => {
                log!(
                    "rpc: dom{}/{}: connected ({} ring pages, {} data pages{})",
                    k.0,
                    k.1,
                    conn.ring_pages,
                    conn.data_pages(),
                    if conn.has_ping() { ", ping port" } else { "" }
                );
                let dev = self.devices.get_mut(&k).expect("present");
                dev.phase = Phase::Connected(Box::new(conn));
                self.stats.connected += 1;
                let dev = self.devices.get(&k).expect("present");
                self.write_state(dev, XenbusState::Connected);
            }
            Err(why) => {
                self.stats.refused_connect += 1;
                self.close(k, &format!("refused: {why}"));
            }
        }
    }

    /// Serves every connection once (up to `budget` work units each). Returns requests handled.
    pub fn serve(&mut self, dispatcher: &mut impl xenrpc_proto::Dispatcher, budget: u64) -> u32 {
        let mut handled = 0;
        let mut ended = Vec::new();
        for (k, dev) in self.devices.iter_mut() {
            if let Phase::Connected(conn) = &mut dev.phase {
                match conn.serve(dispatcher, budget) {
                    Ok(n) => handled += n,
                    Err(end) => ended.push((*k, end)),
                }
            }
        }
        for (k, end) in ended {
            let counter = match end {
                ConnectionEnd::Violation(_) => &mut self.stats.broken,
                ConnectionEnd::ClientLetGo => &mut self.stats.client_let_go,
                ConnectionEnd::Storm(_) => &mut self.stats.event_storms,
            };
            *counter += 1;
            self.close(k, &format!("{end}"));
            self.publish_totals();
        }
        handled
    }

    /// Arms every connection for sleep; false if any has work after all.
    pub fn ready_to_sleep(&mut self) -> bool {
        let mut ready = true;
        for dev in self.devices.values_mut() {
            if let Phase::Connected(conn) = &mut dev.phase {
                ready &= conn.ready_to_sleep();
            }
        }
        ready
    }

    /// Closes every device (the VM is going down): clients see Closing, then Closed.
    pub fn shutdown(&mut self) {
        let keys: Vec<(DomId, u32)> = self.devices.keys().copied().collect();
        for k in keys {
            if let Some(dev) = self.devices.get(&k) {
                self.write_state(dev, XenbusState::Closing);
            }
            self.close(k, "service VM shutting down");
        }
    }
}
