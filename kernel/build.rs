//! Links the service VM with the workspace's linker script (only for the bare-metal target;
//! on the host the crate is an empty program), and publishes how, so images built from other
//! crates (`cargo xtask build --services`) link exactly like the stock one.
fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&manifest).join("../linker.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo::rustc-link-arg-bins=-T{}", script.display());
        for arg in LINK_ARGS {
            println!("cargo::rustc-link-arg-bins={arg}");
        }
        // Dependents' build scripts read these as DEP_XENRPC_KERNEL_LINKER_SCRIPT and
        // DEP_XENRPC_KERNEL_LINK_ARGS (`links` in Cargo.toml): link args reach no other bins.
        println!("cargo::metadata=linker_script={}", script.display());
        println!("cargo::metadata=link_args={}", LINK_ARGS.join(" "));
    }
}

/// The link arguments besides the script; none contains a space (they are published
/// space-separated).
const LINK_ARGS: &[&str] = &["-zmax-page-size=4096", "--gc-sections"];
