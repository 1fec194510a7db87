//! `xenrpc`: attach and detach client guests (in dom0), list connections and services, make
//! calls, show statistics, benchmark, and self-test the Xen devices of a guest. Readable
//! output by default, `--json` for scripts (one JSON document on stdout, errors included).

use std::process::ExitCode;
use std::time::{Duration, Instant};

mod hostile_cmd;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

use xenrpc_client::admin::{self, ConnectionRow};
use xenrpc_client::devices::LinuxDevices;
use xenrpc_client::frontend::{self, CloseOutcome, ConnectOptions, Connection};
use xenrpc_client::xenstore::XenbusConnection;
use xenrpc_client::{selftest, Error, Result};
use xenrpc_proto::services::introspection::{
    self, MethodEntry, ServiceEntry, ServiceQuery, ServiceStatsEntry,
};
use xenrpc_proto::services::{arith, echo, field_name, kv};
use xenrpc_proto::zerocopy::FromBytes;
use xenrpc_proto::{OolRef, ServiceInfo};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConnArgs {
    /// Which of this domain's xenrpc devices to use.
    #[arg(long, default_value_t = 0)]
    devid: u32,
    /// Ring slots (power of two, 16..=1024).
    #[arg(long, default_value_t = 32)]
    slots: u32,
    /// Data region pages.
    #[arg(long, default_value_t = 16)]
    data_pages: usize,
    /// Handshake time limit, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Per-call time limit, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// How long the server gets to close its side at the end, in milliseconds. A server that
    /// has not closed by then gets a warning, not an error: every answer has arrived.
    #[arg(long, default_value_t = 10_000)]
    close_timeout_ms: u64,
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
    /// Call SERVICE.METHOD with ARGS, e.g. `arith.add 40 2`, `echo.echo_inline hi`, `kv.get k`.
    Call {
        #[command(flatten)]
        conn: ConnArgs,
        method: String,
        args: Vec<String>,
    },
    /// Connection details and client counters after a probe of N pings.
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
    /// Misbehave on purpose, to check the service VM's defences (tests and audits).
    #[command(hide = true, subcommand)]
    Hostile(hostile_cmd::Hostile),
    /// (guest) Exercise xenbus, gntalloc and evtchn without a server.
    SelftestDevices {
        /// Domain to grant the test pages to (default 0).
        #[arg(long)]
        grant_peer: Option<u16>,
    },
}

const SERVICES: [&ServiceInfo; 4] = [&introspection::INFO, &echo::INFO, &arith::INFO, &kv::INFO];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(Output { text, value, ok }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                print!("{text}");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            if json {
                let doc =
                    json!({"ok": false, "error": {"kind": e.kind(), "message": e.to_string()}});
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                eprintln!("xenrpc: error: {e}");
            }
            match e {
                Error::BadArguments(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// What a command prints: text for people, a JSON value for scripts.
struct Output {
    text: String,
    value: Value,
    ok: bool,
}

fn ok(text: String, value: Value) -> Result<Output> {
    Ok(Output {
        text,
        value,
        ok: true,
    })
}

fn store() -> Result<Box<XenbusConnection>> {
    XenbusConnection::open_default().map(Box::new)
}

fn connect(args: &ConnArgs) -> Result<Connection<LinuxDevices>> {
    connect_with(args, false)
}

fn connect_with(args: &ConnArgs, ping_channel: bool) -> Result<Connection<LinuxDevices>> {
    let options = ConnectOptions {
        ping_channel,
        devid: args.devid,
        slots: args.slots,
        data_pages: args.data_pages,
        max_in_flight: (args.slots as usize).min(xenrpc_proto::MAX_IN_FLIGHT),
        handshake_timeout: Duration::from_millis(args.connect_timeout_ms),
        ..ConnectOptions::default()
    };
    let store = store()?;
    let devices = LinuxDevices::open()?;
    frontend::connect(&devices, store, &options)
}

/// Ends a connection whose work is done. A server slow to confirm the close is worth a
/// warning on stderr, not a failure: the command's answers have all arrived.
fn close(c: Connection<LinuxDevices>, args: &ConnArgs) -> Result<()> {
    match c.close(Duration::from_millis(args.close_timeout_ms))? {
        CloseOutcome::Acknowledged => {}
        CloseOutcome::Unacknowledged(why) => eprintln!("xenrpc: warning: {why}"),
    }
    Ok(())
}

fn run(cli: Cli) -> Result<Output> {
    match cli.command {
        Command::Attach {
            server,
            client,
            devid,
        } => {
            let done = admin::attach(store()?.as_mut(), server, client, devid)?;
            ok(
                format!("attached domain {client} device {devid} to server {server}\n  frontend {}\n  backend  {}\n", done.frontend, done.backend),
                json!({"ok": true, "attached": done}),
            )
        }
        Command::Detach {
            server,
            client,
            devid,
            timeout_ms,
            force,
        } => {
            let done = admin::detach(
                store()?.as_mut(),
                server,
                client,
                devid,
                Duration::from_millis(timeout_ms),
                force,
            )?;
            let mut text = format!("detached domain {client} device {devid} from server {server}");
            text += if done.server_acknowledged {
                " (server closed its side)\n"
            } else {
                "\n"
            };
            if let Some(note) = &done.note {
                text += &format!("  note: {note}\n");
            }
            ok(text, json!({"ok": true, "detached": done}))
        }
        Command::List { conn, no_services } => list(&conn, no_services),
        Command::Call { conn, method, args } => call(&conn, &method, &args),
        Command::Stats { conn, probe } => stats(&conn, probe),
        Command::Bench {
            conn,
            calls,
            in_flight,
            size,
            event_ping,
        } => bench(&conn, calls, in_flight, size, event_ping),
        Command::Hostile(attack) => hostile_cmd::run(attack),
        Command::SelftestDevices { grant_peer } => {
            let steps = selftest::run(grant_peer);
            let passed = !steps.is_empty() && steps.iter().all(|s| s.ok);
            let mut text = String::new();
            for s in &steps {
                text += &format!(
                    "selftest-devices: {}: {} ({})\n",
                    s.name,
                    if s.ok { "ok" } else { "FAIL" },
                    s.detail
                );
            }
            text += &format!(
                "selftest-devices: {}\n",
                if passed { "PASS" } else { "FAIL" }
            );
            Ok(Output {
                text,
                value: json!({"ok": passed, "steps": steps}),
                ok: passed,
            })
        }
    }
}

// ---- list -----------------------------------------------------------------------------------

#[derive(Serialize)]
struct ServiceListing {
    id: u32,
    name: String,
    version: u32,
    methods: Vec<String>,
}

fn list(conn_args: &ConnArgs, no_services: bool) -> Result<Output> {
    let mut xs = store()?;
    let me = frontend::own_domid(xs.as_mut())?;
    let mut text = String::new();
    let mut value = json!({"ok": true, "domid": me});
    let has_device;
    if me == 0 {
        let rows = admin::list_connections(xs.as_mut())?;
        text += &format_rows(&rows);
        has_device = false;
        value["connections"] = json!(rows);
        let mut servers: Vec<u16> = rows.iter().map(|r| r.server).collect();
        servers.sort_unstable();
        servers.dedup();
        let mut totals = serde_json::Map::new();
        for server in servers {
            let line = match admin::server_totals(xs.as_mut(), server) {
                Ok(Some(t)) => t,
                Ok(None) => "none published".to_string(),
                Err(e) => format!("unreadable: {e}"),
            };
            text += &format!("server {server} totals: {line}\n");
            totals.insert(server.to_string(), json!(line));
        }
        value["server_totals"] = Value::Object(totals);
    } else {
        let devices = frontend::list_own_devices(xs.as_mut())?;
        if devices.is_empty() {
            text += "no xenrpc devices in this domain (attach one from dom0)\n";
        }
        for d in &devices {
            text += &format!(
                "device {}: frontend {}, backend {}\n",
                d.devid,
                d.frontend_state.as_deref().unwrap_or("-"),
                d.backend_state.as_deref().unwrap_or("-")
            );
        }
        has_device = devices.iter().any(|d| d.devid == conn_args.devid);
        value["devices"] = json!(devices);
    }
    if no_services || !has_device {
        return ok(text, value);
    }
    match list_services(conn_args) {
        Ok(services) => {
            text += "services:\n";
            for s in &services {
                text += &format!(
                    "  {:>3} {} v{}: {}\n",
                    s.id,
                    s.name,
                    s.version,
                    s.methods.join(", ")
                );
            }
            value["services"] = json!(services);
            ok(text, value)
        }
        Err(e) => {
            text += &format!("services: unavailable: {e}\n");
            value["ok"] = json!(false);
            value["services_error"] = json!({"kind": e.kind(), "message": e.to_string()});
            Ok(Output {
                text,
                value,
                ok: false,
            })
        }
    }
}

fn format_rows(rows: &[ConnectionRow]) -> String {
    if rows.is_empty() {
        return "no xenrpc connections\n".into();
    }
    let mut text = format!(
        "{:>6} {:>6} {:>5}  {:<18} {:<18} {:>6} {:>7} {:>9}\n",
        "server", "client", "devid", "backend", "frontend", "online", "evtchn", "index-ref"
    );
    for r in rows {
        let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        text += &format!(
            "{:>6} {:>6} {:>5}  {:<18} {:<18} {:>6} {:>7} {:>9}\n",
            r.server,
            r.client,
            r.devid,
            d(&r.backend_state),
            d(&r.frontend_state),
            d(&r.online),
            d(&r.event_channel),
            d(&r.index_ref)
        );
        for p in &r.problems {
            text += &format!("        problem: {p}\n");
        }
    }
    text
}

/// Reads `count` records of `T` from the start of the data region, after checking the server
/// wrote at least that many bytes.
fn records<T: FromBytes>(
    c: &Connection<LinuxDevices>,
    count: u32,
    written: u32,
    window: u32,
) -> Result<Vec<T>> {
    let size = core::mem::size_of::<T>();
    let need = count as usize * size;
    if need > written as usize || written > window {
        return Err(Error::Protocol(format!(
            "server claims {count} records in {written} bytes"
        )));
    }
    let mut bytes = vec![0u8; need];
    c.data()
        .read(0, &mut bytes)
        .map_err(|_| Error::Protocol("records outside the data region".into()))?;
    Ok(bytes
        .chunks_exact(size)
        .filter_map(|b| T::read_from_bytes(b).ok())
        .collect())
}

fn name_of(field: &[u8]) -> String {
    String::from_utf8_lossy(field_name(field)).into_owned()
}

fn list_services(conn_args: &ConnArgs) -> Result<Vec<ServiceListing>> {
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let window = (c.data().len() as u32).min(64 * 1024);
    let call = introspection::client::list_services(&()).ool_result(OolRef::new(0, window));
    let reply = c.call(&call, timeout)?;
    let entries: Vec<ServiceEntry> = records(&c, reply.value.written, reply.ool_written, window)?;
    let mut out = Vec::new();
    for e in entries {
        let query = ServiceQuery { id: e.id };
        let call = introspection::client::list_methods(&query).ool_result(OolRef::new(0, window));
        let reply = c.call(&call, timeout)?;
        let methods: Vec<MethodEntry> =
            records(&c, reply.value.written, reply.ool_written, window)?;
        out.push(ServiceListing {
            id: e.id,
            name: name_of(&e.name),
            version: e.version,
            methods: methods.iter().map(|m| name_of(&m.name)).collect(),
        });
    }
    close(c, conn_args)?;
    Ok(out)
}

// ---- call -----------------------------------------------------------------------------------

fn bad(msg: impl Into<String>) -> Error {
    Error::BadArguments(msg.into())
}

fn expect_args(args: &[String], n: usize, usage: &str) -> Result<()> {
    if args.len() != n {
        return Err(bad(format!("expected {n} argument(s): {usage}")));
    }
    Ok(())
}

fn int(arg: &str) -> Result<i64> {
    arg.parse()
        .map_err(|_| bad(format!("{arg:?} is not a 64-bit integer")))
}

fn kv_key(arg: &str) -> Result<kv::Key> {
    kv::Key::new(arg.as_bytes())
        .ok_or_else(|| bad(format!("key must be 1..={} bytes", kv::MAX_KEY_LEN)))
}

fn find_method(spec: &str) -> Result<(&'static ServiceInfo, &'static str)> {
    let known = || {
        SERVICES
            .iter()
            .flat_map(|s| {
                s.methods
                    .iter()
                    .map(move |m| format!("{}.{}", s.name, m.name))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (service, method) = spec.split_once('.').ok_or_else(|| {
        bad(format!(
            "{spec:?} is not SERVICE.METHOD; known: {}",
            known()
        ))
    })?;
    let info = SERVICES
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| bad(format!("unknown service {service:?}; known: {}", known())))?;
    let m = info
        .methods
        .iter()
        .find(|m| m.name == method)
        .ok_or_else(|| bad(format!("unknown method {spec:?}; known: {}", known())))?;
    Ok((info, m.name))
}

fn call(conn_args: &ConnArgs, spec: &str, args: &[String]) -> Result<Output> {
    let (info, method) = find_method(spec)?;
    let name = format!("{}.{method}", info.name);
    // Check the arguments before touching any device.
    let arith_ops = |args: &[String]| -> Result<arith::Operands> {
        expect_args(args, 2, "A B")?;
        Ok(arith::Operands {
            a: int(&args[0])?,
            b: int(&args[1])?,
        })
    };
    enum Prepared {
        Ping,
        Inline(echo::InlineBytes),
        Ool(Vec<u8>),
        Arith(
            fn(&arith::Operands) -> xenrpc_proto::TypedCall<'_, arith::Value>,
            arith::Operands,
        ),
        KvPut(kv::Key, Vec<u8>),
        KvGet(kv::Key),
        KvDelete(kv::Key),
        KvList(u32),
        Services,
        Describe(u32),
        Methods(u32),
        ServerStats,
    }
    let service_id = |args: &[String]| -> Result<u32> {
        expect_args(args, 1, "SERVICE (name or id)")?;
        if let Ok(id) = args[0].parse::<u32>() {
            return Ok(id);
        }
        SERVICES
            .iter()
            .find(|s| s.name == args[0])
            .map(|s| s.id)
            .ok_or_else(|| bad(format!("unknown service {:?}", args[0])))
    };
    let prepared =
        match (info.name, method) {
            ("echo", "ping") => expect_args(args, 0, "no arguments").map(|()| Prepared::Ping)?,
            ("echo", "echo_inline") => {
                expect_args(args, 1, "TEXT")?;
                Prepared::Inline(echo::InlineBytes::new(args[0].as_bytes()).ok_or_else(|| {
                    bad(format!("text longer than {} bytes", echo::INLINE_BYTES_MAX))
                })?)
            }
            ("echo", "echo_ool") => {
                expect_args(args, 1, "TEXT").map(|()| Prepared::Ool(args[0].as_bytes().to_vec()))?
            }
            ("arith", "add") => Prepared::Arith(arith::client::add, arith_ops(args)?),
            ("arith", "mul") => Prepared::Arith(arith::client::mul, arith_ops(args)?),
            ("arith", "div") => Prepared::Arith(arith::client::div, arith_ops(args)?),
            ("kv", "put") => {
                expect_args(args, 2, "KEY VALUE")?;
                if args[1].len() > kv::MAX_VALUE_LEN {
                    return Err(bad(format!(
                        "value longer than {} bytes",
                        kv::MAX_VALUE_LEN
                    )));
                }
                Prepared::KvPut(kv_key(&args[0])?, args[1].as_bytes().to_vec())
            }
            ("kv", "get") => expect_args(args, 1, "KEY")
                .and_then(|()| kv_key(&args[0]))
                .map(Prepared::KvGet)?,
            ("kv", "delete") => expect_args(args, 1, "KEY")
                .and_then(|()| kv_key(&args[0]))
                .map(Prepared::KvDelete)?,
            ("kv", "list") => match args {
                [] => Prepared::KvList(0),
                [skip] => Prepared::KvList(skip.parse().map_err(|_| bad("SKIP must be a number"))?),
                _ => return Err(bad("expected [SKIP]")),
            },
            ("introspection", "list_services") => {
                expect_args(args, 0, "no arguments").map(|()| Prepared::Services)?
            }
            ("introspection", "describe_service") => Prepared::Describe(service_id(args)?),
            ("introspection", "list_methods") => Prepared::Methods(service_id(args)?),
            ("introspection", "list_stats") => {
                expect_args(args, 0, "no arguments").map(|()| Prepared::ServerStats)?
            }
            _ => return Err(bad(format!("{name} has no command-line form"))),
        };
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let data_len = c.data().len() as u32;
    let half = data_len / 2;
    let write_data = |c: &Connection<LinuxDevices>, bytes: &[u8]| -> Result<OolRef> {
        if bytes.len() > half as usize {
            return Err(bad(format!(
                "{} bytes do not fit the data region's half ({half})",
                bytes.len()
            )));
        }
        c.data()
            .write(0, bytes)
            .map_err(|_| bad("argument outside the data region"))?;
        Ok(OolRef::new(0, bytes.len() as u32))
    };
    let read_data = |c: &Connection<LinuxDevices>, at: u32, len: u32| -> Result<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        c.data()
            .read(at as usize, &mut out)
            .map_err(|_| Error::Protocol("result outside the data region".into()))?;
        Ok(out)
    };
    let (text, result) = match prepared {
        Prepared::Ping => {
            let start = Instant::now();
            c.call(&echo::client::ping(&()), timeout)?;
            let us = start.elapsed().as_secs_f64() * 1e6;
            (format!("pong ({us:.1} µs)"), json!({"round_trip_us": us}))
        }
        Prepared::Inline(bytes) => {
            let reply = c.call(&echo::client::echo_inline(&bytes), timeout)?;
            let back = reply
                .value
                .bytes()
                .ok_or_else(|| Error::Protocol("echoed length out of range".into()))?;
            let s = String::from_utf8_lossy(back).into_owned();
            (s.clone(), json!({"text": s}))
        }
        Prepared::Ool(bytes) => {
            let args = write_data(&c, &bytes)?;
            let call = echo::client::echo_ool(&())
                .ool_args(args)
                .ool_result(OolRef::new(half, half));
            let reply = c.call(&call, timeout)?;
            if reply.value.len != reply.ool_written {
                return Err(Error::Protocol(format!(
                    "echo_ool says {} bytes, wrote {}",
                    reply.value.len, reply.ool_written
                )));
            }
            let back = read_data(&c, half, reply.ool_written)?;
            let s = String::from_utf8_lossy(&back).into_owned();
            (s.clone(), json!({"text": s, "bytes": back.len()}))
        }
        Prepared::Arith(stub, ops) => {
            let reply = c.call(&stub(&ops), timeout)?;
            (
                reply.value.value.to_string(),
                json!({"value": reply.value.value}),
            )
        }
        Prepared::KvPut(key, value) => {
            let args = write_data(&c, &value)?;
            c.call(&kv::client::put(&key).ool_args(args), timeout)?;
            ("stored".into(), json!({"stored": true}))
        }
        Prepared::KvGet(key) => {
            let window = OolRef::new(0, (kv::MAX_VALUE_LEN as u32).min(data_len));
            let reply = c.call(&kv::client::get(&key).ool_result(window), timeout)?;
            if reply.value.found == 0 {
                ("(not found)".into(), json!({"found": false}))
            } else {
                if reply.value.len != reply.ool_written {
                    return Err(Error::Protocol(format!(
                        "value of {} bytes, {} written",
                        reply.value.len, reply.ool_written
                    )));
                }
                let v = read_data(&c, 0, reply.ool_written)?;
                let s = String::from_utf8_lossy(&v).into_owned();
                (s.clone(), json!({"found": true, "value": s}))
            }
        }
        Prepared::KvDelete(key) => {
            let reply = c.call(&kv::client::delete(&key), timeout)?;
            let existed = reply.value.existed != 0;
            (
                (if existed { "deleted" } else { "(not found)" }).into(),
                json!({"existed": existed}),
            )
        }
        Prepared::KvList(skip) => {
            let window = OolRef::new(0, data_len.min(64 * 1024));
            let reply = c.call(
                &kv::client::list(&kv::ListArgs { skip }).ool_result(window),
                timeout,
            )?;
            let bytes = read_data(&c, 0, reply.ool_written.min(window.len))?;
            let keys = parse_key_records(&bytes, reply.value.written, reply.value.bytes)?;
            (
                keys.join("\n"),
                json!({"keys": keys, "total": reply.value.total}),
            )
        }
        Prepared::ServerStats => {
            let (text, value) = server_stats(&mut c, timeout)?;
            (text.trim_end().to_string(), json!({"stats": value}))
        }
        Prepared::Services | Prepared::Describe(_) | Prepared::Methods(_) => {
            let window = OolRef::new(0, data_len.min(64 * 1024));
            match prepared {
                Prepared::Services => {
                    let reply = c.call(
                        &introspection::client::list_services(&()).ool_result(window),
                        timeout,
                    )?;
                    let entries: Vec<ServiceEntry> =
                        records(&c, reply.value.written, reply.ool_written, window.len)?;
                    let list: Vec<Value> = entries.iter().map(|e| json!({"id": e.id, "name": name_of(&e.name), "version": e.version, "methods": e.method_count})).collect();
                    let text = entries
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {} v{} ({} methods)",
                                e.id,
                                name_of(&e.name),
                                e.version,
                                e.method_count
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    (text, json!({"services": list}))
                }
                Prepared::Describe(id) => {
                    let e = c
                        .call(
                            &introspection::client::describe_service(&ServiceQuery { id }),
                            timeout,
                        )?
                        .value;
                    (
                        format!(
                            "{} {} v{} ({} methods)",
                            e.id,
                            name_of(&e.name),
                            e.version,
                            e.method_count
                        ),
                        json!({"id": e.id, "name": name_of(&e.name), "version": e.version, "methods": e.method_count}),
                    )
                }
                Prepared::Methods(id) => {
                    let reply = c.call(
                        &introspection::client::list_methods(&ServiceQuery { id })
                            .ool_result(window),
                        timeout,
                    )?;
                    let entries: Vec<MethodEntry> =
                        records(&c, reply.value.written, reply.ool_written, window.len)?;
                    let list: Vec<Value> = entries
                        .iter()
                        .map(|m| json!({"id": m.id, "name": name_of(&m.name)}))
                        .collect();
                    (
                        entries
                            .iter()
                            .map(|m| format!("{} {}", m.id, name_of(&m.name)))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        json!({"methods": list}),
                    )
                }
                _ => unreachable!("matched above"),
            }
        }
    };
    close(c, conn_args)?;
    ok(
        format!("{text}\n"),
        json!({"ok": true, "call": name, "args": args, "result": result}),
    )
}

/// Parses kv.list records (u32 length + key bytes), checking them against the reply.
fn parse_key_records(bytes: &[u8], count: u32, total_bytes: u32) -> Result<Vec<String>> {
    if total_bytes as usize > bytes.len() {
        return Err(Error::Protocol(format!(
            "kv.list claims {total_bytes} bytes, {} written",
            bytes.len()
        )));
    }
    let mut rest = &bytes[..total_bytes as usize];
    let mut keys = Vec::new();
    for _ in 0..count {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::Protocol("kv.list record truncated".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len == 0 || len > kv::MAX_KEY_LEN || len > tail.len() {
            return Err(Error::Protocol(format!(
                "kv.list key length {len} out of range"
            )));
        }
        keys.push(String::from_utf8_lossy(&tail[..len]).into_owned());
        rest = &tail[len..];
    }
    Ok(keys)
}

// ---- stats and bench ------------------------------------------------------------------------

fn conn_json(c: &Connection<LinuxDevices>) -> Value {
    let i = c.info();
    json!({
        "domid": i.self_id, "server": i.server, "devid": i.devid,
        "frontend": i.frontend, "backend": i.backend,
        "slots": c.geometry().slots(), "ring_pages": c.geometry().region_pages(), "data_pages": c.data_pages(),
        "event_channel": c.event_channel_port(), "index_ref": c.index_ref(),
    })
}

fn stats(conn_args: &ConnArgs, probe: u32) -> Result<Output> {
    let mut c = connect(conn_args)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let mut latencies = Vec::with_capacity(probe as usize);
    for _ in 0..probe {
        let start = Instant::now();
        c.call(&echo::client::ping(&()), timeout)?;
        latencies.push(start.elapsed());
    }
    let s = c.stats();
    let info = conn_json(&c);
    let lat = percentiles(&mut latencies);
    let text = format!(
        "connection: domain {} device {} -> server {} ({} slots, {} ring + {} data pages, event channel {}, index ref {})\n\
         probe: {probe} pings, p50 {:.1} µs, p99 {:.1} µs\n\
         client counters (this session): {} started, {} ok, {} remote errors, {} timed out, \
         {} notifications sent, {} spin hits, {} sleeps, {} late responses\n",
        c.info().self_id, c.info().devid, c.info().server, c.geometry().slots(), c.geometry().region_pages(), c.data_pages(),
        c.event_channel_port(), c.index_ref(), lat.p50, lat.p99,
        s.calls_started, s.calls_ok, s.calls_remote_error, s.calls_timed_out, s.notifications_sent, s.spin_hits, s.sleeps, s.late_responses
    );
    let (server_text, server) = server_stats(&mut c, timeout)?;
    close(c, conn_args)?;
    ok(
        text + &server_text,
        json!({"ok": true, "connection": info, "probe_latency_us": lat, "client": s, "server": server}),
    )
}

/// The server's per-service counters (calls and errors since it started, all peers), from
/// `introspection.list_stats`.
fn server_stats(c: &mut Connection<LinuxDevices>, timeout: Duration) -> Result<(String, Value)> {
    let window = (c.data().len() as u32).min(64 * 1024);
    let call = introspection::client::list_stats(&()).ool_result(OolRef::new(0, window));
    let reply = c.call(&call, timeout)?;
    let entries: Vec<ServiceStatsEntry> =
        records(c, reply.value.written, reply.ool_written, window)?;
    let name = |id: u32| {
        SERVICES
            .iter()
            .find(|s| s.id == id)
            .map_or_else(|| format!("service {id}"), |s| s.name.to_string())
    };
    let mut text = String::from("server counters (all clients, since it started):");
    for e in &entries {
        text += &format!(" {}: {} calls, {} errors;", name(e.id), e.calls, e.errors);
    }
    text.push('\n');
    let value = entries
        .iter()
        .map(|e| json!({"id": e.id, "name": name(e.id), "calls": e.calls, "errors": e.errors}))
        .collect::<Vec<_>>();
    Ok((text, json!(value)))
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn percentiles(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Latency {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn bench(
    conn_args: &ConnArgs,
    calls: u32,
    in_flight: usize,
    size: u32,
    event_ping: bool,
) -> Result<Output> {
    let mut c = connect_with(conn_args, event_ping)?;
    let timeout = Duration::from_millis(conn_args.timeout_ms);
    let event_ping = if event_ping {
        let mut round_trips = Vec::with_capacity(calls as usize);
        for _ in 0..calls {
            let t0 = Instant::now();
            c.ping(t0 + timeout)?;
            round_trips.push(t0.elapsed());
        }
        Some(percentiles(&mut round_trips))
    } else {
        None
    };
    let in_flight = in_flight.clamp(
        1,
        (conn_args.slots as usize).min(xenrpc_proto::MAX_IN_FLIGHT),
    );
    let data_len = c.data().len() as u32;
    let slot = if size > 0 {
        let per_call = size.checked_mul(2).filter(|b| *b as usize * in_flight <= data_len as usize).ok_or_else(|| {
            bad(format!("{in_flight} calls of {size} bytes in and out do not fit the {data_len}-byte data region"))
        })?;
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        for k in 0..in_flight {
            c.data()
                .write(k * per_call as usize, &payload)
                .map_err(|_| bad("payload outside the data region"))?;
        }
        per_call
    } else {
        0
    };
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(calls as usize);
    let mut queue: std::collections::VecDeque<(Instant, usize, Started)> = Default::default();
    enum Started {
        Ping(xenrpc_proto::Pending<()>),
        Ool(xenrpc_proto::Pending<echo::OolLen>),
    }
    let mut sent = 0u32;
    let mut free: Vec<usize> = (0..in_flight).rev().collect();
    while sent < calls || !queue.is_empty() {
        while sent < calls {
            let Some(k) = free.pop() else { break };
            let started = if size == 0 {
                Started::Ping(c.submit(&echo::client::ping(&()))?)
            } else {
                let base = k as u32 * slot;
                let call = echo::client::echo_ool(&())
                    .ool_args(OolRef::new(base, size))
                    .ool_result(OolRef::new(base + size, size));
                Started::Ool(c.submit(&call)?)
            };
            queue.push_back((Instant::now(), k, started));
            sent += 1;
        }
        let Some((t0, k, started)) = queue.pop_front() else {
            break;
        };
        let deadline = Instant::now() + timeout;
        match started {
            Started::Ping(p) => {
                c.wait(p, deadline)?;
            }
            Started::Ool(p) => {
                let reply = c.wait(p, deadline)?;
                if reply.value.len != size {
                    return Err(Error::Protocol(format!(
                        "echo_ool returned {} bytes for {size}",
                        reply.value.len
                    )));
                }
            }
        }
        latencies.push(t0.elapsed());
        free.push(k);
    }
    let elapsed = start.elapsed();
    let s = c.stats();
    let lat = percentiles(&mut latencies);
    let rate = calls as f64 / elapsed.as_secs_f64();
    let what = if size == 0 {
        "echo.ping".to_string()
    } else {
        format!("echo.echo_ool {size} B")
    };
    // Each echo moves `size` bytes to the server and `size` bytes back.
    let mb_per_s = rate * f64::from(size) / 1e6;
    let mut text = format!(
        "{what}: {calls} calls, {in_flight} in flight, {:.3} s, {rate:.0} calls/s{}\n\
         latency µs: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}\n\
         notifications sent {}, spin hits {}, sleeps {}\n",
        elapsed.as_secs_f64(),
        if size > 0 {
            format!(", {mb_per_s:.1} MB/s each way")
        } else {
            String::new()
        },
        lat.p50,
        lat.p90,
        lat.p99,
        lat.max,
        s.notifications_sent,
        s.spin_hits,
        s.sleeps
    );
    if let Some(f) = &event_ping {
        text += &format!(
            "raw event round trip to the server (ping port, {calls} times) µs: \
             p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}\n\
             {what} p50 / raw event round trip p50 = {:.2}\n",
            f.p50,
            f.p90,
            f.p99,
            f.max,
            lat.p50 / f.p50.max(f64::MIN_POSITIVE)
        );
    }
    close(c, conn_args)?;
    ok(
        text,
        json!({"ok": true, "method": what, "calls": calls, "in_flight": in_flight, "seconds": elapsed.as_secs_f64(), "calls_per_second": rate, "mb_per_second_each_way": mb_per_s, "latency_us": lat, "event_ping_latency_us": event_ping, "client": s}),
    )
}
