//! The [`define_service!`](crate::define_service) macro: one declaration of a service for both
//! sides (ids, descriptions, the server trait and its registry handler, typed client stubs).

/// Declares a service once for both sides. Generates, in a module of the given name:
/// - `SERVICE_ID`, `VERSION`, `NAME`, `methods::<method>` ids, `METHODS` (with each method's
///   [`Signature`](crate::signature::Signature), which introspection reports), `INFO`;
/// - `trait Server` with one method per declared method
///   (`fn m(&mut self, call: &mut CallContext<'_>, args: Args) -> Result<Reply, Status>`, plus
///   `data: &BytesIn<'_>` for a method declared `(Args, data: bytes)` and
///   `out: &mut BytesOut<'_>` for one declared `-> Reply, out: bytes`), `fn dispatch` (checks
///   the version on every call, then the method, then decodes the arguments) and
///   `Handler<S>`, a [`ServiceHandler`](crate::ServiceHandler) (so a
///   [`ServiceSet`](crate::ServiceSet)) to serve; `Server` also has
///   `fn forget_peer(&mut self, peer)` (by default nothing), which `Handler` forwards, for
///   services that keep state per tenant;
/// - `client::<method>(&args) -> TypedCall<Reply>`, typed stubs for [`crate::ClientConnection`].
///
/// Argument and reply types are declared with [`define_pod!`](crate::define_pod) (or are `()`
/// or a bare integer) and take at most `INLINE_CAPACITY` (192) bytes (checked at compile
/// time); bulk data travels out of line as `bytes`. Checked at compile time too: unique method
/// ids, a service id of 1024 or more (lower ids are the project's), a service name of at most
/// 20 bytes and method names of at most 28. Invoke it at module level: the generated module
/// reaches the argument types through `use super::*`.
///
/// Every generated item has a doc comment; a method's own attributes (its doc comment) go on
/// its `Server` method, its `client::` stub and (feature `alloc`) its `Client` method, so a
/// crate that warns on `missing_docs` documents each declared method.
///
/// ```
/// use xenrpc_proto::{define_pod, define_service, BytesIn, BytesOut, CallContext, Status};
///
/// define_pod! {
///     pub struct Number { pub value: u64 }
/// }
///
/// define_service! {
///     /// Doubles numbers.
///     pub mod doubler {
///         name = "doubler", id = 1077, version = 1;
///         /// Returns twice its argument.
///         fn double = 1 (Number) -> Number;
///         /// Returns the argument bytes doubled (`abc` → `abcabc`) and their count.
///         fn double_bytes = 2 ((), data: bytes) -> u64, out: bytes;
///     }
/// }
///
/// struct Impl;
/// impl doubler::Server for Impl {
///     fn double(&mut self, _call: &mut CallContext<'_>, n: Number) -> Result<Number, Status> {
///         n.value.checked_mul(2).map(|value| Number { value }).ok_or(Status::BadArguments)
///     }
///     fn double_bytes(
///         &mut self,
///         _call: &mut CallContext<'_>,
///         _: (),
///         data: &BytesIn<'_>,
///         out: &mut BytesOut<'_>,
///     ) -> Result<u64, Status> {
///         for _ in 0..2 {
///             data.for_each_chunk(|chunk| out.write_all(chunk))?;
///         }
///         Ok(data.len() as u64)
///     }
/// }
///
/// fn main() {
///     let _handler = doubler::Handler(Impl);
///     let _call = doubler::client::double(&Number { value: 21 });
///     assert!(doubler::METHODS[1].signature.bytes_out);
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
                fn $method:ident = $mid:literal (
                    $args:ty $(, $bin:ident : bytes)?
                ) -> $ret:ty $(, $bout:ident : bytes)?;
            )*
        }
    ) => {
        $(#[$attr])*
        $vis mod $module {
            #[allow(unused_imports)]
            use super::*;

            /// The service id every call of this service names.
            pub const SERVICE_ID: u32 = $id;
            /// The interface version every call must carry (anything else gets
            /// `VersionMismatch`).
            pub const VERSION: u32 = $version;
            /// The service's name, as introspection lists it.
            pub const NAME: &str = $name;

            /// Method ids.
            #[allow(non_upper_case_globals)]
            pub mod methods {
                $(
                    #[doc = concat!("The id of method `", stringify!($method), "`.")]
                    pub const $method: u32 = $mid;
                )*
            }

            /// Every method: id, name and signature, in declaration order.
            pub const METHODS: &[$crate::MethodInfo] = &[
                $( $crate::MethodInfo {
                    id: $mid,
                    name: stringify!($method),
                    signature: $crate::signature::Signature::of::<$args, $ret>(
                        $crate::__xenrpc_present!($($bin)?),
                        $crate::__xenrpc_present!($($bout)?),
                    ),
                }, )*
            ];

            /// The whole description (id, name, version, methods) a `Registry` serves and
            /// introspection reports.
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
            const _: () = assert!(
                $crate::service::names_fit(&INFO),
                "service names are at most 20 bytes, method names at most 28"
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
                        $( $bin: &$crate::BytesIn<'_>, )?
                        $( $bout: &mut $crate::BytesOut<'_>, )?
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
                        $mid => $crate::__xenrpc_dispatch!(
                            server, call, $method, $args, $ret, [$($bin)?], [$($bout)?]
                        ),
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

            $crate::__xenrpc_client_object! {
                $( $(#[$mattr])* fn $method = ($args $(, $bin)?) -> ($ret $(, $bout)?); )*
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

/// The typed client object of a service (used by `define_service!`; needs the protocol
/// crate's `alloc` feature, without which there is none).
#[cfg(feature = "alloc")]
#[doc(hidden)]
#[macro_export]
macro_rules! __xenrpc_client_object {
    ($(
        $(#[$mattr:meta])*
        fn $method:ident = ($args:ty $(, $bin:ident)?) -> ($ret:ty $(, $bout:ident)?);
    )*) => {
        /// Typed calls of this service through any [`Caller`](xenrpc_proto::Caller) (a
        /// connection): one method per method of the service, bytes placed out of line by
        /// the connection, returned as a `Vec<u8>` beside the reply where the method has them.
        pub struct Client<'c, C: ?Sized> {
            caller: &'c mut C,
            output_capacity: ::core::option::Option<usize>,
        }

        impl<'c, C: $crate::Caller + ?Sized> Client<'c, C> {
            /// Calls through `caller`.
            pub fn new(caller: &'c mut C) -> Self {
                Client { caller, output_capacity: None }
            }

            /// Room for at most `bytes` result bytes per call (by default as much as the
            /// connection has).
            pub fn output_capacity(mut self, bytes: usize) -> Self {
                self.output_capacity = Some(bytes);
                self
            }

            $(
                $(#[$mattr])*
                pub fn $method(
                    &mut self,
                    args: &$args,
                    $( $bin: &[u8], )?
                ) -> ::core::result::Result<$crate::__xenrpc_ret!($ret $(, $bout)?), C::Error> {
                    let call = client::$method(args);
                    let input: &[u8] = $crate::__xenrpc_if!([$($bin)?] { $($bin)? } else { &[] });
                    let capacity = $crate::__xenrpc_if!(
                        [$($bout)?] { self.output_capacity } else { Some(0) }
                    );
                    let (value, bytes) = $crate::caller::call_typed::<C, $ret>(
                        self.caller,
                        call.request(),
                        input,
                        capacity,
                    )?;
                    $crate::__xenrpc_if!([$($bout)?] {
                        Ok((value, bytes))
                    } else {
                        {
                            drop(bytes);
                            Ok(value)
                        }
                    })
                }
            )*
        }
    };
}

/// Without the `alloc` feature there are no client objects.
#[cfg(not(feature = "alloc"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __xenrpc_client_object {
    ($($anything:tt)*) => {};
}

/// A client object method's return type (used by `define_service!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __xenrpc_ret {
    ($ret:ty) => { $ret };
    ($ret:ty, $bout:ident) => { ($ret, $crate::__alloc::vec::Vec<u8>) };
}

/// The first branch with a marker, the second without (used by `define_service!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __xenrpc_if {
    ([] { $($then:tt)* } else { $($else:tt)* }) => { $($else)* };
    ([$($marker:tt)+] { $($then:tt)* } else { $($else:tt)* }) => { $($then)* };
}

/// `true` if given a marker (used by `define_service!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __xenrpc_present {
    () => {
        false
    };
    ($marker:ident) => {
        true
    };
}

/// One method's dispatch glue (used by `define_service!`): decode the inline arguments, hand
/// the handler its byte windows as declared, store the inline result.
#[doc(hidden)]
#[macro_export]
macro_rules! __xenrpc_dispatch {
    ($server:ident, $call:ident, $method:ident, $args:ty, $ret:ty, [], []) => {
        $crate::service::dispatch_typed::<$args, $ret, _>($call, |call, args| {
            $server.$method(call, args)
        })
    };
    ($server:ident, $call:ident, $method:ident, $args:ty, $ret:ty, [$bin:ident], []) => {
        $crate::service::dispatch_typed::<$args, $ret, _>($call, |call, args| {
            let input = *call.ool_args();
            $server.$method(call, args, &input)
        })
    };
    ($server:ident, $call:ident, $method:ident, $args:ty, $ret:ty, [], [$bout:ident]) => {
        $crate::service::dispatch_typed::<$args, $ret, _>($call, |call, args| {
            let mut out = call.take_bytes_out();
            let result = $server.$method(call, args, &mut out);
            call.restore_bytes_out(out);
            result
        })
    };
    ($server:ident, $call:ident, $method:ident, $args:ty, $ret:ty, [$bin:ident], [$bout:ident]) => {
        $crate::service::dispatch_typed::<$args, $ret, _>($call, |call, args| {
            let input = *call.ool_args();
            let mut out = call.take_bytes_out();
            let result = $server.$method(call, args, &input, &mut out);
            call.restore_bytes_out(out);
            result
        })
    };
}

/// Declares plain-old-data structs for call arguments and results: `#[repr(C)]`, the zerocopy
/// traits derived through this crate (no zerocopy dependency needed), `Clone, Copy, Debug,
/// PartialEq, Eq`, and [`Shape`](crate::signature::Shape) (field names, types and offsets, which
/// introspection reports). Fields are integers or arrays of integers; the layout may have no
/// padding (a compile error says so). Field names are at most
/// [`FIELD_NAME_MAX`](crate::signature::FIELD_NAME_MAX) bytes. More attributes (e.g.
/// `#[derive(Default)]`) pass through, on the struct and on its fields (their doc comments).
///
/// (The derives name the protocol crate as `::xenrpc_proto`: depend on it under that name.)
///
/// ```
/// xenrpc_proto::define_pod! {
///     /// How much to add.
///     pub struct Increment { pub by: u64 }
///
///     #[derive(Default)]
///     pub struct Tagged { pub tag: [u8; 16], pub len: u32, pub flags: u32 }
/// }
/// use xenrpc_proto::signature::Shape;
/// assert_eq!(Tagged::FIELDS[1].name, "len");
/// assert_eq!(Tagged::FIELDS[1].offset, 16);
/// ```
#[macro_export]
macro_rules! define_pod {
    ($(
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fattr:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$attr])*
        #[repr(C)]
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq,
            $crate::zerocopy::FromBytes,
            $crate::zerocopy::IntoBytes,
            $crate::zerocopy::Immutable,
            $crate::zerocopy::KnownLayout
        )]
        #[zerocopy(crate = "::xenrpc_proto::zerocopy")]
        $vis struct $name {
            $( $(#[$fattr])* $fvis $field: $fty, )*
        }

        impl $crate::signature::Shape for $name {
            const FIELDS: &'static [$crate::signature::Field] = &[
                $( $crate::signature::Field {
                    name: {
                        const NAME: &str = stringify!($field);
                        assert!(
                            $crate::signature::field_name_fits(NAME),
                            "field names are at most FIELD_NAME_MAX (20) bytes"
                        );
                        NAME
                    },
                    ty: <$fty as $crate::signature::FieldKind>::TYPE,
                    offset: ::core::mem::offset_of!($name, $field) as u16,
                }, )*
            ];
        }
    )*};
}
