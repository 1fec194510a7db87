//! Builds the libxenvchan peer's shim, `vchan/shim.c`, against libxenvchan (found by
//! `pkg-config`: its header comes with Debian's libxen-dev), and links libxenvchan. Without
//! the header or the library the peer is built as unavailable.

use std::env;
use std::path::PathBuf;

const SETUP: &str = "tools/setup.sh installs it (Debian packages libxen-dev and pkg-config)";

pub fn build() {
    for file in ["vchan/shim.c", "build/vchan.rs"] {
        println!("cargo::rerun-if-changed={file}");
    }
    for var in ["PKG_CONFIG", "PKG_CONFIG_PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let Some(vchan) = super::pkg_config("vchan", "xenvchan", "xenvchan", SETUP) else {
        return;
    };
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let shim = manifest.join("vchan").join("shim.c");
    // A header that does not compile (libxen-dev absent while its .pc is there) is a missing
    // peer, not a broken build.
    if let Err(e) = vchan.c_build(shim).try_compile("xenrpc_vchan") {
        let why = e.to_string();
        super::missing(
            "vchan",
            &format!(
                "vchan/shim.c does not compile against libxenvchan.h ({}); {SETUP}",
                why.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        );
        return;
    }
    vchan.link();
}
