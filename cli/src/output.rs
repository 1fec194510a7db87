//! What a command prints: text for people, or with `--json` one JSON document for scripts
//! (errors included: `{"ok": false, "error": {"kind", "message"}}`), and the exit status.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::error::CliError;

/// A command's result: its text, its JSON value, and whether it succeeded (a command can
/// finish its work and still report a failure, e.g. a self-test that failed).
pub struct Output {
    /// What text mode prints (stdout).
    pub text: String,
    /// What `--json` prints.
    pub value: Value,
    /// Whether the command succeeded (false: exit status 1).
    pub ok: bool,
}

impl Output {
    /// A successful result.
    pub fn ok(text: impl Into<String>, value: Value) -> Output {
        Output {
            text: text.into(),
            value,
            ok: true,
        }
    }

    /// A result that reports a failure (exit status 1) after printing everything.
    pub fn failed(text: impl Into<String>, value: Value) -> Output {
        Output {
            text: text.into(),
            value,
            ok: false,
        }
    }
}

/// The JSON document for an error.
pub fn error_json(e: &CliError) -> Value {
    let mut error = json!({"kind": e.kind(), "message": e.to_string()});
    if let CliError::Remote(status) = e {
        error["status"] = json!(status.ident());
    }
    json!({"ok": false, "error": error})
}

/// Prints `result` (stdout; a text-mode error goes to stderr as `PROGRAM: error: ...`) and
/// gives the exit status: 0 ok, 1 failure, 2 bad arguments.
pub fn finish(program: &str, json: bool, result: Result<Output, CliError>) -> ExitCode {
    match result {
        Ok(Output { text, value, ok }) => {
            if json {
                println!("{}", pretty(&value));
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
                println!("{}", pretty(&error_json(&e)));
            } else {
                eprintln!("{program}: error: {e}");
            }
            ExitCode::from(e.exit_status())
        }
    }
}

fn pretty(value: &Value) -> String {
    // A `Value` always serialises; an empty line is the fallback that cannot happen.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_as_json_carry_kind_message_and_status() {
        let doc = error_json(&CliError::Remote(xenrpc_proto::Status::AccessDenied));
        assert_eq!(
            doc,
            json!({"ok": false, "error": {
                "kind": "remote-error",
                "message": "server answered AccessDenied",
                "status": "AccessDenied",
            }})
        );
        let doc = error_json(&crate::error::bad("no"));
        assert_eq!(doc["error"]["kind"], "bad-arguments");
        assert!(doc["error"].get("status").is_none());
    }
}
