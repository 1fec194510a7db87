//! Builds the SunRPC peer: `rpcgen` turns `sunrpc/echo.x` into C in `OUT_DIR` (header, XDR
//! routines, client stubs, server dispatcher; `-M`, the re-entrant forms, whose results go to
//! buffers the caller gives, so the shim frees each one), compiled with `sunrpc/shim.c`
//! against libtirpc (found by `pkg-config`) into one static library.
//!
//! `RPCGEN` and `PKG_CONFIG` name other programs than `rpcgen` and `pkg-config`.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str =
    "tools/setup.sh installs them (Debian packages rpcsvc-proto, libtirpc-dev and pkg-config)";

/// The C files rpcgen writes: (its flag, the file).
const GENERATED: [(&str, &str); 4] = [
    ("-h", "echo.h"),
    ("-c", "echo_xdr.c"),
    ("-l", "echo_clnt.c"),
    ("-m", "echo_svc.c"),
];

pub fn build() {
    for file in ["sunrpc/echo.x", "sunrpc/shim.c", "build/sunrpc.rs"] {
        println!("cargo::rerun-if-changed={file}");
    }
    for var in ["RPCGEN", "PKG_CONFIG", "PKG_CONFIG_PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let rpcgen = env::var_os("RPCGEN").unwrap_or_else(|| "rpcgen".into());
    if !runs(&rpcgen, "--version") {
        super::missing(
            "sunrpc",
            &format!(
                "`{}` (rpcgen) could not be run; {SETUP}",
                rpcgen.to_string_lossy()
            ),
        );
        return;
    }
    let Some(tirpc) = libtirpc() else { return };

    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src = manifest.join("sunrpc");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (flag, file) in GENERATED {
        generate(&rpcgen, &src, flag, &out.join(file));
    }

    // rpcgen's C is not ours to fix: its warnings (unused variables, `register`) are noise.
    let mut generated = cc::Build::new();
    generated
        .files(GENERATED[1..].iter().map(|(_, file)| out.join(file)))
        .include(&out)
        .includes(&tirpc.include)
        .opt_level(2)
        .warnings(false)
        .flag("-w");
    for flag in &tirpc.cflags {
        generated.flag(flag);
    }
    let objects = generated.compile_intermediates();

    let mut shim = cc::Build::new();
    shim.file(src.join("shim.c"))
        .objects(objects)
        .include(&out)
        .includes(&tirpc.include)
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true);
    for flag in &tirpc.cflags {
        shim.flag(flag);
    }
    // One archive for the stubs and the shim, which call each other.
    shim.compile("xenrpc_sunrpc");

    for dir in &tirpc.link_search {
        println!("cargo::rustc-link-search=native={dir}");
    }
    for lib in &tirpc.libs {
        println!("cargo::rustc-link-lib={lib}");
    }
}

/// What `pkg-config --cflags --libs libtirpc` says.
struct Tirpc {
    include: Vec<PathBuf>,
    cflags: Vec<String>,
    link_search: Vec<String>,
    libs: Vec<String>,
}

/// Finds libtirpc, or marks the peer missing and returns `None`.
fn libtirpc() -> Option<Tirpc> {
    let pkg_config = env::var_os("PKG_CONFIG").unwrap_or_else(|| "pkg-config".into());
    let output = match Command::new(&pkg_config)
        .args(["--cflags", "--libs", "libtirpc"])
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            super::missing(
                "sunrpc",
                &format!(
                    "`{}` (pkg-config, to find libtirpc) could not be run ({e}); {SETUP}",
                    pkg_config.to_string_lossy()
                ),
            );
            return None;
        }
    };
    if !output.status.success() {
        super::missing(
            "sunrpc",
            &format!(
                "pkg-config did not find libtirpc ({}); {SETUP}",
                // One line: the reason becomes a cargo directive.
                String::from_utf8_lossy(&output.stderr)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        return None;
    }
    let mut tirpc = Tirpc {
        include: Vec::new(),
        cflags: Vec::new(),
        link_search: Vec::new(),
        libs: Vec::new(),
    };
    for word in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if let Some(dir) = word.strip_prefix("-I") {
            tirpc.include.push(dir.into());
        } else if let Some(dir) = word.strip_prefix("-L") {
            tirpc.link_search.push(dir.to_owned());
        } else if let Some(lib) = word.strip_prefix("-l") {
            tirpc.libs.push(lib.to_owned());
        } else {
            tirpc.cflags.push(word.to_owned());
        }
    }
    if !tirpc.libs.iter().any(|lib| lib == "tirpc") {
        tirpc.libs.push("tirpc".to_owned());
    }
    Some(tirpc)
}

/// Whether `program arg` runs and succeeds.
fn runs(program: &OsString, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `rpcgen -M <flag> -o <out> echo.x` in `src`: with the `.x` named relatively, the
/// generated C includes `"echo.h"`, found beside it in `OUT_DIR`. rpcgen refuses to
/// overwrite a file, so the last build's output goes first.
fn generate(rpcgen: &OsString, src: &Path, flag: &str, out: &Path) {
    match std::fs::remove_file(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{} could not be removed: {e}", out.display()),
    }
    let output = Command::new(rpcgen)
        .current_dir(src)
        .args(["-M", flag, "-o"])
        .arg(out)
        .arg("echo.x")
        .output()
        .unwrap_or_else(|e| panic!("rpcgen {flag} could not be run: {e}"));
    assert!(
        output.status.success(),
        "rpcgen {flag} failed on sunrpc/echo.x ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
