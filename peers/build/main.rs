//! Builds the peers from their definitions: SunRPC's stubs by `rpcgen` from `sunrpc/echo.x`
//! (compiled against libtirpc), gRPC's by `tonic-prost-build` from `proto/echo.proto` (needs
//! `protoc`), and the libxenvchan peer's shim `vchan/shim.c` against libxenvchan. A peer whose
//! tools are missing is built as unavailable (`cfg(<peer>_missing)`) with the reason in
//! `XENRPC_<PEER>_MISSING`, so the benchmarks say which and why instead of failing to build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

mod grpc;
mod sunrpc;
mod vchan;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sunrpc_missing)");
    println!("cargo::rustc-check-cfg=cfg(grpc_missing)");
    println!("cargo::rustc-check-cfg=cfg(vchan_missing)");
    sunrpc::build();
    grpc::build();
    vchan::build();
}

/// Marks `peer` (`sunrpc`, `grpc`, `vchan`) unavailable for `why`.
fn missing(peer: &str, why: &str) {
    println!("cargo::warning={peer} peer not built: {why}");
    println!("cargo::rustc-cfg={peer}_missing");
    println!(
        "cargo::rustc-env=XENRPC_{}_MISSING={why}",
        peer.to_ascii_uppercase()
    );
}

/// What `pkg-config --cflags --libs <library>` says.
struct PkgConfig {
    include: Vec<PathBuf>,
    cflags: Vec<String>,
    link_search: Vec<String>,
    libs: Vec<String>,
}

impl PkgConfig {
    /// Tells cargo to link what pkg-config named.
    fn link(&self) {
        for dir in &self.link_search {
            println!("cargo::rustc-link-search=native={dir}");
        }
        for lib in &self.libs {
            println!("cargo::rustc-link-lib={lib}");
        }
    }

    /// A C build of `file` with the library's include directories and flags, optimised and
    /// with every warning on.
    fn c_build(&self, file: PathBuf) -> cc::Build {
        let mut build = cc::Build::new();
        build
            .file(file)
            .includes(&self.include)
            .opt_level(2)
            .warnings(true)
            .extra_warnings(true);
        for flag in &self.cflags {
            build.flag(flag);
        }
        build
    }
}

/// Finds `library` with pkg-config (`PKG_CONFIG` names another program), to link with `lib`
/// (`-l<lib>`, whether or not pkg-config names it), or marks `peer` missing, saying how to
/// install it (`setup`), and returns `None`.
fn pkg_config(peer: &str, library: &str, lib: &str, setup: &str) -> Option<PkgConfig> {
    let pkg_config = env::var_os("PKG_CONFIG").unwrap_or_else(|| "pkg-config".into());
    let output = match Command::new(&pkg_config)
        .args(["--cflags", "--libs", library])
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            missing(
                peer,
                &format!(
                    "`{}` (pkg-config, to find {library}) could not be run ({e}); {setup}",
                    pkg_config.to_string_lossy()
                ),
            );
            return None;
        }
    };
    if !output.status.success() {
        missing(
            peer,
            &format!(
                "pkg-config did not find {library} ({}); {setup}",
                // One line: the reason becomes a cargo directive.
                String::from_utf8_lossy(&output.stderr)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        return None;
    }
    let mut found = PkgConfig {
        include: Vec::new(),
        cflags: Vec::new(),
        link_search: Vec::new(),
        libs: Vec::new(),
    };
    for word in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if let Some(dir) = word.strip_prefix("-I") {
            found.include.push(dir.into());
        } else if let Some(dir) = word.strip_prefix("-L") {
            found.link_search.push(dir.to_owned());
        } else if let Some(lib) = word.strip_prefix("-l") {
            found.libs.push(lib.to_owned());
        } else {
            found.cflags.push(word.to_owned());
        }
    }
    if !found.libs.iter().any(|l| l == lib) {
        found.libs.push(lib.to_owned());
    }
    Some(found)
}
