//! Spawning a real `xenrpc-hostd` for integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xenrpc_host::client::{Client, ClientError, ClientOptions};
use xenrpc_host::process::{spawn_host_server, ChildGuard};
use xenrpc_proto::Status;

/// Every wait in these tests is bounded by this, so a hang fails instead of hanging CI.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerProcess {
    pub child: ChildGuard,
    pub socket: PathBuf,
}

impl ServerProcess {
    /// Starts `xenrpc-hostd` on a fresh socket path with the test services, allowing this test
    /// process's uid to call the admin service and every uid to connect; waits (bounded) until
    /// it listens.
    pub fn start(extra_args: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = std::env::temp_dir().join(format!(
            "xenrpc-host-test-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_xenrpc-hostd"));
        command
            .arg("--socket")
            .arg(&socket)
            .arg("--test-services")
            .arg("--admin-uid")
            .arg(rustix::process::getuid().as_raw().to_string())
            .args(extra_args);
        let child = spawn_host_server(command, TIMEOUT).expect("start xenrpc-hostd");
        // Clients of other uids (see `fork_as`) must be able to connect.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777))
            .expect("open the socket to every uid");
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

/// What a call made from another process got.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// The server answered with this error status.
    Status(Status),
    /// Connecting or calling failed otherwise (why).
    Failed(String),
}

/// Connects to `server` from a forked process of `uid` (`None`: this test's uid) and makes
/// `call` there: what it got. Another process, because the server knows a client by the
/// kernel's credentials of its socket, never by anything it says.
pub fn call_from_process(
    uid: Option<u32>,
    server: &Path,
    call: impl FnOnce(&mut Client) -> Result<(), ClientError>,
) -> Answer {
    let path = server.to_path_buf();
    let mut child = fork_as(uid, move |mut control| {
        let answer = match Client::connect(&path, ClientOptions::default()) {
            Err(e) => format!("failed connect: {e}"),
            Ok(mut client) => match call(&mut client) {
                Ok(()) => "ok".to_string(),
                Err(e) => match e.status() {
                    Some(status) => format!("status {}", status.ident()),
                    None => format!("failed call: {e}"),
                },
            },
        };
        write_line(&mut control, &answer)
    });
    let answer = child.hear();
    assert_eq!(child.wait(), 0, "the calling process failed");
    match answer.split_once(' ') {
        None if answer == "ok" => Answer::Ok,
        Some(("status", name)) => Answer::Status(
            Status::from_ident(name).unwrap_or_else(|| panic!("unknown status {name}")),
        ),
        _ => Answer::Failed(answer),
    }
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

/// A forked child process running as another uid, with a socket to talk to the test.
/// Killed and reaped if dropped before [`Forked::wait`].
pub struct Forked {
    pid: libc::pid_t,
    /// The test's end of the child's control socket.
    pub control: UnixStream,
}

/// Forks; the child switches to `uid` (and gid `uid`, no supplementary groups), runs `body`
/// with its end of a control socket and exits with `body`'s code (101 if it panics, 90 if it
/// cannot switch uid). `uid: None` keeps the test's uid. What the child writes on stderr
/// reaches the terminal (the test harness captures only the parent's output).
///
/// Fork is safe enough here: glibc's fork makes malloc usable in the child, and the child only
/// runs `body` and exits.
pub fn fork_as(uid: Option<u32>, body: impl FnOnce(UnixStream) -> Result<(), String>) -> Forked {
    let (ours, theirs) = UnixStream::pair().expect("control socket pair");
    // SAFETY: the child touches nothing but its own copies of this process's memory and fds,
    // and ends in `_exit` (no unwinding into the test harness, no atexit handlers).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(ours);
        let code = match uid.map_or(Ok(()), switch_uid) {
            Err(()) => 90,
            Ok(()) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(theirs)))
            {
                Ok(Ok(())) => 0,
                Ok(Err(why)) => {
                    let _ = writeln!(std::io::stderr(), "forked child failed: {why}");
                    1
                }
                Err(_) => 101,
            },
        };
        // SAFETY: ends the child at once, as fork's child should.
        unsafe { libc::_exit(code) };
    }
    Forked { pid, control: ours }
}

fn switch_uid(uid: u32) -> Result<(), ()> {
    // SAFETY: plain syscalls on this (single-threaded, freshly forked) process's credentials.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    ok.then_some(()).ok_or(())
}

impl Forked {
    /// Sends one line to the child.
    pub fn tell(&mut self, line: &str) {
        writeln!(self.control, "{line}").expect("child gone");
    }

    /// Reads one line from the child (bounded by `TIMEOUT`).
    pub fn hear(&mut self) -> String {
        self.control.set_read_timeout(Some(TIMEOUT)).unwrap();
        read_line(&mut self.control).expect("no word from the child in time")
    }

    /// Waits (bounded by `TIMEOUT`) for the child to exit; its exit code.
    pub fn wait(mut self) -> i32 {
        let end = Instant::now() + TIMEOUT;
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child without blocking.
            let done = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if done == self.pid {
                self.pid = 0;
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -1
                };
            }
            assert!(Instant::now() < end, "forked child did not finish in time");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Reads one `\n`-terminated line (without it) from a control socket.
pub fn read_line(stream: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Err("control socket closed".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("control socket: {e}")),
        }
    }
    String::from_utf8(line).map_err(|e| e.to_string())
}

/// Writes one line to a control socket.
pub fn write_line(stream: &mut UnixStream, line: &str) -> Result<(), String> {
    writeln!(stream, "{line}").map_err(|e| e.to_string())
}
