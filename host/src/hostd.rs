//! `xenrpc-hostd`: the host server process (also run by the benchmark).

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::server::{Server, ServerConfig, ServerEvent};
use xenrpc_proto::service::hand_over_secret;
use xenrpc_proto::services::builtins;
use xenrpc_proto::services::kv::KvBudget;
use xenrpc_proto::{Platform, PlatformError, ServiceEnv, ServiceSet};

use crate::services::{host_registry, set_admin_uids, Counters, HostServices};
use crate::wait::SpinPolicy;

/// `xenrpc-hostd`'s usage text.
pub const USAGE: &str = "usage: xenrpc-hostd --socket PATH [--spin-us MICROSECONDS] [--slots N] \
[--max-data BYTES] [--max-clients N] [--max-per-uid N] [--idle-reap-ms N] [--setup-timeout-ms N] \
[--admin-uid UID]... [--param KEY=VALUE]... [--secret NAME=FILE]... [--memory BYTES] \
[--test-services] [--quiet]
  --max-per-uid defaults to a quarter of --max-clients (at least 1), --idle-reap-ms to 10000;
  --param, --secret and --memory are what the services are built with (like the service VM's
  kernel command line, provisioned secrets and heap; a secret file holds the raw bytes;
  --memory defaults to 256 MiB)";

/// The line printed on stdout once the server accepts connections.
pub const READY_LINE: &str = "xenrpc-hostd: listening";

/// Parses the command line and serves the built-in services until killed.
pub fn main_with_args(args: &[String]) -> io::Result<()> {
    main_with_services(args, builtins)
}

/// A host server of your own services: parses `xenrpc-hostd`'s command line (`args` without
/// the program name), builds the set with `make_services` (the same function a service VM
/// image names in `xenrpc_kernel::service_vm!`), and serves it, beside the host's own
/// `admin` (and with `--test-services` `selftest`) services, until killed.
pub fn main_with_services<S: ServiceSet>(
    args: &[String],
    make_services: impl FnOnce(&ServiceEnv<'_>) -> S,
) -> io::Result<()> {
    let mut socket = None;
    let mut config = ServerConfig::default();
    let mut max_per_uid = None;
    let mut admin_uids = Vec::new();
    let mut test_services = false;
    let mut quiet = false;
    let mut params = String::new();
    let mut memory = KvBudget::DEFAULT_HEAP_BYTES;
    let mut platform = HostPlatform::default();
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
            "--param" => {
                let param = value("--param")?;
                if !param.contains('=') || param.contains(char::is_whitespace) {
                    return Err(bad_usage(&format!("--param {param}: expected KEY=VALUE")));
                }
                params.push_str(&param);
                params.push(' ');
            }
            "--memory" => memory = number(&value("--memory")?)?,
            "--secret" => {
                let spec = value("--secret")?;
                let (name, file) = spec
                    .split_once('=')
                    .ok_or_else(|| bad_usage(&format!("--secret {spec}: expected NAME=FILE")))?;
                let bytes = std::fs::read(file).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot read the secret file {file}: {e}"))
                })?;
                platform.secrets.get_mut().insert(name.to_string(), bytes);
            }
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
    let log = |args: std::fmt::Arguments<'_>| {
        if !quiet {
            eprintln!("xenrpc-hostd: {args}");
        }
    };
    let env = ServiceEnv::new(&params, memory)
        .with_log(&log)
        .with_platform(&platform);
    let mut services = make_services(&env);
    let counters = Counters::default();
    let mut own = HostServices::new(counters.clone(), test_services);
    let mut registry = host_registry();
    registry
        .register_set(&mut services)
        .and_then(|()| registry.register_set(&mut own))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut server = Server::bind(&socket, config)?;
    if !quiet {
        eprintln!("xenrpc-hostd: serving {}", registry.serving());
    }
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

/// The host's platform: secrets from `--secret` files, randomness from `/dev/urandom`.
#[derive(Default)]
struct HostPlatform {
    secrets: std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>>,
}

impl Platform for HostPlatform {
    fn take_secret(&self, name: &str, buf: &mut [u8]) -> Result<Option<usize>, PlatformError> {
        match self.secrets.borrow_mut().remove(name) {
            Some(mut secret) => hand_over_secret(&mut secret, buf),
            None => Ok(None),
        }
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), PlatformError> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .map_err(|_| PlatformError::NoRandomness)
    }
}

fn number<T: std::str::FromStr>(text: &str) -> io::Result<T> {
    text.parse()
        .map_err(|_| bad_usage(&format!("not a number: {text}")))
}

fn bad_usage(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{message}\n{USAGE}"))
}
