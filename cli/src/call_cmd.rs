//! `xenrpc call SERVICE.METHOD ARGS...`: parses the arguments of the methods it knows (all
//! checked before connecting), makes the call over either transport and prints the answer.

use std::time::Instant;

use serde_json::{json, Value};

use xenrpc_cli::endpoint::{Endpoint, RawCall};
use xenrpc_cli::error::bad;
use xenrpc_cli::{CliError, Output, Result};
use xenrpc_host::services::{selftest, SleepArgs};
use xenrpc_proto::services::introspection::{self, ServiceEntry, ServiceQuery};
use xenrpc_proto::services::{arith, echo, kv};
use xenrpc_proto::ServiceInfo;

use crate::introspect::{self as intro, name_of, SERVICES};

/// A call whose arguments have been parsed.
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
    AdminStats,
    Sleep(u32),
    Panic,
}

fn expect_args(args: &[String], n: usize, usage: &str) -> Result<()> {
    if args.len() != n {
        return Err(bad(format!("expected {n} argument(s): {usage}")));
    }
    Ok(())
}

fn int(arg: &str) -> Result<i64> {
    arg.parse()
        .map_err(|_| bad(format!("\"{arg}\" is not a 64-bit integer")))
}

fn kv_key(arg: &str) -> Result<kv::Key> {
    kv::Key::new(arg.as_bytes())
        .ok_or_else(|| bad(format!("key must be 1..={} bytes", kv::MAX_KEY_LEN)))
}

/// Every `SERVICE.METHOD` the CLI knows, for error messages.
fn known() -> String {
    SERVICES
        .iter()
        .flat_map(|s| {
            s.methods
                .iter()
                .map(move |m| format!("{}.{}", s.name, m.name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_method(spec: &str) -> Result<(&'static ServiceInfo, &'static str)> {
    let (service, method) = spec.split_once('.').ok_or_else(|| {
        bad(format!(
            "\"{spec}\" is not SERVICE.METHOD; known: {}",
            known()
        ))
    })?;
    let info = SERVICES
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| bad(format!("unknown service \"{service}\"; known: {}", known())))?;
    let m = info
        .methods
        .iter()
        .find(|m| m.name == method)
        .ok_or_else(|| bad(format!("unknown method \"{spec}\"; known: {}", known())))?;
    Ok((info, m.name))
}

/// A service named or numbered on the command line.
fn service_id(args: &[String]) -> Result<u32> {
    expect_args(args, 1, "SERVICE (name or id)")?;
    if let Ok(id) = args[0].parse::<u32>() {
        return Ok(id);
    }
    SERVICES
        .iter()
        .find(|s| s.name == args[0])
        .map(|s| s.id)
        .ok_or_else(|| bad(format!("unknown service \"{}\"", args[0])))
}

fn prepare(service: &str, method: &str, args: &[String]) -> Result<Prepared> {
    let arith_ops = |args: &[String]| -> Result<arith::Operands> {
        expect_args(args, 2, "A B")?;
        Ok(arith::Operands {
            a: int(&args[0])?,
            b: int(&args[1])?,
        })
    };
    let none = |p: Prepared| expect_args(args, 0, "no arguments").map(|()| p);
    Ok(match (service, method) {
        ("echo", "ping") => none(Prepared::Ping)?,
        ("echo", "echo_inline") => {
            expect_args(args, 1, "TEXT")?;
            Prepared::Inline(
                echo::InlineBytes::new(args[0].as_bytes()).ok_or_else(|| {
                    bad(format!("text longer than {} bytes", echo::INLINE_BYTES_MAX))
                })?,
            )
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
        ("introspection", "list_services") => none(Prepared::Services)?,
        ("introspection", "describe_service") => Prepared::Describe(service_id(args)?),
        ("introspection", "list_methods") => Prepared::Methods(service_id(args)?),
        ("introspection", "list_stats") => none(Prepared::ServerStats)?,
        ("admin", "stats") => none(Prepared::AdminStats)?,
        ("selftest", "sleep") => {
            expect_args(args, 1, "MILLISECONDS")?;
            Prepared::Sleep(
                args[0]
                    .parse()
                    .map_err(|_| bad(format!("\"{}\" is not a number of milliseconds", args[0])))?,
            )
        }
        ("selftest", "panic") => none(Prepared::Panic)?,
        _ => return Err(bad(format!("{service}.{method} has no command-line form"))),
    })
}

/// `xenrpc call`: parses, connects, calls, prints.
pub fn call(
    open: impl FnOnce() -> Result<Box<dyn Endpoint>>,
    spec: &str,
    args: &[String],
) -> Result<Output> {
    let (info, method) = find_method(spec)?;
    let name = format!("{}.{method}", info.name);
    // The arguments are checked before anything connects.
    let prepared = prepare(info.name, method, args)?;
    let mut endpoint = open()?;
    let (text, result) = run(endpoint.as_mut(), prepared)?;
    endpoint.close()?;
    Ok(Output::ok(
        format!("{text}\n"),
        json!({"ok": true, "call": name, "args": args, "result": result}),
    ))
}

/// A service entry as text and JSON.
fn service_entry(e: &ServiceEntry) -> (String, Value) {
    let name = name_of(&e.name);
    (
        format!(
            "{} {name} v{} ({} methods)",
            e.id, e.version, e.method_count
        ),
        json!({"id": e.id, "name": name, "version": e.version, "methods": e.method_count}),
    )
}

/// Out-of-line bytes as text; `what` claimed `len` of them.
fn ool_text(bytes: &[u8], len: u32, what: &str) -> Result<String> {
    if len as usize != bytes.len() {
        return Err(CliError::Protocol(format!(
            "{what} says {len} bytes, wrote {}",
            bytes.len()
        )));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Makes the call; its answer as text and JSON.
fn run(e: &mut dyn Endpoint, prepared: Prepared) -> Result<(String, Value)> {
    Ok(match prepared {
        Prepared::Ping => {
            let start = Instant::now();
            e.call_raw(&RawCall::of(&echo::client::ping(&())))?.ok()?;
            let us = start.elapsed().as_secs_f64() * 1e6;
            (format!("pong ({us:.1} µs)"), json!({"round_trip_us": us}))
        }
        Prepared::Inline(bytes) => {
            let reply = e.call_raw(&RawCall::of(&echo::client::echo_inline(&bytes)))?;
            let back: echo::InlineBytes = reply.ok()?.value()?;
            let back = back
                .bytes()
                .ok_or_else(|| CliError::Protocol("echoed length out of range".into()))?;
            let s = String::from_utf8_lossy(back).into_owned();
            (s.clone(), json!({"text": s}))
        }
        Prepared::Ool(bytes) => {
            let call = RawCall::of(&echo::client::echo_ool(&()))
                .ool_in(&bytes)
                .ool_out(bytes.len());
            let reply = e.call_raw(&call)?.ok()?;
            let len: echo::OolLen = reply.value()?;
            let s = ool_text(&reply.ool_out, len.len, "echo_ool")?;
            (s.clone(), json!({"text": s, "bytes": reply.ool_out.len()}))
        }
        Prepared::Arith(stub, ops) => {
            let value: arith::Value = e.call_raw(&RawCall::of(&stub(&ops)))?.ok()?.value()?;
            (value.value.to_string(), json!({"value": value.value}))
        }
        Prepared::KvPut(key, value) => {
            let call = RawCall::of(&kv::client::put(&key)).ool_in(&value);
            e.call_raw(&call)?.ok()?;
            ("stored".into(), json!({"stored": true}))
        }
        Prepared::KvGet(key) => {
            let window = kv::MAX_VALUE_LEN.min(e.data_len());
            let reply = e
                .call_raw(&RawCall::of(&kv::client::get(&key)).ool_out(window))?
                .ok()?;
            let info: kv::ValueInfo = reply.value()?;
            if info.found == 0 {
                ("(not found)".into(), json!({"found": false}))
            } else {
                let s = ool_text(&reply.ool_out, info.len, "kv.get")?;
                (s.clone(), json!({"found": true, "value": s}))
            }
        }
        Prepared::KvDelete(key) => {
            let reply = e.call_raw(&RawCall::of(&kv::client::delete(&key)))?.ok()?;
            let existed = reply.value::<kv::Existed>()?.existed != 0;
            (
                (if existed { "deleted" } else { "(not found)" }).into(),
                json!({"existed": existed}),
            )
        }
        Prepared::KvList(skip) => {
            let call = RawCall::of(&kv::client::list(&kv::ListArgs { skip }))
                .ool_out(intro::listing_window(e));
            let reply = e.call_raw(&call)?.ok()?;
            let list: kv::KeyList = reply.value()?;
            let keys = parse_key_records(&reply.ool_out, list.written, list.bytes)?;
            (keys.join("\n"), json!({"keys": keys, "total": list.total}))
        }
        Prepared::ServerStats => {
            let (text, value) = intro::server_stats(e)?;
            (text.trim_end().to_string(), json!({"stats": value}))
        }
        Prepared::Services => {
            let (lines, list): (Vec<String>, Vec<Value>) =
                intro::services(e)?.iter().map(service_entry).unzip();
            (lines.join("\n"), json!({"services": list}))
        }
        Prepared::Describe(id) => {
            let call = RawCall::of(&introspection::client::describe_service(&ServiceQuery {
                id,
            }));
            service_entry(&e.call_raw(&call)?.ok()?.value()?)
        }
        Prepared::Methods(id) => {
            let entries = intro::methods(e, id)?;
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
        Prepared::AdminStats => {
            let stats = intro::admin_stats(e)?;
            (intro::admin_text(&stats), intro::admin_json(&stats))
        }
        Prepared::Sleep(millis) => {
            let call = RawCall::of(&selftest::client::sleep(&SleepArgs { millis }));
            e.call_raw(&call)?.ok()?;
            ("slept".into(), json!({"slept_ms": millis}))
        }
        Prepared::Panic => {
            e.call_raw(&RawCall::of(&selftest::client::panic(&())))?
                .ok()?;
            ("returned".into(), json!({"returned": true}))
        }
    })
}

/// Parses kv.list records (u32 length + key bytes), checking them against the reply.
fn parse_key_records(bytes: &[u8], count: u32, total_bytes: u32) -> Result<Vec<String>> {
    if total_bytes as usize > bytes.len() {
        return Err(CliError::Protocol(format!(
            "kv.list claims {total_bytes} bytes, {} written",
            bytes.len()
        )));
    }
    let mut rest = &bytes[..total_bytes as usize];
    let mut keys = Vec::new();
    for _ in 0..count {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| CliError::Protocol("kv.list record truncated".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len == 0 || len > kv::MAX_KEY_LEN || len > tail.len() {
            return Err(CliError::Protocol(format!(
                "kv.list key length {len} out of range"
            )));
        }
        keys.push(String::from_utf8_lossy(&tail[..len]).into_owned());
        rest = &tail[len..];
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn arguments_are_checked_before_connecting() {
        let never = || -> Result<Box<dyn Endpoint>> { panic!("connected for a bad command line") };
        for (spec, args, message) in [
            ("arith.add", &["1"][..], "expected 2 argument(s): A B"),
            (
                "arith.add",
                &["1", "x"][..],
                "\"x\" is not a 64-bit integer",
            ),
            ("kv.get", &[""][..], "key must be 1..=64 bytes"),
            ("echo.nope", &[][..], "unknown method \"echo.nope\""),
            ("ping", &[][..], "\"ping\" is not SERVICE.METHOD"),
            (
                "selftest.sleep",
                &["soon"][..],
                "\"soon\" is not a number of milliseconds",
            ),
        ] {
            let err = call(never, spec, &words(args)).err().unwrap();
            assert_eq!(err.exit_status(), 2, "{spec}: {err}");
            assert!(err.to_string().contains(message), "{spec}: {err}");
        }
    }

    #[test]
    fn kv_list_records_are_checked() {
        let mut bytes = Vec::new();
        for key in ["colour", "shape"] {
            bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
            bytes.extend_from_slice(key.as_bytes());
        }
        let n = bytes.len() as u32;
        assert_eq!(
            parse_key_records(&bytes, 2, n).unwrap(),
            ["colour", "shape"]
        );
        assert!(parse_key_records(&bytes, 2, n + 1).is_err());
        assert!(parse_key_records(&bytes, 3, n).is_err());
        bytes[0] = 0;
        assert!(parse_key_records(&bytes, 2, n).is_err());
    }
}
