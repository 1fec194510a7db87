//! The libxenvchan peer: Xen's own inter-domain byte channel (a pair of rings in pages one
//! domain grants the other, and an event channel), between two Linux guests, measured beside
//! xenrpc's calls as the native channel a Xen user would otherwise reach for. No RPC system,
//! only a framing of our own: a
//! request is a little-endian `u32` length and that many bytes, the answer the same bytes back
//! (a null call is an empty request, answered empty).
//!
//! A vchan serves one client. The server ([`serve`]) offers one at a xenstore path under its
//! own domain (`data/xenrpc-vchan` unless told otherwise; libxenvchan writes `ring-ref` and
//! `event-channel` there, readable by the client domain alone), serves its client until the
//! client closes, then offers a new one at the same path, for as long as the process runs. A
//! client ([`VchanClient::connect`]) retries for up to [`CONNECT_TIMEOUT`] until it finds the
//! server's entries and a null call over them is answered: an entry of the vchan the server
//! has just ended is still there for a moment, and the first call tells them apart.
//!
//! Tuned as a user of libxenvchan would tune it: rings of [`RING`] bytes each way (8 echoes
//! of 64 KiB in flight fit in them), a request and an answer each written in one piece (one
//! event at most per frame), and waits like xenrpc's ends wait: a reader polls the ring
//! (`libxenvchan_data_ready`) for xenrpc's default spin
//! ([`xenrpc_proto::wait::SpinPolicy::DEFAULT`]), and only
//! then waits on the event channel by `libxenvchan_wait` (the client first polls its
//! descriptor, so that a call gives up after [`CALL_TIMEOUT`]). So it is measured with the
//! same wait policy as xenrpc, not a slower one.
//!
//! More than one call in flight ([`Calls::send`], then [`Calls::receive`] in order) is a
//! window on the one vchan, as xenrpc's calls in flight share one ring: the rings must hold
//! every call in flight ([`fits`]) so that the server never waits to write an answer while the
//! client waits to write a request.

use std::convert::Infallible;
use std::io;
use std::time::{Duration, Instant};

use crate::{PeerClient, Unavailable, MAX_ECHO};

/// Bytes of each ring (client to server, server to client): libxenvchan's largest, so that
/// 8 echoes of 64 KiB with their lengths are in flight at once.
pub const RING: usize = 1 << 20;

/// The xenstore path a server offers its vchan at when none is given, under its own domain.
pub const DEFAULT_PATH: &str = "data/xenrpc-vchan";

/// How long a call waits for the ring to take its request and for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client keeps trying to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of a frame's length.
const HEADER: usize = 4;

/// Whether this build has the libxenvchan peer (its header and library were found).
pub fn built() -> Result<(), Unavailable> {
    imp::built()
}

/// Whether the peer can run here: built, and in a Xen domain with the event channel and
/// grant devices (`/dev/xen/evtchn`, `/dev/xen/gntalloc`, `/dev/xen/gntdev`).
pub fn available() -> Result<(), Unavailable> {
    built()?;
    let devices = ["/dev/xen/evtchn", "/dev/xen/gntalloc", "/dev/xen/gntdev"];
    if devices.iter().all(|d| std::path::Path::new(d).exists()) {
        Ok(())
    } else {
        Err(Unavailable {
            peer: "libxenvchan",
            why: "it runs only in a Xen domain with /dev/xen/evtchn, /dev/xen/gntalloc and \
                  /dev/xen/gntdev (modules xen-evtchn, xen-gntalloc, xen-gntdev), which this \
                  machine lacks",
        })
    }
}

/// Whether `in_flight` echoes of `size` bytes may be in flight on one vchan: one always may
/// (its answer is read before the next request is written); more only if their frames fit
/// in a ring.
pub fn fits(in_flight: usize, size: usize) -> bool {
    in_flight <= 1 || in_flight.saturating_mul(size.saturating_add(HEADER)) <= RING
}

/// A byte stream between two domains (or, in tests, two ends of anything), whose waits end at
/// a deadline (`None`: wait as long as it takes).
pub trait Channel {
    /// Reads at least one byte into `buf` (not empty), waiting until some are there; 0 when
    /// the other end closed and left nothing to read.
    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize>;
    /// Writes at least one byte of `buf` (not empty), waiting until there is room; an error
    /// when the other end closed.
    fn write(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize>;
}

/// Fills `buf`; `false` if the other end closed before its first byte.
fn read_exact(
    chan: &mut impl Channel,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match chan.read(&mut buf[done..], deadline)? {
            0 if done == 0 => return Ok(false),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the other end closed the vchan {done} bytes into a frame of {}",
                        buf.len()
                    ),
                ))
            }
            n => done += n,
        }
    }
    Ok(true)
}

fn write_all(chan: &mut impl Channel, mut buf: &[u8], deadline: Option<Instant>) -> io::Result<()> {
    while !buf.is_empty() {
        let n = chan.write(buf, deadline)?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Reads a frame's length and checks it; `None` if the other end closed before it.
fn read_length(chan: &mut impl Channel, deadline: Option<Instant>) -> io::Result<Option<usize>> {
    let mut header = [0; HEADER];
    if !read_exact(chan, &mut header, deadline)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_ECHO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes came, more than the {MAX_ECHO} an echo carries"),
        ));
    }
    Ok(Some(len))
}

/// Serves one client on `chan`: answers each request with its own bytes, until the client
/// closes between two requests (`Ok`, with the number of calls answered). A frame cut short
/// or too long is an error.
pub fn serve_connection(chan: &mut impl Channel) -> io::Result<u64> {
    // The answer is written from where the request was read, length and all: one write.
    let mut frame = vec![0; HEADER + MAX_ECHO];
    let mut calls = 0;
    while let Some(len) = read_length(chan, None)? {
        frame[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
        if !read_exact(chan, &mut frame[HEADER..HEADER + len], None)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the vchan between a frame's length and its bytes",
            ));
        }
        write_all(chan, &frame[..HEADER + len], None)?;
        calls += 1;
    }
    Ok(calls)
}

/// Serves vchans to domain `client` at `path` (under this domain's xenstore home when
/// relative) one after another until the process ends: each one until its client closes. Hands
/// a description of what it serves to `ready` once the first is offered.
///
/// Returns only if a vchan cannot be offered. A client that breaks off in the middle of a call
/// ends its own vchan only; that is told on stderr.
pub fn serve(client: u16, path: &str, ready: impl FnOnce(&str)) -> io::Result<Infallible> {
    let mut ready = Some(ready);
    loop {
        let mut chan = Vchan::server(client, path)?;
        if let Some(ready) = ready.take() {
            ready(&format!("domain {client} at {path}"));
        }
        if let Err(e) = serve_connection(&mut chan) {
            eprintln!("libxenvchan server: a connection from domain {client} ended: {e}");
        }
    }
}

/// Calls over a [`Channel`]: requests sent one after another and their answers received in
/// the same order, each wait bounded by the timeout.
pub struct Calls<C> {
    chan: C,
    timeout: Duration,
    /// The request being written: length and bytes, one write.
    frame: Vec<u8>,
    /// Requests sent whose answers were not received yet.
    outstanding: usize,
}

pub use imp::Vchan;

/// A client of the libxenvchan peer.
pub type VchanClient = Calls<Vchan>;

impl VchanClient {
    /// Connects to the vchan domain `server` serves at `path` (an absolute xenstore path;
    /// `None`: the server's [`DEFAULT_PATH`]), trying for up to [`CONNECT_TIMEOUT`], and makes
    /// one null call to be sure the server is there.
    pub fn connect(server: u16, path: Option<&str>) -> io::Result<Self> {
        let path = match path {
            Some(path) => path.to_string(),
            None => format!("/local/domain/{server}/{DEFAULT_PATH}"),
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let attempt = Vchan::client(server, &path).and_then(|chan| {
                let mut calls = Calls::new(chan, CALL_TIMEOUT);
                calls.send_by(&[], Some(deadline))?;
                calls.receive_empty_by(Some(deadline))?;
                Ok(calls)
            });
            match attempt {
                Ok(calls) => return Ok(calls),
                Err(e) if e.kind() == io::ErrorKind::Unsupported => return Err(e),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "libxenvchan could not connect to domain {server} at {path} within \
                             {} s: {e}",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl<C: Channel> Calls<C> {
    /// Calls over `chan`, each wait at most `timeout`.
    pub fn new(chan: C, timeout: Duration) -> Self {
        Self {
            chan,
            timeout,
            frame: Vec::with_capacity(HEADER + MAX_ECHO),
            outstanding: 0,
        }
    }

    /// Sends a request of `data` (at most [`MAX_ECHO`] bytes; empty: a null call), without
    /// waiting for its answer.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.send_by(data, Some(Instant::now() + self.timeout))
    }

    /// Receives the answer to the oldest request sent into `answer` (replacing what it held).
    pub fn receive(&mut self, answer: &mut Vec<u8>) -> io::Result<()> {
        self.receive_by(answer, Some(Instant::now() + self.timeout))
    }

    /// Requests sent whose answers are still to be received.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn send_by(&mut self, data: &[u8], deadline: Option<Instant>) -> io::Result<()> {
        if data.len() > MAX_ECHO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "libxenvchan echo refused: {} bytes are more than the {MAX_ECHO} an echo \
                     carries",
                    data.len()
                ),
            ));
        }
        if !fits(self.outstanding + 1, data.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "libxenvchan refused a call: {} calls of {} bytes in flight do not fit the \
                     {RING}-byte rings",
                    self.outstanding + 1,
                    data.len()
                ),
            ));
        }
        self.frame.clear();
        self.frame
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.frame.extend_from_slice(data);
        write_all(&mut self.chan, &self.frame, deadline)?;
        self.outstanding += 1;
        Ok(())
    }

    fn receive_by(&mut self, answer: &mut Vec<u8>, deadline: Option<Instant>) -> io::Result<()> {
        if self.outstanding == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "libxenvchan: no call is waiting for an answer",
            ));
        }
        let closed = || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "libxenvchan call failed: the server closed the vchan before answering",
            )
        };
        let len = read_length(&mut self.chan, deadline)?.ok_or_else(closed)?;
        answer.clear();
        answer.resize(len, 0);
        if !read_exact(&mut self.chan, answer, deadline)? {
            return Err(closed());
        }
        self.outstanding -= 1;
        Ok(())
    }

    fn receive_empty_by(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let mut answer = Vec::new();
        self.receive_by(&mut answer, deadline)?;
        if !answer.is_empty() {
            return Err(io::Error::other(format!(
                "libxenvchan null call answered {} bytes instead of none",
                answer.len()
            )));
        }
        Ok(())
    }
}

impl<C: Channel> PeerClient for Calls<C> {
    fn null(&mut self) -> io::Result<()> {
        self.send(&[])?;
        self.receive_empty_by(Some(Instant::now() + self.timeout))
    }

    fn echo(&mut self, data: &[u8], answer: &mut Vec<u8>) -> io::Result<()> {
        self.send(data)?;
        self.receive(answer)
    }
}

/// `DOMID[:PATH]` (a vchan peer's address: the other domain, and the xenstore path if not the
/// default) as (domain, path).
pub fn parse_address(address: &str) -> io::Result<(u16, Option<&str>)> {
    let (domain, path) = match address.split_once(':') {
        Some((domain, path)) => (domain, Some(path)),
        None => (address, None),
    };
    let domain = domain.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "bad vchan address {address:?}: DOMID[:XENSTORE-PATH] (a domain number) wanted"
            ),
        )
    })?;
    if path.is_some_and(str::is_empty) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad vchan address {address:?}: the xenstore path after ':' is empty"),
        ));
    }
    Ok((domain, path))
}

#[cfg(not(vchan_missing))]
mod imp {
    use std::ffi::{c_int, c_void, CString};
    use std::io;
    use std::ptr::NonNull;
    use std::time::Instant;

    use xenrpc_proto::wait::{SpinBudget, SpinPolicy, StdClock};

    use super::{Channel, RING};
    use crate::Unavailable;

    /// libxenvchan (`libxenvchan.h`) and `vchan/shim.c`.
    mod ffi {
        use std::ffi::{c_char, c_int, c_void};
        use std::marker::{PhantomData, PhantomPinned};

        /// `struct libxenvchan`, only ever behind a pointer.
        #[repr(C)]
        pub struct Ctrl {
            _opaque: [u8; 0],
            _not_send_sync_unpin: PhantomData<(*mut u8, PhantomPinned)>,
        }

        extern "C" {
            pub fn xr_vchan_server(
                domain: c_int,
                xs_path: *const c_char,
                read_min: usize,
                write_min: usize,
            ) -> *mut Ctrl;
            pub fn xr_vchan_client(domain: c_int, xs_path: *const c_char) -> *mut Ctrl;
            pub fn libxenvchan_read(ctrl: *mut Ctrl, data: *mut c_void, size: usize) -> c_int;
            pub fn libxenvchan_write(ctrl: *mut Ctrl, data: *const c_void, size: usize) -> c_int;
            pub fn libxenvchan_wait(ctrl: *mut Ctrl) -> c_int;
            pub fn libxenvchan_fd_for_select(ctrl: *mut Ctrl) -> c_int;
            pub fn libxenvchan_is_open(ctrl: *mut Ctrl) -> c_int;
            pub fn libxenvchan_data_ready(ctrl: *mut Ctrl) -> c_int;
            pub fn libxenvchan_close(ctrl: *mut Ctrl);
        }
    }

    pub fn built() -> Result<(), Unavailable> {
        Ok(())
    }

    /// One end of a vchan, in non-blocking mode: reads and writes return at once, and
    /// the waits between are on its event channel.
    pub struct Vchan {
        ctrl: NonNull<ffi::Ctrl>,
    }

    // SAFETY: a vchan is bound to no thread (its state is the structure, the shared pages and
    // the event channel's descriptor), and only `&mut self` methods use it: one thread at a
    // time.
    unsafe impl Send for Vchan {}

    fn c_path(path: &str) -> io::Result<CString> {
        CString::new(path).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the xenstore path {path:?} holds a NUL byte"),
            )
        })
    }

    impl Vchan {
        /// Offers a vchan to domain `client` at `path`, with rings of [`RING`] bytes each way.
        pub fn server(client: u16, path: &str) -> io::Result<Self> {
            let c_path = c_path(path)?;
            // SAFETY: `c_path` is a NUL-terminated string that outlives the call (libxenvchan
            // copies it); the shim returns a vchan of its own or NULL.
            let ctrl =
                unsafe { ffi::xr_vchan_server(c_int::from(client), c_path.as_ptr(), RING, RING) };
            Self::made(ctrl, || {
                format!("libxenvchan could not offer a vchan to domain {client} at {path}")
            })
        }

        /// Connects to the vchan domain `server` offers at `path`.
        pub fn client(server: u16, path: &str) -> io::Result<Self> {
            let c_path = c_path(path)?;
            // SAFETY: as for `server`.
            let ctrl = unsafe { ffi::xr_vchan_client(c_int::from(server), c_path.as_ptr()) };
            Self::made(ctrl, || {
                format!("libxenvchan found no vchan of domain {server} at {path}")
            })
        }

        fn made(ctrl: *mut ffi::Ctrl, what: impl FnOnce() -> String) -> io::Result<Self> {
            match NonNull::new(ctrl) {
                Some(ctrl) => Ok(Self { ctrl }),
                None => {
                    let os = io::Error::last_os_error();
                    let why = match os.raw_os_error() {
                        Some(0) | None => String::new(),
                        Some(_) => format!(": {os}"),
                    };
                    Err(io::Error::new(os.kind(), format!("{}{why}", what())))
                }
            }
        }

        /// Polls the ring for data under xenrpc's default spin policy; whether some came.
        fn spin_for_data(&mut self) -> bool {
            let mut budget = SpinBudget::new(SpinPolicy::DEFAULT);
            loop {
                // SAFETY: `ctrl` is a live vchan used by this thread alone; this reads the
                // ring's indices.
                if unsafe { ffi::libxenvchan_data_ready(self.ctrl.as_ptr()) } > 0 {
                    return true;
                }
                if !budget.keep_spinning(&StdClock) {
                    return false;
                }
                std::hint::spin_loop();
            }
        }

        fn is_open(&mut self) -> bool {
            // SAFETY: `ctrl` is a live vchan used by this thread alone.
            unsafe { ffi::libxenvchan_is_open(self.ctrl.as_ptr()) != 0 }
        }

        /// Waits for the other end's next event (data, room, or its close), until `deadline`.
        fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
            if let Some(deadline) = deadline {
                // SAFETY: `ctrl` is a live vchan; this only reads its descriptor.
                let fd = unsafe { ffi::libxenvchan_fd_for_select(self.ctrl.as_ptr()) };
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "libxenvchan call timed out: the other end did not answer in time",
                        ));
                    }
                    let mut pollfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // Rounded up, so that the last wait does not spin at 0 ms.
                    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as c_int;
                    // SAFETY: `pollfd` is one valid entry, alive for the call.
                    match unsafe { libc::poll(&mut pollfd, 1, ms) } {
                        1.. => break,
                        0 => continue,
                        _ => {
                            let e = io::Error::last_os_error();
                            if e.kind() != io::ErrorKind::Interrupted {
                                return Err(e);
                            }
                        }
                    }
                }
            }
            // SAFETY: `ctrl` is a live vchan used by this thread alone; this reads the pending
            // event (blocking until there is one) and unmasks the port.
            if unsafe { ffi::libxenvchan_wait(self.ctrl.as_ptr()) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("libxenvchan could not wait on its event channel: {e}"),
                ));
            }
            Ok(())
        }
    }

    impl Channel for Vchan {
        fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
            loop {
                // SAFETY: `ctrl` is a live vchan used by this thread alone; `buf` is writable
                // for its length, and libxenvchan copies at most that many bytes into it.
                let n = unsafe {
                    ffi::libxenvchan_read(self.ctrl.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                };
                match n {
                    1.. => return Ok(n as usize),
                    0 if self.spin_for_data() => {}
                    0 => self.wait(deadline)?,
                    // Nothing left and the other end closed (or its event failed to go).
                    _ if !self.is_open() => return Ok(0),
                    _ => return Err(io::Error::last_os_error()),
                }
            }
        }

        fn write(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
            loop {
                // SAFETY: `ctrl` is a live vchan used by this thread alone; `buf` is readable
                // for its length.
                let n = unsafe {
                    ffi::libxenvchan_write(
                        self.ctrl.as_ptr(),
                        buf.as_ptr().cast::<c_void>(),
                        buf.len(),
                    )
                };
                match n {
                    1.. => return Ok(n as usize),
                    0 => self.wait(deadline)?,
                    _ if !self.is_open() => {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the other end closed the vchan",
                        ))
                    }
                    _ => return Err(io::Error::last_os_error()),
                }
            }
        }
    }

    impl Drop for Vchan {
        fn drop(&mut self) {
            // SAFETY: `ctrl` came from the shim and is closed once, here (a server's close
            // also removes its xenstore entries).
            unsafe { ffi::libxenvchan_close(self.ctrl.as_ptr()) };
        }
    }
}

/// The peer as built without libxenvchan: everything says why.
#[cfg(vchan_missing)]
mod imp {
    use std::convert::Infallible;
    use std::io;
    use std::time::Instant;

    use super::Channel;
    use crate::Unavailable;

    const UNAVAILABLE: Unavailable = Unavailable {
        peer: "libxenvchan",
        why: env!("XENRPC_VCHAN_MISSING"),
    };

    pub fn built() -> Result<(), Unavailable> {
        Err(UNAVAILABLE)
    }

    /// Never made.
    pub struct Vchan(Infallible);

    impl Vchan {
        pub fn server(_client: u16, _path: &str) -> io::Result<Self> {
            Err(UNAVAILABLE.into())
        }

        pub fn client(_server: u16, _path: &str) -> io::Result<Self> {
            Err(UNAVAILABLE.into())
        }
    }

    impl Channel for Vchan {
        fn read(&mut self, _buf: &mut [u8], _deadline: Option<Instant>) -> io::Result<usize> {
            match self.0 {}
        }

        fn write(&mut self, _buf: &[u8], _deadline: Option<Instant>) -> io::Result<usize> {
            match self.0 {}
        }
    }
}
