//! The service VM's side of `xenrpc_rendezvous::backend`: the xenstore, clock and log it runs
//! over, and the connector that maps a client's pages and binds its ports. The handshake
//! itself (states, limits, tenant release) lives in the rendezvous crate, shared with the
//! client crate's fake service VM and tested on the host.
//!
//! Watch handlers run inside `xenstore::service()`; they only queue (path, token) for the
//! loop, which hands them to the backend. The queue is bounded: past it, one full rescan.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use xen_abi::xenstore::XsErrno;
use xen_abi::DomId;
use xenrpc_rendezvous::backend::{BackendStore, Connector, FrontendParams, StoreError};

use super::connection::Connection;
use crate::log;
use crate::xen::time;
use crate::xen::xenstore::{self, XsError};

/// The backend as the service VM runs it.
pub type Backend = xenrpc_rendezvous::backend::Backend<Connection>;

/// Watch events (path, token) waiting for the loop.
static FIRED: Mutex<VecDeque<(String, String)>> = Mutex::new(VecDeque::new());
/// Set when events had to be dropped from `FIRED`: the loop rescans everything.
static OVERFLOWED: AtomicBool = AtomicBool::new(false);
/// More waiting events than this are dropped (and a rescan asked).
const MAX_FIRED: usize = 1024;

/// Hands the queued watch events to `backend`; asks a full rescan if some were dropped.
pub fn deliver_watch_events(backend: &mut Backend) {
    let events = core::mem::take(&mut *FIRED.lock());
    for (path, token) in events {
        backend.watch_fired(&path, &token);
    }
    if OVERFLOWED.swap(false, Ordering::SeqCst) {
        backend.request_rescan();
    }
}

fn store_error(e: XsError) -> StoreError {
    if e.is(XsErrno::Enoent) {
        StoreError::NotFound
    } else if e.is(XsErrno::Eacces) {
        StoreError::AccessDenied
    } else {
        StoreError::Other(format!("{e}"))
    }
}

/// xenstore, Xen system time and the console.
pub struct KernelStore;

impl BackendStore for KernelStore {
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match xenstore::read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(XsErrno::Enoent) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        xenstore::write(path, value).map_err(store_error)
    }

    fn directory(&mut self, path: &str) -> Result<Vec<String>, StoreError> {
        match xenstore::directory(path) {
            Ok(entries) => Ok(entries),
            Err(e) if e.is(XsErrno::Enoent) => Ok(Vec::new()),
            Err(e) => Err(store_error(e)),
        }
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let owned = token.to_string();
        let handler: xenstore::WatchHandler = Arc::new(move |changed: &str| {
            let mut fired = FIRED.lock();
            if fired.len() < MAX_FIRED {
                fired.push_back((changed.to_string(), owned.clone()));
            } else {
                OVERFLOWED.store(true, Ordering::SeqCst);
            }
        });
        xenstore::watch(path, token, handler).map_err(store_error)
    }

    fn unwatch(&mut self, path: &str, token: &str) {
        let _ = xenstore::unwatch(path, token);
    }

    fn now_ns(&mut self) -> u64 {
        time::now_ns()
    }

    fn log(&mut self, line: fmt::Arguments<'_>) {
        log!("{line}");
    }
}

/// Maps a client's pages into a slot of the foreign-mapping window and binds its ports.
pub struct KernelConnector;

impl Connector for KernelConnector {
    type Connection = Connection;

    fn connect(
        &mut self,
        client: DomId,
        _devid: u32,
        params: FrontendParams,
    ) -> Result<Connection, String> {
        Connection::establish(
            client,
            params.index_ref,
            params.event_channel,
            params.ping_event_channel,
        )
        .map_err(|e| format!("{e}"))
    }

    fn describe(&self, conn: &Connection) -> String {
        format!(
            "{} ring pages, {} data pages{}",
            conn.ring_pages,
            conn.data_pages(),
            if conn.has_ping() { ", ping port" } else { "" }
        )
    }
}
