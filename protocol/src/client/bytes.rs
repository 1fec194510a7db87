//! Calls whose out-of-line bytes the connection places itself, with its window allocator
//! ([`crate::windows`]): the bytes go in, the result window is held, both are given back when
//! the response arrives (see `poll_response`, which copies the result bytes out once).

#[cfg(feature = "alloc")]
use core::marker::PhantomData;

use super::ClientConnection;
#[cfg(feature = "alloc")]
use super::{CallError, CallRequest, Pending, TypedCall};
#[cfg(feature = "alloc")]
use crate::layout::OolRef;
use crate::transport::SharedMemory;
use crate::windows::WindowAllocator;

impl<R: SharedMemory, D: SharedMemory> ClientConnection<R, D> {
    /// Starts a typed call whose out-of-line bytes the connection places itself: `input` is
    /// copied into a window of the data region, and a result window of `output_capacity`
    /// bytes is held for it (`None`: the largest free window, at most [`crate::MAX_CALL_COPY`]);
    /// the call's own windows, if it set any, are replaced. Both are given back when the
    /// response arrives, whose [`Completion::bytes`](super::Completion::bytes) holds the result bytes. Do not mix with
    /// windows placed by hand on the same connection.
    #[cfg(feature = "alloc")]
    pub fn start_with_bytes<T>(
        &mut self,
        call: &TypedCall<'_, T>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Pending<T>, CallError> {
        let call_id = self.enqueue_with_bytes(call.request(), input, output_capacity)?;
        Ok(Pending {
            call_id,
            _reply: PhantomData,
        })
    }

    /// [`Self::start_with_bytes`] for an untyped request (generic clients); returns the
    /// call id.
    #[cfg(feature = "alloc")]
    pub fn enqueue_with_bytes(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<u64, CallError> {
        if let Some(v) = self.broken {
            return Err(CallError::Broken(v));
        }
        if self.in_flight_count >= self.max_in_flight {
            return Err(CallError::TooManyInFlight);
        }
        let input_window = match input.len() {
            0 => OolRef::NONE,
            n => self
                .windows
                .allocate(n)
                .ok_or(CallError::NoRoom { needed: n })?,
        };
        let capacity = output_capacity
            .unwrap_or_else(|| self.windows.largest_free().min(crate::MAX_CALL_COPY));
        let output_window = match capacity {
            0 => OolRef::NONE,
            n => match self.windows.allocate(n) {
                Some(window) => window,
                None => {
                    self.windows.release(input_window);
                    return Err(CallError::NoRoom { needed: n });
                }
            },
        };
        let release = |this: &mut Self| {
            this.windows.release(input_window);
            this.windows.release(output_window);
        };
        if self
            .data
            .view()
            .write(input_window.offset as usize, input)
            .is_err()
        {
            release(self);
            return Err(CallError::BadOolRef(input_window));
        }
        let request = CallRequest {
            one_way: false,
            ool_args: input_window,
            ool_result: output_window,
            ..*request
        };
        let call_id = match self.enqueue(&request) {
            Ok(id) => id,
            Err(e) => {
                release(self);
                return Err(e);
            }
        };
        if let Some(entry) = self.in_flight.iter_mut().find(|e| e.call_id == call_id) {
            entry.allocated = [input_window, output_window];
        }
        Ok(call_id)
    }

    /// The allocator placing the windows of `start_with_bytes` (feature `alloc`) calls.
    pub fn windows(&self) -> &WindowAllocator {
        &self.windows
    }
}
