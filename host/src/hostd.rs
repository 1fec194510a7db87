//! `xenrpc-hostd`: the host server process (also run by the benchmark).

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::server::{Server, ServerConfig, ServerEvent};
use crate::services::{set_admin_uids, Counters, HostServices};
use crate::wait::SpinPolicy;

pub const USAGE: &str = "usage: xenrpc-hostd --socket PATH [--spin-us MICROSECONDS] [--slots N] \
[--max-data BYTES] [--max-clients N] [--max-per-uid N] [--idle-reap-ms N] [--setup-timeout-ms N] \
[--admin-uid UID]... [--test-services] [--quiet]
  --max-per-uid defaults to a quarter of --max-clients (at least 1), --idle-reap-ms to 10000";

/// The line printed on stdout once the server accepts connections.
pub const READY_LINE: &str = "xenrpc-hostd: listening";

/// Parses the command line and serves until killed.
pub fn main_with_args(args: &[String]) -> io::Result<()> {
    let mut socket = None;
    let mut config = ServerConfig::default();
    let mut max_per_uid = None;
    let mut admin_uids = Vec::new();
    let mut test_services = false;
    let mut quiet = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| bad_usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--spin-us" => {
                config.spin = SpinPolicy {
                    spin_for: Duration::from_micros(number(&value("--spin-us")?)?),
                }
            }
            "--slots" => config.slots = number(&value("--slots")?)?,
            "--max-data" => config.max_data_len = number(&value("--max-data")?)?,
            "--max-clients" => config.max_clients = number(&value("--max-clients")?)?,
            "--max-per-uid" => max_per_uid = Some(number(&value("--max-per-uid")?)?),
            "--idle-reap-ms" => {
                config.idle_reap = Duration::from_millis(number(&value("--idle-reap-ms")?)?)
            }
            "--setup-timeout-ms" => {
                config.setup_timeout = Duration::from_millis(number(&value("--setup-timeout-ms")?)?)
            }
            "--admin-uid" => admin_uids.push(number(&value("--admin-uid")?)?),
            "--test-services" => test_services = true,
            "--quiet" => quiet = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(bad_usage(&format!("unknown argument {other}"))),
        }
    }
    let socket = socket.ok_or_else(|| bad_usage("--socket is required"))?;
    config.max_per_uid =
        max_per_uid.unwrap_or_else(|| ServerConfig::default_per_uid(config.max_clients));
    set_admin_uids(admin_uids);

    // Handler panics are caught and answered with `HandlerFault`; log them as one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("xenrpc-hostd: handler panicked (answered HandlerFault): {info}");
    }));
    let mut server = Server::bind(&socket, config)?;
    let counters = Counters::default();
    let mut services = HostServices::new(counters.clone(), test_services);
    let mut registry = services.registry();
    println!("{READY_LINE} on {}", socket.display());
    io::stdout().flush()?;
    server.run(&mut registry, |event| {
        counters.record(event);
        if !quiet {
            eprintln!("xenrpc-hostd: {}", describe(event));
        }
    })
}

fn describe(event: &ServerEvent) -> String {
    match event {
        ServerEvent::Connected(peer) => {
            format!("client uid {} (pid {}) connected", peer.uid, peer.pid)
        }
        ServerEvent::Disconnected { peer, requests } => format!(
            "client uid {} (pid {}) gone after {requests} requests: connection dropped",
            peer.uid, peer.pid
        ),
        ServerEvent::Dropped { peer, reason } => {
            format!(
                "client uid {} (pid {}) dropped: {reason}",
                peer.uid, peer.pid
            )
        }
        ServerEvent::Refused {
            peer: Some(peer),
            reason,
        } => format!(
            "client uid {} (pid {}) refused: {reason}",
            peer.uid, peer.pid
        ),
        ServerEvent::Refused { peer: None, reason } => format!("connection refused: {reason}"),
        ServerEvent::TenantGone { uid } => {
            format!("uid {uid}: last connection gone, its kv namespace forgotten")
        }
    }
}

fn number<T: std::str::FromStr>(text: &str) -> io::Result<T> {
    text.parse()
        .map_err(|_| bad_usage(&format!("not a number: {text}")))
}

fn bad_usage(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{message}\n{USAGE}"))
}
