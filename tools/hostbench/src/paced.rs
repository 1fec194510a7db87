//! CPU per call when calls come seldom (1,000 null calls a second, as to an idle service), for
//! xenrpc (spin and blocking), each peer, and two floors: the pacing alone (the harness's own
//! timed sleep, which every row pays) and a raw eventfd round trip at the same pace (two
//! sleeps and two wake-ups: what any design pays whose both ends sleep between calls).
//!
//! Measured in two placements, each its own section:
//! - **two CPUs**: client and server pinned to CPUs of their own, as in every other section.
//!   A wake-up then crosses CPUs: an inter-processor interrupt and an idle CPU's wake, which
//!   on a virtual machine the hypervisor delivers, often at more cost than all the rest of the
//!   call.
//! - **one CPU**: every server's threads moved onto the client's CPU for the section, as an
//!   idle service that shares a core with its clients runs. A wake-up is then a context
//!   switch, and spinning for an answer only delays it (an adaptive spin learns to stop).
//!
//! Every server goes back to its own CPU afterwards.

use std::io;
use std::time::{Duration, Instant};

use xenrpc_host::client::Client;
use xenrpc_host::floors::FloorDriver;
use xenrpc_host::process::pin_process_to_cpu;
use xenrpc_peers::PeerClient;

use crate::peers::{self, Peer, PeerServer};
use crate::{own_and_server_cpu, ping, Row, CLIENT_CPU, SERVER_CPU};

/// Calls a second in the paced rows.
pub const PACED_RATE: u32 = 1_000;

/// Unpaced calls before a paced row's.
pub const PACED_WARM_UP: u64 = 3;

/// What a paced row costs without any call: the harness's own timed sleep.
pub const PACING_ALONE: &str = "pacing alone (no call)";

/// Where the servers run while the paced rows are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Each server on its own CPU, the client on another.
    TwoCpus,
    /// The servers on the client's CPU.
    OneCpu,
}

impl Placement {
    /// Both, in the order they are measured.
    pub const ALL: [Placement; 2] = [Placement::TwoCpus, Placement::OneCpu];

    /// The section its rows are printed under.
    pub const fn section(self) -> &'static str {
        match self {
            Placement::TwoCpus => "paced: 1,000 null calls/s, two CPUs",
            Placement::OneCpu => "paced: 1,000 null calls/s, one CPU",
        }
    }

    /// A short name for the aims.
    pub const fn label(self) -> &'static str {
        match self {
            Placement::TwoCpus => "two CPUs",
            Placement::OneCpu => "one CPU",
        }
    }

    const fn server_cpu(self) -> usize {
        match self {
            Placement::TwoCpus => SERVER_CPU,
            Placement::OneCpu => CLIENT_CPU,
        }
    }
}

/// What the paced rows call: the two xenrpc clients (with their servers' pids), the peers,
/// and the floor peer.
pub struct Subjects<'a> {
    pub xenrpc: [(&'static str, &'a mut Client, u32); 2],
    pub peers: &'a mut [(PeerServer, Box<dyn PeerClient + Send>)],
    pub floor: &'a FloorDriver,
    pub floor_pid: u32,
}

impl Subjects<'_> {
    fn server_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.xenrpc.iter().map(|&(_, _, pid)| pid).collect();
        pids.extend(self.peers.iter().map(|(server, _)| server.pid()));
        pids.push(self.floor_pid);
        pids
    }

    /// Moves every server process to `cpu`; an error names the one that would not move.
    fn move_servers(&self, cpu: usize) -> io::Result<()> {
        for pid in self.server_pids() {
            if !pin_process_to_cpu(pid, cpu) {
                return Err(io::Error::other(format!(
                    "could not move server process {pid} to CPU {cpu}"
                )));
            }
        }
        Ok(())
    }
}

/// The paced rows of every placement (only the first when the processes are not pinned: the
/// scheduler then places them as it likes, and the section says so by its rows alone).
pub fn rows(paced_calls: u64, pinned: bool, subjects: &mut Subjects<'_>) -> io::Result<Vec<Row>> {
    let placements: &[Placement] = if pinned {
        &Placement::ALL
    } else {
        &Placement::ALL[..1]
    };
    let mut rows = Vec::new();
    for &placement in placements {
        println!(
            "paced calls ({PACED_RATE} a second, {}) ...",
            placement.label()
        );
        if pinned {
            subjects.move_servers(placement.server_cpu())?;
        }
        let measured = measure(paced_calls, subjects);
        if pinned {
            subjects.move_servers(SERVER_CPU)?;
        }
        rows.extend(section_rows(placement.section(), &measured?));
    }
    Ok(rows)
}

/// CPU per paced call of every subject and floor, by name.
fn measure(paced_calls: u64, subjects: &mut Subjects<'_>) -> io::Result<Vec<(&'static str, f64)>> {
    let mut paced = Vec::new();
    for (name, client, pid) in &mut subjects.xenrpc {
        let cpu = paced_cpu(paced_calls, PACED_RATE, *pid, ping(client))?;
        paced.push((*name, cpu));
    }
    for (server, client) in subjects.peers.iter_mut() {
        let null = peers::null(server, client.as_mut());
        let cpu = paced_cpu(paced_calls, PACED_RATE, server.pid(), null)?;
        paced.push((server.peer.name(), cpu));
    }
    let floor_pid = subjects.floor_pid;
    let cpu = paced_cpu(paced_calls, PACED_RATE, floor_pid, || Ok(()))?;
    paced.push((PACING_ALONE, cpu));
    let mut session = subjects
        .floor
        .eventfd_session(paced_calls + PACED_WARM_UP)?;
    let cpu = paced_cpu(paced_calls, PACED_RATE, floor_pid, || session.round_trip())?;
    session.finish()?;
    paced.push((crate::EVENTFD_FLOOR, cpu));
    Ok(paced)
}

/// Makes `count` calls paced at `rate` a second (sleeping between them, as an idle service's
/// clients would leave it), after a few unpaced ones; returns CPU ns per call of this process
/// and `server`.
fn paced_cpu(
    count: u64,
    rate: u32,
    server: u32,
    mut call: impl FnMut() -> io::Result<()>,
) -> io::Result<f64> {
    for _ in 0..PACED_WARM_UP {
        call()?;
    }
    let interval = Duration::from_secs(1) / rate.max(1);
    let cpu_before = own_and_server_cpu(Some(server))?;
    let start = Instant::now();
    for i in 0..count {
        let due = start + interval * (i as u32);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        call()?;
    }
    let cpu = own_and_server_cpu(Some(server))? - cpu_before;
    Ok(cpu.as_nanos() as f64 / count.max(1) as f64)
}

/// One row per system (and per floor) of CPU per paced call, with its ratio to SunRPC TCP's,
/// and the same ratio with the pacing alone taken out of both (what the calls themselves cost
/// beside each other, without the harness's sleep that every row pays alike).
fn section_rows(section: &'static str, paced: &[(&'static str, f64)]) -> Vec<Row> {
    let cpu_of = |wanted: &str| {
        paced
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|&(_, cpu)| cpu)
    };
    let sunrpc = cpu_of(Peer::SunRpcTcp.name());
    let pacing = cpu_of(PACING_ALONE);
    paced
        .iter()
        .map(|&(name, cpu)| {
            let mut row = Row::new(section, name);
            row.calls_per_s = Some(f64::from(PACED_RATE));
            row.cpu_ns_per_call = Some(cpu);
            if let (Some(base), false) = (sunrpc, name == Peer::SunRpcTcp.name()) {
                row.ratios.push((cpu / base, SUNRPC_CPU.into()));
                if let (Some(pacing), false) = (pacing, name == PACING_ALONE) {
                    if base > pacing {
                        row.ratios
                            .push(((cpu - pacing) / (base - pacing), SUNRPC_CPU_NET.into()));
                    }
                }
            }
            row
        })
        .collect()
}

/// The label of a paced row's ratio to SunRPC TCP's CPU per call.
pub const SUNRPC_CPU: &str = "SunRPC TCP CPU";

/// The label of the same ratio with the pacing alone taken out of both.
pub const SUNRPC_CPU_NET: &str = "SunRPC TCP CPU, pacing taken out";
