//! The services the CLI knows by name, and the introspection calls that `list`, `stats` and
//! `call` share: listing services with their methods, and the server's per-service counters.

use serde::Serialize;
use serde_json::{json, Value};

use xenrpc_cli::endpoint::{Endpoint, RawCall};
use xenrpc_cli::{CliError, Result};
use xenrpc_host::services::{admin, selftest, AdminStats};
use xenrpc_proto::services::introspection::{
    self, ListReply, MethodEntry, ServiceEntry, ServiceQuery, ServiceStatsEntry,
};
use xenrpc_proto::services::{arith, echo, field_name, kv};
use xenrpc_proto::zerocopy::FromBytes;
use xenrpc_proto::ServiceInfo;

/// Services the CLI can call by name: the built-in ones, and the host server's `admin` and
/// (test-only) `selftest`.
pub const SERVICES: [&ServiceInfo; 6] = [
    &introspection::INFO,
    &echo::INFO,
    &arith::INFO,
    &kv::INFO,
    &admin::INFO,
    &selftest::INFO,
];

/// A service's name, or `service ID` for one the CLI does not know.
pub fn service_name(id: u32) -> String {
    SERVICES
        .iter()
        .find(|s| s.id == id)
        .map_or_else(|| format!("service {id}"), |s| s.name.to_string())
}

/// A zero-padded name field as text.
pub fn name_of(field: &[u8]) -> String {
    String::from_utf8_lossy(field_name(field)).into_owned()
}

/// The result window of the listing calls: the whole data region, at most 64 KiB.
pub fn listing_window(endpoint: &dyn Endpoint) -> usize {
    endpoint.data_len().min(64 * 1024)
}

/// Reads `count` records of `T` from `bytes` (a result window), after checking the server
/// wrote that many.
pub fn records<T: FromBytes>(bytes: &[u8], count: u32) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let need = count as usize * size;
    if need > bytes.len() {
        return Err(CliError::Protocol(format!(
            "server claims {count} records in {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes[..need]
        .chunks_exact(size)
        .filter_map(|b| T::read_from_bytes(b).ok())
        .collect())
}

/// A listing call (`introspection.list_*`): its records, checked against its [`ListReply`].
fn list<T: FromBytes>(endpoint: &mut dyn Endpoint, call: RawCall) -> Result<Vec<T>> {
    let call = call.ool_out(listing_window(endpoint));
    let reply = endpoint.call_bytes(&call)?.ok()?;
    let head: ListReply = reply.value()?;
    records(&reply.ool_out, head.written)
}

/// `introspection.list_services`.
pub fn services(endpoint: &mut dyn Endpoint) -> Result<Vec<ServiceEntry>> {
    list(
        endpoint,
        RawCall::of(&introspection::client::list_services(&())),
    )
}

/// `introspection.list_methods` of service `id`.
pub fn methods(endpoint: &mut dyn Endpoint, id: u32) -> Result<Vec<MethodEntry>> {
    list(
        endpoint,
        RawCall::of(&introspection::client::list_methods(&ServiceQuery { id })),
    )
}

/// `introspection.list_stats`.
pub fn stats(endpoint: &mut dyn Endpoint) -> Result<Vec<ServiceStatsEntry>> {
    list(
        endpoint,
        RawCall::of(&introspection::client::list_stats(&())),
    )
}

/// One service as `list` shows it.
#[derive(Serialize)]
pub struct ServiceListing {
    pub id: u32,
    pub name: String,
    pub version: u32,
    pub methods: Vec<String>,
}

/// Every service the server offers this client, with its methods.
pub fn list_services(endpoint: &mut dyn Endpoint) -> Result<Vec<ServiceListing>> {
    let mut out = Vec::new();
    for e in services(endpoint)? {
        let methods = methods(endpoint, e.id)?;
        out.push(ServiceListing {
            id: e.id,
            name: name_of(&e.name),
            version: e.version,
            methods: methods.iter().map(|m| name_of(&m.name)).collect(),
        });
    }
    Ok(out)
}

/// The `services:` block of `list`.
pub fn format_services(services: &[ServiceListing]) -> String {
    let mut text = String::from("services:\n");
    for s in services {
        text += &format!(
            "  {:>3} {} v{}: {}\n",
            s.id,
            s.name,
            s.version,
            s.methods.join(", ")
        );
    }
    text
}

/// The server's per-service counters (calls, errors and handler faults since it started), from
/// `introspection.list_stats`: one line of text and the JSON list.
pub fn server_stats(endpoint: &mut dyn Endpoint) -> Result<(String, Value)> {
    let entries = stats(endpoint)?;
    let mut text = String::from("server counters (all clients, since it started):");
    for e in &entries {
        text += &format!(
            " {}: {} calls, {} errors, {} faults;",
            service_name(e.id),
            e.calls,
            e.errors,
            e.faults
        );
    }
    text.push('\n');
    let value = entries
        .iter()
        .map(|e| json!({"id": e.id, "name": service_name(e.id), "calls": e.calls, "errors": e.errors, "faults": e.faults}))
        .collect::<Vec<_>>();
    Ok((text, json!(value)))
}

/// The host server's connection counters (`admin.stats`, only for its admin uids).
pub fn admin_stats(endpoint: &mut dyn Endpoint) -> Result<AdminStats> {
    endpoint
        .call_bytes(&RawCall::of(&admin::client::stats(&())))?
        .ok()?
        .value()
}

/// The admin counters as one line, `name=value` each.
pub fn admin_text(s: &AdminStats) -> String {
    format!(
        "connected={} connected_total={} disconnected={} dropped={} refused={} \
         refused_uid_cap={} reaped={} event_storms={}",
        s.connected,
        s.connected_total,
        s.disconnected,
        s.dropped,
        s.refused,
        s.refused_uid_cap,
        s.reaped,
        s.event_storms
    )
}

pub fn admin_json(s: &AdminStats) -> Value {
    json!({
        "connected": s.connected, "connected_total": s.connected_total,
        "disconnected": s.disconnected, "dropped": s.dropped, "refused": s.refused,
        "refused_uid_cap": s.refused_uid_cap, "reaped": s.reaped, "event_storms": s.event_storms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenrpc_proto::zerocopy::IntoBytes;

    #[test]
    fn records_must_all_be_there() {
        let entries = [
            ServiceStatsEntry {
                id: 1,
                calls: 5,
                ..Default::default()
            },
            ServiceStatsEntry {
                id: 2,
                errors: 1,
                ..Default::default()
            },
        ];
        let bytes = entries.as_bytes();
        let back: Vec<ServiceStatsEntry> = records(bytes, 2).unwrap();
        assert_eq!(back, entries);
        let err = records::<ServiceStatsEntry>(&bytes[..63], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "server broke the protocol: server claims 2 records in 63 bytes"
        );
    }

    #[test]
    fn services_are_known_by_name_and_others_by_id() {
        assert_eq!(service_name(arith::SERVICE_ID), "arith");
        assert_eq!(service_name(admin::SERVICE_ID), "admin");
        assert_eq!(service_name(4242), "service 4242");
    }

    #[test]
    fn admin_counters_print_under_their_json_names() {
        let stats = AdminStats {
            connected: 1,
            refused_uid_cap: 2,
            event_storms: 3,
            ..Default::default()
        };
        let text = admin_text(&stats);
        let json = admin_json(&stats);
        for pair in text.split(' ') {
            let (name, value) = pair.split_once('=').unwrap();
            assert_eq!(json[name].to_string(), value, "{name}");
        }
        assert!(text.contains("refused_uid_cap=2"), "{text}");
        assert_eq!(json.as_object().unwrap().len(), 8);
    }
}
