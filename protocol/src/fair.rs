//! Fairness by cost: how much work one request may cost, and the budget one connection may
//! spend per pass of a server loop.
//!
//! Work is counted in **units**, one unit per byte a handler moves through its out-of-line
//! windows, plus [`REQUEST_COST`] per request (header and inline copy, validation, dispatch,
//! response). Counting requests instead would let a client whose every call moves a megabyte
//! take a thousand times the server's time of one whose calls move nothing.
//!
//! - A call's handler may move at most [`MAX_CALL_COPY`] bytes (reads + writes + copies, each
//!   move counted, a copy from the argument window into the result window once), and never
//!   more than its two windows hold together; a move past that fails with
//!   [`OolError::CopyLimit`] (`Status::TooLarge`) before anything
//!   is copied. So a request's cost is known, as a bound, from its header before it runs:
//!   [`worst_case_cost`].
//! - [`ServerConnection::poll`](crate::ServerConnection::poll) takes a budget in units. It
//!   starts a request only if the request's worst case fits what is left of the budget, and
//!   charges what the request really cost ([`actual_cost`]). A budget below
//!   [`MAX_REQUEST_COST`] is raised to it ([`pass_budget`]), so every request fits a fresh
//!   pass. Hence the work one poll does never exceeds its (raised) budget, and a server loop
//!   that polls every connection once per pass serves each one after at most one budget of
//!   every other connection.
//! - A request refused before dispatch (bad header) costs [`REQUEST_COST`].

use core::cell::Cell;

use crate::service::OolError;

/// Work units charged per request whatever it does: covers copying and validating the header
/// and inline bytes (at most a 256-byte slot), dispatch and the response, i.e. roughly the time
/// it takes to copy this many bytes.
pub const REQUEST_COST: u64 = 2048;

/// Most bytes one call's handler may move through its out-of-line windows.
pub const MAX_CALL_COPY: usize = 1 << 20;

/// The most one request can cost.
pub const MAX_REQUEST_COST: u64 = REQUEST_COST + MAX_CALL_COPY as u64;

/// The default work one connection may do per pass of a server loop: two maximal requests, or
/// about a thousand small ones (more than any ring holds).
pub const PASS_BUDGET: u64 = 2 * MAX_REQUEST_COST;

/// Bytes a call with these window lengths may move: their sum, at most [`MAX_CALL_COPY`].
#[inline]
pub fn copy_allowance(args_len: usize, result_len: usize) -> usize {
    args_len.saturating_add(result_len).min(MAX_CALL_COPY)
}

/// The most a request with these window lengths (from its copied header) can cost.
#[inline]
pub fn worst_case_cost(args_len: usize, result_len: usize) -> u64 {
    REQUEST_COST + copy_allowance(args_len, result_len) as u64
}

/// What a request that moved `moved` bytes cost.
#[inline]
pub fn actual_cost(moved: usize) -> u64 {
    REQUEST_COST.saturating_add(moved as u64)
}

/// The budget a poll really uses: `budget`, raised to [`MAX_REQUEST_COST`] so that any request
/// fits a fresh pass.
#[inline]
pub fn pass_budget(budget: u64) -> u64 {
    budget.max(MAX_REQUEST_COST)
}

/// Counts the bytes one call's handler moved through its windows against the call's allowance
/// ([`copy_allowance`]). Shared by the call's [`OolArgs`](crate::OolArgs) and
/// [`OolResult`](crate::OolResult) (a `Cell`: reads go through shared references).
#[derive(Debug)]
pub struct CopyMeter {
    moved: Cell<usize>,
    limit: usize,
}

impl CopyMeter {
    /// A meter for a call with these window lengths.
    #[inline]
    pub fn for_windows(args_len: usize, result_len: usize) -> Self {
        CopyMeter {
            moved: Cell::new(0),
            limit: copy_allowance(args_len, result_len),
        }
    }

    /// Bytes moved so far.
    #[inline]
    pub fn moved(&self) -> usize {
        self.moved.get()
    }

    /// The most this call may move.
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charges the call `moved` bytes in all (at most its allowance): what the kernel really
    /// moved for a call it ran through the gate (`service::gate`).
    pub(crate) fn charge(&self, moved: usize) {
        self.moved.set(moved.min(self.limit));
    }

    /// Counts a move of `len` bytes, or refuses it (counting nothing) if it would take the call
    /// past its allowance. Call before copying.
    #[inline]
    pub(crate) fn take(&self, len: usize) -> Result<(), OolError> {
        match self.moved.get().checked_add(len) {
            Some(total) if total <= self.limit => {
                self.moved.set(total);
                Ok(())
            }
            _ => Err(OolError::CopyLimit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_bounded_by_the_largest_request() {
        assert_eq!(worst_case_cost(0, 0), REQUEST_COST);
        assert_eq!(worst_case_cost(10, 20), REQUEST_COST + 30);
        assert_eq!(worst_case_cost(usize::MAX, usize::MAX), MAX_REQUEST_COST);
        assert_eq!(worst_case_cost(MAX_CALL_COPY, 1), MAX_REQUEST_COST);
        assert_eq!(actual_cost(0), REQUEST_COST);
        assert_eq!(pass_budget(0), MAX_REQUEST_COST);
        assert_eq!(pass_budget(PASS_BUDGET), PASS_BUDGET);
    }

    #[test]
    fn a_meter_refuses_a_move_past_its_limit_without_counting_it() {
        let meter = CopyMeter::for_windows(10, 5);
        assert_eq!(meter.limit(), 15);
        assert_eq!(meter.take(10), Ok(()));
        assert_eq!(meter.take(6), Err(OolError::CopyLimit));
        assert_eq!(meter.moved(), 10);
        assert_eq!(meter.take(5), Ok(()));
        assert_eq!(meter.take(1), Err(OolError::CopyLimit));
        assert_eq!(meter.take(usize::MAX), Err(OolError::CopyLimit));
        assert_eq!(meter.moved(), 15);
        let big = CopyMeter::for_windows(MAX_CALL_COPY, MAX_CALL_COPY);
        assert_eq!(big.take(MAX_CALL_COPY + 1), Err(OolError::CopyLimit));
        assert_eq!(big.moved(), 0);
    }
}
