//! The kv server: one namespace per peer, every entry charged its footprint against the peer's
//! quota and the store's [`KvBudget`].

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::*;
use crate::transport::PeerId;
use crate::{BytesIn, BytesOut, CallContext, Status};

#[derive(Default)]
struct Namespace {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Footprints of the entries plus [`NAMESPACE_OVERHEAD`].
    bytes: usize,
}

/// The kv server: one namespace per peer, bounded per peer and in total.
pub struct KvStore {
    namespaces: BTreeMap<PeerId, Namespace>,
    budget: KvBudget,
    /// Bytes charged over all namespaces (the sum of their `bytes`).
    used_bytes: usize,
    used_entries: usize,
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A private buffer holding `len` bytes, or `Busy` if the heap has no room for it.
fn try_buffer(len: usize) -> Result<Vec<u8>, Status> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| Status::Busy)?;
    buffer.resize(len, 0);
    Ok(buffer)
}

impl KvStore {
    /// A store with the default budget ([`KvBudget::default`]).
    pub fn new() -> Self {
        Self::with_budget(KvBudget::default())
    }

    /// A store whose entries together stay within `budget`.
    pub fn with_budget(budget: KvBudget) -> Self {
        KvStore {
            namespaces: BTreeMap::new(),
            budget,
            used_bytes: 0,
            used_entries: 0,
        }
    }

    /// The limits the whole store stays within.
    pub fn budget(&self) -> KvBudget {
        self.budget
    }

    /// (bytes, entries) charged over all peers.
    pub fn usage(&self) -> (usize, usize) {
        (self.used_bytes, self.used_entries)
    }

    /// Drops a peer's namespace (the tenant went away) and gives its bytes back to the budget.
    pub fn forget_peer(&mut self, peer: PeerId) {
        if let Some(ns) = self.namespaces.remove(&peer) {
            self.used_bytes -= ns.bytes;
            self.used_entries -= ns.entries.len();
        }
    }

    /// Entries stored for `peer`.
    pub fn entries(&self, peer: PeerId) -> usize {
        self.namespaces.get(&peer).map_or(0, |ns| ns.entries.len())
    }

    /// Bytes charged to `peer` (0 if it stores nothing).
    pub fn bytes(&self, peer: PeerId) -> usize {
        self.namespaces.get(&peer).map_or(0, |ns| ns.bytes)
    }

    /// Checks that storing a `value_len`-byte value under `key` for `peer` keeps within the
    /// peer's quota and the budget; the bytes the peer will be charged then.
    fn admit(&self, peer: PeerId, key: &[u8], value_len: usize) -> Result<usize, Status> {
        let ns = self.namespaces.get(&peer);
        let old = ns.and_then(|ns| ns.entries.get(key));
        let entries = ns.map_or(0, |ns| ns.entries.len()) + usize::from(old.is_none());
        let charged = ns.map_or(NAMESPACE_OVERHEAD, |ns| ns.bytes);
        let freed = old.map_or(0, |v| entry_footprint(key.len(), v.len()));
        let peer_bytes = charged - freed + entry_footprint(key.len(), value_len);
        let total_bytes = self.used_bytes - ns.map_or(0, |ns| ns.bytes) + peer_bytes;
        let total_entries = self.used_entries + usize::from(old.is_none());
        if entries > MAX_ENTRIES_PER_PEER
            || peer_bytes > MAX_BYTES_PER_PEER
            || total_entries > self.budget.max_entries
            || total_bytes > self.budget.max_bytes
        {
            return Err(Status::Busy);
        }
        Ok(peer_bytes)
    }
}

fn key_of(key: &Key) -> Result<&[u8], Status> {
    key.as_slice().ok_or(Status::BadArguments)
}

impl kv::Server for KvStore {
    fn forget_peer(&mut self, peer: PeerId) {
        KvStore::forget_peer(self, peer);
    }

    fn put(
        &mut self,
        call: &mut CallContext<'_>,
        key: Key,
        data: &BytesIn<'_>,
    ) -> Result<(), Status> {
        let key = key_of(&key)?;
        let len = data.len();
        if len > MAX_VALUE_LEN {
            return Err(Status::TooLarge);
        }
        let peer = call.peer();
        // Nothing is allocated or stored unless the whole entry fits.
        let peer_bytes = self.admit(peer, key, len)?;
        // The one copy out of shared memory; the stored value is this private copy.
        let mut value = try_buffer(len)?;
        data.read(0, &mut value)?;
        let existing = self.namespaces.get(&peer);
        let before = existing.map_or(0, |ns| ns.bytes);
        // A new key's buffer too is allocated before the namespace is touched.
        let new_key = if existing.is_some_and(|ns| ns.entries.contains_key(key)) {
            None
        } else {
            let mut owned = try_buffer(key.len())?;
            owned.copy_from_slice(key);
            Some(owned)
        };
        let ns = self.namespaces.entry(peer).or_default();
        match new_key {
            Some(owned) => {
                ns.entries.insert(owned, value);
                self.used_entries += 1;
            }
            None => {
                if let Some(slot) = ns.entries.get_mut(key) {
                    *slot = value;
                }
            }
        }
        ns.bytes = peer_bytes;
        self.used_bytes = self.used_bytes - before + peer_bytes;
        Ok(())
    }

    fn get(
        &mut self,
        call: &mut CallContext<'_>,
        key: Key,
        out: &mut BytesOut<'_>,
    ) -> Result<ValueInfo, Status> {
        let key = key_of(&key)?;
        let Some(value) = self
            .namespaces
            .get(&call.peer())
            .and_then(|ns| ns.entries.get(key))
        else {
            return Ok(ValueInfo { found: 0, len: 0 });
        };
        out.write_all(value)?;
        Ok(ValueInfo {
            found: 1,
            len: value.len() as u32,
        })
    }

    fn delete(&mut self, call: &mut CallContext<'_>, key: Key) -> Result<Existed, Status> {
        let key = key_of(&key)?;
        let peer = call.peer();
        let Some(ns) = self.namespaces.get_mut(&peer) else {
            return Ok(Existed { existed: 0 });
        };
        let Some(value) = ns.entries.remove(key) else {
            return Ok(Existed { existed: 0 });
        };
        let freed = entry_footprint(key.len(), value.len());
        ns.bytes -= freed;
        self.used_bytes -= freed;
        self.used_entries -= 1;
        if ns.entries.is_empty() {
            // The last entry: the namespace (and its root node) goes too.
            self.used_bytes -= ns.bytes;
            self.namespaces.remove(&peer);
        }
        Ok(Existed { existed: 1 })
    }

    fn list(
        &mut self,
        call: &mut CallContext<'_>,
        args: ListArgs,
        out: &mut BytesOut<'_>,
    ) -> Result<KeyList, Status> {
        let Some(ns) = self.namespaces.get(&call.peer()) else {
            return Ok(KeyList::default());
        };
        let mut written = 0u32;
        for key in ns.entries.keys().skip(args.skip as usize) {
            if 4 + key.len() > out.remaining() {
                break;
            }
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
            written += 1;
        }
        let at = out.written();
        Ok(KeyList {
            written,
            total: ns.entries.len() as u32,
            bytes: at as u32,
        })
    }
}
