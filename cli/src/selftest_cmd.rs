//! `xenrpc selftest-devices`: the guest's xenbus, gntalloc and evtchn, without a server.

use serde_json::json;

use xenrpc_cli::Output;
use xenrpc_client::selftest::{self, Step};

fn step_json(s: &Step) -> serde_json::Value {
    json!({"name": s.name, "ok": s.ok, "detail": s.detail})
}

/// Runs every step; passes only if there were steps and all passed.
pub fn run(grant_peer: Option<u16>) -> Output {
    let steps = selftest::run(grant_peer);
    report(&steps)
}

fn report(steps: &[Step]) -> Output {
    let passed = !steps.is_empty() && steps.iter().all(|s| s.ok);
    let mut text = String::new();
    for s in steps {
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
    let value = json!({"ok": passed, "steps": steps.iter().map(step_json).collect::<Vec<_>>()});
    if passed {
        Output::ok(text, value)
    } else {
        Output::failed(text, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &'static str, ok: bool) -> Step {
        Step {
            name,
            ok,
            detail: "d".into(),
        }
    }

    #[test]
    fn passes_only_when_every_step_did() {
        let out = report(&[step("xenbus", true), step("evtchn", true)]);
        assert!(out.ok);
        assert!(
            out.text.ends_with("selftest-devices: PASS\n"),
            "{}",
            out.text
        );
        let out = report(&[step("xenbus", true), step("evtchn", false)]);
        assert!(!out.ok);
        assert!(
            out.text.contains("selftest-devices: evtchn: FAIL (d)\n"),
            "{}",
            out.text
        );
        assert_eq!(out.value["steps"][1]["ok"], false);
        assert!(!report(&[]).ok);
    }
}
