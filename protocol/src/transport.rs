//! The transport seam. Ring and dispatch code reach shared memory and the peer only through
//! these two traits, so the same code runs over Xen grants + event channels (service VM, Linux
//! guest client) and over memfd + eventfd (host transport).

/// A window of memory that a peer may write at any moment.
///
/// # Safety
/// An implementation guarantees that `base()..base() + len()` stays mapped, readable and
/// writable for as long as the value lives, and that `base()` is page aligned. Nothing else is
/// promised: the contents may change between any two reads.
pub unsafe trait SharedMemory {
    /// The first byte of the window (page aligned).
    fn base(&self) -> *mut u8;
    /// The window's length in bytes.
    fn len(&self) -> usize;

    /// Whether the window has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// SAFETY: a shared reference keeps the underlying memory alive and unchanged in placement for
// its lifetime, so the implementor's guarantees carry over.
unsafe impl<T: SharedMemory + ?Sized> SharedMemory for &T {
    fn base(&self) -> *mut u8 {
        (**self).base()
    }

    fn len(&self) -> usize {
        (**self).len()
    }
}

// SAFETY: an `Arc` keeps its value alive (and in place) while any clone lives, so the
// implementor's guarantees carry over.
#[cfg(feature = "alloc")]
unsafe impl<T: SharedMemory + ?Sized> SharedMemory for alloc::sync::Arc<T> {
    fn base(&self) -> *mut u8 {
        (**self).base()
    }

    fn len(&self) -> usize {
        (**self).len()
    }
}

/// Wakes the peer of one connection (an event-channel send, an eventfd write).
pub trait Notify {
    /// Raises the peer's event; the peer then polls (it may find nothing new).
    fn notify(&self);
}

/// Who is on the other end of a connection: a Xen domain id or a host client id. Always
/// supplied by the transport (from the event channel / the socket it accepted), never read from
/// message bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, zerocopy::FromZeros)]
pub struct PeerId(pub u32);

/// The clock that call deadlines are measured against (monotonic nanoseconds).
pub trait Clock {
    /// The current time in nanoseconds (monotonic; an arbitrary but fixed origin).
    fn now_ns(&self) -> u64;

    /// A recent reading, for stamps that only estimate (a response's `server_time_ns`): a
    /// transport whose clock costs as much as a call may keep the last reading and say here
    /// how stale it may be. By default the current time.
    fn recent_ns(&self) -> u64 {
        self.now_ns()
    }
}

impl<F: Fn() -> u64> Clock for F {
    fn now_ns(&self) -> u64 {
        self()
    }
}
