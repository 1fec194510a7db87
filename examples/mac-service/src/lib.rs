//! # mac-service: message authentication with a key that never leaves the VM
//!
//! A platform's guests ask this service to MAC a message and later to check a MAC; none of
//! them ever holds a key. The service derives one key per calling domain from a master key,
//! so a MAC made for domain A does not verify for domain B, and domain B cannot make MACs
//! that pass as A's.
//!
//! - **Master key.** Provisioned by the toolstack as secret `mac-key` (16 to 64 bytes): in
//!   the service VM the hex value of the xenstore node `data/xenrpc/secret/mac-key`, written
//!   before the VM is unpaused and removed by the VM once read; on the host
//!   `xenrpc-hostd --secret mac-key=FILE`. Without one the service makes a random key from
//!   the platform's randomness (RDRAND in the VM) and says so: MACs then die with the VM.
//! - **Per-client keys.** `HKDF-SHA256(salt = "xenrpc mac-service v1", ikm = master)`,
//!   expanded with info `"client" || domid (u32 LE) || tenancy (u64 LE)`. The tenancy number
//!   changes when a client domain goes away (the server calls `forget_peer`), so a later
//!   domain given the same domid is a different client.
//! - **MACs.** HMAC-SHA256 over the message bytes (sent out of line); verification compares in
//!   constant time. No method returns a key; `key_info` returns a fingerprint of the master
//!   key (HMAC of a fixed label under it), enough to tell which key a VM holds.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use xenrpc_proto::{
    define_pod, define_service, BytesIn, CallContext, PeerId, ServiceEnv, ServiceUnavailable,
    Status,
};

define_pod! {
    /// An HMAC-SHA256 tag.
    pub struct Tag {
        pub tag: [u8; 32],
    }

    /// The answer of `verify`: 1 if the tag is the caller's MAC of the message, else 0.
    pub struct Verdict {
        pub valid: u32,
    }

    /// Which master key the service holds: a fingerprint (not the key) and how it came.
    pub struct KeyInfo {
        pub fingerprint: [u8; 8],
        /// 1 if the toolstack provisioned it, 0 if it was made at random at start.
        pub provisioned: u32,
        pub reserved: u32,
    }
}

define_service! {
    /// MACs under one derived key per client domain; the keys never leave the service.
    pub mod mac {
        name = "mac", id = 1100, version = 1;
        /// HMAC-SHA256 of the message under the caller's key.
        fn sign = 1 ((), message: bytes) -> Tag;
        /// Whether `tag` is the caller's MAC of the message (compared in constant time).
        fn verify = 2 (Tag, message: bytes) -> Verdict;
        /// Which master key is loaded (a fingerprint) and whether it was provisioned.
        fn key_info = 3 (()) -> KeyInfo;
    }
}

/// The secret the toolstack provisions the master key as.
pub const KEY_SECRET: &str = "mac-key";
/// Shortest and longest provisioned master key, in bytes.
pub const KEY_LEN: core::ops::RangeInclusive<usize> = 16..=64;

const SALT: &[u8] = b"xenrpc mac-service v1";

/// The service: the master key's HKDF state and each live client's tenancy number.
pub struct MacService {
    kdf: Hkdf<Sha256>,
    fingerprint: [u8; 8],
    provisioned: bool,
    /// One entry per client seen and not yet gone (bounded by the number of domains).
    tenancies: BTreeMap<PeerId, u64>,
    next_tenancy: u64,
}

impl MacService {
    /// The service under `master` (input key material; `provisioned` says where it came
    /// from, for `key_info`).
    pub fn new(master: &[u8], provisioned: bool) -> Self {
        let kdf = Hkdf::<Sha256>::new(Some(SALT), master);
        let mut fingerprint = [0u8; 8];
        let mut okm = [0u8; 32];
        kdf.expand(b"fingerprint", &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        fingerprint.copy_from_slice(&okm[..8]);
        MacService {
            kdf,
            fingerprint,
            provisioned,
            tenancies: BTreeMap::new(),
            next_tenancy: 1,
        }
    }

    /// The HMAC of `peer`'s current tenancy, ready for the message.
    fn mac_for(&mut self, peer: PeerId) -> Hmac<Sha256> {
        let next = &mut self.next_tenancy;
        let tenancy = *self.tenancies.entry(peer).or_insert_with(|| {
            let t = *next;
            *next += 1;
            t
        });
        let mut info = [0u8; 6 + 4 + 8];
        info[..6].copy_from_slice(b"client");
        info[6..10].copy_from_slice(&peer.0.to_le_bytes());
        info[10..].copy_from_slice(&tenancy.to_le_bytes());
        let mut key = [0u8; 32];
        self.kdf
            .expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        let mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
        key.fill(0);
        mac
    }
}

/// Feeds the message, read once chunk by chunk out of the shared window, to `mac`.
fn absorb(mac: &mut Hmac<Sha256>, message: &BytesIn<'_>) -> Result<(), Status> {
    message.for_each_chunk(|chunk| {
        mac.update(chunk);
        Ok::<(), Status>(())
    })
}

impl mac::Server for MacService {
    fn sign(
        &mut self,
        call: &mut CallContext<'_>,
        _: (),
        message: &BytesIn<'_>,
    ) -> Result<Tag, Status> {
        let mut mac = self.mac_for(call.peer());
        absorb(&mut mac, message)?;
        Ok(Tag {
            tag: mac.finalize().into_bytes().into(),
        })
    }

    fn verify(
        &mut self,
        call: &mut CallContext<'_>,
        tag: Tag,
        message: &BytesIn<'_>,
    ) -> Result<Verdict, Status> {
        let mut mac = self.mac_for(call.peer());
        absorb(&mut mac, message)?;
        let valid = mac.verify_slice(&tag.tag).is_ok();
        Ok(Verdict {
            valid: u32::from(valid),
        })
    }

    fn key_info(&mut self, _: &mut CallContext<'_>, _: ()) -> Result<KeyInfo, Status> {
        Ok(KeyInfo {
            fingerprint: self.fingerprint,
            provisioned: u32::from(self.provisioned),
            reserved: 0,
        })
    }

    fn forget_peer(&mut self, peer: PeerId) {
        // The next domain with this id is another client: it gets a new tenancy, so keys.
        self.tenancies.remove(&peer);
    }
}

/// The service set for `env`: the provisioned `mac-key`, or a random key if none was
/// provisioned; unavailable if a provisioned key is malformed or no key can be had.
pub fn services(env: &ServiceEnv<'_>) -> Result<mac::Handler<MacService>, ServiceUnavailable> {
    let unavailable = |why| ServiceUnavailable {
        service: mac::NAME,
        why,
    };
    let mut key = [0u8; 64];
    let service = match env.take_secret(KEY_SECRET, &mut key) {
        Ok(Some(n)) if KEY_LEN.contains(&n) => {
            env.log(format_args!("mac: using the provisioned {n}-byte key"));
            MacService::new(&key[..n], true)
        }
        Ok(Some(_)) => {
            return Err(unavailable(
                "the provisioned mac-key must be 16 to 64 bytes",
            ))
        }
        Err(e) => {
            env.log(format_args!("mac: cannot take mac-key: {e}"));
            return Err(unavailable("the provisioned mac-key cannot be read"));
        }
        Ok(None) => {
            if env.fill_random(&mut key[..32]).is_err() {
                return Err(unavailable(
                    "no mac-key was provisioned and there is no randomness to make one",
                ));
            }
            env.log(format_args!(
                "mac: no mac-key provisioned: using a random key (MACs die with this VM)"
            ));
            MacService::new(&key[..32], false)
        }
    };
    key.fill(0);
    Ok(mac::Handler(service))
}

#[cfg(test)]
mod tests;
