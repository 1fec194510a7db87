//! The backend half of the handshake (docs/rendezvous.md), as logic without I/O: it watches
//! the backend directory and domain releases, walks the XenbusState handshake with each
//! attached client, owns the connections, and counts every refusal. The service VM and the
//! client crate's fake service VM both run this one; host tests drive it through
//! `mock::MockStore` (feature `mock`).
//!
//! Everything a client wrote is read once and validated by this crate's parsers; anything
//! wrong ends that device with BE state Closed and a counted, logged reason. The toolstack
//! decides who may connect: only devices under our backend directory exist for us.
//!
//! A watch event steps only the device it names (its frontend's token, or a path under its
//! backend directory); only the bare root, `@releaseDomain` and lost events cost a full
//! rescan or a look at every domain. What one domain may do is bounded by [`crate::limits`]:
//! devices, steps and connects per second (the excess waits, counted as `throttled`), log
//! lines. A tenant is released once (its last device removed or detached, or its domain gone):
//! [`Backend::take_released`] hands it to the serving loop, which frees what its services kept,
//! so a later domain with the same id starts empty.

mod device;
mod handshake;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
mod stats;
mod store;
#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use self::stats::{BackendStats, EndKind, ReleaseReason};
pub use self::store::{BackendStore, Connector, FrontendParams, StoreError};

use self::device::{Device, Phase};
use crate::limits::{LogVerdict, RateLimit, MAX_DEVICES_PER_DOMAIN};
use crate::{self as rdv, key, DomId, XenbusState};

/// A device: (client domain, device id).
pub type DeviceKey = (DomId, u32);

/// The token of the backend directory's watch.
pub const ROOT_TOKEN: &str = "xenrpc-backend";
/// The token of the `@releaseDomain` watch.
pub const RELEASE_TOKEN: &str = "xenrpc-release-domain";
/// More named devices than this waiting at once fall back to a full rescan.
const MAX_FIRED: usize = 1024;
/// How soon throttled steps are looked at again.
const DEFERRED_RETRY_NS: u64 = 1_000_000_000 / 16;
/// The nodes of a backend directory that only the backend writes (after the toolstack's
/// initial state): changes to them are our own echoes.
const WRITTEN_BY_US: [&str; 3] = [key::STATE, key::MAX_PAGES, key::PROTOCOL];
/// Ring and data pages a client may grant us (advertised as `max-pages`).
pub const MAX_PAGES_ADVERTISED: &[u8] = b"1020";

/// The frontend state watch token of a device.
fn frontend_token(k: DeviceKey) -> String {
    format!("xenrpc-fe-{}-{}", k.0, k.1)
}

/// The device a frontend token names.
fn parse_frontend_token(token: &str) -> Option<DeviceKey> {
    let rest = token.strip_prefix("xenrpc-fe-")?;
    let (client, devid) = rest.split_once('-')?;
    rdv::parse_backend_entry(client.as_bytes(), devid.as_bytes()).ok()
}

/// The backend of one server domain.
pub struct Backend<C> {
    own: DomId,
    root: rdv::Path,
    devices: BTreeMap<DeviceKey, Device<C>>,
    stats: BackendStats,
    /// What `publish_totals` last wrote (stats, the caller's extra counters).
    published: Option<(BackendStats, Vec<(&'static str, u64)>)>,
    /// Every device must be looked at.
    rescan: bool,
    /// `@releaseDomain` fired: find which domains went.
    domain_released: bool,
    /// Devices a watch event named.
    fired: BTreeSet<DeviceKey>,
    /// Connects per client domain (a domain's devices share it).
    connects: BTreeMap<DomId, RateLimit>,
    /// Devices whose step the rate limits postponed.
    deferred: BTreeSet<DeviceKey>,
    /// When the postponed steps are tried again.
    deferred_due: u64,
    /// Domains released whose devices are still listed: not released again until a
    /// connection makes them a tenant anew.
    released: BTreeSet<DomId>,
    /// Releases the loop has not taken yet.
    to_forget: Vec<(DomId, ReleaseReason)>,
}

impl<C> Backend<C> {
    /// Watches the backend directory of `own` and domain releases.
    pub fn start(store: &mut impl BackendStore, own: DomId) -> Result<Self, StoreError> {
        let root = rdv::backend_root(own);
        store.watch(root.as_str(), ROOT_TOKEN)?;
        store.watch("@releaseDomain", RELEASE_TOKEN)?;
        Ok(Backend {
            own,
            root,
            devices: BTreeMap::new(),
            stats: BackendStats::default(),
            published: None,
            rescan: true,
            domain_released: false,
            fired: BTreeSet::new(),
            connects: BTreeMap::new(),
            deferred: BTreeSet::new(),
            deferred_due: 0,
            released: BTreeSet::new(),
            to_forget: Vec::new(),
        })
    }

    /// The counters so far: attaches, connections, refusals and ends by reason.
    pub fn stats(&self) -> BackendStats {
        self.stats
    }

    /// A watch fired: remembers what it names, for the next [`Self::service`].
    pub fn watch_fired(&mut self, path: &str, token: &str) {
        let named = match token {
            ROOT_TOKEN => {
                let rest = path
                    .strip_prefix(self.root.as_str())
                    .and_then(|rest| rest.strip_prefix('/'));
                let mut parts = rest.unwrap_or("").splitn(3, '/');
                let (client, devid, node) = (parts.next(), parts.next(), parts.next());
                // The echo of a node only we write: nothing new to look at.
                if node.is_some_and(|n| WRITTEN_BY_US.contains(&n)) {
                    return;
                }
                client.zip(devid).and_then(|(client, devid)| {
                    rdv::parse_backend_entry(client.as_bytes(), devid.as_bytes()).ok()
                })
            }
            RELEASE_TOKEN => {
                self.domain_released = true;
                return;
            }
            other => parse_frontend_token(other),
        };
        match named {
            Some(k) if self.fired.len() < MAX_FIRED => {
                self.fired.insert(k);
            }
            _ => self.rescan = true,
        }
    }

    /// Watch events were lost: look at every device at the next [`Self::service`].
    pub fn request_rescan(&mut self) {
        self.rescan = true;
    }

    /// Handles what the watches reported since the last call: a full rescan, the devices
    /// named by events, released domains, and steps the rate limits postponed.
    pub fn service<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
    ) {
        if core::mem::take(&mut self.rescan) {
            self.fired.clear();
            self.full_rescan(store, connector);
        }
        for k in core::mem::take(&mut self.fired) {
            self.refresh(store, connector, k);
        }
        if core::mem::take(&mut self.domain_released) {
            self.find_gone_domains(store, connector);
        }
        if !self.deferred.is_empty() && store.now_ns() >= self.deferred_due {
            for k in core::mem::take(&mut self.deferred) {
                self.step_limited(store, connector, k);
            }
        }
    }

    /// When [`Self::service`] must run again for postponed steps, if any wait.
    pub fn next_deferred_ns(&self) -> Option<u64> {
        (!self.deferred.is_empty()).then_some(self.deferred_due)
    }

    /// Postpones `k`'s step (counted once per postponement, however many events come
    /// meanwhile); the postponed steps are tried again a little later.
    fn defer(&mut self, now: u64, k: DeviceKey) {
        if self.deferred.is_empty() {
            self.deferred_due = now.saturating_add(DEFERRED_RETRY_NS);
        }
        if self.deferred.insert(k) {
            self.stats.throttled += 1;
        }
    }

    /// Whether work is waiting for [`Self::service`] (events seen, or a rescan asked).
    pub fn has_pending(&self) -> bool {
        self.rescan || self.domain_released || !self.fired.is_empty()
    }

    /// Tenants released since the last call (the loop frees what the services kept).
    pub fn take_released(&mut self) -> Vec<(DomId, ReleaseReason)> {
        core::mem::take(&mut self.to_forget)
    }

    /// The devices that are connected.
    pub fn connected_keys(&self) -> Vec<DeviceKey> {
        self.devices
            .iter()
            .filter(|(_, d)| matches!(d.phase, Phase::Connected(_)))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The first connected device after `after` (the first of all if `None`): walks the
    /// connections without holding a borrow, so a caller can service the backend in between.
    pub fn next_connected(&self, after: Option<DeviceKey>) -> Option<DeviceKey> {
        use core::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.devices
            .range((from, Bound::Unbounded))
            .find(|(_, d)| matches!(d.phase, Phase::Connected(_)))
            .map(|(k, _)| *k)
    }

    /// The connection of a connected device.
    pub fn connection_mut(&mut self, k: DeviceKey) -> Option<&mut C> {
        match &mut self.devices.get_mut(&k)?.phase {
            Phase::Connected(c) => Some(c),
            _ => None,
        }
    }

    /// Every connection.
    pub fn connections_mut(&mut self) -> impl Iterator<Item = (DeviceKey, &mut C)> {
        self.devices
            .iter_mut()
            .filter_map(|(k, d)| match &mut d.phase {
                Phase::Connected(c) => Some((*k, &mut **c)),
                _ => None,
            })
    }

    /// The serving loop ended a connection (`why` is logged): counted by `kind`, BE Closed.
    pub fn end(
        &mut self,
        store: &mut impl BackendStore,
        k: DeviceKey,
        kind: EndKind,
        why: &dyn fmt::Display,
    ) {
        let counter = match kind {
            EndKind::Violation => &mut self.stats.broken,
            EndKind::ClientLetGo => &mut self.stats.client_let_go,
            EndKind::EventStorm => &mut self.stats.event_storms,
            EndKind::PingStorm => &mut self.stats.ping_storms,
        };
        *counter += 1;
        self.close(store, k, &format!("{why}"));
    }

    /// Closes every device (the server is going down): clients see Closing, then Closed.
    pub fn shutdown(&mut self, store: &mut impl BackendStore) {
        let keys: Vec<DeviceKey> = self.devices.keys().copied().collect();
        for k in keys {
            if let Some(dev) = self.devices.get(&k) {
                Self::write_state(store, dev, XenbusState::Closing);
            }
            // Ours, not the peer's doing: printed whatever the device's log budget.
            if self.close_quietly(store, k) {
                store.log(format_args!(
                    "rpc: dom{}/{}: closed: service VM shutting down",
                    k.0, k.1
                ));
            }
        }
    }

    /// Writes the totals to `data/xenrpc-totals` when they changed, so the toolstack sees
    /// every counted refusal (`xenrpc list` in dom0 prints them), followed by `extra`
    /// counters of the caller's. Cheap when nothing changed: call it every pass.
    pub fn publish_totals(&mut self, store: &mut impl BackendStore, extra: &[(&'static str, u64)]) {
        if let Some((stats, published_extra)) = &self.published {
            if *stats == self.stats && published_extra.as_slice() == extra {
                return;
            }
        }
        let value = self.totals_line(extra);
        match store.write(rdv::totals_path(self.own).as_str(), value.as_bytes()) {
            Ok(()) => self.published = Some((self.stats, extra.to_vec())),
            Err(e) => store.log(format_args!("rpc: publishing the totals failed: {e}")),
        }
    }

    fn totals_line(&self, extra: &[(&'static str, u64)]) -> String {
        let mut line = format!("{}", self.stats);
        for (name, value) in extra {
            line += &format!(" {name}={value}");
        }
        line
    }

    fn write_state(store: &mut impl BackendStore, dev: &Device<C>, state: XenbusState) {
        let path = rdv::key_path(&dev.be_dir, key::STATE);
        let value = format!("{}", state as u32);
        if let Err(e) = store.write(path.as_str(), value.as_bytes()) {
            store.log(format_args!(
                "rpc: dom{}/{}: writing state {value} failed: {e}",
                dev.client, dev.devid
            ));
        }
    }

    /// Prints a line a peer's device caused, within that device's log budget; lines over it
    /// are counted (`log_suppressed`), and the first says so.
    fn dev_log(&mut self, store: &mut impl BackendStore, k: DeviceKey, line: fmt::Arguments<'_>) {
        let now = store.now_ns();
        let verdict = match self.devices.get_mut(&k) {
            Some(dev) => dev.log.judge(now),
            None => LogVerdict::Print,
        };
        match verdict {
            LogVerdict::Print => store.log(line),
            LogVerdict::PrintAfterSuppressing(n) => {
                store.log(format_args!(
                    "rpc: dom{}/{}: {n} lines about this device were suppressed",
                    k.0, k.1
                ));
                store.log(line);
            }
            LogVerdict::StartSuppressing => {
                self.stats.log_suppressed += 1;
                store.log(format_args!(
                    "rpc: dom{}/{}: too many lines about this device: suppressing them for a while",
                    k.0, k.1
                ));
            }
            LogVerdict::Suppress => self.stats.log_suppressed += 1,
        }
    }

    /// Brings our view in line with xenstore: new devices, removed devices, state changes.
    fn full_rescan<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
    ) {
        let mut listed = Vec::new();
        for client in list(store, self.root.as_str()) {
            for devid in list(store, &format!("{}/{client}", self.root)) {
                match rdv::parse_backend_entry(client.as_bytes(), devid.as_bytes()) {
                    Ok((c, d)) if c != self.own => listed.push((c, d)),
                    Ok(_) => {}
                    Err(e) => {
                        self.stats.refused_entry += 1;
                        store.log(format_args!(
                            "rpc: ignoring backend entry {client}/{devid}: {e}"
                        ));
                    }
                }
            }
        }
        let gone: Vec<DeviceKey> = self
            .devices
            .keys()
            .filter(|k| !listed.contains(k))
            .copied()
            .collect();
        for k in gone {
            self.remove(store, k);
        }
        for k in listed {
            if !self.devices.contains_key(&k) {
                self.add(store, k);
            }
        }
        let keys: Vec<DeviceKey> = self.devices.keys().copied().collect();
        for k in keys {
            self.step_limited(store, connector, k);
        }
    }

    /// One device a watch named: added, removed or stepped.
    fn refresh<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
        k: DeviceKey,
    ) {
        if k.0 == self.own {
            return;
        }
        let listed = match store.read(rdv::backend_dir(self.own, k.0, k.1).as_str()) {
            Ok(v) => v.is_some(),
            Err(StoreError::NotFound) => false,
            Err(e) => {
                store.log(format_args!(
                    "rpc: dom{}/{}: reading the backend entry failed: {e}",
                    k.0, k.1
                ));
                return;
            }
        };
        match (listed, self.devices.contains_key(&k)) {
            (false, true) => self.remove(store, k),
            (true, false) => {
                self.add(store, k);
                self.step_limited(store, connector, k);
            }
            (true, true) => self.step_limited(store, connector, k),
            (false, false) => {}
        }
    }

    /// The toolstack removed a device's backend entry.
    fn remove(&mut self, store: &mut impl BackendStore, k: DeviceKey) {
        let Some(dev) = self.devices.remove(&k) else {
            return;
        };
        self.deferred.remove(&k);
        if !dev.capped {
            self.stats.detached += 1;
            store.log(format_args!(
                "rpc: dom{}/{}: backend entry removed",
                k.0, k.1
            ));
        }
        if let Some(token) = &dev.watch_token {
            store.unwatch(rdv::key_path(&dev.fe_dir, key::STATE).as_str(), token);
        }
        // Dropping the device drops any connection: unmaps, closes the ports.
        drop(dev);
        if !self.devices.keys().any(|d| d.0 == k.0) {
            self.release(k.0, ReleaseReason::DeviceRemoved);
            // Nothing of that domain is left: whoever comes with its id next is new.
            self.released.remove(&k.0);
            self.connects.remove(&k.0);
        }
    }

    /// A tenant went: counted and queued for the loop, once per tenancy.
    fn release(&mut self, client: DomId, why: ReleaseReason) {
        if !self.released.insert(client) {
            return;
        }
        self.stats.tenants_released += 1;
        self.to_forget.push((client, why));
    }

    /// After `@releaseDomain`: releases every domain with devices here that no longer
    /// exists, and steps its devices.
    fn find_gone_domains<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
    ) {
        let mut domains: Vec<DomId> = self.devices.keys().map(|k| k.0).collect();
        domains.dedup();
        for client in domains {
            if !self.release_if_gone(store, client) {
                continue;
            }
            let keys: Vec<DeviceKey> = self
                .devices
                .keys()
                .filter(|k| k.0 == client)
                .copied()
                .collect();
            for k in keys {
                self.step_limited(store, connector, k);
            }
        }
    }

    /// Releases `client` if its domain is gone: none of its frontend directories can be read
    /// (dom0 never goes). Asked after `@releaseDomain`, and whenever a frontend vanishes (an
    /// unprivileged server may not be sent `@releaseDomain`). True if released now.
    fn release_if_gone(&mut self, store: &mut impl BackendStore, client: DomId) -> bool {
        if client == 0 || self.released.contains(&client) {
            return false;
        }
        let dirs: Vec<rdv::Path> = self
            .devices
            .values()
            .filter(|d| d.client == client)
            .map(|d| d.fe_dir.clone())
            .collect();
        let exists = dirs.iter().any(|dir| {
            !matches!(
                store.read(dir.as_str()),
                Ok(None) | Err(StoreError::NotFound | StoreError::AccessDenied)
            )
        });
        if exists {
            return false;
        }
        self.release(client, ReleaseReason::DomainGone);
        true
    }

    fn add(&mut self, store: &mut impl BackendStore, k: DeviceKey) {
        let (client, devid) = k;
        let mut dev = Device::new(self.own, client, devid);
        let devices_of_domain = self
            .devices
            .values()
            .filter(|d| d.client == client && !d.capped)
            .count();
        if devices_of_domain >= MAX_DEVICES_PER_DOMAIN {
            self.stats.refused_cap += 1;
            dev.capped = true;
            Self::write_state(store, &dev, XenbusState::Closed);
            self.devices.insert(k, dev);
            self.dev_log(
                store,
                k,
                format_args!(
                    "rpc: dom{client}/{devid}: refused: domain {client} already has \
                     {MAX_DEVICES_PER_DOMAIN} devices"
                ),
            );
            return;
        }
        match dev.check_entry(store) {
            Err(why) => {
                self.stats.refused_frontend += 1;
                Self::write_state(store, &dev, XenbusState::Closed);
                self.devices.insert(k, dev);
                self.dev_log(
                    store,
                    k,
                    format_args!("rpc: dom{client}/{devid}: refused: {why}"),
                );
            }
            Ok(()) => {
                let token = frontend_token(k);
                let state_path = rdv::key_path(&dev.fe_dir, key::STATE);
                let watched = store.watch(state_path.as_str(), &token);
                let _ = store.write(
                    rdv::key_path(&dev.be_dir, key::MAX_PAGES).as_str(),
                    MAX_PAGES_ADVERTISED,
                );
                let _ = store.write(
                    rdv::key_path(&dev.be_dir, key::PROTOCOL).as_str(),
                    rdv::PROTOCOL.as_bytes(),
                );
                Self::write_state(store, &dev, XenbusState::InitWait);
                dev.phase = Phase::InitWait;
                self.stats.attached += 1;
                match watched {
                    Ok(()) => dev.watch_token = Some(token),
                    Err(e) => store.log(format_args!(
                        "rpc: dom{client}/{devid}: watching the frontend failed: {e}"
                    )),
                }
                self.devices.insert(k, dev);
                self.dev_log(
                    store,
                    k,
                    format_args!("rpc: dom{client}/{devid}: attached, waiting for the client"),
                );
            }
        }
    }

    /// Closes `k` (BE Closed, any connection dropped); whether it was live (offered or
    /// connected).
    fn close_quietly(&mut self, store: &mut impl BackendStore, k: DeviceKey) -> bool {
        let Some(dev) = self.devices.get_mut(&k) else {
            return false;
        };
        let was_live = matches!(dev.phase, Phase::Connected(_) | Phase::InitWait);
        // Drops any connection: unmaps, closes the ports.
        dev.phase = Phase::Closed;
        if let Some(dev) = self.devices.get(&k) {
            Self::write_state(store, dev, XenbusState::Closed);
        }
        was_live
    }

    fn close(&mut self, store: &mut impl BackendStore, k: DeviceKey, why: &str) {
        if self.close_quietly(store, k) {
            self.dev_log(
                store,
                k,
                format_args!("rpc: dom{}/{}: closed: {why}", k.0, k.1),
            );
            let totals = format!("rpc: totals: {}", self.stats);
            self.dev_log(store, k, format_args!("{totals}"));
        }
    }
}

/// A directory's children; a failure other than a missing node is logged, and empty.
fn list(store: &mut impl BackendStore, path: &str) -> Vec<String> {
    match store.directory(path) {
        Ok(entries) => entries,
        Err(StoreError::NotFound) => Vec::new(),
        Err(e) => {
            store.log(format_args!("rpc: listing {path} failed: {e}"));
            Vec::new()
        }
    }
}
