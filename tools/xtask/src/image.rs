//! `cargo xtask build --services PATH`: a service crate of one's own, anywhere on disk, made
//! into a bootable service VM image and a host server, with no file of the project edited.
//!
//! The crate is a `no_std` library exposing `fn services(&ServiceEnv<'_>) -> S`,
//! `S: ServiceSet` (another path with `[package.metadata.xenrpc] services = "path::to::fn"`,
//! from the crate root, or several, `services = ["a", "b"]`: in the service VM each builds the
//! services of a protection domain of its own). For it two small crates are written under
//! `<target>/xenrpc-images/` and built with the project's settings (its `.cargo/config.toml`,
//! profiles and Cargo.lock):
//! - `<name>/`: `xenrpc_kernel::service_vm!(<lib>::<fn>, ...);`, built for x86_64-unknown-none and
//!   linked like the stock image, copied to `build/<name>.elf`, beside `build/<name>.cfg`
//!   (tools/xenrpc.cfg with the image and the domain name changed);
//! - `<name>-hostd/`: `xenrpc_host::hostd::main_with_services(&args, <lib>::<fn>)` (several
//!   functions: a tuple of their sets), built in release for the host, copied to
//!   `build/<name>-hostd`.
//!
//! Generated files are rewritten only when their text changes, so cargo rebuilds only what
//! did change.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::paths::Paths;
use crate::util::{cargo, output_of, run_stage, size};
use crate::KERNEL_TARGET;

/// The services function when the crate's metadata names none.
const DEFAULT_SERVICES: &str = "services";

/// What `cargo metadata` says about a service crate.
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceCrate {
    /// The package name: it names the image, its xl config and domain, and the host server.
    pub name: String,
    /// The library's crate name, as Rust code names it (`counter_service`).
    pub lib: String,
    /// The directory of its Cargo.toml.
    pub dir: PathBuf,
    /// The services functions' paths from the crate root: one protection domain each.
    pub services: Vec<String>,
    /// Git repositories the crate takes xenrpc-proto from. The generated crates patch them to
    /// this checkout's protocol/, so a build holds one copy of the protocol (the kernel's).
    pub proto_git: Vec<String>,
}

impl ServiceCrate {
    /// The services functions as the generated crates call them.
    pub fn services_fns(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|f| format!("{}::{f}", self.lib))
            .collect()
    }
}

/// What [`build_services`] made, for the stages that use it.
pub struct Built {
    /// `build/<name>-hostd`.
    pub hostd: PathBuf,
    pub took: Duration,
}

/// Builds the service VM image, its xl config and the host server of the crate at `dir`.
pub fn build_services(paths: &Paths, dir: &Path) -> Result<Built> {
    let start = Instant::now();
    let krate = read_service_crate(paths, dir)?;
    let name = &krate.name;
    println!(
        "==> service crate {name} ({}): serves {}",
        krate.dir.display(),
        krate.services_fns().join(", ")
    );
    crate::ensure_kernel_target(paths)?;
    let root_manifest = paths.root.join("Cargo.toml");
    let profiles = profile_tables(
        &fs::read_to_string(&root_manifest)
            .with_context(|| format!("read {}", root_manifest.display()))?,
    );
    let images = paths.service_images();
    let lock = paths.root.join("Cargo.lock");
    fs::create_dir_all(&paths.build)?;

    let image_dir = images.join(name);
    let manifest = generated_manifest(paths, &krate, Generated::Image, &profiles)?;
    write_crate(
        &image_dir,
        &[
            ("Cargo.toml", manifest),
            ("build.rs", IMAGE_BUILD_RS.to_string()),
            ("src/main.rs", image_main(&krate)),
        ],
        &lock,
    )?;
    run_stage(
        &format!(
            "build the service VM image of {name} (cargo build --target {KERNEL_TARGET} \
             --profile kernel, crate {})",
            image_dir.display()
        ),
        cargo_build(paths, &image_dir).args(["--target", KERNEL_TARGET, "--profile", "kernel"]),
    )?;
    let image = paths.service_image(name);
    let len = install_elf(&paths.built_service_image(name), &image)?;
    println!("    service VM image: {} ({})", image.display(), size(len));
    let template_path = paths.root.join("tools/xenrpc.cfg");
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("read {}", template_path.display()))?;
    let config = paths.service_config(name);
    write_if_changed(&config, &xl_config(&template, name)?)?;
    println!(
        "    xl config: {} (from the repository root: xl create build/{name}.cfg)",
        config.display()
    );

    let hostd_dir = images.join(format!("{name}-hostd"));
    let manifest = generated_manifest(paths, &krate, Generated::Hostd, &profiles)?;
    write_crate(
        &hostd_dir,
        &[
            ("Cargo.toml", manifest),
            ("src/main.rs", hostd_main(&krate)),
        ],
        &lock,
    )?;
    run_stage(
        &format!(
            "build the host server of {name} (cargo build --release, crate {})",
            hostd_dir.display()
        ),
        cargo_build(paths, &hostd_dir).arg("--release"),
    )?;
    let hostd = paths.build.join(format!("{name}-hostd"));
    let built = paths.target.join("release").join(format!("{name}-hostd"));
    let len = install_elf(&built, &hostd)?;
    println!(
        "    host server: {} ({}; run it with --socket PATH)",
        hostd.display(),
        size(len)
    );
    Ok(Built {
        hostd,
        took: start.elapsed(),
    })
}

/// `cargo build` of a generated crate. Cargo runs in the repository root so that the
/// project's `.cargo/config.toml` and `rust-toolchain.toml` apply wherever the target dir
/// (and with it the generated crate) is; the target dir is the project's.
fn cargo_build(paths: &Paths, dir: &Path) -> std::process::Command {
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &paths.target)
        .current_dir(&paths.root);
    cmd
}

/// Copies the ELF file `built` to `dest` (through a new file renamed over it, so a running
/// host server is not written into); its size.
pub fn install_elf(built: &Path, dest: &Path) -> Result<u64> {
    let mut magic = [0u8; 4];
    fs::File::open(built)
        .and_then(|mut file| file.read_exact(&mut magic))
        .with_context(|| format!("read {}", built.display()))?;
    if magic != *b"\x7fELF" {
        bail!("{} is not an ELF file", built.display());
    }
    let fresh = dest.with_extension("new");
    let len = fs::copy(built, &fresh).with_context(|| format!("write {}", fresh.display()))?;
    fs::rename(&fresh, dest).with_context(|| format!("write {}", dest.display()))?;
    Ok(len)
}

/// Reads the crate at `dir` with `cargo metadata` (no dependencies resolved: nothing is
/// fetched).
pub fn read_service_crate(paths: &Paths, dir: &Path) -> Result<ServiceCrate> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no Cargo.toml at {}: --services names the directory of a service crate",
            dir.display()
        );
    }
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.display()))?;
    let json = output_of(
        cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .arg("--manifest-path")
            .arg(&manifest)
            .current_dir(&paths.root),
    )
    .with_context(|| format!("cargo cannot read the crate at {}", dir.display()))?;
    let krate = parse_metadata(&json, &manifest, &paths.root.join("protocol"))?;
    if krate.name == "xenrpc" {
        // build/xenrpc.elf and tools/xenrpc.cfg's domain are the stock image's.
        bail!("a service crate named xenrpc would overwrite the stock image build/xenrpc.elf: rename its package");
    }
    Ok(krate)
}

/// The service crate whose Cargo.toml is `manifest`, from `cargo metadata` output; `protocol`
/// is this checkout's protocol/ (the one xenrpc-proto a build may use).
pub fn parse_metadata(json: &str, manifest: &Path, protocol: &Path) -> Result<ServiceCrate> {
    let meta: Value =
        serde_json::from_str(json).context("cargo metadata printed something other than JSON")?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest))
        .with_context(|| {
            format!(
                "{} has no [package] (a workspace root?): --services names the service crate's own directory",
                manifest.display()
            )
        })?;
    let name = package["name"]
        .as_str()
        .context("cargo metadata gives the package no name")?
        .to_string();
    let targets = package["targets"].as_array().cloned().unwrap_or_default();
    let is_lib = |target: &Value| {
        target["kind"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|kind| kind == "lib" || kind == "rlib")
    };
    let Some(lib) = targets.iter().find(|t| is_lib(t)) else {
        let kinds: Vec<String> = targets
            .iter()
            .map(|t| {
                let kind = t["kind"][0].as_str().unwrap_or("?");
                format!("{kind} {}", t["name"].as_str().unwrap_or("?"))
            })
            .collect();
        bail!(
            "{name} ({}) is not a library (its targets: {}): a service crate is a library \
             (src/lib.rs) whose services function the image calls",
            manifest.display(),
            kinds.join(", ")
        );
    };
    let lib = lib["name"]
        .as_str()
        .context("cargo metadata gives the library no name")?
        .replace('-', "_");
    let services = services_path(&package["metadata"]["xenrpc"])
        .with_context(|| format!("{name} ({})", manifest.display()))?;
    let proto_git = proto_sources(&name, &package["dependencies"], protocol)?;
    Ok(ServiceCrate {
        name,
        lib,
        dir: manifest.parent().unwrap_or(Path::new("/")).to_path_buf(),
        services,
        proto_git,
    })
}

/// The services functions' paths from `[package.metadata.xenrpc]` (`Null` when absent).
fn services_path(table: &Value) -> Result<Vec<String>> {
    let table = match table {
        Value::Null => return Ok(vec![DEFAULT_SERVICES.to_string()]),
        Value::Object(table) => table,
        _ => bail!("[package.metadata.xenrpc] must be a table"),
    };
    if let Some(key) = table.keys().find(|k| *k != "services") {
        bail!("[package.metadata.xenrpc] has no key {key:?}: its one key is services");
    }
    let must_be = "[package.metadata.xenrpc] services must be a string or a list of strings: \
                   the services functions' paths from the crate root, like \"handlers::services\"";
    let paths: Vec<&str> = match table.get("services") {
        None => return Ok(vec![DEFAULT_SERVICES.to_string()]),
        Some(Value::String(path)) => vec![path],
        Some(Value::Array(paths)) if !paths.is_empty() => paths
            .iter()
            .map(|p| p.as_str().with_context(|| must_be.to_string()))
            .collect::<Result<_>>()?,
        Some(_) => bail!("{must_be}"),
    };
    let mut checked = Vec::new();
    for path in paths {
        // A path from the crate root may say so.
        let relative = path.strip_prefix("crate::").unwrap_or(path);
        for segment in relative.split("::") {
            if !is_identifier(segment) {
                bail!(
                    "[package.metadata.xenrpc] services = {path:?} is not a path from the crate \
                     root (like \"handlers::services\"): {segment:?} is not an identifier"
                );
            }
        }
        checked.push(relative.to_string());
    }
    Ok(checked)
}

/// An ASCII Rust identifier that can name an item on a path (no keyword of paths).
fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(word, "_" | "crate" | "self" | "super" | "Self")
}

/// The git repositories of the crate's own xenrpc-proto dependency (deduplicated); an error
/// for a path other than `protocol` or a registry, which would put a second copy of the
/// protocol beside the kernel's.
fn proto_sources(name: &str, dependencies: &Value, protocol: &Path) -> Result<Vec<String>> {
    let mut git = Vec::new();
    let proto = dependencies
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["name"] == "xenrpc-proto" && d["kind"].is_null());
    for dep in proto {
        match (dep["source"].as_str(), dep["path"].as_str()) {
            (Some(source), _) if source.starts_with("git+") => {
                let url = source["git+".len()..]
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if !git.contains(&url) {
                    git.push(url);
                }
            }
            (Some(source), _) => bail!(
                "{name} takes xenrpc-proto from {source}, where the project does not publish \
                 it: depend on it by path (this checkout's {}) or by git",
                protocol.display()
            ),
            (None, Some(path)) if !same_dir(Path::new(path), protocol) => bail!(
                "{name} takes xenrpc-proto from {path}, not from this checkout's {}: the image \
                 would hold two copies of the protocol",
                protocol.display()
            ),
            (None, _) => {}
        }
    }
    Ok(git)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Generated {
    Image,
    Hostd,
}

/// The Cargo.toml of a generated crate: a workspace of its own with path dependencies on the
/// project crate it builds on and on the service crate, and the project's profiles.
fn generated_manifest(
    paths: &Paths,
    krate: &ServiceCrate,
    kind: Generated,
    profiles: &str,
) -> Result<String> {
    let name = &krate.name;
    let (package, bin, what, project_crate, dir) = match kind {
        Generated::Image => (
            format!("{name}-image"),
            name.clone(),
            "its service VM image",
            "xenrpc-kernel",
            "kernel",
        ),
        Generated::Hostd => (
            format!("{name}-hostd"),
            format!("{name}-hostd"),
            "its host server",
            "xenrpc-host",
            "host",
        ),
    };
    let mut text = format!(
        "# Written by `cargo xtask build --services` for {name}: {what}.\n\
         # `cargo xtask build --services` owns this file: change the service crate ({}), not it.\n\
         [package]\n\
         name = \"{package}\"\n\
         version = \"0.0.0\"\n\
         edition = \"2021\"\n\
         publish = false\n\
         \n\
         [[bin]]\n\
         name = \"{bin}\"\n\
         path = \"src/main.rs\"\n\
         test = false\n\
         bench = false\n\
         \n\
         [dependencies]\n\
         {project_crate} = {{ path = {} }}\n\
         {name} = {{ path = {} }}\n",
        krate.dir.display(),
        toml_path(&paths.root.join(dir))?,
        toml_path(&krate.dir)?,
    );
    let protocol = toml_path(&paths.root.join("protocol"))?;
    for url in &krate.proto_git {
        write!(
            text,
            "\n# One protocol in the build: the service crate's xenrpc-proto is this checkout's.\n\
             [patch.{}]\n\
             xenrpc-proto = {{ path = {protocol} }}\n",
            toml_string(url)
        )?;
    }
    text.push_str(
        "\n# A workspace of its own: neither the project's nor the service crate's.\n\
         [workspace]\n\
         \n\
         # The project's profiles (its Cargo.toml): built as the project's own binaries are.\n",
    );
    text.push_str(profiles);
    Ok(text)
}

/// Every `[profile.*]` table of a Cargo.toml, verbatim (comments inside them too).
fn profile_tables(manifest: &str) -> String {
    let mut out = String::new();
    let mut in_profile = false;
    for line in manifest.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_profile = trimmed.starts_with("[profile.");
        }
        if in_profile {
            out.push_str(line);
            out.push('\n');
        }
    }
    let end = out.trim_end().len();
    out.truncate(end);
    out.push('\n');
    out
}

/// The generated image's build script. Link arguments reach only the bins of the package
/// whose build script prints them, so the image repeats the kernel's: it reads them from
/// the kernel's build script (`links` metadata), the one place they are written.
const IMAGE_BUILD_RS: &str = r#"//! Written by `cargo xtask build --services`: links the image as the stock one is linked,
//! with what xenrpc-kernel's build script publishes (see kernel/build.rs).
fn main() {
    let published = |key: &str| {
        std::env::var(format!("DEP_XENRPC_KERNEL_{key}")).unwrap_or_else(|_| {
            panic!("xenrpc-kernel publishes {key} only when built for x86_64-unknown-none")
        })
    };
    let script = published("LINKER_SCRIPT");
    println!("cargo::rerun-if-changed={script}");
    println!("cargo::rustc-link-arg-bins=-T{script}");
    for arg in published("LINK_ARGS").split_whitespace() {
        println!("cargo::rustc-link-arg-bins={arg}");
    }
}
"#;

fn image_main(krate: &ServiceCrate) -> String {
    format!(
        "//! Written by `cargo xtask build --services` for {}: its service VM image.\n\
         #![no_std]\n\
         #![no_main]\n\
         \n\
         xenrpc_kernel::service_vm!({});\n",
        krate.name,
        krate.services_fns().join(", ")
    )
}

fn hostd_main(krate: &ServiceCrate) -> String {
    let name = &krate.name;
    format!(
        "//! Written by `cargo xtask build --services` for {name}: its host server,\n\
         //! `{name}-hostd --socket PATH` (the options of xenrpc-hostd: see --help).\n\
         \n\
         fn main() {{\n\
         \x20   let args: Vec<String> = std::env::args().skip(1).collect();\n\
         \x20   if let Err(e) = xenrpc_host::hostd::main_with_services(&args, {}) {{\n\
         \x20       eprintln!(\"{name}-hostd: {{e}}\");\n\
         \x20       std::process::exit(1);\n\
         \x20   }}\n\
         }}\n",
        hostd_services(krate)
    )
}

/// What the host server serves: the one function, or a tuple of the sets of several (the host
/// has no protection domains).
fn hostd_services(krate: &ServiceCrate) -> String {
    match krate.services_fns().as_slice() {
        [one] => one.clone(),
        several => {
            let calls: Vec<String> = several.iter().map(|f| format!("{f}(env)")).collect();
            format!("|env| ({})", calls.join(", "))
        }
    }
}

/// The service VM's xl config for the image `build/<name>.elf`: tools/xenrpc.cfg (`template`)
/// with its own header, domain name and kernel.
fn xl_config(template: &str, name: &str) -> Result<String> {
    let mut out = format!(
        "# xl domain configuration for the {name} service VM (a PV guest), written by\n\
         # `cargo xtask build --services` from tools/xenrpc.cfg. From the repository root:\n\
         #     xl create build/{name}.cfg          (add -c to attach to its console)\n\
         # Stop it with `xl shutdown -w {name}`.\n"
    );
    let (mut named, mut kernel) = (false, false);
    // The template's own header names its own image: replaced by the one above.
    for line in template.lines().skip_while(|l| l.starts_with('#')) {
        match line.split('=').next().unwrap_or_default().trim() {
            "name" => {
                named = true;
                writeln!(out, "name = \"{name}\"")?;
            }
            "kernel" => {
                kernel = true;
                writeln!(out, "kernel = \"build/{name}.elf\"")?;
            }
            _ => writeln!(out, "{line}")?,
        }
    }
    if !named || !kernel {
        bail!("tools/xenrpc.cfg has no `name =` or no `kernel =` line to write {name}.cfg from");
    }
    Ok(out)
}

/// Writes the generated crate's files (only those whose text changed) and seeds its lock.
fn write_crate(dir: &Path, files: &[(&str, String)], project_lock: &Path) -> Result<()> {
    for (name, text) in files {
        write_if_changed(&dir.join(name), text)?;
    }
    seed_lock(project_lock, &dir.join("Cargo.lock"))
}

/// Starts a generated crate's Cargo.lock as a copy of the project's, so it builds with the
/// project's versions (cargo adds the crate's own packages and drops the rest); again when
/// the project's lock is newer.
fn seed_lock(project: &Path, ours: &Path) -> Result<()> {
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified());
    let stale = match (modified(project), modified(ours)) {
        (Err(_), _) => false, // no project lock: cargo resolves on its own
        (Ok(_), Err(_)) => true,
        (Ok(project), Ok(ours)) => project > ours,
    };
    if stale {
        fs::copy(project, ours).with_context(|| format!("write {}", ours.display()))?;
    }
    Ok(())
}

/// Writes `text` to `path` unless it already holds exactly that (an unchanged file keeps its
/// time stamp, so cargo does not rebuild for it); whether it wrote.
fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(true)
}

fn toml_path(path: &Path) -> Result<String> {
    let text = path.to_str().with_context(|| {
        format!(
            "the path {} is not UTF-8: a Cargo.toml cannot name it",
            path.display()
        )
    })?;
    Ok(toml_string(text))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANIFEST: &str = "/svc/Cargo.toml";

    fn paths() -> Paths {
        Paths::discover().unwrap()
    }

    fn lib_target() -> Value {
        json!([{ "kind": ["lib"], "name": "my_svc" }])
    }

    /// `cargo metadata` output for one package at [`MANIFEST`].
    fn metadata(targets: Value, dependencies: Value, xenrpc: Value) -> String {
        json!({ "packages": [{
            "name": "my-svc",
            "manifest_path": MANIFEST,
            "targets": targets,
            "dependencies": dependencies,
            "metadata": if xenrpc.is_null() { Value::Null } else { json!({ "xenrpc": xenrpc }) },
        }]})
        .to_string()
    }

    fn parse(json: &str) -> Result<ServiceCrate> {
        parse_metadata(json, Path::new(MANIFEST), &paths().root.join("protocol"))
    }

    fn error(json: &str) -> String {
        format!("{:#}", parse(json).unwrap_err())
    }

    fn counter() -> ServiceCrate {
        let paths = paths();
        read_service_crate(&paths, &paths.root.join("examples/counter")).unwrap()
    }

    #[test]
    fn reads_the_example_crate_with_cargo_metadata() {
        let krate = counter();
        let dir = paths().root.join("examples/counter");
        assert_eq!(krate.name, "counter-service");
        assert_eq!(krate.lib, "counter_service");
        assert_eq!(krate.dir, dir);
        assert_eq!(krate.services_fns(), ["counter_service::services"]);
        assert!(krate.proto_git.is_empty());
    }

    #[test]
    fn a_directory_without_cargo_toml_is_named() {
        let paths = paths();
        let e = read_service_crate(&paths, &paths.root.join("docs")).unwrap_err();
        assert!(
            e.to_string().starts_with("no Cargo.toml at ")
                && e.to_string()
                    .ends_with("/docs: --services names the directory of a service crate"),
            "{e}"
        );
    }

    #[test]
    fn metadata_names_the_services_function() {
        let json = metadata(lib_target(), json!([]), json!({ "services": "api::serve" }));
        assert_eq!(parse(&json).unwrap().services_fns(), ["my_svc::api::serve"]);
        let json = metadata(
            lib_target(),
            json!([]),
            json!({ "services": "crate::serve" }),
        );
        assert_eq!(parse(&json).unwrap().services_fns(), ["my_svc::serve"]);
        let json = metadata(lib_target(), json!([]), json!({}));
        assert_eq!(parse(&json).unwrap().services_fns(), ["my_svc::services"]);
        let json = metadata(lib_target(), json!([]), Value::Null);
        assert_eq!(parse(&json).unwrap().services_fns(), ["my_svc::services"]);
        let json = metadata(
            lib_target(),
            json!([]),
            json!({ "services": ["serve", "crate::admin::serve"] }),
        );
        let krate = parse(&json).unwrap();
        assert_eq!(
            krate.services_fns(),
            ["my_svc::serve", "my_svc::admin::serve"]
        );
        assert!(image_main(&krate)
            .ends_with("xenrpc_kernel::service_vm!(my_svc::serve, my_svc::admin::serve);\n"));
        assert_eq!(
            hostd_services(&krate),
            "|env| (my_svc::serve(env), my_svc::admin::serve(env))"
        );
    }

    #[test]
    fn a_malformed_services_path_is_refused() {
        for (path, segment) in [
            ("api::", "\"\""),
            ("::api", "\"\""),
            ("api::serve now", "\"serve now\""),
            ("self::serve", "\"self\""),
            ("1serve", "\"1serve\""),
            ("", "\"\""),
        ] {
            let json = metadata(lib_target(), json!([]), json!({ "services": path }));
            let e = error(&json);
            assert!(
                e.ends_with(&format!("is not a path from the crate root (like \"handlers::services\"): {segment} is not an identifier")),
                "{path:?}: {e}"
            );
            assert!(e.starts_with("my-svc (/svc/Cargo.toml): "), "{e}");
        }
        let json = metadata(lib_target(), json!([]), json!({ "services": 3 }));
        assert!(error(&json).contains("services must be a string or a list of strings"));
        for bad in [json!([]), json!(["serve", 3])] {
            let json = metadata(lib_target(), json!([]), json!({ "services": bad }));
            assert!(error(&json).contains("services must be a string or a list"));
        }
        let json = metadata(lib_target(), json!([]), json!({ "service": "serve" }));
        assert!(error(&json).ends_with(
            "[package.metadata.xenrpc] has no key \"service\": its one key is services"
        ));
        let json = metadata(lib_target(), json!([]), json!("serve"));
        assert!(error(&json).ends_with("[package.metadata.xenrpc] must be a table"));
    }

    #[test]
    fn a_crate_that_is_not_a_library_is_refused() {
        let json = metadata(
            json!([{ "kind": ["bin"], "name": "my-svc" }]),
            json!([]),
            Value::Null,
        );
        assert_eq!(
            error(&json),
            "my-svc (/svc/Cargo.toml) is not a library (its targets: bin my-svc): a service crate \
             is a library (src/lib.rs) whose services function the image calls"
        );
    }

    #[test]
    fn a_manifest_without_its_package_is_refused() {
        let json = json!({ "packages": [] }).to_string();
        assert!(error(&json).starts_with("/svc/Cargo.toml has no [package] (a workspace root?)"));
    }

    #[test]
    fn the_protocol_must_be_this_checkouts() {
        let protocol = paths().root.join("protocol");
        let dep = |source: Value, path: Value| json!([{ "name": "xenrpc-proto", "kind": null, "source": source, "path": path }]);
        let here = dep(Value::Null, json!(protocol.to_str().unwrap()));
        assert!(parse(&metadata(lib_target(), here, Value::Null))
            .unwrap()
            .proto_git
            .is_empty());

        let git = dep(
            json!("git+https://example.org/xenrpc.git?branch=main"),
            Value::Null,
        );
        let krate = parse(&metadata(lib_target(), git, Value::Null)).unwrap();
        assert_eq!(krate.proto_git, ["https://example.org/xenrpc.git"]);

        let elsewhere = dep(Value::Null, json!("/elsewhere/protocol"));
        let e = error(&metadata(lib_target(), elsewhere, Value::Null));
        assert!(
            e.starts_with(
                "my-svc takes xenrpc-proto from /elsewhere/protocol, not from this checkout's "
            ),
            "{e}"
        );

        let registry = dep(
            json!("registry+https://github.com/rust-lang/crates.io-index"),
            Value::Null,
        );
        let e = error(&metadata(lib_target(), registry, Value::Null));
        assert!(e.contains("where the project does not publish it"), "{e}");

        // A dev-dependency does not go into the image.
        let dev = json!([{ "name": "xenrpc-proto", "kind": "dev", "source": null, "path": "/elsewhere" }]);
        assert!(parse(&metadata(lib_target(), dev, Value::Null)).is_ok());
    }

    #[test]
    fn generated_sources_call_the_services_function() {
        let krate = counter();
        assert_eq!(
            image_main(&krate),
            "//! Written by `cargo xtask build --services` for counter-service: its service VM image.\n\
             #![no_std]\n\
             #![no_main]\n\
             \n\
             xenrpc_kernel::service_vm!(counter_service::services);\n"
        );
        let main = hostd_main(&krate);
        assert!(
            main.contains(
                "    if let Err(e) = xenrpc_host::hostd::main_with_services(&args, counter_service::services) {\n\
                 \x20       eprintln!(\"counter-service-hostd: {e}\");\n\
                 \x20       std::process::exit(1);\n"
            ),
            "{main}"
        );
    }

    #[test]
    fn generated_manifests_are_crates_of_their_own_that_cargo_reads() {
        let paths = paths();
        let mut krate = counter();
        krate.proto_git = vec!["https://example.org/xenrpc.git".into()];
        let profiles = profile_tables(&fs::read_to_string(paths.root.join("Cargo.toml")).unwrap());
        let dir = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        for (kind, package, bin, dep) in [
            (
                Generated::Image,
                "counter-service-image",
                "counter-service",
                "kernel",
            ),
            (
                Generated::Hostd,
                "counter-service-hostd",
                "counter-service-hostd",
                "host",
            ),
        ] {
            let text = generated_manifest(&paths, &krate, kind, &profiles).unwrap();
            let dep_line = format!("= {{ path = \"{}\" }}\n", paths.root.join(dep).display());
            assert!(text.contains(&dep_line), "{text}");
            assert!(
                text.contains(
                    "\n[patch.\"https://example.org/xenrpc.git\"]\nxenrpc-proto = { path = "
                ),
                "{text}"
            );
            assert!(
                text.contains("\n[workspace]\n") && text.contains("\n[profile.kernel]\n"),
                "{text}"
            );

            let crate_dir = dir.join(package);
            let manifest = crate_dir.join("Cargo.toml");
            write_if_changed(&manifest, &text).unwrap();
            write_if_changed(&crate_dir.join("src/main.rs"), "").unwrap();
            let json = output_of(
                cargo()
                    .args([
                        "metadata",
                        "--format-version",
                        "1",
                        "--no-deps",
                        "--offline",
                    ])
                    .arg("--manifest-path")
                    .arg(&manifest),
            )
            .unwrap();
            let meta: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(meta["workspace_root"], crate_dir.to_str().unwrap());
            let package_meta = &meta["packages"][0];
            assert_eq!(package_meta["name"], package);
            assert_eq!(package_meta["targets"][0]["name"], bin);
            assert_eq!(package_meta["targets"][0]["kind"][0], "bin");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn profiles_are_copied_from_the_projects_manifest() {
        let manifest = "[workspace]\nmembers = []\n\n[profile.release]\ndebug = 1\n\n# Small.\n\
                        [profile.kernel]\ninherits = \"release\"\n\n[patch.crates-io]\nx = \"1\"\n";
        assert_eq!(
            profile_tables(manifest),
            "[profile.release]\ndebug = 1\n\n# Small.\n[profile.kernel]\ninherits = \"release\"\n"
        );
        let real = profile_tables(&fs::read_to_string(paths().root.join("Cargo.toml")).unwrap());
        assert!(
            real.contains("[profile.kernel]\ninherits = \"release\"\n"),
            "{real}"
        );
    }

    #[test]
    fn the_xl_config_boots_the_new_image_as_its_own_domain() {
        let template = fs::read_to_string(paths().root.join("tools/xenrpc.cfg")).unwrap();
        let config = xl_config(&template, "counter-service").unwrap();
        let lines: Vec<&str> = config.lines().collect();
        assert!(lines.contains(&"name = \"counter-service\""), "{config}");
        assert!(
            lines.contains(&"kernel = \"build/counter-service.elf\""),
            "{config}"
        );
        assert!(lines.contains(&"memory = 16"), "{config}");
        assert!(
            !config.contains("xenrpc.elf") && !config.contains("\"xenrpc\""),
            "{config}"
        );
        let e = xl_config("name = \"xenrpc\"\n", "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tools/xenrpc.cfg has no `name =` or no `kernel =` line to write x.cfg from"
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("/a b/c"), "\"/a b/c\"");
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    #[test]
    fn unchanged_files_are_not_rewritten_and_the_lock_is_seeded_once() {
        let dir = std::env::temp_dir().join(format!("xtask-write-{}", std::process::id()));
        let file = dir.join("sub/file");
        assert!(write_if_changed(&file, "one").unwrap());
        assert!(!write_if_changed(&file, "one").unwrap());
        assert!(write_if_changed(&file, "two").unwrap());
        assert_eq!(fs::read_to_string(&file).unwrap(), "two");

        let (project, ours) = (dir.join("project.lock"), dir.join("ours.lock"));
        fs::write(&project, "project").unwrap();
        seed_lock(&project, &ours).unwrap();
        assert_eq!(fs::read_to_string(&ours).unwrap(), "project");
        // Cargo's own changes to the seeded lock are kept until the project's lock changes.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&ours, "cargo's").unwrap();
        seed_lock(&project, &ours).unwrap();
        assert_eq!(fs::read_to_string(&ours).unwrap(), "cargo's");
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&project, "newer").unwrap();
        seed_lock(&project, &ours).unwrap();
        assert_eq!(fs::read_to_string(&ours).unwrap(), "newer");
        fs::remove_dir_all(&dir).unwrap();
    }
}
