//! The echo service: returns inline bytes, and copies out-of-line arguments into the result
//! window (handler writes straight into the client's buffer).

use crate::{BytesIn, BytesOut, CallContext, Status};

/// Most bytes an [`InlineBytes`] carries (it fills a slot's inline capacity).
pub const INLINE_BYTES_MAX: usize = crate::INLINE_CAPACITY - 4;

crate::define_pod! {
    /// A length-prefixed byte string that fits inline.
    pub struct InlineBytes {
        /// How many bytes of `data` are the string, at most [`INLINE_BYTES_MAX`].
        pub len: u32,
        /// The string's bytes, then padding (zero when built by [`InlineBytes::new`]).
        pub data: [u8; INLINE_BYTES_MAX],
    }
}

impl InlineBytes {
    /// `None` if `bytes` is longer than [`INLINE_BYTES_MAX`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut value = InlineBytes {
            len: bytes.len() as u32,
            data: [0; INLINE_BYTES_MAX],
        };
        value.data.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(value)
    }

    /// The bytes, or `None` if `len` is out of range (a peer wrote it).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.data.get(..self.len as usize)
    }
}

crate::define_pod! {
    /// Bytes copied out of line.
    #[derive(Default)]
    pub struct OolLen {
        /// The byte count.
        pub len: u32,
    }
}

crate::define_service! {
    /// Echoes its arguments.
    pub mod echo {
        name = "echo", id = 1, version = 1;
        /// Does nothing; the smallest possible call.
        fn ping = 1 (()) -> ();
        /// Returns the inline bytes it was given.
        fn echo_inline = 2 (InlineBytes) -> InlineBytes;
        /// Copies the whole argument window into the start of the result window
        /// (`TooLarge` if the result window is smaller).
        fn echo_ool = 3 ((), data: bytes) -> OolLen, echoed: bytes;
    }
}

pub use echo::*;

/// The echo server (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoServer;

impl echo::Server for EchoServer {
    fn ping(&mut self, _call: &mut CallContext<'_>, _: ()) -> Result<(), Status> {
        Ok(())
    }

    fn echo_inline(
        &mut self,
        _call: &mut CallContext<'_>,
        args: InlineBytes,
    ) -> Result<InlineBytes, Status> {
        args.bytes().ok_or(Status::BadArguments)?;
        Ok(args)
    }

    fn echo_ool(
        &mut self,
        _call: &mut CallContext<'_>,
        _: (),
        data: &BytesIn<'_>,
        echoed: &mut BytesOut<'_>,
    ) -> Result<OolLen, Status> {
        echoed.copy_from(data, 0, data.len())?;
        Ok(OolLen {
            len: data.len() as u32,
        })
    }
}
