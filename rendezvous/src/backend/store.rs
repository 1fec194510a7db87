//! What the backend needs from its environment: a small xenstore, a clock and a log. The
//! service VM implements it over its xenstore client; the client crate's fake service VM
//! over an in-memory store; [`super::mock`] is one for tests.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Why a xenstore operation failed, as far as the backend cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The node does not exist.
    NotFound,
    /// We may not read or write the node (for a frontend: its domain is gone, or never let us).
    AccessDenied,
    /// Anything else, in the store's words.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("no such node"),
            StoreError::AccessDenied => f.write_str("access denied"),
            StoreError::Other(why) => f.write_str(why),
        }
    }
}

/// The backend's view of xenstore, its clock and its log.
pub trait BackendStore {
    /// A node's value; `None` if it does not exist.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a node's value, creating it if needed.
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), StoreError>;
    /// A node's children; empty if it does not exist.
    fn directory(&mut self, path: &str) -> Result<Vec<String>, StoreError>;
    /// Watches `path`; each change must reach [`super::Backend::watch_fired`] with `token`.
    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError>;
    /// Removes the watch [`Self::watch`] set on `path` with `token`.
    fn unwatch(&mut self, path: &str, token: &str);
    /// Monotonic nanoseconds.
    fn now_ns(&mut self) -> u64;
    /// One log line.
    fn log(&mut self, line: fmt::Arguments<'_>);
}

/// What the frontend published for its connection, read once and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendParams {
    /// `index-ref`: the grant reference of the index page.
    pub index_ref: u32,
    /// `event-channel`: the client's unbound port for the server.
    pub event_channel: u32,
    /// `ping-event-channel`, if the client wrote one: the port the server bounces events on.
    pub ping_event_channel: Option<u32>,
}

/// Turns a frontend's published values into a live connection (maps the pages, binds the
/// ports), or says why not.
pub trait Connector {
    /// A live connection, owned by the backend while the device is connected.
    type Connection;
    /// Connects device `devid` of domain `client` with what its frontend published.
    fn connect(
        &mut self,
        client: crate::DomId,
        devid: u32,
        params: FrontendParams,
    ) -> Result<Self::Connection, String>;
    /// What the "connected (...)" log line says about a connection.
    fn describe(&self, connection: &Self::Connection) -> String;
}
