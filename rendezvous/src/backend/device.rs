//! One device under the backend: where its two directories are, where its handshake stands,
//! and what its limits have left; with the reads that validate what its frontend wrote.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;

use super::store::{BackendStore, FrontendParams, StoreError};
use crate::limits::{LogBudget, RateLimit};
use crate::{self as rdv, key, DomId};

pub(super) enum Phase<C> {
    /// Waiting for the frontend to publish its pages (BE InitWait).
    InitWait,
    Connected(Box<C>),
    /// Closed (BE Closed); waits for the frontend to start over or the toolstack to remove it.
    Closed,
}

pub(super) struct Device<C> {
    pub client: DomId,
    pub devid: u32,
    pub be_dir: rdv::Path,
    pub fe_dir: rdv::Path,
    pub watch_token: Option<String>,
    pub phase: Phase<C>,
    /// Refused for its domain's device cap: never stepped.
    pub capped: bool,
    /// Taken offline by the toolstack (`online` = 0).
    pub detached: bool,
    pub steps: RateLimit,
    pub log: LogBudget,
}

/// Reads a node a peer or the toolstack wrote; a missing node is `None`.
fn read_opt(
    store: &mut impl BackendStore,
    path: &rdv::Path,
) -> Result<Option<alloc::vec::Vec<u8>>, String> {
    match store.read(path.as_str()) {
        Ok(v) => Ok(v),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(format!("{e}")),
    }
}

impl<C> Device<C> {
    pub fn new(own: DomId, client: DomId, devid: u32) -> Self {
        Device {
            client,
            devid,
            be_dir: rdv::backend_dir(own, client, devid),
            fe_dir: rdv::frontend_dir(client, devid),
            watch_token: None,
            phase: Phase::Closed,
            capped: false,
            detached: false,
            steps: RateLimit::steps(),
            log: LogBudget::default(),
        }
    }

    /// The toolstack's entry must name this device's own frontend (id and path).
    pub fn check_entry(&self, store: &mut impl BackendStore) -> Result<(), String> {
        let id = read_opt(store, &rdv::key_path(&self.be_dir, key::FRONTEND_ID))?;
        let id = id.ok_or("no frontend-id")?;
        let id = rdv::parse_domid(&id).map_err(|e| format!("frontend-id: {e}"))?;
        if id != self.client {
            return Err(format!(
                "frontend-id {id} does not match entry {}",
                self.client
            ));
        }
        let fe = read_opt(store, &rdv::key_path(&self.be_dir, key::FRONTEND))?;
        let fe = fe.ok_or("no frontend path")?;
        rdv::check_frontend_path(&fe, self.client, self.devid).map_err(|e| format!("frontend: {e}"))
    }

    /// What the frontend published for its connection, each value read once and checked.
    pub fn read_frontend_params(
        &self,
        store: &mut impl BackendStore,
    ) -> Result<FrontendParams, String> {
        let protocol = read_opt(store, &rdv::key_path(&self.fe_dir, key::PROTOCOL))
            .map_err(|e| format!("protocol: {e}"))?
            .ok_or("protocol missing")?;
        rdv::check_protocol(&protocol).map_err(|e| format!("protocol: {e}"))?;
        let mut read_num = |name: &str, max: u32| -> Result<Option<u32>, String> {
            let v = read_opt(store, &rdv::key_path(&self.fe_dir, name))
                .map_err(|e| format!("{name}: {e}"))?;
            v.map(|v| rdv::parse_decimal(&v, max).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        let ping_event_channel = read_num(key::PING_EVENT_CHANNEL, 4095)?;
        let index_ref = read_num(key::INDEX_REF, u32::MAX)?;
        let event_channel = read_num(key::EVENT_CHANNEL, 4095)?;
        Ok(FrontendParams {
            index_ref: index_ref.ok_or_else(|| format!("{} missing", key::INDEX_REF))?,
            event_channel: event_channel
                .ok_or_else(|| format!("{} missing", key::EVENT_CHANNEL))?,
            ping_event_channel,
        })
    }
}
