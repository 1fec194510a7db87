//! The gRPC peer's stubs: `tonic-prost-build` compiles `proto/echo.proto` (client and server)
//! into `OUT_DIR`. It runs `protoc`, found as `prost-build` finds it (`PROTOC`, else `protoc`
//! on `PATH`); without one the peer is built as unavailable rather than failing the build.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Builds the gRPC stubs, or marks the peer missing when `protoc` cannot run.
pub fn build() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("proto");
    let proto = proto_dir.join("echo.proto");
    println!("cargo::rerun-if-changed={}", proto.display());
    println!("cargo::rerun-if-changed=build/grpc.rs");
    println!("cargo::rerun-if-env-changed=PROTOC");

    let protoc = env::var_os("PROTOC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("protoc"));
    let runs = Command::new(&protoc)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        super::missing(
            "grpc",
            "protoc not found (Debian package protobuf-compiler; tools/setup.sh installs it)",
        );
        return;
    }

    // `data` as `bytes::Bytes`: the server answers the request's buffer itself, no copy.
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".xenrpc.peer.Bytes.data")
        .emit_rerun_if_changed(false)
        .compile_protos(&[proto], &[proto_dir])
    {
        // protoc runs, so this is a fault of the definition itself: worth failing the build.
        panic!("the gRPC peer's proto/echo.proto does not compile: {e}");
    }
}
