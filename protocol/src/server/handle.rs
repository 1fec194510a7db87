//! Handling the requests a poll took off the ring: each header (already copied) is validated,
//! the accepted requests' inline arguments copied once, the handlers run, and each two-way
//! request answered in ring order, charged what it cost (see [`crate::fair`]).
//!
//! A request to a service whose handler takes calls one at a time (batch limit 1, every
//! service on the host) goes through [`ServerConnection::handle_one`] and
//! [`Dispatcher::dispatch`]; consecutive requests to a batching service through
//! [`ServerConnection::handle_batch`] and [`Dispatcher::dispatch_batch`]. Both validate,
//! count and charge alike ([`ServerConnection::admit`], [`ServerConnection::settle`]).

use arrayvec::ArrayVec;

use super::{Charge, Gathered, RejectReason, ServerConnection};
use crate::fair::{actual_cost, CopyMeter, REQUEST_COST};
use crate::layout::{
    ctrl, unpublished_seq, RequestHeader, ResponseHeader, Status, HEADER_SIZE, INLINE_CAPACITY,
    KNOWN_REQUEST_FLAGS,
};
use crate::region::RegionView;
use crate::service::{
    validate_ool, BatchedCall, CallContext, Dispatcher, OolArgs, OolResult, MAX_BATCH,
};
use crate::transport::{Clock, PeerId, SharedMemory};

/// The validated `(offset, len)` of a request's argument and result windows.
#[derive(Clone, Copy)]
struct Windows {
    args: (usize, usize),
    result: (usize, usize),
}

impl Windows {
    /// The meter of a call through these windows.
    #[inline]
    fn meter(&self) -> CopyMeter {
        CopyMeter::for_windows(self.args.1, self.result.1)
    }
}

/// How a handled request ended: its status, the inline reply's length, the out-of-line bytes
/// written (both 0 unless `Ok`), and the bytes its handler moved (`None`: refused before
/// dispatch).
#[derive(Clone, Copy)]
struct Outcome {
    status: Status,
    reply_len: usize,
    ool_written: usize,
    moved: Option<usize>,
}

impl Outcome {
    #[inline]
    fn refused(status: Status) -> Self {
        Outcome {
            status,
            reply_len: 0,
            ool_written: 0,
            moved: None,
        }
    }

    /// What a dispatched call ended with (`status`, as its handler said).
    #[inline]
    fn dispatched(call: &CallContext<'_>, status: Status, meter: &CopyMeter) -> Self {
        let (reply_len, ool_written) = if status == Status::Ok {
            (call.reply_len(), call.ool_written())
        } else {
            (0, 0)
        };
        Outcome {
            status,
            reply_len,
            ool_written,
            moved: Some(meter.moved()),
        }
    }
}

/// The context of an accepted request: copies its inline arguments (length validated) out of
/// its slot into `inline`, once.
#[allow(clippy::too_many_arguments)]
#[inline]
fn call_context<'a>(
    peer: PeerId,
    ring: RegionView<'_>,
    data: RegionView<'a>,
    g: &'a Gathered,
    windows: Windows,
    meter: &'a CopyMeter,
    inline: &'a mut [u8; INLINE_CAPACITY],
    reply: &'a mut [u8; INLINE_CAPACITY],
) -> CallContext<'a> {
    let inline = &mut inline[..g.header.inline_len as usize];
    let copied = ring.read(g.slot + HEADER_SIZE, inline);
    // The slot lies in the ring region, whose length `attach` checked.
    debug_assert!(copied.is_ok());
    let (args_offset, args_len) = windows.args;
    let (result_offset, result_len) = windows.result;
    CallContext::new(
        peer,
        &g.header,
        inline,
        OolArgs::new(data, args_offset, args_len, meter),
        OolResult::new(data, result_offset, result_len, meter),
        reply,
    )
}

impl<R: SharedMemory, D: SharedMemory> ServerConnection<R, D> {
    /// Validates, runs and answers one request (to a handler that takes calls one at a time).
    #[inline]
    pub(super) fn handle_one(
        &mut self,
        g: &Gathered,
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
    ) -> Charge {
        let outcome = match self.admit(g, clock) {
            Err(status) => Outcome::refused(status),
            Ok(windows) => {
                let meter = windows.meter();
                let ServerConnection {
                    ring,
                    data,
                    peer,
                    buffers,
                    ..
                } = self;
                let mut call = call_context(
                    *peer,
                    ring.view(),
                    data.view(),
                    g,
                    windows,
                    &meter,
                    &mut buffers.inline,
                    &mut buffers.reply,
                );
                let status = dispatcher.dispatch(&mut call);
                Outcome::dispatched(&call, status, &meter)
            }
        };
        let mut charge = Charge::default();
        self.settle(g, outcome, None, clock, &mut charge);
        charge
    }

    /// Validates each gathered request's header, copies its inline arguments, runs the
    /// accepted ones as one batch and writes the responses (but for one-way calls), in ring
    /// order. Returns what the requests cost. `N`: room for the batch (at least its length, at
    /// most [`MAX_BATCH`]).
    pub(super) fn handle_batch<const N: usize>(
        &mut self,
        batch: &[Gathered],
        dispatcher: &mut impl Dispatcher,
        clock: &impl Clock,
    ) -> Charge {
        debug_assert!(batch.len() <= N && N <= MAX_BATCH);
        let batch = &batch[..batch.len().min(N)];
        let mut checked = ArrayVec::<_, N>::new();
        for g in batch {
            checked.push(self.admit(g, clock));
        }
        let meters: [CopyMeter; N] = core::array::from_fn(|i| match checked.get(i) {
            Some(Ok(windows)) => windows.meter(),
            _ => CopyMeter::for_windows(0, 0),
        });
        let mut inline_args = [[0u8; INLINE_CAPACITY]; N];
        let mut replies = [[0u8; INLINE_CAPACITY]; N];
        let mut outcomes = [Outcome::refused(Status::Ok); N];
        {
            let (ring, data) = (self.ring.view(), self.data.view());
            let mut calls = ArrayVec::<BatchedCall<'_>, N>::new();
            let mut positions = ArrayVec::<usize, N>::new();
            let slots = inline_args.iter_mut().zip(replies.iter_mut()).zip(&meters);
            for (i, ((inline, reply), meter)) in slots.enumerate().take(batch.len()) {
                match checked[i] {
                    Err(status) => outcomes[i] = Outcome::refused(status),
                    Ok(windows) => {
                        calls.push(BatchedCall {
                            call: call_context(
                                self.peer, ring, data, &batch[i], windows, meter, inline, reply,
                            ),
                            status: Status::Ok,
                        });
                        positions.push(i);
                    }
                }
            }
            dispatcher.dispatch_batch(&mut calls);
            for (one, &i) in calls.iter().zip(&positions) {
                outcomes[i] = Outcome::dispatched(&one.call, one.status, &meters[i]);
            }
        }
        let mut charge = Charge::default();
        for ((g, outcome), reply) in batch.iter().zip(outcomes).zip(&replies) {
            self.settle(g, outcome, Some(reply), clock, &mut charge);
        }
        charge
    }

    /// Counts a request taken off the ring and checks its header: the validated windows, or
    /// the status it is refused with (the reason counted).
    #[inline]
    fn admit(&mut self, g: &Gathered, clock: &impl Clock) -> Result<Windows, Status> {
        self.stats.requests += 1;
        if g.one_way {
            self.stats.one_way += 1;
        }
        self.check_header(&g.header, clock)
            .map_err(|(status, reason)| {
                self.stats.rejected[reason as usize] += 1;
                status
            })
    }

    /// Charges a handled request to `charge`, counts its status and answers it (but for a
    /// one-way call) with the first `outcome.reply_len` bytes of `reply` (`None`: of this
    /// connection's reply buffer).
    #[inline(always)]
    fn settle(
        &mut self,
        g: &Gathered,
        outcome: Outcome,
        reply: Option<&[u8; INLINE_CAPACITY]>,
        clock: &impl Clock,
        charge: &mut Charge,
    ) {
        let (cost, earned) = match outcome.moved {
            None => (REQUEST_COST, false),
            Some(moved) => (actual_cost(moved).min(g.worst), !g.one_way),
        };
        debug_assert!(cost <= g.worst);
        charge.cost += cost;
        charge.earned += u32::from(earned);
        self.stats.by_status[outcome.status.index()] += 1;
        if !g.one_way {
            let reply = reply.unwrap_or(&self.buffers.reply);
            self.write_response(&g.header, &outcome, reply, clock);
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
            self.stats.responses += 1;
        }
    }

    /// Writes the response to `request` into the next response slot (at `rsp_prod_pvt`), its
    /// inline result the first `outcome.reply_len` bytes of `reply`, and publishes it.
    #[inline]
    fn write_response(
        &self,
        request: &RequestHeader,
        outcome: &Outcome,
        reply: &[u8; INLINE_CAPACITY],
        clock: &impl Clock,
    ) {
        let reply = &reply[..outcome.reply_len.min(INLINE_CAPACITY)];
        let response = ResponseHeader {
            call_id: request.call_id,
            status: outcome.status.to_wire(),
            inline_len: reply.len() as u32,
            // Bounded by the result window, itself bounded by the u32 length in the request.
            ool_written: outcome.ool_written as u32,
            // Stored below, last.
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
        // Published at once (release: the slot's contents and any out-of-line result before
        // the index that says they are there), not at the end of the poll: the client can take
        // it while the server looks for more requests. `publish_responses` checks whether to
        // notify once per poll. First the requests taken so far are released (every one is
        // copied by now): a client that has an answer finds its request's slot free.
        self.store(ctrl::REQ_CONS, self.req_cons);
        let index = self.rsp_prod_pvt;
        self.ring
            .store_control(self.geometry.response_seq_offset(index), index);
    }

    /// Everything about a request that can be refused without running a handler; on success
    /// the validated windows.
    #[inline]
    fn check_header(
        &self,
        header: &RequestHeader,
        clock: &impl Clock,
    ) -> Result<Windows, (Status, RejectReason)> {
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
        Ok(Windows { args, result })
    }
}
