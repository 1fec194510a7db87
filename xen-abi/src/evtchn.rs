//! The two-level event-channel ABI's pending-port scan (`event_channel.h`, "2-level").
//!
//! Xen marks port `p` pending by setting bit `p % 64` of `shared_info.evtchn_pending[p / 64]`
//! and, if the port is unmasked, bit `p / 64` of the vCPU's `evtchn_pending_sel` selector. The
//! upcall handler atomically swaps the selector to 0 and scans the selected words for bits
//! that are pending and not masked.
//!
//! [`FairScanner`] does that scan the way Linux's 2-level code does: it resumes just after the
//! last port it served, so a port that fires continuously cannot starve higher-numbered ones,
//! and it re-reads each word as it goes so ports raised during the scan are served in it.
//! Each port is served at most once per scan, so the scan is bounded even against a peer that
//! re-raises its port as fast as it can.

use crate::sys_layout::{EVTCHN_2L_NR_CHANNELS, EVTCHN_BITS_PER_WORD, EVTCHN_WORDS};

/// An event-channel port number.
pub type Port = u32;

/// Where a port's bit lives in the pending/mask bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBit {
    /// Index of the 64-bit word in `evtchn_pending` / `evtchn_mask`.
    pub word: usize,
    /// The port's bit within that word.
    pub mask: u64,
}

/// The bitmap location of `port`, or `None` if the two-level ABI has no such port (a
/// hypercall or peer that hands out such a port is broken or hostile).
pub const fn port_bit(port: Port) -> Option<PortBit> {
    if port as usize >= EVTCHN_2L_NR_CHANNELS {
        return None;
    }
    Some(PortBit {
        word: port as usize / EVTCHN_BITS_PER_WORD,
        mask: 1 << (port as usize % EVTCHN_BITS_PER_WORD),
    })
}

/// Fresh reads of the shared bitmaps during a scan.
pub trait PendingWords {
    /// `evtchn_pending[word] & !evtchn_mask[word]`, read now (the kernel reads the live
    /// shared_info words atomically; tests use arrays).
    fn active(&mut self, word: usize) -> u64;
}

/// Private copies of the bitmaps (tests and host-side models).
pub struct BitmapSnapshot {
    /// Copy of `evtchn_pending`.
    pub pending: [u64; EVTCHN_WORDS],
    /// Copy of `evtchn_mask`.
    pub mask: [u64; EVTCHN_WORDS],
}

impl PendingWords for BitmapSnapshot {
    fn active(&mut self, word: usize) -> u64 {
        self.pending[word] & !self.mask[word]
    }
}

/// Resumable round-robin position of the pending scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairScanner {
    next_word: usize,
    next_bit: usize,
}

impl Default for FairScanner {
    fn default() -> Self {
        FairScanner::new()
    }
}

/// Bits `from..to` of a word (`from <= to <= 64`).
const fn bit_range(from: usize, to: usize) -> u64 {
    let upper = if to >= 64 { u64::MAX } else { (1u64 << to) - 1 };
    let lower = if from >= 64 {
        u64::MAX
    } else {
        (1u64 << from) - 1
    };
    upper & !lower
}

impl FairScanner {
    /// A scanner that starts at port 0.
    pub const fn new() -> FairScanner {
        FairScanner {
            next_word: 0,
            next_bit: 0,
        }
    }

    /// The port the next scan starts from.
    pub const fn resume_port(&self) -> Port {
        (self.next_word * EVTCHN_BITS_PER_WORD + self.next_bit) as Port
    }

    /// Serves the active ports of the words selected by `selector` (the value swapped out of
    /// `evtchn_pending_sel`), in round-robin order from the resume position, calling `serve`
    /// once per port. `serve` is expected to clear the port's pending bit before running its
    /// handler; the scan stays bounded (at most one call per port) even if it does not.
    /// Returns the number of ports served.
    pub fn scan<W: PendingWords + ?Sized>(
        &mut self,
        selector: u64,
        words: &mut W,
        mut serve: impl FnMut(Port),
    ) -> usize {
        let start_word = self.next_word;
        let start_bit = self.next_bit;
        let mut served = 0;
        // Steps 0..64 visit every word once starting at the resume word (from the resume bit);
        // step 64 revisits the resume word for the bits below the resume bit.
        for step in 0..=EVTCHN_WORDS {
            let word = (start_word + step) % EVTCHN_WORDS;
            if selector & (1 << word) == 0 {
                continue;
            }
            let (mut floor, limit) = match step {
                0 => (start_bit, EVTCHN_BITS_PER_WORD),
                EVTCHN_WORDS => (0, start_bit),
                _ => (0, EVTCHN_BITS_PER_WORD),
            };
            while floor < limit {
                let candidates = words.active(word) & bit_range(floor, limit);
                if candidates == 0 {
                    break;
                }
                let bit = candidates.trailing_zeros() as usize;
                serve((word * EVTCHN_BITS_PER_WORD + bit) as Port);
                served += 1;
                floor = bit + 1;
                (self.next_word, self.next_bit) = if floor == EVTCHN_BITS_PER_WORD {
                    ((word + 1) % EVTCHN_WORDS, 0)
                } else {
                    (word, floor)
                };
            }
        }
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmaps(ports: &[Port]) -> BitmapSnapshot {
        let mut snapshot = BitmapSnapshot {
            pending: [0; EVTCHN_WORDS],
            mask: [0; EVTCHN_WORDS],
        };
        for &port in ports {
            let bit = port_bit(port).unwrap();
            snapshot.pending[bit.word] |= bit.mask;
        }
        snapshot
    }

    fn selector_of(snapshot: &BitmapSnapshot) -> u64 {
        (0..EVTCHN_WORDS)
            .filter(|&w| snapshot.pending[w] != 0)
            .fold(0, |sel, w| sel | 1 << w)
    }

    /// Live bitmaps that `serve` can clear while the scan reads them, as in the kernel.
    struct Live(core::cell::RefCell<BitmapSnapshot>);

    impl PendingWords for &Live {
        fn active(&mut self, word: usize) -> u64 {
            self.0.borrow_mut().active(word)
        }
    }

    /// Runs one scan that clears each served port's pending bit, as the kernel does.
    fn scan_clearing(scanner: &mut FairScanner, snapshot: BitmapSnapshot) -> Vec<Port> {
        let selector = selector_of(&snapshot);
        let live = Live(core::cell::RefCell::new(snapshot));
        let mut served = Vec::new();
        scanner.scan(selector, &mut &live, |port| {
            let bit = port_bit(port).unwrap();
            live.0.borrow_mut().pending[bit.word] &= !bit.mask;
            served.push(port);
        });
        assert!(live.0.borrow().pending.iter().all(|w| *w == 0));
        served
    }

    #[test]
    fn port_bits() {
        assert_eq!(port_bit(0), Some(PortBit { word: 0, mask: 1 }));
        assert_eq!(port_bit(65), Some(PortBit { word: 1, mask: 2 }));
        assert_eq!(
            port_bit(4095),
            Some(PortBit {
                word: 63,
                mask: 1 << 63
            })
        );
        assert_eq!(port_bit(4096), None);
        assert_eq!(port_bit(u32::MAX), None);
    }

    #[test]
    fn fresh_scanner_serves_in_port_order() {
        let mut scanner = FairScanner::new();
        let served = scan_clearing(&mut scanner, bitmaps(&[4095, 3, 64, 1, 200, 63]));
        assert_eq!(served, vec![1, 3, 63, 64, 200, 4095]);
        // Resumes after 4095, i.e. wraps to port 0.
        assert_eq!(scanner.resume_port(), 0);
    }

    #[test]
    fn masked_and_unselected_ports_are_skipped() {
        let mut snapshot = bitmaps(&[2, 5, 130]);
        snapshot.mask[0] = 1 << 5;
        let mut served = Vec::new();
        // Word 2 (port 130) is pending but its selector bit is clear.
        FairScanner::new().scan(1, &mut snapshot, |p| served.push(p));
        assert_eq!(served, vec![2]);
    }

    #[test]
    fn scan_resumes_after_the_last_port_served() {
        let mut scanner = FairScanner::new();
        assert_eq!(scan_clearing(&mut scanner, bitmaps(&[5])), vec![5]);
        assert_eq!(scanner.resume_port(), 6);
        let served = scan_clearing(&mut scanner, bitmaps(&[2, 5, 9, 70]));
        assert_eq!(served, vec![9, 70, 2, 5]);
        assert_eq!(scanner.resume_port(), 6);
        assert_eq!(
            scan_clearing(&mut scanner, bitmaps(&[63, 64])),
            vec![63, 64]
        );
        assert_eq!(scanner.resume_port(), 65);
    }

    #[test]
    fn a_constantly_firing_port_does_not_starve_others() {
        // Port 1 is re-raised by its "peer" every time it is served; ports 2 and 100 fire once.
        struct Hostile {
            snapshot: BitmapSnapshot,
        }
        impl PendingWords for Hostile {
            fn active(&mut self, word: usize) -> u64 {
                self.snapshot.active(word)
            }
        }
        let mut words = Hostile {
            snapshot: bitmaps(&[1, 2, 100]),
        };
        let mut scanner = FairScanner::new();
        let mut history = Vec::new();
        for _ in 0..3 {
            let mut served = Vec::new();
            let selector = selector_of(&words.snapshot);
            scanner.scan(selector, &mut words, |p| served.push(p));
            for &p in &served {
                if p != 1 {
                    let bit = port_bit(p).unwrap();
                    words.snapshot.pending[bit.word] &= !bit.mask;
                }
            }
            history.push(served);
        }
        assert_eq!(history[0], vec![1, 2, 100]);
        assert_eq!(history[1], vec![1]);
        assert_eq!(history[2], vec![1]);
    }

    #[test]
    fn scan_is_bounded_when_bits_are_never_cleared() {
        let mut everything = BitmapSnapshot {
            pending: [u64::MAX; 64],
            mask: [0; 64],
        };
        let mut scanner = FairScanner::new();
        let mut count = 0;
        let served = scanner.scan(u64::MAX, &mut everything, |_| count += 1);
        assert_eq!(
            (served, count),
            (EVTCHN_2L_NR_CHANNELS, EVTCHN_2L_NR_CHANNELS)
        );
        // From a mid-word resume point every port is still served exactly once.
        let mut scanner = FairScanner {
            next_word: 7,
            next_bit: 13,
        };
        let mut seen = vec![0u32; EVTCHN_2L_NR_CHANNELS];
        scanner.scan(u64::MAX, &mut everything, |p| seen[p as usize] += 1);
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn ports_raised_during_the_scan_are_served_in_it() {
        struct Raising {
            snapshot: BitmapSnapshot,
            raised: bool,
        }
        impl PendingWords for Raising {
            fn active(&mut self, word: usize) -> u64 {
                let v = self.snapshot.active(word);
                if !self.raised {
                    // Port 40 arrives after the first read of word 0.
                    self.snapshot.pending[0] |= 1 << 40;
                    self.raised = true;
                }
                v
            }
        }
        let mut words = Raising {
            snapshot: bitmaps(&[3]),
            raised: false,
        };
        let mut served = Vec::new();
        FairScanner::new().scan(1, &mut words, |p| served.push(p));
        assert_eq!(served, vec![3, 40]);
    }

    #[test]
    fn bit_ranges() {
        assert_eq!(bit_range(0, 64), u64::MAX);
        assert_eq!(bit_range(0, 0), 0);
        assert_eq!(bit_range(3, 5), 0b11000);
        assert_eq!(bit_range(63, 64), 1 << 63);
        assert_eq!(bit_range(64, 64), 0);
    }
}
