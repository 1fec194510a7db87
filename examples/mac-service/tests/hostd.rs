//! End to end on the host: the server `cargo xtask build --services examples/mac-service`
//! wrote (named by `$SERVICE_HOSTD`), given a key file as the toolstack would provision it,
//! called over the host transport. `cargo xtask test` builds it and runs this test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mac_service::{mac, Tag};
use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::process::spawn_host_server;

/// Every wait is bounded by this, so a hang fails instead of hanging CI.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Removes the test's directory (and the server's socket in it) on every exit path.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs the generated host server: cargo xtask test builds it and runs this"]
fn the_generated_host_server_signs_with_the_provisioned_key() {
    let hostd = std::env::var_os("SERVICE_HOSTD")
        .expect("SERVICE_HOSTD names the host server (build/mac-service-hostd)");
    let dir = TempDir(std::env::temp_dir().join(format!("mac-hostd-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let socket = dir.0.join("mac.sock");
    let key_file = dir.0.join("mac-key");
    std::fs::write(&key_file, b"0123456789abcdef0123456789abcdef").unwrap();

    let mut command = Command::new(&hostd);
    command
        .arg("--socket")
        .arg(&socket)
        .arg("--secret")
        .arg(format!("mac-key={}", key_file.display()));
    // Killed and reaped when dropped, however the test ends.
    let server = spawn_host_server(command, TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", PathBuf::from(&hostd).display()));

    let mut client = Client::connect(&socket, ClientOptions::default())
        .unwrap_or_else(|e| panic!("cannot connect to the server: {e}"));
    client.set_call_timeout(Some(TIMEOUT));
    let mut service = mac::Client::new(&mut client);
    assert_eq!(service.key_info(&()).unwrap().provisioned, 1);
    let message = b"pay 10 to carol";
    let tag = service.sign(&(), message).unwrap();
    assert_eq!(service.verify(&tag, message).unwrap().valid, 1);
    assert_eq!(service.verify(&tag, b"pay 99 to carol").unwrap().valid, 0);
    let mut forged = tag.tag;
    forged[0] ^= 1;
    assert_eq!(
        service.verify(&Tag { tag: forged }, message).unwrap().valid,
        0
    );
    server.kill().expect("stop the server");
}
