//! The kv service: a small key-value store with one namespace per peer id (the transport's
//! peer id, never a value from the message). Keys travel inline, values out of line.
//!
//! The server (`KvStore`, feature `alloc`) bounds memory twice: each peer's entries and bytes
//! (so one client cannot take everyone's share), and the whole store's ([`KvBudget`], sized
//! from the heap, so many clients together cannot exhaust it). Both charge an entry its real
//! heap footprint ([`entry_footprint`]: the key and value buffers with allocator slack, and
//! the entry's share of the B-tree nodes), not just its bytes. Over either limit a put gets
//! `Busy`, as does a put whose buffers cannot be allocated (`try_reserve`); nothing panics. A
//! peer's namespace is freed when the transport reports the tenant gone
//! (`Registry::forget_peer`), giving its bytes back: a later tenant with the same id finds
//! nothing.

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most entries one peer may store.
pub const MAX_ENTRIES_PER_PEER: usize = 256;
/// Most bytes one peer's entries may take (their footprints, namespace included).
pub const MAX_BYTES_PER_PEER: usize = 256 * 1024;

// What one entry really costs on the heap, derived from the layout of what stores it: a
// `BTreeMap<Vec<u8>, Vec<u8>>` per peer, inside a `BTreeMap<PeerId, Namespace>`.
//
// - The key and the value are each a heap block (an empty value none). An allocator adds up
//   to ALLOC_SLACK per block: glibc malloc an 8-byte header and rounding to 16 (at least 32
//   bytes); the kernel's linked-list allocator rounding to 8 (at least 16). 16 + 15 bounds
//   both.
// - The tree: a leaf node is `parent` (8) + `parent_idx`, `len` (2 + 2, padded to 8) + 11 keys
//   + 11 values (two `Vec`s, 24 bytes each: 528) = 544 bytes; an internal node adds 12 edge
//   pointers (96): 640. Every node but the root holds at least 5 entries (std's B = 6,
//   MIN_LEN = B - 1), so an entry's share of the nodes is at most (640 + slack) / 5.
// - The root of a namespace may hold a single entry: charged once per namespace
//   (NAMESPACE_OVERHEAD), with the namespace's own slot in the peers' map (4-byte key, 32-byte
//   value: its share of a 504-byte internal node, over 5).
const ALLOC_SLACK: usize = 16 + 15;
/// Heap blocks are handed out in multiples of this (the coarsest of the allocators above).
const ALLOC_GRANULE: usize = 16;
const BTREE_MIN_LEN: usize = 5;
const BTREE_INTERNAL_NODE: usize = 640;
const NODE_SHARE: usize = (BTREE_INTERNAL_NODE + ALLOC_SLACK).div_ceil(BTREE_MIN_LEN);
/// Bytes charged per entry on top of its key and value (two blocks' slack and a node share).
pub const ENTRY_OVERHEAD: usize = 2 * ALLOC_SLACK + NODE_SHARE;
/// Bytes charged once per peer that stores anything (its root node and its slot in the
/// peers' map).
pub const NAMESPACE_OVERHEAD: usize =
    round_up(BTREE_INTERNAL_NODE + ALLOC_SLACK + (504 + ALLOC_SLACK).div_ceil(BTREE_MIN_LEN));

const fn round_up(n: usize) -> usize {
    n.div_ceil(ALLOC_GRANULE) * ALLOC_GRANULE
}

/// What an entry with a `key_len`-byte key and a `value_len`-byte value is charged.
pub const fn entry_footprint(key_len: usize, value_len: usize) -> usize {
    round_up(key_len + value_len + ENTRY_OVERHEAD)
}

/// The smallest entry's footprint (a one-byte key, an empty value).
pub const MIN_ENTRY_FOOTPRINT: usize = entry_footprint(1, 0);

/// The kv store's memory limits for the whole VM (all peers together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvBudget {
    /// Most bytes all entries may take (footprints, namespaces included).
    pub max_bytes: usize,
    /// Most entries over all peers.
    pub max_entries: usize,
}

impl KvBudget {
    /// Heap a host process assumes for [`KvBudget::default`].
    pub const DEFAULT_HEAP_BYTES: usize = 256 << 20;

    /// The budget for a heap of `heap_bytes`: a quarter of it, so that connections (ring and
    /// mapping bookkeeping), log buffers and transient call buffers keep three quarters; and as
    /// many entries as that many bytes can hold at the smallest footprint, so the byte budget
    /// is what binds for the default and a caller can only make the entry count stricter.
    pub const fn for_heap(heap_bytes: usize) -> Self {
        let max_bytes = heap_bytes / 4;
        KvBudget {
            max_bytes,
            max_entries: max_bytes / MIN_ENTRY_FOOTPRINT,
        }
    }
}

impl KvBudget {
    /// The budget for where the store is served: [`KvBudget::for_heap`] of the environment's
    /// memory; the parameter `kv-budget=<bytes>` lowers the byte budget, never past what that
    /// memory allows. Logs `kv budget <bytes> bytes, <entries> entries`, and why a parameter
    /// was ignored.
    pub fn from_env(env: &crate::ServiceEnv<'_>) -> Self {
        let mut budget = Self::for_heap(env.memory_bytes());
        if let Some(value) = env.param("kv-budget") {
            match value.parse::<usize>() {
                Ok(bytes) if bytes <= budget.max_bytes => budget.max_bytes = bytes,
                Ok(bytes) => env.log(format_args!(
                    "kv-budget={bytes} exceeds a quarter of the memory; keeping {}",
                    budget.max_bytes
                )),
                Err(_) => env.log(format_args!(
                    "ignoring kv-budget={value}: not a number of bytes"
                )),
            }
        }
        env.log(format_args!(
            "kv budget {} bytes, {} entries",
            budget.max_bytes, budget.max_entries
        ));
        budget
    }
}

impl Default for KvBudget {
    fn default() -> Self {
        Self::for_heap(Self::DEFAULT_HEAP_BYTES)
    }
}

#[cfg(feature = "alloc")]
mod store;
#[cfg(feature = "alloc")]
pub use store::KvStore;

crate::define_pod! {
    /// A key (the first `len` bytes of `bytes`; `len` must be `1..=MAX_KEY_LEN`).
    pub struct Key {
        /// How many bytes of `bytes` are the key, `1..=MAX_KEY_LEN`.
        pub len: u32,
        /// The key's bytes, then padding (zero when built by [`Key::new`]).
        pub bytes: [u8; MAX_KEY_LEN],
    }
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

crate::define_pod! {
    /// Result of `get`: whether the key exists and the value's length (written to the result
    /// window when it fits).
    #[derive(Default)]
    pub struct ValueInfo {
        /// 1 if the key exists, 0 if not.
        pub found: u32,
        /// The value's length in bytes (0 if not found).
        pub len: u32,
    }
}

crate::define_pod! {
    /// Result of `delete`.
    #[derive(Default)]
    pub struct Existed {
        /// 1 if the key existed (and is now gone), 0 if not.
        pub existed: u32,
    }
}

crate::define_pod! {
    /// Arguments of `list`: skip the first `skip` keys (in key order).
    #[derive(Default)]
    pub struct ListArgs {
        /// Keys to skip from the start of the key order.
        pub skip: u32,
    }
}

crate::define_pod! {
    /// Result of `list`: `written` keys were written to the result window as records of a
    /// little-endian u32 length followed by the key bytes (`bytes` in all), out of `total` keys.
    #[derive(Default)]
    pub struct KeyList {
        /// Keys written into the result window.
        pub written: u32,
        /// Keys the caller has in all.
        pub total: u32,
        /// Bytes of records written into the result window.
        pub bytes: u32,
    }
}

crate::define_service! {
    /// Per-peer key-value store.
    pub mod kv {
        name = "kv", id = 3, version = 1;
        /// Stores the argument window as the key's value (`TooLarge` past `MAX_VALUE_LEN`,
        /// `Busy` when the peer's quota is used up).
        fn put = 1 (Key, value: bytes) -> ();
        /// Writes the value into the result window (`TooLarge` if it does not fit).
        fn get = 2 (Key) -> ValueInfo, value: bytes;
        /// Removes the key and its value, giving their footprint back to the peer's quota.
        fn delete = 3 (Key) -> Existed;
        /// Lists keys into the result window, as many as fit.
        fn list = 4 (ListArgs) -> KeyList, keys: bytes;
    }
}

pub use kv::*;
