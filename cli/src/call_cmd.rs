//! `xenrpc call SERVICE.METHOD [FIELD=VALUE | VALUE]... | '{JSON}'`: any method of any service
//! the server reports, resolved at run time from introspection (every method's signature),
//! the arguments checked against it before anything is sent; and `xenrpc describe`, which
//! prints those signatures.

use std::path::PathBuf;

use serde_json::{json, Map, Value as Json};

use xenrpc_cli::error::bad;
use xenrpc_cli::{CliError, Output, Result};
use xenrpc_proto::signature::directory::{
    self, call_by_signature, LookupError, RemoteMethod, RemoteService,
};
use xenrpc_proto::signature::{decode_hex, RemoteShape, Value};
use xenrpc_proto::Caller;

/// What `call` was given besides the method.
pub struct CallArgs {
    /// `FIELD=VALUE`, plain `VALUE`s in field order, or one JSON object.
    pub fields: Vec<String>,
    /// Bytes for a method that takes bytes.
    pub data: Option<Vec<u8>>,
    /// Where returned bytes go (instead of stdout).
    pub out: Option<PathBuf>,
    /// Print returned bytes as hex even when they are text.
    pub hex: bool,
    /// Room for returned bytes (default: as much as the connection has).
    pub capacity: Option<usize>,
}

/// Maps a lookup error to the CLI's: unknown names and bad fields are the caller's mistake.
fn lookup<E: Into<CliError> + std::fmt::Display>(e: LookupError<E>) -> CliError {
    match e {
        LookupError::Transport(e) => e.into(),
        LookupError::Introspection(status) => CliError::Remote(status),
        LookupError::Malformed(why) => CliError::Protocol(why),
        other => bad(other.to_string()),
    }
}

/// The `(field, text)` pairs of the command line: `name=value` words, plain values (in field
/// order), or a single JSON object.
fn field_values(words: &[String]) -> Result<Vec<(String, String)>> {
    if let [only] = words {
        if only.trim_start().starts_with('{') {
            let object: Map<String, Json> = serde_json::from_str(only)
                .map_err(|e| bad(format!("the fields are not a JSON object: {e}")))?;
            return object
                .into_iter()
                .map(|(name, value)| Ok((name.clone(), json_text(&name, &value)?)))
                .collect();
        }
    }
    Ok(words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((name, value)) if is_field_name(name) => (name.to_string(), value.to_string()),
            _ => (String::new(), word.clone()),
        })
        .collect())
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A JSON value as the text `RemoteShape::encode` parses.
fn json_text(name: &str, value: &Json) -> Result<String> {
    match value {
        Json::Number(n) => Ok(n.to_string()),
        Json::String(s) => Ok(s.clone()),
        Json::Array(items) => items
            .iter()
            .map(|item| match item {
                Json::Number(n) => Ok(n.to_string()),
                _ => Err(bad(format!("field \"{name}\": arrays hold numbers"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(|items| items.join(",")),
        _ => Err(bad(format!(
            "field \"{name}\": {value} is not a number, string or array of numbers"
        ))),
    }
}

/// Bytes as text when they are (printable UTF-8), else `hex:...`.
pub fn bytes_text(bytes: &[u8], force_hex: bool) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text)
            if !force_hex
                && text
                    .chars()
                    .all(|c| !c.is_control() || c == '\n' || c == '\t') =>
        {
            text.to_string()
        }
        _ => format!("hex:{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A byte-array field's bytes without the zero padding of a fixed-size name (when what is
/// left is text, the padding is not shown).
fn field_bytes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if bytes[..end].contains(&0) {
        bytes
    } else {
        &bytes[..end]
    }
}

fn value_text(value: &Value, force_hex: bool) -> String {
    match value {
        Value::Unsigned(n) => n.to_string(),
        Value::Signed(n) => n.to_string(),
        Value::Bytes(b) => bytes_text(field_bytes(b), force_hex),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| value_text(v, force_hex)).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Unsigned(n) => json!(n),
        Value::Signed(n) => json!(n),
        Value::Bytes(b) => json!(bytes_text(field_bytes(b), false)),
        Value::Array(items) => Json::Array(items.iter().map(value_json).collect()),
    }
}

/// The result fields a person is shown: a `len` the shape implies is left out.
fn visible<'v>(shape: &RemoteShape, fields: &'v [(String, Value)]) -> Vec<&'v (String, Value)> {
    let shown: Vec<&str> = shape.input_fields().map(|f| f.name.as_str()).collect();
    fields
        .iter()
        .filter(|(name, _)| shown.contains(&name.as_str()))
        .collect()
}

/// Reads `--data-file`, or decodes `--data-hex`, or takes `--data`.
pub fn data_bytes(
    text: Option<String>,
    file: Option<PathBuf>,
    hex: Option<String>,
) -> Result<Option<Vec<u8>>> {
    match (text, file, hex) {
        (None, None, None) => Ok(None),
        (Some(text), None, None) => Ok(Some(text.into_bytes())),
        (None, Some(file), None) => std::fs::read(&file)
            .map(Some)
            .map_err(|e| bad(format!("cannot read --data-file {}: {e}", file.display()))),
        (None, None, Some(hex)) => decode_hex(&hex)
            .map(Some)
            .ok_or_else(|| bad(format!("--data-hex \"{hex}\" is not hex digits"))),
        _ => Err(bad("give at most one of --data, --data-file, --data-hex")),
    }
}

/// Whether `spec` is `SERVICE.METHOD` at all (checked before connecting).
pub fn check_spec(spec: &str) -> Result<()> {
    match spec.split_once('.') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => Ok(()),
        _ => Err(bad(format!("\"{spec}\" is not SERVICE.METHOD"))),
    }
}

/// `xenrpc call`: resolves `spec`, checks the fields, calls, prints the answer.
pub fn call<C>(caller: &mut C, spec: &str, args: &CallArgs) -> Result<Output>
where
    C: Caller + ?Sized,
    C::Error: Into<CliError> + std::fmt::Display,
{
    let (service, method) = directory::resolve(caller, spec).map_err(lookup)?;
    let signature = &method.signature;
    let values = field_values(&args.fields)?;
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let input = match (&args.data, signature.bytes_in) {
        (Some(data), true) => data.as_slice(),
        (None, _) => &[],
        (Some(_), false) => return Err(bad(format!("{spec} takes no bytes: drop --data"))),
    };
    if args.out.is_some() && !signature.bytes_out {
        return Err(bad(format!("{spec} returns no bytes: drop --out")));
    }
    // The fields are encoded (and a bad one named) before anything is sent.
    let reply = call_by_signature(caller, &service, &method, &pairs, input, args.capacity)
        .map_err(|e| match e {
            LookupError::Field(e) => bad(format!("{spec}: {e}")),
            other => lookup(other),
        })?;
    if reply.status != xenrpc_proto::Status::Ok {
        return Err(CliError::Remote(reply.status));
    }
    render(&service, &method, &reply.fields, &reply.bytes, args)
}

fn render(
    service: &RemoteService,
    method: &RemoteMethod,
    fields: &[(String, Value)],
    bytes: &[u8],
    args: &CallArgs,
) -> Result<Output> {
    let signature = &method.signature;
    let shown = visible(&signature.result, fields);
    let mut text = String::new();
    let mut result = Map::new();
    for (name, value) in fields {
        result.insert(name.clone(), value_json(value));
    }
    let mut value = json!({
        "ok": true,
        "service": service.name,
        "method": method.name,
        "status": "Ok",
        "result": result,
    });
    if shown.len() == 1 && !signature.bytes_out {
        text.push_str(&value_text(&shown[0].1, args.hex));
        text.push('\n');
    } else {
        for (name, v) in &shown {
            text.push_str(&format!("{name}={}\n", value_text(v, args.hex)));
        }
    }
    if signature.bytes_out {
        match &args.out {
            Some(path) => {
                std::fs::write(path, bytes)
                    .map_err(|e| bad(format!("cannot write --out {}: {e}", path.display())))?;
                text.push_str(&format!(
                    "({} bytes written to {})\n",
                    bytes.len(),
                    path.display()
                ));
                value["bytes"] = json!({"len": bytes.len(), "file": path.display().to_string()});
            }
            None => {
                if !bytes.is_empty() {
                    text.push_str(&bytes_text(bytes, args.hex));
                    text.push('\n');
                }
                value["bytes"] = json!({"len": bytes.len(), "data": bytes_text(bytes, args.hex)});
            }
        }
    }
    Ok(Output::ok(text, value))
}

/// `xenrpc describe [SERVICE]`: the signatures of every method of SERVICE (or of every
/// service).
pub fn describe<C>(caller: &mut C, only: Option<&str>) -> Result<Output>
where
    C: Caller + ?Sized,
    C::Error: Into<CliError> + std::fmt::Display,
{
    let services = match only {
        Some(name) => vec![directory::find_service(caller, name).map_err(lookup)?],
        None => directory::list_services(caller).map_err(lookup)?,
    };
    let mut text = String::new();
    let mut listed = Vec::new();
    for service in services {
        let methods = directory::list_methods(caller, &service).map_err(lookup)?;
        text.push_str(&format!(
            "{} {} v{}\n",
            service.id, service.name, service.version
        ));
        let mut json_methods = Vec::new();
        for m in &methods {
            text.push_str(&format!("  {} {} {}\n", m.id, m.name, m.signature));
            json_methods.push(json!({
                "id": m.id,
                "name": m.name,
                "signature": m.signature.to_string(),
                "bytes_in": m.signature.bytes_in,
                "bytes_out": m.signature.bytes_out,
            }));
        }
        listed.push(json!({
            "id": service.id,
            "name": service.name,
            "version": service.version,
            "methods": json_methods,
        }));
    }
    Ok(Output::ok(text, json!({ "ok": true, "services": listed })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_fields_by_name_or_in_order_or_from_json() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            field_values(&words(&["a=40", "2", "text=x=y"])).unwrap(),
            [
                ("a".into(), "40".into()),
                ("".into(), "2".into()),
                ("text".into(), "x=y".into())
            ]
        );
        // A value that merely contains `=` is positional.
        assert_eq!(
            field_values(&words(&["a b=c"])).unwrap(),
            [("".into(), "a b=c".into())]
        );
        assert_eq!(
            field_values(&words(&[
                r#"{"a": 40, "b": -2, "key": "k", "list": [1, 2]}"#
            ]))
            .unwrap(),
            [
                ("a".into(), "40".into()),
                ("b".into(), "-2".into()),
                ("key".into(), "k".into()),
                ("list".into(), "1,2".into())
            ]
        );
        assert!(field_values(&words(&[r#"{"a": true}"#])).is_err());
        assert!(field_values(&words(&["{not json"])).is_err());
    }

    #[test]
    fn bytes_print_as_text_or_hex() {
        assert_eq!(bytes_text(b"hello\n", false), "hello\n");
        assert_eq!(bytes_text(&[0, 1, 0xff], false), "hex:0001ff");
        assert_eq!(bytes_text(b"hi", true), "hex:6869");
        assert_eq!(
            data_bytes(None, None, Some("6869".into())).unwrap(),
            Some(b"hi".to_vec())
        );
        assert!(data_bytes(Some("a".into()), None, Some("61".into())).is_err());
        assert!(data_bytes(None, None, Some("6".into())).is_err());
    }
}
