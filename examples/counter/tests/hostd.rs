//! End to end on the host: the server `cargo xtask build --services examples/counter` wrote
//! (`build/counter-service-hostd`, named by `$SERVICE_HOSTD`), called over the host transport.
//! `cargo xtask test` builds it and runs this test; by hand:
//! `SERVICE_HOSTD=$PWD/build/counter-service-hostd cargo test --manifest-path
//! examples/counter/Cargo.toml -- --include-ignored`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use counter_service::counter;
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
fn the_generated_host_server_counts() {
    let hostd = std::env::var_os("SERVICE_HOSTD")
        .expect("SERVICE_HOSTD names the host server (build/counter-service-hostd)");
    let dir = TempDir(std::env::temp_dir().join(format!("counter-hostd-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let socket = dir.0.join("counter.sock");

    let mut command = Command::new(&hostd);
    command.arg("--socket").arg(&socket);
    // Killed and reaped when dropped, however the test ends.
    let server = spawn_host_server(command, TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", PathBuf::from(&hostd).display()));

    let mut client = Client::connect(&socket, ClientOptions::default())
        .unwrap_or_else(|e| panic!("cannot connect to the server: {e}"));
    client.set_call_timeout(Some(TIMEOUT));
    let mut counter = counter::Client::new(&mut client);
    assert_eq!(counter.incr(&5).unwrap(), 5);
    assert_eq!(counter.incr(&2).unwrap(), 7);
    assert_eq!(counter.get(&()).unwrap(), 7);
    let (len, blob) = counter.get_blob(&10_000).unwrap();
    assert_eq!((len, blob.len()), (10_000, 10_000));
    server.kill().expect("stop the server");
}
