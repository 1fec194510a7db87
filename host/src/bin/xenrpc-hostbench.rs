//! Benchmark of the host transport (floors only for now).

use std::process::Command;
use std::time::Duration;

use xenrpc_host::floors::{run_floor_peer, FloorDriver};
use xenrpc_host::process::{pin_to_cpu, spawn_with_control_socket, take_inherited_socket};
use xenrpc_host::stats::percentile;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--role-floor-peer") {
        pin_to_cpu(1);
        let fd = take_inherited_socket(args[2].parse().expect("fd number"))?;
        return run_floor_peer(fd);
    }
    pin_to_cpu(0);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--role-floor-peer");
    let (child, control) = spawn_with_control_socket(cmd)?;
    let driver = FloorDriver::new(control);
    let t = std::time::Instant::now();
    let mut s = driver.spin_pingpong(200_000)?;
    println!("mean {:?}", t.elapsed() / 200_000);
    let t = std::time::Instant::now();
    for _ in 0..1_000_000 {
        std::hint::black_box(std::time::Instant::now());
    }
    println!("now() cost {:?}", t.elapsed() / 1_000_000);
    println!(
        "spin p50 {:?} p99 {:?}",
        percentile(&mut s, 50.0),
        percentile(&mut s, 99.0)
    );
    let mut s = driver.eventfd_roundtrip(5_000)?;
    println!(
        "efd p50 {:?} p99 {:?}",
        percentile(&mut s, 50.0),
        percentile(&mut s, 99.0)
    );
    for size in [0usize, 64, 4096, 65536, 1 << 20] {
        let mut s = driver.uds_echo(2_000, size)?;
        println!(
            "uds {size} p50 {:?} p99 {:?}",
            percentile(&mut s, 50.0),
            percentile(&mut s, 99.0)
        );
    }
    drop(driver);
    child.wait_or_kill(Duration::from_secs(5))?;
    Ok(())
}
