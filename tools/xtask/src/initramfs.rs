//! Assembles Linux initramfs images (newc cpio) from the host's Debian packages.
//!
//! The dom0 base image (busybox, the Xen toolstack with its shared libraries, the Xen driver
//! modules) only changes when those packages change, so it is cached under build/testbed/cache
//! keyed on their versions. Per-run files (the /init script, the scenario, the kernel image)
//! go into a small overlay archive appended to it: Linux unpacks concatenated archives in order.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{fnv1a64, output_of, version_cmp};

const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Bump when the recipe below changes, so cached images are rebuilt.
const BASE_RECIPE_VERSION: u32 = 2;

/// Debian packages whose files go into the images; their versions key the cache.
const SOURCE_PACKAGES: &[&str] = &[
    "xen-utils-4.17",
    "xen-hypervisor-4.17-amd64",
    "xenstore-utils",
    "busybox-static",
    "libc6",
];

pub const XEN_TOOLS_DIR: &str = "/usr/lib/xen-4.17/bin";
/// The toolstack binaries a dom0 needs to run `xl create` and serve guest consoles.
const XEN_TOOLS: &[&str] = &[
    "xl",
    "xenstored",
    "xenconsoled",
    "xen-init-dom0",
    // `xl save` and `xl restore` (the hostile scenario's domid reuse) run it.
    "libxl-save-helper",
];
/// xenstore-utils ships one multi-call binary that dispatches on its name.
const XENSTORE_MULTICALL: &str = "/usr/bin/xenstore";
const XENSTORE_NAMES: &[&str] = &[
    "xenstore-read",
    "xenstore-write",
    "xenstore-ls",
    "xenstore-list",
    "xenstore-exists",
    "xenstore-rm",
    "xenstore-watch",
    "xenstore-chmod",
];
/// Loaded by libxl's thread cancellation at run time, so ldd does not list it.
const LIBGCC: &str = "/lib/x86_64-linux-gnu/libgcc_s.so.1";
/// Xen driver modules of the dom0 kernel, in load order (xenfs needs xen-privcmd).
pub const XEN_MODULES: &[&str] = &[
    "xen-evtchn.ko",
    "xen-privcmd.ko",
    "xen-gntdev.ko",
    "xen-gntalloc.ko",
    "xenfs/xenfs.ko",
];
const BUSYBOX: &str = "/bin/busybox";

/// A newc cpio archive being written; tracks directories so parents are created once.
pub struct Archive {
    out: Option<BufWriter<fs::File>>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl Archive {
    pub fn create(path: &Path) -> Result<Self> {
        let file = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self {
            out: Some(BufWriter::new(file)),
            next_ino: 1,
            dirs: BTreeSet::new(),
        })
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len()).context("file too large for cpio")?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let out = self.out.take().context("archive already finished")?;
        let mut writer = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .nlink(if mode & S_IFDIR != 0 { 2 } else { 1 })
            .write(out, size);
        writer.write_all(data)?;
        self.out = Some(writer.finish()?);
        Ok(())
    }

    /// Creates directory `path` (no leading slash) and its missing parents.
    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, S_IFDIR | 0o755, &[])?;
        self.dirs.insert(path.to_string());
        Ok(())
    }

    fn parent_of(&mut self, path: &str) -> Result<String> {
        let path = path.trim_start_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        Ok(path)
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let path = self.parent_of(path)?;
        self.entry(&path, S_IFREG | mode, data)
    }

    /// Copies a host file (following symlinks) into the archive.
    pub fn copy(&mut self, path: &str, host: &Path, mode: u32) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("read {}", host.display()))?;
        self.file(path, mode, &data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = self.parent_of(path)?;
        self.entry(&path, S_IFLNK | 0o777, target.as_bytes())
    }

    pub fn finish(mut self) -> Result<()> {
        let out = self.out.take().context("archive already finished")?;
        let mut out = cpio::newc::trailer(out)?;
        out.flush()?;
        Ok(())
    }
}

/// The dom0 Linux kernel: the newest /boot/vmlinuz-* that has the Xen driver modules.
pub struct LinuxKernel {
    pub version: String,
    pub image: PathBuf,
    pub modules: PathBuf,
}

impl LinuxKernel {
    /// A module of this kernel by its path under `kernel/` (`net/llc/llc.ko`).
    pub fn module(&self, path: &str) -> PathBuf {
        Path::new("/lib/modules")
            .join(&self.version)
            .join("kernel")
            .join(path)
    }
}

/// The virtual network's modules in dom0, in load order: the bridge (and what it needs), then
/// netback.
pub const NET_MODULES_DOM0: &[&str] = &[
    "net/llc/llc.ko",
    "net/802/stp.ko",
    "net/bridge/bridge.ko",
    "drivers/net/xen-netback/xen-netback.ko",
];
/// Netfront, for a client guest on the virtual network (`/modules/xen-netfront.ko`).
pub const NET_MODULE_GUEST: &str = "drivers/net/xen-netfront.ko";

pub fn find_linux_kernel() -> Result<LinuxKernel> {
    let mut versions: Vec<String> = fs::read_dir("/boot")
        .context("read /boot")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .filter(|v| {
            Path::new("/lib/modules")
                .join(v)
                .join("kernel/drivers/xen/xen-evtchn.ko")
                .exists()
        })
        .collect();
    versions.sort_by(|a, b| version_cmp(a, b));
    let Some(version) = versions.pop() else {
        bail!("no /boot/vmlinuz-* with Xen driver modules (is linux-image-amd64 installed?)");
    };
    Ok(LinuxKernel {
        image: PathBuf::from(format!("/boot/vmlinuz-{version}")),
        modules: PathBuf::from(format!("/lib/modules/{version}/kernel/drivers/xen")),
        version,
    })
}

/// Versions of the source packages plus the recipe: changes whenever the base image would.
pub fn base_cache_key(kernel: &LinuxKernel) -> Result<String> {
    let versions = output_of(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package}=${Version}\n"])
            .args(SOURCE_PACKAGES),
    )?;
    let key = format!(
        "recipe={BASE_RECIPE_VERSION}\nkernel={}\n{versions}",
        kernel.version
    );
    Ok(format!("{:016x}", fnv1a64(key.as_bytes())))
}

/// The shared libraries (and ELF interpreter) that `binaries` load, as ldd resolves them.
fn shared_libraries(binaries: &[PathBuf]) -> Result<BTreeSet<String>> {
    let mut libs = BTreeSet::new();
    for bin in binaries {
        let listing = output_of(Command::new("ldd").arg(bin))?;
        for line in listing.lines() {
            // "\tlibx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "\t/lib64/ld-...so.2 (0x...)"
            let resolved = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = resolved.filter(|p| p.starts_with('/')) {
                libs.insert(path.to_string());
            }
        }
    }
    libs.insert(LIBGCC.to_string());
    Ok(libs)
}

/// busybox as /bin/busybox plus a symlink per applet; then xenstore-utils and their libraries.
fn add_userland(archive: &mut Archive, extra_binaries: &[PathBuf]) -> Result<()> {
    archive.copy("bin/busybox", Path::new(BUSYBOX), 0o755)?;
    let applets = output_of(Command::new(BUSYBOX).arg("--list"))?;
    for applet in applets.lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" {
            archive.symlink(&format!("bin/{applet}"), "busybox")?;
        }
    }
    archive.copy("usr/bin/xenstore", Path::new(XENSTORE_MULTICALL), 0o755)?;
    for name in XENSTORE_NAMES {
        archive.symlink(&format!("usr/bin/{name}"), "xenstore")?;
    }
    let mut binaries = vec![PathBuf::from(XENSTORE_MULTICALL)];
    binaries.extend_from_slice(extra_binaries);
    for lib in shared_libraries(&binaries)? {
        archive.copy(&lib, Path::new(&lib), 0o755)?;
    }
    for dir in ["proc", "sys", "dev", "run", "tmp", "etc", "var"] {
        archive.dir(dir)?;
    }
    Ok(())
}

/// Returns the cached dom0 base image, building it if the package versions changed.
pub fn dom0_base(cache_dir: &Path, kernel: &LinuxKernel) -> Result<PathBuf> {
    let key = base_cache_key(kernel)?;
    let path = cache_dir.join(format!("dom0-base-{key}.cpio"));
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(cache_dir)?;
    // Older images are keyed on versions no longer installed: drop them.
    for entry in fs::read_dir(cache_dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("dom0-base-") && name.ends_with(".cpio") {
            fs::remove_file(entry.path())?;
        }
    }
    // Private name until complete: a concurrent run must never see half an image.
    let partial = cache_dir.join(format!("dom0-base-{key}.{}.partial", std::process::id()));
    let mut archive = Archive::create(&partial)?;
    let tools: Vec<PathBuf> = XEN_TOOLS
        .iter()
        .map(|t| Path::new(XEN_TOOLS_DIR).join(t))
        .collect();
    for (name, host) in XEN_TOOLS.iter().zip(&tools) {
        archive.copy(&format!("{XEN_TOOLS_DIR}/{name}"), host, 0o755)?;
    }
    add_userland(&mut archive, &tools)?;
    archive.symlink("sbin", "bin")?;
    for module in XEN_MODULES {
        let file = Path::new(module).file_name().context("module name")?;
        archive.copy(
            &format!("modules/{}", file.to_string_lossy()),
            &kernel.modules.join(module),
            0o644,
        )?;
    }
    // xl reads its global config; an empty one means defaults.
    archive.file("etc/xen/xl.conf", 0o644, b"")?;
    archive.finish()?;
    fs::rename(&partial, &path)?;
    Ok(path)
}

/// A small Linux domU image: busybox, xenstore-utils, `init` as /init and `poweroff` as the
/// program the kernel runs when the toolstack asks the domain to shut down.
pub fn linux_guest(out: &Path, init: &[u8], poweroff: &[u8]) -> Result<()> {
    let mut archive = Archive::create(out)?;
    add_userland(&mut archive, &[])?;
    archive.file("init", 0o755, init)?;
    // The kernel's orderly poweroff runs /sbin/poweroff: ours is a script that logs and then
    // calls busybox's (/bin/poweroff).
    archive.file("sbin/poweroff", 0o755, poweroff)?;
    archive.finish()
}

/// Modules a client guest loads to reach `/dev/xen/evtchn`, `/dev/xen/gntalloc` and
/// `/dev/xen/gntdev` (a libxenvchan client maps the server's rings through it).
pub const CLIENT_GUEST_MODULES: &[&str] = &["xen-evtchn.ko", "xen-gntalloc.ko", "xen-gntdev.ko"];

/// A Linux domU image for xenrpc clients: like [`linux_guest`], plus the client `binaries`
/// (with their shared libraries) in /usr/bin under their file names and the evtchn, gntalloc
/// and gntdev modules in /modules (and netfront, for a guest on the virtual network: `net`).
pub fn client_guest(
    out: &Path,
    init: &[u8],
    poweroff: &[u8],
    binaries: &[PathBuf],
    kernel: &LinuxKernel,
    net: bool,
) -> Result<()> {
    let mut archive = Archive::create(out)?;
    add_userland(&mut archive, binaries)?;
    for binary in binaries {
        let name = binary
            .file_name()
            .with_context(|| format!("{} names no file", binary.display()))?;
        archive.copy(
            &format!("usr/bin/{}", name.to_string_lossy()),
            binary,
            0o755,
        )?;
    }
    for module in CLIENT_GUEST_MODULES {
        archive.copy(
            &format!("modules/{module}"),
            &kernel.modules.join(module),
            0o644,
        )?;
    }
    if net {
        archive.copy(
            "modules/xen-netfront.ko",
            &kernel.module(NET_MODULE_GUEST),
            0o644,
        )?;
    }
    archive.file("init", 0o755, init)?;
    archive.file("sbin/poweroff", 0o755, poweroff)?;
    archive.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_readable_newc_with_parents_first() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.cpio");
        let mut archive = Archive::create(&path).unwrap();
        archive
            .file("testbed/build/x.elf", 0o644, b"hello")
            .unwrap();
        archive.symlink("bin/sh", "busybox").unwrap();
        archive.finish().unwrap();

        let mut reader = fs::File::open(&path).unwrap();
        let mut seen = Vec::new();
        loop {
            let entry = cpio::NewcReader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            seen.push((entry.entry().name().to_string(), entry.entry().mode()));
            reader = entry.finish().unwrap();
        }
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "testbed",
                "testbed/build",
                "testbed/build/x.elf",
                "bin",
                "bin/sh"
            ]
        );
        assert_eq!(seen[2].1, S_IFREG | 0o644);
        assert_eq!(seen[4].1, S_IFLNK | 0o777);
        fs::remove_dir_all(&dir).unwrap();
    }
}
