//! The stock service VM image: the built-in services (echo, arith, kv, introspection).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
xenrpc_kernel::service_vm!(xenrpc_kernel::proto::services::builtins);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("xenrpc-kernel is a Xen PV guest image: build it with `cargo xtask build`");
    std::process::exit(2);
}
