//! Taking responses off the ring: each one copied out once into a [`Completion`] and validated
//! against the call it answers (the server is a peer too; a response no correct server writes
//! breaks the connection, [`ClientViolation`]).
//!
//! [`ClientConnection::poll_response_into`] writes the response into a completion the caller
//! keeps (one per connection, say), so a call's answer is copied once, from the slot into it,
//! and moved no further; [`ClientConnection::poll_response`] returns a new one.

use super::{CallError, ClientConnection, ClientViolation, InFlight};
use crate::layout::{ctrl, ResponseHeader, Status, HEADER_SIZE, INLINE_CAPACITY};
use crate::transport::SharedMemory;

/// A response, copied out of the ring and validated against the call it answers. (Equality
/// and `Debug` see the inline result's bytes only, not what an earlier answer left after them
/// in a completion reused by [`ClientConnection::poll_response_into`].)
#[derive(Clone)]
pub struct Completion {
    /// The id of the call answered (what `enqueue` returned; [`Pending::call_id`](super::Pending::call_id)).
    pub call_id: u64,
    /// The call's outcome.
    pub status: Status,
    /// Bytes the handler wrote at the start of the call's result window.
    pub ool_written: u32,
    /// The server's clock when it answered (as it says: use it only to estimate, never to
    /// trust).
    pub server_time_ns: u64,
    inline: [u8; INLINE_CAPACITY],
    /// At most `INLINE_CAPACITY`: the bytes of `inline` that are the result.
    inline_len: usize,
    /// The result bytes of a call started with `start_with_bytes`, copied out of its window.
    #[cfg(feature = "alloc")]
    bytes: alloc::vec::Vec<u8>,
}

impl Default for Completion {
    /// An empty `Ok` answer to no call (id 0, which no call has): room for
    /// [`ClientConnection::poll_response_into`] to write answers into.
    fn default() -> Self {
        Completion {
            call_id: 0,
            status: Status::Ok,
            ool_written: 0,
            server_time_ns: 0,
            inline: [0; INLINE_CAPACITY],
            inline_len: 0,
            #[cfg(feature = "alloc")]
            bytes: alloc::vec::Vec::new(),
        }
    }
}

impl PartialEq for Completion {
    fn eq(&self, other: &Self) -> bool {
        let same = self.call_id == other.call_id
            && self.status == other.status
            && self.ool_written == other.ool_written
            && self.server_time_ns == other.server_time_ns
            && self.inline() == other.inline();
        #[cfg(feature = "alloc")]
        let same = same && self.bytes == other.bytes;
        same
    }
}

impl Eq for Completion {}

impl core::fmt::Debug for Completion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut debug = f.debug_struct("Completion");
        debug
            .field("call_id", &self.call_id)
            .field("status", &self.status)
            .field("ool_written", &self.ool_written)
            .field("server_time_ns", &self.server_time_ns)
            .field("inline", &self.inline());
        #[cfg(feature = "alloc")]
        debug.field("bytes", &self.bytes);
        debug.finish()
    }
}

impl Completion {
    /// The inline result bytes, at most [`INLINE_CAPACITY`].
    #[inline]
    pub fn inline(&self) -> &[u8] {
        &self.inline[..self.inline_len.min(INLINE_CAPACITY)]
    }

    /// The result bytes of a call started with
    /// [`ClientConnection::start_with_bytes`](super::ClientConnection::start_with_bytes) (a
    /// private copy; empty for other calls).
    #[cfg(feature = "alloc")]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The result bytes, moved out.
    #[cfg(feature = "alloc")]
    pub fn into_bytes(self) -> alloc::vec::Vec<u8> {
        self.bytes
    }

    /// An empty `Ok` answer to call `id`, for tests of what handles answers.
    #[cfg(all(test, feature = "std"))]
    pub(crate) fn for_test(id: u64) -> Self {
        Completion {
            call_id: id,
            ..Completion::default()
        }
    }
}

impl<R: SharedMemory, D: SharedMemory> ClientConnection<R, D> {
    /// Whether the server published responses we have not consumed: the next response slot's
    /// sequence word is the index we expect there.
    #[inline]
    pub fn has_responses(&self) -> bool {
        self.load(self.geometry.response_seq_offset(self.rsp_cons)) == self.rsp_cons
    }

    /// Takes the next response, if any (its slot's sequence word says it is published), copying
    /// it out once and validating it: status known, inline length within the slot, call id in
    /// flight, out-of-line length within the call's result window. A violation breaks the
    /// connection.
    pub fn poll_response(&mut self) -> Result<Option<Completion>, CallError> {
        let mut completion = Completion::default();
        Ok(self
            .poll_response_into(&mut completion)?
            .then_some(completion))
    }

    /// [`Self::poll_response`] into `completion` (whatever it held is replaced, and left as
    /// it was when there is no response or an error): whether a response was taken.
    #[inline]
    pub fn poll_response_into(&mut self, completion: &mut Completion) -> Result<bool, CallError> {
        if let Some(v) = self.broken {
            return Err(CallError::Broken(v));
        }
        // Acquire (in `has_responses`): the header is read after the sequence word said it is
        // complete.
        if !self.has_responses() {
            return Ok(false);
        }
        let slot = self.geometry.response_slot_offset(self.rsp_cons);
        let view = self.ring.view();
        let header: ResponseHeader = view.read_pod(slot).unwrap_or_default();
        let Some(status) = Status::from_wire(header.status) else {
            return Err(self.fail(ClientViolation::UnknownStatus(header.status)));
        };
        let inline_len = header.inline_len as usize;
        if inline_len > INLINE_CAPACITY {
            return Err(self.fail(ClientViolation::InlineTooLong(header.inline_len)));
        }
        let Some(entry_index) = self
            .in_flight
            .iter()
            .position(|e| e.call_id != 0 && e.call_id == header.call_id)
        else {
            return Err(self.fail(ClientViolation::UnknownCallId(header.call_id)));
        };
        let entry = self.in_flight[entry_index];
        if header.ool_written > entry.result_window_len {
            return Err(self.fail(ClientViolation::OolWrittenTooLong {
                written: header.ool_written,
                window: entry.result_window_len,
            }));
        }
        let copied = view.read(slot + HEADER_SIZE, &mut completion.inline[..inline_len]);
        debug_assert!(copied.is_ok());
        completion.call_id = header.call_id;
        completion.status = status;
        completion.ool_written = header.ool_written;
        completion.server_time_ns = header.server_time_ns;
        completion.inline_len = inline_len;
        let [input_window, output_window] = entry.allocated;
        #[cfg(feature = "alloc")]
        {
            completion.bytes = alloc::vec::Vec::new();
            if output_window.len > 0 && status == Status::Ok {
                // The one copy out of the shared window (within it: `ool_written` was checked).
                let mut bytes = alloc::vec![0u8; header.ool_written as usize];
                let read = self
                    .data
                    .view()
                    .read(output_window.offset as usize, &mut bytes);
                debug_assert!(read.is_ok());
                completion.bytes = bytes;
            }
        }
        self.windows.release(input_window);
        self.windows.release(output_window);
        self.in_flight[entry_index] = InFlight::default();
        self.in_flight_count -= 1;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        // Release: we are done reading the slot before the server may reuse it. The server
        // reads this seldom, so the store stays in our cache.
        self.store(ctrl::RSP_CONS, self.rsp_cons);
        Ok(true)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::mem::HeapRegion;
    use crate::services::arith::{self, ArithServer, Operands, Value};
    use crate::services::echo::{self, EchoServer};
    use crate::{PeerId, Registry, RingGeometry, ServerConnection, PASS_BUDGET};

    #[test]
    fn a_reused_completion_holds_only_the_latest_answer() {
        let geometry = RingGeometry::new(16).unwrap();
        let ring = HeapRegion::new(geometry.region_bytes());
        let data = HeapRegion::new(4096);
        let mut client = ClientConnection::new(&ring, &data, geometry, 4).unwrap();
        let mut server = ServerConnection::attach(&ring, &data, geometry, PeerId(1)).unwrap();
        let (mut echo, mut arith) = (echo::Handler(EchoServer), arith::Handler(ArithServer));
        let mut registry = Registry::new();
        registry.register(&mut echo).unwrap();
        registry.register(&mut arith).unwrap();
        let mut answer = Completion::default();
        assert_eq!(client.poll_response_into(&mut answer), Ok(false));
        assert_eq!(
            answer,
            Completion::default(),
            "nothing there: left as it was"
        );

        let sum = client
            .start(&arith::client::add(&Operands { a: 2, b: 3 }))
            .unwrap();
        client.publish();
        server.poll(&mut registry, &|| 0, PASS_BUDGET);
        assert_eq!(client.poll_response_into(&mut answer), Ok(true));
        assert_eq!(sum.finish(&answer).unwrap().value, Value { value: 5 });

        let ping = client.start(&echo::client::ping(&())).unwrap();
        client.publish();
        server.poll(&mut registry, &|| 0, PASS_BUDGET);
        assert_eq!(client.poll_response_into(&mut answer), Ok(true));
        assert!(
            answer.inline().is_empty(),
            "the sum's bytes are not the ping's"
        );
        // Equal to a fresh completion of the same answer, whatever the sum left behind.
        assert_eq!(answer, Completion::for_test(ping.call_id()));
        ping.finish(&answer).unwrap();
    }
}
