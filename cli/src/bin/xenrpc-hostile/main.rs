//! `xenrpc-hostile`: a client that misbehaves on purpose, or plays by the rules greedily, to
//! check the service VM's defences (the `hostile` testbed scenario, audits). Each attack
//! reports what it did and whether the server answered it the way it must: exit status 0 if
//! it did, 1 if not (or on any failure), 2 for bad arguments. Kept out of `xenrpc` so the
//! production tool carries no attacks.

mod floods;
mod load;
mod misuse;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use xenrpc_cli::conn::ConnArgs;
use xenrpc_cli::{output, Output, Result};

#[derive(Parser)]
#[command(
    name = "xenrpc-hostile",
    version,
    about = "Attacks on the xenrpc service VM, to check its defences (tests and audits)"
)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    attack: Hostile,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::finish("xenrpc-hostile", cli.json, run(cli.attack))
}

#[derive(Subcommand)]
enum Hostile {
    /// Connect, then raise the connection's event in a loop with no requests behind it, with a
    /// ping call after every BURST events, until the server closes the connection or SECONDS
    /// pass. Succeeds only if the server closed it.
    EventStorm {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 1000)]
        burst: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Connect, make one call, then publish a response consumer index far beyond anything the
    /// ring holds before every call (the server reads it when its count of free response
    /// slots runs out). Succeeds only if the server closes the connection.
    BadIndex {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Connect and send requests the server can read but must refuse (unknown service,
    /// unknown method, wrong version, malformed arguments, a deadline long past, a deadline one
    /// second ago on the server's clock as learned from its answers), then a good call on the
    /// same connection. Succeeds only if each got its status and the good call its
    /// answer.
    BadRequests {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Keep the ring full of one-way `echo.echo_ool` calls over windows of SIZE bytes each
    /// way (the most a call may move is 1 MiB) for SECONDS, with a ping call every 100 ms.
    /// Plays by the rules: succeeds only if the server kept serving the connection.
    Greedy {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 1 << 20)]
        size: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Store VALUE_SIZE-byte values under keys fill-0, fill-1, ... until the server answers
    /// Busy (at most MAX puts). Succeeds only if it did.
    KvFill {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 4096)]
        value_size: usize,
        #[arg(long, default_value_t = 100_000)]
        max: u32,
    },
    /// Connect, then rewrite this device's frontend `state` node Initialising / Initialised in
    /// a loop for SECONDS, the index page and event channel left valid: each Initialised
    /// invites the server to map the whole connection again.
    StateChurn {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Connect with a ping port and raise it BURST times between ping calls (never waiting
    /// for the bounces), until the server closes the connection or SECONDS pass. Succeeds only
    /// if the server closed it.
    PingFlood {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 1000)]
        burst: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Open, use (one ping) and close a connection COUNT times: each costs the server log lines.
    Reconnect {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
}

/// Runs one attack.
fn run(attack: Hostile) -> Result<Output> {
    match attack {
        Hostile::EventStorm {
            conn,
            burst,
            seconds,
        } => floods::event_storm(&conn, burst, Duration::from_secs(seconds)),
        Hostile::BadIndex { conn } => misuse::bad_index(&conn),
        Hostile::BadRequests { conn } => misuse::bad_requests(&conn),
        Hostile::Greedy {
            conn,
            size,
            seconds,
        } => load::greedy(&conn, size, Duration::from_secs(seconds)),
        Hostile::KvFill {
            conn,
            value_size,
            max,
        } => load::kv_fill(&conn, value_size, max),
        Hostile::StateChurn { conn, seconds } => {
            misuse::state_churn(&conn, Duration::from_secs(seconds))
        }
        Hostile::PingFlood {
            conn,
            burst,
            seconds,
        } => floods::ping_flood(&conn, burst, Duration::from_secs(seconds)),
        Hostile::Reconnect { conn, count } => load::reconnect(&conn, count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_testbed_invocations_parse() {
        Cli::command().debug_assert();
        let parse = |line: &str| {
            Cli::try_parse_from(std::iter::once("xenrpc-hostile").chain(line.split(' ')))
                .unwrap_or_else(|e| panic!("{line}: {e}"))
        };
        match parse("greedy --devid 11 --data-pages 512 --seconds 60 --timeout-ms 30000").attack {
            Hostile::Greedy {
                conn,
                size,
                seconds,
            } => {
                assert_eq!(
                    (conn.devid, conn.data_pages, conn.timeout_ms),
                    (11, 512, 30_000)
                );
                assert_eq!((size, seconds), (1 << 20, 60));
            }
            _ => panic!("not greedy"),
        }
        match parse("--json ping-flood --devid 14 --burst 5000 --timeout-ms 30000 --seconds 120") {
            Cli {
                json: true,
                attack: Hostile::PingFlood { burst: 5000, .. },
            } => {}
            _ => panic!("not a ping flood in JSON"),
        }
        for line in [
            "event-storm --devid 6 --timeout-ms 30000 --seconds 120",
            "bad-requests --devid 0",
            "bad-index --devid 8 --timeout-ms 30000",
            "state-churn --devid 12 --seconds 15",
            "reconnect --devid 13 --count 60 --timeout-ms 30000",
            "kv-fill --devid 10",
        ] {
            parse(line);
        }
        assert!(Cli::try_parse_from(["xenrpc-hostile", "call", "echo.ping"]).is_err());
    }
}
