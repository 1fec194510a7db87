//! `xenrpc-hostd`: the host server process (also run by the benchmark).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::server::{Server, ServerConfig, ServerEvent};
use crate::services::{set_admin_pids, Counters, HostServices, SharedKv};
use crate::wait::SpinPolicy;

pub const USAGE: &str = "usage: xenrpc-hostd --socket PATH [--spin-us MICROSECONDS] [--slots N] \
[--max-data BYTES] [--max-clients N] [--setup-timeout-ms N] [--admin-pid PID]... [--test-services] [--quiet]";

/// The line printed on stdout once the server accepts connections.
pub const READY_LINE: &str = "xenrpc-hostd: listening";

/// Parses the command line and serves until killed.
pub fn main_with_args(args: &[String]) -> io::Result<()> {
    let mut socket = None;
    let mut config = ServerConfig::default();
    let mut admin_pids = Vec::new();
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
                    spin_for: std::time::Duration::from_micros(number(&value("--spin-us")?)?),
                }
            }
            "--slots" => config.slots = number(&value("--slots")?)?,
            "--max-data" => config.max_data_len = number(&value("--max-data")?)?,
            "--max-clients" => config.max_clients = number(&value("--max-clients")?)?,
            "--setup-timeout-ms" => {
                config.setup_timeout =
                    std::time::Duration::from_millis(number(&value("--setup-timeout-ms")?)?)
            }
            "--admin-pid" => admin_pids.push(number(&value("--admin-pid")?)?),
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
    set_admin_pids(admin_pids);

    // Handler panics are caught and answered with `HandlerFault`; log them as one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("xenrpc-hostd: handler panicked (answered HandlerFault): {info}");
    }));
    let mut server = Server::bind(&socket, config)?;
    let kv = SharedKv::default();
    let counters = Counters::default();
    let mut services = HostServices::new(kv.clone(), counters.clone(), test_services);
    let mut registry = services.registry();
    println!("{READY_LINE} on {}", socket.display());
    io::stdout().flush()?;
    // A pid's kv namespace lives as long as any of its connections.
    let mut connections_per_pid: HashMap<u32, usize> = HashMap::new();
    server.run(&mut registry, |event| {
        counters.record(event);
        match event {
            ServerEvent::Connected(peer) => *connections_per_pid.entry(peer.pid).or_default() += 1,
            ServerEvent::Disconnected { peer, .. } | ServerEvent::Dropped { peer, .. } => {
                let remaining = connections_per_pid.get_mut(&peer.pid).map(|count| {
                    *count = count.saturating_sub(1);
                    *count
                });
                if remaining == Some(0) {
                    connections_per_pid.remove(&peer.pid);
                    kv.forget_peer(peer.peer_id());
                }
            }
            ServerEvent::Refused { .. } => {}
        }
        if !quiet {
            eprintln!("xenrpc-hostd: {}", describe(event));
        }
    })
}

fn describe(event: &ServerEvent) -> String {
    match event {
        ServerEvent::Connected(peer) => {
            format!("client pid {} (uid {}) connected", peer.pid, peer.uid)
        }
        ServerEvent::Disconnected { peer, requests } => {
            format!(
                "client pid {} gone after {requests} requests: connection dropped",
                peer.pid
            )
        }
        ServerEvent::Dropped { peer, reason } => {
            format!("client pid {} dropped: {reason}", peer.pid)
        }
        ServerEvent::Refused {
            peer: Some(peer),
            reason,
        } => {
            format!("client pid {} refused: {reason}", peer.pid)
        }
        ServerEvent::Refused { peer: None, reason } => format!("connection refused: {reason}"),
    }
}

fn number<T: std::str::FromStr>(text: &str) -> io::Result<T> {
    text.parse()
        .map_err(|_| bad_usage(&format!("not a number: {text}")))
}

fn bad_usage(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{message}\n{USAGE}"))
}
