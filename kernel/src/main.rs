//! The stock service VM image: the built-in services (echo, arith, kv), each in a protection
//! domain of its own, and introspection (the kernel's).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
xenrpc_kernel::service_vm!(
    xenrpc_kernel::proto::services::echo_service,
    xenrpc_kernel::proto::services::arith_service,
    xenrpc_kernel::proto::services::kv_service,
);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("xenrpc-kernel is a Xen PV guest image: build it with `cargo xtask build`");
    std::process::exit(2);
}
