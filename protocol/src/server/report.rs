//! What a server connection reports: the violations that break it ([`Violation`]), the
//! reasons a request is refused before dispatch ([`RejectReason`]), its counters
//! ([`ConnectionStats`]) and what one poll did ([`PollOutcome`]).

use crate::layout::Status;

/// Why the server broke a connection: the client wrote ring state no correct client can. Each
/// variant's doc comment is its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The client's response consumer index {rsp_cons} is ahead of the producer index
    /// {rsp_prod} or more than a ring behind it.
    RspConsOutOfRange {
        /// The response consumer index the client published.
        rsp_cons: u32,
        /// The server's response producer index, counting the slots taken for requests it is
        /// still serving (what the consumer index was checked against).
        rsp_prod: u32,
    },
    /// The client sent a two-way request while every response slot held an unconsumed
    /// response (more two-way calls in flight than the ring has slots).
    InFlightOverflow,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Violation::RspConsOutOfRange { rsp_cons, rsp_prod } => write!(
                f,
                "the client's response consumer index {rsp_cons} is ahead of the producer \
                 index {rsp_prod} or more than a ring behind it"
            ),
            Violation::InFlightOverflow => f.write_str(
                "the client sent a two-way request while every response slot held an \
                 unconsumed response (more two-way calls in flight than the ring has slots)",
            ),
        }
    }
}

impl core::error::Error for Violation {}

/// Why a request was answered with an error before reaching a handler. Each variant's doc
/// comment is its message (the status it gets follows in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The inline arguments are longer than a slot holds (status `TooLarge`).
    InlineTooLong = 0,
    /// The request has flag bits this revision does not know (status `BadArguments`).
    UnknownFlags = 1,
    /// Reserved header fields are not zero (status `BadArguments`).
    ReservedNotZero = 2,
    /// The out-of-line argument window lies outside the data region (status `BadArguments`).
    OolArgsOutOfRange = 3,
    /// The out-of-line result window lies outside the data region (status `BadArguments`).
    OolResultOutOfRange = 4,
    /// The deadline had passed when the request was read (status `DeadlineExceeded`).
    DeadlinePassed = 5,
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RejectReason::InlineTooLong => "the inline arguments are longer than a slot holds",
            RejectReason::UnknownFlags => "the request has flag bits this revision does not know",
            RejectReason::ReservedNotZero => "reserved header fields are not zero",
            RejectReason::OolArgsOutOfRange => {
                "the out-of-line argument window lies outside the data region"
            }
            RejectReason::OolResultOutOfRange => {
                "the out-of-line result window lies outside the data region"
            }
            RejectReason::DeadlinePassed => "the deadline had passed when the request was read",
        })
    }
}

impl core::error::Error for RejectReason {}

impl RejectReason {
    /// How many reasons there are (the length of [`ConnectionStats::rejected`]).
    pub const COUNT: usize = 6;
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Requests taken off the ring.
    pub requests: u64,
    /// Of those, one-way requests (no response written).
    pub one_way: u64,
    /// Responses written.
    pub responses: u64,
    /// Outcome of every request (one-way included), indexed by `Status::index()`.
    pub by_status: [u64; Status::COUNT],
    /// Requests refused before dispatch, indexed by `RejectReason as usize`.
    pub rejected: [u64; RejectReason::COUNT],
    /// Polls after which the client had to be notified.
    pub notifications: u64,
    /// Protocol violations seen (the first one breaks the connection).
    pub violations: u64,
}

impl ConnectionStats {
    /// Requests that got `status`.
    pub fn status_count(&self, status: Status) -> u64 {
        self.by_status[status.index()]
    }

    /// Requests refused before dispatch for `reason`.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize]
    }

    /// Adds another connection's counters to these (totals over a server's connections).
    pub fn merge_from(&mut self, other: &ConnectionStats) {
        self.requests += other.requests;
        self.one_way += other.one_way;
        self.responses += other.responses;
        for (sum, n) in self.by_status.iter_mut().zip(other.by_status) {
            *sum += n;
        }
        for (sum, n) in self.rejected.iter_mut().zip(other.rejected) {
            *sum += n;
        }
        self.notifications += other.notifications;
        self.violations += other.violations;
    }

    /// Requests whose status was not `Ok`.
    pub fn errors(&self) -> u64 {
        self.requests - self.by_status[Status::Ok.index()]
    }
}

/// What one [`ServerConnection::poll`](super::ServerConnection::poll) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Requests taken off the ring.
    pub handled: u32,
    /// Work units charged for them (see [`crate::fair`]); never more than the poll's budget
    /// (raised to [`crate::MAX_REQUEST_COST`]).
    pub work: u64,
    /// Of the requests handled, the well-formed two-way ones (passed header validation and
    /// reached dispatch, whatever status the handler gave): what a storm guard may credit.
    pub earned: u32,
    /// Responses were published and the client asked to be woken: call the transport's notify.
    pub notify: bool,
    /// Requests are left because the budget ran out: poll again (after serving others).
    pub more: bool,
    /// The connection is broken (now or earlier); see [`ServerConnection::broken`](super::ServerConnection::broken).
    pub broken: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_adds_every_counter() {
        let mut a = ConnectionStats {
            requests: 3,
            one_way: 1,
            responses: 2,
            ..Default::default()
        };
        a.by_status[Status::Ok.index()] = 2;
        a.by_status[Status::Busy.index()] = 1;
        a.rejected[RejectReason::DeadlinePassed as usize] = 1;
        let mut b = ConnectionStats {
            notifications: 4,
            violations: 1,
            ..a
        };
        b.merge_from(&a);
        assert_eq!((b.requests, b.one_way, b.responses), (6, 2, 4));
        assert_eq!(b.status_count(Status::Ok), 4);
        assert_eq!(b.status_count(Status::Busy), 2);
        assert_eq!(b.rejected_count(RejectReason::DeadlinePassed), 2);
        assert_eq!((b.notifications, b.violations), (4, 1));
        assert_eq!(b.errors(), 2);
    }

    #[cfg(feature = "std")]
    #[test]
    fn violations_name_the_indices() {
        use std::string::ToString;
        assert_eq!(
            Violation::RspConsOutOfRange {
                rsp_cons: 100_007,
                rsp_prod: 7
            }
            .to_string(),
            "the client's response consumer index 100007 is ahead of the producer index 7 or \
             more than a ring behind it"
        );
        assert_eq!(
            RejectReason::OolResultOutOfRange.to_string(),
            "the out-of-line result window lies outside the data region"
        );
    }
}
