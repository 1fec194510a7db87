//! What the `xenrpc` and `xenrpc-hostile` binaries share: the CLI's errors ([`error`]), its
//! output in text or JSON ([`output`]), the connection options of the Xen transport
//! ([`conn`]), and [`endpoint`], one small calling interface over both transports (the Xen
//! devices of a guest, or a `xenrpc-hostd` socket).
#![warn(missing_docs)]

pub mod conn;
pub mod endpoint;
pub mod error;
pub mod output;

pub use error::{CliError, Result};
pub use output::Output;
