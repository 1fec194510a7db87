//! The Xen-in-QEMU testbed: boots Xen under QEMU (TCG), runs one scenario and judges it by
//! exact strings in the serial log (Xen + dom0) and in the guest console logs.
//!
//! Two kinds of scenario:
//! - `dom0-selftest` (built in): Xen boots the xenrpc kernel directly as dom0, like Xen's CI
//!   boots XTF; the kernel reports its self-tests on Xen's serial line.
//! - every `tests/testbed/<name>.sh`: Xen boots the Debian Linux kernel as dom0 with a busybox
//!   initramfs; its /init starts the Xen daemons and sources the scenario script, which drives
//!   `xl` and prints `TESTBED: ...` lines (see tests/testbed/support/lib.sh).
//!
//! `prepare` assembles a run (Xen's ELF and command line, dom0's initramfs); `watch` boots it
//! under QEMU and judges it line by line.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::util::{secs, tail_lines};

mod prepare;
mod watch;

const XEN_IMAGE_GZ: &str = "/boot/xen-4.17-amd64.gz";
const QEMU: &str = "qemu-system-x86_64";
/// Xen's command line (verified in XEN-FACTS); dom0_mem is appended per scenario kind.
/// `spec-ctrl=eager-fpu`: QEMU's `-cpu max` says AMD, for which Xen switches FPU state lazily
/// (on #NM after setting CR0.TS); with that, busy runs of several domains under TCG saw tools
/// in dom0 and guests die of SIGSEGV/SIGABRT and xl fail to XZ-decompress a kernel it had just
/// loaded, as if FPU/SIMD state leaked between domains. Eager switching does not rely on #NM.
const XEN_CMDLINE: &str =
    "console=com1 com1=115200 loglvl=all guest_loglvl=all noreboot spec-ctrl=eager-fpu";
const DOM0_LINUX_CMDLINE: &str = "console=hvc0 earlyprintk=xen";
/// Serial lines from the dom0 script that carry a guest's console: `GUEST <name>| <text>`.
const GUEST_PREFIX: &str = "GUEST ";
const SELFTEST_SCENARIO: &str = "dom0-selftest";

pub enum Kind {
    /// The xenrpc kernel is the first multiboot module: Xen boots it as dom0.
    KernelAsDom0,
    /// Linux dom0 running `script` from its initramfs.
    LinuxDom0 { script: PathBuf },
}

pub struct Scenario {
    pub name: String,
    pub summary: String,
    pub kind: Kind,
    pub timeout: Duration,
    pub needs_kernel: bool,
    /// build/xenrpc-unprotected.elf (handlers in kernel mode: bench-guest's baseline) in
    /// /testbed/build.
    pub needs_unprotected: bool,
    /// The example service crates' images and xl configs (`build --services examples/<dir>`:
    /// `build/<name>.{elf,cfg}`) in /testbed/build.
    pub needs_examples: bool,
    needs_linux_guest: bool,
    /// The client binaries ([`prepare::CLIENT_BINARIES`]) in dom0 (/usr/bin) and a client guest image
    /// (/testbed/client-guest) that carries them with the evtchn, gntalloc and gntdev modules.
    needs_client: bool,
    /// A virtual network: the bridge and netback modules and the vif hotplug script in dom0
    /// (/testbed/net, brought up by `tb_net_up`), netfront in the client guest image, and the
    /// peers (`xenrpc-peer`: SunRPC, gRPC and libxenvchan servers and benchmarks, with the
    /// shared libraries they load) beside the client binaries. Implies `client`.
    needs_net: bool,
}

impl Scenario {
    /// A scenario that needs nothing beyond Xen and its dom0 (its header adds the rest).
    fn new(name: String, summary: String, kind: Kind, timeout: Duration) -> Self {
        Scenario {
            name,
            summary,
            kind,
            timeout,
            needs_kernel: false,
            needs_unprotected: false,
            needs_examples: false,
            needs_linux_guest: false,
            needs_client: false,
            needs_net: false,
        }
    }
}

/// Lists the scenarios: the built-in `dom0-selftest`, then tests/testbed/*.sh by name.
pub fn scenarios(paths: &Paths) -> Result<Vec<Scenario>> {
    let mut found = vec![Scenario {
        needs_kernel: true,
        ..Scenario::new(
            SELFTEST_SCENARIO.into(),
            "the kernel boots as dom0 straight from Xen (no Linux) and passes its self-tests"
                .into(),
            Kind::KernelAsDom0,
            Duration::from_secs(120),
        )
    }];
    let dir = paths.scenarios_dir();
    let mut scripts: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    for script in scripts {
        found.push(parse_scenario(&script)?);
    }
    Ok(found)
}

/// A scenario script outside tests/testbed (benchmarks: not part of `cargo xtask test`).
pub fn load_scenario(script: &Path) -> Result<Scenario> {
    parse_scenario(script)
}

/// Reads the `# testbed-<key>: <value>` header lines of a scenario script.
fn parse_scenario(script: &Path) -> Result<Scenario> {
    let name = script
        .file_stem()
        .and_then(|s| s.to_str())
        .context("scenario file name is not UTF-8")?
        .to_string();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("scenario name {name:?}: use letters, digits, '-' and '_' only");
    }
    let text = fs::read_to_string(script).with_context(|| format!("read {}", script.display()))?;
    let mut scenario = Scenario::new(
        name,
        String::new(),
        Kind::LinuxDom0 {
            script: script.to_path_buf(),
        },
        Duration::from_secs(300),
    );
    for line in text.lines() {
        let Some((key, value)) = line
            .strip_prefix("# testbed-")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let value = value.trim();
        match key {
            "summary" => scenario.summary = value.to_string(),
            "timeout" => {
                let secs: u64 = value
                    .parse()
                    .with_context(|| format!("{}: bad testbed-timeout", script.display()))?;
                scenario.timeout = Duration::from_secs(secs);
            }
            "needs" => {
                for need in value.split_whitespace() {
                    match need {
                        "kernel" => scenario.needs_kernel = true,
                        "unprotected" => scenario.needs_unprotected = true,
                        "examples" => scenario.needs_examples = true,
                        "linux-guest" => scenario.needs_linux_guest = true,
                        "client" => scenario.needs_client = true,
                        "net" => {
                            scenario.needs_client = true;
                            scenario.needs_net = true;
                        }
                        other => bail!("{}: unknown testbed-needs {other:?}", script.display()),
                    }
                }
            }
            other => bail!("{}: unknown header testbed-{other}", script.display()),
        }
    }
    Ok(scenario)
}

/// What to show on the terminal while a scenario runs (everything always goes to log files).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Stage changes only.
    Stages,
    /// Stage changes and guest console lines.
    Guests,
    /// Every serial line.
    All,
}

pub struct Outcome {
    pub name: String,
    pub passed: bool,
    /// The stage that was running when the verdict came (the failing stage on failure).
    pub stage: String,
    pub reason: String,
    pub timings: Vec<(String, String)>,
    /// The calls the scenario reported (`TESTBED: CALL <guest> | xenrpc ... | rc=N | <output>`).
    pub calls: Vec<String>,
    pub wall: Duration,
    pub run_dir: PathBuf,
}

/// Held while a scenario runs: one testbed (one QEMU) at a time per checkout, since runs
/// share build/testbed/ and the machine has two cores.
struct TestbedLock {
    _file: fs::File,
}

impl TestbedLock {
    fn acquire(paths: &Paths) -> Result<Self> {
        use rustix::fs::{flock, FlockOperation};
        let dir = paths.testbed_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join("lock");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            println!(
                "    waiting for another testbed run in this checkout (lock last taken by pid {})",
                holder.trim()
            );
            flock(&file, FlockOperation::LockExclusive)
                .with_context(|| format!("lock {}", path.display()))?;
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// Runs one scenario and returns its verdict; problems before boot fail the "prepare" stage.
pub fn run(paths: &Paths, scenario: &Scenario, echo: Echo) -> Outcome {
    let mut start = Instant::now();
    let run_dir = paths.testbed_dir().join(&scenario.name);
    let mut outcome = Outcome {
        name: scenario.name.clone(),
        passed: false,
        stage: "prepare".into(),
        reason: String::new(),
        timings: Vec::new(),
        calls: Vec::new(),
        wall: Duration::ZERO,
        run_dir: run_dir.clone(),
    };
    println!(
        "==> testbed {}: {} (time limit {}s)",
        scenario.name,
        scenario.summary,
        scenario.timeout.as_secs()
    );
    let prepared = TestbedLock::acquire(paths).and_then(|lock| {
        match fs::remove_dir_all(&run_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        fs::create_dir_all(&run_dir)?;
        // Time spent waiting for another run is not this scenario's.
        start = Instant::now();
        Ok((lock, prepare::prepare(paths, scenario, &run_dir)?))
    });
    match prepared {
        // The lock is held until the boot is over.
        Ok((_lock, prepared)) => {
            outcome
                .timings
                .push(("prepare".into(), secs(start.elapsed())));
            watch::boot(scenario, &prepared, &run_dir, echo, &mut outcome);
        }
        Err(e) => outcome.reason = format!("{e:#}"),
    }
    outcome.wall = start.elapsed();
    outcome
        .timings
        .push(("scenario wall time".into(), secs(outcome.wall)));
    report(&outcome);
    outcome
}

fn report(outcome: &Outcome) {
    println!("--- testbed {} timings:", outcome.name);
    for (label, value) in &outcome.timings {
        println!("      {label}: {value}");
    }
    if outcome.passed {
        println!(
            "--> testbed {}: PASS ({})",
            outcome.name,
            secs(outcome.wall)
        );
        return;
    }
    println!(
        "--> testbed {}: FAIL in stage '{}': {}",
        outcome.name,
        outcome.stage,
        if outcome.reason.is_empty() {
            "(no reason given)"
        } else {
            &outcome.reason
        }
    );
    let mut logs = vec![outcome.run_dir.join("serial.log")];
    if let Ok(entries) = fs::read_dir(&outcome.run_dir) {
        let mut guests: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("guest-") && n.ends_with(".log"))
            })
            .collect();
        guests.sort();
        logs.extend(guests);
    }
    logs.push(outcome.run_dir.join("qemu-stderr.log"));
    for log in logs {
        let tail = tail_lines(&log, 40);
        if tail.is_empty() {
            continue;
        }
        println!("----- last {} lines of {}", tail.len(), log.display());
        for line in tail {
            println!("  {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_headers_are_parsed_and_unknown_ones_rejected() {
        let dir = std::env::temp_dir().join(format!("xtask-scn-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good-one.sh");
        fs::write(
            &good,
            "# testbed-summary: does a thing\n# testbed-timeout: 42\n# testbed-needs: kernel\n",
        )
        .unwrap();
        let s = parse_scenario(&good).unwrap();
        assert_eq!(s.name, "good-one");
        assert_eq!(s.timeout, Duration::from_secs(42));
        assert!(s.needs_kernel && !s.needs_linux_guest && !s.needs_examples);
        fs::write(&good, "# testbed-needs: examples client\n").unwrap();
        let s = parse_scenario(&good).unwrap();
        assert!(s.needs_examples && s.needs_client && !s.needs_kernel);
        let bad = dir.join("bad.sh");
        fs::write(&bad, "# testbed-needz: kernel\n").unwrap();
        assert!(parse_scenario(&bad).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
