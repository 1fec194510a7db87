//! Ring index arithmetic in the manner of Xen's `io/ring.h`: free-running 32-bit indices that
//! wrap, a slot is `index & (slots - 1)`, and event thresholds that say when a peer wants to be
//! woken. (A producer publishes by tagging each slot with its index, see
//! [`crate::layout::RequestHeader::seq`], so what is published needs no arithmetic; what is
//! free does.) Pure functions over private copies of the indices, so they are tested
//! exhaustively and shared by both ends.

/// Whether publishing a producer index that moved from `old` to `new` must notify a peer whose
/// event threshold is `event` ("wake me when the producer index passes `event - 1`"), i.e.
/// whether `event` lies in `(old, new]`, modulo 2^32 (`RING_PUSH_*_AND_CHECK_NOTIFY`).
#[inline]
pub const fn needs_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Free slots for a producer at private index `prod` given a consumer index `cons` it just read
/// from the peer, or `None` if `cons` is ahead of `prod` or more than `slots` behind it.
#[inline]
pub const fn free_slots(prod: u32, cons: u32, slots: u32) -> Option<u32> {
    let in_use = prod.wrapping_sub(cons);
    if in_use <= slots {
        Some(slots - in_use)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn notify_exactly_when_event_crossed() {
        // Peer asked to be woken at 5 (i.e. once index 5 is published).
        assert!(!needs_notify(0, 4, 5));
        assert!(needs_notify(4, 5, 5));
        assert!(needs_notify(0, 10, 5));
        assert!(!needs_notify(5, 10, 5));
        // Around the wrap.
        assert!(needs_notify(u32::MAX - 1, 1, 0));
        assert!(!needs_notify(u32::MAX - 1, u32::MAX, 0));
        // Nothing published: never notify.
        assert!(!needs_notify(7, 7, 7));
        assert!(!needs_notify(7, 7, 8));
    }

    #[test]
    fn free_slots_reject_impossible_indices() {
        assert_eq!(free_slots(5, 5, 16), Some(16));
        assert_eq!(free_slots(21, 5, 16), Some(0));
        assert_eq!(free_slots(22, 5, 16), None);
        assert_eq!(free_slots(5, 6, 16), None); // consumer ahead of producer
    }

    proptest! {
        #[test]
        fn notify_matches_interval_membership(old in any::<u32>(), step in 0u32..=4096, event in any::<u32>()) {
            let new = old.wrapping_add(step);
            // event in (old, new] walking forward from old.
            let in_interval = (1..=step).any(|k| old.wrapping_add(k) == event);
            prop_assert_eq!(needs_notify(old, new, event), in_interval);
        }

        #[test]
        fn free_slots_are_bounded(prod in any::<u32>(), cons in any::<u32>(), shift in 4u32..=10) {
            let slots = 1u32 << shift;
            match free_slots(prod, cons, slots) {
                Some(n) => { prop_assert!(n <= slots); prop_assert_eq!(prod.wrapping_sub(cons) + n, slots); }
                None => prop_assert!(prod.wrapping_sub(cons) > slots),
            }
        }
    }
}
