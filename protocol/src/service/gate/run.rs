//! Kernel side of a batch: packs calls into a [`GateBatch`] and the service's windows, enters
//! the service once per batch, imports each reply, and when an entry fails (the service
//! faulted or ran past its budget) answers the call that was running with the failure and
//! runs the calls after it in a new entry. What the windows hold is cleared when a different
//! service enters ([`WindowOwner`]).

use arrayvec::ArrayVec;

use super::{export, import, room_needed, GateBatch, GateBatchReply, GateCall};
use crate::layout::Status;
use crate::service::{BatchedCall, CallContext, MAX_BATCH};

/// Runs `batch` (calls to the service's handler `handler`, at most [`MAX_BATCH`]) through the
/// gate: `args` and `result` are the service's two windows as the kernel reaches them;
/// `enter(record, args, result)` hands `record` to the service (the windows are passed along
/// for a service that does not map them itself), runs it and returns its reply page (a private
/// copy), or with it why the entry failed; `failed(call, why)` answers the call that
/// was running when an entry failed (the kernel logs, counts and may reset the service there).
pub fn run_batch<E>(
    batch: &mut [BatchedCall<'_>],
    handler: u32,
    args: &mut [u8],
    result: &mut [u8],
    enter: impl FnMut(&GateBatch, &mut [u8], &mut [u8]) -> (GateBatchReply, Result<(), E>),
    failed: impl FnMut(&CallContext<'_>, E) -> Status,
) {
    let mut statuses = [Status::Ok; MAX_BATCH];
    {
        let mut calls: ArrayVec<&mut CallContext<'_>, MAX_BATCH> = ArrayVec::new();
        for one in batch.iter_mut().take(MAX_BATCH) {
            calls.push(&mut one.call);
        }
        run_calls(
            &mut calls,
            &mut statuses,
            handler,
            args,
            result,
            enter,
            failed,
        );
    }
    for (one, status) in batch.iter_mut().zip(statuses) {
        one.status = status;
    }
    // Calls past MAX_BATCH (no server hands over that many) are not run.
    for one in batch.iter_mut().skip(MAX_BATCH) {
        one.status = Status::Busy;
    }
}

/// [`run_batch`] for one call.
pub fn run_one<E>(
    call: &mut CallContext<'_>,
    handler: u32,
    args: &mut [u8],
    result: &mut [u8],
    enter: impl FnMut(&GateBatch, &mut [u8], &mut [u8]) -> (GateBatchReply, Result<(), E>),
    failed: impl FnMut(&CallContext<'_>, E) -> Status,
) -> Status {
    let mut statuses = [Status::Ok];
    run_calls(
        &mut [call],
        &mut statuses,
        handler,
        args,
        result,
        enter,
        failed,
    );
    statuses[0]
}

fn run_calls<E>(
    calls: &mut [&mut CallContext<'_>],
    statuses: &mut [Status],
    handler: u32,
    args: &mut [u8],
    result: &mut [u8],
    mut enter: impl FnMut(&GateBatch, &mut [u8], &mut [u8]) -> (GateBatchReply, Result<(), E>),
    mut failed: impl FnMut(&CallContext<'_>, E) -> Status,
) {
    let mut next = 0;
    while next < calls.len() {
        let mut record = GateBatch::zeroed();
        record.handler = handler;
        // Which call each packed record is.
        let mut positions = [0usize; MAX_BATCH];
        let (mut args_at, mut result_at, mut packed) = (0, 0, 0);
        while next < calls.len() && packed < MAX_BATCH {
            let call = &*calls[next];
            let (args_len, result_len) = room_needed(call, result.len());
            if packed > 0
                && (args_at + args_len > args.len() || result_at + result_len > result.len())
            {
                break;
            }
            let gate = &mut record.calls[packed];
            match export(
                call,
                handler,
                gate,
                args,
                (args_at, result_at),
                result.len(),
            ) {
                // Refused before the service saw it: answered here, never run.
                Err(status) => statuses[next] = status,
                Ok(()) => {
                    positions[packed] = next;
                    packed += 1;
                    args_at += gate.args_len as usize;
                    result_at += gate.result_capacity as usize;
                }
            }
            next += 1;
        }
        if packed == 0 {
            continue;
        }
        record.count = packed as u32;
        let (reply, ended) = enter(&record, args, result);
        let failure = ended.err();
        let done = (reply.done as usize).min(packed);
        // When the entry failed, the call running then is the first not done.
        let failing = failure.as_ref().map(|_| done.min(packed - 1));
        let imported = failing.unwrap_or(packed);
        for (p, &i) in positions.iter().enumerate().take(imported) {
            statuses[i] = if p < done {
                import(calls[i], &record.calls[p], &reply.replies[p], result)
            } else {
                // Returned without answering every call: no honest service does.
                Status::HandlerFault
            };
        }
        if let (Some(p), Some(why)) = (failing, failure) {
            let i = positions[p];
            statuses[i] = failed(calls[i], why);
            // The calls after it run in a fresh entry.
            next = i + 1;
        }
    }
}

/// Which service's bytes the gate's windows may hold: a domain's entries leave their windows
/// as they are (what is there came from or went to that domain anyway), and before another
/// domain enters they are cleared: the argument window as far as the kernel wrote it, the
/// result window whole (the domain could write anywhere in it).
#[derive(Debug, Default)]
pub struct WindowOwner {
    owner: Option<u32>,
    args_dirty: usize,
}

impl WindowOwner {
    /// Windows nobody used yet (zero).
    pub const fn new() -> Self {
        WindowOwner {
            owner: None,
            args_dirty: 0,
        }
    }

    /// Before domain `owner` enters, its batch's argument bytes already written to the first
    /// `reach` bytes of `args`: clears what another domain left in the windows (`args`,
    /// `result`: the windows as the kernel reaches them) and returns whether it did (the
    /// kernel then clears the gate's pages too).
    pub fn claim(&mut self, owner: u32, reach: usize, args: &mut [u8], result: &mut [u8]) -> bool {
        let reach = reach.min(args.len());
        let switched = self.owner != Some(owner);
        if switched {
            // The batch's own bytes are at the front; what lies past them is another's.
            let dirty = self.args_dirty.min(args.len());
            if dirty > reach {
                args[reach..dirty].fill(0);
            }
            if self.owner.is_some() {
                result.fill(0);
            }
            self.owner = Some(owner);
            self.args_dirty = reach;
        }
        self.args_dirty = self.args_dirty.max(reach);
        switched
    }

    /// How far the argument bytes of `calls` reach in the argument window.
    pub fn reach(calls: &[GateCall]) -> usize {
        calls
            .iter()
            .map(|c| (c.args_at as usize).saturating_add(c.args_len as usize))
            .max()
            .unwrap_or(0)
    }

    /// After `owner`'s memory was reset, or whenever its claim must not carry on: the next
    /// entry, whoever's, clears the windows first.
    pub fn disown(&mut self) {
        if self.owner.is_some() {
            self.owner = Some(u32::MAX);
        }
    }
}
