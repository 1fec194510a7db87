//! `xenrpc attach`, `detach` (dom0) and `list`: the connections xenstore shows and the
//! services of the server (over a host socket: only the services).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use xenrpc_cli::conn::{self, ConnArgs};
use xenrpc_cli::endpoint::{Endpoint, HostEndpoint, XenEndpoint};
use xenrpc_cli::{Output, Result};
use xenrpc_client::admin::{self, Attached, ConnectionRow, Detached};
use xenrpc_client::frontend::{self, OwnDevice};

use crate::introspect;

pub fn attached_json(a: &Attached) -> Value {
    json!({
        "server": a.server, "client": a.client, "devid": a.devid,
        "frontend": a.frontend, "backend": a.backend,
    })
}

pub fn detached_json(d: &Detached) -> Value {
    json!({
        "server": d.server, "client": d.client, "devid": d.devid,
        "server_acknowledged": d.server_acknowledged, "note": d.note,
    })
}

pub fn row_json(r: &ConnectionRow) -> Value {
    json!({
        "server": r.server, "client": r.client, "devid": r.devid,
        "backend_state": r.backend_state, "frontend_state": r.frontend_state,
        "online": r.online, "event_channel": r.event_channel, "index_ref": r.index_ref,
        "max_pages": r.max_pages, "problems": r.problems,
    })
}

pub fn own_device_json(d: &OwnDevice) -> Value {
    json!({
        "devid": d.devid, "frontend_state": d.frontend_state, "backend_state": d.backend_state,
    })
}

/// `xenrpc attach`: writes both xenstore directories of a new connection.
pub fn attach(server: u32, client: u32, devid: u32) -> Result<Output> {
    let done = admin::attach(conn::store()?.as_mut(), server, client, devid)?;
    Ok(Output::ok(
        format!(
            "attached domain {client} device {devid} to server {server}\n  frontend {}\n  \
             backend  {}\n",
            done.frontend, done.backend
        ),
        json!({"ok": true, "attached": attached_json(&done)}),
    ))
}

/// `xenrpc detach`: asks the server to close, then removes both directories.
pub fn detach(
    server: u32,
    client: u32,
    devid: u32,
    timeout: Duration,
    force: bool,
) -> Result<Output> {
    let done = admin::detach(
        conn::store()?.as_mut(),
        server,
        client,
        devid,
        timeout,
        force,
    )?;
    let mut text = format!("detached domain {client} device {devid} from server {server}");
    text += if done.server_acknowledged {
        " (server closed its side)\n"
    } else {
        "\n"
    };
    if let Some(note) = &done.note {
        text += &format!("  note: {note}\n");
    }
    Ok(Output::ok(
        text,
        json!({"ok": true, "detached": detached_json(&done)}),
    ))
}

/// `xenrpc list` over Xen: every connection and each server's published totals in dom0, this
/// domain's devices in a guest; then the services, unless `no_services` or there is no
/// device to ask through.
pub fn list(conn_args: &ConnArgs, no_services: bool) -> Result<Output> {
    let mut xs = conn::store()?;
    let me = frontend::own_domid(xs.as_mut())?;
    let mut text = String::new();
    let mut value = json!({"ok": true, "domid": me});
    let has_device;
    if me == 0 {
        let rows = admin::list_connections(xs.as_mut())?;
        text += &format_rows(&rows);
        has_device = false;
        value["connections"] = rows.iter().map(row_json).collect();
        let mut servers: Vec<u16> = rows.iter().map(|r| r.server).collect();
        servers.sort_unstable();
        servers.dedup();
        let mut totals = serde_json::Map::new();
        for server in servers {
            let line = match admin::server_totals(xs.as_mut(), server) {
                Ok(Some(t)) => t,
                Ok(None) => "none published".to_string(),
                Err(e) => format!("unreadable: {e}"),
            };
            text += &format!("server {server} totals: {line}\n");
            totals.insert(server.to_string(), json!(line));
        }
        value["server_totals"] = Value::Object(totals);
    } else {
        let devices = frontend::list_own_devices(xs.as_mut())?;
        if devices.is_empty() {
            text += "no xenrpc devices in this domain (attach one from dom0)\n";
        }
        for d in &devices {
            text += &format!(
                "device {}: frontend {}, backend {}\n",
                d.devid,
                d.frontend_state.as_deref().unwrap_or("-"),
                d.backend_state.as_deref().unwrap_or("-")
            );
        }
        has_device = devices.iter().any(|d| d.devid == conn_args.devid);
        value["devices"] = devices.iter().map(own_device_json).collect();
    }
    if no_services || !has_device {
        return Ok(Output::ok(text, value));
    }
    with_services(text, value, || {
        Ok(Box::new(XenEndpoint::connect(conn_args)?) as Box<dyn Endpoint>)
    })
}

/// `xenrpc --socket PATH list`: the services of a host server.
pub fn list_host(socket: &Path, conn_args: &ConnArgs) -> Result<Output> {
    let value = json!({"ok": true, "socket": socket});
    with_services(String::new(), value, || {
        Ok(Box::new(HostEndpoint::connect(socket, conn_args)?) as Box<dyn Endpoint>)
    })
}

/// Adds the services to a listing; failing to get them is reported in it (and fails it).
fn with_services(
    mut text: String,
    mut value: Value,
    open: impl FnOnce() -> Result<Box<dyn Endpoint>>,
) -> Result<Output> {
    let listed = open().and_then(|mut endpoint| {
        let services = introspect::list_services(endpoint.as_mut())?;
        endpoint.close()?;
        Ok(services)
    });
    match listed {
        Ok(services) => {
            text += &introspect::format_services(&services);
            value["services"] = json!(services);
            Ok(Output::ok(text, value))
        }
        Err(e) => {
            text += &format!("services: unavailable: {e}\n");
            value["ok"] = json!(false);
            value["services_error"] = json!({"kind": e.kind(), "message": e.to_string()});
            Ok(Output::failed(text, value))
        }
    }
}

fn format_rows(rows: &[ConnectionRow]) -> String {
    if rows.is_empty() {
        return "no xenrpc connections\n".into();
    }
    let mut text = format!(
        "{:>6} {:>6} {:>5}  {:<18} {:<18} {:>6} {:>7} {:>9}\n",
        "server", "client", "devid", "backend", "frontend", "online", "evtchn", "index-ref"
    );
    for r in rows {
        let d = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        text += &format!(
            "{:>6} {:>6} {:>5}  {:<18} {:<18} {:>6} {:>7} {:>9}\n",
            r.server,
            r.client,
            r.devid,
            d(&r.backend_state),
            d(&r.frontend_state),
            d(&r.online),
            d(&r.event_channel),
            d(&r.index_ref)
        );
        for p in &r.problems {
            text += &format!("        problem: {p}\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_print_as_a_table_with_their_problems() {
        let row = ConnectionRow {
            server: 1,
            client: 5,
            devid: 0,
            backend_state: Some("4 (Connected)".into()),
            frontend_state: None,
            online: Some("1".into()),
            event_channel: None,
            index_ref: None,
            max_pages: None,
            problems: vec!["frontend state \"x\" is not a XenbusState".into()],
        };
        let text = format_rows(std::slice::from_ref(&row));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("     1      5     0  4 (Connected)"),
            "{text}"
        );
        assert!(lines[2].contains("problem: frontend state"), "{text}");
        assert_eq!(format_rows(&[]), "no xenrpc connections\n");
        // Scripts grep the pretty-printed JSON for `"client": N`.
        let json = serde_json::to_string_pretty(&row_json(&row)).unwrap();
        assert!(json.contains("\"client\": 5"), "{json}");
        assert_eq!(row_json(&row).as_object().unwrap().len(), 10);
    }
}
