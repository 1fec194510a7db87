//! Arbitrary bytes as a connection's ring and data regions, plus a hostile client's script,
//! fed to the server (see `xenrpc_proto::fuzzing::run_server_case`, which panics on a finding).
//! The same harness runs on stable as `cargo test -p xenrpc-proto --test fuzz_replay`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xenrpc_proto::fuzzing::run_server_case(data);
});
