//! Builds the peers from their definitions: SunRPC's stubs by `rpcgen` from `sunrpc/echo.x`
//! (compiled against libtirpc), gRPC's by `tonic-prost-build` from `proto/echo.proto` (needs
//! `protoc`). A peer whose tools are missing is built as unavailable (`cfg(<peer>_missing)`)
//! with the reason in `XENRPC_<PEER>_MISSING`, so the benchmarks say which and why instead of
//! failing to build.

mod grpc;
mod sunrpc;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sunrpc_missing)");
    println!("cargo::rustc-check-cfg=cfg(grpc_missing)");
    sunrpc::build();
    grpc::build();
}

/// Marks `peer` (`sunrpc`, `grpc`) unavailable for `why`.
fn missing(peer: &str, why: &str) {
    println!("cargo::warning={peer} peer not built: {why}");
    println!("cargo::rustc-cfg={peer}_missing");
    println!(
        "cargo::rustc-env=XENRPC_{}_MISSING={why}",
        peer.to_ascii_uppercase()
    );
}
