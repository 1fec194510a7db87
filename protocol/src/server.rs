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

use core::sync::atomic::{fence, Ordering};

use crate::fair::{actual_cost, pass_budget, worst_case_cost, CopyMeter, REQUEST_COST};
use crate::layout::{
    ctrl, unpublished_seq, RequestHeader, ResponseHeader, RingGeometry, SetupError, Status,
    FLAG_ONE_WAY, HEADER_SIZE, INLINE_CAPACITY, KNOWN_REQUEST_FLAGS, LAYOUT_VERSION, RING_MAGIC,
};
use crate::region::SharedRegion;
use crate::ring::{free_slots, needs_notify};
use arrayvec::ArrayVec;

use crate::service::{
    validate_ool, BatchedCall, CallContext, Dispatcher, OolArgs, OolResult, MAX_BATCH,
};
use crate::transport::{Clock, Notify, PeerId, SharedMemory};

/// Why the server broke a connection: the client wrote ring state no correct client can. Each
/// variant's doc comment is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The client's response consumer index {rsp_cons} is ahead of the producer index
    /// {rsp_prod} or more than a ring behind it.
    RspConsOutOfRange {
        /// The response consumer index the client published.
        rsp_cons: u32,
        /// The server's private response producer index.
        rsp_prod: u32,
    },
    /// The client sent a two-way request while every response slot held an unconsumed
    /// response (more two-way calls in flight than the ring has slots).
    InFlightOverflow,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Violation::RspConsOutOfRange { rsp_cons, rsp_prod } => write!(
                f,
                "the client's response consumer index {rsp_cons} is ahead of the producer \
                 index {rsp_prod} or more than a ring behind it"
            ),
            Violation::InFlightOverflow => f.write_str(
                "the client sent a two-way request while every response slot held an \
                 unconsumed response (more two-way calls in flight than the ring has slots)",
            ),
        }
    }
}

impl core::error::Error for Violation {}

/// Why a request was answered with an error before reaching a handler. Each variant's doc
/// comment is its message (the status it gets follows in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The inline arguments are longer than a slot holds (status `TooLarge`).
    InlineTooLong = 0,
    /// The request has flag bits this revision does not know (status `BadArguments`).
    UnknownFlags = 1,
    /// Reserved header fields are not zero (status `BadArguments`).
    ReservedNotZero = 2,
    /// The out-of-line argument window lies outside the data region (status `BadArguments`).
    OolArgsOutOfRange = 3,
    /// The out-of-line result window lies outside the data region (status `BadArguments`).
    OolResultOutOfRange = 4,
    /// The deadline had passed when the request was read (status `DeadlineExceeded`).
    DeadlinePassed = 5,
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RejectReason::InlineTooLong => "the inline arguments are longer than a slot holds",
            RejectReason::UnknownFlags => "the request has flag bits this revision does not know",
            RejectReason::ReservedNotZero => "reserved header fields are not zero",
            RejectReason::OolArgsOutOfRange => {
                "the out-of-line argument window lies outside the data region"
            }
            RejectReason::OolResultOutOfRange => {
                "the out-of-line result window lies outside the data region"
            }
            RejectReason::DeadlinePassed => "the deadline had passed when the request was read",
        })
    }
}

impl core::error::Error for RejectReason {}

impl RejectReason {
    /// How many reasons there are (the length of [`ConnectionStats::rejected`]).
    pub const COUNT: usize = 6;
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Requests taken off the ring.
    pub requests: u64,
    /// Of those, one-way requests (no response written).
    pub one_way: u64,
    /// Responses written.
    pub responses: u64,
    /// Outcome of every request (one-way included), indexed by `Status::index()`.
    pub by_status: [u64; Status::COUNT],
    /// Requests refused before dispatch, indexed by `RejectReason as usize`.
    pub rejected: [u64; RejectReason::COUNT],
    /// Polls after which the client had to be notified.
    pub notifications: u64,
    /// Protocol violations seen (the first one breaks the connection).
    pub violations: u64,
}

impl ConnectionStats {
    /// Requests that got `status`.
    pub fn status_count(&self, status: Status) -> u64 {
        self.by_status[status.index()]
    }

    /// Requests refused before dispatch for `reason`.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize]
    }

    /// Adds another connection's counters to these (totals over a server's connections).
    pub fn merge_from(&mut self, other: &ConnectionStats) {
        self.requests += other.requests;
        self.one_way += other.one_way;
        self.responses += other.responses;
        for (sum, n) in self.by_status.iter_mut().zip(other.by_status) {
            *sum += n;
        }
        for (sum, n) in self.rejected.iter_mut().zip(other.rejected) {
            *sum += n;
        }
        self.notifications += other.notifications;
        self.violations += other.violations;
    }

    /// Requests whose status was not `Ok`.
    pub fn errors(&self) -> u64 {
        self.requests - self.by_status[Status::Ok.index()]
    }
}

/// What one [`ServerConnection::poll`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Requests taken off the ring.
    pub handled: u32,
    /// Work units charged for them (see [`crate::fair`]); never more than the poll's budget
    /// (raised to [`crate::MAX_REQUEST_COST`]).
    pub work: u64,
    /// Of the requests handled, the well-formed two-way ones (passed header validation and
    /// reached dispatch, whatever status the handler gave): what a storm guard may credit.
    pub earned: u32,
    /// Responses were published and the client asked to be woken: call the transport's notify.
    pub notify: bool,
    /// Requests are left because the budget ran out: poll again (after serving others).
    pub more: bool,
    /// The connection is broken (now or earlier); see [`ServerConnection::broken`].
    pub broken: bool,
}

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
            // Gather consecutive requests to one service, as many as its handler takes at once
            // and their worst cases fit the budget left, then run them together.
            let mut batch = ArrayVec::<Gathered, MAX_BATCH>::new();
            let mut batch_worst = 0u64;
            let mut limit = 1;
            while handled < most && batch.len() < limit {
                // Acquire (the sequence word said the slot is complete), then one copy.
                if !batch.is_empty() && !self.has_requests() {
                    break;
                }
                let slot = self.geometry.request_slot_offset(self.req_cons);
                let header: RequestHeader = self.ring.view().read_pod(slot).unwrap_or_default();
                match batch.first() {
                    None => {
                        limit = dispatcher
                            .batch_limit(header.service_id)
                            .clamp(1, MAX_BATCH)
                    }
                    // A batch is calls to one service.
                    Some(first) if first.header.service_id != header.service_id => break,
                    Some(_) => {}
                }
                // From our copy: what the handler may move is bounded by the windows it names.
                let worst =
                    worst_case_cost(header.ool_args.len as usize, header.ool_result.len as usize);
                if worst > budget - work - batch_worst {
                    (stop, budget_spent) = (true, true);
                    break;
                }
                let one_way = header.flags & FLAG_ONE_WAY != 0;
                if !one_way {
                    match self.take_response_slot() {
                        Ok(()) => {}
                        Err(violation) => {
                            self.break_with(violation);
                            stop = true;
                            break;
                        }
                    }
                }
                self.req_cons = self.req_cons.wrapping_add(1);
                handled += 1;
                batch_worst += worst;
                batch.push(Gathered {
                    header,
                    slot,
                    one_way,
                    worst,
                });
            }
            // A batch of one (every call, where the handler takes them one at a time) gets
            // buffers for one.
            let charge = if batch.len() == 1 {
                self.handle_batch::<1>(&batch, dispatcher, clock)
            } else {
                self.handle_batch::<MAX_BATCH>(&batch, dispatcher, clock)
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

    /// Takes a free response slot for a two-way request, re-reading the client's `rsp_cons`
    /// only when our last count ran out (then a bad index or a full ring is a violation).
    fn take_response_slot(&mut self) -> Result<(), Violation> {
        if self.rsp_space == 0 {
            let rsp_cons = self.load(ctrl::RSP_CONS);
            self.rsp_space = match free_slots(self.rsp_taken, rsp_cons, self.geometry.slots()) {
                None => {
                    return Err(Violation::RspConsOutOfRange {
                        rsp_cons,
                        rsp_prod: self.rsp_prod_pvt,
                    })
                }
                Some(0) => return Err(Violation::InFlightOverflow),
                Some(space) => space,
            };
        }
        self.rsp_space -= 1;
        self.rsp_taken = self.rsp_taken.wrapping_add(1);
        Ok(())
    }

    /// Validates each gathered request's header (already copied), copies its inline
    /// arguments, runs the accepted ones as one batch and writes the responses (but for
    /// one-way calls), in ring order. Returns what the requests cost. `N`: room for the
    /// batch (at least its length, at most [`MAX_BATCH`]).
    fn handle_batch<const N: usize>(
        &mut self,
        batch: &[Gathered],
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
    ) -> Charge {
        debug_assert!(batch.len() <= N && N <= MAX_BATCH);
        let batch = &batch[..batch.len().min(N)];
        let mut checked = ArrayVec::<_, N>::new();
        for g in batch {
            self.stats.requests += 1;
            if g.one_way {
                self.stats.one_way += 1;
            }
            let check = self.check_header(&g.header, clock);
            if let Err((_, reason)) = check {
                self.stats.rejected[reason as usize] += 1;
            }
            checked.push(check);
        }
        let meters: [CopyMeter; N] = core::array::from_fn(|i| match checked.get(i) {
            Some(Ok(((_, args_len), (_, result_len)))) => {
                CopyMeter::for_windows(*args_len, *result_len)
            }
            _ => CopyMeter::for_windows(0, 0),
        });
        let mut inline_args = [[0u8; INLINE_CAPACITY]; N];
        let mut replies = [[0u8; INLINE_CAPACITY]; N];
        // (status, reply length, out-of-line bytes written) per request.
        let mut outcomes = [(Status::Ok, 0usize, 0usize); N];
        {
            let view = self.ring.view();
            let data = self.data.view();
            let mut calls = ArrayVec::<BatchedCall<'_>, N>::new();
            let mut positions = ArrayVec::<usize, N>::new();
            let slots = inline_args.iter_mut().zip(replies.iter_mut()).zip(&meters);
            for (i, ((inline, reply), meter)) in slots.enumerate().take(batch.len()) {
                let g = &batch[i];
                match checked[i] {
                    Err((status, _)) => outcomes[i].0 = status,
                    Ok(((args_offset, args_len), (result_offset, result_len))) => {
                        let inline_len = g.header.inline_len as usize;
                        let copied = view.read(g.slot + HEADER_SIZE, &mut inline[..inline_len]);
                        debug_assert!(copied.is_ok());
                        calls.push(BatchedCall {
                            call: CallContext::new(
                                self.peer,
                                g.header,
                                &inline[..inline_len],
                                OolArgs::new(data, args_offset, args_len, meter),
                                OolResult::new(data, result_offset, result_len, meter),
                                reply,
                            ),
                            status: Status::Ok,
                        });
                        positions.push(i);
                    }
                }
            }
            dispatcher.dispatch_batch(&mut calls);
            for (one, &i) in calls.iter().zip(&positions) {
                outcomes[i] = if one.status == Status::Ok {
                    (one.status, one.call.reply_len(), one.call.ool_written())
                } else {
                    (one.status, 0, 0)
                };
            }
        }
        let mut charges = Charge::default();
        for (i, g) in batch.iter().enumerate() {
            let (status, reply_len, ool_written) = outcomes[i];
            let (cost, earned) = match checked[i] {
                Err(_) => (REQUEST_COST, false),
                Ok(_) => (actual_cost(meters[i].moved()).min(g.worst), !g.one_way),
            };
            debug_assert!(cost <= g.worst);
            charges.cost += cost;
            charges.earned += u32::from(earned);
            self.stats.by_status[status.index()] += 1;
            if !g.one_way {
                self.write_response(
                    &g.header,
                    status,
                    &replies[i][..reply_len],
                    ool_written,
                    clock,
                );
            }
        }
        charges
    }

    /// Writes the response to `request` into the next response slot.
    fn write_response(
        &mut self,
        request: &RequestHeader,
        status: Status,
        reply: &[u8],
        ool_written: usize,
        clock: &impl Clock,
    ) {
        let response = ResponseHeader {
            call_id: request.call_id,
            status: status.to_wire(),
            inline_len: reply.len() as u32,
            // Bounded by the result window, itself bounded by the u32 length in the request.
            ool_written: ool_written as u32,
            // Published by `publish_responses`, which stores the index itself here.
            seq: unpublished_seq(self.rsp_prod_pvt, self.geometry.slots()),
            server_time_ns: clock.recent_ns(),
            reserved: [0; 8],
        };
        let slot = self.geometry.response_slot_offset(self.rsp_prod_pvt);
        let view = self.ring.view();
        let written = view
            .write_pod(slot, &response)
            .and_then(|()| view.write(slot + HEADER_SIZE, reply));
        debug_assert!(written.is_ok());
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        self.stats.responses += 1;
    }

    /// Everything about a request that can be refused without running a handler; on success
    /// the validated (offset, len) of the argument and result windows.
    #[allow(clippy::type_complexity)]
    fn check_header(
        &self,
        header: &RequestHeader,
        clock: &impl Clock,
    ) -> Result<((usize, usize), (usize, usize)), (Status, RejectReason)> {
        if header.inline_len as usize > INLINE_CAPACITY {
            return Err((Status::TooLarge, RejectReason::InlineTooLong));
        }
        if header.flags & !KNOWN_REQUEST_FLAGS != 0 {
            return Err((Status::BadArguments, RejectReason::UnknownFlags));
        }
        if header.reserved1 != [0; 2] {
            return Err((Status::BadArguments, RejectReason::ReservedNotZero));
        }
        if header.deadline_ns != 0 && clock.now_ns() > header.deadline_ns {
            return Err((Status::DeadlineExceeded, RejectReason::DeadlinePassed));
        }
        let data_len = self.data.len();
        let args = validate_ool(header.ool_args, data_len)
            .ok_or((Status::BadArguments, RejectReason::OolArgsOutOfRange))?;
        let result = validate_ool(header.ool_result, data_len)
            .ok_or((Status::BadArguments, RejectReason::OolResultOutOfRange))?;
        Ok((args, result))
    }

    /// Publishes written responses (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`); whether the client
    /// asked to be woken.
    fn publish_responses(&mut self) -> bool {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        // The slots' contents (and out-of-line results) first, then their sequence words.
        let geometry = self.geometry;
        self.ring
            .publish_slots(old, new, |index| geometry.response_seq_offset(index));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_adds_every_counter() {
        let mut a = ConnectionStats {
            requests: 3,
            one_way: 1,
            responses: 2,
            ..Default::default()
        };
        a.by_status[Status::Ok.index()] = 2;
        a.by_status[Status::Busy.index()] = 1;
        a.rejected[RejectReason::DeadlinePassed as usize] = 1;
        let mut b = ConnectionStats {
            notifications: 4,
            violations: 1,
            ..a
        };
        b.merge_from(&a);
        assert_eq!((b.requests, b.one_way, b.responses), (6, 2, 4));
        assert_eq!(b.status_count(Status::Ok), 4);
        assert_eq!(b.status_count(Status::Busy), 2);
        assert_eq!(b.rejected_count(RejectReason::DeadlinePassed), 2);
        assert_eq!((b.notifications, b.violations), (4, 1));
        assert_eq!(b.errors(), 2);
    }

    #[cfg(feature = "std")]
    #[test]
    fn violations_name_the_indices() {
        use std::string::ToString;
        assert_eq!(
            Violation::RspConsOutOfRange {
                rsp_cons: 100_007,
                rsp_prod: 7
            }
            .to_string(),
            "the client's response consumer index 100007 is ahead of the producer index 7 or \
             more than a ring behind it"
        );
        assert_eq!(
            RejectReason::OolResultOutOfRange.to_string(),
            "the out-of-line result window lies outside the data region"
        );
    }
}
