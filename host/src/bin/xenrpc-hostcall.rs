//! A command-line client of `xenrpc-hostd`: makes one call and prints the reply.
//!
//! Exit status: 0 on success, 2 when the server answered with an error status (printed as
//! `status: <Name>`), 1 on any other failure (e.g. `server gone`).

use std::path::PathBuf;
use std::time::Duration;

use xenrpc_host::client::{Client, ClientError, ClientOptions};
use xenrpc_host::services::{admin, selftest, SleepArgs};
use xenrpc_proto::services::arith::{self, Operands};
use xenrpc_proto::services::echo::{self, InlineBytes};
use xenrpc_proto::services::introspection::{self, ServiceEntry};
use xenrpc_proto::OolRef;
use zerocopy::FromBytes;

const USAGE: &str = "usage: xenrpc-hostcall --socket PATH COMMAND
commands:
  ping                 null call
  echo TEXT            echo TEXT inline
  add|mul|div A B      arithmetic on i64s
  services             list the services this client may call
  stats                server connection counters (admin service)
  sleep MILLIS         stall the server (selftest service); prints `sent` once the call
                       is in the ring, before waiting for the reply";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(output) => println!("{output}"),
        Err(e) => {
            if let Some(status) = e.status() {
                println!("status: {status:?}");
                std::process::exit(2);
            }
            eprintln!("xenrpc-hostcall: {e}");
            std::process::exit(1);
        }
    }
}

fn usage_error(message: &str) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{message}\n{USAGE}"),
    ))
}

fn int<T: std::str::FromStr>(text: Option<&String>) -> Result<T, ClientError> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| usage_error("expected a number"))
}

fn run(args: &[String]) -> Result<String, ClientError> {
    let (socket, command) = match args {
        [flag, path, command @ ..] if flag == "--socket" && !command.is_empty() => {
            (PathBuf::from(path), command)
        }
        _ => return Err(usage_error("missing --socket PATH or command")),
    };
    let mut client = Client::connect(&socket, ClientOptions::default())?;
    let timeout = Some(Duration::from_secs(10));
    match command[0].as_str() {
        "ping" => {
            client.call(&echo::client::ping(&()), timeout)?;
            Ok("pong".into())
        }
        "echo" => {
            let text = command
                .get(1)
                .ok_or_else(|| usage_error("echo needs TEXT"))?;
            let bytes =
                InlineBytes::new(text.as_bytes()).ok_or_else(|| usage_error("TEXT too long"))?;
            let reply = client.call(&echo::client::echo_inline(&bytes), timeout)?;
            let echoed = reply.value.bytes().unwrap_or_default();
            Ok(String::from_utf8_lossy(echoed).into_owned())
        }
        op @ ("add" | "mul" | "div") => {
            let operands = Operands {
                a: int(command.get(1))?,
                b: int(command.get(2))?,
            };
            let call = match op {
                "add" => arith::client::add(&operands),
                "mul" => arith::client::mul(&operands),
                _ => arith::client::div(&operands),
            };
            Ok(client.call(&call, timeout)?.value.value.to_string())
        }
        "services" => {
            let window = OolRef::new(0, 4096);
            let reply = client.call(
                &introspection::client::list_services(&()).ool_result(window),
                timeout,
            )?;
            let mut lines = Vec::new();
            let size = std::mem::size_of::<ServiceEntry>();
            for i in 0..reply.value.written as usize {
                let mut raw = vec![0u8; size];
                client
                    .data()
                    .read(i * size, &mut raw)
                    .map_err(|_| usage_error("reply outside the data region"))?;
                if let Ok(entry) = ServiceEntry::read_from_bytes(&raw) {
                    let name_len = entry
                        .name
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(entry.name.len());
                    lines.push(format!(
                        "{:>5}  {:<20} v{}  {} methods",
                        entry.id,
                        String::from_utf8_lossy(&entry.name[..name_len]),
                        entry.version,
                        entry.method_count
                    ));
                }
            }
            Ok(lines.join("\n"))
        }
        "stats" => {
            let stats = client.call(&admin::client::stats(&()), timeout)?.value;
            Ok(format!("{stats:?}"))
        }
        "sleep" => {
            let millis = int(command.get(1))?;
            let pending = client.start(&selftest::client::sleep(&SleepArgs { millis }))?;
            client.flush();
            println!("sent");
            std::io::Write::flush(&mut std::io::stdout())?;
            client.finish(pending, timeout)?;
            Ok("slept".into())
        }
        other => Err(usage_error(&format!("unknown command {other}"))),
    }
}
