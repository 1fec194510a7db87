//! The [`define_service!`](crate::define_service) macro: one declaration of a service for both
//! sides (ids, descriptions, the server trait and its registry handler, typed client stubs).

/// Declares a service once for both sides. Generates, in a module of the given name:
/// - `SERVICE_ID`, `VERSION`, `NAME`, `methods::<method>` ids, `METHODS`, `INFO`;
/// - `trait Server` with one method per declared method
///   (`fn m(&mut self, call: &mut CallContext<'_>, args: Args) -> Result<Reply, Status>`),
///   `fn dispatch` (checks the version on every call, then the method, then decodes the
///   arguments) and `Handler<S>`, a [`ServiceHandler`](crate::ServiceHandler) to put in a
///   [`Registry`](crate::Registry); `Server` also has `fn forget_peer(&mut self, peer)` (by
///   default nothing), which `Handler` forwards, for services that keep state per tenant;
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
///         name = "doubler", id = 1077, version = 1;
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
            const _: () = assert!(
                $crate::service::id_allowed(SERVICE_ID, NAME),
                "service ids below 1024 (FIRST_USER_SERVICE_ID) are reserved for the project"
            );
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

                /// The tenant `peer` went away: drop whatever is kept for it (the registry
                /// forwards `Registry::forget_peer` here). Does nothing by default.
                fn forget_peer(&mut self, _peer: $crate::PeerId) {}
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
                fn forget_peer(&mut self, peer: $crate::PeerId) {
                    Server::forget_peer(&mut self.0, peer)
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
