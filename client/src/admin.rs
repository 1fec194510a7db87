//! The toolstack side of docs/rendezvous.md, run in dom0: `attach` writes the frontend and
//! backend directories with their permissions, `detach` closes and removes them, and
//! [`list_connections`] reads every xenrpc connection back.

use std::time::{Duration, Instant};

use xen_abi::xenstore::{Access, Permission};
use xenrpc_rendezvous::{self as rv, key, XenbusState};

use crate::devices::DomId;
use crate::error::{Error, Result};
use crate::xenstore::{in_transaction, read_text, TxId, Xenstore, NO_TX};

/// Validates the numbers of an attach or detach request.
fn check_ids(server: u32, client: u32, devid: u32) -> Result<(DomId, DomId)> {
    for (what, id) in [("server", server), ("client", client)] {
        if id > rv::DOMID_MAX {
            return Err(Error::BadArguments(format!(
                "{what} domid {id} is not a domain (max {})",
                rv::DOMID_MAX
            )));
        }
    }
    if server == client {
        return Err(Error::BadArguments(format!(
            "server and client are the same domain ({server})"
        )));
    }
    if devid > rv::DEVID_MAX {
        return Err(Error::BadArguments(format!(
            "devid {devid} out of range (max {})",
            rv::DEVID_MAX
        )));
    }
    Ok((server as DomId, client as DomId))
}

fn domain_exists(store: &mut dyn Xenstore, tx: TxId, domid: DomId) -> Result<bool> {
    Ok(store
        .directory(tx, &format!("/local/domain/{domid}"))?
        .is_some())
}

/// Creates `path` with `perms` if it does not exist yet (intermediate directories).
fn ensure_dir(store: &mut dyn Xenstore, tx: TxId, path: &str, perms: &[Permission]) -> Result<()> {
    if store.read(tx, path)?.is_none() {
        store.mkdir(tx, path)?;
        store.set_perms(tx, path, perms)?;
    }
    Ok(())
}

/// Writes `dir/key = value` and gives the node `perms` (a new node would inherit its parent's,
/// but setting them explicitly does not depend on the store's inheritance rules).
fn write_key(
    store: &mut dyn Xenstore,
    tx: TxId,
    dir: &str,
    name: &str,
    value: &str,
    perms: &[Permission],
) -> Result<()> {
    let path = format!("{dir}/{name}");
    store.write(tx, &path, value.as_bytes())?;
    store.set_perms(tx, &path, perms)
}

/// The permissions docs/rendezvous.md gives the frontend directory: owned by the client,
/// readable by the server.
pub fn frontend_perms(server: DomId, client: DomId) -> [Permission; 2] {
    [
        Permission::new(Access::None, client),
        Permission::new(Access::Read, server),
    ]
}

/// The permissions docs/rendezvous.md gives the backend directory: owned by the server,
/// readable by the client.
pub fn backend_perms(server: DomId, client: DomId) -> [Permission; 2] {
    [
        Permission::new(Access::None, server),
        Permission::new(Access::Read, client),
    ]
}

/// What `attach` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The service VM's domid.
    pub server: DomId,
    /// The client guest's domid.
    pub client: DomId,
    /// The device id (0 to [`DEVID_MAX`](xenrpc_rendezvous::DEVID_MAX)).
    pub devid: u32,
    /// The frontend directory's path.
    pub frontend: String,
    /// The backend directory's path.
    pub backend: String,
}

/// Writes both directories for a new connection (step 1 of the handshake), atomically.
pub fn attach(store: &mut dyn Xenstore, server: u32, client: u32, devid: u32) -> Result<Attached> {
    let (server, client) = check_ids(server, client, devid)?;
    let frontend = rv::frontend_dir(client, devid).to_string();
    let backend = rv::backend_dir(server, client, devid).to_string();
    in_transaction(store, 8, |s, tx| {
        for domid in [server, client] {
            if !domain_exists(s, tx, domid)? {
                return Err(Error::BadArguments(format!(
                    "domain {domid} does not exist (no /local/domain/{domid})"
                )));
            }
        }
        for dir in [&frontend, &backend] {
            if s.read(tx, dir)?.is_some() {
                return Err(Error::BadArguments(format!(
                    "{dir} already exists: device {devid} of domain {client} is attached (detach it first)"
                )));
            }
        }
        // Parents this tool may be the first to create: readable by the domain they belong to.
        let client_home = format!("/local/domain/{client}");
        let server_home = format!("/local/domain/{server}");
        let dom0_owned_readable_by = |d: DomId| {
            [
                Permission::new(Access::None, 0),
                Permission::new(Access::Read, d),
            ]
        };
        ensure_dir(
            s,
            tx,
            &format!("{client_home}/device"),
            &dom0_owned_readable_by(client),
        )?;
        ensure_dir(
            s,
            tx,
            &format!("{client_home}/device/{}", rv::DEVICE_TYPE),
            &dom0_owned_readable_by(client),
        )?;
        ensure_dir(
            s,
            tx,
            &format!("{server_home}/backend"),
            &dom0_owned_readable_by(server),
        )?;
        ensure_dir(
            s,
            tx,
            &rv::backend_root(server).to_string(),
            &dom0_owned_readable_by(server),
        )?;
        ensure_dir(
            s,
            tx,
            &format!("{}/{client}", rv::backend_root(server)),
            &dom0_owned_readable_by(server),
        )?;

        let fe = frontend_perms(server, client);
        s.mkdir(tx, &frontend)?;
        s.set_perms(tx, &frontend, &fe)?;
        write_key(s, tx, &frontend, key::BACKEND, &backend, &fe)?;
        write_key(s, tx, &frontend, key::BACKEND_ID, &server.to_string(), &fe)?;
        write_key(
            s,
            tx,
            &frontend,
            key::STATE,
            XenbusState::Initialising.as_str(),
            &fe,
        )?;

        let be = backend_perms(server, client);
        s.mkdir(tx, &backend)?;
        s.set_perms(tx, &backend, &be)?;
        write_key(s, tx, &backend, key::FRONTEND, &frontend, &be)?;
        write_key(s, tx, &backend, key::FRONTEND_ID, &client.to_string(), &be)?;
        write_key(s, tx, &backend, key::ONLINE, "1", &be)?;
        write_key(
            s,
            tx,
            &backend,
            key::STATE,
            XenbusState::Initialising.as_str(),
            &be,
        )?;
        Ok(())
    })?;
    Ok(Attached {
        server,
        client,
        devid,
        frontend,
        backend,
    })
}

/// How `detach` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    /// The service VM's domid.
    pub server: DomId,
    /// The client guest's domid.
    pub client: DomId,
    /// The device id.
    pub devid: u32,
    /// Whether the server acknowledged (backend Closed) before the directories were removed.
    pub server_acknowledged: bool,
    /// Why the directories were removed without the server's acknowledgement, if they were.
    pub note: Option<String>,
}

/// Closes a connection and removes both directories. The server is asked to close first
/// (BE online = 0, state Closing) and given `timeout` to reach Closed; if it does not and
/// `force` is not set, the directories stay and the error says so. A server domain that no
/// longer exists cannot answer, so its directories are removed at once.
pub fn detach(
    store: &mut dyn Xenstore,
    server: u32,
    client: u32,
    devid: u32,
    timeout: Duration,
    force: bool,
) -> Result<Detached> {
    let (server, client) = check_ids(server, client, devid)?;
    let frontend = rv::frontend_dir(client, devid).to_string();
    let backend = rv::backend_dir(server, client, devid).to_string();
    let be_state = format!("{backend}/{}", key::STATE);
    if store.read(NO_TX, &backend)?.is_none() && store.read(NO_TX, &frontend)?.is_none() {
        return Err(Error::NotAttached(format!(
            "neither {backend} nor {frontend} exists"
        )));
    }
    let mut acknowledged = false;
    let mut note = None;
    if store.read(NO_TX, &backend)?.is_some() {
        if domain_exists(store, NO_TX, server)? {
            // A backend already Closed has no live connection: offline is all it takes (the
            // server then does not offer the device again). Otherwise ask the server to close.
            let idle = in_transaction(store, 8, |s, tx| {
                write_key(
                    s,
                    tx,
                    &backend,
                    key::ONLINE,
                    "0",
                    &backend_perms(server, client),
                )?;
                let state = s.read(tx, &be_state)?;
                let closed = XenbusState::Closed.as_str().as_bytes();
                if state.as_deref() == Some(closed) {
                    return Ok(true);
                }
                if state.is_some() {
                    s.write(tx, &be_state, XenbusState::Closing.as_str().as_bytes())?;
                }
                Ok(false)
            })?;
            if idle {
                note = Some("no live connection (backend was Closed)".to_string());
            }
            let token = "xenrpc-detach";
            store.watch(&be_state, token)?;
            let deadline = Instant::now() + timeout;
            loop {
                let state = store.read(NO_TX, &be_state)?;
                if state.as_deref() == Some(XenbusState::Closed.as_str().as_bytes())
                    || state.is_none()
                {
                    acknowledged = true;
                    break;
                }
                if store.next_event(deadline)?.is_none() {
                    break;
                }
            }
            let _ = store.unwatch(&be_state, token);
            if !acknowledged {
                if !force {
                    return Err(Error::DeadlineExceeded(format!(
                        "server {server} did not close {backend} within {:.1} s (it is left \
                         Closing; `detach --force` removes it anyway)",
                        timeout.as_secs_f64()
                    )));
                }
                note = Some(format!(
                    "server did not close within {:.1} s; removed anyway (--force)",
                    timeout.as_secs_f64()
                ));
            }
        } else {
            note = Some(format!("server domain {server} no longer exists"));
        }
    } else {
        note = Some(format!(
            "{backend} was already gone (server domain destroyed?)"
        ));
    }
    in_transaction(store, 8, |s, tx| {
        s.rm(tx, &frontend)?;
        s.rm(tx, &backend)?;
        // Drop the per-client directory under the server's backend tree once it is empty.
        let client_dir = format!("{}/{client}", rv::backend_root(server));
        if s.directory(tx, &client_dir)?.is_some_and(|d| d.is_empty()) {
            s.rm(tx, &client_dir)?;
        }
        Ok(())
    })?;
    Ok(Detached {
        server,
        client,
        devid,
        server_acknowledged: acknowledged,
        note,
    })
}

/// One connection as xenstore shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRow {
    /// The service VM's domid.
    pub server: DomId,
    /// The client guest's domid.
    pub client: DomId,
    /// The device id.
    pub devid: u32,
    /// The backend's `state`, as "4 (Connected)" (the raw value if it is no XenbusState);
    /// `None` if absent or unreadable.
    pub backend_state: Option<String>,
    /// The frontend's `state`, written as `backend_state` is.
    pub frontend_state: Option<String>,
    /// The backend's `online` value.
    pub online: Option<String>,
    /// The frontend's `event-channel` value.
    pub event_channel: Option<String>,
    /// The frontend's `index-ref` value.
    pub index_ref: Option<String>,
    /// The backend's `max-pages` value.
    pub max_pages: Option<String>,
    /// Problems with what the directories hold (a peer may have written anything).
    pub problems: Vec<String>,
}

fn state_name(raw: Option<String>, problems: &mut Vec<String>, what: &str) -> Option<String> {
    let raw = raw?;
    match rv::parse_state(raw.as_bytes()) {
        Ok(s) => Some(format!("{} ({})", raw, state_label(s))),
        Err(_) => {
            problems.push(format!("{what} state \"{raw}\" is not a XenbusState"));
            Some(raw)
        }
    }
}

/// A XenbusState's name.
pub fn state_label(state: XenbusState) -> &'static str {
    match state {
        XenbusState::Unknown => "Unknown",
        XenbusState::Initialising => "Initialising",
        XenbusState::InitWait => "InitWait",
        XenbusState::Initialised => "Initialised",
        XenbusState::Connected => "Connected",
        XenbusState::Closing => "Closing",
        XenbusState::Closed => "Closed",
        XenbusState::Reconfiguring => "Reconfiguring",
        XenbusState::Reconfigured => "Reconfigured",
    }
}

/// A service VM's running totals (attaches, connections, refusals and ends by reason), as it
/// publishes them; `None` if it has published none. The service VM wrote them, so they are
/// checked: `name=count` words only, within a length bound.
pub fn server_totals(store: &mut dyn Xenstore, server: DomId) -> Result<Option<String>> {
    let path = rv::totals_path(server).to_string();
    let Some(raw) = store.read(NO_TX, &path)? else {
        return Ok(None);
    };
    let well_formed = raw.len() <= rv::TOTALS_MAX_LEN
        && std::str::from_utf8(&raw).is_ok_and(|text| {
            text.split(' ').all(|word| {
                word.split_once('=').is_some_and(|(name, count)| {
                    !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        && rv::parse_decimal(count.as_bytes(), u32::MAX).is_ok()
                })
            })
        });
    if !well_formed {
        return Err(Error::Protocol(format!(
            "{path}: not a list of name=count words ({} bytes)",
            raw.len()
        )));
    }
    Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
}

/// Every xenrpc connection of every domain (dom0's view: all backend directories).
pub fn list_connections(store: &mut dyn Xenstore) -> Result<Vec<ConnectionRow>> {
    let mut rows = Vec::new();
    for server_name in store.directory(NO_TX, "/local/domain")?.unwrap_or_default() {
        let Ok(server) = rv::parse_domid(server_name.as_bytes()) else {
            continue;
        };
        let root = rv::backend_root(server).to_string();
        for client_name in store.directory(NO_TX, &root)?.unwrap_or_default() {
            let Ok(client) = rv::parse_domid(client_name.as_bytes()) else {
                continue;
            };
            for dev_name in store
                .directory(NO_TX, &format!("{root}/{client_name}"))?
                .unwrap_or_default()
            {
                let Ok(devid) = rv::parse_decimal(dev_name.as_bytes(), rv::DEVID_MAX) else {
                    continue;
                };
                rows.push(read_row(store, server, client, devid)?);
            }
        }
    }
    Ok(rows)
}

fn read_row(
    store: &mut dyn Xenstore,
    server: DomId,
    client: DomId,
    devid: u32,
) -> Result<ConnectionRow> {
    let backend = rv::backend_dir(server, client, devid).to_string();
    let frontend = rv::frontend_dir(client, devid).to_string();
    let mut problems = Vec::new();
    let mut text = |s: &mut dyn Xenstore, path: String| -> Result<Option<String>> {
        match read_text(s, NO_TX, &path) {
            Ok(v) => Ok(v),
            Err(Error::Protocol(why)) => {
                problems.push(why);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    let be_state = text(store, format!("{backend}/{}", key::STATE))?;
    let fe_state = text(store, format!("{frontend}/{}", key::STATE))?;
    let online = text(store, format!("{backend}/{}", key::ONLINE))?;
    let event_channel = text(store, format!("{frontend}/{}", key::EVENT_CHANNEL))?;
    let index_ref = text(store, format!("{frontend}/{}", key::INDEX_REF))?;
    let max_pages = text(store, format!("{backend}/{}", key::MAX_PAGES))?;
    let fe_value = text(store, format!("{backend}/{}", key::FRONTEND))?;
    if fe_value
        .as_deref()
        .is_some_and(|v| rv::check_frontend_path(v.as_bytes(), client, devid).is_err())
    {
        problems.push(format!("{backend}/frontend does not name {frontend}"));
    }
    if store.read(NO_TX, &frontend)?.is_none() {
        problems.push(format!("{frontend} is missing"));
    }
    let backend_state = state_name(be_state, &mut problems, "backend");
    let frontend_state = state_name(fe_state, &mut problems, "frontend");
    Ok(ConnectionRow {
        server,
        client,
        devid,
        backend_state,
        frontend_state,
        online,
        event_channel,
        index_ref,
        max_pages,
        problems,
    })
}
