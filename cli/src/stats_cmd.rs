//! `xenrpc stats`: the connection, a probe of pings, and the server's counters (over Xen also
//! the client's counters; over a host socket the server's connection counters for an admin).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use xenrpc_cli::conn::ConnArgs;
use xenrpc_cli::endpoint::{Endpoint, HostEndpoint, RawCall, XenEndpoint};
use xenrpc_cli::{CliError, Output, Result};
use xenrpc_proto::services::echo;
use xenrpc_proto::Status;

use crate::introspect;
use crate::measure::{client_stats_json, percentiles, Latency};

/// `probe` pings, timed.
fn probe(endpoint: &mut dyn Endpoint, probe: u32) -> Result<Latency> {
    let ping = RawCall::of(&echo::client::ping(&()));
    let mut latencies: Vec<Duration> = Vec::with_capacity(probe as usize);
    for _ in 0..probe {
        let start = Instant::now();
        endpoint.call_bytes(&ping)?.ok()?;
        latencies.push(start.elapsed());
    }
    Ok(percentiles(&mut latencies))
}

fn probe_line(probe: u32, lat: &Latency) -> String {
    format!(
        "probe: {probe} pings, p50 {:.1} µs, p99 {:.1} µs\n",
        lat.p50, lat.p99
    )
}

/// Over the Xen devices: the device and ring, the probe, this session's client counters, the
/// server's counters.
pub fn xen(conn_args: &ConnArgs, probe_count: u32) -> Result<Output> {
    let mut endpoint = XenEndpoint::connect(conn_args)?;
    let lat = probe(&mut endpoint, probe_count)?;
    let c = endpoint.connection();
    let (i, g, s) = (c.info(), c.geometry(), c.stats());
    let info = json!({
        "domid": i.self_id, "server": i.server, "devid": i.devid,
        "frontend": i.frontend, "backend": i.backend,
        "slots": g.slots(), "ring_pages": g.region_pages(), "data_pages": c.data_pages(),
        "event_channel": c.event_channel_port(), "index_ref": c.index_ref(),
    });
    let text = format!(
        "connection: domain {} device {} -> server {} ({} slots, {} ring + {} data pages, \
         event channel {}, index ref {})\n{}\
         client counters (this session): {} started, {} ok, {} remote errors, {} timed out, \
         {} notifications sent, {} spin hits, {} sleeps, {} late responses\n",
        i.self_id,
        i.devid,
        i.server,
        g.slots(),
        g.region_pages(),
        c.data_pages(),
        c.event_channel_port(),
        c.index_ref(),
        probe_line(probe_count, &lat),
        s.calls_started,
        s.calls_ok,
        s.calls_remote_error,
        s.calls_timed_out,
        s.notifications_sent,
        s.spin_hits,
        s.sleeps,
        s.late_responses
    );
    let client = client_stats_json(&s);
    let (server_text, server) = introspect::server_stats(&mut endpoint)?;
    Box::new(endpoint).close()?;
    Ok(Output::ok(
        text + &server_text,
        json!({"ok": true, "connection": info, "probe_latency_us": lat, "client": client, "server": server}),
    ))
}

/// Over a host socket: the socket and data region, the probe, the server's connection
/// counters (admin uids only: others are told so), the server's counters.
pub fn host(socket: &Path, conn_args: &ConnArgs, probe_count: u32) -> Result<Output> {
    let mut endpoint = HostEndpoint::connect(socket, conn_args)?;
    let lat = probe(&mut endpoint, probe_count)?;
    let data = endpoint.data_len();
    let mut text = format!(
        "connection: xenrpc-hostd at {} ({data}-byte data region)\n{}",
        socket.display(),
        probe_line(probe_count, &lat)
    );
    let admin: Value = match introspect::admin_stats(&mut endpoint) {
        Ok(stats) => {
            text += &format!("server connections: {}\n", introspect::admin_text(&stats));
            introspect::admin_json(&stats)
        }
        Err(CliError::Remote(Status::AccessDenied)) => {
            text += "server connections: only for the server's admin uids (AccessDenied)\n";
            Value::Null
        }
        Err(e) => return Err(e),
    };
    let (server_text, server) = introspect::server_stats(&mut endpoint)?;
    Box::new(endpoint).close()?;
    Ok(Output::ok(
        text + &server_text,
        json!({
            "ok": true, "connection": {"socket": socket, "data_bytes": data},
            "probe_latency_us": lat, "admin": admin, "server": server,
        }),
    ))
}
