//! Setting a connection up: the XenbusState handshake of docs/rendezvous.md from the
//! frontend's side (grants, the index page, the event channel, the states in xenstore).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenrpc_proto::layout::ctrl;
use xenrpc_proto::wait::{SpinBudget, SpinPolicy};
use xenrpc_proto::{CallTable, ClientConnection, RingGeometry};
use xenrpc_rendezvous::{self as rv, key, XenbusState};

use crate::devices::{EventChannel, GrantedPages, Window, XenDevices, PAGE_SIZE};
use crate::error::{Error, Result};
use crate::server_clock::ServerClock;
use crate::xenstore::{in_transaction, Xenstore, NO_TX};

use super::device::{backend_failure, find_device, look_at_backend, BackendLook, DeviceInfo};
use super::{ClientStats, Connection, BACKEND_TOKEN};

/// How a connection is set up.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Which of this domain's xenrpc devices to use.
    pub devid: u32,
    /// Request (and response) ring slots: a power of two in 16..=1024.
    pub slots: u32,
    /// Pages of the data region (out-of-line arguments and results).
    pub data_pages: usize,
    /// Two-way calls in flight at most (1..=min(slots, 64)).
    pub max_in_flight: usize,
    /// How long the handshake may take in all.
    pub handshake_timeout: Duration,
    /// How long a waiting call spins on the ring before it sleeps on the event channel.
    pub spin: Duration,
    /// Also set up a ping port the server bounces events back on ([`Connection::ping`]).
    pub ping_channel: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            devid: 0,
            slots: 32,
            data_pages: 16,
            max_in_flight: 32,
            handshake_timeout: Duration::from_secs(10),
            spin: Duration::from_micros(20),
            ping_channel: false,
        }
    }
}

/// Waits until the backend reaches `wanted`, failing early if it closes or vanishes.
/// `restart`: the frontend state path, while (re)starting a connection. A Closed backend is
/// then expected: either left by an earlier session (the server offers the device again when
/// it sees our Initialising), or closed just now by a server that still had a stale connection
/// of ours (a crashed client) and ended it on our Initialising. A server that only reacts to
/// *changes* then needs another Initialising to offer the device anew. The two cannot be told
/// apart, and the server may already have reacted before our first look, so every sighting of
/// Closed that differs from the previous look (the first look included) is answered with
/// another Initialising: harmless for a server that already offers the device (it ignores
/// Initialising in InitWait). Bounded: a few rewrites at most.
fn wait_backend(
    store: &mut dyn Xenstore,
    info: &DeviceInfo,
    wanted: XenbusState,
    deadline: Instant,
    restart: Option<&str>,
) -> Result<()> {
    let mut previous = None;
    let mut restarts = 0;
    loop {
        let look = look_at_backend(store, info)?;
        if look == BackendLook::State(wanted) {
            return Ok(());
        }
        let closed = matches!(
            look,
            BackendLook::State(XenbusState::Closed) | BackendLook::State(XenbusState::Closing)
        );
        match restart {
            Some(fe_state) if closed => {
                let newly_closed = previous != Some(look);
                if newly_closed && look == BackendLook::State(XenbusState::Closed) && restarts < 3 {
                    restarts += 1;
                    store.write(
                        NO_TX,
                        fe_state,
                        XenbusState::Initialising.as_str().as_bytes(),
                    )?;
                }
            }
            _ => {
                if let Some(e) = backend_failure(look, info) {
                    return Err(e);
                }
            }
        }
        previous = Some(look);
        if store.next_event(deadline)?.is_none() {
            let now = look.label();
            return Err(Error::DeadlineExceeded(format!(
                "backend {} did not reach {} (it is {now}); is the service VM serving domain {}?",
                info.backend,
                crate::admin::state_label(wanted),
                info.server
            )));
        }
    }
}

/// Connects device `options.devid` of this domain to its server.
pub fn connect<D: XenDevices>(
    devices: &D,
    mut store: Box<dyn Xenstore>,
    options: &ConnectOptions,
) -> Result<Connection<D>> {
    let deadline = Instant::now() + options.handshake_timeout;
    let geometry = RingGeometry::new(options.slots).map_err(|_| {
        Error::BadArguments(format!(
            "{} ring slots: use a power of two in 16..=1024",
            options.slots
        ))
    })?;
    let info = find_device(store.as_mut(), options.devid)?;
    let fe_state = format!("{}/{}", info.frontend, key::STATE);
    let be_state = format!("{}/{}", info.backend, key::STATE);

    store.watch(&be_state, BACKEND_TOKEN)?;
    // (Re)start the handshake: a server left Closed by an earlier session goes back to InitWait
    // when it sees Initialising. Written even if it already says so: the write fires the
    // server's watch, which an unchanged value left by a crashed client would not.
    store.write(
        NO_TX,
        &fe_state,
        XenbusState::Initialising.as_str().as_bytes(),
    )?;
    wait_backend(
        store.as_mut(),
        &info,
        XenbusState::InitWait,
        deadline,
        Some(&fe_state),
    )?;

    let max_pages_key = format!("{}/{}", info.backend, key::MAX_PAGES);
    let max_pages = store
        .read(NO_TX, &max_pages_key)?
        .ok_or_else(|| Error::Protocol(format!("{max_pages_key} missing in InitWait")))?;
    let max_pages = rv::parse_decimal(&max_pages, rv::MAX_PAGES as u32)
        .map_err(|e| Error::Protocol(format!("{max_pages_key}: {e}")))?
        as usize;
    let protocol_key = format!("{}/{}", info.backend, key::PROTOCOL);
    let protocol = store.read(NO_TX, &protocol_key)?.unwrap_or_default();
    rv::check_protocol(&protocol).map_err(|e| Error::Protocol(format!("{protocol_key}: {e}")))?;

    let ring_pages = geometry.region_pages();
    let total = ring_pages + options.data_pages;
    if total > max_pages {
        return Err(Error::BadArguments(format!(
            "{ring_pages} ring + {} data pages exceed the server's max-pages {max_pages}",
            options.data_pages
        )));
    }
    let named = |e| name_device(e, &info);
    let pages = Arc::new(
        devices
            .grant_pages(info.server, total, true)
            .map_err(named)?,
    );
    let refs = pages.grant_refs().to_vec();
    if refs.len() != total {
        return Err(Error::Protocol(format!(
            "{} grant refs for {total} pages",
            refs.len()
        )));
    }
    let ring = Window::new(pages.clone(), 0, ring_pages)
        .ok_or_else(|| Error::Protocol("ring window".into()))?;
    let data = Window::new(pages.clone(), ring_pages, options.data_pages)
        .ok_or_else(|| Error::Protocol("data window".into()))?;
    let client = ClientConnection::new(ring, data, geometry, options.max_in_flight)
        .map_err(|e| Error::BadArguments(format!("connection set-up: {e}")))?;

    let index = devices.grant_pages(info.server, 1, false).map_err(named)?;
    let index_ref = *index
        .grant_refs()
        .first()
        .ok_or_else(|| Error::Protocol("no grant ref for the index page".into()))?;
    write_index_page(&index, &refs[..ring_pages], &refs[ring_pages..])?;
    let channel = devices.alloc_unbound(info.server).map_err(named)?;
    // If this process dies or lets go of the pages, the server hears of it at once.
    devices
        .notify_on_release(&pages, ctrl::CLIENT_ALIVE, &channel)
        .map_err(named)?;
    let ping = if options.ping_channel {
        Some(devices.alloc_unbound(info.server).map_err(named)?)
    } else {
        None
    };
    let ping_port = ping.as_ref().map(|p| p.port());

    let frontend = info.frontend.clone();
    let port = channel.port();
    in_transaction(store.as_mut(), 8, |s, tx| {
        s.write(
            tx,
            &format!("{frontend}/{}", key::INDEX_REF),
            index_ref.to_string().as_bytes(),
        )?;
        s.write(
            tx,
            &format!("{frontend}/{}", key::EVENT_CHANNEL),
            port.to_string().as_bytes(),
        )?;
        s.write(
            tx,
            &format!("{frontend}/{}", key::PROTOCOL),
            rv::PROTOCOL.as_bytes(),
        )?;
        let ping_key = format!("{frontend}/{}", key::PING_EVENT_CHANNEL);
        match ping_port {
            Some(p) => s.write(tx, &ping_key, p.to_string().as_bytes())?,
            // Left over from an earlier session that asked for one.
            None => s.rm(tx, &ping_key)?,
        }
        s.write(
            tx,
            &format!("{frontend}/{}", key::STATE),
            XenbusState::Initialised.as_str().as_bytes(),
        )
    })?;
    if let Err(e) = wait_backend(
        store.as_mut(),
        &info,
        XenbusState::Connected,
        deadline,
        None,
    ) {
        // Tell the server we give up, so it does not keep our pages mapped.
        let _ = store.write(NO_TX, &fe_state, XenbusState::Closed.as_str().as_bytes());
        return Err(match e {
            Error::ServerClosed => Error::Protocol(format!(
                "the server refused the connection ({} went to Closed; see the service VM's log)",
                info.backend
            )),
            other => other,
        });
    }
    store.write(NO_TX, &fe_state, XenbusState::Connected.as_str().as_bytes())?;
    Ok(Connection {
        info,
        client,
        channel,
        ping,
        store,
        _index: index,
        ring_refs: refs[..ring_pages].to_vec(),
        index_ref,
        calls: CallTable::new(),
        call_timeout: Duration::from_secs(5),
        server_clock: ServerClock::new(Instant::now()),
        spin: SpinBudget::new(SpinPolicy {
            spin_for: options.spin,
        }),
        failed: None,
        closed: false,
        stats: ClientStats::default(),
        geometry,
        data_pages: options.data_pages,
    })
}

/// A device failure while connecting `info`'s device, named by its frontend directory (a
/// bare "gntalloc: ..." does not say which connection failed).
fn name_device(e: Error, info: &DeviceInfo) -> Error {
    match e {
        Error::Device { what, source } => Error::Device {
            what: format!("{}: {what}", info.frontend),
            source,
        },
        other => other,
    }
}

/// Writes the index page through the shared mapping (atomic stores only: the server may read
/// it at any time once granted).
fn write_index_page<P: GrantedPages>(
    index: &P,
    ring_refs: &[u32],
    data_refs: &[u32],
) -> Result<()> {
    // The one codec of the contract (docs/rendezvous.md): header, ring refs, data refs.
    let page = rv::Index::build(ring_refs, data_refs)
        .map_err(|e| Error::BadArguments(format!("index page: {e}")))?;
    if index.len() < PAGE_SIZE {
        return Err(Error::Protocol(
            "index page mapping shorter than a page".into(),
        ));
    }
    for (i, word) in page.chunks_exact(4).enumerate() {
        let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        // SAFETY: `i * 4 < PAGE_SIZE <= index.len()`, the mapping is page aligned so the word
        // is aligned, and it stays mapped while `index` lives; shared memory is only accessed
        // atomically (never through a reference).
        let cell = unsafe {
            std::sync::atomic::AtomicU32::from_ptr(index.base().add(i * 4).cast::<u32>())
        };
        cell.store(value, Ordering::Relaxed);
    }
    std::sync::atomic::fence(Ordering::Release);
    Ok(())
}
