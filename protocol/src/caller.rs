//! [`Caller`]: what the typed client objects `define_service!` generates
//! (`<service>::Client::new(&mut caller).method(&args)`) call through. Every client end
//! implements it: the Linux guest's `xenrpc_client::Connection`, the host transport's
//! `xenrpc_host::client::Client`, and the in-process `testing::TestServer` (feature
//! `testing`).

use alloc::vec::Vec;

use zerocopy::FromBytes;

use crate::client::{CallError, CallRequest, Completion};
use crate::layout::Status;

/// Makes one two-way call and waits for its answer.
pub trait Caller {
    /// What can go wrong besides the call itself (a broken transport, a deadline).
    type Error: From<CallError>;

    /// Makes the call `request` (its windows are ignored): `input` travels out of line in a
    /// window the connection places itself, and up to `output_capacity` result bytes come
    /// back in [`Completion::bytes`] (`None`: as many as the connection has room for). The
    /// completion is returned whatever its status.
    fn call_raw(
        &mut self,
        request: &CallRequest<'_>,
        input: &[u8],
        output_capacity: Option<usize>,
    ) -> Result<Completion, Self::Error>;
}

/// The typed reply in a completion: `Remote(status)` for an error status, `MalformedReply`
/// if the inline bytes are not an `R`.
pub fn decode_reply<R: FromBytes>(completion: &Completion) -> Result<R, CallError> {
    if completion.status != Status::Ok {
        return Err(CallError::Remote(completion.status));
    }
    R::read_from_bytes(completion.inline()).map_err(|_| CallError::MalformedReply)
}

/// Used by the generated client objects: one call with bytes each way as declared.
#[doc(hidden)]
pub fn call_typed<C: Caller + ?Sized, R: FromBytes>(
    caller: &mut C,
    request: &CallRequest<'_>,
    input: &[u8],
    output_capacity: Option<usize>,
) -> Result<(R, Vec<u8>), C::Error> {
    let completion = caller.call_raw(request, input, output_capacity)?;
    let value = decode_reply::<R>(&completion)?;
    Ok((value, completion.into_bytes()))
}
