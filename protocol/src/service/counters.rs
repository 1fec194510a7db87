//! Calls, errors and handler faults per service, per tenant and in total, for introspection's
//! `list_stats`.
//!
//! A tenant may learn its own counts, never another's (they tell what the other does and when);
//! the totals over all tenants go only to a privileged caller (see
//! [`Registry::set_privileged`](super::Registry::set_privileged)). The per-tenant table is
//! fixed ([`MAX_COUNTED_PEERS`] tenants, no heap): a tenant arriving when it is full is counted
//! in the totals only and sees zeros (and the calls are counted in
//! [`ServiceCounters::uncounted_calls`]). A tenant that goes is forgotten
//! ([`ServiceCounters::forget_peer`]), which frees its row, so a later tenant with the same
//! id starts at zero.

#[cfg(feature = "alloc")]
extern crate alloc;

use zerocopy::FromZeros;

use super::registry::MAX_SERVICES;
use crate::layout::Status;
use crate::transport::PeerId;

/// Tenants with their own counters; more are counted in the totals only.
pub const MAX_COUNTED_PEERS: usize = 256;

/// Services counted: every registered one plus introspection.
const COUNTED_SERVICES: usize = MAX_SERVICES + 1;

/// The counts of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromZeros)]
pub struct Counts {
    /// Calls naming the service (refused ones included).
    pub calls: u64,
    /// Of those, calls whose status was not `Ok`.
    pub errors: u64,
    /// Of those, calls the handler did not finish: `HandlerFault` (it faulted, panicked, wrote
    /// a bad reply) or `BudgetExceeded`.
    pub faults: u64,
}

impl Counts {
    const ZERO: Counts = Counts {
        calls: 0,
        errors: 0,
        faults: 0,
    };

    fn add(&mut self, status: Status) {
        self.calls += 1;
        self.errors += u64::from(status != Status::Ok);
        self.faults += u64::from(matches!(
            status,
            Status::HandlerFault | Status::BudgetExceeded
        ));
    }
}

/// Counts per service, in the order of [`ServiceCounters::services`].
type Tally = [Counts; COUNTED_SERVICES];

/// Calls, errors and faults per service id, in total and per tenant, kept by the server across
/// registries (a server may build a [`Registry`](super::Registry) per loop iteration; its
/// counters must outlive it). About 70 KiB: keep it off small stacks
/// (`ServiceCounters::new_boxed`, feature `alloc`).
#[derive(Clone, Debug, FromZeros)]
pub struct ServiceCounters {
    /// Service ids in the order first seen; column `i` of every tally counts `services[i]`.
    services: [u32; COUNTED_SERVICES],
    service_count: usize,
    totals: Tally,
    /// Tenants with a row: `peer_ids[..peer_count]`, rows in the same order (kept dense).
    peer_ids: [PeerId; MAX_COUNTED_PEERS],
    peer_tallies: [Tally; MAX_COUNTED_PEERS],
    peer_count: usize,
    /// Row of the tenant counted last (calls come in runs from one connection).
    last_row: usize,
    /// Calls to a service id nobody serves.
    pub unknown_service: u64,
    /// Calls by tenants that found the table full (counted in the totals only).
    pub uncounted_calls: u64,
}

impl Default for ServiceCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceCounters {
    /// Counters with every count zero and no tenant rows.
    pub const fn new() -> Self {
        ServiceCounters {
            services: [0; COUNTED_SERVICES],
            service_count: 0,
            totals: [Counts::ZERO; COUNTED_SERVICES],
            peer_ids: [PeerId(0); MAX_COUNTED_PEERS],
            peer_tallies: [[Counts::ZERO; COUNTED_SERVICES]; MAX_COUNTED_PEERS],
            peer_count: 0,
            last_row: 0,
            unknown_service: 0,
            uncounted_calls: 0,
        }
    }

    /// Fresh counters allocated in place on the heap, never on the stack.
    #[cfg(feature = "alloc")]
    pub fn new_boxed() -> alloc::boxed::Box<Self> {
        Self::new_box_zeroed().expect("ServiceCounters is not a zero-sized type")
    }

    /// Counts one call by `peer` to `service` that ended with `status`.
    pub fn record(&mut self, peer: PeerId, service: u32, status: Status) {
        let Some(column) = self.column(service) else {
            return;
        };
        self.totals[column].add(status);
        match self.row_or_insert(peer) {
            Some(row) => self.peer_tallies[row][column].add(status),
            None => self.uncounted_calls += 1,
        }
    }

    /// The counts of `service` over all tenants.
    pub fn total(&self, service: u32) -> Counts {
        self.find_column(service)
            .map_or(Counts::ZERO, |c| self.totals[c])
    }

    /// The counts of `service` by `peer` alone.
    pub fn of_peer(&self, peer: PeerId, service: u32) -> Counts {
        match (self.row(peer), self.find_column(service)) {
            (Some(row), Some(column)) => self.peer_tallies[row][column],
            _ => Counts::ZERO,
        }
    }

    /// Drops `peer`'s own counters (it went away); the totals keep its calls.
    pub fn forget_peer(&mut self, peer: PeerId) {
        let Some(row) = self.row(peer) else {
            return;
        };
        let last = self.peer_count - 1;
        self.peer_ids[row] = self.peer_ids[last];
        self.peer_tallies[row] = self.peer_tallies[last];
        self.peer_tallies[last] = [Counts::ZERO; COUNTED_SERVICES];
        self.peer_count = last;
        self.last_row = 0;
    }

    fn find_column(&self, service: u32) -> Option<usize> {
        self.services[..self.service_count]
            .iter()
            .position(|&s| s == service)
    }

    /// The column of `service`, added if there is room (there always is for the services of one
    /// registry; ids seen are never dropped).
    fn column(&mut self, service: u32) -> Option<usize> {
        if let Some(column) = self.find_column(service) {
            return Some(column);
        }
        let column = self.service_count;
        *self.services.get_mut(column)? = service;
        self.service_count += 1;
        Some(column)
    }

    fn row(&self, peer: PeerId) -> Option<usize> {
        if self.last_row < self.peer_count && self.peer_ids[self.last_row] == peer {
            return Some(self.last_row);
        }
        self.peer_ids[..self.peer_count]
            .iter()
            .position(|&p| p == peer)
    }

    fn row_or_insert(&mut self, peer: PeerId) -> Option<usize> {
        let row = match self.row(peer) {
            Some(row) => row,
            None if self.peer_count < MAX_COUNTED_PEERS => {
                let row = self.peer_count;
                self.peer_ids[row] = peer;
                self.peer_count += 1;
                row
            }
            None => return None,
        };
        self.last_row = row;
        Some(row)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    /// (calls, errors).
    fn two(counts: Counts) -> (u64, u64) {
        (counts.calls, counts.errors)
    }

    #[test]
    fn handler_faults_and_budget_overruns_count_as_faults() {
        let mut counters = ServiceCounters::new_boxed();
        let a = PeerId(1);
        for status in [
            Status::Ok,
            Status::HandlerFault,
            Status::BudgetExceeded,
            Status::Busy,
        ] {
            counters.record(a, 5, status);
        }
        let want = Counts {
            calls: 4,
            errors: 3,
            faults: 2,
        };
        assert_eq!(counters.of_peer(a, 5), want);
        assert_eq!(counters.total(5), want);
    }

    #[test]
    fn each_tenant_has_its_own_counts_and_the_totals_add_up() {
        let mut counters = ServiceCounters::new_boxed();
        let (a, b) = (PeerId(1), PeerId(2));
        counters.record(a, 3, Status::Ok);
        counters.record(a, 3, Status::Busy);
        counters.record(b, 3, Status::Ok);
        counters.record(b, 1, Status::Ok);
        assert_eq!(two(counters.of_peer(a, 3)), (2, 1));
        assert_eq!(two(counters.of_peer(a, 1)), (0, 0));
        assert_eq!(two(counters.of_peer(b, 3)), (1, 0));
        assert_eq!(two(counters.total(3)), (3, 1));
        assert_eq!(two(counters.total(1)), (1, 0));
        assert_eq!(two(counters.of_peer(PeerId(9), 3)), (0, 0));
    }

    #[test]
    fn a_forgotten_tenant_starts_at_zero_and_others_keep_theirs() {
        let mut counters = ServiceCounters::new_boxed();
        for peer in 0..4 {
            for _ in 0..=peer {
                counters.record(PeerId(peer), 1, Status::Ok);
            }
        }
        counters.forget_peer(PeerId(1));
        counters.forget_peer(PeerId(77)); // never seen: nothing happens
        assert_eq!(two(counters.of_peer(PeerId(1), 1)), (0, 0));
        for peer in [0, 2, 3] {
            assert_eq!(
                two(counters.of_peer(PeerId(peer), 1)),
                (u64::from(peer) + 1, 0)
            );
        }
        assert_eq!(two(counters.total(1)), (10, 0));
        counters.record(PeerId(1), 1, Status::BadArguments);
        assert_eq!(two(counters.of_peer(PeerId(1), 1)), (1, 1));
    }

    #[test]
    fn tenants_beyond_the_table_count_in_the_totals_only() {
        let mut counters = ServiceCounters::new_boxed();
        let table = MAX_COUNTED_PEERS as u32;
        for peer in 0..table + 10 {
            counters.record(PeerId(peer), 1, Status::Ok);
        }
        assert_eq!(two(counters.of_peer(PeerId(table - 1), 1)), (1, 0));
        assert_eq!(two(counters.of_peer(PeerId(table), 1)), (0, 0));
        assert_eq!(two(counters.total(1)), (u64::from(table) + 10, 0));
        assert_eq!(counters.uncounted_calls, 10);
        // A row freed by a tenant that went is taken by the next newcomer.
        counters.forget_peer(PeerId(0));
        counters.record(PeerId(table + 20), 1, Status::Ok);
        assert_eq!(two(counters.of_peer(PeerId(table + 20), 1)), (1, 0));
    }

    #[test]
    fn service_ids_beyond_the_columns_are_not_counted() {
        let mut counters = ServiceCounters::new_boxed();
        for service in 0..COUNTED_SERVICES as u32 + 1 {
            counters.record(PeerId(1), service, Status::Ok);
        }
        assert_eq!(two(counters.total(0)), (1, 0));
        assert_eq!(two(counters.total(COUNTED_SERVICES as u32)), (0, 0));
    }
}
