//! What the service VM offers services as they are built (`xenrpc_proto::Platform`): secrets
//! the toolstack provisioned in xenstore, and the CPU's `RDRAND`.

use xenrpc_proto::service::hand_over_secret;
use xenrpc_proto::signature::decode_hex;
use xenrpc_proto::{Platform, PlatformError};

use crate::log;
use crate::xen::xenstore;

/// Where secret `NAME` is provisioned, relative to the VM's xenstore home
/// (`/local/domain/<domid>/`): the guest owns `data/`, and nobody but dom0 and the guest may
/// read it.
const SECRET_DIR: &str = "data/xenrpc/secret";
/// Longest secret name (`[a-z0-9_-]`).
const SECRET_NAME_MAX: usize = 32;

/// The service VM's platform.
pub struct ServiceVmPlatform;

fn name_ok(name: &str) -> bool {
    (1..=SECRET_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Platform for ServiceVmPlatform {
    fn take_secret(&self, name: &str, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        if !name_ok(name) {
            return Err(PlatformError::Unavailable(
                "secret names are [a-z0-9_-], 1 to 32 bytes",
            ));
        }
        let path = alloc::format!("{SECRET_DIR}/{name}");
        let Ok(mut hex) = xenstore::read(&path) else {
            return Ok(None);
        };
        // Gone from xenstore before anything else: whatever follows, the value is not left
        // lying there.
        if let Err(e) = xenstore::rm(&path) {
            log!("rpc: cannot remove {path} after reading it: {e}");
        }
        let decoded = core::str::from_utf8(hex.trim_ascii())
            .ok()
            .and_then(decode_hex)
            .ok_or(PlatformError::SecretMalformed);
        let result = decoded.and_then(|mut secret| hand_over_secret(&mut secret, buf));
        hex.fill(0);
        if let Ok(Some(n)) = result {
            log!("rpc: secret {name} taken from xenstore ({n} bytes), node removed");
        }
        result
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), PlatformError> {
        if !has_rdrand() {
            return Err(PlatformError::NoRandomness);
        }
        for chunk in buf.chunks_mut(8) {
            // Intel advises up to 10 retries before declaring the source broken.
            let word = (0..10)
                .find_map(|_| rdrand64())
                .ok_or(PlatformError::NoRandomness)?;
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

/// CPUID leaf 1, ECX bit 30 (a PV guest runs CPUID natively: it is not privileged).
fn has_rdrand() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0
}

/// One `RDRAND`, `None` when the CPU had no entropy ready (carry clear).
fn rdrand64() -> Option<u64> {
    let mut word = 0u64;
    // SAFETY: only called after `has_rdrand` saw the CPUID bit, so the instruction exists.
    let ok = unsafe { rdrand_step(&mut word) };
    (ok == 1).then_some(word)
}

#[target_feature(enable = "rdrand")]
fn rdrand_step(word: &mut u64) -> i32 {
    core::arch::x86_64::_rdrand64_step(word)
}
