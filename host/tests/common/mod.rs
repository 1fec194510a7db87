//! Spawning a real `xenrpc-hostd` for integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::hostd::READY_LINE;
use xenrpc_host::process::ChildGuard;

/// Every wait in these tests is bounded by this, so a hang fails instead of hanging CI.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerProcess {
    pub child: ChildGuard,
    pub socket: PathBuf,
}

impl ServerProcess {
    /// Starts `xenrpc-hostd` on a fresh socket path with the test services, allowing this test
    /// process to call the admin service; waits (bounded) until it listens.
    pub fn start(extra_args: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = std::env::temp_dir().join(format!(
            "xenrpc-host-test-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_xenrpc-hostd"))
            .arg("--socket")
            .arg(&socket)
            .arg("--test-services")
            .arg("--admin-pid")
            .arg(std::process::id().to_string())
            .args(extra_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn xenrpc-hostd");
        let stdout = child.stdout.take().expect("stdout");
        let child = ChildGuard::new(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("server did not start in time");
        assert!(
            line.starts_with(READY_LINE),
            "unexpected server output: {line:?}"
        );
        Self { child, socket }
    }

    pub fn path(&self) -> &Path {
        &self.socket
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.socket, ClientOptions::default()).expect("connect")
    }

    pub fn connect_with(&self, options: ClientOptions) -> Client {
        Client::connect(&self.socket, options).expect("connect")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Runs `xenrpc-hostcall` against `server` (bounded), returning (exit code, stdout).
pub fn hostcall(server: &Path, args: &[&str]) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_xenrpc-hostcall"))
        .arg("--socket")
        .arg(server)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn xenrpc-hostcall");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(TIMEOUT)
        .expect("xenrpc-hostcall did not finish in time")
        .expect("xenrpc-hostcall output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

/// A small deterministic PRNG (xorshift64*), so failures replay.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}
