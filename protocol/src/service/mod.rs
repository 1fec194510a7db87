//! Services: what a handler sees of a call ([`CallContext`], with the out-of-line windows
//! [`OolArgs`] and [`OolResult`]), service descriptions, the [`Dispatcher`] seam, a fixed-size
//! [`Registry`] with per-service access checks and the built-in introspection service, and the
//! [`define_service!`](crate::define_service) macro.
//!
//! Split by concern: this module holds what a handler sees, `ool.rs` the out-of-line windows
//! it reads and writes through; `registry.rs` the service table
//! and introspection routing; `counters.rs` the per-service, per-tenant call counters;
//! `set.rs` the [`ServiceSet`] seam every server registers services through; `define.rs` the
//! macro.

mod counters;
mod define;
pub mod gate;
mod ool;
mod registry;
mod set;

pub use counters::{Counts, ServiceCounters, MAX_COUNTED_PEERS};
pub use ool::{validate_ool, BytesIn, BytesOut, OolArgs, OolError, OolResult};
pub use registry::{AccessCheck, Registry, RegistryError, Serving, MAX_SERVICES};
pub use set::{
    hand_over_secret, id_allowed, NoPlatform, Platform, PlatformError, Restricted, ServiceEnv,
    ServiceSet, ServiceUnavailable, FIRST_USER_SERVICE_ID, PROJECT_SERVICES,
};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::layout::{RequestHeader, Status, FLAG_ONE_WAY, INLINE_CAPACITY};
use crate::signature::Signature;
use crate::transport::PeerId;

/// One method of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// The method id, unique within the service.
    pub id: u32,
    /// The method's name as declared, at most [`METHOD_NAME_MAX`] bytes.
    pub name: &'static str,
    /// The shapes of its arguments and result, and whether it takes or returns bytes.
    pub signature: Signature,
}

/// What one `define_service!` declaration describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service id every call names ([`FIRST_USER_SERVICE_ID`] or more outside the project).
    pub id: u32,
    /// The service's name, at most [`SERVICE_NAME_MAX`] bytes.
    pub name: &'static str,
    /// The interface version calls must carry.
    pub version: u32,
    /// The service's methods, in declaration order.
    pub methods: &'static [MethodInfo],
}

/// Most bytes of a service name (introspection's `ServiceEntry`).
pub const SERVICE_NAME_MAX: usize = 20;
/// Most bytes of a method name (introspection's `MethodEntry`).
pub const METHOD_NAME_MAX: usize = 28;

/// Whether the service's and its methods' names fit introspection's records (checked at
/// compile time by `define_service!`).
pub const fn names_fit(info: &ServiceInfo) -> bool {
    if info.name.is_empty() || info.name.len() > SERVICE_NAME_MAX {
        return false;
    }
    let mut i = 0;
    while i < info.methods.len() {
        let name = info.methods[i].name;
        if name.is_empty() || name.len() > METHOD_NAME_MAX {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether no two methods share an id (checked at compile time by `define_service!`).
pub const fn method_ids_unique(methods: &[MethodInfo]) -> bool {
    let mut i = 0;
    while i < methods.len() {
        let mut j = i + 1;
        while j < methods.len() {
            if methods[i].id == methods[j].id {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// Everything a handler gets for one call. The header and inline arguments are private copies;
/// the out-of-line windows are validated against the connection's data region.
pub struct CallContext<'a> {
    peer: PeerId,
    header: &'a RequestHeader,
    inline_args: &'a [u8],
    ool_args: OolArgs<'a>,
    ool_result: OolResult<'a>,
    reply: &'a mut [u8; INLINE_CAPACITY],
    reply_len: usize,
}

impl<'a> CallContext<'a> {
    #[inline]
    pub(crate) fn new(
        peer: PeerId,
        header: &'a RequestHeader,
        inline_args: &'a [u8],
        ool_args: OolArgs<'a>,
        ool_result: OolResult<'a>,
        reply: &'a mut [u8; INLINE_CAPACITY],
    ) -> Self {
        CallContext {
            peer,
            header,
            inline_args,
            ool_args,
            ool_result,
            reply,
            reply_len: 0,
        }
    }

    /// The caller, as the transport identified it.
    #[inline]
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The call id the client chose (echoed in the response).
    #[inline]
    pub fn call_id(&self) -> u64 {
        self.header.call_id
    }

    /// The service id the call names.
    #[inline]
    pub fn service(&self) -> u32 {
        self.header.service_id
    }

    /// The method id the call names.
    #[inline]
    pub fn method(&self) -> u32 {
        self.header.method_id
    }

    /// The interface version the client was built against.
    #[inline]
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The call's absolute deadline in ns of the transport's clock; 0 = none.
    pub fn deadline_ns(&self) -> u64 {
        self.header.deadline_ns
    }

    /// Whether the client wants no response ([`FLAG_ONE_WAY`]).
    pub fn is_one_way(&self) -> bool {
        self.header.flags & FLAG_ONE_WAY != 0
    }

    /// Private copy of the inline arguments.
    #[inline]
    pub fn inline_args(&self) -> &[u8] {
        self.inline_args
    }

    /// The out-of-line argument window (empty if the call has none).
    pub fn ool_args(&self) -> &OolArgs<'a> {
        &self.ool_args
    }

    /// The out-of-line result window, written straight into the client's buffer.
    pub fn ool_result(&mut self) -> &mut OolResult<'a> {
        &mut self.ool_result
    }

    /// Takes the result window out for a `bytes` result (used by `define_service!`); the call
    /// keeps an empty window until [`CallContext::restore_bytes_out`].
    #[doc(hidden)]
    pub fn take_bytes_out(&mut self) -> BytesOut<'a> {
        let empty = OolResult::new(self.ool_result.data, 0, 0, self.ool_result.meter);
        BytesOut {
            window: core::mem::replace(&mut self.ool_result, empty),
            at: 0,
        }
    }

    /// Puts the result window back (used by `define_service!`).
    #[doc(hidden)]
    pub fn restore_bytes_out(&mut self, out: BytesOut<'a>) {
        self.ool_result = out.window;
    }

    /// Both windows at once (e.g. to copy arguments into the result).
    pub fn ool(&mut self) -> (&OolArgs<'a>, &mut OolResult<'a>) {
        (&self.ool_args, &mut self.ool_result)
    }

    /// Sets the inline result (replacing any earlier one).
    #[inline]
    pub fn set_reply(&mut self, bytes: &[u8]) -> Result<(), Status> {
        let dst = self.reply.get_mut(..bytes.len()).ok_or(Status::TooLarge)?;
        dst.copy_from_slice(bytes);
        self.reply_len = bytes.len();
        Ok(())
    }

    #[inline]
    pub(crate) fn reply_len(&self) -> usize {
        self.reply_len
    }

    #[inline]
    pub(crate) fn ool_written(&self) -> usize {
        self.ool_result.written
    }

    /// Bytes the handler moved through the windows so far (what the call is charged for, see
    /// [`crate::fair`]).
    #[inline]
    pub fn ool_moved(&self) -> usize {
        self.ool_args.meter.moved()
    }
}

/// Most calls of one connection a server hands over together (see
/// [`ServiceHandler::handle_batch`]).
pub const MAX_BATCH: usize = 8;

/// One call of a batch, and the status it ended with (`Ok` until it is handled).
pub struct BatchedCall<'a> {
    /// The call.
    pub call: CallContext<'a>,
    /// Its outcome, as [`Dispatcher::dispatch`] would return it.
    pub status: Status,
}

/// Runs calls: a [`Registry`], or anything else that maps a call to a status.
pub trait Dispatcher {
    /// Handles one call. On `Status::Ok` the inline result set with
    /// [`CallContext::set_reply`] and the out-of-line bytes written are returned to the client;
    /// on any other status only the status is.
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status;

    /// How many consecutive calls to `service` of one connection [`Self::dispatch_batch`]
    /// takes at once: 1 (the default) but where a batch saves work. A server checks each call's
    /// deadline when it takes the call off the ring, so the calls of a batch start together.
    /// Where this is 1 the server hands calls to [`Self::dispatch`] one by one.
    fn batch_limit(&self, _service: u32) -> usize {
        1
    }

    /// Handles consecutive calls of one connection to one service (at most
    /// [`Self::batch_limit`]), in order, setting each one's status. The default dispatches them
    /// one by one.
    fn dispatch_batch(&mut self, batch: &mut [BatchedCall<'_>]) {
        for one in batch {
            one.status = self.dispatch(&mut one.call);
        }
    }
}

/// A service implementation that a [`Registry`] can hold; `define_service!` generates one
/// (`<service>::Handler<S>`) for every implementation of the service's `Server` trait.
pub trait ServiceHandler {
    /// The service's description (id, name, version, methods).
    fn info(&self) -> &'static ServiceInfo;
    /// Called with calls whose service id is `info().id`; checks version and method.
    fn handle(&mut self, call: &mut CallContext<'_>) -> Status;
    /// How many consecutive calls of one connection [`Self::handle_batch`] takes at once: 1
    /// (the default), more where a batch saves work (the service VM's stand-in for a
    /// protection domain, which runs a batch in one entry to user mode). A [`Registry`] reads
    /// it once, when the handler is registered.
    fn batch_limit(&self) -> usize {
        1
    }

    /// Called with consecutive calls of one connection to this service (at most
    /// [`Self::batch_limit`]), in order: sets each one's status. The default handles them one
    /// by one.
    fn handle_batch(&mut self, batch: &mut [BatchedCall<'_>]) {
        for one in batch {
            one.status = self.handle(&mut one.call);
        }
    }
    /// The tenant `peer` went away: drop whatever is kept for it (see
    /// [`Registry::forget_peer`]). Stateless services keep the default, which does nothing.
    fn forget_peer(&mut self, _peer: PeerId) {}
}

/// Used by `define_service!`: decodes typed inline arguments (exact size), runs the method and
/// stores its typed inline result.
#[doc(hidden)]
#[inline]
pub fn dispatch_typed<A, R, F>(call: &mut CallContext<'_>, method: F) -> Status
where
    A: FromBytes,
    R: IntoBytes + Immutable,
    F: FnOnce(&mut CallContext<'_>, A) -> Result<R, Status>,
{
    let Ok(args) = A::read_from_bytes(call.inline_args()) else {
        return Status::BadArguments;
    };
    match method(call, args) {
        Ok(result) => match call.set_reply(result.as_bytes()) {
            Ok(()) => Status::Ok,
            Err(status) => status,
        },
        // A handler that "fails" with Ok is a handler bug.
        Err(Status::Ok) => Status::HandlerFault,
        Err(status) => status,
    }
}
