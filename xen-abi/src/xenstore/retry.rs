//! Bounded retry of xenstore transactions. xenstored ends a transaction that conflicted with
//! another writer with `EAGAIN` (the transaction is gone; the whole read-modify-write must be
//! redone). A peer that keeps the store busy must not make the kernel loop forever, so the
//! number of attempts is capped.

use super::reply::ReplyError;
use super::wire::XsErrno;
use core::fmt;

/// Attempts a transaction gets by default before the caller sees the conflict.
pub const DEFAULT_TRANSACTION_ATTEMPTS: u32 = 8;

/// Whether an error means "the transaction conflicted; redo it".
pub trait Retryable {
    /// `true` for a conflict (`EAGAIN`).
    fn is_conflict(&self) -> bool;
}

impl Retryable for ReplyError {
    fn is_conflict(&self) -> bool {
        matches!(self, ReplyError::Xenstore(XsErrno::Eagain))
    }
}

/// How a retried transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryError<E> {
    /// An attempt failed with a non-conflict error: not retried.
    Failed(E),
    /// Every attempt conflicted; holds the last conflict.
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: E,
    },
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryError::Failed(e) => write!(f, "{e}"),
            RetryError::Exhausted { attempts, last } => {
                write!(
                    f,
                    "transaction still conflicting after {attempts} attempts: {last}"
                )
            }
        }
    }
}

/// Runs `attempt` (given the 1-based attempt number) until it succeeds, fails with a
/// non-conflict error, or `max_attempts` attempts (at least one) have conflicted.
pub fn retry_transaction<T, E: Retryable>(
    max_attempts: u32,
    mut attempt: impl FnMut(u32) -> Result<T, E>,
) -> Result<T, RetryError<E>> {
    let max_attempts = max_attempts.max(1);
    let mut number = 1;
    loop {
        match attempt(number) {
            Ok(value) => return Ok(value),
            Err(e) if !e.is_conflict() => return Err(RetryError::Failed(e)),
            Err(e) if number >= max_attempts => {
                return Err(RetryError::Exhausted {
                    attempts: number,
                    last: e,
                })
            }
            Err(_) => number += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFLICT: ReplyError = ReplyError::Xenstore(XsErrno::Eagain);

    #[test]
    fn success_on_first_attempt() {
        let mut calls = 0;
        let result = retry_transaction(3, |n| {
            calls += 1;
            Ok::<_, ReplyError>(n)
        });
        assert_eq!((result, calls), (Ok(1), 1));
    }

    #[test]
    fn conflicts_are_retried_until_success() {
        let result = retry_transaction(5, |n| if n < 4 { Err(CONFLICT) } else { Ok(n) });
        assert_eq!(result, Ok(4));
    }

    #[test]
    fn conflicts_are_bounded() {
        let mut calls = 0;
        let result: Result<(), _> = retry_transaction(3, |_| {
            calls += 1;
            Err(CONFLICT)
        });
        assert_eq!(
            result,
            Err(RetryError::Exhausted {
                attempts: 3,
                last: CONFLICT
            })
        );
        assert_eq!(calls, 3);
        let once: Result<(), _> = retry_transaction(0, |_| Err(CONFLICT));
        assert_eq!(
            once,
            Err(RetryError::Exhausted {
                attempts: 1,
                last: CONFLICT
            })
        );
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = retry_transaction(8, |_| {
            calls += 1;
            Err(ReplyError::Xenstore(XsErrno::Eacces))
        });
        assert_eq!(
            result,
            Err(RetryError::Failed(ReplyError::Xenstore(XsErrno::Eacces)))
        );
        assert_eq!(calls, 1);
        assert!(!ReplyError::UnexpectedPayload.is_conflict());
        assert!(CONFLICT.is_conflict());
    }
}
