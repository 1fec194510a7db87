//! The service in-process (no transport): per-client keys, verification, tenancy, and how
//! the key is obtained.

extern crate std;

use alloc::vec::Vec;
use core::cell::RefCell;

use xenrpc_proto::testing::TestServer;
use xenrpc_proto::{Platform, PlatformError, RegistryError, ServiceEnv, ServiceSet};

use super::*;

/// A platform with one secret (or none) and fixed "randomness".
struct FakePlatform {
    secret: RefCell<Option<Vec<u8>>>,
    random: bool,
}

impl Platform for FakePlatform {
    fn take_secret(&self, name: &str, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        assert_eq!(name, KEY_SECRET);
        Ok(self.secret.borrow_mut().take().map(|s| {
            buf[..s.len()].copy_from_slice(&s);
            s.len()
        }))
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), PlatformError> {
        if !self.random {
            return Err(PlatformError::NoRandomness);
        }
        buf.fill(0x5a);
        Ok(())
    }
}

fn service_with(
    secret: Option<&[u8]>,
    random: bool,
) -> Result<mac::Handler<MacService>, ServiceUnavailable> {
    let platform = FakePlatform {
        secret: RefCell::new(secret.map(<[u8]>::to_vec)),
        random,
    };
    let env = ServiceEnv::new("", 1 << 20).with_platform(&platform);
    services(&env)
}

const KEY: &[u8] = b"a provisioned master key of 32 b";

fn sign(server: &mut TestServer<impl ServiceSet>, peer: u32, message: &[u8]) -> Tag {
    server.set_peer(PeerId(peer));
    mac::Client::new(server).sign(&(), message).unwrap()
}

fn verify(server: &mut TestServer<impl ServiceSet>, peer: u32, tag: Tag, message: &[u8]) -> bool {
    server.set_peer(PeerId(peer));
    mac::Client::new(server)
        .verify(&tag, message)
        .unwrap()
        .valid
        == 1
}

#[test]
fn a_mac_for_one_client_verifies_for_it_alone() {
    let mut server = TestServer::new(service_with(Some(KEY), false).unwrap());
    let message = b"transfer 10 coins to carol";
    let for_a = sign(&mut server, 5, message);
    assert!(verify(&mut server, 5, for_a, message));
    assert!(
        !verify(&mut server, 6, for_a, message),
        "B must not accept A's MAC"
    );
    assert!(!verify(
        &mut server,
        5,
        for_a,
        b"transfer 99 coins to carol"
    ));
    let for_b = sign(&mut server, 6, message);
    assert_ne!(for_a, for_b);
    // Deterministic under one key and tenancy; different under another key.
    assert_eq!(sign(&mut server, 5, message), for_a);
    let mut other =
        TestServer::new(service_with(Some(b"another master key, also 32 b!!!"), false).unwrap());
    assert_ne!(sign(&mut other, 5, message), for_a);
}

#[test]
fn a_mac_is_hmac_sha256_under_the_documented_derivation() {
    let mut server = TestServer::new(service_with(Some(KEY), false).unwrap());
    let tag = sign(&mut server, 7, b"abc");
    // The first tenancy number is 1.
    let kdf = Hkdf::<Sha256>::new(Some(b"xenrpc mac-service v1"), KEY);
    let mut info = Vec::new();
    info.extend_from_slice(b"client");
    info.extend_from_slice(&7u32.to_le_bytes());
    info.extend_from_slice(&1u64.to_le_bytes());
    let mut key = [0u8; 32];
    kdf.expand(&info, &mut key).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"abc");
    assert_eq!(tag.tag, <[u8; 32]>::from(mac.finalize().into_bytes()));
}

#[test]
fn a_new_tenant_with_a_reused_domid_is_another_client() {
    let mut server = TestServer::new(service_with(Some(KEY), false).unwrap());
    let tag = sign(&mut server, 5, b"hello");
    server.forget_peer(PeerId(5)).unwrap();
    assert!(!verify(&mut server, 5, tag, b"hello"));
}

#[test]
fn the_key_comes_from_the_toolstack_or_from_randomness_and_is_never_returned() {
    let mut server = TestServer::new(service_with(Some(KEY), false).unwrap());
    let info = mac::Client::new(&mut server).key_info(&()).unwrap();
    assert_eq!(info.provisioned, 1);
    assert!(!KEY.windows(8).any(|w| w == info.fingerprint));
    let mut random = TestServer::new(service_with(None, true).unwrap());
    assert_eq!(
        mac::Client::new(&mut random)
            .key_info(&())
            .unwrap()
            .provisioned,
        0
    );
    // Nothing to build a key from, or a key of the wrong size: the server does not start.
    let mut none = service_with(None, false);
    let mut registry = xenrpc_proto::Registry::new();
    assert!(matches!(
        none.register_into(&mut registry),
        Err(RegistryError::Unavailable { name: "mac", .. })
    ));
    assert!(service_with(Some(b"short"), true).is_err());
    // Every method's reply is a tag, a verdict or a fingerprint: no method returns a key.
    let names: Vec<&str> = mac::METHODS.iter().map(|m| m.name).collect();
    assert_eq!(names, ["sign", "verify", "key_info"]);
    assert!(mac::METHODS.iter().all(|m| !m.signature.bytes_out));
}
