//! The service table: a fixed-capacity [`Registry`] of [`ServiceHandler`]s with per-service
//! access checks, the [`Dispatcher`] a server polls with. It answers the built-in introspection
//! service itself and keeps the per-tenant [`ServiceCounters`] when given some.

use super::set::{id_allowed, ServiceSet, FIRST_USER_SERVICE_ID};
use super::{
    BatchedCall, CallContext, Dispatcher, ServiceCounters, ServiceHandler, ServiceInfo, MAX_BATCH,
};
use crate::layout::Status;
use crate::services::introspection::{Introspector, StatsScope};
use crate::transport::PeerId;

/// Decides whether a peer may call a service.
pub type AccessCheck = fn(PeerId) -> bool;

/// Maximum services a [`Registry`] holds (besides the built-in introspection service).
pub const MAX_SERVICES: usize = 16;

struct RegistryEntry<'a> {
    /// The handler's service id, read once at registration (looked up at every call).
    id: u32,
    /// The handler's batch limit (clamped to `1..=MAX_BATCH`), read once at registration.
    batch_limit: usize,
    handler: &'a mut dyn ServiceHandler,
    access: Option<AccessCheck>,
}

/// Why a service could not be registered (a server does not start with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// Service `name` takes id `id`, which `existing` already has.
    DuplicateServiceId {
        /// The service id both take.
        id: u32,
        /// The service being registered.
        name: &'static str,
        /// The service registered earlier with that id.
        existing: &'static str,
    },
    /// Service `name` takes id `id`, which is reserved for the project (user services take
    /// ids from `FIRST_USER_SERVICE_ID`, 1024, up).
    ReservedId {
        /// The reserved id (below `FIRST_USER_SERVICE_ID`).
        id: u32,
        /// The service being registered.
        name: &'static str,
    },
    /// Service `name` does not fit: a registry holds `MAX_SERVICES` services.
    Full {
        /// The service that did not fit.
        name: &'static str,
    },
    /// Service `name` cannot start here (see `ServiceUnavailable`).
    Unavailable {
        /// The service that cannot start.
        name: &'static str,
        /// Why, as a clause that completes "cannot start: …".
        why: &'static str,
    },
}

impl core::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegistryError::DuplicateServiceId { id, name, existing } => write!(
                f,
                "Service \"{name}\" takes id {id}, which service \"{existing}\" already has."
            ),
            RegistryError::ReservedId { id, name } => write!(
                f,
                "Service \"{name}\" takes id {id}, which is reserved for the project's own \
                 services: user services take ids from {FIRST_USER_SERVICE_ID} up."
            ),
            RegistryError::Unavailable { name, why } => {
                write!(f, "Service \"{name}\" cannot start: {why}.")
            }
            RegistryError::Full { name } => write!(
                f,
                "Service \"{name}\" does not fit: a server holds at most {MAX_SERVICES} services."
            ),
        }
    }
}

impl core::error::Error for RegistryError {}

/// A fixed-capacity service table (no heap needed) that answers the built-in introspection
/// service itself, listing only the services the calling peer may use, and reporting the
/// caller's own call counts (the totals over all tenants only to a privileged caller).
pub struct Registry<'a> {
    entries: [Option<RegistryEntry<'a>>; MAX_SERVICES],
    counters: Option<&'a mut ServiceCounters>,
    privileged: Option<AccessCheck>,
}

impl Default for Registry<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Registry<'a> {
    /// An empty registry that keeps no counters and has no privileged peer.
    pub fn new() -> Self {
        Registry {
            entries: [const { None }; MAX_SERVICES],
            counters: None,
            privileged: None,
        }
    }

    /// A registry that counts calls and errors per service and tenant into `counters` (and
    /// reports them through introspection's `list_stats`).
    pub fn with_counters(counters: &'a mut ServiceCounters) -> Self {
        Registry {
            counters: Some(counters),
            ..Self::new()
        }
    }

    /// Peers accepted by `check` (e.g. dom0, an administrator) get the totals over all tenants
    /// from introspection's `list_stats`; everyone else gets only its own counts.
    pub fn set_privileged(&mut self, check: AccessCheck) {
        self.privileged = Some(check);
    }

    /// A tenant went away (its device detached, its domain or host identity gone): every
    /// handler drops what it kept for `peer`, and its own counters are cleared, so a later
    /// tenant given the same id starts afresh.
    pub fn forget_peer(&mut self, peer: PeerId) {
        for entry in self.entries.iter_mut().flatten() {
            entry.handler.forget_peer(peer);
        }
        if let Some(counters) = self.counters.as_deref_mut() {
            counters.forget_peer(peer);
        }
    }

    /// Registers every service of `set` (see [`ServiceSet`]).
    pub fn register_set(&mut self, set: &'a mut impl ServiceSet) -> Result<(), RegistryError> {
        set.register_into(self)
    }

    /// What the registry serves, for a start-up line: `echo, arith, kv, introspection`
    /// (registration order, introspection last).
    pub fn serving(&self) -> Serving<'_, 'a> {
        Serving(self)
    }

    /// Registers a service anyone may call.
    pub fn register(&mut self, handler: &'a mut dyn ServiceHandler) -> Result<(), RegistryError> {
        self.insert(handler, None)
    }

    /// Registers a service only peers accepted by `access` may call (others get
    /// `AccessDenied`, and introspection does not list it to them).
    pub fn register_restricted(
        &mut self,
        handler: &'a mut dyn ServiceHandler,
        access: AccessCheck,
    ) -> Result<(), RegistryError> {
        self.insert(handler, Some(access))
    }

    fn insert(
        &mut self,
        handler: &'a mut dyn ServiceHandler,
        access: Option<AccessCheck>,
    ) -> Result<(), RegistryError> {
        let ServiceInfo { id, name, .. } = *handler.info();
        let existing = if id == crate::services::introspection::SERVICE_ID {
            Some(crate::services::introspection::NAME)
        } else {
            self.entries
                .iter()
                .flatten()
                .map(|e| e.handler.info())
                .find(|info| info.id == id)
                .map(|info| info.name)
        };
        if let Some(existing) = existing {
            return Err(RegistryError::DuplicateServiceId { id, name, existing });
        }
        if !id_allowed(id, name) {
            return Err(RegistryError::ReservedId { id, name });
        }
        let free = self
            .entries
            .iter_mut()
            .find(|e| e.is_none())
            .ok_or(RegistryError::Full { name })?;
        let batch_limit = handler.batch_limit().clamp(1, MAX_BATCH);
        *free = Some(RegistryEntry {
            id,
            batch_limit,
            handler,
            access,
        });
        Ok(())
    }

    /// The registered services and their access checks, in registration order: what a server
    /// that runs the handlers elsewhere (the service VM, in address spaces of their own) takes
    /// over, registering stand-ins instead.
    pub fn into_services(
        self,
    ) -> impl Iterator<Item = (&'a mut dyn ServiceHandler, Option<AccessCheck>)> {
        self.entries
            .into_iter()
            .flatten()
            .map(|entry| (entry.handler, entry.access))
    }

    /// The services `peer` may call, introspection first; returns how many were written.
    pub fn visible_services(
        &self,
        peer: PeerId,
        out: &mut [&'static ServiceInfo; MAX_SERVICES + 1],
    ) -> usize {
        out[0] = &crate::services::introspection::INFO;
        let mut n = 1;
        for entry in self.entries.iter().flatten() {
            if entry.access.is_none_or(|allowed| allowed(peer)) {
                out[n] = entry.handler.info();
                n += 1;
            }
        }
        n
    }
}

/// The names of a registry's services (see [`Registry::serving`]).
pub struct Serving<'r, 'a>(&'r Registry<'a>);

impl core::fmt::Display for Serving<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for entry in self.0.entries.iter().flatten() {
            write!(f, "{}, ", entry.handler.info().name)?;
        }
        f.write_str(crate::services::introspection::NAME)
    }
}

impl<'a> Registry<'a> {
    #[inline]
    fn route(&mut self, call: &mut CallContext<'_>) -> Status {
        let service = call.service();
        if service == crate::services::introspection::SERVICE_ID {
            return self.introspect(call);
        }
        match self.handler_for(service, call.peer()) {
            Ok(handler) => handler.handle(call),
            Err(status) => status,
        }
    }

    /// Answers a call to the built-in introspection service (seldom: kept out of the path of
    /// every other call).
    #[inline(never)]
    fn introspect(&mut self, call: &mut CallContext<'_>) -> Status {
        let mut infos = [&crate::services::introspection::INFO; MAX_SERVICES + 1];
        let n = self.visible_services(call.peer(), &mut infos);
        let scope = if self.privileged.is_some_and(|check| check(call.peer())) {
            StatsScope::Totals
        } else {
            StatsScope::Own(call.peer())
        };
        let mut server = Introspector::new(&infos[..n]);
        if let Some(counters) = self.counters.as_deref() {
            server = server.with_counters(counters, scope);
        }
        crate::services::introspection::dispatch(&mut server, call)
    }

    /// Where `service` is registered.
    #[inline]
    fn position(&self, service: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.id == service))
    }

    /// The registered handler of `service`, if `peer` may call it.
    #[inline]
    fn handler_for(
        &mut self,
        service: u32,
        peer: PeerId,
    ) -> Result<&mut &'a mut dyn ServiceHandler, Status> {
        let Some(entry) = self
            .position(service)
            .and_then(|at| self.entries[at].as_mut())
        else {
            return Err(Status::UnknownService);
        };
        if let Some(allowed) = entry.access {
            if !allowed(peer) {
                return Err(Status::AccessDenied);
            }
        }
        Ok(&mut entry.handler)
    }

    #[inline]
    fn count(&mut self, call: &CallContext<'_>, status: Status) {
        if let Some(counters) = self.counters.as_deref_mut() {
            if status == Status::UnknownService {
                counters.unknown_service += 1;
            } else {
                counters.record(call.peer(), call.service(), status);
            }
        }
    }
}

impl Dispatcher for Registry<'_> {
    #[inline]
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        let status = self.route(call);
        self.count(call, status);
        status
    }

    #[inline]
    fn batch_limit(&self, service: u32) -> usize {
        self.position(service)
            .and_then(|at| self.entries[at].as_ref())
            .map_or(1, |e| e.batch_limit)
    }

    /// Runs of consecutive calls to one registered service go to its handler as one batch;
    /// introspection and refused calls are routed one by one.
    fn dispatch_batch(&mut self, batch: &mut [BatchedCall<'_>]) {
        let mut start = 0;
        while start < batch.len() {
            let (service, peer) = (batch[start].call.service(), batch[start].call.peer());
            let end = start
                + batch[start..]
                    .iter()
                    .take_while(|b| b.call.service() == service && b.call.peer() == peer)
                    .count();
            let run = &mut batch[start..end];
            let routed = service != crate::services::introspection::SERVICE_ID
                && match self.handler_for(service, peer) {
                    Ok(handler) => {
                        handler.handle_batch(run);
                        true
                    }
                    Err(_) => false,
                };
            for one in run.iter_mut() {
                if !routed {
                    one.status = self.route(&mut one.call);
                }
                self.count(&one.call, one.status);
            }
            start = end;
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::service::method_ids_unique;
    use crate::service::MethodInfo;

    #[test]
    fn registry_refuses_duplicates_and_overflow() {
        let mut handlers: Vec<crate::services::echo::Handler<crate::services::echo::EchoServer>> =
            (0..2)
                .map(|_| crate::services::echo::Handler(crate::services::echo::EchoServer))
                .collect();
        let mut registry = Registry::new();
        let (first, second) = handlers.split_at_mut(1);
        registry.register(&mut first[0]).unwrap();
        assert_eq!(
            registry.register(&mut second[0]),
            Err(RegistryError::DuplicateServiceId {
                id: 1,
                name: "echo",
                existing: "echo"
            })
        );
        assert_eq!(registry.serving().to_string(), "echo, introspection");
        assert!(method_ids_unique(crate::services::kv::METHODS));
        let dup = [
            MethodInfo {
                id: 1,
                name: "a",
                signature: crate::signature::Signature::of::<(), ()>(false, false),
            },
            MethodInfo {
                id: 1,
                name: "b",
                signature: crate::signature::Signature::of::<(), ()>(false, false),
            },
        ];
        assert!(!method_ids_unique(&dup));

        struct Dummy(&'static ServiceInfo);
        impl ServiceHandler for Dummy {
            fn info(&self) -> &'static ServiceInfo {
                self.0
            }
            fn handle(&mut self, _call: &mut CallContext<'_>) -> Status {
                Status::Ok
            }
        }
        let mut dummies: Vec<Dummy> = (FIRST_USER_SERVICE_ID
            ..FIRST_USER_SERVICE_ID + MAX_SERVICES as u32 + 1)
            .map(|id| {
                Dummy(Box::leak(Box::new(ServiceInfo {
                    id,
                    name: "dummy",
                    version: 1,
                    methods: &[],
                })))
            })
            .collect();
        let mut full = Registry::new();
        let (fits, extra) = dummies.split_at_mut(MAX_SERVICES);
        for dummy in fits {
            full.register(dummy).unwrap();
        }
        assert_eq!(
            full.register(&mut extra[0]),
            Err(RegistryError::Full { name: "dummy" })
        );
        assert!(RegistryError::Full { name: "dummy" }
            .to_string()
            .starts_with("Service \"dummy\" does not fit"));
        // The introspection id is reserved.
        let mut intro = Dummy(&crate::services::introspection::INFO);
        assert_eq!(
            Registry::new().register(&mut intro),
            Err(RegistryError::DuplicateServiceId {
                id: 0,
                name: "introspection",
                existing: "introspection"
            })
        );
        // Ids below FIRST_USER_SERVICE_ID are the project's.
        let mut squatter = Dummy(Box::leak(Box::new(ServiceInfo {
            id: 7,
            name: "counter",
            version: 1,
            methods: &[],
        })));
        let refused = Registry::new().register(&mut squatter);
        assert_eq!(
            refused,
            Err(RegistryError::ReservedId {
                id: 7,
                name: "counter"
            })
        );
        assert!(refused.unwrap_err().to_string().contains("from 1024 up"));
    }
}
