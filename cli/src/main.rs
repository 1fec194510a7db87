//! `xenrpc`: attach and detach client guests (in dom0), list connections and services, make
//! calls, show statistics, benchmark, and self-test the Xen devices of a guest. With
//! `--socket PATH`, `list`, `call` and `stats` talk to a `xenrpc-hostd` server instead of the
//! service VM. Readable output by default, `--json` for scripts (one JSON document on stdout,
//! errors included). Exit status: 0 ok, 1 failure, 2 bad arguments.

mod admin_cmd;
mod bench_cmd;
mod call_cmd;
mod introspect;
mod measure;
mod selftest_cmd;
mod stats_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use xenrpc_cli::conn::ConnArgs;
use xenrpc_cli::endpoint::{Endpoint, HostEndpoint, XenEndpoint};
use xenrpc_cli::error::bad;
use xenrpc_cli::{output, Output, Result};

#[derive(Parser)]
#[command(
    name = "xenrpc",
    version,
    about = "Client and admin tool of the xenrpc service VM"
)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Talk to the xenrpc-hostd server on this Unix socket instead of the service VM (for
    /// `list`, `call` and `stats`).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// (dom0) Attach client domain CLIENT to the service VM SERVER: writes both xenstore directories.
    Attach {
        server: u32,
        client: u32,
        #[arg(default_value_t = 0)]
        devid: u32,
    },
    /// (dom0) Close and remove a connection.
    Detach {
        server: u32,
        client: u32,
        #[arg(default_value_t = 0)]
        devid: u32,
        /// How long the server gets to close its side, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Remove the directories even if the server does not answer.
        #[arg(long)]
        force: bool,
    },
    /// List connections (all of them in dom0, this domain's in a guest) and the services.
    List {
        #[command(flatten)]
        conn: ConnArgs,
        /// Do not connect to list the services.
        #[arg(long)]
        no_services: bool,
    },
    /// Call SERVICE.METHOD of any service the server reports, its fields given as
    /// `FIELD=VALUE`, as values in field order, or as one JSON object: `arith.add 40 2`,
    /// `arith.add a=40 b=2`, `kv.get k`, `kv.put k --data v`, `echo.echo_ool --data hi`.
    Call {
        #[command(flatten)]
        conn: ConnArgs,
        method: String,
        fields: Vec<String>,
        /// Bytes to send a method that takes bytes, as text.
        #[arg(long, value_name = "TEXT")]
        data: Option<String>,
        /// Bytes to send, read from FILE.
        #[arg(long, value_name = "FILE")]
        data_file: Option<PathBuf>,
        /// Bytes to send, as hex digits.
        #[arg(long, value_name = "HEX")]
        data_hex: Option<String>,
        /// Write the bytes a method returns to FILE instead of printing them.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print returned bytes as hex even when they are text.
        #[arg(long)]
        hex: bool,
        /// Room for returned bytes (default: as much as the data pages hold).
        #[arg(long, value_name = "BYTES")]
        capacity: Option<usize>,
    },
    /// Print the signatures of every method of SERVICE (of every service without one).
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        service: Option<String>,
    },
    /// Connection details and counters after a probe of N pings.
    Stats {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 100)]
        probe: u32,
    },
    /// Round trips: N calls with up to K in flight; echo_ool of SIZE bytes if SIZE > 0, else ping.
    Bench {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 10_000)]
        calls: u32,
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        #[arg(long, default_value_t = 0)]
        size: u32,
        /// First time N raw event round trips on a ping port the server bounces straight back
        /// (no ring, no call), to set the calls beside them.
        #[arg(long)]
        event_ping: bool,
    },
    /// (guest) Exercise xenbus, gntalloc and evtchn without a server.
    SelftestDevices {
        /// Domain to grant the test pages to (default 0).
        #[arg(long)]
        grant_peer: Option<u16>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Attach { .. } => "attach",
            Command::Detach { .. } => "detach",
            Command::List { .. } => "list",
            Command::Call { .. } => "call",
            Command::Describe { .. } => "describe",
            Command::Stats { .. } => "stats",
            Command::Bench { .. } => "bench",
            Command::SelftestDevices { .. } => "selftest-devices",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    output::finish("xenrpc", json, run(cli))
}

fn run(cli: Cli) -> Result<Output> {
    if let Some(socket) = &cli.socket {
        return run_host(socket, cli.command);
    }
    match cli.command {
        Command::Attach {
            server,
            client,
            devid,
        } => admin_cmd::attach(server, client, devid),
        Command::Detach {
            server,
            client,
            devid,
            timeout_ms,
            force,
        } => admin_cmd::detach(
            server,
            client,
            devid,
            Duration::from_millis(timeout_ms),
            force,
        ),
        Command::List { conn, no_services } => admin_cmd::list(&conn, no_services),
        Command::Call { .. } | Command::Describe { .. } => with_endpoint(cli.command, |conn| {
            Ok(Box::new(XenEndpoint::connect(conn)?))
        }),
        Command::Stats { conn, probe } => stats_cmd::xen(&conn, probe),
        Command::Bench {
            conn,
            calls,
            in_flight,
            size,
            event_ping,
        } => bench_cmd::run(
            &conn,
            &bench_cmd::Bench {
                calls,
                in_flight,
                size,
                event_ping,
            },
        ),
        Command::SelftestDevices { grant_peer } => Ok(selftest_cmd::run(grant_peer)),
    }
}

/// Runs `call` or `describe` over the endpoint `open` connects, checking what can be checked
/// before connecting, and closes it.
fn with_endpoint(
    command: Command,
    open: impl FnOnce(&ConnArgs) -> Result<Box<dyn Endpoint>>,
) -> Result<Output> {
    let output = match command {
        Command::Call {
            conn,
            method,
            fields,
            data,
            data_file,
            data_hex,
            out,
            hex,
            capacity,
        } => {
            // What can be checked without the server's signatures is, before connecting.
            call_cmd::check_spec(&method)?;
            let args = call_cmd::CallArgs {
                fields,
                data: call_cmd::data_bytes(data, data_file, data_hex)?,
                out,
                hex,
                capacity,
            };
            let mut endpoint = open(&conn)?;
            let output = call_cmd::call(endpoint.as_mut(), &method, &args)?;
            endpoint.close()?;
            output
        }
        Command::Describe { conn, service } => {
            let mut endpoint = open(&conn)?;
            let output = call_cmd::describe(endpoint.as_mut(), service.as_deref())?;
            endpoint.close()?;
            output
        }
        other => return Err(bad(format!("{} is not a call", other.name()))),
    };
    Ok(output)
}

/// The commands that make sense against a host server.
fn run_host(socket: &std::path::Path, command: Command) -> Result<Output> {
    match command {
        Command::List { conn, .. } => admin_cmd::list_host(socket, &conn),
        command @ (Command::Call { .. } | Command::Describe { .. }) => {
            with_endpoint(command, |conn| {
                Ok(Box::new(HostEndpoint::connect(socket, conn)?))
            })
        }
        Command::Stats { conn, probe } => stats_cmd::host(socket, &conn, probe),
        other => Err(bad(format!(
            "--socket works with list, call, describe and stats; {} needs the Xen devices",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(line: &str) -> Cli {
        Cli::try_parse_from(std::iter::once("xenrpc").chain(line.split(' ')))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn the_testbed_invocations_parse() {
        Cli::command().debug_assert();
        match parse("call --connect-timeout-ms 30000 --timeout-ms 30000 arith.add 40 2").command {
            Command::Call {
                conn,
                method,
                fields,
                ..
            } => {
                assert_eq!((conn.connect_timeout_ms, conn.timeout_ms), (30_000, 30_000));
                assert_eq!(method, "arith.add");
                assert_eq!(fields, ["40", "2"]);
            }
            _ => panic!("not a call"),
        }
        match parse("--json bench --calls 200 --size 65536 --data-pages 32") {
            Cli {
                json: true,
                socket: None,
                command:
                    Command::Bench {
                        conn,
                        calls: 200,
                        size: 65536,
                        in_flight: 1,
                        event_ping: false,
                    },
            } => assert_eq!(conn.data_pages, 32),
            _ => panic!("not the bench"),
        }
        for line in [
            "list --no-services",
            "stats --probe 200",
            "bench --calls 1000 --event-ping",
            "detach --force --timeout-ms 1000 0 5 0",
            "attach 1 5",
            "selftest-devices --grant-peer 0",
            "--socket /run/x.sock call echo.ping",
            "call --socket /run/x.sock echo.ping",
            "call kv.put colour --data red",
            "call counter.get_blob 10000 --out /tmp/blob --hex",
            "describe mac",
            "describe",
        ] {
            parse(line);
        }
        // The attacks live in xenrpc-hostile.
        assert!(Cli::try_parse_from(["xenrpc", "hostile", "bad-index"]).is_err());
    }
}
