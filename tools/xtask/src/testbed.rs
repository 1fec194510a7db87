//! The Xen-in-QEMU testbed: boots Xen under QEMU (TCG), runs one scenario and judges it by
//! exact strings in the serial log (Xen + dom0) and in the guest console logs.
//!
//! Two kinds of scenario:
//! - `dom0-selftest` (built in): Xen boots the xenrpc kernel directly as dom0, like Xen's CI
//!   boots XTF; the kernel reports its self-tests on Xen's serial line.
//! - every `tests/testbed/<name>.sh`: Xen boots the Debian Linux kernel as dom0 with a busybox
//!   initramfs; its /init starts the Xen daemons and sources the scenario script, which drives
//!   `xl` and prints `TESTBED: ...` lines (see tests/testbed/support/lib.sh).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::initramfs::{self, LinuxKernel};
use crate::paths::Paths;
use crate::util::{secs, tail_lines};

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
    /// The client binaries ([`CLIENT_BINARIES`]) in dom0 (/usr/bin) and a client guest image
    /// (/testbed/client-guest) that carries them with the evtchn, gntalloc and gntdev modules.
    needs_client: bool,
    /// A virtual network: the bridge and netback modules and the vif hotplug script in dom0
    /// (/testbed/net, brought up by `tb_net_up`), netfront in the client guest image, and the
    /// peers (`xenrpc-peer`: SunRPC, gRPC and libxenvchan servers and benchmarks, with the
    /// shared libraries they load) beside the client binaries. Implies `client`.
    needs_net: bool,
}

/// Lists the scenarios: the built-in `dom0-selftest`, then tests/testbed/*.sh by name.
pub fn scenarios(paths: &Paths) -> Result<Vec<Scenario>> {
    let mut found = vec![Scenario {
        name: SELFTEST_SCENARIO.into(),
        summary: "the kernel boots as dom0 straight from Xen (no Linux) and passes its self-tests"
            .into(),
        kind: Kind::KernelAsDom0,
        timeout: Duration::from_secs(120),
        needs_kernel: true,
        needs_unprotected: false,
        needs_examples: false,
        needs_linux_guest: false,
        needs_client: false,
        needs_net: false,
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
    let mut scenario = Scenario {
        name,
        summary: String::new(),
        kind: Kind::LinuxDom0 {
            script: script.to_path_buf(),
        },
        timeout: Duration::from_secs(300),
        needs_kernel: false,
        needs_unprotected: false,
        needs_examples: false,
        needs_linux_guest: false,
        needs_client: false,
        needs_net: false,
    };
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

/// Installs the testbed's Debian packages (tools/setup.sh) if any of them is missing.
pub fn ensure_host_packages(paths: &Paths) -> Result<()> {
    let missing = || -> Vec<String> {
        let mut missing: Vec<String> = [
            XEN_IMAGE_GZ,
            "/usr/lib/xen-4.17/bin/xl",
            "/usr/bin/xenstore",
            "/bin/busybox",
        ]
        .iter()
        .filter(|f| !Path::new(f).exists())
        .map(|f| f.to_string())
        .collect();
        if !in_path(QEMU) {
            missing.push(QEMU.into());
        }
        if initramfs::find_linux_kernel().is_err() {
            missing.push("/boot/vmlinuz-* with Xen modules".into());
        }
        missing
    };
    let before = missing();
    if before.is_empty() {
        return Ok(());
    }
    println!(
        "==> testbed packages missing ({}): running tools/setup.sh",
        before.join(", ")
    );
    crate::util::run_stage(
        "tools/setup.sh",
        Command::new("bash")
            .arg(paths.root.join("tools/setup.sh"))
            .current_dir(&paths.root),
    )?;
    let after = missing();
    if !after.is_empty() {
        bail!("still missing after tools/setup.sh: {}", after.join(", "));
    }
    Ok(())
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// QEMU splits `-initrd` at commas and each module at its first space.
fn module_path(path: &Path) -> Result<String> {
    let text = path.to_str().context("path is not UTF-8")?;
    if text.contains([',', ' ']) {
        bail!("QEMU cannot pass {text:?} as a multiboot module: the path holds ',' or ' '");
    }
    Ok(text.to_string())
}

/// Everything QEMU needs for one run, assembled under `build/testbed/<scenario>/`.
struct Prepared {
    xen: PathBuf,
    xen_cmdline: String,
    modules: String,
}

fn prepare(paths: &Paths, scenario: &Scenario, run_dir: &Path) -> Result<Prepared> {
    ensure_host_packages(paths)?;
    let xen = run_dir.join("xen.elf");
    // QEMU's multiboot loader wants the ELF, Debian ships it gzipped.
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(XEN_IMAGE_GZ)
        .stdout(fs::File::create(&xen)?)
        .status()?;
    if !status.success() {
        bail!("gzip -dc {XEN_IMAGE_GZ}: {status}");
    }
    let kernel_image = paths.kernel_image();
    if scenario.needs_kernel && !kernel_image.exists() {
        bail!(
            "{} is missing: run `cargo xtask build` first",
            kernel_image.display()
        );
    }
    let unprotected = paths.unprotected_kernel_image();
    if scenario.needs_unprotected && !unprotected.exists() {
        bail!(
            "{} is missing: `cargo xtask bench-guest` builds it",
            unprotected.display()
        );
    }
    if scenario.needs_examples {
        for (example, file) in example_files(paths) {
            if !file.exists() {
                bail!(
                    "{} is missing: run `cargo xtask build --services {}` first",
                    file.display(),
                    example.dir
                );
            }
        }
    }
    match &scenario.kind {
        Kind::KernelAsDom0 => Ok(Prepared {
            xen,
            xen_cmdline: format!("{XEN_CMDLINE} dom0_mem=64M"),
            modules: module_path(&kernel_image)?,
        }),
        Kind::LinuxDom0 { script } => {
            let linux = initramfs::find_linux_kernel()?;
            let base = initramfs::dom0_base(&paths.testbed_dir().join("cache"), &linux)?;
            let overlay = run_dir.join("overlay.cpio");
            write_overlay(paths, scenario, script, &linux, run_dir, &overlay)?;
            let initrd = run_dir.join("dom0-initrd.cpio");
            let mut out = fs::File::create(&initrd)?;
            for part in [&base, &overlay] {
                std::io::copy(&mut fs::File::open(part)?, &mut out)?;
            }
            Ok(Prepared {
                xen,
                xen_cmdline: format!("{XEN_CMDLINE} dom0_mem=1024M"),
                modules: format!(
                    "{} {DOM0_LINUX_CMDLINE},{}",
                    module_path(&linux.image)?,
                    module_path(&initrd)?
                ),
            })
        }
    }
}

/// The per-run files: /init, the scenario and what it needs, laid out under /testbed like
/// the repository (so tools/xenrpc.cfg finds build/xenrpc.elf when xl runs in /testbed).
fn write_overlay(
    paths: &Paths,
    scenario: &Scenario,
    script: &Path,
    linux: &LinuxKernel,
    run_dir: &Path,
    out: &Path,
) -> Result<()> {
    let support = paths.scenarios_dir().join("support");
    let mut archive = initramfs::Archive::create(out)?;
    archive.copy("init", &support.join("dom0-init.sh"), 0o755)?;
    archive.copy("testbed/lib.sh", &support.join("lib.sh"), 0o644)?;
    archive.copy("testbed/scenario.sh", script, 0o644)?;
    archive.file(
        "testbed/name",
        0o644,
        format!("{}\n", scenario.name).as_bytes(),
    )?;
    archive.copy(
        "testbed/tools/xenrpc.cfg",
        &paths.root.join("tools/xenrpc.cfg"),
        0o644,
    )?;
    if scenario.needs_kernel {
        archive.copy("testbed/build/xenrpc.elf", &paths.kernel_image(), 0o644)?;
    }
    if scenario.needs_unprotected {
        archive.copy(
            "testbed/build/xenrpc-unprotected.elf",
            &paths.unprotected_kernel_image(),
            0o644,
        )?;
    }
    if scenario.needs_examples {
        for (_, file) in example_files(paths) {
            let name = file.file_name().context("a build/ file has a name")?;
            let dest = format!("testbed/build/{}", name.to_string_lossy());
            archive.copy(&dest, &file, 0o644)?;
        }
    }
    if scenario.needs_net {
        for module in initramfs::NET_MODULES_DOM0 {
            let file = Path::new(module).file_name().context("module name")?;
            archive.copy(
                &format!("testbed/net/{}", file.to_string_lossy()),
                &linux.module(module),
                0o644,
            )?;
        }
        archive.copy(
            "testbed/net/vif-testbed",
            &support.join("vif-testbed.sh"),
            0o755,
        )?;
    }
    if scenario.needs_client {
        let mut binaries = build_client(paths)?;
        for (name, binary) in CLIENT_BINARIES.iter().zip(&binaries) {
            archive.copy(&format!("usr/bin/{name}"), binary, 0o755)?;
        }
        if scenario.needs_net {
            binaries.push(build_peer(paths)?);
        }
        let guest_initrd = run_dir.join("client-guest.cpio");
        initramfs::client_guest(
            &guest_initrd,
            &fs::read(support.join("client-guest-init.sh"))?,
            &fs::read(support.join("linux-guest-poweroff.sh"))?,
            &binaries,
            linux,
            scenario.needs_net,
        )?;
        archive.copy("testbed/client-guest/vmlinuz", &linux.image, 0o644)?;
        archive.copy("testbed/client-guest/initrd.cpio", &guest_initrd, 0o644)?;
    }
    if scenario.needs_linux_guest {
        let guest_initrd = run_dir.join("linux-guest.cpio");
        initramfs::linux_guest(
            &guest_initrd,
            &fs::read(support.join("linux-guest-init.sh"))?,
            &fs::read(support.join("linux-guest-poweroff.sh"))?,
        )?;
        archive.copy("testbed/linux-guest/vmlinuz", &linux.image, 0o644)?;
        archive.copy("testbed/linux-guest/initrd.cpio", &guest_initrd, 0o644)?;
    }
    archive.finish()
}

/// The examples' images and xl configs, which an `examples` scenario boots.
fn example_files(paths: &Paths) -> Vec<(&'static crate::Example, PathBuf)> {
    crate::EXAMPLES
        .iter()
        .flat_map(|example| {
            [
                (example, paths.service_image(example.name)),
                (example, paths.service_config(example.name)),
            ]
        })
        .collect()
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

/// The client binaries (package xenrpc-cli) dom0 and the client guest carry in /usr/bin: the
/// `xenrpc` CLI, and `xenrpc-hostile` for the attacks of the `hostile` scenario.
pub const CLIENT_BINARIES: [&str; 2] = ["xenrpc", "xenrpc-hostile"];

/// Builds the client binaries (release code, profile `guest`: without debug info, which would
/// make them eight times larger) for the dom0 and client-guest images; their paths, in the
/// order of [`CLIENT_BINARIES`].
fn build_client(paths: &Paths) -> Result<Vec<PathBuf>> {
    crate::util::run_stage(
        "build client (cargo build --profile guest -p xenrpc-cli --bins)",
        crate::util::cargo()
            .args(["build", "--profile", "guest", "-p", "xenrpc-cli", "--bins"])
            .current_dir(&paths.root),
    )?;
    Ok(CLIENT_BINARIES
        .iter()
        .map(|name| paths.target.join("guest").join(name))
        .collect())
}

/// Builds `xenrpc-peer` (the peers as a program: package xenrpc-peers, profile `guest`) for
/// the client guest image of a scenario with a network.
fn build_peer(paths: &Paths) -> Result<PathBuf> {
    crate::util::run_stage(
        "build peers (cargo build --profile guest -p xenrpc-peers --bin xenrpc-peer)",
        crate::util::cargo()
            .args(["build", "--profile", "guest", "-p", "xenrpc-peers"])
            .args(["--bin", "xenrpc-peer"])
            .current_dir(&paths.root),
    )?;
    Ok(paths.target.join("guest").join("xenrpc-peer"))
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
        Ok((lock, prepare(paths, scenario, &run_dir)?))
    });
    match prepared {
        // The lock is held until the boot is over.
        Ok((_lock, prepared)) => {
            outcome
                .timings
                .push(("prepare".into(), secs(start.elapsed())));
            boot(scenario, &prepared, &run_dir, echo, &mut outcome);
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

impl Watch<'_> {
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

fn boot(scenario: &Scenario, prepared: &Prepared, run_dir: &Path, echo: Echo, out: &mut Outcome) {
    let boot_start = Instant::now();
    let mut watch = Watch {
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
    };
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

    fn scenario(kind: Kind) -> Scenario {
        Scenario {
            name: "domu".into(),
            summary: String::new(),
            kind,
            timeout: Duration::from_secs(1),
            needs_kernel: false,
            needs_unprotected: false,
            needs_examples: false,
            needs_linux_guest: false,
            needs_client: false,
            needs_net: false,
        }
    }

    fn watch(s: &Scenario) -> Watch<'_> {
        Watch {
            scenario: s,
            boot_start: Instant::now(),
            echo: Echo::Stages,
            stage: "boot Xen".into(),
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
