//! The resources of one connection, as each side holds them: the rendezvous socket (kept open as
//! the liveness signal), the ring and data regions, and one eventfd per direction.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use crate::event::EventFd;
use crate::rendezvous::{self, Hello, Welcome};
use crate::shm::{page_round_up, MemfdRegion};
use xenrpc_proto::{RingGeometry, SharedMemory};

/// One connection's resources, as one side holds them after set-up.
#[derive(Debug)]
pub struct Link {
    /// Silent after set-up; its hangup means the other process is gone.
    pub socket: OwnedFd,
    /// The ring region: control page and request and response rings.
    pub ring: MemfdRegion,
    /// The client's out-of-line buffers; arguments and results are (offset, len) in here.
    pub data: MemfdRegion,
    /// Client → server wake-ups.
    pub to_server: EventFd,
    /// Server → client wake-ups.
    pub to_client: EventFd,
    /// Ring size agreed at set-up, held privately by both sides.
    pub geometry: RingGeometry,
}

/// Limits the server applies to what a client may ask for at set-up.
#[derive(Clone, Copy, Debug)]
pub struct LinkLimits {
    /// The ring every connection gets.
    pub geometry: RingGeometry,
    /// Largest data region a client may ask for, in bytes.
    pub max_data_len: usize,
}

impl Link {
    /// Server side: answers a client's hello on `socket` by creating the regions and eventfds
    /// and sending them over. A hello asking for more than `limits` allow is refused.
    pub fn accept(socket: OwnedFd, hello: Hello, limits: LinkLimits) -> io::Result<Self> {
        let data_len = usize::try_from(hello.data_len)
            .ok()
            .filter(|&len| len > 0 && len <= limits.max_data_len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "requested data region size out of limits",
                )
            })?;
        let ring = MemfdRegion::create("xenrpc-ring", limits.geometry.region_bytes())?;
        let data = MemfdRegion::create("xenrpc-data", data_len)?;
        let to_server = EventFd::new()?;
        let to_client = EventFd::new()?;
        let welcome = Welcome {
            slots: limits.geometry.slots(),
            ring_len: ring.len() as u64,
            data_len: data.len() as u64,
        };
        rendezvous::send_message(
            socket.as_fd(),
            &welcome.encode(),
            &[ring.fd(), data.fd(), to_server.fd(), to_client.fd()],
        )?;
        Ok(Self {
            socket,
            ring,
            data,
            to_server,
            to_client,
            geometry: limits.geometry,
        })
    }

    /// Client side: connects to the server at `path` asking for a data region of at least
    /// `data_len` bytes, and maps what the server sends back.
    pub fn connect(path: &Path, data_len: usize, timeout: Duration) -> io::Result<Self> {
        let hello = Hello {
            data_len: page_round_up(data_len)? as u64,
        };
        let (socket, welcome, [ring, data, to_server, to_client]) =
            rendezvous::connect(path, hello, timeout)?;
        let ring_len = usize::try_from(welcome.ring_len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "ring length overflows"))?;
        let data_len = usize::try_from(welcome.data_len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "data length overflows"))?;
        let geometry = RingGeometry::new(welcome.slots).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "server sent a bad slot count")
        })?;
        if geometry.region_bytes() != ring_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ring length does not match slots",
            ));
        }
        Ok(Self {
            socket,
            geometry,
            ring: MemfdRegion::map_received(ring, ring_len)?,
            data: MemfdRegion::map_received(data, data_len)?,
            to_server: EventFd::from_received(to_server)?,
            to_client: EventFd::from_received(to_client)?,
        })
    }
}
