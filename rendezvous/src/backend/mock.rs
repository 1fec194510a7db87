//! An in-memory [`BackendStore`] for tests (feature `mock`): nodes without permissions,
//! watches that fire on a change to their path or anything below it, nodes that can be made
//! unreadable, a clock the test sets, and the log kept as lines.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::store::{BackendStore, Connector, FrontendParams, StoreError};
use super::Backend;
use crate::DomId;

/// The mock xenstore.
#[derive(Default)]
pub struct MockStore {
    nodes: BTreeMap<String, Vec<u8>>,
    watches: Vec<(String, String)>,
    events: VecDeque<(String, String)>,
    denied: BTreeSet<String>,
    /// The clock, in nanoseconds: set by the test.
    pub now_ns: u64,
    /// Every line logged.
    pub log: Vec<String>,
    /// Reads, writes and listings served (what a rescan costs).
    pub operations: u64,
}

fn under(path: &str, watched: &str) -> bool {
    path == watched
        || (path.starts_with(watched) && path.as_bytes().get(watched.len()) == Some(&b'/'))
}

impl MockStore {
    /// An empty store: no nodes, no watches, the clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the watches on `path`, above it, and (a removal) below it.
    fn fire(&mut self, path: &str) {
        for (watched, token) in &self.watches {
            if under(path, watched) {
                self.events.push_back((path.to_string(), token.clone()));
            } else if under(watched, path) {
                self.events.push_back((watched.clone(), token.clone()));
            }
        }
    }

    /// Writes a node as a peer or the toolstack would (fires watches).
    pub fn set(&mut self, path: &str, value: &str) {
        self.nodes
            .insert(path.to_string(), value.as_bytes().to_vec());
        self.fire(path);
    }

    /// Removes a node and everything below it (fires watches).
    pub fn remove_tree(&mut self, path: &str) {
        self.nodes.retain(|p, _| !under(p, path));
        self.fire(path);
    }

    /// Reading `path` (and below) gets `AccessDenied` from now on.
    pub fn deny(&mut self, path: &str) {
        self.denied.insert(path.to_string());
    }

    /// A node's value as text.
    pub fn get(&self, path: &str) -> Option<String> {
        self.nodes
            .get(path)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Fires `@releaseDomain` (a domain was destroyed).
    pub fn release_domain(&mut self) {
        self.fire("@releaseDomain");
    }

    /// Watch events not yet delivered.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Delivers every queued watch event to `backend`.
    pub fn deliver<C>(&mut self, backend: &mut Backend<C>) {
        while let Some((path, token)) = self.events.pop_front() {
            backend.watch_fired(&path, &token);
        }
    }

    /// Log lines containing `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log.iter().filter(|l| l.contains(text)).count()
    }

    fn check(&self, path: &str) -> Result<(), StoreError> {
        if self.denied.iter().any(|d| under(path, d)) {
            return Err(StoreError::AccessDenied);
        }
        Ok(())
    }
}

impl BackendStore for MockStore {
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.operations += 1;
        self.check(path)?;
        if let Some(v) = self.nodes.get(path) {
            return Ok(Some(v.clone()));
        }
        // A directory exists if anything is below it (xenstore creates parents).
        let prefix = format!("{path}/");
        if self.nodes.keys().any(|p| p.starts_with(&prefix)) {
            return Ok(Some(Vec::new()));
        }
        Ok(None)
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.operations += 1;
        self.check(path)?;
        self.nodes.insert(path.to_string(), value.to_vec());
        self.fire(path);
        Ok(())
    }

    fn directory(&mut self, path: &str) -> Result<Vec<String>, StoreError> {
        self.operations += 1;
        self.check(path)?;
        let prefix = format!("{path}/");
        let mut children: Vec<String> = self
            .nodes
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        children.dedup();
        Ok(children)
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.watches.push((path.to_string(), token.to_string()));
        // xenstore fires a new watch once at once.
        self.events.push_back((path.to_string(), token.to_string()));
        Ok(())
    }

    fn unwatch(&mut self, path: &str, token: &str) {
        self.watches.retain(|(p, t)| !(p == path && t == token));
    }

    fn now_ns(&mut self) -> u64 {
        self.now_ns
    }

    fn log(&mut self, line: fmt::Arguments<'_>) {
        self.log.push(format!("{line}"));
    }
}

/// A connection of [`MockConnector`]: what the frontend published.
#[derive(Debug, PartialEq, Eq)]
pub struct MockConnection {
    /// The client domain.
    pub client: DomId,
    /// The device id.
    pub devid: u32,
    /// What the frontend published.
    pub params: FrontendParams,
}

/// A [`Connector`] that accepts every frontend unless told to refuse, and counts connects
/// (each one stands for mapping a whole connection).
#[derive(Default)]
pub struct MockConnector {
    /// Refuse every connect with this reason.
    pub refuse: Option<String>,
    /// Connects accepted so far.
    pub connects: u64,
}

impl Connector for MockConnector {
    type Connection = MockConnection;

    fn connect(
        &mut self,
        client: DomId,
        devid: u32,
        params: FrontendParams,
    ) -> Result<MockConnection, String> {
        if let Some(why) = &self.refuse {
            return Err(why.clone());
        }
        self.connects += 1;
        Ok(MockConnection {
            client,
            devid,
            params,
        })
    }

    fn describe(&self, connection: &MockConnection) -> String {
        format!("index page {}", connection.params.index_ref)
    }
}
