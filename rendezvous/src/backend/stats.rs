//! The backend's counters: every refusal and every end of a connection, by cause.

use core::fmt;

/// Why devices were refused or closed, and what the limits held back.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    pub attached: u64,
    pub connected: u64,
    pub refused_entry: u64,
    pub refused_frontend: u64,
    pub refused_connect: u64,
    pub closed_by_client: u64,
    pub client_gone: u64,
    pub detached: u64,
    pub broken: u64,
    pub client_let_go: u64,
    pub event_storms: u64,
    pub ping_storms: u64,
    /// Devices refused because their domain had `MAX_DEVICES_PER_DOMAIN` already.
    pub refused_cap: u64,
    /// Steps and connects postponed by the rate limits.
    pub throttled: u64,
    /// Peer-caused log lines not printed (over the per-device budget).
    pub log_suppressed: u64,
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
