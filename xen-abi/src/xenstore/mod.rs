//! Xenstore: the wire ABI ([`wire`]) and the pure logic of a client.

pub mod wire;

pub use wire::*;
