//! One device's step through the XenbusState handshake (docs/rendezvous.md): what its
//! frontend's state asks for (offer, connect, close, start over), rate-limited per device, and
//! the toolstack's detach.

use alloc::boxed::Box;
use alloc::format;

use super::device::Phase;
use super::{Backend, BackendStore, Connector, DeviceKey, ReleaseReason, StoreError};
use crate::limits::RateLimit;
use crate::{self as rdv, key, XenbusState};

impl<C> Backend<C> {
    /// Steps `k` if its rate allows, else postpones it (counted).
    pub(super) fn step_limited<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
        k: DeviceKey,
    ) {
        let now = store.now_ns();
        let Some(dev) = self.devices.get_mut(&k) else {
            return;
        };
        if dev.capped {
            return;
        }
        if dev.steps.allow(now) {
            self.step(store, connector, k);
        } else {
            self.defer(now, k);
        }
    }

    pub(super) fn step<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
        k: DeviceKey,
    ) {
        let Some(dev) = self.devices.get(&k) else {
            return;
        };
        let online = store
            .read(rdv::key_path(&dev.be_dir, key::ONLINE).as_str())
            .ok()
            .flatten();
        if online.as_deref() == Some(b"0") {
            self.detach(store, k);
            return;
        }
        let closed = matches!(dev.phase, Phase::Closed);
        let fe_state = match store.read(rdv::key_path(&dev.fe_dir, key::STATE).as_str()) {
            Ok(Some(v)) => rdv::parse_state(&v).ok(),
            Ok(None) | Err(StoreError::NotFound) => None,
            // A closed device is left alone until the toolstack removes it or the frontend
            // starts over; only a live one reports that its frontend became unreadable.
            Err(_) if closed => None,
            Err(e) => {
                self.dev_log(
                    store,
                    k,
                    format_args!(
                        "rpc: dom{}/{}: reading the frontend state failed: {e}",
                        k.0, k.1
                    ),
                );
                None
            }
        };
        if fe_state.is_none() {
            self.release_if_gone(store, k.0);
        }
        let Some(dev) = self.devices.get(&k) else {
            return;
        };
        match (&dev.phase, fe_state) {
            (Phase::InitWait, Some(XenbusState::Initialised | XenbusState::Connected)) => {
                let now = store.now_ns();
                let connects = self.connects.entry(k.0).or_insert(RateLimit::connects());
                if connects.allow(now) {
                    self.connect(store, connector, k);
                } else {
                    self.defer(now, k);
                }
            }
            (Phase::InitWait, None) => {
                self.stats.client_gone += 1;
                self.close(store, k, "frontend vanished");
            }
            (Phase::Connected(_), Some(XenbusState::Closing | XenbusState::Closed)) => {
                self.stats.closed_by_client += 1;
                self.close(store, k, "client closed");
            }
            (Phase::Connected(_), None) => {
                self.stats.client_gone += 1;
                self.close(store, k, "client gone");
            }
            (Phase::Connected(_), Some(XenbusState::Initialising | XenbusState::InitWait)) => {
                // The client restarted (it crashed, or dropped a stale session): tear the old
                // connection down and offer the device again at once; no further watch event
                // is coming to prompt it.
                self.stats.closed_by_client += 1;
                self.close(store, k, "client restarted");
                self.offer_again(store, k);
            }
            (Phase::Closed, Some(XenbusState::Initialising)) => self.offer_again(store, k),
            _ => {}
        }
    }

    /// The toolstack took the device offline (`online` = 0): closed, and the tenant released
    /// once all its devices are.
    pub(super) fn detach(&mut self, store: &mut impl BackendStore, k: DeviceKey) {
        let Some(dev) = self.devices.get_mut(&k) else {
            return;
        };
        dev.detached = true;
        if !matches!(dev.phase, Phase::Closed) {
            self.stats.detached += 1;
            self.close(store, k, "detached by the toolstack");
        }
        let all_detached = self
            .devices
            .values()
            .filter(|d| d.client == k.0 && !d.capped)
            .all(|d| d.detached);
        if all_detached {
            self.release(k.0, ReleaseReason::Detached);
        }
    }

    /// The client starts over (reconnect): offer the device again (BE InitWait).
    pub(super) fn offer_again(&mut self, store: &mut impl BackendStore, k: DeviceKey) {
        let Some(dev) = self.devices.get_mut(&k) else {
            return;
        };
        dev.phase = Phase::InitWait;
        dev.detached = false;
        if let Some(dev) = self.devices.get(&k) {
            Self::write_state(store, dev, XenbusState::InitWait);
        }
        self.dev_log(
            store,
            k,
            format_args!("rpc: dom{}/{}: client reconnecting", k.0, k.1),
        );
    }

    pub(super) fn connect<S: BackendStore, K: Connector<Connection = C>>(
        &mut self,
        store: &mut S,
        connector: &mut K,
        k: DeviceKey,
    ) {
        let Some(dev) = self.devices.get(&k) else {
            return;
        };
        let result = dev
            .read_frontend_params(store)
            .and_then(|params| connector.connect(k.0, k.1, params));
        match result {
            Ok(conn) => {
                let line = format!(
                    "rpc: dom{}/{}: connected ({})",
                    k.0,
                    k.1,
                    connector.describe(&conn)
                );
                // A connection makes the domain a tenant (again, if it was released).
                self.released.remove(&k.0);
                self.stats.connected += 1;
                if let Some(dev) = self.devices.get_mut(&k) {
                    dev.phase = Phase::Connected(Box::new(conn));
                    dev.detached = false;
                }
                if let Some(dev) = self.devices.get(&k) {
                    Self::write_state(store, dev, XenbusState::Connected);
                }
                self.dev_log(store, k, format_args!("{line}"));
            }
            Err(why) => {
                self.stats.refused_connect += 1;
                self.close(store, k, &format!("refused: {why}"));
            }
        }
    }
}
