//! Host transport for xenrpc: a server process and client processes on one Linux machine.
//!
//! Memory is shared through sealed memfds ([`shm`]), wake-ups go through eventfds ([`event`]),
//! connections are set up over a Unix socket that also reports each side's death
//! ([`rendezvous`]), and waiting spins briefly before it blocks ([`wait`]).
#![warn(missing_docs)]

pub mod attack;
pub mod client;
pub mod event;
pub mod floors;
pub mod hostd;
pub mod link;
pub mod process;
pub mod rendezvous;
pub mod server;
pub mod services;
pub mod shm;
pub mod stats;
pub mod wait;
