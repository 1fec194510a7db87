//! Who holds the server's connection slots: a count per uid (the tenant), the caps, and the
//! choice of an idle connection to reap when a newcomer finds the server full.
//!
//! - A tenant is a uid. Every connection of one uid, from any process, shares one identity
//!   (and one kv namespace); a pid plays no part, so pid reuse gives nothing.
//! - A uid may hold at most `max_per_uid` connections (set-up included), the server at most
//!   `max_clients`.
//! - Under pressure only (the newcomer's uid at its cap, or the server full), the connection
//!   idle longest is reaped, if it has been idle at least `idle_reap`: the newcomer's own uid's
//!   first when that uid is at its cap (it competes with itself), otherwise any uid's. Without
//!   pressure nothing is ever reaped, however long it idles.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Why a connection attempt was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_clients` connections and none has idled long enough to reap.
    TooManyClients,
    /// The uid holds its share of connections and none of them has idled long enough to reap.
    TooManyForUid(u32),
    /// The set-up went wrong (bad hello, timeout, hangup, resources).
    SetUp(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyClients => write!(f, "too many clients"),
            Refusal::TooManyForUid(uid) => write!(f, "too many connections for uid {uid}"),
            Refusal::SetUp(why) => write!(f, "{why}"),
        }
    }
}

/// What a newcomer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<Id> {
    /// A free slot.
    Admit,
    /// Admit after reaping this idle connection.
    Reap(Id),
    /// Refused, for this reason.
    Refuse(Refusal),
}

/// Connections per uid.
#[derive(Debug, Default)]
pub struct TenantCounts {
    per_uid: HashMap<u32, usize>,
}

impl TenantCounts {
    /// Connections `uid` holds.
    pub fn of(&self, uid: u32) -> usize {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Counts one more connection of `uid`.
    pub fn add(&mut self, uid: u32) {
        *self.per_uid.entry(uid).or_default() += 1;
    }

    /// Counts one connection of `uid` gone; true when it was the uid's last.
    pub fn remove(&mut self, uid: u32) -> bool {
        let Some(count) = self.per_uid.get_mut(&uid) else {
            return false;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.per_uid.remove(&uid);
            return true;
        }
        false
    }
}

/// The caps a newcomer is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections in all.
    pub max_clients: usize,
    /// Connections per uid.
    pub max_per_uid: usize,
    /// How long without a request makes a connection reapable.
    pub idle_reap: Duration,
}

/// One connection a newcomer may displace: its id, uid and when it last had a request
/// (`None`: not reapable, e.g. still setting up).
#[derive(Debug, Clone, Copy)]
pub struct Slot<Id> {
    /// The connection's id.
    pub id: Id,
    /// Its tenant.
    pub uid: u32,
    /// When it last had a request; `None`: not reapable.
    pub last_request: Option<Instant>,
}

/// Decides whether a newcomer of `uid` gets in, and whom it displaces.
pub fn admit<Id: Copy>(
    caps: Caps,
    counts: &TenantCounts,
    total: usize,
    uid: u32,
    slots: impl Iterator<Item = Slot<Id>>,
    now: Instant,
) -> Admission<Id> {
    let uid_full = counts.of(uid) >= caps.max_per_uid;
    if !uid_full && total < caps.max_clients {
        return Admission::Admit;
    }
    let idlest = slots
        .filter(|slot| !uid_full || slot.uid == uid)
        .filter_map(|slot| {
            let idle = now.checked_duration_since(slot.last_request?)?;
            (idle >= caps.idle_reap).then_some((idle, slot.id))
        })
        .max_by_key(|&(idle, _)| idle);
    match idlest {
        Some((_, id)) => Admission::Reap(id),
        None if uid_full => Admission::Refuse(Refusal::TooManyForUid(uid)),
        None => Admission::Refuse(Refusal::TooManyClients),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        max_clients: 4,
        max_per_uid: 2,
        idle_reap: Duration::from_secs(10),
    };

    fn slots(now: Instant, list: &[(u32, u32, u64)]) -> Vec<Slot<u32>> {
        list.iter()
            .map(|&(id, uid, idle_s)| Slot {
                id,
                uid,
                last_request: Some(now - Duration::from_secs(idle_s)),
            })
            .collect()
    }

    fn counts(uids: &[u32]) -> TenantCounts {
        let mut counts = TenantCounts::default();
        uids.iter().for_each(|&uid| counts.add(uid));
        counts
    }

    #[test]
    fn free_slots_admit_without_reaping_however_idle_the_others() {
        let now = Instant::now() + Duration::from_secs(100);
        let list = slots(now, &[(1, 7, 99)]);
        let got = admit(CAPS, &counts(&[7]), 1, 8, list.into_iter(), now);
        assert_eq!(got, Admission::Admit);
    }

    #[test]
    fn a_uid_at_its_cap_reaps_its_own_idlest_or_is_refused() {
        let now = Instant::now() + Duration::from_secs(100);
        // uid 7 holds two; uid 8's connection idles longest, but uid 7 competes with itself.
        let list = slots(now, &[(1, 7, 11), (2, 7, 30), (3, 8, 90)]);
        let got = admit(CAPS, &counts(&[7, 7, 8]), 3, 7, list.into_iter(), now);
        assert_eq!(got, Admission::Reap(2));
        let busy = slots(now, &[(1, 7, 1), (2, 7, 9), (3, 8, 90)]);
        let got = admit(CAPS, &counts(&[7, 7, 8]), 3, 7, busy.into_iter(), now);
        assert_eq!(got, Admission::Refuse(Refusal::TooManyForUid(7)));
        assert_eq!(
            Refusal::TooManyForUid(7).to_string(),
            "too many connections for uid 7"
        );
    }

    #[test]
    fn a_full_server_reaps_the_idlest_of_anyone_only_past_the_idle_time() {
        let now = Instant::now() + Duration::from_secs(100);
        let list = slots(now, &[(1, 7, 12), (2, 7, 50), (3, 8, 20), (4, 9, 3)]);
        let got = admit(CAPS, &counts(&[7, 7, 8, 9]), 4, 10, list.into_iter(), now);
        assert_eq!(got, Admission::Reap(2));
        let fresh = slots(now, &[(1, 7, 2), (2, 7, 5), (3, 8, 9), (4, 9, 3)]);
        let got = admit(CAPS, &counts(&[7, 7, 8, 9]), 4, 10, fresh.into_iter(), now);
        assert_eq!(got, Admission::Refuse(Refusal::TooManyClients));
        // Connections still setting up are never reaped (their own timeout ends them).
        let setting_up = [Slot {
            id: 1,
            uid: 7,
            last_request: None,
        }];
        let got = admit(
            CAPS,
            &counts(&[7, 7, 8, 9]),
            4,
            10,
            setting_up.into_iter(),
            now,
        );
        assert_eq!(got, Admission::Refuse(Refusal::TooManyClients));
    }

    #[test]
    fn counts_report_the_last_connection_of_a_uid() {
        let mut counts = counts(&[5, 5]);
        assert!(!counts.remove(5));
        assert!(counts.remove(5));
        assert!(!counts.remove(5));
        assert_eq!(counts.of(5), 0);
    }
}
