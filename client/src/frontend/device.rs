//! This domain's devices as xenstore shows them: where a device lives and whom it talks to,
//! and one look at its backend's state.

use xenrpc_rendezvous::{self as rv, key, XenbusState};

use crate::devices::DomId;
use crate::error::{Error, Result};
use crate::xenstore::{read_text, Xenstore, NO_TX};

/// Where this domain's device lives and whom it talks to, read from xenstore and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// This domain's id.
    pub self_id: DomId,
    /// The service VM's domid (`backend-id`).
    pub server: DomId,
    /// The device id.
    pub devid: u32,
    /// The frontend directory's path.
    pub frontend: String,
    /// The backend directory's path (checked against what `backend` names).
    pub backend: String,
}

/// Reads and parses a node a peer wrote; `None` if absent.
fn read_state(store: &mut dyn Xenstore, path: &str) -> Result<Option<XenbusState>> {
    match store.read(NO_TX, path)? {
        None => Ok(None),
        Some(v) => rv::parse_state(&v)
            .map(Some)
            .map_err(|e| Error::Protocol(format!("{path}: {e}"))),
    }
}

/// This domain's id, from the relative xenstore node `domid`.
pub fn own_domid(store: &mut dyn Xenstore) -> Result<DomId> {
    let value = store
        .read(NO_TX, "domid")?
        .ok_or_else(|| Error::Protocol("xenstore has no `domid` node for this domain".into()))?;
    rv::parse_domid(&value).map_err(|e| Error::Protocol(format!("domid: {e}")))
}

/// Finds device `devid` of this domain and checks what dom0 wrote for it.
pub fn find_device(store: &mut dyn Xenstore, devid: u32) -> Result<DeviceInfo> {
    let self_id = own_domid(store)?;
    let frontend = rv::frontend_dir(self_id, devid).to_string();
    let backend_key = rv::key_path(&rv::frontend_dir(self_id, devid), key::BACKEND).to_string();
    let backend_id_key =
        rv::key_path(&rv::frontend_dir(self_id, devid), key::BACKEND_ID).to_string();
    let Some(backend) = store.read(NO_TX, &backend_key)? else {
        return Err(Error::NotAttached(format!(
            "{frontend} does not exist: run `xenrpc attach <server> {self_id} {devid}` in dom0"
        )));
    };
    let server = store
        .read(NO_TX, &backend_id_key)?
        .ok_or_else(|| Error::NotAttached(format!("{backend_id_key} is missing")))?;
    let server =
        rv::parse_domid(&server).map_err(|e| Error::Protocol(format!("{backend_id_key}: {e}")))?;
    rv::check_backend_path(&backend, server, self_id, devid)
        .map_err(|e| Error::Protocol(format!("{backend_key}: {e}")))?;
    Ok(DeviceInfo {
        self_id,
        server,
        devid,
        frontend,
        backend: rv::backend_dir(server, self_id, devid).to_string(),
    })
}

/// Where the backend is, as seen in one look at xenstore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BackendLook {
    Gone,
    Offline,
    State(XenbusState),
}

impl BackendLook {
    /// What the backend is, for messages ("it is {label}").
    pub(super) fn label(self) -> &'static str {
        match self {
            BackendLook::Gone => "gone",
            BackendLook::Offline => "offline",
            BackendLook::State(s) => crate::admin::state_label(s),
        }
    }
}

pub(super) fn look_at_backend(store: &mut dyn Xenstore, info: &DeviceInfo) -> Result<BackendLook> {
    let state = match read_state(store, &format!("{}/{}", info.backend, key::STATE)) {
        Ok(state) => state,
        // The backend directory grants us read access for as long as it exists; a missing
        // node below the server's vanished home reads as EACCES (its nearest existing
        // ancestor, /local/domain, is dom0's), not ENOENT.
        Err(e) if e.is_access_denied() => None,
        Err(e) => return Err(e),
    };
    let Some(state) = state else {
        return Ok(BackendLook::Gone);
    };
    if let Some(online) = store.read(NO_TX, &format!("{}/{}", info.backend, key::ONLINE))? {
        if online.as_slice() != b"1" {
            return Ok(BackendLook::Offline);
        }
    }
    Ok(BackendLook::State(state))
}

pub(super) fn backend_failure(look: BackendLook, info: &DeviceInfo) -> Option<Error> {
    match look {
        BackendLook::Gone => Some(Error::ServerGone(format!("{} vanished", info.backend))),
        BackendLook::Offline => Some(Error::ServerClosed),
        BackendLook::State(XenbusState::Closing) | BackendLook::State(XenbusState::Closed) => {
            Some(Error::ServerClosed)
        }
        BackendLook::State(_) => None,
    }
}

/// One of this domain's xenrpc devices, as xenstore shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnDevice {
    /// The device id.
    pub devid: u32,
    /// The frontend's raw `state` value; `None` if absent.
    pub frontend_state: Option<String>,
    /// The backend's raw `state` value; `None` if absent or the device names no valid
    /// backend.
    pub backend_state: Option<String>,
}

/// Reads this domain's xenrpc devices (for `list` in a guest).
pub fn list_own_devices(store: &mut dyn Xenstore) -> Result<Vec<OwnDevice>> {
    let self_id = own_domid(store)?;
    let dir = format!("/local/domain/{self_id}/device/{}", rv::DEVICE_TYPE);
    let mut out = Vec::new();
    for name in store.directory(NO_TX, &dir)?.unwrap_or_default() {
        let Ok(devid) = rv::parse_decimal(name.as_bytes(), rv::DEVID_MAX) else {
            continue;
        };
        let fe = read_text(store, NO_TX, &format!("{dir}/{name}/{}", key::STATE))?;
        let be = match find_device(store, devid) {
            Ok(info) => read_text(store, NO_TX, &format!("{}/{}", info.backend, key::STATE))?,
            Err(_) => None,
        };
        out.push(OwnDevice {
            devid,
            frontend_state: fe,
            backend_state: be,
        });
    }
    Ok(out)
}
