//! The kernel console: Xen's own console (`console_io`) when dom0, the PV console ring served by
//! xenconsoled when a domU. Every line starts with `xenrpc: `; use [`log!`](crate::log).
//!
//! The console must never stall the service. A write to a full ring waits (bounded) for
//! xenconsoled once; after that one time-out the console drops whole lines, without waiting,
//! until the consumer has emptied the ring, then says how many lines it dropped
//! (`console: dropped <n> lines while the console ring was full`). Clients can cause log lines,
//! so a stalled or slow consumer costs the dispatch loop one bounded wait, not one per line.

use core::fmt::{self, Write};
use core::sync::atomic::{fence, AtomicU64, Ordering};

use spin::Mutex;

use super::hypercall;
use super::start_info::{BootInfo, ConsoleSource};
use crate::mm::StaticPage;

/// Offsets in `struct xencons_interface` (public/io/console.h), from xen-abi's checked layout.
mod ring {
    use core::mem::offset_of;
    use xen_abi::console::{XenconsInterface, CONSOLE_OUT_SIZE};

    pub const OUT_SIZE: u32 = CONSOLE_OUT_SIZE as u32;
    pub const OUT: usize = offset_of!(XenconsInterface, output);
    pub const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
    pub const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);
}

/// How long a full ring may block a write before output is dropped: a console that nobody
/// drains must not hang the service.
const FULL_RING_YIELDS: u32 = 20_000;

/// Lines dropped since boot because the console ring was full (reported in the RPC totals).
static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

/// Lines the console dropped since boot because nobody drained its ring.
pub fn dropped_lines() -> u64 {
    DROPPED_LINES.load(Ordering::Relaxed)
}

struct RingConsole {
    page: *mut u8,
    evtchn: u32,
    /// Our producer index, kept privately; the shared copy is only ever written from it.
    prod: u32,
    /// Set after a full-ring time-out: lines are dropped unread until the ring is empty.
    dropping: bool,
    /// Lines dropped in the current dropping spell.
    dropped_in_spell: u64,
    /// Whether the last byte in the ring ended a line (a spell can start mid-line).
    at_line_start: bool,
    /// When a dropping console last prompted xenconsoled.
    last_prompt_ns: u64,
}

// SAFETY: the raw page pointer is only used under the console mutex.
unsafe impl Send for RingConsole {}

enum Sink {
    /// Before `init`: Xen's console (visible for dom0 and debug hypervisors).
    Early,
    Hypervisor,
    Ring(RingConsole),
}

static CONSOLE: Mutex<Sink> = Mutex::new(Sink::Early);
static CONSOLE_PAGE: StaticPage = StaticPage::new();

/// Connects the console named by start_info. A domU without a usable console page is a fatal
/// error (reported on Xen's console, which a debug hypervisor shows).
pub fn init(boot: &BootInfo) {
    let sink = match boot.console {
        ConsoleSource::Hypervisor => Sink::Hypervisor,
        ConsoleSource::Ring { mfn, evtchn } => {
            if mfn == 0 {
                crate::fatal(format_args!("start_info has no console page"));
            }
            if let Err(e) = CONSOLE_PAGE.map_frame(mfn) {
                crate::fatal(format_args!("cannot map console page mfn {mfn:#x}: {e}"));
            }
            let page = CONSOLE_PAGE.as_ptr();
            // SAFETY: the page is mapped (above); out_prod is an aligned u32 in it.
            let prod = unsafe { core::ptr::read_volatile(page.add(ring::OUT_PROD) as *const u32) };
            Sink::Ring(RingConsole {
                page,
                evtchn,
                prod,
                dropping: false,
                dropped_in_spell: 0,
                at_line_start: true,
                last_prompt_ns: 0,
            })
        }
    };
    *CONSOLE.lock() = sink;
}

impl RingConsole {
    fn out_cons(&self) -> u32 {
        // SAFETY: aligned u32 inside the mapped console page; the peer may change it any time,
        // so it is read once per use.
        let cons = unsafe { core::ptr::read_volatile(self.page.add(ring::OUT_CONS) as *const u32) };
        fence(Ordering::Acquire);
        cons
    }

    /// Bytes in the ring that xenconsoled has not taken yet (a corrupt consumer index counts
    /// as a full ring).
    fn used(&self) -> u32 {
        self.prod.wrapping_sub(self.out_cons()).min(ring::OUT_SIZE)
    }

    /// Copies as much of `bytes` as fits, publishes it and returns how much was taken.
    fn put(&mut self, bytes: &[u8]) -> usize {
        let space = ring::OUT_SIZE - self.used();
        let n = (space as usize).min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            let idx = (self.prod.wrapping_add(i as u32) & (ring::OUT_SIZE - 1)) as usize;
            // SAFETY: idx < OUT_SIZE, inside the out[] array of the mapped page.
            unsafe { core::ptr::write_volatile(self.page.add(ring::OUT + idx), b) };
        }
        fence(Ordering::Release);
        self.prod = self.prod.wrapping_add(n as u32);
        if n > 0 {
            self.at_line_start = bytes[n - 1] == b'\n';
        }
        // SAFETY: aligned u32 inside the mapped page.
        unsafe { core::ptr::write_volatile(self.page.add(ring::OUT_PROD) as *mut u32, self.prod) };
        n
    }

    /// Whether output may go to the ring: false while dropping and the consumer has not caught
    /// up. Ending a dropping spell first writes how many lines it cost.
    fn accepting(&mut self) -> bool {
        if !self.dropping {
            return true;
        }
        if self.used() != 0 {
            return false;
        }
        self.dropping = false;
        let mut notice = TextBuf::new();
        if !self.at_line_start {
            // The spell cut a line short: the notice starts on a line of its own.
            let _ = writeln!(notice);
        }
        let _ = writeln!(
            notice,
            "xenrpc: console: dropped {} lines while the console ring was full",
            core::mem::take(&mut self.dropped_in_spell)
        );
        self.put(notice.bytes());
        // Tell xenconsoled: the next line (and its event) may be a long time coming.
        let _ = hypercall::evtchn_send(self.evtchn);
        true
    }

    /// Writes `bytes`, waiting (bounded) while the ring is full; false if output was dropped.
    fn write(&mut self, mut bytes: &[u8]) -> bool {
        if !self.accepting() {
            return false;
        }
        let mut waited = 0;
        while !bytes.is_empty() {
            let n = self.put(bytes);
            bytes = &bytes[n..];
            if n == 0 {
                let _ = hypercall::evtchn_send(self.evtchn);
                if waited >= FULL_RING_YIELDS {
                    self.dropping = true;
                    return false;
                }
                waited += 1;
                hypercall::sched_yield();
            }
        }
        let _ = hypercall::evtchn_send(self.evtchn);
        true
    }

    fn line_dropped(&mut self) {
        self.dropped_in_spell += 1;
        DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
    }
}

impl Sink {
    /// Whether the bytes went out (a ring may drop them; Xen's console never does).
    fn write(&mut self, bytes: &[u8]) -> bool {
        match self {
            Sink::Early | Sink::Hypervisor => {
                hypercall::console_write(bytes);
                true
            }
            Sink::Ring(r) => r.write(bytes),
        }
    }
}

/// Whether the console is dropping lines (the loop then wakes now and then to end the spell:
/// xenconsoled need not signal us when it has caught up).
pub fn dropping() -> bool {
    match CONSOLE.try_lock() {
        Some(sink) => matches!(&*sink, Sink::Ring(r) if r.dropping),
        None => false,
    }
}

/// Ends a dropping spell as soon as xenconsoled has caught up (the notice of what was dropped
/// goes out then, not with the next line). Cheap: the loop calls it every pass.
pub fn catch_up() {
    if let Some(mut sink) = CONSOLE.try_lock() {
        if let Sink::Ring(r) = &mut *sink {
            if !r.dropping {
                return;
            }
            if r.used() == 0 {
                r.accepting();
                return;
            }
            // Prompt the consumer now and then: xenconsoled reads the ring only when told,
            // and one that was stalled (or rate-limits us) may have no event left pending.
            let now = crate::xen::time::now_ns();
            if now.saturating_sub(r.last_prompt_ns) >= PROMPT_INTERVAL_NS {
                r.last_prompt_ns = now;
                let _ = hypercall::evtchn_send(r.evtchn);
            }
        }
    }
}

/// How often a dropping console prompts xenconsoled.
const PROMPT_INTERVAL_NS: u64 = 100_000_000;

/// Waits (bounded) until xenconsoled has taken everything written to the ring, so the last
/// lines before a shutdown are not lost with the domain.
pub fn drain() {
    const DRAIN_YIELDS: u32 = 20_000;
    for _ in 0..DRAIN_YIELDS {
        let done = match &*CONSOLE.lock() {
            Sink::Ring(r) => r.out_cons() == r.prod,
            _ => true,
        };
        if done {
            return;
        }
        hypercall::sched_yield();
    }
}

/// A small formatting buffer; text past its end is cut off.
struct TextBuf {
    buf: [u8; 128],
    len: usize,
}

impl TextBuf {
    fn new() -> Self {
        TextBuf {
            buf: [0; 128],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A line buffer: formats a whole line, then writes it in one go (in 256-byte pieces if it is
/// longer). Remembers whether any piece was dropped.
struct Line<'a> {
    buf: [u8; 256],
    len: usize,
    sink: &'a mut Sink,
    lost: bool,
}

impl Line<'_> {
    fn flush(&mut self) {
        if !self.lost {
            self.lost = !self.sink.write(&self.buf[..self.len]);
        }
        self.len = 0;
    }
}

impl Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Writes one `xenrpc: `-prefixed line.
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut sink = CONSOLE.lock();
    let mut line = Line {
        buf: [0; 256],
        len: 0,
        sink: &mut sink,
        lost: false,
    };
    let _ = line.write_str("xenrpc: ");
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    line.flush();
    if line.lost {
        if let Sink::Ring(ring) = line.sink {
            ring.line_dropped();
        }
    }
}

/// For the panic and fault paths: a console lock held by the interrupted code is released so
/// the last words come out (there is one vCPU, and it is here).
pub fn break_lock() {
    if CONSOLE.is_locked() {
        // SAFETY: single vCPU; the holder was interrupted and will never run again (we crash).
        unsafe { CONSOLE.force_unlock() };
    }
}

/// Logs one line to the console: `log!("booted in {} ms", ms)`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::xen::console::write_line(format_args!($($arg)*))
    };
}
