//! Builds the SunRPC peer: `rpcgen` turns `sunrpc/echo.x` into C in `OUT_DIR` (header, XDR
//! routines, client stubs, server dispatcher; `-M`, the re-entrant forms, whose results go to
//! buffers the caller gives, so the shim frees each one), compiled with `sunrpc/shim.c`
//! against libtirpc (found by `pkg-config`, [`super::pkg_config`]) into one static library.
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
    let Some(tirpc) = super::pkg_config("sunrpc", "libtirpc", "tirpc", SETUP) else {
        return;
    };

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

    let mut shim = tirpc.c_build(src.join("shim.c"));
    shim.objects(objects).include(&out);
    // One archive for the stubs and the shim, which call each other.
    shim.compile("xenrpc_sunrpc");

    tirpc.link();
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
