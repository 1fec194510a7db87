//! The kv service: a small key-value store with one namespace per peer id (the transport's
//! peer id, never a value from the message). Keys travel inline, values out of line. The
//! server (`KvStore`, feature `alloc`) bounds key and value sizes and each peer's entries and
//! bytes, so one client cannot exhaust the server's memory for the others.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most entries one peer may store.
pub const MAX_ENTRIES_PER_PEER: usize = 256;
/// Most key + value bytes one peer may store.
pub const MAX_BYTES_PER_PEER: usize = 256 * 1024;

/// A key (the first `len` bytes of `bytes`; `len` must be `1..=MAX_KEY_LEN`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Key {
    pub len: u32,
    pub bytes: [u8; MAX_KEY_LEN],
}

impl Key {
    /// `None` if `key` is empty or longer than [`MAX_KEY_LEN`].
    pub fn new(key: &[u8]) -> Option<Self> {
        if key.is_empty() {
            return None;
        }
        let mut value = Key {
            len: key.len() as u32,
            bytes: [0; MAX_KEY_LEN],
        };
        value.bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(value)
    }

    /// The key bytes, or `None` if `len` is out of range (a peer wrote it).
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self.len as usize {
            0 => None,
            n => self.bytes.get(..n),
        }
    }
}

/// Result of `get`: whether the key exists and the value's length (written to the result
/// window when it fits).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ValueInfo {
    pub found: u32,
    pub len: u32,
}

/// Result of `delete`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Existed {
    pub existed: u32,
}

/// Arguments of `list`: skip the first `skip` keys (in key order).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ListArgs {
    pub skip: u32,
}

/// Result of `list`: `written` keys were written to the result window as records of a
/// little-endian u32 length followed by the key bytes (`bytes` in all), out of `total` keys.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct KeyList {
    pub written: u32,
    pub total: u32,
    pub bytes: u32,
}

crate::define_service! {
    /// Per-peer key-value store.
    pub mod kv {
        name = "kv", id = 3, version = 1;
        /// Stores the argument window as the key's value (`TooLarge` past `MAX_VALUE_LEN`,
        /// `Busy` when the peer's quota is used up).
        fn put = 1 (Key) -> ();
        /// Writes the value into the result window (`TooLarge` if it does not fit).
        fn get = 2 (Key) -> ValueInfo;
        fn delete = 3 (Key) -> Existed;
        /// Lists keys into the result window, as many as fit.
        fn list = 4 (ListArgs) -> KeyList;
    }
}

pub use kv::*;

#[cfg(feature = "alloc")]
pub use store::KvStore;

#[cfg(feature = "alloc")]
mod store {
    extern crate alloc;

    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::transport::PeerId;
    use crate::{CallContext, Status};

    #[derive(Default)]
    struct Namespace {
        entries: BTreeMap<Vec<u8>, Vec<u8>>,
        bytes: usize,
    }

    /// The kv server: one namespace per peer.
    #[derive(Default)]
    pub struct KvStore {
        namespaces: BTreeMap<PeerId, Namespace>,
    }

    impl KvStore {
        pub fn new() -> Self {
            Self::default()
        }

        /// Drops a peer's namespace (when its last connection closes).
        pub fn forget_peer(&mut self, peer: PeerId) {
            self.namespaces.remove(&peer);
        }

        /// Entries stored for `peer`.
        pub fn entries(&self, peer: PeerId) -> usize {
            self.namespaces.get(&peer).map_or(0, |ns| ns.entries.len())
        }
    }

    fn key_of(key: &Key) -> Result<&[u8], Status> {
        key.as_slice().ok_or(Status::BadArguments)
    }

    impl kv::Server for KvStore {
        fn forget_peer(&mut self, peer: PeerId) {
            KvStore::forget_peer(self, peer);
        }

        fn put(&mut self, call: &mut CallContext<'_>, key: Key) -> Result<(), Status> {
            let key = key_of(&key)?;
            let len = call.ool_args().len();
            if len > MAX_VALUE_LEN {
                return Err(Status::TooLarge);
            }
            // The one copy out of shared memory; the stored value is this private copy.
            let mut value = vec![0u8; len];
            call.ool_args().read(0, &mut value)?;
            let ns = self.namespaces.entry(call.peer()).or_default();
            let old = ns.entries.get(key).map_or(0, |v| key.len() + v.len());
            let is_new = old == 0;
            let bytes = ns.bytes - old + key.len() + value.len();
            if (is_new && ns.entries.len() >= MAX_ENTRIES_PER_PEER) || bytes > MAX_BYTES_PER_PEER {
                return Err(Status::Busy);
            }
            ns.bytes = bytes;
            ns.entries.insert(key.to_vec(), value);
            Ok(())
        }

        fn get(&mut self, call: &mut CallContext<'_>, key: Key) -> Result<ValueInfo, Status> {
            let key = key_of(&key)?;
            let Some(value) = self
                .namespaces
                .get(&call.peer())
                .and_then(|ns| ns.entries.get(key))
            else {
                return Ok(ValueInfo { found: 0, len: 0 });
            };
            call.ool_result().write(0, value)?;
            Ok(ValueInfo {
                found: 1,
                len: value.len() as u32,
            })
        }

        fn delete(&mut self, call: &mut CallContext<'_>, key: Key) -> Result<Existed, Status> {
            let key = key_of(&key)?;
            let Some(ns) = self.namespaces.get_mut(&call.peer()) else {
                return Ok(Existed { existed: 0 });
            };
            match ns.entries.remove(key) {
                Some(value) => {
                    ns.bytes -= key.len() + value.len();
                    Ok(Existed { existed: 1 })
                }
                None => Ok(Existed { existed: 0 }),
            }
        }

        fn list(&mut self, call: &mut CallContext<'_>, args: ListArgs) -> Result<KeyList, Status> {
            let Some(ns) = self.namespaces.get(&call.peer()) else {
                return Ok(KeyList::default());
            };
            let window = call.ool_result();
            let (mut written, mut at) = (0u32, 0usize);
            for key in ns.entries.keys().skip(args.skip as usize) {
                let record = 4 + key.len();
                if at + record > window.capacity() {
                    break;
                }
                window.write(at, &(key.len() as u32).to_le_bytes())?;
                window.write(at + 4, key)?;
                at += record;
                written += 1;
            }
            Ok(KeyList {
                written,
                total: ns.entries.len() as u32,
                bytes: at as u32,
            })
        }
    }
}
