//! Booting Xen under QEMU and judging the run by its serial lines: Xen's, dom0's (the
//! scenario's `TESTBED: ...` lines or the kernel's self-test report) and the guests' consoles
//! (split into logs of their own).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::prepare::Prepared;
use super::{Echo, Kind, Outcome, Scenario, GUEST_PREFIX, QEMU};
use crate::util::secs;

/// What the serial and guest logs have told us so far.
struct Watch<'a> {
    scenario: &'a Scenario,
    boot_start: Instant,
    echo: Echo,
    stage: String,
    xen_up: Option<Instant>,
    kernel_up: Option<Instant>,
    selftests_ok: usize,
    panic_detail_pending: bool,
    reasons: Vec<String>,
    timings: Vec<(String, String)>,
    calls: Vec<String>,
    verdict: Option<bool>,
}

/// Strips the prefixes Xen puts before console lines ("(XEN) ", "(d0) ").
fn console_text(line: &str) -> &str {
    let line = line.strip_prefix("(XEN) ").unwrap_or(line);
    if let Some(rest) = line.strip_prefix("(d") {
        if let Some((id, text)) = rest.split_once(") ") {
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
                return text;
            }
        }
    }
    line
}

/// Xen's report that dom0 crashed ("Hardware Dom0 crashed: ..." in Xen 4.17).
fn is_dom0_crash(line: &str) -> bool {
    line.starts_with("(XEN)")
        && (line.contains("Dom0 crashed") || line.contains("Domain 0 crashed"))
}

impl<'a> Watch<'a> {
    /// Nothing seen yet of a run of `scenario` that booted at `boot_start`.
    fn new(scenario: &'a Scenario, boot_start: Instant, echo: Echo) -> Self {
        Watch {
            scenario,
            boot_start,
            echo,
            stage: String::new(),
            xen_up: None,
            kernel_up: None,
            selftests_ok: 0,
            panic_detail_pending: false,
            reasons: Vec::new(),
            timings: Vec::new(),
            calls: Vec::new(),
            verdict: None,
        }
    }

    fn set_stage(&mut self, stage: &str) {
        self.stage = stage.to_string();
        println!(
            "    [{} {:>6}] stage: {stage}",
            self.scenario.name,
            secs(self.boot_start.elapsed())
        );
    }

    fn fail(&mut self, reason: String) {
        if self.verdict.is_none() {
            self.reasons.push(reason);
            self.verdict = Some(false);
        }
    }

    fn serial_line(&mut self, line: &str) {
        if self.echo == Echo::All {
            println!("    | {line}");
        }
        let text = console_text(line);
        if self.panic_detail_pending {
            // Xen prints the panic message on the lines after "Panic on CPU n:".
            let detail = text.trim();
            if !detail.is_empty() && !detail.starts_with('*') {
                if let Some(reason) = self.reasons.last_mut() {
                    reason.push_str(&format!(" {detail}"));
                }
                self.panic_detail_pending = false;
            }
        }
        if line.contains("Panic on CPU") {
            self.fail(format!("Xen panicked: {}", text.trim()));
            self.panic_detail_pending = self.verdict == Some(false);
        } else if is_dom0_crash(line) {
            self.fail(format!("dom0 crashed: {line}"));
        } else if line.contains("Kernel panic") {
            self.fail(format!("dom0 Linux panicked: {line}"));
        }
        if self.verdict.is_some() {
            return;
        }
        if self.xen_up.is_none() {
            if line.contains("Xen version") {
                self.xen_up = Some(Instant::now());
                let next = match self.scenario.kind {
                    Kind::KernelAsDom0 => "start kernel as dom0",
                    Kind::LinuxDom0 { .. } => "boot dom0 Linux",
                };
                self.set_stage(next);
            }
            return;
        }
        match self.scenario.kind {
            Kind::KernelAsDom0 => self.selftest_line(text),
            Kind::LinuxDom0 { .. } => self.script_line(text),
        }
    }

    fn since_xen(&self) -> String {
        secs(self.xen_up.map(|t| t.elapsed()).unwrap_or_default())
    }

    fn selftest_line(&mut self, text: &str) {
        if !text.starts_with("xenrpc: ") {
            return;
        }
        if self.kernel_up.is_none() {
            self.kernel_up = Some(Instant::now());
            let took = self.since_xen();
            self.timings
                .push(("Xen boot -> first kernel line".into(), took));
            self.set_stage("selftest");
        }
        if text.starts_with("xenrpc: FATAL") || text.starts_with("xenrpc: selftest: FAIL") {
            self.fail(text.to_string());
        } else if text.starts_with("xenrpc: selftest: PASS") {
            let took = secs(self.kernel_up.map(|t| t.elapsed()).unwrap_or_default());
            self.timings
                .push(("first kernel line -> selftest PASS".into(), took));
            self.timings
                .push(("self-tests ok".into(), self.selftests_ok.to_string()));
            self.verdict = Some(true);
        } else if text.starts_with("xenrpc: selftest ") && text.ends_with(": ok") {
            self.selftests_ok += 1;
        } else if let Some((label, value)) = text
            .strip_prefix("xenrpc: measure ")
            .and_then(|m| m.split_once(": "))
        {
            // A figure a self-test measured (its cost, not its verdict).
            self.timings.push((label.to_string(), value.to_string()));
        }
    }

    fn script_line(&mut self, text: &str) {
        let Some(rest) = text.strip_prefix("TESTBED: ") else {
            return;
        };
        let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "INIT" => {
                let took = self.since_xen();
                self.timings.push(("Xen boot -> dom0 init".into(), took));
                self.timings
                    .push(("dom0 uptime at init".into(), args.to_string()));
                self.set_stage("init");
            }
            "STAGE" => self.set_stage(args),
            "TIME" => {
                let (label, value) = args.rsplit_once(' ').unwrap_or((args, ""));
                self.timings.push((label.to_string(), value.to_string()));
            }
            "REASON" => self.reasons.push(args.to_string()),
            "CALL" => {
                if self.echo != Echo::Stages {
                    println!("    call: {args}");
                }
                self.calls.push(args.to_string());
            }
            "PASS" if args == self.scenario.name => self.verdict = Some(true),
            "FAIL" => {
                let mut parts = args.splitn(2, ' ');
                if parts.next() == Some(self.scenario.name.as_str()) {
                    if let Some(stage) = parts.next() {
                        self.stage = stage.to_string();
                    }
                    self.verdict = Some(false);
                }
            }
            _ => {}
        }
    }

    fn guest_line(&mut self, guest: &str, text: &str) {
        if self.echo != Echo::Stages {
            println!("    {guest}| {text}");
        }
        if text.starts_with("xenrpc: FATAL") {
            self.fail(format!("guest {guest}: {text}"));
        }
    }
}

/// Copies QEMU's serial output to serial.log and hands each line to the main loop.
fn spawn_serial_reader(
    child: &mut Child,
    log: fs::File,
) -> (mpsc::Receiver<String>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = thread::spawn(move || {
        let mut log = log;
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            // Best effort: a full disk must not stop the verdict.
            let _ = log.write_all(&buf);
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .trim_start_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });
    (rx, reader)
}

/// Sends a serial line to the watcher, splitting guest console lines into their own logs.
fn route_line(
    watch: &mut Watch,
    guest_logs: &mut HashMap<String, Option<fs::File>>,
    run_dir: &Path,
    line: &str,
) {
    let guest_line = line
        .strip_prefix(GUEST_PREFIX)
        .and_then(|rest| rest.split_once("| "))
        .filter(|(guest, _)| {
            !guest.is_empty()
                && guest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    let Some((guest, text)) = guest_line else {
        watch.serial_line(line);
        return;
    };
    let log = guest_logs.entry(guest.to_string()).or_insert_with(|| {
        // Best effort: the verdict does not depend on the log file.
        fs::File::create(run_dir.join(format!("guest-{guest}.log"))).ok()
    });
    if let Some(log) = log {
        let _ = writeln!(log, "{text}");
    }
    watch.guest_line(guest, text.trim_end_matches('\r'));
}

pub(super) fn boot(
    scenario: &Scenario,
    prepared: &Prepared,
    run_dir: &Path,
    echo: Echo,
    out: &mut Outcome,
) {
    let boot_start = Instant::now();
    let mut watch = Watch::new(scenario, boot_start, echo);
    watch.set_stage("boot Xen");
    let spawned = (|| -> Result<(Child, fs::File)> {
        let serial = fs::File::create(run_dir.join("serial.log"))?;
        let stderr = fs::File::create(run_dir.join("qemu-stderr.log"))?;
        let child = Command::new(QEMU)
            .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2048"])
            .args([
                "-smp",
                "2",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .args(["-serial", "stdio", "-net", "none"])
            .arg("-kernel")
            .arg(&prepared.xen)
            .arg("-append")
            .arg(&prepared.xen_cmdline)
            .arg("-initrd")
            .arg(&prepared.modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {QEMU}"))?;
        Ok((child, serial))
    })();
    let (mut child, serial) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            out.stage = watch.stage;
            out.reason = format!("{e:#}");
            return;
        }
    };
    let (lines, reader) = spawn_serial_reader(&mut child, serial);
    let deadline = boot_start + scenario.timeout;
    let mut guest_logs = HashMap::new();
    let heartbeat = Duration::from_secs(20);
    while watch.verdict.is_none() {
        let now = Instant::now();
        if now >= deadline {
            let stage = watch.stage.clone();
            watch.fail(format!(
                "time limit of {}s reached while in stage '{stage}'",
                scenario.timeout.as_secs()
            ));
            break;
        }
        match lines.recv_timeout((deadline - now).min(heartbeat)) {
            Ok(line) => route_line(&mut watch, &mut guest_logs, run_dir, &line),
            Err(mpsc::RecvTimeoutError::Timeout) => println!(
                "    [{} {:>6}] still in stage: {}",
                scenario.name,
                secs(boot_start.elapsed()),
                watch.stage
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let stage = watch.stage.clone();
                watch.fail(format!(
                    "QEMU exited ({status}) in stage '{stage}' before a verdict"
                ));
            }
        }
    }
    if watch.verdict == Some(false) {
        // A failure is often followed by its explanation (Xen's panic text): read on briefly.
        let grace = Instant::now() + Duration::from_secs(1);
        while let Some(left) = grace.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) => route_line(&mut watch, &mut guest_logs, run_dir, &line),
                Err(_) => break,
            }
        }
    }
    // Our own child: stop it once the verdict is in (the logs already hold everything).
    let _ = child.kill();
    let _ = child.wait();
    // QEMU's exit closes the pipe: the reader finishes serial.log (a last partial line too).
    let _ = reader.join();
    out.passed = watch.verdict == Some(true);
    out.stage = watch.stage;
    out.reason = watch.reasons.join("; ");
    out.timings.extend(watch.timings);
    out.calls = watch.calls;
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn scenario(kind: Kind) -> Scenario {
        Scenario::new("domu".into(), String::new(), kind, Duration::from_secs(1))
    }

    fn watch(s: &Scenario) -> Watch<'_> {
        let mut w = Watch::new(s, Instant::now(), Echo::Stages);
        w.stage = "boot Xen".into();
        w
    }

    #[test]
    fn console_text_strips_xen_prefixes_only() {
        assert_eq!(console_text("(XEN) (d0) xenrpc: ready"), "xenrpc: ready");
        assert_eq!(console_text("(d12) xenrpc: ready"), "xenrpc: ready");
        assert_eq!(console_text("(dx) xenrpc"), "(dx) xenrpc");
        assert_eq!(console_text("TESTBED: PASS a"), "TESTBED: PASS a");
    }

    #[test]
    fn script_verdicts_follow_the_named_scenario() {
        let s = scenario(Kind::LinuxDom0 {
            script: PathBuf::new(),
        });
        let mut w = watch(&s);
        w.serial_line("TESTBED: INIT 3.2");
        assert_eq!(w.stage, "boot Xen", "nothing counts before Xen is up");
        w.serial_line("(XEN) Xen version 4.17.7 (Debian)");
        w.serial_line("TESTBED: INIT 3.2");
        w.serial_line("TESTBED: STAGE wait-ready");
        w.serial_line("TESTBED: PASS other-scenario");
        assert_eq!(w.verdict, None);
        w.serial_line("TESTBED: REASON no ready line");
        w.serial_line("TESTBED: FAIL domu wait-ready");
        assert_eq!(w.verdict, Some(false));
        assert_eq!(w.stage, "wait-ready");
        assert_eq!(w.reasons, ["no ready line"]);
    }

    #[test]
    fn call_lines_are_collected_for_the_demo() {
        let s = scenario(Kind::LinuxDom0 {
            script: PathBuf::new(),
        });
        let mut w = watch(&s);
        w.serial_line("TESTBED: CALL client-a | xenrpc call arith.add 40 2 | rc=0 | 42");
        assert!(w.calls.is_empty(), "nothing counts before Xen is up");
        w.serial_line("(XEN) Xen version 4.17.7 (Debian)");
        w.serial_line("TESTBED: CALL client-a | xenrpc call arith.add 40 2 | rc=0 | 42");
        w.serial_line("TESTBED: CALLS are not calls");
        assert_eq!(
            w.calls,
            ["client-a | xenrpc call arith.add 40 2 | rc=0 | 42"]
        );
        assert_eq!(w.verdict, None);
    }

    #[test]
    fn guest_fatal_fails_at_once() {
        let s = scenario(Kind::LinuxDom0 {
            script: PathBuf::new(),
        });
        let mut w = watch(&s);
        w.guest_line("xenrpc", "xenrpc: FATAL out of memory");
        assert_eq!(w.verdict, Some(false));
    }

    #[test]
    fn selftest_pass_needs_the_pass_line_and_fatal_fails() {
        let s = scenario(Kind::KernelAsDom0);
        let mut w = watch(&s);
        w.serial_line(" Xen version 4.17.7 (Debian)");
        w.serial_line("xenrpc: selftest ring: ok");
        w.serial_line("xenrpc: selftest grant: ok");
        assert_eq!(w.verdict, None);
        w.serial_line("xenrpc: selftest: PASS (2 tests)");
        assert_eq!(w.verdict, Some(true));
        assert_eq!(w.selftests_ok, 2);

        let mut w = watch(&s);
        w.serial_line("(XEN) Xen version 4.17.7");
        w.serial_line("(XEN) xenrpc: FATAL page fault");
        assert_eq!(w.verdict, Some(false));

        let mut w = watch(&s);
        w.serial_line("(XEN) Xen version 4.17.7");
        w.serial_line("(XEN) Panic on CPU 0:");
        w.serial_line("(XEN) ****************************************");
        w.serial_line("(XEN) Could not construct domain 0");
        assert_eq!(w.verdict, Some(false));
        assert_eq!(
            w.reasons,
            ["Xen panicked: Panic on CPU 0: Could not construct domain 0"]
        );

        let mut w = watch(&s);
        w.serial_line("(XEN) Xen version 4.17.7");
        w.serial_line("(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.");
        assert_eq!(w.verdict, Some(false));
    }
}
