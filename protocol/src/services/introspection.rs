//! The built-in introspection service: which services a peer may call, their versions and
//! methods. Answered by [`crate::Registry`] itself (it knows the services); entries are written
//! into the caller's out-of-line result window.

use zerocopy::{Immutable, IntoBytes};

use super::name_field;
use crate::service::{Counts, ServiceCounters, ServiceInfo};
use crate::signature::{FieldEntry, MethodQuery, SignatureReply, ROLE_ARGS, ROLE_RESULT};
use crate::{BytesOut, CallContext, PeerId, Status};

crate::define_pod! {
    /// Which service to describe.
    #[derive(Default)]
    pub struct ServiceQuery {
        /// The service id.
        pub id: u32,
    }
}

crate::define_pod! {
    /// One service, as listed (32 bytes; the name is zero-padded, truncated to 20 bytes).
    #[derive(Default)]
    pub struct ServiceEntry {
        /// The service id.
        pub id: u32,
        /// The service's interface version.
        pub version: u32,
        /// How many methods it has.
        pub method_count: u32,
        /// Its name, zero-padded.
        pub name: [u8; 20],
    }
}

crate::define_pod! {
    /// One method, as listed (32 bytes; the name is zero-padded, truncated to 28 bytes).
    #[derive(Default)]
    pub struct MethodEntry {
        /// The method id.
        pub id: u32,
        /// Its name, zero-padded.
        pub name: [u8; 28],
    }
}

crate::define_pod! {
    /// How many entries were written into the result window, and how many there are.
    #[derive(Default)]
    pub struct ListReply {
        /// Entries written into the result window (as many as fit).
        pub written: u32,
        /// Entries there are in all.
        pub total: u32,
    }
}

crate::define_pod! {
    /// Calls and errors of one service since the server started: the caller's own, or summed over
    /// all tenants for a privileged caller (32 bytes).
    #[derive(Default)]
    pub struct ServiceStatsEntry {
        /// The service id.
        pub id: u32,
        /// Zero.
        pub reserved: u32,
        /// Calls naming the service (refused ones included).
        pub calls: u64,
        /// Of those, calls whose status was not `Ok`.
        pub errors: u64,
        /// Of those, calls its handler did not finish: `HandlerFault` (it faulted, panicked or
        /// wrote a bad reply) or `BudgetExceeded`.
        pub faults: u64,
    }
}

const _: () = assert!(core::mem::size_of::<ServiceStatsEntry>() == 32);
const _: () = assert!(core::mem::offset_of!(ServiceStatsEntry, calls) == 8);
const _: () = assert!(core::mem::size_of::<ServiceEntry>() == 32);
const _: () = assert!(core::mem::size_of::<MethodEntry>() == 32);

crate::define_service! {
    /// Lists services, methods and versions.
    pub mod introspection {
        name = "introspection", id = 0, version = 1;
        /// Writes a `ServiceEntry` per visible service into the result window (as many as fit).
        fn list_services = 1 (()) -> ListReply, entries: bytes;
        /// Describes one visible service (`BadArguments` if there is none with that id).
        fn describe_service = 2 (ServiceQuery) -> ServiceEntry;
        /// Writes a `MethodEntry` per method of a visible service into the result window.
        fn list_methods = 3 (ServiceQuery) -> ListReply, entries: bytes;
        /// Writes a `ServiceStatsEntry` (the caller's own calls and errors so far; the totals
        /// over all tenants for a privileged caller) per visible service into the result
        /// window.
        fn list_stats = 4 (()) -> ListReply, entries: bytes;
        /// Describes one method of a visible service: sizes and flags inline, then a
        /// `FieldEntry` per field (arguments first) into the result window
        /// (`BadArguments` if there is no such service or method).
        fn method_signature = 5 (MethodQuery) -> SignatureReply, fields: bytes;
    }
}

pub use introspection::*;

/// Whose call counts `list_stats` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsScope {
    /// The calling tenant's own.
    Own(PeerId),
    /// The totals over all tenants (a privileged caller).
    Totals,
}

/// The introspection server over the services visible to the calling peer.
pub struct Introspector<'a> {
    services: &'a [&'static ServiceInfo],
    counters: Option<(&'a ServiceCounters, StatsScope)>,
}

impl<'a> Introspector<'a> {
    /// Without counters `list_stats` reports zeros.
    pub fn new(services: &'a [&'static ServiceInfo]) -> Self {
        Introspector {
            services,
            counters: None,
        }
    }

    /// `list_stats` reports `counters` as `scope` says.
    pub fn with_counters(self, counters: &'a ServiceCounters, scope: StatsScope) -> Self {
        Introspector {
            counters: Some((counters, scope)),
            ..self
        }
    }

    /// The counts of `service` as the caller may see them.
    fn stats_of(&self, service: u32) -> Counts {
        match self.counters {
            None => Counts::default(),
            Some((counters, StatsScope::Totals)) => counters.total(service),
            Some((counters, StatsScope::Own(peer))) => counters.of_peer(peer, service),
        }
    }

    fn find(&self, id: u32) -> Result<&'static ServiceInfo, Status> {
        self.services
            .iter()
            .copied()
            .find(|s| s.id == id)
            .ok_or(Status::BadArguments)
    }
}

/// The listing record of a service (its name truncated to 20 bytes).
pub fn entry_for(info: &ServiceInfo) -> ServiceEntry {
    ServiceEntry {
        id: info.id,
        version: info.version,
        method_count: info.methods.len() as u32,
        name: name_field(info.name),
    }
}

/// Writes records while they fit; returns how many were written.
fn write_records<T: IntoBytes + Immutable>(
    out: &mut BytesOut<'_>,
    records: impl Iterator<Item = T>,
) -> u32 {
    let mut written = 0;
    for record in records {
        if out.write_all(record.as_bytes()).is_err() {
            break;
        }
        written += 1;
    }
    written
}

impl introspection::Server for Introspector<'_> {
    fn list_stats(
        &mut self,
        _call: &mut CallContext<'_>,
        _: (),
        entries: &mut BytesOut<'_>,
    ) -> Result<ListReply, Status> {
        let written = write_records(
            entries,
            self.services.iter().map(|s| {
                let counts = self.stats_of(s.id);
                ServiceStatsEntry {
                    id: s.id,
                    calls: counts.calls,
                    errors: counts.errors,
                    faults: counts.faults,
                    ..Default::default()
                }
            }),
        );
        Ok(ListReply {
            written,
            total: self.services.len() as u32,
        })
    }

    fn list_services(
        &mut self,
        _call: &mut CallContext<'_>,
        _: (),
        entries: &mut BytesOut<'_>,
    ) -> Result<ListReply, Status> {
        let written = write_records(entries, self.services.iter().map(|s| entry_for(s)));
        Ok(ListReply {
            written,
            total: self.services.len() as u32,
        })
    }

    fn describe_service(
        &mut self,
        _call: &mut CallContext<'_>,
        query: ServiceQuery,
    ) -> Result<ServiceEntry, Status> {
        Ok(entry_for(self.find(query.id)?))
    }

    fn list_methods(
        &mut self,
        _call: &mut CallContext<'_>,
        query: ServiceQuery,
        entries: &mut BytesOut<'_>,
    ) -> Result<ListReply, Status> {
        let info = self.find(query.id)?;
        let written = write_records(
            entries,
            info.methods.iter().map(|m| MethodEntry {
                id: m.id,
                name: name_field(m.name),
            }),
        );
        Ok(ListReply {
            written,
            total: info.methods.len() as u32,
        })
    }

    fn method_signature(
        &mut self,
        _call: &mut CallContext<'_>,
        query: MethodQuery,
        fields: &mut BytesOut<'_>,
    ) -> Result<SignatureReply, Status> {
        let info = self.find(query.service)?;
        let method = info
            .methods
            .iter()
            .find(|m| m.id == query.method)
            .ok_or(Status::BadArguments)?;
        let signature = &method.signature;
        let entries = signature
            .args
            .iter()
            .map(|f| FieldEntry::of(f, ROLE_ARGS))
            .chain(
                signature
                    .result
                    .iter()
                    .map(|f| FieldEntry::of(f, ROLE_RESULT)),
            );
        let written = write_records(fields, entries);
        Ok(SignatureReply::of(signature, written))
    }
}
