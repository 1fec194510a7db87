//! The SunRPC peer: program `XENRPC_ECHO_PROG` (0x2078656e, version 1) of
//! `sunrpc/echo.x`, stubs by `rpcgen`, run by libtirpc over a TCP or Unix stream socket. The
//! C glue is `sunrpc/shim.c`; this module only calls its few functions of plain arguments.
//!
//! No rpcbind: the server serves the socket it is given, the client connects to it directly.
//! Record buffers are libtirpc's largest (256 KiB) at both ends and on both transports, and
//! TCP sockets have TCP_NODELAY. A call waits at most 10 s for its answer.
//!
//! Like any libtirpc program this relies on SIGPIPE being ignored (Rust programs ignore it by
//! default), so that writing to a closed connection is an error, not the process's end.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::{PeerClient, Unavailable, MAX_ECHO};

/// Whether this build has the SunRPC peer (`rpcgen` and libtirpc were found).
pub fn available() -> Result<(), Unavailable> {
    imp::available()
}

/// Serves the program on `listener` (a bound, listening TCP or Unix stream socket) until the
/// process ends.
///
/// Sets TCP_NODELAY on a TCP listener, which Linux copies to every connection it accepts.
/// libtirpc's server state is process-wide, so one loop (in the first caller's thread) serves
/// every listener given to `serve`; a later call adds its listener to that loop and blocks
/// like the first. Requests are answered one at a time, as by `svc_run`. Returns only if the
/// loop fails, or at once if the listener cannot be served.
pub fn serve(listener: OwnedFd) -> io::Result<Infallible> {
    imp::serve(listener)
}

/// A connected SunRPC client: one call at a time, each waiting at most 10 s for its answer.
pub struct SunRpcClient(imp::Client);

impl SunRpcClient {
    /// Connects to a server on TCP (with TCP_NODELAY).
    pub fn connect_tcp(addr: SocketAddr) -> io::Result<Self> {
        imp::Client::connect_tcp(addr).map(Self)
    }

    /// Connects to a server on the Unix socket at `path`.
    pub fn connect_unix(path: &Path) -> io::Result<Self> {
        imp::Client::connect_unix(path).map(Self)
    }
}

impl PeerClient for SunRpcClient {
    fn null(&mut self) -> io::Result<()> {
        self.0.ping()
    }

    fn echo(&mut self, data: &[u8], answer: &mut Vec<u8>) -> io::Result<()> {
        if data.len() > MAX_ECHO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "SunRPC echo refused: {} bytes are more than the {MAX_ECHO} an echo carries",
                    data.len()
                ),
            ));
        }
        self.0.echo(data, answer)
    }
}

#[cfg(not(sunrpc_missing))]
mod imp {
    use std::convert::Infallible;
    use std::ffi::{c_int, CStr};
    use std::io;
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::ptr::NonNull;

    use crate::{Unavailable, MAX_ECHO};

    /// `sunrpc/shim.c`.
    mod ffi {
        use std::ffi::{c_char, c_int};
        use std::marker::{PhantomData, PhantomPinned};

        /// libtirpc's `CLIENT`, only ever behind a pointer.
        #[repr(C)]
        pub struct Client {
            _opaque: [u8; 0],
            _not_send_sync_unpin: PhantomData<(*mut u8, PhantomPinned)>,
        }

        extern "C" {
            pub fn xr_sunrpc_serve(listen_fd: c_int, err: *mut c_int) -> c_int;
            pub fn xr_sunrpc_client(
                connected_fd: c_int,
                code: *mut c_int,
                err: *mut c_int,
            ) -> *mut Client;
            pub fn xr_sunrpc_ping(clnt: *mut Client) -> c_int;
            pub fn xr_sunrpc_echo(
                clnt: *mut Client,
                data: *const u8,
                len: u32,
                out: *mut u8,
                out_cap: u32,
                out_len: *mut u32,
            ) -> c_int;
            pub fn xr_sunrpc_errno(clnt: *mut Client) -> c_int;
            pub fn xr_sunrpc_destroy(clnt: *mut Client);
            pub fn xr_sunrpc_error(code: c_int) -> *const c_char;
        }
    }

    /// `RPC_TIMEDOUT` of libtirpc's `enum clnt_stat`.
    const RPC_TIMEDOUT: c_int = 5;

    pub fn available() -> Result<(), Unavailable> {
        Ok(())
    }

    pub fn serve(listener: OwnedFd) -> io::Result<Infallible> {
        let mut err = 0;
        // SAFETY: the shim takes ownership of the descriptor (libtirpc's transport closes it,
        // or the shim does on failure), which `into_raw_fd` gave up; it writes only `err`.
        let code = unsafe { ffi::xr_sunrpc_serve(listener.into_raw_fd(), &mut err) };
        Err(error("server", code, err))
    }

    /// A libtirpc client on a socket it does not own.
    pub struct Client {
        clnt: NonNull<ffi::Client>,
        /// Closed after `clnt` is destroyed (fields drop after `Drop::drop`).
        _socket: OwnedFd,
    }

    // SAFETY: a CLIENT is bound to no thread (libtirpc keeps a call's state in it and in
    // per-descriptor locks, not thread-locals), and its only user is the `&mut self` methods,
    // so one thread at a time uses it.
    unsafe impl Send for Client {}

    impl Client {
        pub fn connect_tcp(addr: SocketAddr) -> io::Result<Self> {
            let stream = TcpStream::connect(addr)
                .map_err(|e| with_context(e, &format!("SunRPC could not connect to {addr}")))?;
            stream.set_nodelay(true)?;
            Self::on(stream.into())
        }

        pub fn connect_unix(path: &Path) -> io::Result<Self> {
            let stream = UnixStream::connect(path).map_err(|e| {
                with_context(
                    e,
                    &format!("SunRPC could not connect to {}", path.display()),
                )
            })?;
            Self::on(stream.into())
        }

        fn on(socket: OwnedFd) -> io::Result<Self> {
            let (mut code, mut err) = (0, 0);
            // SAFETY: `socket` is an open, connected stream socket, kept open (in `Self`) until
            // after the client is destroyed; the shim writes only `code` and `err`.
            let clnt = unsafe { ffi::xr_sunrpc_client(socket.as_raw_fd(), &mut code, &mut err) };
            match NonNull::new(clnt) {
                Some(clnt) => Ok(Self {
                    clnt,
                    _socket: socket,
                }),
                None => Err(error("client setup", code, err)),
            }
        }

        pub fn ping(&mut self) -> io::Result<()> {
            // SAFETY: `clnt` is a live client, used by this thread alone (`&mut self`).
            let code = unsafe { ffi::xr_sunrpc_ping(self.clnt.as_ptr()) };
            self.check("ping", code)
        }

        pub fn echo(&mut self, data: &[u8], answer: &mut Vec<u8>) -> io::Result<()> {
            let len = u32::try_from(data.len()).expect("the caller checked data.len() <= MAX_ECHO");
            answer.clear();
            answer.reserve(MAX_ECHO);
            // The shim decodes the answer straight into `answer`: no copy, no allocation.
            let cap = u32::try_from(answer.capacity()).unwrap_or(u32::MAX);
            let mut answer_len = 0;
            // SAFETY: `clnt` is a live client used by this thread alone; `data` is readable for
            // `len` bytes; `answer` is writable for `cap` bytes (its capacity), and the shim
            // writes at most MAX_ECHO <= `cap` of them and their count in `answer_len`.
            let code = unsafe {
                ffi::xr_sunrpc_echo(
                    self.clnt.as_ptr(),
                    data.as_ptr(),
                    len,
                    answer.as_mut_ptr(),
                    cap,
                    &mut answer_len,
                )
            };
            self.check("echo", code)?;
            let answer_len = answer_len as usize;
            assert!(
                answer_len <= MAX_ECHO,
                "the shim decodes at most MAX_ECHO bytes"
            );
            // SAFETY: on success the shim initialised the first `answer_len` bytes, within the
            // capacity.
            unsafe { answer.set_len(answer_len) };
            Ok(())
        }

        fn check(&self, what: &str, code: c_int) -> io::Result<()> {
            if code == 0 {
                return Ok(());
            }
            // SAFETY: `clnt` is a live client; this reads the status of its last call.
            let err = unsafe { ffi::xr_sunrpc_errno(self.clnt.as_ptr()) };
            Err(error(what, code, err))
        }
    }

    impl Drop for Client {
        fn drop(&mut self) {
            // SAFETY: `clnt` came from `xr_sunrpc_client` and is destroyed once, here; the
            // socket it uses is closed only afterwards.
            unsafe { ffi::xr_sunrpc_destroy(self.clnt.as_ptr()) };
        }
    }

    /// "SunRPC <what> failed: RPC: Timed out", with the system error behind it if any.
    fn error(what: &str, code: c_int, err: c_int) -> io::Error {
        // SAFETY: `xr_sunrpc_error` returns a static NUL-terminated string for any code.
        let msg = unsafe { CStr::from_ptr(ffi::xr_sunrpc_error(code)) }.to_string_lossy();
        if err != 0 {
            let os = io::Error::from_raw_os_error(err);
            return io::Error::new(os.kind(), format!("SunRPC {what} failed: {msg}: {os}"));
        }
        let kind = if code == RPC_TIMEDOUT {
            io::ErrorKind::TimedOut
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, format!("SunRPC {what} failed: {msg}"))
    }

    fn with_context(e: io::Error, context: &str) -> io::Error {
        io::Error::new(e.kind(), format!("{context}: {e}"))
    }
}

/// The peer as built without `rpcgen` or libtirpc: everything says why.
#[cfg(sunrpc_missing)]
mod imp {
    use std::convert::Infallible;
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::OwnedFd;
    use std::path::Path;

    use crate::Unavailable;

    const UNAVAILABLE: Unavailable = Unavailable {
        peer: "SunRPC",
        why: env!("XENRPC_SUNRPC_MISSING"),
    };

    pub fn available() -> Result<(), Unavailable> {
        Err(UNAVAILABLE)
    }

    pub fn serve(_listener: OwnedFd) -> io::Result<Infallible> {
        Err(UNAVAILABLE.into())
    }

    /// Never made.
    pub struct Client(Infallible);

    impl Client {
        pub fn connect_tcp(_addr: SocketAddr) -> io::Result<Self> {
            Err(UNAVAILABLE.into())
        }

        pub fn connect_unix(_path: &Path) -> io::Result<Self> {
            Err(UNAVAILABLE.into())
        }

        pub fn ping(&mut self) -> io::Result<()> {
            match self.0 {}
        }

        pub fn echo(&mut self, _data: &[u8], _answer: &mut Vec<u8>) -> io::Result<()> {
            match self.0 {}
        }
    }
}
