//! The backend's counters: every refusal and every end of a connection, by cause.

use core::fmt;

/// Why devices were refused or closed, and what the limits held back.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    /// Devices whose entry passed the checks and that were offered (BE InitWait).
    pub attached: u64,
    /// Connections made (the client's pages mapped, BE Connected).
    pub connected: u64,
    /// Backend entries ignored: a `<client>/<devid>` below the root that does not parse.
    pub refused_entry: u64,
    /// Devices refused because their `frontend` or `frontend-id` is missing or not the
    /// contract's.
    pub refused_frontend: u64,
    /// Connects refused: what the frontend published did not parse, or the connector refused
    /// it (its index page, the mapping of its pages).
    pub refused_connect: u64,
    /// Connections the client closed (FE Closing or Closed, or a restart to Initialising).
    pub closed_by_client: u64,
    /// Devices whose frontend state vanished while offered or connected.
    pub client_gone: u64,
    /// Devices the toolstack took offline or whose backend entry it removed.
    pub detached: u64,
    /// Connections ended because the client broke the protocol ([`EndKind::Violation`]).
    pub broken: u64,
    /// Connections ended because the client's process let go of its pages
    /// ([`EndKind::ClientLetGo`]).
    pub client_let_go: u64,
    /// Connections ended for an event storm ([`EndKind::EventStorm`]).
    pub event_storms: u64,
    /// Connections ended for a ping storm ([`EndKind::PingStorm`]).
    pub ping_storms: u64,
    /// Devices refused because their domain had `MAX_DEVICES_PER_DOMAIN` already.
    pub refused_cap: u64,
    /// Steps and connects postponed by the rate limits.
    pub throttled: u64,
    /// Peer-caused log lines not printed (over the per-device budget).
    pub log_suppressed: u64,
    /// Tenants released (each once per tenancy; see [`ReleaseReason`]).
    pub tenants_released: u64,
}

impl fmt::Display for BackendStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attached={} connected={} refused_entry={} refused_frontend={} refused_connect={} \
             closed_by_client={} client_gone={} detached={} broken={} client_let_go={} \
             event_storms={} ping_storms={} refused_cap={} throttled={} log_suppressed={} \
             tenants_released={}",
            self.attached,
            self.connected,
            self.refused_entry,
            self.refused_frontend,
            self.refused_connect,
            self.closed_by_client,
            self.client_gone,
            self.detached,
            self.broken,
            self.client_let_go,
            self.event_storms,
            self.ping_storms,
            self.refused_cap,
            self.throttled,
            self.log_suppressed,
            self.tenants_released
        )
    }
}

/// How the serving loop saw a connection end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// The client broke the protocol.
    Violation,
    /// The client's process let go of its pages.
    ClientLetGo,
    /// Events far beyond what its calls explain.
    EventStorm,
    /// Pings far beyond what its calls explain.
    PingStorm,
}

/// Why a tenant was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    /// Its devices were taken offline by the toolstack.
    Detached,
    /// Its last device's backend entry was removed.
    DeviceRemoved,
    /// Its domain was destroyed.
    DomainGone,
}

impl fmt::Display for ReleaseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleaseReason::Detached => "detached",
            ReleaseReason::DeviceRemoved => "device removed",
            ReleaseReason::DomainGone => "domain gone",
        })
    }
}
