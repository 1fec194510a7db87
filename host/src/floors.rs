//! The floors the benchmark compares xenrpc against, measured between two processes in the same
//! run: the physical limit (one cache line bounced between two spinning processes, timed in
//! batches), a raw shared-memory ping-pong (two lines, each round trip timed), a raw eventfd
//! round trip (blocking), and a plain Unix-domain-socket request/response.
//!
//! The measuring process drives a peer process through a control socket (a seqpacket socket the
//! peer inherits). Each command carries the fds it needs; the peer answers each round trip and
//! acknowledges the end of the command.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::EventfdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use xenrpc_proto::transport::SharedMemory;

use crate::event::poll_retrying;
use crate::rendezvous::{recv_message, send_message};
use crate::shm::{MemfdRegion, PAGE_SIZE};

const CMD_SPIN_PINGPONG: u32 = 1;
const CMD_EVENTFD_ROUNDTRIP: u32 = 2;
const CMD_UDS_ECHO: u32 = 3;
const CMD_QUIT: u32 = 4;
const CMD_LINE_PINGPONG: u32 = 5;
const COMMAND_LEN: usize = 16;
/// Ping and pong live on separate cache lines, as a ring's request and response indices do.
const PONG_OFFSET: usize = 64;
const _: () = assert!(PONG_OFFSET % 64 == 0 && PONG_OFFSET + 8 <= PAGE_SIZE);
/// Largest echo the UDS floor accepts (the benchmark's largest payload).
pub const MAX_UDS_ECHO: usize = 1 << 20;

/// Eventfd round trips with the floor peer, one per [`Self::round_trip`]: see
/// [`FloorDriver::eventfd_session`].
pub struct EventfdSession<'a> {
    driver: &'a FloorDriver,
    ping: OwnedFd,
    pong: OwnedFd,
    left: u64,
}

impl EventfdSession<'_> {
    /// One round trip: a write to the peer's eventfd, then a sleep in `read` on ours.
    pub fn round_trip(&mut self) -> io::Result<()> {
        if self.left == 0 {
            return Err(io::Error::other(
                "the eventfd session has made all its round trips",
            ));
        }
        self.left -= 1;
        let mut counter = [0u8; 8];
        rustix::io::write(&self.ping, &1u64.to_ne_bytes())?;
        rustix::io::read(&self.pong, &mut counter)?;
        Ok(())
    }

    /// Makes the round trips left, then waits for the peer to end the command.
    pub fn finish(mut self) -> io::Result<()> {
        while self.left > 0 {
            self.round_trip()?;
        }
        self.driver.wait_done()
    }
}

/// Drives a floor peer process over `control`.
pub struct FloorDriver {
    control: OwnedFd,
}

impl FloorDriver {
    /// Drives the peer that holds the other end of the control socket `control`.
    pub fn new(control: OwnedFd) -> Self {
        Self { control }
    }

    /// `iterations` round trips of a counter through two cache lines of a shared memfd page,
    /// both sides spinning. Returns the duration of each round trip.
    pub fn spin_pingpong(&self, iterations: u64) -> io::Result<Vec<Duration>> {
        let region = MemfdRegion::create("xenrpc-floor-spin", PAGE_SIZE)?;
        self.command(CMD_SPIN_PINGPONG, iterations, 0, &[region.fd()])?;
        let ping = atomic_at(&region, 0);
        let pong = atomic_at(&region, PONG_OFFSET);
        let mut samples = Vec::with_capacity(iterations as usize);
        for round in 1..=iterations {
            let start = Instant::now();
            ping.store(round, Ordering::Release);
            while pong.load(Ordering::Acquire) != round {
                std::hint::spin_loop();
            }
            samples.push(start.elapsed());
        }
        self.wait_done()?;
        Ok(samples)
    }

    /// The physical limit of a round trip between two CPUs: one cache line that both sides
    /// write (the driver an odd count, the peer the even count after it), `batches` batches of
    /// `per_batch` round trips each timed as a whole, because a clock read costs about as much
    /// as a round trip. Returns each batch's time per round trip.
    pub fn line_pingpong(&self, batches: u64, per_batch: u64) -> io::Result<Vec<Duration>> {
        let per_batch = per_batch.max(1);
        let region = MemfdRegion::create("xenrpc-floor-line", PAGE_SIZE)?;
        let round_trips = batches.saturating_mul(per_batch);
        self.command(CMD_LINE_PINGPONG, round_trips, 0, &[region.fd()])?;
        let line = atomic_at(&region, 0);
        let mut samples = Vec::with_capacity(batches as usize);
        let mut count = 0u64;
        for _ in 0..batches {
            let start = Instant::now();
            for _ in 0..per_batch {
                count += 2;
                line.store(count - 1, Ordering::Release);
                while line.load(Ordering::Acquire) != count {
                    std::hint::spin_loop();
                }
            }
            samples.push(start.elapsed().div_f64(per_batch as f64));
        }
        self.wait_done()?;
        Ok(samples)
    }

    /// `iterations` round trips through two blocking eventfds: write, then sleep in `read`.
    pub fn eventfd_roundtrip(&self, iterations: u64) -> io::Result<Vec<Duration>> {
        let mut session = self.eventfd_session(iterations)?;
        let mut samples = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let start = Instant::now();
            session.round_trip()?;
            samples.push(start.elapsed());
        }
        session.finish()?;
        Ok(samples)
    }

    /// `iterations` eventfd round trips made one at a time, whenever the caller likes (e.g.
    /// paced): the floor of any wait that sleeps.
    pub fn eventfd_session(&self, iterations: u64) -> io::Result<EventfdSession<'_>> {
        let ping = rustix::event::eventfd(0, EventfdFlags::CLOEXEC)?;
        let pong = rustix::event::eventfd(0, EventfdFlags::CLOEXEC)?;
        self.command(
            CMD_EVENTFD_ROUNDTRIP,
            iterations,
            0,
            &[ping.as_fd(), pong.as_fd()],
        )?;
        Ok(EventfdSession {
            driver: self,
            ping,
            pong,
            left: iterations,
        })
    }

    /// `iterations` request/response exchanges of `size`-byte payloads over a Unix stream
    /// socket (an 8-byte length header, then the bytes; the peer echoes both).
    pub fn uds_echo(&self, iterations: u64, size: usize) -> io::Result<Vec<Duration>> {
        if size > MAX_UDS_ECHO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "payload too large",
            ));
        }
        let (mine, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        self.command(CMD_UDS_ECHO, iterations, size as u64, &[theirs.as_fd()])?;
        drop(theirs);
        let mut stream = UnixStream::from(mine);
        let mut request = vec![0u8; 8 + size];
        request[..8].copy_from_slice(&(size as u64).to_le_bytes());
        for (i, byte) in request[8..].iter_mut().enumerate() {
            *byte = i as u8;
        }
        let mut response = vec![0u8; 8 + size];
        let mut samples = Vec::with_capacity(iterations as usize);
        for _ in 0..iterations {
            let start = Instant::now();
            stream.write_all(&request)?;
            stream.read_exact(&mut response)?;
            samples.push(start.elapsed());
        }
        if response != request {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "UDS echo garbled",
            ));
        }
        self.wait_done()?;
        Ok(samples)
    }

    fn command(
        &self,
        cmd: u32,
        iterations: u64,
        size: u64,
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let mut message = [0u8; COMMAND_LEN + 8];
        message[0..4].copy_from_slice(&cmd.to_le_bytes());
        message[8..16].copy_from_slice(&iterations.to_le_bytes());
        message[16..24].copy_from_slice(&size.to_le_bytes());
        send_message(self.control.as_fd(), &message, fds)
    }

    fn wait_done(&self) -> io::Result<()> {
        let mut fds = [rustix::event::PollFd::new(
            &self.control,
            rustix::event::PollFlags::IN,
        )];
        if poll_retrying(&mut fds, Some(Duration::from_secs(60)))? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "floor peer did not finish",
            ));
        }
        let mut ack = [0u8; 1];
        match recv_message(self.control.as_fd(), &mut ack)? {
            (1, _) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "floor peer died",
            )),
        }
    }
}

impl Drop for FloorDriver {
    fn drop(&mut self) {
        let _ = self.command(CMD_QUIT, 0, 0, &[]);
    }
}

/// The peer's side: serves commands from `control` until told to quit or the driver goes away.
pub fn run_floor_peer(control: OwnedFd) -> io::Result<()> {
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &control,
            rustix::event::PollFlags::IN,
        )];
        poll_retrying(&mut fds, None)?;
        let mut message = [0u8; COMMAND_LEN + 8];
        let (len, received) = recv_message(control.as_fd(), &mut message)?;
        if len == 0 {
            return Ok(());
        }
        if len != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad floor command",
            ));
        }
        let cmd = u32::from_le_bytes([message[0], message[1], message[2], message[3]]);
        let iterations = u64::from_le_bytes(message[8..16].try_into().expect("8 bytes"));
        let size = u64::from_le_bytes(message[16..24].try_into().expect("8 bytes"));
        let mut received = received.into_iter();
        let mut next_fd = || {
            received
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "missing fd"))
        };
        match cmd {
            CMD_SPIN_PINGPONG => serve_spin(
                MemfdRegion::map_received(next_fd()?, PAGE_SIZE)?,
                iterations,
            ),
            CMD_LINE_PINGPONG => serve_line(
                MemfdRegion::map_received(next_fd()?, PAGE_SIZE)?,
                iterations,
            ),
            CMD_EVENTFD_ROUNDTRIP => serve_eventfd(next_fd()?, next_fd()?, iterations)?,
            CMD_UDS_ECHO => serve_uds(UnixStream::from(next_fd()?), iterations, size)?,
            CMD_QUIT => return Ok(()),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unknown floor command",
                ))
            }
        }
        send_message(control.as_fd(), &[1], &[])?;
    }
}

fn serve_spin(region: MemfdRegion, iterations: u64) {
    let ping = atomic_at(&region, 0);
    let pong = atomic_at(&region, PONG_OFFSET);
    for round in 1..=iterations {
        while ping.load(Ordering::Acquire) != round {
            std::hint::spin_loop();
        }
        pong.store(round, Ordering::Release);
    }
}

fn serve_line(region: MemfdRegion, round_trips: u64) {
    let line = atomic_at(&region, 0);
    for round in 1..=round_trips {
        while line.load(Ordering::Acquire) != 2 * round - 1 {
            std::hint::spin_loop();
        }
        line.store(2 * round, Ordering::Release);
    }
}

fn serve_eventfd(ping: OwnedFd, pong: OwnedFd, iterations: u64) -> io::Result<()> {
    let mut counter = [0u8; 8];
    for _ in 0..iterations {
        rustix::io::read(&ping, &mut counter)?;
        rustix::io::write(&pong, &1u64.to_ne_bytes())?;
    }
    Ok(())
}

fn serve_uds(mut stream: UnixStream, iterations: u64, size: u64) -> io::Result<()> {
    let size = usize::try_from(size)
        .ok()
        .filter(|&size| size <= MAX_UDS_ECHO)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "echo size too large"))?;
    let mut buffer = vec![0u8; 8 + size];
    for _ in 0..iterations {
        stream.read_exact(&mut buffer)?;
        stream.write_all(&buffer)?;
    }
    Ok(())
}

/// A counter in the floor's shared page. Atomics are the sanctioned way to touch memory that
/// another process writes concurrently.
fn atomic_at(region: &MemfdRegion, offset: usize) -> &AtomicU64 {
    assert!(offset % 8 == 0 && offset + 8 <= region.len());
    // SAFETY: the address is 8-aligned (page-aligned base, offset checked) and inside the mapping,
    // which lives as long as `region`, the lifetime of the returned reference. The memory is only
    // ever accessed atomically, by both processes.
    unsafe { AtomicU64::from_ptr(region.base().add(offset).cast::<u64>()) }
}
