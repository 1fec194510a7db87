//! Services: what a handler sees of a call ([`CallContext`], with the out-of-line windows
//! [`OolArgs`] and [`OolResult`]), service descriptions, the [`Dispatcher`] seam, a fixed-size
//! [`Registry`] with per-service access checks and the built-in introspection service, and the
//! [`define_service!`](crate::define_service) macro.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::fair::CopyMeter;
use crate::layout::{OolRef, RequestHeader, Status, FLAG_ONE_WAY, INLINE_CAPACITY};
use crate::region::RegionView;
use crate::transport::PeerId;

/// One method of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    pub id: u32,
    pub name: &'static str,
}

/// What one `define_service!` declaration describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub id: u32,
    pub name: &'static str,
    pub version: u32,
    pub methods: &'static [MethodInfo],
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

/// A handler's move through its out-of-line windows was refused (nothing was copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OolError {
    /// Read past the end of the argument window: the client sent too little.
    ArgsOutOfWindow,
    /// Wrote past the end of the result window: the client's buffer is too small.
    ResultOutOfWindow,
    /// The call would move more bytes through its windows than one call may (`MAX_CALL_COPY`,
    /// and never more than its two windows hold together).
    CopyLimit,
}

impl core::fmt::Display for OolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OolError::ArgsOutOfWindow => {
                "Read past the end of the argument window: the client sent too little."
            }
            OolError::ResultOutOfWindow => {
                "Wrote past the end of the result window: the client's buffer is too small."
            }
            OolError::CopyLimit => {
                "The call would move more bytes through its windows than one call may \
                 (MAX_CALL_COPY, and never more than its two windows hold together)."
            }
        })
    }
}

impl From<OolError> for Status {
    fn from(e: OolError) -> Status {
        match e {
            OolError::ArgsOutOfWindow => Status::BadArguments,
            OolError::ResultOutOfWindow | OolError::CopyLimit => Status::TooLarge,
        }
    }
}

/// Checks an out-of-line reference against the data region length the server holds privately:
/// `(offset, len)` on success. A zero length means "no window" and requires offset 0.
pub fn validate_ool(window: OolRef, data_len: usize) -> Option<(usize, usize)> {
    let offset = usize::try_from(window.offset).ok()?;
    let len = usize::try_from(window.len).ok()?;
    if len == 0 {
        return if offset == 0 { Some((0, 0)) } else { None };
    }
    match offset.checked_add(len) {
        Some(end) if end <= data_len => Some((offset, len)),
        _ => None,
    }
}

/// The client's out-of-line arguments: a validated window of the connection's data region.
/// Reads copy bytes into private memory; the client may change the window concurrently, so
/// read each byte once and validate the copy. Every byte read counts against the call's copy
/// allowance (see [`crate::fair`]).
#[derive(Clone, Copy, Debug)]
pub struct OolArgs<'a> {
    data: RegionView<'a>,
    offset: usize,
    len: usize,
    meter: &'a CopyMeter,
}

impl<'a> OolArgs<'a> {
    /// `data.contains(offset, len)` must hold (see [`validate_ool`]).
    pub(crate) fn new(
        data: RegionView<'a>,
        offset: usize,
        len: usize,
        meter: &'a CopyMeter,
    ) -> Self {
        debug_assert!(data.contains(offset, len));
        OolArgs {
            data,
            offset,
            len,
            meter,
        }
    }

    /// Whether `len` bytes starting `at` lie inside the window.
    fn check(&self, at: usize, len: usize) -> Result<(), OolError> {
        match at.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OolError::ArgsOutOfWindow),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `dst.len()` bytes starting `at` bytes into the window.
    pub fn read(&self, at: usize, dst: &mut [u8]) -> Result<(), OolError> {
        self.check(at, dst.len())?;
        self.meter.take(dst.len())?;
        self.data
            .read(self.offset + at, dst)
            .map_err(|_| OolError::ArgsOutOfWindow)
    }

    /// Copies a plain-old-data value starting `at` bytes into the window.
    pub fn read_pod<T: FromBytes + IntoBytes>(&self, at: usize) -> Result<T, OolError> {
        let mut value = T::new_zeroed();
        self.read(at, value.as_mut_bytes())?;
        Ok(value)
    }
}

/// The client's result buffer: a validated window of the data region the handler writes its
/// result into directly (the zero-copy path). Tracks how far it was written; every byte
/// written counts against the call's copy allowance (see [`crate::fair`]).
#[derive(Debug)]
pub struct OolResult<'a> {
    data: RegionView<'a>,
    offset: usize,
    len: usize,
    written: usize,
    meter: &'a CopyMeter,
}

impl<'a> OolResult<'a> {
    /// `data.contains(offset, len)` must hold (see [`validate_ool`]).
    pub(crate) fn new(
        data: RegionView<'a>,
        offset: usize,
        len: usize,
        meter: &'a CopyMeter,
    ) -> Self {
        debug_assert!(data.contains(offset, len));
        OolResult {
            data,
            offset,
            len,
            written: 0,
            meter,
        }
    }

    /// Bytes the window holds.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// High-water mark of the writes so far (reported to the client as `ool_written`).
    pub fn written(&self) -> usize {
        self.written
    }

    /// Checks that `len` bytes fit at `at` and counts them against the call's allowance, then
    /// marks them written: everything that can refuse a write, before it copies anything.
    fn reserve(&mut self, at: usize, len: usize) -> Result<(), OolError> {
        let end = match at.checked_add(len) {
            Some(end) if end <= self.len => end,
            _ => return Err(OolError::ResultOutOfWindow),
        };
        self.meter.take(len)?;
        self.written = self.written.max(end);
        Ok(())
    }

    /// Writes `src` starting `at` bytes into the window.
    pub fn write(&mut self, at: usize, src: &[u8]) -> Result<(), OolError> {
        self.reserve(at, src.len())?;
        self.data
            .write(self.offset + at, src)
            .map_err(|_| OolError::ResultOutOfWindow)
    }

    /// Writes a plain-old-data value starting `at` bytes into the window.
    pub fn write_pod<T: IntoBytes + Immutable>(
        &mut self,
        at: usize,
        value: &T,
    ) -> Result<(), OolError> {
        self.write(at, value.as_bytes())
    }

    /// Copies `len` bytes from the argument window (from `src_at`) into this window (at
    /// `dst_at`) without staging the whole payload privately (counted as `len` bytes moved).
    pub fn copy_from_args(
        &mut self,
        args: &OolArgs<'_>,
        src_at: usize,
        dst_at: usize,
        len: usize,
    ) -> Result<(), OolError> {
        args.check(src_at, len)?;
        self.reserve(dst_at, len)?;
        self.data
            .copy_within(args.offset + src_at, self.offset + dst_at, len)
            .map_err(|_| OolError::ResultOutOfWindow)
    }
}

/// Everything a handler gets for one call. The header and inline arguments are private copies;
/// the out-of-line windows are validated against the connection's data region.
pub struct CallContext<'a> {
    peer: PeerId,
    header: RequestHeader,
    inline_args: &'a [u8],
    ool_args: OolArgs<'a>,
    ool_result: OolResult<'a>,
    reply: &'a mut [u8; INLINE_CAPACITY],
    reply_len: usize,
}

impl<'a> CallContext<'a> {
    pub(crate) fn new(
        peer: PeerId,
        header: RequestHeader,
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
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    pub fn call_id(&self) -> u64 {
        self.header.call_id
    }

    pub fn service(&self) -> u32 {
        self.header.service_id
    }

    pub fn method(&self) -> u32 {
        self.header.method_id
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn deadline_ns(&self) -> u64 {
        self.header.deadline_ns
    }

    pub fn is_one_way(&self) -> bool {
        self.header.flags & FLAG_ONE_WAY != 0
    }

    /// Private copy of the inline arguments.
    pub fn inline_args(&self) -> &[u8] {
        self.inline_args
    }

    pub fn ool_args(&self) -> &OolArgs<'a> {
        &self.ool_args
    }

    pub fn ool_result(&mut self) -> &mut OolResult<'a> {
        &mut self.ool_result
    }

    /// Both windows at once (e.g. to copy arguments into the result).
    pub fn ool(&mut self) -> (&OolArgs<'a>, &mut OolResult<'a>) {
        (&self.ool_args, &mut self.ool_result)
    }

    /// Sets the inline result (replacing any earlier one).
    pub fn set_reply(&mut self, bytes: &[u8]) -> Result<(), Status> {
        let dst = self.reply.get_mut(..bytes.len()).ok_or(Status::TooLarge)?;
        dst.copy_from_slice(bytes);
        self.reply_len = bytes.len();
        Ok(())
    }

    pub(crate) fn reply_len(&self) -> usize {
        self.reply_len
    }

    pub(crate) fn ool_written(&self) -> usize {
        self.ool_result.written
    }

    /// Bytes the handler moved through the windows so far (what the call is charged for, see
    /// [`crate::fair`]).
    pub fn ool_moved(&self) -> usize {
        self.ool_args.meter.moved()
    }
}

/// Runs calls: a [`Registry`], or anything else that maps a call to a status.
pub trait Dispatcher {
    /// Handles one call. On `Status::Ok` the inline result set with
    /// [`CallContext::set_reply`] and the out-of-line bytes written are returned to the client;
    /// on any other status only the status is.
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status;
}

/// A service implementation that a [`Registry`] can hold; `define_service!` generates one
/// (`<service>::Handler<S>`) for every implementation of the service's `Server` trait.
pub trait ServiceHandler {
    fn info(&self) -> &'static ServiceInfo;
    /// Called with calls whose service id is `info().id`; checks version and method.
    fn handle(&mut self, call: &mut CallContext<'_>) -> Status;
}

/// Decides whether a peer may call a service.
pub type AccessCheck = fn(PeerId) -> bool;

/// Maximum services a [`Registry`] holds (besides the built-in introspection service).
pub const MAX_SERVICES: usize = 16;

struct RegistryEntry<'a> {
    handler: &'a mut dyn ServiceHandler,
    access: Option<AccessCheck>,
}

/// Why a service could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryError {
    DuplicateServiceId(u32),
    Full,
}

/// Calls and errors per service id, kept by the server across registries (a server may build
/// a [`Registry`] per loop iteration; its counters must outlive it). Introspection reports them.
#[derive(Clone, Debug)]
pub struct ServiceCounters {
    /// (service id, calls, errors) for the services seen so far; `used` entries are valid.
    slots: [(u32, u64, u64); MAX_SERVICES + 1],
    used: usize,
    /// Calls to a service id nobody serves.
    pub unknown_service: u64,
}

impl Default for ServiceCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceCounters {
    pub const fn new() -> Self {
        ServiceCounters {
            slots: [(0, 0, 0); MAX_SERVICES + 1],
            used: 0,
            unknown_service: 0,
        }
    }

    /// Counts one call to `service` that ended with `status`.
    pub fn record(&mut self, service: u32, status: Status) {
        let error = u64::from(status != Status::Ok);
        if let Some(slot) = self.slots[..self.used].iter_mut().find(|s| s.0 == service) {
            slot.1 += 1;
            slot.2 += error;
        } else if self.used < self.slots.len() {
            self.slots[self.used] = (service, 1, error);
            self.used += 1;
        }
    }

    /// (calls, errors) of `service`.
    pub fn get(&self, service: u32) -> (u64, u64) {
        self.slots[..self.used]
            .iter()
            .find(|s| s.0 == service)
            .map_or((0, 0), |s| (s.1, s.2))
    }
}

/// A fixed-capacity service table (no heap needed) that answers the built-in introspection
/// service itself, listing only the services the calling peer may use.
pub struct Registry<'a> {
    entries: [Option<RegistryEntry<'a>>; MAX_SERVICES],
    counters: Option<&'a mut ServiceCounters>,
}

impl Default for Registry<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Registry<'a> {
    pub fn new() -> Self {
        Registry {
            entries: [const { None }; MAX_SERVICES],
            counters: None,
        }
    }

    /// A registry that counts calls and errors per service into `counters` (and reports them
    /// through introspection's `list_stats`).
    pub fn with_counters(counters: &'a mut ServiceCounters) -> Self {
        Registry {
            entries: [const { None }; MAX_SERVICES],
            counters: Some(counters),
        }
    }

    /// Registers a service anyone may call.
    pub fn register(&mut self, handler: &'a mut dyn ServiceHandler) -> Result<(), RegistryError> {
        self.insert(handler, None)
    }

    /// Registers a service only peers accepted by `access` may call (others get
    /// `AccessDenied`, and introspection does not list it to them).
    pub fn register_restricted(
        &mut self,
        handler: &'a mut dyn ServiceHandler,
        access: AccessCheck,
    ) -> Result<(), RegistryError> {
        self.insert(handler, Some(access))
    }

    fn insert(
        &mut self,
        handler: &'a mut dyn ServiceHandler,
        access: Option<AccessCheck>,
    ) -> Result<(), RegistryError> {
        let id = handler.info().id;
        if id == crate::services::introspection::SERVICE_ID
            || self
                .entries
                .iter()
                .flatten()
                .any(|e| e.handler.info().id == id)
        {
            return Err(RegistryError::DuplicateServiceId(id));
        }
        let free = self
            .entries
            .iter_mut()
            .find(|e| e.is_none())
            .ok_or(RegistryError::Full)?;
        *free = Some(RegistryEntry { handler, access });
        Ok(())
    }

    /// The services `peer` may call, introspection first; returns how many were written.
    pub fn visible_services(
        &self,
        peer: PeerId,
        out: &mut [&'static ServiceInfo; MAX_SERVICES + 1],
    ) -> usize {
        out[0] = &crate::services::introspection::INFO;
        let mut n = 1;
        for entry in self.entries.iter().flatten() {
            if entry.access.is_none_or(|allowed| allowed(peer)) {
                out[n] = entry.handler.info();
                n += 1;
            }
        }
        n
    }
}

impl Registry<'_> {
    fn route(&mut self, call: &mut CallContext<'_>) -> Status {
        let service = call.service();
        if service == crate::services::introspection::SERVICE_ID {
            let mut infos = [&crate::services::introspection::INFO; MAX_SERVICES + 1];
            let n = self.visible_services(call.peer(), &mut infos);
            let empty = ServiceCounters::new();
            let counters = self.counters.as_deref().unwrap_or(&empty);
            let mut server =
                crate::services::introspection::Introspector::with_counters(&infos[..n], counters);
            return crate::services::introspection::dispatch(&mut server, call);
        }
        let Some(entry) = self
            .entries
            .iter_mut()
            .flatten()
            .find(|e| e.handler.info().id == service)
        else {
            return Status::UnknownService;
        };
        if let Some(allowed) = entry.access {
            if !allowed(call.peer()) {
                return Status::AccessDenied;
            }
        }
        entry.handler.handle(call)
    }
}

impl Dispatcher for Registry<'_> {
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        let status = self.route(call);
        if let Some(counters) = self.counters.as_deref_mut() {
            if status == Status::UnknownService {
                counters.unknown_service += 1;
            } else {
                counters.record(call.service(), status);
            }
        }
        status
    }
}

/// Used by `define_service!`: decodes typed inline arguments (exact size), runs the method and
/// stores its typed inline result.
#[doc(hidden)]
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

/// Declares a service once for both sides. Generates, in a module of the given name:
/// - `SERVICE_ID`, `VERSION`, `NAME`, `methods::<method>` ids, `METHODS`, `INFO`;
/// - `trait Server` with one method per declared method
///   (`fn m(&mut self, call: &mut CallContext<'_>, args: Args) -> Result<Reply, Status>`),
///   `fn dispatch` (checks the version on every call, then the method, then decodes the
///   arguments) and `Handler<S>`, a [`ServiceHandler`] to put in a [`Registry`];
/// - `client::<method>(&args) -> TypedCall<Reply>`, typed stubs for [`crate::ClientConnection`].
///
/// Argument and reply types are plain-old-data (zerocopy `FromBytes + IntoBytes + Immutable +
/// KnownLayout`, `()` for none) of at most `INLINE_CAPACITY` bytes (checked at compile time);
/// bulk data travels in the out-of-line windows. Method ids must be unique (checked too).
/// Invoke it at module level: the generated module reaches the argument types through
/// `use super::*`.
///
/// ```
/// use xenrpc_proto::define_service;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[repr(C)]
/// #[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
/// pub struct Number { pub value: u64 }
///
/// define_service! {
///     /// Doubles numbers.
///     pub mod doubler {
///         name = "doubler", id = 77, version = 1;
///         /// Returns twice its argument.
///         fn double = 1 (Number) -> Number;
///     }
/// }
///
/// struct Impl;
/// impl doubler::Server for Impl {
///     fn double(&mut self, _call: &mut xenrpc_proto::CallContext<'_>, n: Number)
///         -> Result<Number, xenrpc_proto::Status> {
///         n.value.checked_mul(2).map(|value| Number { value }).ok_or(xenrpc_proto::Status::BadArguments)
///     }
/// }
///
/// fn main() {
///     let _handler = doubler::Handler(Impl);
///     let _call = doubler::client::double(&Number { value: 21 });
/// }
/// ```
#[macro_export]
macro_rules! define_service {
    (
        $(#[$attr:meta])*
        $vis:vis mod $module:ident {
            name = $name:literal, id = $id:expr, version = $version:expr;
            $(
                $(#[$mattr:meta])*
                fn $method:ident = $mid:literal ( $args:ty ) -> $ret:ty;
            )*
        }
    ) => {
        $(#[$attr])*
        $vis mod $module {
            #[allow(unused_imports)]
            use super::*;

            pub const SERVICE_ID: u32 = $id;
            pub const VERSION: u32 = $version;
            pub const NAME: &str = $name;

            /// Method ids.
            #[allow(non_upper_case_globals)]
            pub mod methods {
                $( pub const $method: u32 = $mid; )*
            }

            pub const METHODS: &[$crate::MethodInfo] = &[
                $( $crate::MethodInfo { id: $mid, name: stringify!($method) }, )*
            ];

            pub const INFO: $crate::ServiceInfo = $crate::ServiceInfo {
                id: SERVICE_ID,
                name: NAME,
                version: VERSION,
                methods: METHODS,
            };

            const _: () = assert!($crate::service::method_ids_unique(METHODS), "duplicate method id");
            $(
                const _: () = assert!(
                    ::core::mem::size_of::<$args>() <= $crate::INLINE_CAPACITY
                        && ::core::mem::size_of::<$ret>() <= $crate::INLINE_CAPACITY,
                    "inline argument or reply type larger than a slot's inline capacity"
                );
            )*

            /// The server side of the service.
            pub trait Server {
                $(
                    $(#[$mattr])*
                    fn $method(
                        &mut self,
                        call: &mut $crate::CallContext<'_>,
                        args: $args,
                    ) -> ::core::result::Result<$ret, $crate::Status>;
                )*
            }

            /// Routes one call of this service to `server`.
            pub fn dispatch<S: Server + ?Sized>(server: &mut S, call: &mut $crate::CallContext<'_>) -> $crate::Status {
                if call.version() != VERSION {
                    return $crate::Status::VersionMismatch;
                }
                match call.method() {
                    $(
                        $mid => $crate::service::dispatch_typed::<$args, $ret, _>(call, |call, args| server.$method(call, args)),
                    )*
                    _ => $crate::Status::UnknownMethod,
                }
            }

            /// Wraps a `Server` implementation for a `Registry`.
            pub struct Handler<S>(pub S);

            impl<S: Server> $crate::ServiceHandler for Handler<S> {
                fn info(&self) -> &'static $crate::ServiceInfo {
                    &INFO
                }
                fn handle(&mut self, call: &mut $crate::CallContext<'_>) -> $crate::Status {
                    dispatch(&mut self.0, call)
                }
            }

            /// Typed client stubs: build a call, then start it on a `ClientConnection`.
            pub mod client {
                #[allow(unused_imports)]
                use super::*;
                $(
                    $(#[$mattr])*
                    pub fn $method(args: &$args) -> $crate::TypedCall<'_, $ret> {
                        $crate::TypedCall::new(SERVICE_ID, $mid, VERSION, $crate::zerocopy::IntoBytes::as_bytes(args))
                    }
                )*
            }
        }
    };
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::mem::HeapRegion;
    use crate::region::SharedRegion;

    #[test]
    fn validate_ool_checks_bounds_overflow_and_empty_windows() {
        let len = 4096;
        assert_eq!(validate_ool(OolRef::new(0, 0), len), Some((0, 0)));
        assert_eq!(validate_ool(OolRef::new(0, 4096), len), Some((0, 4096)));
        assert_eq!(validate_ool(OolRef::new(4095, 1), len), Some((4095, 1)));
        assert_eq!(validate_ool(OolRef::new(4095, 2), len), None);
        assert_eq!(validate_ool(OolRef::new(4096, 1), len), None);
        assert_eq!(validate_ool(OolRef::new(4096, 0), len), None); // empty needs offset 0
        assert_eq!(validate_ool(OolRef::new(1, 0), len), None);
        assert_eq!(validate_ool(OolRef::new(u32::MAX, u32::MAX), len), None);
        assert_eq!(
            validate_ool(OolRef::new(1, u32::MAX), usize::MAX),
            Some((1, u32::MAX as usize))
        );
        assert_eq!(validate_ool(OolRef::new(0, 1), 0), None);
    }

    #[test]
    fn windows_confine_handlers_to_their_bytes() {
        let region = SharedRegion::new(HeapRegion::new(2 * 4096)).unwrap();
        let view = region.view();
        view.fill(0, 2 * 4096, 0x11).unwrap();
        let meter = CopyMeter::for_windows(1000, 1000);
        let args = OolArgs::new(view, 100, 10, &meter);
        let mut buf = [0u8; 10];
        assert_eq!(args.read(0, &mut buf), Ok(()));
        assert_eq!(args.read(1, &mut buf), Err(OolError::ArgsOutOfWindow));
        assert_eq!(
            args.read(usize::MAX, &mut buf[..1]),
            Err(OolError::ArgsOutOfWindow)
        );
        assert_eq!(args.read_pod::<u64>(3), Err(OolError::ArgsOutOfWindow));
        assert_eq!(args.read_pod::<u64>(2), Ok(u64::from_ne_bytes([0x11; 8])));

        let mut result = OolResult::new(view, 200, 8, &meter);
        assert_eq!(
            result.write(4, &[1, 2, 3, 4, 5]),
            Err(OolError::ResultOutOfWindow)
        );
        assert_eq!(result.written(), 0);
        assert_eq!(result.write(4, &[1, 2, 3, 4]), Ok(()));
        assert_eq!(result.written(), 8);
        assert_eq!(
            result.write(usize::MAX, &[1]),
            Err(OolError::ResultOutOfWindow)
        );
        assert_eq!(
            result.copy_from_args(&args, 0, 0, 9),
            Err(OolError::ResultOutOfWindow)
        );
        assert_eq!(
            result.copy_from_args(&args, 5, 0, 6),
            Err(OolError::ArgsOutOfWindow)
        );
        // Nothing outside [200, 208) was touched.
        let mut around = [0u8; 10];
        view.read(199, &mut around).unwrap();
        assert_eq!(around, [0x11, 0x11, 0x11, 0x11, 0x11, 1, 2, 3, 4, 0x11]);
        assert_eq!(
            Status::from(OolError::ArgsOutOfWindow),
            Status::BadArguments
        );
        assert_eq!(Status::from(OolError::ResultOutOfWindow), Status::TooLarge);
    }

    #[test]
    fn registry_refuses_duplicates_and_overflow() {
        let mut handlers: Vec<crate::services::echo::Handler<crate::services::echo::EchoServer>> =
            (0..2)
                .map(|_| crate::services::echo::Handler(crate::services::echo::EchoServer))
                .collect();
        let mut registry = Registry::new();
        let (first, second) = handlers.split_at_mut(1);
        registry.register(&mut first[0]).unwrap();
        assert_eq!(
            registry.register(&mut second[0]),
            Err(RegistryError::DuplicateServiceId(1))
        );
        assert!(method_ids_unique(crate::services::kv::METHODS));
        let dup = [
            MethodInfo { id: 1, name: "a" },
            MethodInfo { id: 1, name: "b" },
        ];
        assert!(!method_ids_unique(&dup));

        struct Dummy(&'static ServiceInfo);
        impl ServiceHandler for Dummy {
            fn info(&self) -> &'static ServiceInfo {
                self.0
            }
            fn handle(&mut self, _call: &mut CallContext<'_>) -> Status {
                Status::Ok
            }
        }
        let mut dummies: Vec<Dummy> = (100..100 + MAX_SERVICES as u32 + 1)
            .map(|id| {
                Dummy(Box::leak(Box::new(ServiceInfo {
                    id,
                    name: "dummy",
                    version: 1,
                    methods: &[],
                })))
            })
            .collect();
        let mut full = Registry::new();
        let (fits, extra) = dummies.split_at_mut(MAX_SERVICES);
        for dummy in fits {
            full.register(dummy).unwrap();
        }
        assert_eq!(full.register(&mut extra[0]), Err(RegistryError::Full));
        // The introspection id is reserved.
        let mut intro = Dummy(&crate::services::introspection::INFO);
        assert_eq!(
            Registry::new().register(&mut intro),
            Err(RegistryError::DuplicateServiceId(0))
        );
    }
}
