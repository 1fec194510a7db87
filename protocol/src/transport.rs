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
    fn base(&self) -> *mut u8;
    fn len(&self) -> usize;
}

/// Wakes the peer of one connection (an event-channel send, an eventfd write).
pub trait Notify {
    fn notify(&self);
}
