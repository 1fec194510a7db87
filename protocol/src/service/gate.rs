//! The gate: how a call crosses into a service that runs in an address space of its own (the
//! service VM runs every service's handlers in PV user mode, see `docs/protected-execution.md`).
//!
//! The kernel side holds the call ([`CallContext`], validated, over the client's pages); the
//! service side sees none of that memory. The kernel [`export`]s the call: the header and the
//! private copy of the inline arguments into a [`GateCall`] (on a page the service can only
//! read), the argument window's bytes into the service's argument window (read-only to it).
//! The service side [`serve`]s it: builds an ordinary [`CallContext`] over its own windows,
//! runs the handler, and writes a [`GateReply`] (status, inline result, bytes written). The
//! kernel [`import`]s that reply, which the service could have written anything into: it is
//! copied once and checked (a known status, lengths within the call's limits) before one byte
//! reaches the client; a reply that fails the check is [`Status::HandlerFault`].
//!
//! Calls to one service come as a [`GateBatch`] of up to [`MAX_BATCH`] (see
//! [`ServiceHandler::handle_batch`]): the kernel packs each call's argument bytes and result
//! room side by side in the two windows ([`GateCall::args_at`], [`GateCall::result_at`]), the
//! service [`serve_batch`]es them in order, publishing each reply and then how many are done
//! ([`GateBatchReply::done`], which also tells the kernel which call was running when the
//! service faulted or ran past its budget), and the kernel imports each reply.
//!
//! The service's two windows are one region, arguments then result, so a handler's
//! window-to-window copy ([`BytesOut::copy_from`](super::BytesOut::copy_from)) works as it does
//! against a client's data region. A call is charged what the kernel moved for it: the whole
//! argument window in and the result written out, at most the call's copy allowance (see
//! [`crate::fair`]).
//!
//! Everything here is pure and host-tested: the tests run calls through export, serve and
//! import over plain memory and compare them with direct dispatch.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{CallContext, OolArgs, OolResult, ServiceHandler, MAX_BATCH};
use crate::fair::CopyMeter;
use crate::layout::{RequestHeader, Status, HEADER_SIZE, INLINE_CAPACITY};
use crate::region::RegionView;
use crate::transport::PeerId;

/// [`GateCall::op`]: run the call in the record.
pub const GATE_OP_CALL: u32 = 1;
/// [`GateCall::op`]: the tenant [`GateCall::peer`] went away (`ServiceHandler::forget_peer`).
pub const GATE_OP_FORGET_PEER: u32 = 2;

/// One request to a service's space, written by the kernel where the service can only read it.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GateCall {
    /// `GATE_OP_*`.
    pub op: u32,
    /// Which of the space's handlers (registration order).
    pub handler: u32,
    /// The caller, as the transport identified it.
    pub peer: u32,
    /// Bytes of [`GateCall::inline`] that are the call's inline arguments.
    pub inline_len: u32,
    /// Bytes at the start of the argument window that are the call's argument bytes.
    pub args_len: u32,
    /// Bytes of the result window the call may write (the client's result buffer length).
    pub result_capacity: u32,
    /// Where the call's argument bytes start in the argument window.
    pub args_at: u32,
    /// Where the call's result room starts in the result window.
    pub result_at: u32,
    /// The validated request header, as the client sent it.
    pub header: RequestHeader,
    /// The private copy of the inline arguments.
    pub inline: [u8; INLINE_CAPACITY],
}

const _: () = assert!(core::mem::size_of::<GateCall>() == 32 + HEADER_SIZE + INLINE_CAPACITY);
const _: () = assert!(core::mem::offset_of!(GateCall, header) == 32);
const _: () = assert!(core::mem::offset_of!(GateCall, inline) == 32 + HEADER_SIZE);

/// What a service wrote back for one [`GateCall`] (untrusted until [`import`] checked it).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GateReply {
    /// The status's wire value.
    pub status: u32,
    /// Bytes of [`GateReply::reply`] that are the inline result.
    pub reply_len: u32,
    /// Bytes at the start of the result window that are the result (high-water mark).
    pub ool_written: u32,
    /// Zero.
    pub reserved: u32,
    /// The inline result.
    pub reply: [u8; INLINE_CAPACITY],
}

const _: () = assert!(core::mem::size_of::<GateReply>() == 16 + INLINE_CAPACITY);
const _: () = assert!(core::mem::offset_of!(GateReply, reply) == 16);

/// Up to [`MAX_BATCH`] calls to one service, on the page the service can only read.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GateBatch {
    /// How many of [`GateBatch::calls`] are the batch (at most [`MAX_BATCH`]).
    pub count: u32,
    /// Which of the space's handlers every call of the batch is for.
    pub handler: u32,
    /// The calls, in ring order.
    pub calls: [GateCall; MAX_BATCH],
}

const _: () = assert!(core::mem::offset_of!(GateBatch, calls) == 8);
const _: () =
    assert!(core::mem::size_of::<GateBatch>() == 8 + MAX_BATCH * core::mem::size_of::<GateCall>());

/// What a service wrote back for a [`GateBatch`] (untrusted until each reply is imported).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GateBatchReply {
    /// How many calls are done (their replies written); while the service runs, the index of
    /// the call it is running.
    pub done: u32,
    /// Zero.
    pub reserved: u32,
    /// The replies, in the batch's order.
    pub replies: [GateReply; MAX_BATCH],
}

const _: () = assert!(core::mem::offset_of!(GateBatchReply, replies) == 8);
const _: () = assert!(
    core::mem::size_of::<GateBatchReply>() == 8 + MAX_BATCH * core::mem::size_of::<GateReply>()
);

impl GateBatch {
    /// An empty batch.
    pub fn zeroed() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }

    /// The batch's calls (at most [`MAX_BATCH`], whatever `count` claims).
    pub fn calls(&self) -> &[GateCall] {
        &self.calls[..(self.count as usize).min(MAX_BATCH)]
    }
}

impl GateBatchReply {
    /// No reply yet.
    pub fn zeroed() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }
}

impl GateCall {
    /// An all-zero record (no operation).
    pub fn zeroed() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }
}

impl GateReply {
    /// An all-zero reply (status `Ok`, nothing written).
    pub fn zeroed() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }
}

/// The room `call` takes in a batch's windows: its argument bytes, and the result room it is
/// offered (its result window, at most `window` bytes).
pub fn room_needed(call: &CallContext<'_>, window: usize) -> (usize, usize) {
    (call.ool_args.len, call.ool_result.len.min(window))
}

/// Kernel side: writes `call` into `gate` for handler `handler` and copies its argument bytes
/// into `args` (the service's argument window) at `args_at`: `TooLarge` if they do not fit
/// there. The handler may write at most the room from `result_at` to `result_window` (the
/// result window's length), or less if the client's result window is shorter: clients
/// commonly offer all the room they have, and a result that does not fit is `TooLarge` as for
/// a short client buffer.
pub fn export(
    call: &CallContext<'_>,
    handler: u32,
    gate: &mut GateCall,
    args: &mut [u8],
    (args_at, result_at): (usize, usize),
    result_window: usize,
) -> Result<(), Status> {
    let window = &call.ool_args;
    let Some(room) = args
        .get_mut(args_at..)
        .filter(|room| window.len <= room.len())
    else {
        return Err(Status::TooLarge);
    };
    window
        .data
        .read(window.offset, &mut room[..window.len])
        .map_err(|_| Status::BadArguments)?;
    let inline = call.inline_args;
    *gate = GateCall {
        op: GATE_OP_CALL,
        handler,
        peer: call.peer.0,
        inline_len: inline.len() as u32,
        args_len: window.len as u32,
        result_capacity: call
            .ool_result
            .len
            .min(result_window.saturating_sub(result_at)) as u32,
        args_at: args_at as u32,
        result_at: result_at as u32,
        header: *call.header,
        inline: [0; INLINE_CAPACITY],
    };
    gate.inline[..inline.len()].copy_from_slice(inline);
    Ok(())
}

/// Kernel side: a request that tells handler `handler` the tenant `peer` went away.
pub fn export_forget_peer(handler: u32, peer: PeerId) -> GateCall {
    GateCall {
        op: GATE_OP_FORGET_PEER,
        handler,
        peer: peer.0,
        ..GateCall::zeroed()
    }
}

/// Kernel side: checks what the service wrote for `gate` (`reply`, a private copy) and hands
/// it to the client: the inline result, and the first `ool_written` bytes of the call's room
/// in `result` (the service's result window, from [`GateCall::result_at`]) into the call's
/// result window. Returns the call's status: the
/// service's, or `HandlerFault` for a reply no honest service writes (an unknown status, a
/// length past what the call allows).
pub fn import(
    call: &mut CallContext<'_>,
    gate: &GateCall,
    reply: &GateReply,
    result: &[u8],
) -> Status {
    let Some(status) = Status::from_wire(reply.status) else {
        return Status::HandlerFault;
    };
    let reply_len = reply.reply_len as usize;
    let written = reply.ool_written as usize;
    let Some(result) = result.get(gate.result_at as usize..) else {
        return Status::HandlerFault;
    };
    if reply_len > INLINE_CAPACITY
        || written > gate.result_capacity as usize
        || written > result.len()
    {
        return Status::HandlerFault;
    }
    call.ool_args
        .meter
        .charge(copy_cost(gate.args_len as usize, written));
    if status != Status::Ok {
        return status;
    }
    if call.set_reply(&reply.reply[..reply_len]).is_err() {
        return Status::HandlerFault;
    }
    let window = &mut call.ool_result;
    if window
        .data
        .write(window.offset, &result[..written])
        .is_err()
    {
        return Status::HandlerFault;
    }
    window.written = written;
    Status::Ok
}

/// What the kernel moves for a call through the gate: the argument window in, the written
/// result out.
fn copy_cost(args_len: usize, written: usize) -> usize {
    args_len.saturating_add(written)
}

/// Service side: runs `gate` (a private copy of the request) on `handler`. `windows` is the
/// service's window region: the argument window up to `result_base`, the result window from
/// there to the end; the call's argument bytes and result room must lie inside them where the
/// request says (else `HandlerFault`, written into `reply`). A forget-peer request writes an
/// `Ok` reply.
pub fn serve(
    handler: &mut dyn ServiceHandler,
    gate: &GateCall,
    windows: RegionView<'_>,
    result_base: usize,
    reply: &mut GateReply,
) {
    *reply = GateReply::zeroed();
    let peer = PeerId(gate.peer);
    if gate.op == GATE_OP_FORGET_PEER {
        handler.forget_peer(peer);
        return;
    }
    let (args_at, args_len) = (gate.args_at as usize, gate.args_len as usize);
    let (result_at, result_len) = (gate.result_at as usize, gate.result_capacity as usize);
    let inline_len = gate.inline_len as usize;
    let within = |at: usize, len: usize, end: usize| at.checked_add(len).is_some_and(|e| e <= end);
    let result_window = windows.len().saturating_sub(result_base);
    if gate.op != GATE_OP_CALL
        || inline_len > INLINE_CAPACITY
        || !within(args_at, args_len, result_base)
        || !within(result_at, result_len, result_window)
    {
        reply.status = Status::HandlerFault.to_wire();
        return;
    }
    let meter = CopyMeter::for_windows(args_len, result_len);
    let mut inline_result = [0u8; INLINE_CAPACITY];
    let mut call = CallContext::new(
        peer,
        &gate.header,
        &gate.inline[..inline_len],
        OolArgs::new(windows, args_at, args_len, &meter),
        OolResult::new(windows, result_base + result_at, result_len, &meter),
        &mut inline_result,
    );
    let status = handler.handle(&mut call);
    let (reply_len, written) = (call.reply_len(), call.ool_written());
    reply.status = status.to_wire();
    if status == Status::Ok {
        reply.reply_len = reply_len as u32;
        reply.ool_written = written as u32;
        reply.reply[..reply_len].copy_from_slice(&inline_result[..reply_len]);
    }
}

/// Service side: [`serve`]s each of `calls` (a batch's, on a page nothing writes while the
/// service runs) on `handler`, the space's handler `slot`, in order, handing each reply to
/// `publish` with its index as soon as it is written (the service VM writes it to the reply
/// page, then the count done).
pub fn serve_batch(
    handler: &mut dyn ServiceHandler,
    slot: u32,
    calls: &[GateCall],
    windows: RegionView<'_>,
    result_base: usize,
    mut publish: impl FnMut(usize, &GateReply),
) {
    let mut reply = GateReply::zeroed();
    for (i, call) in calls.iter().take(MAX_BATCH).enumerate() {
        if call.handler == slot {
            serve(handler, call, windows, result_base, &mut reply);
        } else {
            reply = GateReply::zeroed();
            reply.status = Status::HandlerFault.to_wire();
        }
        publish(i, &reply);
    }
}

mod run;
pub use run::{run_batch, run_one, WindowOwner};

#[cfg(all(test, feature = "std"))]
mod tests;
