//! Connection options and opening and closing a connection to the service VM over the Xen
//! devices (also sizing a host connection, see [`ConnArgs::data_bytes`]).

use std::time::Duration;

use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::{self, CloseOutcome, ConnectOptions, Connection};
use xenrpc_client::xenstore::XenbusConnection;

use crate::error::Result;

/// The options of every command that connects.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnArgs {
    /// Which of this domain's xenrpc devices to use (Xen only).
    #[arg(long, default_value_t = 0)]
    pub devid: u32,
    /// Ring slots (power of two, 16..=1024; Xen only: a host server chooses its ring).
    #[arg(long, default_value_t = 32)]
    pub slots: u32,
    /// Data region pages (out-of-line arguments and results).
    #[arg(long, default_value_t = 16)]
    pub data_pages: usize,
    /// Handshake time limit, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Per-call time limit, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// How long the server gets to close its side at the end, in milliseconds. A server that
    /// has not closed by then gets a warning, not an error: every answer has arrived.
    #[arg(long, default_value_t = 10_000)]
    pub close_timeout_ms: u64,
}

impl ConnArgs {
    /// The per-call time limit (`--timeout-ms`).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The in-flight cap a connection with these options allows.
    pub fn max_in_flight(&self) -> usize {
        (self.slots as usize).min(xenrpc_proto::MAX_IN_FLIGHT)
    }

    /// The data region's size in bytes.
    pub fn data_bytes(&self) -> usize {
        self.data_pages
            .saturating_mul(xenrpc_client::devices::PAGE_SIZE)
    }
}

/// The xenstore connection: xenstored's socket in dom0, `/dev/xen/xenbus` in a guest.
pub fn store() -> Result<Box<XenbusConnection>> {
    Ok(XenbusConnection::open_default().map(Box::new)?)
}

/// Connects this domain's device `args.devid` to its server.
pub fn connect(args: &ConnArgs) -> Result<Connection<LinuxDevices>> {
    connect_with(args, false)
}

/// [`connect`], with a ping port the server bounces events back on if `ping_channel`.
pub fn connect_with(args: &ConnArgs, ping_channel: bool) -> Result<Connection<LinuxDevices>> {
    let options = ConnectOptions {
        ping_channel,
        devid: args.devid,
        slots: args.slots,
        data_pages: args.data_pages,
        max_in_flight: args.max_in_flight(),
        handshake_timeout: Duration::from_millis(args.connect_timeout_ms),
        ..ConnectOptions::default()
    };
    // The devices first: outside a Xen guest, "no Xen devices" is the error worth reading.
    let devices = LinuxDevices::open()?;
    let store = store()?;
    Ok(frontend::connect(&devices, store, &options)?)
}

/// Ends a connection whose work is done. A server slow to confirm the close is worth a
/// warning on stderr, not a failure: the command's answers have all arrived.
pub fn close(c: Connection<LinuxDevices>, args: &ConnArgs) -> Result<()> {
    match c.close(Duration::from_millis(args.close_timeout_ms))? {
        CloseOutcome::Acknowledged => {}
        CloseOutcome::Unacknowledged(why) => eprintln!("xenrpc: warning: {why}"),
    }
    Ok(())
}
