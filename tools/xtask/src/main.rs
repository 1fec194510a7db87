//! `cargo xtask`: the project's commands (build the kernel image or a service crate's image
//! and host server, run the Xen testbed, run everything CI runs, show the demo, run the host
//! benchmark). See tools/README.md.

mod bench_guest;
mod image;
mod initramfs;
mod paths;
mod testbed;
mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use paths::Paths;
use testbed::Echo;
use util::{cargo, run_stage, secs, size};

const KERNEL_TARGET: &str = "x86_64-unknown-none";

const USAGE: &str = "\
usage: cargo xtask <command>

  build                      build the kernel image into build/xenrpc.elf
  build --services PATH      build the service crate at PATH (a no_std library with
                             `pub fn services(&ServiceEnv) -> impl ServiceSet`) into a
                             service VM image build/<crate>.elf, its xl config
                             build/<crate>.cfg and a host server build/<crate>-hostd
  testbed <scenario>|all [-v|--verbose] [--no-build]
                             boot Xen in QEMU and run testbed scenario(s);
                             --no-build boots the existing build/xenrpc.elf
  testbed list               list the scenarios
  test                       everything CI runs: fmt, clippy, tests, kernel build, testbed
  demo                       boot the service VM and client guests in the testbed, make
                             calls, show the consoles live and every call's answer
  bench-host [args...]       run the host benchmark (tools/hostbench)
  bench-guest                time calls from a Linux client guest into the service VM in
                             the testbed (tools/bench/bench-guest.sh) and print a table
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let paths = Paths::discover()?;
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("build") => cmd_build(&paths, rest),
        Some("testbed") => cmd_testbed(&paths, rest),
        Some("test") => cmd_test(&paths),
        Some("demo") => cmd_demo(&paths),
        Some("bench-host") => cmd_bench_host(&paths, rest),
        Some("bench-guest") => cmd_bench_guest(&paths),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprint!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

fn cmd_build(paths: &Paths, args: &[String]) -> Result<ExitCode> {
    let services = match args {
        [] => None,
        [flag, path] if flag == "--services" => Some(path.as_str()),
        [arg] if arg.starts_with("--services=") => Some(&arg["--services=".len()..]),
        _ => bail!("build: expected no argument or --services PATH\n{USAGE}"),
    };
    match services {
        None => build_kernel(paths).map(drop)?,
        Some(path) => image::build_services(paths, Path::new(path)).map(drop)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds the x86_64-unknown-none target through tools/setup.sh when rustup lacks it (the
/// machines do not auto-install targets named in rust-toolchain.toml).
fn ensure_kernel_target(paths: &Paths) -> Result<()> {
    let Ok(installed) = util::output_of(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(&paths.root),
    ) else {
        return Ok(()); // no rustup: let cargo report what is missing
    };
    if installed.lines().any(|t| t.trim() == KERNEL_TARGET) {
        return Ok(());
    }
    run_stage(
        "tools/setup.sh --rust",
        Command::new("bash")
            .arg(paths.root.join("tools/setup.sh"))
            .arg("--rust")
            .current_dir(&paths.root),
    )?;
    Ok(())
}

/// Builds the unprotected kernel (handlers in kernel mode: the baseline of bench-guest, a test
/// image only) in a target dir of its own, and copies it to build/xenrpc-unprotected.elf.
fn build_unprotected_kernel(paths: &Paths) -> Result<Duration> {
    ensure_kernel_target(paths)?;
    let target = paths.root.join("target-unprotected");
    let took = run_stage(
        "build the unprotected kernel (cargo build -p xenrpc-kernel --features unprotected \
         --target x86_64-unknown-none --profile kernel, target dir target-unprotected)",
        cargo()
            .args(["build", "-p", "xenrpc-kernel", "--features", "unprotected"])
            .args(["--target", KERNEL_TARGET, "--profile", "kernel"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&paths.root),
    )?;
    fs::create_dir_all(&paths.build)?;
    let dest = paths.unprotected_kernel_image();
    let built = target
        .join(KERNEL_TARGET)
        .join("kernel")
        .join("xenrpc-kernel");
    let len = image::install_elf(&built, &dest)?;
    println!(
        "    unprotected kernel image: {} ({})",
        dest.display(),
        size(len)
    );
    Ok(took)
}

/// Builds the kernel for x86_64-unknown-none and copies it to build/xenrpc.elf.
fn build_kernel(paths: &Paths) -> Result<Duration> {
    ensure_kernel_target(paths)?;
    let took = run_stage(
        "build kernel (cargo build -p xenrpc-kernel --target x86_64-unknown-none --profile kernel)",
        cargo()
            .args([
                "build",
                "-p",
                "xenrpc-kernel",
                "--target",
                "x86_64-unknown-none",
            ])
            .args(["--profile", "kernel"])
            .current_dir(&paths.root),
    )?;
    fs::create_dir_all(&paths.build)?;
    let dest = paths.kernel_image();
    let len = image::install_elf(&paths.built_kernel(), &dest)?;
    println!("    kernel image: {} ({})", dest.display(), size(len));
    Ok(took)
}

fn select_scenarios(paths: &Paths, which: &str) -> Result<Vec<testbed::Scenario>> {
    let all = testbed::scenarios(paths)?;
    if which == "all" {
        return Ok(all);
    }
    let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    let chosen: Vec<_> = all.into_iter().filter(|s| s.name == which).collect();
    if chosen.is_empty() {
        bail!(
            "no scenario {which:?}; scenarios: {} (or `all`)",
            names.join(", ")
        );
    }
    Ok(chosen)
}

fn cmd_testbed(paths: &Paths, args: &[String]) -> Result<ExitCode> {
    let mut echo = Echo::Stages;
    let mut which = None;
    let mut build = true;
    for arg in args {
        match arg.as_str() {
            "-v" | "--verbose" => echo = Echo::All,
            "--no-build" => build = false,
            name if which.is_none() && !name.starts_with('-') => which = Some(name),
            other => bail!("testbed: unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let Some(which) = which else {
        bail!("testbed: name a scenario, `all` or `list`\n{USAGE}");
    };
    if which == "list" {
        for s in testbed::scenarios(paths)? {
            println!("{:<16} {}", s.name, s.summary);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen = select_scenarios(paths, which)?;
    let mut summary = Summary::default();
    let mut failed = Failed::default();
    if build && chosen.iter().any(|s| s.needs_kernel) {
        let kernel = build_kernel(paths);
        failed.kernel = kernel.is_err();
        summary.record("kernel build", kernel);
    }
    if build && chosen.iter().any(|s| s.needs_examples) {
        for example in EXAMPLES {
            let built = image::build_services(paths, &paths.root.join(example.dir));
            failed.example |= built.is_err();
            summary.record(
                &format!("build --services {}", example.dir),
                built.map(|built| built.took),
            );
        }
    }
    run_scenarios(paths, &chosen, failed, echo, &mut summary);
    Ok(summary.finish())
}

/// Builds that failed, so the scenarios booting what they make are not run.
#[derive(Clone, Copy, Default)]
struct Failed {
    kernel: bool,
    example: bool,
}

fn run_scenarios(
    paths: &Paths,
    chosen: &[testbed::Scenario],
    failed: Failed,
    echo: Echo,
    summary: &mut Summary,
) {
    for scenario in chosen {
        let label = format!("testbed {}", scenario.name);
        let not_run = if scenario.needs_kernel && failed.kernel {
            Some("the kernel build failed".to_string())
        } else if scenario.needs_examples && failed.example {
            Some("building an example service crate failed".to_string())
        } else {
            None
        };
        if let Some(why) = not_run {
            summary.record(&label, Err(anyhow::anyhow!("not run: {why}")));
            continue;
        }
        let outcome = testbed::run(paths, scenario, echo);
        summary.record(&label, verdict(&outcome));
    }
}

fn verdict(outcome: &testbed::Outcome) -> Result<Duration> {
    if outcome.passed {
        Ok(outcome.wall)
    } else {
        Err(anyhow::anyhow!(
            "stage '{}': {}",
            outcome.stage,
            outcome.reason
        ))
    }
}

/// Stage-by-stage results, printed at the end with the `N passed, N failed` line.
#[derive(Default)]
struct Summary {
    rows: Vec<(String, Result<Duration, String>)>,
    failed: usize,
}

impl Summary {
    fn record(&mut self, stage: &str, result: Result<Duration>) {
        if let Err(e) = &result {
            println!("--> {stage}: FAILED: {e:#}");
            self.failed += 1;
        }
        self.rows
            .push((stage.to_string(), result.map_err(|e| format!("{e:#}"))));
    }

    fn finish(self) -> ExitCode {
        println!("\n==== summary");
        for (stage, result) in &self.rows {
            match result {
                Ok(took) => println!("  ok    {stage:<28} {}", secs(*took)),
                Err(e) => println!("  FAIL  {stage:<28} {}", first_line(e)),
            }
        }
        let passed = self.rows.len() - self.failed;
        println!("{passed} passed, {} failed", self.failed);
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Everything CI runs, in order; later stages run even when earlier ones fail.
fn cmd_test(paths: &Paths) -> Result<ExitCode> {
    let start = Instant::now();
    let mut summary = Summary::default();
    let root = &paths.root;
    summary.record(
        "cargo fmt --check",
        run_stage(
            "cargo fmt --all --check",
            cargo().args(["fmt", "--all", "--check"]).current_dir(root),
        ),
    );
    summary.record(
        "clippy (host crates)",
        run_stage(
            "cargo clippy --all-targets -- -D warnings",
            cargo()
                .args(["clippy", "--all-targets", "--", "-D", "warnings"])
                .current_dir(root),
        ),
    );
    summary.record(
        "clippy (kernel)",
        run_stage(
            "cargo clippy --target x86_64-unknown-none -p xenrpc-kernel -p xenrpc-boot -- -D warnings",
            cargo()
                .args(["clippy", "--target", "x86_64-unknown-none"])
                .args(["-p", "xenrpc-kernel", "-p", "xenrpc-boot", "--", "-D", "warnings"])
                .current_dir(root),
        ),
    );
    summary.record(
        "clippy (kernel, unprotected test build)",
        run_stage(
            "cargo clippy --target x86_64-unknown-none -p xenrpc-kernel --features unprotected -- -D warnings",
            cargo()
                .args(["clippy", "--target", "x86_64-unknown-none"])
                .args(["-p", "xenrpc-kernel", "--features", "unprotected"])
                .args(["--", "-D", "warnings"])
                .current_dir(root),
        ),
    );
    for example in EXAMPLES {
        summary.record(
            &format!("fmt, clippy ({})", example.dir),
            check_example(paths, &root.join(example.dir)),
        );
    }
    summary.record(
        "cargo test (host crates)",
        run_stage("cargo test", cargo().arg("test").current_dir(root)),
    );
    summary.record(
        "cargo doc (warnings denied)",
        run_stage(
            "RUSTDOCFLAGS=\"-D warnings\" cargo doc --no-deps --workspace",
            cargo()
                .args(["doc", "--no-deps", "--workspace"])
                .env("RUSTDOCFLAGS", "-D warnings")
                .current_dir(root),
        ),
    );
    let kernel = build_kernel(paths);
    let kernel_failed = kernel.is_err();
    summary.record("kernel build", kernel);
    let mut failed = Failed {
        kernel: kernel_failed,
        example: false,
    };
    for example in EXAMPLES {
        let dir = root.join(example.dir);
        let built = image::build_services(paths, &dir);
        let hostd = built.as_ref().ok().map(|built| built.hostd.clone());
        failed.example |= hostd.is_none();
        summary.record(
            &format!("build --services {}", example.dir),
            built.map(|built| built.took),
        );
        summary.record(
            &format!("cargo test ({})", example.dir),
            match hostd {
                Some(hostd) => test_example(paths, &dir, &hostd),
                None => Err(anyhow::anyhow!(
                    "not run: build --services {} failed",
                    example.dir
                )),
            },
        );
    }
    match select_scenarios(paths, "all") {
        Ok(all) => run_scenarios(paths, &all, failed, Echo::Stages, &mut summary),
        Err(e) => summary.record("testbed scenarios", Err(e)),
    }
    println!("\ntotal time: {}", secs(start.elapsed()));
    Ok(summary.finish())
}

/// An example service crate: a crate of its own (not a workspace member), checked, built
/// with `build --services` and called through its generated host server by `test`.
pub struct Example {
    /// Its directory in the repository.
    pub dir: &'static str,
    /// Its package name: it names what `build --services` writes (`build/<name>.elf`).
    pub name: &'static str,
}

/// The example service crates; scenarios that need `examples` boot their images.
pub const EXAMPLES: &[Example] = &[
    Example {
        dir: "examples/counter",
        name: "counter-service",
    },
    Example {
        dir: "examples/mac-service",
        name: "mac-service",
    },
    // Not an example to follow: the fault injector the handler-faults scenario boots.
    Example {
        dir: "tests/faults-service",
        name: "faults-service",
    },
];

/// `cargo fmt --check` and clippy of a crate outside the workspace (the workspace's own
/// stages do not reach it).
fn check_example(paths: &Paths, dir: &Path) -> Result<Duration> {
    let manifest = dir.join("Cargo.toml");
    let fmt = run_stage(
        &format!("cargo fmt --check --manifest-path {}", manifest.display()),
        cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(&manifest)
            .current_dir(&paths.root),
    )?;
    let clippy = run_stage(
        &format!(
            "cargo clippy --all-targets --manifest-path {} -- -D warnings",
            manifest.display()
        ),
        cargo()
            .args(["clippy", "--all-targets", "--manifest-path"])
            .arg(&manifest)
            .args(["--", "-D", "warnings"])
            .env("CARGO_TARGET_DIR", &paths.target)
            .current_dir(&paths.root),
    )?;
    Ok(fmt + clippy)
}

/// The example's tests, with the end-to-end ones (ignored by a plain `cargo test`) against
/// the host server `build --services` made for it (named by `$SERVICE_HOSTD`).
fn test_example(paths: &Paths, dir: &Path, hostd: &Path) -> Result<Duration> {
    let manifest = dir.join("Cargo.toml");
    run_stage(
        &format!(
            "SERVICE_HOSTD={} cargo test --manifest-path {} -- --include-ignored",
            hostd.display(),
            manifest.display()
        ),
        cargo()
            .args(["test", "--manifest-path"])
            .arg(&manifest)
            .args(["--", "--include-ignored"])
            .env("SERVICE_HOSTD", hostd)
            .env("CARGO_TARGET_DIR", &paths.target)
            .current_dir(&paths.root),
    )
}

/// The scenarios the demo runs: handlers faulting in guest user mode while the VM serves on
/// (the fault-injection service), a service of a crate of its own (the MAC example, with a
/// provisioned key and two client guests), the stock service VM and three client guests, then
/// the peers xenrpc is measured beside (SunRPC and gRPC across the testbed's virtual network).
const DEMO_SCENARIOS: &[&str] = &["handler-faults", "mac-service", "clients", "peers-net"];

/// The demo: the scenarios above (the service VMs and Linux client guests in the testbed) with
/// the guests' consoles shown live, then every call made and its answer. It passes only if the
/// scenarios do, i.e. every answer was the expected one.
fn cmd_demo(paths: &Paths) -> Result<ExitCode> {
    let mut chosen = Vec::new();
    for name in DEMO_SCENARIOS {
        chosen.extend(select_scenarios(paths, name)?);
    }
    let mut summary = Summary::default();
    summary.record("kernel build", build_kernel(paths));
    for example in EXAMPLES {
        summary.record(
            &format!("build --services {}", example.dir),
            image::build_services(paths, &paths.root.join(example.dir)).map(|built| built.took),
        );
    }
    if summary.failed > 0 {
        return Ok(summary.finish());
    }
    for scenario in &chosen {
        let outcome = testbed::run(paths, scenario, Echo::Guests);
        println!(
            "\n==== calls made in the demo ({}): guest | command | exit status | answer",
            outcome.calls.len()
        );
        for call in &outcome.calls {
            println!("  {call}");
        }
        let mut result = verdict(&outcome);
        if result.is_ok() && outcome.calls.is_empty() {
            result = Err(anyhow::anyhow!(
                "the scenario passed without reporting a call"
            ));
        }
        summary.record(&format!("demo ({})", scenario.name), result);
    }
    Ok(summary.finish())
}

/// Runs the guest benchmark scenario and prints its table (see `bench_guest`).
fn cmd_bench_guest(paths: &Paths) -> Result<ExitCode> {
    let scenario = testbed::load_scenario(&paths.root.join("tools/bench/bench-guest.sh"))?;
    let mut summary = Summary::default();
    summary.record("kernel build", build_kernel(paths));
    summary.record("unprotected kernel build", build_unprotected_kernel(paths));
    if summary.failed > 0 {
        return Ok(summary.finish());
    }
    let outcome = testbed::run(paths, &scenario, Echo::Stages);
    let result = verdict(&outcome).and_then(|wall| {
        bench_guest::report(
            &outcome.run_dir.join("guest-client.log"),
            &outcome.run_dir.join("serial.log"),
            &paths.root.join("target/bench-guest.csv"),
        )?;
        Ok(wall)
    });
    summary.record("guest benchmark", result);
    Ok(summary.finish())
}

/// Runs the host benchmark (`tools/hostbench`, a release build).
fn cmd_bench_host(paths: &Paths, args: &[String]) -> Result<ExitCode> {
    let mut cmd = cargo();
    cmd.current_dir(&paths.root)
        .args(["run", "--release", "-p", "xenrpc-hostbench", "--"])
        .args(args);
    run_stage("host benchmark", &mut cmd)?;
    Ok(ExitCode::SUCCESS)
}
