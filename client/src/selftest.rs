//! `xenrpc selftest-devices`: exercises the real Xen devices of a Linux guest, no server
//! needed: xenstore through the xenbus device, page grants through gntalloc (allocate, map,
//! write, read back, revoke), and event channels through evtchn (a loopback channel to this
//! same domain, events both ways, each delivered once and re-armed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenrpc_proto::SharedRegion;

use crate::devices::{
    DomId, EventChannel, GrantedPages, LinuxDevices, Window, XenDevices, PAGE_SIZE,
};
use crate::error::{Error, Result};
use crate::frontend::own_domid;
use crate::wait::{poll_readable, Readiness};
use crate::xenstore::{XenbusConnection, Xenstore};

/// One step's outcome.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the step exercises.
    pub name: &'static str,
    /// Whether it worked.
    pub ok: bool,
    /// What it saw, or why it failed.
    pub detail: String,
}

/// Runs every step (continuing past failures) and reports them.
pub fn run(grant_peer: Option<DomId>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut record = |name: &'static str, result: Result<String>| {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        steps.push(Step { name, ok, detail });
    };
    let mut store = match XenbusConnection::open_default() {
        Ok(s) => s,
        Err(e) => {
            record("xenstore-open", Err(e));
            return steps;
        }
    };
    let domid = match own_domid(&mut store) {
        Ok(d) => d,
        Err(e) => {
            record("xenstore-domid", Err(e));
            return steps;
        }
    };
    record("xenstore-domid", Ok(format!("this domain is {domid}")));
    record("xenstore-write-read", xenstore_round_trip(&mut store));
    let devices = LinuxDevices::open();
    let devices = match devices {
        Ok(d) => d,
        Err(e) => {
            record("open-devices", Err(e));
            return steps;
        }
    };
    let peer = grant_peer.unwrap_or(0);
    record(
        "gntalloc-writable",
        grant_round_trip(&devices, peer, 4, true),
    );
    record(
        "gntalloc-read-only",
        grant_round_trip(&devices, peer, 1, false),
    );
    record(
        "gntalloc-refuses-zero-pages",
        match devices.grant_pages(peer, 0, true) {
            Err(Error::BadArguments(_)) => Ok("refused".into()),
            Err(e) => Err(e),
            Ok(_) => Err(Error::Protocol("granted zero pages".into())),
        },
    );
    record("evtchn-loopback", evtchn_loopback(&devices, domid));
    steps
}

fn xenstore_round_trip(store: &mut XenbusConnection) -> Result<String> {
    let path = "data/xenrpc-selftest-devices";
    let value = format!("probe-{}", std::process::id());
    store.write(0, path, value.as_bytes())?;
    let back = store.read(0, path)?;
    store.rm(0, path)?;
    if back.as_deref() != Some(value.as_bytes()) {
        let back = back.map_or_else(
            || "nothing".to_string(),
            |b| format!("\"{}\"", String::from_utf8_lossy(&b)),
        );
        return Err(Error::Protocol(format!("wrote \"{value}\", read {back}")));
    }
    Ok(format!("wrote and read back {path}"))
}

fn grant_round_trip(
    devices: &LinuxDevices,
    peer: DomId,
    count: usize,
    writable: bool,
) -> Result<String> {
    let pages = Arc::new(devices.grant_pages(peer, count, writable)?);
    let refs = pages.grant_refs().to_vec();
    if refs.len() != count {
        return Err(Error::Protocol(format!(
            "{} refs for {count} pages",
            refs.len()
        )));
    }
    let listed = refs
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut sorted = refs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != count || sorted.contains(&0) {
        return Err(Error::Protocol(format!(
            "grant refs not distinct and non-zero: {listed}"
        )));
    }
    let window =
        Window::new(pages.clone(), 0, count).ok_or_else(|| Error::Protocol("window".into()))?;
    let region = SharedRegion::new(window).map_err(|e| Error::Protocol(e.to_string()))?;
    let view = region.view();
    let pattern: Vec<u8> = (0..count * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
    view.write(0, &pattern)
        .map_err(|_| Error::Protocol("write out of bounds".into()))?;
    std::sync::atomic::fence(Ordering::SeqCst);
    let mut back = vec![0u8; pattern.len()];
    view.read(0, &mut back)
        .map_err(|_| Error::Protocol("read out of bounds".into()))?;
    if back != pattern {
        return Err(Error::Protocol(
            "granted pages did not read back what was written".into(),
        ));
    }
    drop(region);
    drop(pages);
    Ok(format!(
        "{count} page(s) granted {} to domain {peer}: refs {listed}, written and read back, revoked",
        if writable { "read-write" } else { "read-only" }
    ))
}

/// Waits for one event on `channel` and checks nothing more is pending.
fn expect_event(channel: &impl EventChannel, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match poll_readable(&[channel.fd()], deadline)
            .map_err(|e| Error::device("poll evtchn", e))?
        {
            Readiness::TimedOut => {
                return Err(Error::DeadlineExceeded(format!(
                    "{what}: no event within 5 s"
                )))
            }
            Readiness::Ready(_) => {
                if channel.acknowledge()? {
                    return Ok(());
                }
            }
        }
    }
}

fn evtchn_loopback(devices: &LinuxDevices, domid: DomId) -> Result<String> {
    let a = devices.alloc_unbound(domid)?;
    let b = devices.bind_interdomain(domid, a.port())?;
    for round in 0..3 {
        b.notify()?;
        expect_event(&a, &format!("round {round} b->a"))?;
        a.notify()?;
        expect_event(&b, &format!("round {round} a->b"))?;
    }
    if a.acknowledge()? || b.acknowledge()? {
        return Err(Error::Protocol("an event arrived that nobody sent".into()));
    }
    Ok(format!(
        "ports {} <-> {}: 3 rounds each way, re-armed after every event",
        a.port(),
        b.port()
    ))
}
