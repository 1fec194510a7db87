//! One xenstore ring connection: the request/reply exchange over the shared page (indices and
//! framing checked by `xen_abi::xenstore`), the watch events it queues, and its breaking.

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use xen_abi::ring::{read_ring, write_ring, RingBytes, RingIndexError};
use xen_abi::xenstore::{
    check_reply, parse_watch_event, FrameError, MessageAssembler, ReplyError, Request,
    XenstoreDomainInterface, MAX_REQUEST_SIZE, XENSTORE_CONNECTED, XENSTORE_RING,
};

use super::{
    count_and_log, WatchEvent, XsError, KICKED, LOST_EVENTS, MAX_QUEUED_EVENTS, REPLY_TIMEOUT_NS,
};
use crate::log;
use crate::xen::events::{self, EventError, Port};
use crate::xen::time;

/// One of the two rings of the page, accessed with volatile byte copies.
struct VolatileRing(*mut u8);

impl RingBytes for VolatileRing {
    fn load(&self, offset: usize, dst: &mut [u8]) {
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: `offset + dst.len() <= XENSTORE_RING_SIZE` (the ring helpers' contract),
            // inside the mapped page; a peer-written byte is read once, volatile.
            *byte = unsafe { core::ptr::read_volatile(self.0.add(offset + i)) };
        }
    }

    fn store(&mut self, offset: usize, src: &[u8]) {
        for (i, byte) in src.iter().enumerate() {
            // SAFETY: as in `load`.
            unsafe { core::ptr::write_volatile(self.0.add(offset + i), *byte) };
        }
    }
}

/// One xenstore ring connection (the boot one lives in `CONNECTION`).
pub(crate) struct Connection {
    page: *mut XenstoreDomainInterface,
    port: Port,
    /// Our producer index of `req`, kept privately (the shared copy is only written from it).
    req_prod: u32,
    /// Our consumer index of `rsp`, likewise.
    rsp_cons: u32,
    next_req_id: u32,
    /// The id of a request that timed out: its late reply is discarded, not an error.
    abandoned_req_id: Option<u32>,
    assembler: alloc::boxed::Box<MessageAssembler>,
    pub(super) events: VecDeque<WatchEvent>,
    pub(super) broken: Option<String>,
}

// SAFETY: the page pointer is only used under the connection mutex.
unsafe impl Send for Connection {}

/// The address of a field of the xenstore page (use inside `unsafe`: derefs the raw pointer).
macro_rules! field {
    ($page:expr, $field:ident) => {
        core::ptr::addr_of_mut!((*$page).$field)
    };
}

impl Connection {
    /// A connection over a mapped xenstore page whose peer is signalled through `port`: the
    /// boot page, or (self-tests) a private page playing a hostile xenstored.
    pub(crate) fn over_page(
        page: *mut XenstoreDomainInterface,
        port: Port,
    ) -> Result<Connection, XsError> {
        let mut connection = Connection {
            page,
            port,
            req_prod: 0,
            rsp_cons: 0,
            next_req_id: 1,
            abandoned_req_id: None,
            assembler: alloc::boxed::Box::new(MessageAssembler::new()),
            events: VecDeque::new(),
            broken: None,
        };
        // SAFETY: field addresses of the mapped page (no access yet).
        let (req_cons, req_prod, rsp_cons, rsp_prod, state) = unsafe {
            (
                field!(page, req_cons),
                field!(page, req_prod),
                field!(page, rsp_cons),
                field!(page, rsp_prod),
                field!(page, connection),
            )
        };
        connection.req_prod = connection.read_index(req_prod);
        connection.rsp_cons = connection.read_index(rsp_cons);
        let (req_used, rsp_used) = (
            XENSTORE_RING.used(connection.read_index(req_cons), connection.req_prod),
            XENSTORE_RING.used(connection.rsp_cons, connection.read_index(rsp_prod)),
        );
        if let Err(e) = req_used.and(rsp_used) {
            return Err(XsError::Broken(alloc::format!(
                "ring indices at start: {e}"
            )));
        }
        let connection_state = connection.read_index(state);
        if connection_state != XENSTORE_CONNECTED {
            log!("xenstore: ring connection state {connection_state} (expected connected)");
        }
        Ok(connection)
    }

    fn read_index(&self, index: *mut u32) -> u32 {
        // SAFETY: `index` is an aligned u32 field of the mapped page; read once, volatile.
        let value = unsafe { core::ptr::read_volatile(index) };
        fence(Ordering::SeqCst);
        value
    }

    fn publish_index(&self, index: *mut u32, value: u32) {
        fence(Ordering::SeqCst);
        // SAFETY: as in `read_index`.
        unsafe { core::ptr::write_volatile(index, value) };
    }

    fn fail(&mut self, why: String) -> XsError {
        log!("xenstore: connection broken: {why}");
        self.broken = Some(why.clone());
        XsError::Broken(why)
    }

    fn check_usable(&self) -> Result<(), XsError> {
        match &self.broken {
            Some(why) => Err(XsError::Broken(why.clone())),
            None => Ok(()),
        }
    }

    /// Copies as much of `bytes` as fits onto the request ring; returns how much.
    fn push_request_bytes(&mut self, bytes: &[u8]) -> Result<usize, XsError> {
        // SAFETY: field addresses of the mapped page (no access yet).
        let (cons_ptr, prod_ptr, req) = unsafe {
            (
                field!(self.page, req_cons),
                field!(self.page, req_prod),
                field!(self.page, req) as *mut u8,
            )
        };
        let cons = self.read_index(cons_ptr);
        let written = write_ring(
            XENSTORE_RING,
            &mut VolatileRing(req),
            cons,
            self.req_prod,
            bytes,
        )
        .map_err(|e: RingIndexError| self.fail(alloc::format!("request ring: {e}")))?;
        if written > 0 {
            self.req_prod = self.req_prod.wrapping_add(written as u32);
            self.publish_index(prod_ptr, self.req_prod);
            let _ = events::send(self.port);
        }
        Ok(written)
    }

    /// Moves response bytes into the assembler until a message is complete or the ring is
    /// empty; returns whether a message is complete.
    pub(super) fn pull_response_bytes(&mut self) -> Result<bool, XsError> {
        // SAFETY: field addresses of the mapped page (no access yet).
        let (cons_ptr, prod_ptr, rsp) = unsafe {
            (
                field!(self.page, rsp_cons),
                field!(self.page, rsp_prod),
                field!(self.page, rsp) as *mut u8,
            )
        };
        let mut consumed = false;
        let complete = loop {
            if self.assembler.message().is_some() {
                break true;
            }
            let prod = self.read_index(prod_ptr);
            let spare = self.assembler.spare_mut();
            let got = read_ring(
                XENSTORE_RING,
                &VolatileRing(rsp),
                self.rsp_cons,
                prod,
                spare,
            )
            .map_err(|e| self.fail(alloc::format!("response ring: {e}")))?;
            if got == 0 {
                break false;
            }
            self.rsp_cons = self.rsp_cons.wrapping_add(got as u32);
            consumed = true;
            if let Err(e) = self.assembler.advance(got) {
                return Err(self.fail(frame_error_text(e)));
            }
        };
        if consumed {
            self.publish_index(cons_ptr, self.rsp_cons);
            let _ = events::send(self.port);
        }
        Ok(complete)
    }

    /// Takes the complete message: queues a watch event and returns `None`, or returns a
    /// reply's header and payload.
    pub(super) fn take_message(&mut self) -> Option<(xen_abi::xenstore::XsdSockmsg, Vec<u8>)> {
        let message = self.assembler.message()?;
        let result = if message.is_watch_event() {
            match parse_watch_event(&message) {
                Ok(event) => {
                    let queued = self
                        .events
                        .iter()
                        .any(|e| e.path == event.path && e.token == event.token);
                    if !queued {
                        if self.events.len() == MAX_QUEUED_EVENTS {
                            self.events.pop_front();
                            if let Some(n) = count_and_log(&LOST_EVENTS) {
                                log!("xenstore: event queue full, {n} watch events dropped so far");
                            }
                        }
                        self.events.push_back(WatchEvent {
                            path: event.path.to_string(),
                            token: event.token.to_string(),
                        });
                    }
                }
                Err(e) => log!("xenstore: malformed watch event dropped: {e}"),
            }
            None
        } else {
            Some((message.header, message.payload.to_vec()))
        };
        self.assembler.clear_message();
        result
    }

    /// Repeats `progress` until it reports completion, sleeping on the event channel in
    /// between, for at most `REPLY_TIMEOUT_NS`.
    fn wait_for(
        &mut self,
        mut progress: impl FnMut(&mut Connection) -> Result<bool, XsError>,
    ) -> Result<(), XsError> {
        let start = time::now_ns();
        loop {
            KICKED.store(false, Ordering::SeqCst);
            if progress(self)? {
                return Ok(());
            }
            let elapsed = time::now_ns().saturating_sub(start);
            if elapsed >= REPLY_TIMEOUT_NS {
                return Err(XsError::Timeout);
            }
            // Only xenstored's port wakes us: this call holds up everything else anyway.
            match events::wait_on(&[self.port], REPLY_TIMEOUT_NS - elapsed, || {
                KICKED.load(Ordering::SeqCst)
            }) {
                Ok(()) | Err(EventError::TimedOut) => {}
                Err(e) => return Err(XsError::Event(e)),
            }
        }
    }

    /// Sends `request` and returns the validated reply payload.
    pub(crate) fn call(&mut self, request: &Request<'_>, tx_id: u32) -> Result<Vec<u8>, XsError> {
        self.check_usable()?;
        let mut buf = alloc::vec![0u8; MAX_REQUEST_SIZE];
        let req_id = self.next_req_id;
        let len = request.encode(req_id, tx_id, &mut buf)?;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let mut sent = 0;
        let written = self.wait_for(|this| {
            sent += this.push_request_bytes(&buf[sent..len])?;
            Ok(sent == len)
        });
        match written {
            Ok(()) => {}
            // Part of the request may be on the ring: the stream cannot be trusted any more.
            Err(XsError::Timeout) if sent > 0 => {
                return Err(self.fail(alloc::format!(
                    "request ring stalled after {sent} of {len} bytes"
                )))
            }
            Err(e) => return Err(e),
        }

        let mut reply = None;
        let outcome = self.wait_for(|this| {
            while this.pull_response_bytes()? {
                if let Some((header, payload)) = this.take_message() {
                    if Some(header.req_id) == this.abandoned_req_id && header.req_id != req_id {
                        log!(
                            "xenstore: discarded late reply to request {}",
                            header.req_id
                        );
                        this.abandoned_req_id = None;
                        continue;
                    }
                    reply = Some((header, payload));
                    return Ok(true);
                }
            }
            Ok(false)
        });
        if let Err(e) = outcome {
            if e == XsError::Timeout {
                self.abandoned_req_id = Some(req_id);
            }
            return Err(e);
        }
        let (header, payload) = reply.ok_or(XsError::Timeout)?;
        let message = xen_abi::xenstore::Message {
            header,
            payload: &payload,
        };
        if let Err(e) = check_reply(&message, request.msg_type(), req_id) {
            if let ReplyError::WrongRequestId { got, .. } = e {
                // Our own reply may still come: drop it then instead of taking it for the next.
                log!("xenstore: reply to request {got} while waiting for {req_id}");
                self.abandoned_req_id = Some(req_id);
            }
            return Err(e.into());
        }
        Ok(payload)
    }
}

fn frame_error_text(e: FrameError) -> String {
    alloc::format!("{e}")
}
