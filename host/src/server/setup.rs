//! Connection set-up on the server side: accepting (against the caps, reaping an idle
//! connection under pressure), answering the hello, attaching once the client is ready, and
//! expiring set-ups that take too long.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use rustix::event::epoll;
use xenrpc_proto::{EventStormGuard, ServerConnection};

use super::tenants::{admit, Admission, Caps, Refusal, Slot};
use super::{Active, DropReason, Entry, Server, ServerEvent, Stage, KIND_SOCKET, KIND_WAKEUP};
use crate::client::monotonic_ns;
use crate::link::{Link, LinkLimits};
use crate::rendezvous::{self, Hello, PeerCredentials, READY};

impl Server {
    pub(super) fn accept_all(&mut self, events: &mut impl FnMut(&ServerEvent)) -> io::Result<()> {
        loop {
            let (socket, peer) = match rendezvous::accept(self.listener.as_fd()) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return Ok(()),
                // The peer vanished between connect and accept, or we are out of fds: refuse
                // this one and keep serving the others.
                Err(e) => {
                    events(&ServerEvent::Refused {
                        peer: None,
                        reason: Refusal::SetUp(format!("accept failed: {e}")),
                    });
                    return Ok(());
                }
            };
            if let Err(reason) = self.make_room(peer, events) {
                events(&ServerEvent::Refused {
                    peer: Some(peer),
                    reason,
                });
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) = epoll::add(
                &self.epoll,
                &socket,
                epoll::EventData::new_u64(id << 1 | KIND_SOCKET),
                epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
            ) {
                events(&ServerEvent::Refused {
                    peer: Some(peer),
                    reason: Refusal::SetUp(format!("epoll: {e}")),
                });
                continue;
            }
            self.tenants.add(peer.uid);
            self.entries.insert(
                id,
                Entry {
                    socket,
                    peer,
                    since: Instant::now(),
                    stage: Stage::Hello,
                },
            );
        }
    }

    /// Checks a newcomer against the caps, reaping an idle connection if that makes room.
    fn make_room(
        &mut self,
        peer: PeerCredentials,
        events: &mut impl FnMut(&ServerEvent),
    ) -> Result<(), Refusal> {
        let caps = Caps {
            max_clients: self.config.max_clients,
            max_per_uid: self.config.max_per_uid,
            idle_reap: self.config.idle_reap,
        };
        let slots = self.entries.iter().map(|(&id, entry)| Slot {
            id,
            uid: entry.peer.uid,
            last_request: match &entry.stage {
                Stage::Serving(active) => Some(active.last_request),
                _ => None,
            },
        });
        let admission = admit(
            caps,
            &self.tenants,
            self.entries.len(),
            peer.uid,
            slots,
            Instant::now(),
        );
        match admission {
            Admission::Admit => Ok(()),
            Admission::Reap(id) => {
                self.drop_entry(id, Some(DropReason::Reaped), events);
                Ok(())
            }
            Admission::Refuse(refusal) => Err(refusal),
        }
    }

    pub(super) fn expire_setups(&mut self, events: &mut impl FnMut(&ServerEvent)) {
        let limit = self.config.setup_timeout;
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| !matches!(e.stage, Stage::Serving(_)) && e.since.elapsed() > limit)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let reason = DropReason::Protocol("set-up not finished in time".into());
            self.drop_entry(id, Some(reason), events);
        }
    }

    /// A client's socket became readable: the next set-up message, or (once serving) its
    /// hangup, or a protocol breach (the socket must stay silent).
    pub(super) fn socket_readable(&mut self, id: u64, events: &mut impl FnMut(&ServerEvent)) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let mut buf = [0u8; 64];
        let received = rendezvous::recv_plain(entry.socket.as_fd(), &mut buf);
        let len = match received {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                let reason = DropReason::Protocol(format!("bad set-up message: {e}"));
                self.drop_entry(id, Some(reason), events);
                return;
            }
        };
        if len == 0 {
            self.drop_entry(id, None, events);
            return;
        }
        let stage = std::mem::replace(&mut entry.stage, Stage::Hello);
        let next = match stage {
            Stage::Hello => self.answer_hello(id, &buf[..len]),
            Stage::Ready(link) => self.attach(id, link, &buf[..len]),
            Stage::Serving(_) => Err("client wrote to its socket after set-up".to_string()),
        };
        match next {
            Ok(stage) => {
                let serving = matches!(stage, Stage::Serving(_));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.stage = stage;
                    if serving {
                        let peer = entry.peer;
                        self.start_serving(id);
                        events(&ServerEvent::Connected(peer));
                    }
                }
            }
            Err(reason) => self.drop_entry(id, Some(DropReason::Protocol(reason)), events),
        }
    }

    fn answer_hello(&mut self, id: u64, message: &[u8]) -> Result<Stage, String> {
        let hello = Hello::decode(message).map_err(|e| format!("bad hello: {e}"))?;
        let entry = self.entries.get_mut(&id).ok_or("gone")?;
        let socket = entry.socket.try_clone().map_err(|e| e.to_string())?;
        let limits = LinkLimits {
            geometry: self.geometry,
            max_data_len: self.config.max_data_len,
        };
        let link =
            Link::accept(socket, hello, limits).map_err(|e| format!("set-up failed: {e}"))?;
        Ok(Stage::Ready(link))
    }

    fn attach(&mut self, id: u64, link: Link, message: &[u8]) -> Result<Stage, String> {
        if message != READY {
            return Err("expected the ready message".into());
        }
        let peer = self.entries.get(&id).ok_or("gone")?.peer;
        let Link {
            ring,
            data,
            to_server,
            to_client,
            geometry,
            ..
        } = link;
        let conn = ServerConnection::attach(ring, data, geometry, peer.peer_id())
            .map_err(|e| format!("ring not laid out: {e}"))?;
        epoll::add(
            &self.epoll,
            to_server.fd(),
            epoll::EventData::new_u64(id << 1 | KIND_WAKEUP),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .map_err(|e| format!("epoll: {e}"))?;
        Ok(Stage::Serving(Box::new(Active {
            conn,
            to_client,
            to_server,
            storm: EventStormGuard::new(monotonic_ns()),
            woken: false,
            last_request: Instant::now(),
        })))
    }
}
