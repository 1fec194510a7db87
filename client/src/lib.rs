//! # xenrpc-client: calling the xenrpc service VM from a Linux guest
//!
//! - [`frontend::connect`] finds this domain's xenrpc device in xenstore, walks the XenbusState
//!   handshake of `docs/rendezvous.md` (grants ring + data pages and an index page with
//!   `/dev/xen/gntalloc`, allocates an event channel with `/dev/xen/evtchn`) and returns a
//!   [`frontend::Connection`]: typed calls (the stubs `define_service!` generates in
//!   `xenrpc_proto::services`), each with a deadline, many in flight, and clear errors
//!   ([`Error`]) for "not attached", "server closed/gone", "deadline exceeded" and bad
//!   arguments. Waiting spins briefly, then sleeps in `poll()` on the event channel and the
//!   xenstore watch of the backend's state.
//! - [`admin`] is the dom0 side: `attach` / `detach` write and remove both xenstore
//!   directories with their permissions; `list_connections` reads them back.
//! - The Xen device layer sits behind [`devices::XenDevices`] / [`devices::EventChannel`] and
//!   [`xenstore::Xenstore`], so everything above it is tested on any Linux host against fakes
//!   (an in-memory xenstore with permissions and watches, heap "grants", eventfd "event
//!   channels", and the protocol crate's real server running in a thread).
//! - [`selftest`] exercises the real devices inside a guest (`xenrpc selftest-devices`).
//!
//! Request deadlines: the service VM measures `deadline_ns` on Xen's system time, which a
//! Linux guest's user space cannot read, so calls carry no server-side deadline (0) and the
//! client enforces its own: a call that misses it fails with `DeadlineExceeded` and its late
//! response is dropped.
#![warn(missing_docs)]

pub mod admin;
pub mod devices;
pub mod error;
pub mod frontend;
pub mod selftest;
pub mod server_clock;
pub mod wait;
pub mod xenstore;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use frontend::{connect, CloseOutcome, ConnectOptions, Connection};
