//! The libxenvchan peer's framing and calls over a Unix socket pair standing in for the vchan
//! (the vchan itself needs two Xen domains: `tests/testbed/peers-net.sh` runs it there), and
//! what can be said of libxenvchan itself on a host.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use xenrpc_peers::vchan::{self, Calls, Channel};
use xenrpc_peers::{PeerClient, System, MAX_ECHO};

mod common;
use common::{null_and_echoes, pattern};

/// One end of a socket pair as a vchan end: the same stream, the deadline as a socket timeout.
struct Pipe(UnixStream);

impl Pipe {
    fn timeout(&self, deadline: Option<Instant>, read: bool) -> io::Result<()> {
        // A zero timeout means none to the socket: at the deadline, wait a microsecond.
        let left = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1))
        });
        if read {
            self.0.set_read_timeout(left)
        } else {
            self.0.set_write_timeout(left)
        }
    }
}

fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, e),
        _ => e,
    }
}

impl Channel for Pipe {
    fn read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        self.timeout(deadline, true)?;
        self.0.read(buf).map_err(timed_out)
    }

    fn write(&mut self, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        self.timeout(deadline, false)?;
        self.0.write(buf).map_err(timed_out)
    }
}

/// A client end whose other end a server thread serves; the thread's result is the number of
/// calls it answered.
fn served() -> (Calls<Pipe>, thread::JoinHandle<io::Result<u64>>) {
    let (a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || vchan::serve_connection(&mut Pipe(b)));
    (Calls::new(Pipe(a), vchan::CALL_TIMEOUT), server)
}

#[test]
fn null_and_echoes_are_answered_and_closing_ends_the_connection() {
    let (mut client, server) = served();
    null_and_echoes(&mut client);
    drop(client);
    assert_eq!(server.join().unwrap().unwrap(), 8);
}

#[test]
fn a_window_of_calls_is_answered_in_order() {
    let (mut client, server) = served();
    // Small enough for the socket pair's buffers, which (unlike the rings) nothing sizes.
    let sizes = [64, 16384, 0, 4096, 16384, 1, 16384, 16384];
    assert!(vchan::fits(sizes.len(), 65536));
    for len in sizes {
        client.send(&pattern(len)).unwrap();
    }
    assert_eq!(client.outstanding(), sizes.len());
    let mut answer = Vec::new();
    for len in sizes {
        client.receive(&mut answer).unwrap();
        assert!(
            answer == pattern(len),
            "the answer of {len} bytes is not its request's"
        );
    }
    assert_eq!(client.outstanding(), 0);
    let e = client.receive(&mut answer).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    drop(client);
    assert_eq!(server.join().unwrap().unwrap(), sizes.len() as u64);
}

#[test]
fn a_window_larger_than_the_rings_is_refused_before_sending() {
    let (mut client, server) = served();
    let big = pattern(vchan::RING / 2);
    client.send(&big).unwrap();
    let e = client.send(&big).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("do not fit"), "{e}");
    // The call sent still gets its answer.
    let mut answer = Vec::new();
    client.receive(&mut answer).unwrap();
    assert!(answer == big);
    assert!(!vchan::fits(8, 1 << 17) && vchan::fits(1, MAX_ECHO));
    drop(client);
    assert_eq!(server.join().unwrap().unwrap(), 1);
}

#[test]
fn too_long_echo_is_refused() {
    let (mut client, _server) = served();
    let e = client
        .echo(&pattern(MAX_ECHO + 1), &mut Vec::new())
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    // Nothing was sent: the connection still works.
    client.null().unwrap();
}

/// A fake server on the other end of a pair: reads one request and answers with `reply`.
fn answering(reply: Vec<u8>) -> Calls<Pipe> {
    let (a, mut b) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut header = [0; 4];
        b.read_exact(&mut header).unwrap();
        let mut request = vec![0; u32::from_le_bytes(header) as usize];
        b.read_exact(&mut request).unwrap();
        b.write_all(&reply).unwrap();
        // Keeps its end open until the client is done.
        let _ = b.read(&mut [0]);
    });
    Calls::new(Pipe(a), Duration::from_secs(5))
}

#[test]
fn a_null_call_answered_with_bytes_is_an_error() {
    let mut client = answering([3u32.to_le_bytes().as_slice(), b"abc"].concat());
    let e = client.null().unwrap_err();
    assert!(e.to_string().contains("answered 3 bytes"), "{e}");
}

#[test]
fn an_answer_cut_short_is_an_error() {
    // Promises 10 bytes, sends 2, then hangs up.
    let (a, mut b) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut request = [0; 4 + 5];
        b.read_exact(&mut request).unwrap();
        b.write_all(&[10, 0, 0, 0, 1, 2]).unwrap();
    });
    let mut client = Calls::new(Pipe(a), Duration::from_secs(5));
    let e = client.echo(b"hello", &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
}

#[test]
fn a_server_that_closes_before_answering_is_an_error() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let mut client = Calls::new(Pipe(a), Duration::from_secs(5));
    let e = client.null().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
        ),
        "{e}"
    );
}

#[test]
fn a_server_that_does_not_answer_times_out() {
    let (a, _b) = UnixStream::pair().unwrap();
    let mut client = Calls::new(Pipe(a), Duration::from_millis(50));
    let e = client.null().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
}

#[test]
fn the_server_refuses_a_frame_too_long_and_one_cut_short() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || vchan::serve_connection(&mut Pipe(b)));
    a.write_all(&(MAX_ECHO as u32 + 1).to_le_bytes()).unwrap();
    let e = server.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

    let (mut a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || vchan::serve_connection(&mut Pipe(b)));
    a.write_all(&[8, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(a);
    let e = server.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
}

#[test]
fn addresses_name_a_domain_and_maybe_a_path() {
    assert_eq!(vchan::parse_address("7").unwrap(), (7, None));
    assert_eq!(
        vchan::parse_address("3:/local/domain/3/data/v").unwrap(),
        (3, Some("/local/domain/3/data/v"))
    );
    for bad in ["", "x", "-1", "70000", "4:"] {
        let e = vchan::parse_address(bad).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
}

/// Built, or a failure under CI; outside a Xen domain it is unavailable and says so.
#[test]
fn libxenvchan_is_built_and_needs_a_xen_domain() {
    match vchan::built() {
        Ok(()) => {}
        Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    }
    if std::path::Path::new("/dev/xen/evtchn").exists() {
        return;
    }
    let e = System::Vchan.available().unwrap_err();
    assert!(e.to_string().contains("Xen domain"), "{e}");
    // Outside Xen, libxenvchan itself fails to make a vchan, and says which.
    let e = match vchan::Vchan::client(0, "/local/domain/0/data/xenrpc-vchan") {
        Ok(_) => panic!("a vchan client was made outside Xen"),
        Err(e) => e,
    };
    assert!(
        e.to_string().starts_with("libxenvchan found no vchan"),
        "{e}"
    );
}
