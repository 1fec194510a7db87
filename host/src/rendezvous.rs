//! Connection set-up over a Unix `SOCK_SEQPACKET` socket.
//!
//! 1. The client connects and sends a [`Hello`] naming the data-region size it wants.
//! 2. The server learns the client's uid and pid from `SO_PEERCRED` (the kernel's word, never
//!    the message's, taken at connect: whoever holds the socket later does not change it), creates and seals the ring and data memfds and two eventfds, and sends a
//!    [`Welcome`] with the four fds attached (`SCM_RIGHTS`).
//! 3. The client lays out the ring region and sends [`READY`]; the server attaches.
//! 4. The socket then stays open and silent for the life of the connection: its hangup is how
//!    each side learns that the other died.
//!
//! Seqpacket keeps message boundaries, so each message is read whole or not at all, and the fds
//! arrive attached to the message they belong to.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::event::poll_retrying;

const MAGIC: u32 = u32::from_le_bytes(*b"XRPC");
/// Version of the set-up messages (not of the RPC protocol, which checks its own).
pub const RENDEZVOUS_VERSION: u32 = 1;
/// Client → server after it laid out the ring region: the server may attach now.
pub const READY: [u8; 8] = *b"XRPCrdy\0";
/// Number of fds a [`Welcome`] carries: ring, data, client→server eventfd, server→client eventfd.
pub const WELCOME_FD_COUNT: usize = 4;

/// Who a client process is, as the kernel reports it (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The process id of the process that connected.
    pub pid: u32,
    /// Its user id: the tenant.
    pub uid: u32,
}

impl PeerCredentials {
    /// The id the protocol's dispatcher sees: the client's uid, the tenant. Not the pid: a pid
    /// is reused once its process dies, and an fd outlives the process that connected it, so
    /// a pid would hand one process's identity (its kv namespace, its admin rights) to another.
    pub fn peer_id(&self) -> xenrpc_proto::transport::PeerId {
        xenrpc_proto::transport::PeerId(self.uid)
    }
}

/// Client → server: the first and only message a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Bytes of data region the client asks for.
    pub data_len: u64,
}

impl Hello {
    /// Bytes on the wire: magic, version, `data_len` (little-endian).
    pub const WIRE_LEN: usize = 16;

    /// The message as sent.
    pub fn encode(&self) -> [u8; Self::WIRE_LEN] {
        let mut out = [0u8; Self::WIRE_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&RENDEZVOUS_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.data_len.to_le_bytes());
        out
    }

    /// Parses a received message, checking its length, magic and version.
    pub fn decode(bytes: &[u8]) -> io::Result<Self> {
        let bytes: &[u8; Self::WIRE_LEN] = bytes
            .try_into()
            .map_err(|_| invalid("hello has the wrong length"))?;
        check_header(bytes)?;
        Ok(Self {
            data_len: u64_at(bytes, 8),
        })
    }
}

/// Server → client: the ring's slot count and the sizes of the two regions whose fds ride along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// Slots of each ring (a power of two).
    pub slots: u32,
    /// Bytes of the ring region's memfd.
    pub ring_len: u64,
    /// Bytes of the data region's memfd.
    pub data_len: u64,
}

impl Welcome {
    /// Bytes on the wire: magic, version, `slots`, 4 reserved, `ring_len`, `data_len`
    /// (little-endian).
    pub const WIRE_LEN: usize = 32;

    /// The message as sent.
    pub fn encode(&self) -> [u8; Self::WIRE_LEN] {
        let mut out = [0u8; Self::WIRE_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&RENDEZVOUS_VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.slots.to_le_bytes());
        out[16..24].copy_from_slice(&self.ring_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        out
    }

    /// Parses a received message, checking its length, magic and version.
    pub fn decode(bytes: &[u8]) -> io::Result<Self> {
        let bytes: &[u8; Self::WIRE_LEN] = bytes
            .try_into()
            .map_err(|_| invalid("welcome has the wrong length"))?;
        check_header(bytes)?;
        Ok(Self {
            slots: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            ring_len: u64_at(bytes, 16),
            data_len: u64_at(bytes, 24),
        })
    }
}

fn check_header(bytes: &[u8]) -> io::Result<()> {
    if bytes[0..4] != MAGIC.to_le_bytes() {
        return Err(invalid("bad rendezvous magic"));
    }
    if bytes[4..8] != RENDEZVOUS_VERSION.to_le_bytes() {
        return Err(invalid("unsupported rendezvous version"));
    }
    Ok(())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Binds a listening seqpacket socket at `path`, replacing a stale socket file left by a dead
/// server but refusing to steal the path from a live one.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let addr = SocketAddrUnix::new(path)?;
    let socket = new_socket(SocketFlags::NONBLOCK)?;
    match rustix::net::bind(&socket, &addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::ADDRINUSE) => {
            let probe = new_socket(SocketFlags::empty())?;
            if rustix::net::connect(&probe, &addr).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a server is already listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
            rustix::net::bind(&socket, &addr)?;
        }
        Err(e) => return Err(e.into()),
    }
    rustix::net::listen(&socket, 64)?;
    Ok(socket)
}

/// Accepts one pending connection (non-blocking), with the peer's kernel-reported identity.
/// Returns `Ok(None)` when nobody is waiting.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, PeerCredentials)>> {
    let socket =
        match rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok(socket) => socket,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    let cred = rustix::net::sockopt::socket_peercred(&socket)?;
    let peer = PeerCredentials {
        pid: cred.pid.as_raw_nonzero().get() as u32,
        uid: cred.uid.as_raw(),
    };
    Ok(Some((socket, peer)))
}

/// Connects to the server at `path`, sends `hello` and waits (at most `timeout`) for the welcome
/// and its fds.
pub fn connect(
    path: &Path,
    hello: Hello,
    timeout: Duration,
) -> io::Result<(OwnedFd, Welcome, [OwnedFd; WELCOME_FD_COUNT])> {
    let addr = SocketAddrUnix::new(path)?;
    let socket = new_socket(SocketFlags::empty())?;
    rustix::net::connect(&socket, &addr)?;
    send_message(socket.as_fd(), &hello.encode(), &[])?;

    let mut fds = [PollFd::new(&socket, PollFlags::IN)];
    if poll_retrying(&mut fds, Some(timeout))? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "server did not answer the hello",
        ));
    }
    let mut buf = [0u8; Welcome::WIRE_LEN + 1];
    let (len, received) = recv_message(socket.as_fd(), &mut buf)?;
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "server closed the connection during set-up (refused the hello?)",
        ));
    }
    let welcome = Welcome::decode(&buf[..len])?;
    let fds: [OwnedFd; WELCOME_FD_COUNT] = received
        .try_into()
        .map_err(|_| invalid("welcome did not carry exactly four fds"))?;
    Ok((socket, welcome, fds))
}

/// Sends one message with `fds` attached.
pub fn send_message(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(WELCOME_FD_COUNT))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(invalid("too many fds for one message"));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short seqpacket send",
        ));
    }
    Ok(())
}

/// Receives one message (without waiting) together with any fds attached to it.
/// A zero length means the peer hung up. A message longer than `buf` is an error.
pub fn recv_message(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(WELCOME_FD_COUNT))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(invalid("oversized rendezvous message"));
    }
    Ok((msg.bytes, fds))
}

/// Receives one message without accepting fds (any the peer attached are discarded by the
/// kernel). Used by the server, which never takes fds from a client.
pub fn recv_plain(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let (len, fds) = recv_message(socket, buf)?;
    if !fds.is_empty() {
        return Err(invalid("peer attached fds to a message that takes none"));
    }
    Ok(len)
}

fn new_socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        flags | SocketFlags::CLOEXEC,
        None,
    )?)
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_reject_garbage() {
        let hello = Hello {
            data_len: 123 << 12,
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        let welcome = Welcome {
            slots: 64,
            ring_len: 36864,
            data_len: 1 << 20,
        };
        assert_eq!(Welcome::decode(&welcome.encode()).unwrap(), welcome);

        let mut bad_magic = hello.encode();
        bad_magic[0] ^= 1;
        assert!(Hello::decode(&bad_magic).is_err());
        let mut bad_version = welcome.encode();
        bad_version[4] = 99;
        assert!(Welcome::decode(&bad_version).is_err());
        assert!(Hello::decode(&hello.encode()[..15]).is_err());
        assert!(Welcome::decode(&[0u8; 33]).is_err());
    }

    #[test]
    fn fds_travel_with_their_message_and_peer_identity_comes_from_the_kernel() {
        let dir = std::env::temp_dir().join(format!("xenrpc-rdv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = listen(&path).unwrap();

        let client_path = path.clone();
        let client = std::thread::spawn(move || {
            connect(
                &client_path,
                Hello { data_len: 8192 },
                Duration::from_secs(5),
            )
        });
        let (socket, peer) = loop {
            if let Some(accepted) = accept(listener.as_fd()).unwrap() {
                break accepted;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(peer.pid, std::process::id());
        let mut fds = [PollFd::new(&socket, PollFlags::IN)];
        poll_retrying(&mut fds, Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let len = recv_plain(socket.as_fd(), &mut buf).unwrap();
        assert_eq!(Hello::decode(&buf[..len]).unwrap().data_len, 8192);

        let events: Vec<_> = (0..4)
            .map(|_| crate::event::EventFd::new().unwrap())
            .collect();
        let welcome = Welcome {
            slots: 16,
            ring_len: 4096,
            data_len: 8192,
        };
        let borrowed: Vec<_> = events.iter().map(|e| e.fd()).collect();
        send_message(socket.as_fd(), &welcome.encode(), &borrowed).unwrap();
        let (_client_socket, got, received) = client.join().unwrap().unwrap();
        assert_eq!(got, welcome);
        // The received fds are the same eventfds: a signal on ours is seen on theirs.
        events[2].signal().unwrap();
        let theirs =
            crate::event::EventFd::from_received(received.into_iter().nth(2).unwrap()).unwrap();
        assert!(theirs.drain().unwrap());
        assert!(!theirs.drain().unwrap());

        // A second server cannot steal a live path; once the first is gone, the stale socket
        // file is replaced.
        assert!(listen(&path).is_err());
        drop(listener);
        assert!(listen(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
