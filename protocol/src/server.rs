//! The server end of a connection: pulls requests (each slot copied once into private memory),
//! validates them, dispatches, writes responses, and applies the notification thresholds.
//! Never blocks and never trusts the client: a request it can read gets a status, a ring it
//! cannot make sense of breaks the connection; both are counted.
//!
//! [`ServerConnection::poll`] does a bounded amount of work, measured in the units of
//! [`crate::fair`]: a request is started only if its worst-case cost (known from its copied
//! header) fits what is left of the budget, and is charged what it really cost
//! ([`PollOutcome::work`]). Requests left on the ring when the budget runs out stay there
//! ([`PollOutcome::more`]) for the next pass, after the transport served its other
//! connections. [`PollOutcome::earned`] counts the well-formed two-way requests (passed header
//! validation and reached dispatch): only those earn a client allowance elsewhere (the
//! [`crate::storm`] guard), so a client cannot buy slack with requests it knows are refused or
//! with one-way calls that ask for no answer.
//!
//! Requests to a handler that takes calls one at a time (batch limit 1) go one by one, without
//! a batch gathered; consecutive requests to a batching handler are gathered and run together
//! (`handle.rs`). Each response is published as soon as it is written; a poll ends with one
//! full barrier and the notification check. What a connection reports is in `report.rs`.

use core::sync::atomic::{fence, Ordering};

use arrayvec::ArrayVec;

use crate::fair::{pass_budget, worst_case_cost};
use crate::layout::{
    ctrl, RequestHeader, RingGeometry, SetupError, FLAG_ONE_WAY, INLINE_CAPACITY, LAYOUT_VERSION,
    RING_MAGIC,
};
use crate::region::SharedRegion;
use crate::ring::{free_slots, needs_notify};
use crate::service::{Dispatcher, MAX_BATCH};
use crate::transport::{Clock, Notify, PeerId, SharedMemory};

mod handle;
mod report;

pub use report::{ConnectionStats, PollOutcome, RejectReason, Violation};

/// What a batch of requests cost, and how many of them earn their client allowance (see
/// [`PollOutcome`]).
#[derive(Default)]
struct Charge {
    cost: u64,
    earned: u32,
}

/// A request taken off the ring for the batch being gathered: its header (our copy), slot,
/// and worst-case cost.
struct Gathered {
    header: RequestHeader,
    slot: usize,
    one_way: bool,
    worst: u64,
}

/// Why a request was left on the ring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Its worst-case cost does not fit what is left of the budget.
    OverBudget,
    /// The connection broke taking it (see [`ServerConnection::broken`]).
    Broken,
}

/// The server end of one connection: the client's ring region and data region, mapped once.
pub struct ServerConnection<R: SharedMemory, D: SharedMemory> {
    ring: SharedRegion<R>,
    data: SharedRegion<D>,
    geometry: RingGeometry,
    peer: PeerId,
    req_cons: u32,
    rsp_prod_pvt: u32,
    rsp_prod_published: u32,
    /// Response slots known free when `RSP_CONS` was last read, less those taken since: the
    /// client's index is read again only when this runs out.
    rsp_space: u32,
    /// The next response slot to take for a two-way request (ahead of `rsp_prod_pvt` by the
    /// requests gathered and not yet answered).
    rsp_taken: u32,
    stats: ConnectionStats,
    broken: Option<Violation>,
    buffers: CallBuffers,
}

/// A connection's private buffers for the call being handled, kept from call to call so that
/// none is zeroed per call: what an earlier call left in them is never seen, as a handler reads
/// only its own call's inline arguments (`inline[..inline_len]`) and can only write the reply
/// (`CallContext::set_reply`), of which the response carries the bytes just set.
struct CallBuffers {
    inline: [u8; INLINE_CAPACITY],
    reply: [u8; INLINE_CAPACITY],
}

impl<R: SharedMemory, D: SharedMemory> ServerConnection<R, D> {
    /// Attaches to a ring region the client laid out: checks magic, layout revision and slot
    /// count (read once) against the geometry agreed out of band, reads the start index once,
    /// then publishes the server's consumer index at it and asks to be woken by the first
    /// request.
    /// (Any start index is safe: every later check is relative to the private indices.)
    pub fn attach(
        ring: R,
        data: D,
        geometry: RingGeometry,
        peer: PeerId,
    ) -> Result<Self, SetupError> {
        let ring = SharedRegion::new(ring)?;
        let data = SharedRegion::new(data)?;
        geometry.check_region_len(ring.len())?;
        let view = ring.view();
        let load = |offset| view.load_u32(offset, Ordering::Acquire).unwrap_or(0);
        let magic = load(ctrl::MAGIC);
        if magic != RING_MAGIC {
            return Err(SetupError::BadMagic(magic));
        }
        let layout_version = load(ctrl::LAYOUT_VERSION);
        if layout_version != LAYOUT_VERSION {
            return Err(SetupError::LayoutVersionMismatch(layout_version));
        }
        let slots = load(ctrl::SLOTS);
        if slots != geometry.slots() {
            return Err(SetupError::SlotCountMismatch {
                agreed: geometry.slots(),
                found: slots,
            });
        }
        let start = load(ctrl::START_INDEX);
        let connection = ServerConnection {
            ring,
            data,
            geometry,
            peer,
            req_cons: start,
            rsp_prod_pvt: start,
            rsp_prod_published: start,
            rsp_space: 0,
            rsp_taken: start,
            stats: ConnectionStats::default(),
            broken: None,
            buffers: CallBuffers {
                inline: [0; INLINE_CAPACITY],
                reply: [0; INLINE_CAPACITY],
            },
        };
        connection.store(ctrl::REQ_CONS, start);
        connection.store(ctrl::REQ_EVENT, start.wrapping_add(1));
        Ok(connection)
    }

    /// Gives the memory back (e.g. to unmap grants) when the connection is torn down.
    pub fn into_memory(self) -> (R, D) {
        (self.ring.into_memory(), self.data.into_memory())
    }

    /// The client's peer id, as the transport gave it to [`Self::attach`].
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The ring geometry agreed with the client.
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// This connection's counters.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// The first protocol violation, if the connection is broken. A broken connection is
    /// never touched again by `poll`; the transport should tear it down.
    pub fn broken(&self) -> Option<Violation> {
        self.broken
    }

    fn load(&self, offset: usize) -> u32 {
        // Control-block fields and slots' sequence words lie in the ring region, whose length
        // `attach` checked against the geometry.
        self.ring.load_control(offset)
    }

    fn store(&self, offset: usize, value: u32) {
        self.ring.store_control(offset, value);
    }

    fn break_with(&mut self, violation: Violation) {
        self.stats.violations += 1;
        if self.broken.is_none() {
            self.broken = Some(violation);
        }
    }

    /// Handles requests until the next one's worst-case cost does not fit what is left of
    /// `budget` work units (see [`crate::fair`]; a budget below
    /// [`crate::MAX_REQUEST_COST`] is raised to it, so at least one request always runs), the
    /// ring is empty, or a ring's worth was taken. Deadlines are checked against `clock`.
    pub fn poll(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
        budget: u64,
    ) -> PollOutcome {
        if self.broken.is_some() {
            return PollOutcome {
                broken: true,
                ..PollOutcome::default()
            };
        }
        // At most a ring's worth per pass, however fast the client refills it.
        let most = self.geometry.slots();
        let budget = pass_budget(budget);
        let (mut handled, mut work, mut earned) = (0, 0u64, 0);
        let (mut stop, mut budget_spent) = (false, false);
        while handled < most && !stop && self.has_requests() {
            // Acquire (in `has_requests`: the sequence word said the slot is complete), then
            // one copy.
            let first = self.next_request();
            if let Err(why) = self.take_request(&first, budget - work) {
                budget_spent = why == Stop::OverBudget;
                break;
            }
            handled += 1;
            let limit = dispatcher
                .batch_limit(first.header.service_id)
                .clamp(1, MAX_BATCH);
            let charge = if limit == 1 {
                // The common case: a handler that takes calls one at a time needs no batch.
                self.handle_one(&first, dispatcher, clock)
            } else {
                // Gather consecutive requests to the same service, as many as its handler takes
                // at once and their worst cases fit the budget left, then run them together.
                let mut left = budget - work - first.worst;
                let mut batch = ArrayVec::<Gathered, MAX_BATCH>::new();
                batch.push(first);
                while handled < most && batch.len() < limit && self.has_requests() {
                    let next = self.next_request();
                    if next.header.service_id != batch[0].header.service_id {
                        break;
                    }
                    if let Err(why) = self.take_request(&next, left) {
                        (stop, budget_spent) = (true, why == Stop::OverBudget);
                        break;
                    }
                    left -= next.worst;
                    handled += 1;
                    batch.push(next);
                }
                // A batch of one gets buffers for one.
                if batch.len() == 1 {
                    self.handle_batch::<1>(&batch, dispatcher, clock)
                } else {
                    self.handle_batch::<MAX_BATCH>(&batch, dispatcher, clock)
                }
            };
            work += charge.cost;
            earned += charge.earned;
        }
        if handled > 0 {
            // Release: our copies of the slots are complete before the client may reuse them.
            self.store(ctrl::REQ_CONS, self.req_cons);
        }
        let notify = self.publish_responses();
        let broken = self.broken.is_some();
        PollOutcome {
            handled,
            work,
            earned,
            notify,
            more: !broken && (budget_spent || handled == most) && self.has_requests(),
            broken,
        }
    }

    /// Like [`Self::poll`], then notifies the client through `notifier` if it asked for it.
    pub fn poll_and_notify(
        &mut self,
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
        budget: u64,
        notifier: &impl Notify,
    ) -> PollOutcome {
        let outcome = self.poll(dispatcher, clock, budget);
        if outcome.notify {
            notifier.notify();
        }
        outcome
    }

    /// The next request, its header copied once off the ring (the caller saw
    /// [`Self::has_requests`]); not taken yet.
    #[inline]
    fn next_request(&self) -> Gathered {
        let slot = self.geometry.request_slot_offset(self.req_cons);
        let mut next = Gathered {
            header: RequestHeader::default(),
            slot,
            one_way: false,
            worst: 0,
        };
        // The slot lies in the ring region, whose length `attach` checked (else: all zero).
        let _ = self.ring.view().read_pod_into(slot, &mut next.header);
        let header = &next.header;
        next.one_way = header.flags & FLAG_ONE_WAY != 0;
        // From our copy: what the handler may move is bounded by the windows it names.
        next.worst = worst_case_cost(header.ool_args.len as usize, header.ool_result.len as usize);
        next
    }

    /// Takes `next` off the ring if its worst-case cost fits the `left` work units and, for a
    /// two-way request, a response slot is free.
    #[inline]
    fn take_request(&mut self, next: &Gathered, left: u64) -> Result<(), Stop> {
        if next.worst > left {
            return Err(Stop::OverBudget);
        }
        if !next.one_way {
            if let Err(violation) = self.take_response_slot() {
                self.break_with(violation);
                return Err(Stop::Broken);
            }
        }
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(())
    }

    /// Takes a free response slot for a two-way request, re-reading the client's `rsp_cons`
    /// only when our last count ran out (then a bad index or a full ring is a violation).
    fn take_response_slot(&mut self) -> Result<(), Violation> {
        if self.rsp_space == 0 {
            let rsp_cons = self.load(ctrl::RSP_CONS);
            self.rsp_space = match free_slots(self.rsp_taken, rsp_cons, self.geometry.slots()) {
                None => {
                    return Err(Violation::RspConsOutOfRange {
                        rsp_cons,
                        // What the check compared against: the slots taken so far, those of
                        // requests still being served included.
                        rsp_prod: self.rsp_taken,
                    });
                }
                Some(0) => return Err(Violation::InFlightOverflow),
                Some(space) => space,
            };
        }
        self.rsp_space -= 1;
        self.rsp_taken = self.rsp_taken.wrapping_add(1);
        Ok(())
    }

    /// Ends a poll's publishing (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`): the responses written
    /// since the last one are published already (each as soon as it was written, see
    /// `handle::write_response`); one full barrier, then whether the client asked to be woken
    /// by any of them.
    fn publish_responses(&mut self) -> bool {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        self.rsp_prod_published = new;
        // Full barrier between publishing and reading the client's threshold (see client).
        fence(Ordering::SeqCst);
        let notify = needs_notify(old, new, self.load(ctrl::RSP_EVENT));
        if notify {
            self.stats.notifications += 1;
        }
        notify
    }

    /// Arms the request threshold before the transport sleeps and re-checks
    /// (`RING_FINAL_CHECK_FOR_REQUESTS`): `true` means requests (or a broken ring) are already
    /// there, so poll instead of sleeping; `false` means sleep until notified.
    pub fn prepare_to_sleep(&mut self) -> bool {
        if self.broken.is_some() {
            return true;
        }
        self.store(ctrl::REQ_EVENT, self.req_cons.wrapping_add(1));
        // Full barrier: the threshold must be visible before we re-read the producer index.
        fence(Ordering::SeqCst);
        self.has_requests()
    }

    /// Whether the client published a request we have not taken yet: the next request slot's
    /// sequence word is the index we expect there.
    pub fn has_requests(&self) -> bool {
        self.load(self.geometry.request_seq_offset(self.req_cons)) == self.req_cons
    }

    /// Whether the client still says it holds its pages (`client_alive` is nonzero). A Xen
    /// client's kernel clears it when the client process lets go of the pages (it exited, was
    /// killed, or revoked them); the transport then ends the connection. Read once per call.
    pub fn client_alive(&self) -> bool {
        self.load(ctrl::CLIENT_ALIVE) != 0
    }
}
