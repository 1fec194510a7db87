//! The client end of a connection: lays out the ring region, allocates call ids, caps calls in
//! flight, writes requests, and reads responses, validating them (the server is a peer too).
//! Never blocks: the transport waits, using [`ClientConnection::publish`]'s "notify?" answer
//! and [`ClientConnection::prepare_to_wait`].

use core::marker::PhantomData;
use core::sync::atomic::{fence, Ordering};

use zerocopy::{FromBytes, IntoBytes};

use crate::layout::{
    ctrl, unpublished_seq, OolRef, RequestHeader, RingGeometry, SetupError, Status, CLIENT_ALIVE,
    FLAG_ONE_WAY, HEADER_SIZE, INLINE_CAPACITY, LAYOUT_VERSION, PAGE_SIZE, RING_MAGIC,
};
use crate::region::{RegionView, SharedRegion};
use crate::ring::{free_slots, needs_notify};
use crate::service::validate_ool;
use crate::transport::{Notify, SharedMemory};
use crate::windows::WindowAllocator;

mod bytes;
#[cfg(feature = "alloc")]
mod calls;
mod error;
mod responses;
#[cfg(feature = "alloc")]
pub use calls::{Arrival, CallTable};
pub use error::{CallError, ClientViolation};
pub use responses::Completion;

/// Upper bound of the per-connection in-flight cap (size of the client's call table).
pub const MAX_IN_FLIGHT: usize = 64;

/// An untyped call, as written into a request slot.
#[derive(Clone, Copy, Debug)]
pub struct CallRequest<'a> {
    /// The service called (its `SERVICE_ID`).
    pub service_id: u32,
    /// The method called, by id within the service.
    pub method_id: u32,
    /// The interface version the caller was built against (the service's `VERSION`).
    pub version: u32,
    /// Absolute deadline on the transport's clock, 0 = none.
    pub deadline_ns: u64,
    /// No response wanted ([`FLAG_ONE_WAY`]): the call is not tracked.
    pub one_way: bool,
    /// Inline arguments, at most [`INLINE_CAPACITY`] bytes.
    pub inline: &'a [u8],
    /// Out-of-line arguments in the data region.
    pub ool_args: OolRef,
    /// Result buffer in the data region.
    pub ool_result: OolRef,
}

/// A call built by a generated stub (`<service>::client::<method>(&args)`); `R` is the reply type.
#[derive(Clone, Copy, Debug)]
pub struct TypedCall<'a, R> {
    request: CallRequest<'a>,
    _reply: PhantomData<fn() -> R>,
}

impl<'a, R> TypedCall<'a, R> {
    /// A two-way call of method `method_id` of service `service_id` at interface `version`,
    /// with `inline` as its arguments, no deadline and no out-of-line windows.
    pub fn new(service_id: u32, method_id: u32, version: u32, inline: &'a [u8]) -> Self {
        TypedCall {
            request: CallRequest {
                service_id,
                method_id,
                version,
                deadline_ns: 0,
                one_way: false,
                inline,
                ool_args: OolRef::NONE,
                ool_result: OolRef::NONE,
            },
            _reply: PhantomData,
        }
    }

    /// Absolute deadline on the transport's clock.
    pub fn deadline_ns(mut self, deadline_ns: u64) -> Self {
        self.request.deadline_ns = deadline_ns;
        self
    }

    /// A copy of this call with an absolute deadline (for a call held by reference; no bound
    /// on the reply type).
    pub fn with_deadline_ns(&self, deadline_ns: u64) -> Self {
        TypedCall {
            request: CallRequest {
                deadline_ns,
                ..self.request
            },
            _reply: PhantomData,
        }
    }

    /// Out-of-line arguments: `window` of the data region, written before the call starts.
    pub fn ool_args(mut self, window: OolRef) -> Self {
        self.request.ool_args = window;
        self
    }

    /// Result buffer: `window` of the data region, which the handler may write.
    pub fn ool_result(mut self, window: OolRef) -> Self {
        self.request.ool_result = window;
        self
    }

    /// No response: the call is not tracked and its result is dropped.
    pub fn one_way(mut self) -> Self {
        self.request.one_way = true;
        self
    }

    /// Overrides the interface version (tests of version checking).
    pub fn version(mut self, version: u32) -> Self {
        self.request.version = version;
        self
    }

    /// The untyped request this call writes into a slot.
    pub fn request(&self) -> &CallRequest<'a> {
        &self.request
    }
}

/// A decoded successful reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<R> {
    /// The decoded inline result.
    pub value: R,
    /// Bytes the handler wrote at the start of the call's result window.
    pub ool_written: u32,
}

/// A started two-way call; match it with its [`Completion`] by `call_id`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a pending call's completion must be collected"]
pub struct Pending<R> {
    call_id: u64,
    _reply: PhantomData<fn() -> R>,
}

impl<R> Pending<R> {
    /// The call's id, which its [`Completion`] carries.
    pub fn call_id(&self) -> u64 {
        self.call_id
    }
}

impl<R: FromBytes> Pending<R> {
    /// Decodes the typed reply from this call's completion.
    pub fn finish(self, completion: &Completion) -> Result<Reply<R>, CallError> {
        if completion.call_id != self.call_id {
            return Err(CallError::WrongCompletion {
                expected: self.call_id,
                got: completion.call_id,
            });
        }
        if completion.status != Status::Ok {
            return Err(CallError::Remote(completion.status));
        }
        let value =
            R::read_from_bytes(completion.inline()).map_err(|_| CallError::MalformedReply)?;
        Ok(Reply {
            value,
            ool_written: completion.ool_written,
        })
    }
}

#[derive(Clone, Copy, Default)]
struct InFlight {
    /// 0 = free slot in the table.
    call_id: u64,
    result_window_len: u32,
    /// Windows the allocator placed for the call (`OolRef::NONE` if none): released when the
    /// response arrives, the result bytes copied out of the second first.
    allocated: [OolRef; 2],
}

/// The client end of one connection over a ring region and a data region.
pub struct ClientConnection<R: SharedMemory, D: SharedMemory> {
    ring: SharedRegion<R>,
    data: SharedRegion<D>,
    geometry: RingGeometry,
    req_prod_pvt: u32,
    req_prod_published: u32,
    /// Request slots known free when `REQ_CONS` was last read, less those used since: the
    /// server's index is read again only when this runs out.
    req_space: u32,
    rsp_cons: u32,
    max_in_flight: usize,
    in_flight: [InFlight; MAX_IN_FLIGHT],
    in_flight_count: usize,
    next_call_id: u64,
    broken: Option<ClientViolation>,
    windows: WindowAllocator,
}

impl<R: SharedMemory, D: SharedMemory> ClientConnection<R, D> {
    /// Lays out a fresh ring region (zeroed, magic, indices at 0, every slot unpublished)
    /// before the server attaches.
    /// `max_in_flight` caps two-way calls awaiting a response: `1..=min(slots, MAX_IN_FLIGHT)`.
    pub fn new(
        ring: R,
        data: D,
        geometry: RingGeometry,
        max_in_flight: usize,
    ) -> Result<Self, SetupError> {
        Self::with_start_index(ring, data, geometry, max_in_flight, 0)
    }

    /// Like [`Self::new`], with all ring indices starting at `start` instead of 0 (the server
    /// reads it once when it attaches). Tests use it to run connections across the wrap of the
    /// 32-bit indices.
    pub fn with_start_index(
        ring: R,
        data: D,
        geometry: RingGeometry,
        max_in_flight: usize,
        start: u32,
    ) -> Result<Self, SetupError> {
        let ring = SharedRegion::new(ring)?;
        let data = SharedRegion::new(data)?;
        geometry.check_region_len(ring.len())?;
        if max_in_flight == 0
            || max_in_flight > MAX_IN_FLIGHT
            || max_in_flight > geometry.slots() as usize
        {
            return Err(SetupError::BadInFlightCap(max_in_flight));
        }
        let view = ring.view();
        let init = |offset, value| view.store_u32(offset, value, Ordering::Relaxed);
        let laid_out = view
            .fill(0, PAGE_SIZE, 0)
            .and_then(|()| init(ctrl::MAGIC, RING_MAGIC))
            .and_then(|()| init(ctrl::LAYOUT_VERSION, LAYOUT_VERSION))
            .and_then(|()| init(ctrl::SLOTS, geometry.slots()))
            .and_then(|()| init(ctrl::START_INDEX, start))
            .and_then(|()| init(ctrl::RSP_CONS, start))
            .and_then(|()| init(ctrl::REQ_CONS, start))
            // Wake me on the first response; the server sets its own threshold when it attaches.
            .and_then(|()| init(ctrl::RSP_EVENT, start.wrapping_add(1)))
            .and_then(|()| init(ctrl::REQ_EVENT, start.wrapping_add(1)))
            .and_then(|()| init(ctrl::CLIENT_ALIVE, CLIENT_ALIVE));
        // The region length was checked against the geometry above, so the control page and
        // every slot fit.
        debug_assert!(laid_out.is_ok());
        let slots = geometry.slots();
        for index in (0..slots).map(|k| start.wrapping_add(k)) {
            let unpublished = unpublished_seq(index, slots);
            let request = geometry.request_seq_offset(index);
            let response = geometry.response_seq_offset(index);
            let laid_out = init(request, unpublished).and_then(|()| init(response, unpublished));
            debug_assert!(laid_out.is_ok());
        }
        fence(Ordering::Release);
        let windows = WindowAllocator::new(data.len());
        Ok(ClientConnection {
            ring,
            data,
            geometry,
            req_prod_pvt: start,
            req_prod_published: start,
            req_space: 0,
            rsp_cons: start,
            max_in_flight,
            in_flight: [InFlight::default(); MAX_IN_FLIGHT],
            in_flight_count: 0,
            next_call_id: 1,
            broken: None,
            windows,
        })
    }

    /// Gives the memory back (e.g. to unmap grants) when the connection is torn down.
    pub fn into_memory(self) -> (R, D) {
        (self.ring.into_memory(), self.data.into_memory())
    }

    /// The ring geometry the connection was laid out with.
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// The data region, for writing out-of-line arguments and reading results.
    pub fn data(&self) -> RegionView<'_> {
        self.data.view()
    }

    /// The ring region (tests and diagnostics).
    pub fn ring(&self) -> RegionView<'_> {
        self.ring.view()
    }

    /// The first protocol violation the server committed, if the connection is broken; every
    /// later call fails with [`CallError::Broken`].
    pub fn broken(&self) -> Option<ClientViolation> {
        self.broken
    }

    /// Two-way calls started and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight_count
    }

    /// The cap on two-way calls awaiting a response, as given to [`Self::new`].
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    fn fail(&mut self, violation: ClientViolation) -> CallError {
        if self.broken.is_none() {
            self.broken = Some(violation);
        }
        CallError::Broken(self.broken.unwrap_or(violation))
    }

    fn load(&self, offset: usize) -> u32 {
        // Control-block fields and slots' sequence words lie in the ring region, whose length
        // `new` checked against the geometry.
        self.ring.load_control(offset)
    }

    fn store(&self, offset: usize, value: u32) {
        self.ring.store_control(offset, value);
    }

    /// Writes a request into the next slot without publishing it (see [`Self::publish`]);
    /// returns its call id. Batches of `enqueue` + one `publish` need one notification.
    pub fn enqueue(&mut self, request: &CallRequest<'_>) -> Result<u64, CallError> {
        if let Some(v) = self.broken {
            return Err(CallError::Broken(v));
        }
        if request.inline.len() > INLINE_CAPACITY {
            return Err(CallError::InlineTooLarge(request.inline.len()));
        }
        let data_len = self.data.len();
        if validate_ool(request.ool_args, data_len).is_none() {
            return Err(CallError::BadOolRef(request.ool_args));
        }
        if validate_ool(request.ool_result, data_len).is_none() {
            return Err(CallError::BadOolRef(request.ool_result));
        }
        if !request.one_way && self.in_flight_count >= self.max_in_flight {
            return Err(CallError::TooManyInFlight);
        }
        if self.req_space == 0 {
            let req_cons = self.load(ctrl::REQ_CONS);
            match free_slots(self.req_prod_pvt, req_cons, self.geometry.slots()) {
                None => {
                    let req_prod = self.req_prod_pvt;
                    return Err(
                        self.fail(ClientViolation::ReqConsOutOfRange { req_cons, req_prod })
                    );
                }
                Some(0) => return Err(CallError::RingFull),
                Some(space) => self.req_space = space,
            }
        }
        let call_id = self.next_call_id;
        self.next_call_id = self.next_call_id.wrapping_add(1).max(1);
        // The bookkeeping first, the slot last: a `publish` that follows at once stores the
        // sequence word right after the slot's contents.
        if !request.one_way {
            if let Some(entry) = self.in_flight.iter_mut().find(|e| e.call_id == 0) {
                *entry = InFlight {
                    call_id,
                    result_window_len: request.ool_result.len,
                    allocated: [OolRef::NONE; 2],
                };
                self.in_flight_count += 1;
            }
        }
        let header = RequestHeader {
            call_id,
            deadline_ns: request.deadline_ns,
            service_id: request.service_id,
            method_id: request.method_id,
            version: request.version,
            flags: if request.one_way { FLAG_ONE_WAY } else { 0 },
            inline_len: request.inline.len() as u32,
            // Published by `publish`, which stores the index itself here.
            seq: unpublished_seq(self.req_prod_pvt, self.geometry.slots()),
            ool_args: request.ool_args,
            ool_result: request.ool_result,
            reserved1: [0; 2],
        };
        let slot = self.geometry.request_slot_offset(self.req_prod_pvt);
        let view = self.ring.view();
        let written = view
            .write_pod(slot, &header)
            .and_then(|()| view.write(slot + HEADER_SIZE, request.inline));
        // The slot lies inside the ring region, whose length `new` checked.
        debug_assert!(written.is_ok());
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        self.req_space -= 1;
        Ok(call_id)
    }

    /// Publishes enqueued requests; returns whether the server asked to be notified (then call
    /// the transport's `notify`). This is `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`.
    pub fn publish(&mut self) -> bool {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        if old == new || self.broken.is_some() {
            return false;
        }
        // The slots' contents (and out-of-line arguments) first, then their sequence words.
        let geometry = self.geometry;
        self.ring
            .publish_slots(old, new, |index| geometry.request_seq_offset(index));
        self.req_prod_published = new;
        // Full barrier: our index store must be visible before we read the server's threshold,
        // or a server arming for sleep at the same moment and we would both miss each other.
        fence(Ordering::SeqCst);
        needs_notify(old, new, self.load(ctrl::REQ_EVENT))
    }

    /// Starts a typed call (not yet published).
    pub fn start<T>(&mut self, call: &TypedCall<'_, T>) -> Result<Pending<T>, CallError> {
        let call_id = self.enqueue(call.request())?;
        Ok(Pending {
            call_id,
            _reply: PhantomData,
        })
    }

    /// Starts a typed one-way call (not yet published).
    pub fn start_one_way<T>(&mut self, call: TypedCall<'_, T>) -> Result<u64, CallError> {
        self.enqueue(call.one_way().request())
    }

    /// Starts, publishes, and notifies the server if it asked for it.
    pub fn submit<T>(
        &mut self,
        call: &TypedCall<'_, T>,
        notifier: &impl Notify,
    ) -> Result<Pending<T>, CallError> {
        let pending = self.start(call)?;
        if self.publish() {
            notifier.notify();
        }
        Ok(pending)
    }

    /// Arms the response threshold before the transport sleeps and re-checks
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`): `true` means responses (or a broken ring) are already
    /// there, so poll instead of sleeping; `false` means sleep until notified.
    pub fn prepare_to_wait(&mut self) -> bool {
        if self.broken.is_some() {
            return true;
        }
        self.store(ctrl::RSP_EVENT, self.rsp_cons.wrapping_add(1));
        // Full barrier: the threshold must be visible before we re-read the producer index,
        // closing the race with a server publishing at this moment.
        fence(Ordering::SeqCst);
        self.has_responses()
    }
}

/// Convenience for tests and simple clients: decode a completion's inline bytes as `T`.
pub fn decode_inline<T: FromBytes + IntoBytes>(completion: &Completion) -> Option<T> {
    T::read_from_bytes(completion.inline()).ok()
}
