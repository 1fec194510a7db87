//! Process plumbing for the benchmark and the tests: spawning helpers that inherit one socket,
//! pinning to a CPU, and reaping children on every exit path.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::io::FdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// A child process that is killed and reaped when dropped, so that no failure path leaves a
/// helper spinning on a core.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the child is still running (not exited, not killed by a signal).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for the child to exit by itself; kills it after that.
    /// Returns whether it exited successfully by itself.
    pub fn wait_or_kill(mut self, timeout: Duration) -> io::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() >= end {
                let _ = child.kill();
                child.wait()?;
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child now (SIGKILL) and reaps it.
    pub fn kill(mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a host server (`xenrpc-hostd`, or a generated `<crate>-hostd`) from `command`, with
/// its stdout piped, and waits at most `timeout` for its first line, which must be the ready
/// line (`xenrpc-hostd: listening on PATH`). The server is killed when the guard drops.
pub fn spawn_host_server(mut command: Command, timeout: Duration) -> io::Result<ChildGuard> {
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let child = ChildGuard::new(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(timeout).map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the server did not say it listens within {timeout:?}"),
        )
    })?;
    if !line.starts_with(crate::hostd::READY_LINE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server's first line is not the ready line: {line:?}"),
        ));
    }
    Ok(child)
}

/// Spawns `command` with one end of a fresh seqpacket socket pair inherited as an open fd whose
/// number is appended to the command line. Returns the child and our end.
///
/// Must not run concurrently with another spawn in this process: the inherited end is briefly
/// marked inheritable.
pub fn spawn_with_control_socket(mut command: Command) -> io::Result<(ChildGuard, OwnedFd)> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::fcntl_setfd(&theirs, FdFlags::empty())?;
    command.arg(theirs.as_raw_fd().to_string());
    let child = command.spawn();
    drop(theirs);
    Ok((ChildGuard::new(child?), ours))
}

/// Takes ownership of the control socket a parent passed with [`spawn_with_control_socket`],
/// after checking that the number names an open Unix socket.
pub fn take_inherited_socket(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an inherited fd",
        ));
    }
    if std::fs::symlink_metadata(format!("/proc/self/fd/{raw}")).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "inherited fd is not open",
        ));
    }
    // SAFETY: the fd is open (checked just above, and this process opens nothing concurrently) and
    // the parent passed its number for us alone to own; nothing else here refers to it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    rustix::net::sockopt::socket_type(fd.as_fd())?;
    Ok(fd)
}

/// Pins the calling thread (and so a single-threaded process) to `cpu`. Returns false when the
/// machine has no such CPU or refuses (the benchmark then runs unpinned and says so).
pub fn pin_to_cpu(cpu: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return false;
    }
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

/// Pins every thread of process `pid` to `cpu` (a thread it starts later inherits the affinity
/// of the thread that starts it). Returns false when the machine has no such CPU, the process
/// is gone, or a thread refuses.
pub fn pin_process_to_cpu(pid: u32, cpu: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return false;
    }
    set.set(cpu);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut pinned = true;
    for task in tasks.flatten() {
        let tid = task
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok());
        let Some(tid) = tid.and_then(rustix::process::Pid::from_raw) else {
            continue;
        };
        match rustix::thread::sched_setaffinity(Some(tid), &set) {
            Ok(()) => {}
            // A thread that exited between the listing and the call needs no pinning.
            Err(rustix::io::Errno::SRCH) => {}
            Err(_) => pinned = false,
        }
    }
    pinned
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
