//! The host server's own services, served beside the set `xenrpc-hostd` is given (the
//! built-ins by default): an `admin` service only some peers may call, and (for tests) a
//! `selftest` service whose handlers misbehave on purpose.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use xenrpc_proto::{
    define_service, CallContext, PeerId, Registry, RegistryError, Restricted, ServiceSet, Status,
};

use crate::server::tenants::Refusal;
use crate::server::{DropReason, ServerEvent};

xenrpc_proto::define_pod! {
    /// Connection counters the admin service reports.
    #[derive(Default)]
    pub struct AdminStats {
        /// Clients connected right now.
        pub connected: u32,
        /// Clients that connected since the server started.
        pub connected_total: u32,
        /// Clients that hung up (died or closed).
        pub disconnected: u32,
        /// Connections dropped for breaking the protocol.
        pub dropped: u32,
        /// Connection attempts refused (for any reason, the uid cap included).
        pub refused: u32,
        /// Connection attempts refused because the uid held its share of connections.
        pub refused_uid_cap: u32,
        /// Idle connections reaped to make room for a newcomer (counted in `dropped` too).
        pub reaped: u32,
        /// Connections dropped for a wake-up storm (counted in `dropped` too).
        pub event_storms: u32,
    }
}

/// How long a `selftest::sleep` may ask the server to stall (bounds a test's damage).
pub const MAX_SELFTEST_SLEEP_MS: u32 = 2_000;

xenrpc_proto::define_pod! {
    /// The arguments of `selftest::sleep`.
    #[derive(Default)]
    pub struct SleepArgs {
        /// How long to stall, in milliseconds (at most [`MAX_SELFTEST_SLEEP_MS`]).
        pub millis: u32,
    }
}

define_service! {
    /// Server administration; only uids named with `--admin-uid` may call it.
    pub mod admin {
        name = "admin", id = 100, version = 1;
        /// Connection counters.
        fn stats = 1 (()) -> AdminStats;
    }
}

define_service! {
    /// Misbehaving handlers, served only with `--test-services`.
    pub mod selftest {
        name = "selftest", id = 101, version = 1;
        /// Panics inside the handler (the server answers `HandlerFault` and keeps serving).
        fn panic = 1 (()) -> ();
        /// Stalls the server for `millis` (at most `MAX_SELFTEST_SLEEP_MS`), so tests can have
        /// calls in flight for a while.
        fn sleep = 2 (SleepArgs) -> ();
    }
}

static ADMIN_UIDS: OnceLock<Vec<u32>> = OnceLock::new();

/// Sets which client uids may call the admin service (once per process).
pub fn set_admin_uids(uids: Vec<u32>) -> bool {
    ADMIN_UIDS.set(uids).is_ok()
}

/// A peer is its uid (see `PeerCredentials::peer_id`).
fn admin_allowed(peer: PeerId) -> bool {
    ADMIN_UIDS.get().is_some_and(|uids| uids.contains(&peer.0))
}

/// Connection counters, updated from the server's events.
#[derive(Clone, Default)]
pub struct Counters(Rc<Cell<AdminStats>>);

impl Counters {
    /// Counts one server event.
    pub fn record(&self, event: &ServerEvent) {
        let mut stats = self.0.get();
        match event {
            ServerEvent::Connected(_) => {
                stats.connected += 1;
                stats.connected_total += 1;
            }
            ServerEvent::Disconnected { .. } => {
                stats.connected = stats.connected.saturating_sub(1);
                stats.disconnected += 1;
            }
            ServerEvent::Dropped { reason, .. } => {
                stats.connected = stats.connected.saturating_sub(1);
                stats.dropped += 1;
                match reason {
                    DropReason::Reaped => stats.reaped += 1,
                    DropReason::EventStorm(_) => stats.event_storms += 1,
                    DropReason::Protocol(_) => {}
                }
            }
            ServerEvent::Refused { reason, .. } => {
                stats.refused += 1;
                if matches!(reason, Refusal::TooManyForUid(_)) {
                    stats.refused_uid_cap += 1;
                }
            }
            ServerEvent::TenantGone { .. } => {}
        }
        self.0.set(stats);
    }

    /// The counters so far.
    pub fn get(&self) -> AdminStats {
        self.0.get()
    }
}

struct AdminServer(Counters);

impl admin::Server for AdminServer {
    fn stats(&mut self, _call: &mut CallContext<'_>, _: ()) -> Result<AdminStats, Status> {
        Ok(self.0.get())
    }
}

struct SelftestServer;

impl selftest::Server for SelftestServer {
    fn panic(&mut self, _call: &mut CallContext<'_>, _: ()) -> Result<(), Status> {
        panic!("selftest::panic called: this handler fails on purpose");
    }

    fn sleep(&mut self, _call: &mut CallContext<'_>, args: SleepArgs) -> Result<(), Status> {
        if args.millis > MAX_SELFTEST_SLEEP_MS {
            return Err(Status::BadArguments);
        }
        std::thread::sleep(Duration::from_millis(u64::from(args.millis)));
        Ok(())
    }
}

/// The host server's own services: `admin` (only the admin uids may call it) and, with
/// `--test-services`, `selftest`. `xenrpc-hostd` serves them beside the set it was given.
pub struct HostServices {
    admin: Restricted<admin::Handler<AdminServer>>,
    selftest: Option<selftest::Handler<SelftestServer>>,
}

impl HostServices {
    /// `admin` reporting `counters`, and `selftest` if `test_services`.
    pub fn new(counters: Counters, test_services: bool) -> Self {
        Self {
            admin: Restricted(admin::Handler(AdminServer(counters)), admin_allowed),
            selftest: test_services.then_some(selftest::Handler(SelftestServer)),
        }
    }
}

impl ServiceSet for HostServices {
    fn register_into<'a>(&'a mut self, registry: &mut Registry<'a>) -> Result<(), RegistryError> {
        self.admin.register_into(registry)?;
        self.selftest.register_into(registry)
    }
}

/// An empty registry for the host server: the admin uids alone see the call counts of every
/// tenant (everyone else sees its own). The server tells it (`Registry::forget_peer`) when a
/// uid's last connection goes, and every service drops that uid's state.
pub fn host_registry<'a>() -> Registry<'a> {
    let mut registry = Registry::new();
    registry.set_privileged(admin_allowed);
    registry
}
