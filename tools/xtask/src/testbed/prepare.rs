//! Assembling a run: the host packages, Xen's ELF and command line, and dom0's initramfs
//! (the Debian base and a per-run overlay with the scenario and what it needs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{Kind, Scenario, DOM0_LINUX_CMDLINE, QEMU, XEN_CMDLINE, XEN_IMAGE_GZ};
use crate::initramfs::{self, LinuxKernel};
use crate::paths::Paths;

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
pub(super) struct Prepared {
    pub(super) xen: PathBuf,
    pub(super) xen_cmdline: String,
    pub(super) modules: String,
}

pub(super) fn prepare(paths: &Paths, scenario: &Scenario, run_dir: &Path) -> Result<Prepared> {
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
