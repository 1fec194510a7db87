//! The CLI's errors, over both transports: each reads as a sentence a user can act on, has a
//! short kind for `--json`, and an exit status (2 for a wrong command line, 1 otherwise).

use std::fmt;
use std::path::PathBuf;

use xenrpc_host::client::ClientError;
use xenrpc_proto::{CallError, Status};

/// Everything a command can fail with. Each variant's doc comment is its message.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments: {0} (the command line is wrong: exit status 2).
    BadArguments(String),
    /// Server answered {`Status::ident`} (the call reached the server, which refused it).
    Remote(Status),
    /// Server broke the protocol: {0} (its answer does not add up).
    Protocol(String),
    /// The Xen transport's own message (xenstore, the devices, the handshake, a call).
    Xen(xenrpc_client::Error),
    /// Cannot connect to the server at {socket}: {error, or why a server hangs up on a
    /// newcomer}.
    HostConnect {
        /// The server's socket.
        socket: PathBuf,
        /// Why connecting failed.
        error: ClientError,
    },
    /// Server gone: {socket} hung up / deadline exceeded: no reply from the server at {socket}
    /// / server broke the protocol: ... / call to the server at {socket}: {error} / server at
    /// {socket}: {error} (by the host transport's failure once connected).
    Host {
        /// The server's socket.
        socket: PathBuf,
        /// The host transport's failure.
        error: ClientError,
    },
}

impl CliError {
    /// A short machine-readable kind, for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::BadArguments(_) => "bad-arguments",
            CliError::Remote(_) => "remote-error",
            CliError::Protocol(_) => "protocol-violation",
            CliError::Xen(e) => e.kind(),
            CliError::HostConnect { .. } => "connect",
            CliError::Host { error, .. } => match error {
                ClientError::ServerGone => "server-gone",
                ClientError::TimedOut => "deadline-exceeded",
                ClientError::Call(CallError::Broken(_)) => "protocol-violation",
                ClientError::Call(
                    CallError::RingFull | CallError::TooManyInFlight | CallError::NoRoom { .. },
                ) => "busy",
                ClientError::Call(_) => "call",
                ClientError::Io(_) => "io",
            },
        }
    }

    /// The process exit status: 2 when the command line is wrong, 1 for any other failure
    /// (an error status from the server included).
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::BadArguments(_) => 2,
            _ => 1,
        }
    }

    /// Wraps a host transport failure after connecting; an error status stays a
    /// [`CliError::Remote`], as over Xen.
    pub fn host(socket: &std::path::Path, error: ClientError) -> CliError {
        match error {
            ClientError::Call(CallError::Remote(status)) => CliError::Remote(status),
            error => CliError::Host {
                socket: socket.to_path_buf(),
                error,
            },
        }
    }
}

/// Why a host server hangs up on a newcomer.
const REFUSED: &str = "it hung up during set-up (it refuses newcomers when it is full or this \
                       uid holds its share of connections)";

/// Shorthand for a [`CliError::BadArguments`].
pub fn bad(why: impl Into<String>) -> CliError {
    CliError::BadArguments(why.into())
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::BadArguments(why) => write!(f, "bad arguments: {why}"),
            CliError::Remote(status) => write!(f, "server answered {}", status.ident()),
            CliError::Protocol(why) => write!(f, "server broke the protocol: {why}"),
            CliError::Xen(e) => write!(f, "{e}"),
            CliError::HostConnect { socket, error } => {
                write!(f, "cannot connect to the server at {}: ", socket.display())?;
                match error {
                    // The server refuses a newcomer (its caps) by hanging up during set-up.
                    ClientError::ServerGone => f.write_str(REFUSED),
                    ClientError::Io(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                        ) =>
                    {
                        f.write_str(REFUSED)
                    }
                    ClientError::Io(e) => write!(f, "{e}"),
                    other => write!(f, "{other}"),
                }
            }
            CliError::Host { socket, error } => {
                let socket = socket.display();
                match error {
                    ClientError::ServerGone => write!(f, "server gone: {socket} hung up"),
                    ClientError::TimedOut => {
                        write!(f, "deadline exceeded: no reply from the server at {socket}")
                    }
                    ClientError::Call(CallError::Broken(v)) => {
                        write!(f, "server broke the protocol: {v}")
                    }
                    ClientError::Call(e) => write!(f, "call to the server at {socket}: {e}"),
                    ClientError::Io(e) => write!(f, "server at {socket}: {e}"),
                }
            }
        }
    }
}

impl std::error::Error for CliError {}

impl From<xenrpc_proto::CallError> for CliError {
    fn from(e: xenrpc_proto::CallError) -> CliError {
        // The client library's wording, the same over both transports.
        CliError::from(xenrpc_client::Error::from(e))
    }
}

impl From<xenrpc_client::Error> for CliError {
    fn from(e: xenrpc_client::Error) -> CliError {
        use xenrpc_client::Error;
        // The same failure reads the same over both transports.
        match e {
            Error::BadArguments(why) => CliError::BadArguments(why),
            Error::Remote(status) => CliError::Remote(status),
            Error::Protocol(why) => CliError::Protocol(why),
            other => CliError::Xen(other),
        }
    }
}

/// A result whose error is a [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_reads_the_same_over_both_transports() {
        let xen = CliError::from(xenrpc_client::Error::Remote(Status::BadArguments));
        let host = CliError::host(
            std::path::Path::new("/run/x.sock"),
            ClientError::Call(CallError::Remote(Status::BadArguments)),
        );
        for e in [&xen, &host] {
            assert_eq!(e.to_string(), "server answered BadArguments");
            assert_eq!((e.kind(), e.exit_status()), ("remote-error", 1));
        }
    }

    #[test]
    fn host_failures_name_the_socket_and_usage_errors_exit_2() {
        let gone = CliError::host(std::path::Path::new("/run/x.sock"), ClientError::ServerGone);
        assert_eq!(gone.to_string(), "server gone: /run/x.sock hung up");
        assert_eq!(gone.kind(), "server-gone");
        let refused = CliError::HostConnect {
            socket: "/run/x.sock".into(),
            error: ClientError::Io(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        assert!(
            refused
                .to_string()
                .starts_with("cannot connect to the server at /run/x.sock: "),
            "{refused}"
        );
        let usage = bad("expected 2 argument(s): A B");
        assert_eq!(
            usage.to_string(),
            "bad arguments: expected 2 argument(s): A B"
        );
        assert_eq!(usage.exit_status(), 2);
        let xen_usage = CliError::from(xenrpc_client::Error::BadArguments("24 slots".into()));
        assert_eq!(xen_usage.exit_status(), 2);
    }
}
