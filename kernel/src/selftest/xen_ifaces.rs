//! Self-tests of the Xen interfaces against the real hypervisor: event-channel loopback,
//! masking and timed waits; granting a frame to dom0 and to ourselves (mapped through the
//! foreign window, so end-access must be refused while mapped); xenstore read/write/directory/
//! permissions, a watch that fires, and a transaction that conflicts and is retried (domU).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use xen_abi::grant::{GrantAccess, GTF_PERMIT_ACCESS, GTF_READONLY};
use xen_abi::xenstore::{
    Access, Permission, ReplyError, Request, RequestError, XenstoreDomainInterface, XsErrno,
    XsType, XsdSockmsg, XENSTORE_RING,
};
use xen_abi::{DomId, DOMID_SELF};

use super::{Test, TestError, When};
use crate::mm;
use crate::xen::events::{self, EventError, Port};
use crate::xen::grant::{self, GrantTableError};
use crate::xen::start_info::BootInfo;
use crate::xen::xenstore::{self, Connection, XsError};
use crate::xen::{shared_info, time};
use crate::{fail, log};

pub const TESTS: &[Test] = &[
    Test {
        name: "evtchn-loopback",
        when: When::Always,
        run: evtchn_loopback,
    },
    Test {
        name: "evtchn-unexpected",
        when: When::Always,
        run: evtchn_unexpected_event_is_masked,
    },
    Test {
        name: "evtchn-wait",
        when: When::Always,
        run: evtchn_wait_wakes_and_times_out,
    },
    Test {
        name: "grant-dom0",
        when: When::Always,
        run: grant_to_dom0_and_end,
    },
    Test {
        name: "grant-self-map",
        when: When::Always,
        run: grant_self_map,
    },
    Test {
        name: "grant-batch-map",
        when: When::Always,
        run: grant_batch_map_all_or_nothing,
    },
    Test {
        name: "xenstore-hostile-replies",
        when: When::Always,
        run: xenstore_hostile_replies,
    },
    Test {
        name: "xenstore-rw",
        when: When::DomUOnly,
        run: xenstore_read_write,
    },
    Test {
        name: "xenstore-watch",
        when: When::DomUOnly,
        run: xenstore_watch_fires,
    },
    Test {
        name: "xenstore-transaction",
        when: When::DomUOnly,
        run: xenstore_transaction_retries,
    },
];

/// Repetitions of the measurements printed by some tests (numbers only, never judged: they
/// are TCG wall-clock times in the testbed, comparable only within one run).
const MEASURE_RUNS: u32 = 200;

/// Median wall time of `runs` calls of `op`, in ns.
fn median_ns(runs: u32, mut op: impl FnMut()) -> u64 {
    let mut samples: Vec<u64> = (0..runs)
        .map(|_| {
            let start = time::now_ns();
            op();
            time::now_ns().saturating_sub(start)
        })
        .collect();
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

/// The self-tests' scratch directory in our own tree.
const SCRATCH: &str = "data/xenrpc-ifaces";

fn counter_handler(counter: &Arc<AtomicU32>) -> events::Handler {
    let counter = counter.clone();
    Arc::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    })
}

/// A loopback pair: `a` allocated for ourselves, `b` bound to it.
fn loopback_pair() -> Result<(Port, Port), TestError> {
    let a = match events::alloc_unbound(DOMID_SELF) {
        Ok(p) => p,
        Err(e) => fail!("alloc_unbound(DOMID_SELF) failed: {e}"),
    };
    match events::bind_interdomain(DOMID_SELF, a) {
        Ok(b) => Ok((a, b)),
        Err(e) => {
            let _ = events::close(a);
            fail!("bind_interdomain(DOMID_SELF, {a}) failed: {e}")
        }
    }
}

fn close_pair(a: Port, b: Port) -> Result<(), TestError> {
    for port in [a, b] {
        if let Err(e) = events::close(port) {
            fail!("closing port {port} failed: {e}");
        }
    }
    Ok(())
}

fn evtchn_loopback(_: &BootInfo) -> Result<(), TestError> {
    let (a, b) = loopback_pair()?;
    let result = (|| {
        let hits_a = Arc::new(AtomicU32::new(0));
        let hits_b = Arc::new(AtomicU32::new(0));
        for (port, hits) in [(a, &hits_a), (b, &hits_b)] {
            if let Err(e) = events::set_handler(port, counter_handler(hits)) {
                fail!("set_handler({port}) failed: {e}");
            }
            if let Err(e) = events::unmask(port) {
                fail!("unmask({port}) failed: {e}");
            }
        }
        let counts = || (hits_a.load(Ordering::SeqCst), hits_b.load(Ordering::SeqCst));
        let send = |port: Port| -> Result<(), TestError> {
            if let Err(e) = events::send(port) {
                fail!("send({port}) failed: {e}");
            }
            Ok(())
        };

        send(a)?;
        events::dispatch_pending();
        if counts() != (0, 1) {
            fail!(
                "after send on {a}: handler counts {:?}, expected (0, 1)",
                counts()
            );
        }
        send(b)?;
        events::dispatch_pending();
        if counts() != (1, 1) {
            fail!(
                "after send on {b}: handler counts {:?}, expected (1, 1)",
                counts()
            );
        }

        // Two sends before a dispatch coalesce into one pending event.
        send(a)?;
        send(a)?;
        events::dispatch_pending();
        if counts() != (1, 2) {
            fail!(
                "after two sends: handler counts {:?}, expected (1, 2)",
                counts()
            );
        }

        // Masked: the event stays pending and is not dispatched ...
        events::mask(b);
        send(a)?;
        events::dispatch_pending();
        if counts() != (1, 2) || !shared_info::is_pending(b) {
            fail!(
                "masked port: counts {:?}, pending {}",
                counts(),
                shared_info::is_pending(b)
            );
        }
        // ... and unmasking delivers it.
        if let Err(e) = events::unmask(b) {
            fail!("unmask({b}) failed: {e}");
        }
        events::dispatch_pending();
        if counts() != (1, 3) {
            fail!(
                "after unmask: handler counts {:?}, expected (1, 3)",
                counts()
            );
        }
        let before = hits_b.load(Ordering::SeqCst);
        let median = median_ns(MEASURE_RUNS, || {
            let _ = events::send(a);
            events::dispatch_pending();
        });
        let delivered = hits_b.load(Ordering::SeqCst) - before;
        if delivered != MEASURE_RUNS {
            fail!("{delivered} of {MEASURE_RUNS} loopback events reached the handler");
        }
        log!("measure evtchn loopback send+dispatch: median {median} ns ({MEASURE_RUNS} runs)");
        Ok(())
    })();
    close_pair(a, b)?;
    result
}

fn evtchn_unexpected_event_is_masked(_: &BootInfo) -> Result<(), TestError> {
    let (a, b) = loopback_pair()?;
    let result = (|| {
        if let Err(e) = events::unmask(b) {
            fail!("unmask({b}) failed: {e}");
        }
        if let Err(e) = events::send(a) {
            fail!("send({a}) failed: {e}");
        }
        events::dispatch_pending();
        if !shared_info::is_masked(b) {
            fail!("an event on handler-less port {b} did not mask it");
        }
        if !shared_info::is_pending(b) {
            fail!("the unexpected event on {b} was dropped instead of kept pending");
        }
        // A handler installed afterwards receives the kept event once it unmasks.
        let hits = Arc::new(AtomicU32::new(0));
        if let Err(e) = events::set_handler(b, counter_handler(&hits)) {
            fail!("set_handler({b}) failed: {e}");
        }
        if let Err(e) = events::unmask(b) {
            fail!("unmask({b}) failed: {e}");
        }
        events::dispatch_pending();
        if hits.load(Ordering::SeqCst) != 1 {
            fail!(
                "the kept event reached the late handler {} times, expected once",
                hits.load(Ordering::SeqCst)
            );
        }
        Ok(())
    })();
    close_pair(a, b)?;
    result
}

fn evtchn_wait_wakes_and_times_out(_: &BootInfo) -> Result<(), TestError> {
    let port = match events::bind_virq(xen_sys::VIRQ_TIMER) {
        Ok(p) => p,
        Err(e) => fail!("bind_virq(VIRQ_TIMER) failed: {e}"),
    };
    let result = (|| {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        if let Err(e) =
            events::set_handler(port, Arc::new(move |_| flag.store(true, Ordering::SeqCst)))
        {
            fail!("set_handler failed: {e}");
        }
        if let Err(e) = events::unmask(port) {
            fail!("unmask failed: {e}");
        }
        // The timer event must end the poll inside wait_until and run the handler.
        let deadline = time::now_ns() + 5_000_000;
        if let Err(e) = time::set_timer(deadline) {
            fail!("set_timer failed: {e}");
        }
        if let Err(e) = events::wait_until(2_000_000_000, || fired.load(Ordering::SeqCst)) {
            fail!("waiting for the timer event failed: {e}");
        }
        // Nothing pending: the wait sleeps in SCHEDOP_poll and ends with TimedOut.
        match events::wait_until(3_000_000, || false) {
            Err(EventError::TimedOut) => {}
            other => fail!("an idle wait returned {other:?}, expected TimedOut"),
        }
        // More handled ports than SCHEDOP_poll takes: waits fall back to short port-less
        // polls, and still time out and still see the timer.
        let mut pairs = Vec::new();
        let crowd = (|| {
            while pairs.len() * 2 <= 130 {
                let (a, b) = loopback_pair()?;
                pairs.push((a, b));
                for p in [a, b] {
                    if let Err(e) = events::set_handler(p, Arc::new(|_| {})) {
                        fail!("set_handler({p}) failed: {e}");
                    }
                    if let Err(e) = events::unmask(p) {
                        fail!("unmask({p}) failed: {e}");
                    }
                }
            }
            match events::wait_until(3_000_000, || false) {
                Err(EventError::TimedOut) => {}
                other => fail!("a wait with {} ports returned {other:?}", pairs.len() * 2),
            }
            fired.store(false, Ordering::SeqCst);
            if let Err(e) = time::set_timer(time::now_ns() + 2_000_000) {
                fail!("set_timer failed: {e}");
            }
            match events::wait_until(2_000_000_000, || fired.load(Ordering::SeqCst)) {
                Ok(()) => Ok(()),
                Err(e) => fail!("with {} ports the timer was not seen: {e}", pairs.len() * 2),
            }
        })();
        for (a, b) in pairs {
            close_pair(a, b)?;
        }
        crowd
    })();
    if let Err(e) = events::close(port) {
        fail!("closing the timer port failed: {e}");
    }
    result
}

/// A zeroed pool frame for grant tests, with its machine frame.
fn test_frame() -> Result<(mm::p2m::Pfn, xen_abi::pte::Mfn), TestError> {
    let Some(pfn) = mm::alloc_frame() else {
        fail!("frame pool is empty");
    };
    Ok((pfn, mm::pfn_to_mfn(pfn)))
}

fn grant_to_dom0_and_end(_: &BootInfo) -> Result<(), TestError> {
    let (pfn, mfn) = test_frame()?;
    let result = (|| {
        let free_before = grant::free_refs().unwrap_or(0);
        let gref = match grant::grant_access(0, mfn, GrantAccess::ReadOnly) {
            Ok(r) => r,
            Err(e) => fail!("granting mfn {:#x} to dom0 failed: {e}", mfn.0),
        };
        if gref.0 < xen_abi::grant::GNTTAB_NR_RESERVED_ENTRIES {
            fail!("got reserved grant ref {}", gref.0);
        }
        match grant::read_entry(gref) {
            Ok(e)
                if e.flags == GTF_PERMIT_ACCESS | GTF_READONLY
                    && e.domid == 0
                    && u64::from(e.frame) == mfn.0 => {}
            Ok(e) => fail!("grant entry reads {e:?}"),
            Err(e) => fail!("reading the entry failed: {e}"),
        }
        if let Err(e) = grant::end_access(gref) {
            fail!("ending dom0's access failed: {e}");
        }
        match grant::read_entry(gref) {
            Ok(e) if e.flags == 0 => {}
            Ok(e) => fail!("entry flags {:#x} after end_access", e.flags),
            Err(e) => fail!("reading the entry failed: {e}"),
        }
        if grant::free_refs().unwrap_or(0) != free_before {
            fail!("the grant ref was not returned");
        }
        match grant::end_access(gref) {
            Err(GrantTableError::BadRef(_)) => Ok(()),
            other => fail!("a second end_access returned {other:?}"),
        }
    })();
    mm::free_frame(pfn);
    result
}

/// Our own domain id: 0 as dom0, else from xenstore's `domid` node.
fn own_domid(boot: &BootInfo) -> Result<DomId, TestError> {
    if boot.is_dom0() {
        return Ok(0);
    }
    match xenstore::read_text("domid") {
        Ok(text) => match text.parse::<DomId>() {
            Ok(id) => Ok(id),
            Err(_) => fail!("xenstore domid '{text}' is not a number"),
        },
        Err(e) => fail!("reading our domid from xenstore failed: {e}"),
    }
}

fn grant_self_map(boot: &BootInfo) -> Result<(), TestError> {
    let domid = own_domid(boot)?;
    let (pfn, mfn) = test_frame()?;
    let page = pfn.va() as *mut u64;
    // SAFETY: the pool frame is ours, mapped read-write at its direct-map address, and unused.
    unsafe { core::ptr::write_volatile(page, 0x005e_ed0f_9a47_u64) };
    let slot = match mm::reserve_foreign_slot() {
        Ok(s) => s,
        Err(e) => {
            mm::free_frame(pfn);
            fail!("reserving a foreign slot failed: {e}");
        }
    };
    let gref = match grant::grant_access(domid, mfn, GrantAccess::ReadWrite) {
        Ok(r) => r,
        Err(e) => {
            let _ = mm::release_foreign_slot(slot);
            mm::free_frame(pfn);
            fail!("granting to ourselves (dom {domid}) failed: {e}");
        }
    };
    let result = (|| {
        // Mapping over a kernel page (here the frame's own direct-map page) is refused.
        match grant::map_grant(domid, gref, pfn.va(), GrantAccess::ReadWrite) {
            Err(GrantTableError::OutsideForeignWindow(_)) => {}
            other => fail!("mapping a grant over a kernel page returned {other:?}"),
        }
        let handle = match grant::map_grant(domid, gref, slot.base, GrantAccess::ReadWrite) {
            Ok(h) => h,
            Err(e) => fail!("mapping our own grant {} failed: {e}", gref.0),
        };
        let mapped = slot.base as *mut u64;
        let checks = (|| {
            // SAFETY: `mapped` is the page Xen just mapped for us; only this test uses it.
            let seen = unsafe { core::ptr::read_volatile(mapped) };
            if seen != 0x005e_ed0f_9a47 {
                fail!("the mapping shows {seen:#x}, not the granted frame's contents");
            }
            // SAFETY: as above; a write through the grant mapping.
            unsafe { core::ptr::write_volatile(mapped.add(1), 0xfeed) };
            // SAFETY: the original direct-map page of the same frame.
            let back = unsafe { core::ptr::read_volatile(page.add(1)) };
            if back != 0xfeed {
                fail!("a write through the mapping did not reach the frame");
            }
            match grant::end_access(gref) {
                Err(GrantTableError::StillInUse(_)) => Ok(()),
                Ok(()) => fail!("end_access succeeded while the grant was mapped"),
                Err(e) => fail!("end_access while mapped failed oddly: {e}"),
            }
        })();
        if let Err(e) = grant::unmap_grant(slot.base, handle) {
            fail!("unmapping the grant failed: {e}");
        }
        checks
    })();
    let ended = grant::end_access(gref);
    let released = mm::release_foreign_slot(slot);
    mm::free_frame(pfn);
    result?;
    if let Err(e) = ended {
        fail!("end_access after unmapping failed: {e}");
    }
    if let Err(e) = released {
        fail!("releasing the foreign slot failed: {e}");
    }
    Ok(())
}

fn grant_batch_map_all_or_nothing(boot: &BootInfo) -> Result<(), TestError> {
    const PAGES: usize = 3;
    let domid = own_domid(boot)?;
    let mut frames = Vec::new();
    let mut grefs = Vec::new();
    let slot = match mm::reserve_foreign_slot() {
        Ok(s) => s,
        Err(e) => fail!("reserving a foreign slot failed: {e}"),
    };
    let result = (|| {
        for i in 0..PAGES {
            let (pfn, mfn) = test_frame()?;
            frames.push(pfn);
            // SAFETY: a pool frame of ours, mapped read-write at its direct-map address.
            unsafe { core::ptr::write_volatile(pfn.va() as *mut u64, 0xb00 + i as u64) };
            match grant::grant_access(domid, mfn, GrantAccess::ReadOnly) {
                Ok(r) => grefs.push(r),
                Err(e) => fail!("granting frame {i} failed: {e}"),
            }
        }
        let handles = match grant::map_grants(domid, &grefs, slot.base, GrantAccess::ReadOnly) {
            Ok(h) => h,
            Err(e) => fail!("batch map of {PAGES} grants failed: {e}"),
        };
        for i in 0..PAGES {
            // SAFETY: page `i` of the slot was just mapped read-only from our own frame.
            let seen = unsafe {
                core::ptr::read_volatile((slot.base + i as u64 * mm::PAGE_SIZE_U64) as *const u64)
            };
            if seen != 0xb00 + i as u64 {
                fail!("batch-mapped page {i} shows {seen:#x}");
            }
        }
        if let Err(e) = grant::unmap_grants(slot.base, &handles) {
            fail!("batch unmap failed: {e}");
        }
        // A bad reference in the middle: nothing may stay mapped.
        let bogus = xen_abi::grant::GrantRef(grefs[2].0 + 1);
        let mixed = [grefs[0], bogus, grefs[1]];
        match grant::map_grants(domid, &mixed, slot.base, GrantAccess::ReadOnly) {
            Err(GrantTableError::Status(_)) => {}
            other => fail!("a batch with a bad grant returned {other:?}"),
        }
        for i in 0..mixed.len() as u64 {
            match mm::translate(slot.base + i * mm::PAGE_SIZE_U64) {
                Ok(None) => {}
                other => fail!("page {i} still mapped after a failed batch: {other:?}"),
            }
        }
        Ok(())
    })();
    let mut ended = Ok(());
    for gref in grefs {
        if let Err(e) = grant::end_access(gref) {
            ended = Err(e);
        }
    }
    for pfn in frames {
        mm::free_frame(pfn);
    }
    let released = mm::release_foreign_slot(slot);
    result?;
    if let Err(e) = ended {
        fail!("end_access after the batch tests failed: {e}");
    }
    if let Err(e) = released {
        fail!("releasing the foreign slot failed: {e}");
    }
    Ok(())
}

/// A private page playing xenstored: replies are placed on its response ring before the call.
struct FakeStore {
    page: *mut XenstoreDomainInterface,
    rsp_prod: u32,
}

impl FakeStore {
    fn queue_reply(&mut self, msg_type: u32, req_id: u32, payload: &[u8]) {
        let header = XsdSockmsg {
            msg_type,
            req_id,
            tx_id: 0,
            len: payload.len() as u32,
        };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(payload);
        for byte in bytes {
            let offset = XENSTORE_RING.mask(self.rsp_prod);
            // SAFETY: our own zeroed pool page (no other domain sees it); offset < 1024 keeps
            // the write inside `rsp`.
            unsafe {
                core::ptr::addr_of_mut!((*self.page).rsp)
                    .cast::<u8>()
                    .add(offset)
                    .write_volatile(byte)
            };
            self.rsp_prod = self.rsp_prod.wrapping_add(1);
        }
        self.set_rsp_prod(self.rsp_prod);
    }

    fn set_rsp_prod(&self, value: u32) {
        // SAFETY: an aligned u32 field of our own page.
        unsafe { core::ptr::addr_of_mut!((*self.page).rsp_prod).write_volatile(value) };
    }
}

fn xenstore_hostile_replies(_: &BootInfo) -> Result<(), TestError> {
    let Some(pfn) = mm::alloc_frame() else {
        fail!("frame pool is empty");
    };
    let (a, b) = loopback_pair()?;
    let result = (|| {
        if let Err(e) = events::set_handler(b, Arc::new(|_| {})) {
            fail!("set_handler failed: {e}");
        }
        let mut store = FakeStore {
            page: pfn.va() as *mut XenstoreDomainInterface,
            rsp_prod: 0,
        };
        let mut connection = match Connection::over_page(store.page, a) {
            Ok(c) => c,
            Err(e) => fail!("connection over a zeroed page failed: {e}"),
        };
        let read = Request::Read { path: "data/x" };
        let directory = Request::Directory { path: "data" };

        // Request ids count from 1.
        store.queue_reply(XsType::Error as u32, 1, b"EACCES\0");
        match connection.call(&read, 0) {
            Err(XsError::Reply(ReplyError::Xenstore(XsErrno::Eacces))) => {}
            other => fail!("an EACCES reply gave {other:?}"),
        }
        store.queue_reply(XsType::Read as u32, 99, b"v");
        match connection.call(&read, 0) {
            Err(XsError::Reply(ReplyError::WrongRequestId {
                expected: 2,
                got: 99,
            })) => {}
            other => fail!("a reply to another request gave {other:?}"),
        }
        store.queue_reply(XsType::Write as u32, 3, b"OK\0");
        match connection.call(&read, 0) {
            Err(XsError::Reply(ReplyError::WrongType { .. })) => {}
            other => fail!("a reply of the wrong type gave {other:?}"),
        }
        store.queue_reply(XsType::Directory as u32, 4, b"a\0\0b\0");
        match connection.call(&directory, 0).and_then(|p| {
            xen_abi::xenstore::parse_directory(&p)
                .map(|d| d.count())
                .map_err(XsError::Reply)
        }) {
            Err(XsError::Reply(ReplyError::EmptyString)) => {}
            other => fail!("a directory with an empty name gave {other:?}"),
        }
        // The connection still works after those...
        store.queue_reply(XsType::Read as u32, 5, b"fine");
        match connection.call(&read, 0) {
            Ok(value) if value == b"fine" => {}
            other => fail!("a good reply after bad ones gave {other:?}"),
        }
        // ... but an oversized message breaks it for good.
        let oversized = XsdSockmsg {
            msg_type: XsType::Read as u32,
            req_id: 6,
            tx_id: 0,
            len: 5000,
        };
        store.queue_reply(oversized.msg_type, 6, &[]);
        // Patch the length field of the header just queued.
        let len_offset = XENSTORE_RING.mask(store.rsp_prod.wrapping_sub(4));
        for (i, byte) in oversized.len.to_ne_bytes().iter().enumerate() {
            // SAFETY: our own page; the 4 bytes lie in `rsp` (offset masked by the ring size).
            unsafe {
                core::ptr::addr_of_mut!((*store.page).rsp)
                    .cast::<u8>()
                    .add((len_offset + i) % 1024)
                    .write_volatile(*byte)
            };
        }
        match connection.call(&read, 0) {
            Err(XsError::Broken(_)) => {}
            other => fail!("an oversized message gave {other:?}"),
        }
        match connection.call(&read, 0) {
            Err(XsError::Broken(_)) => {}
            other => fail!("a call on a broken connection gave {other:?}"),
        }
        // A producer index far ahead of the consumer: broken at once.
        // SAFETY: our own page, rewritten while no connection uses it.
        unsafe { core::ptr::write_bytes(store.page.cast::<u8>(), 0, mm::PAGE_SIZE) };
        let mut connection = match Connection::over_page(store.page, a) {
            Ok(c) => c,
            Err(e) => fail!("connection over a zeroed page failed: {e}"),
        };
        store.set_rsp_prod(4000);
        match connection.call(&read, 0) {
            Err(XsError::Broken(_)) => Ok(()),
            other => fail!("a hostile producer index gave {other:?}"),
        }
    })();
    close_pair(a, b)?;
    mm::free_frame(pfn);
    result
}

fn xs<T>(what: &str, result: Result<T, XsError>) -> Result<T, TestError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => fail!("{what}: {e}"),
    }
}

fn xenstore_read_write(boot: &BootInfo) -> Result<(), TestError> {
    let domid = own_domid(boot)?;
    let dir = SCRATCH;
    let value_path = alloc::format!("{dir}/rw/value");
    xs("mkdir", xenstore::mkdir(&alloc::format!("{dir}/rw")))?;
    xs("write", xenstore::write(&value_path, b"hello xenstore"))?;
    let read = xs("read", xenstore::read(&value_path))?;
    if read != b"hello xenstore" {
        fail!("read back {:?}", String::from_utf8_lossy(&read));
    }
    // Absolute and relative paths name the same node.
    let absolute = alloc::format!("/local/domain/{domid}/{value_path}");
    if xs("read absolute", xenstore::read_text(&absolute))? != "hello xenstore" {
        fail!("absolute path read differs");
    }
    xs(
        "write second",
        xenstore::write(&alloc::format!("{dir}/rw/other"), b""),
    )?;
    let mut children = xs(
        "directory",
        xenstore::directory(&alloc::format!("{dir}/rw")),
    )?;
    children.sort();
    if children != ["other", "value"] {
        fail!("directory lists {children:?}");
    }
    let perms = [
        Permission::new(Access::None, domid),
        Permission::new(Access::Read, 0),
    ];
    xs("set_perms", xenstore::set_perms(&value_path, &perms))?;
    let got: Vec<Permission> = xs("get_perms", xenstore::get_perms(&value_path))?;
    if got != perms {
        fail!("permissions read back as {got:?}");
    }
    xs("rm", xenstore::rm(&alloc::format!("{dir}/rw")))?;
    match xenstore::read(&value_path) {
        Err(e) if e.is(XsErrno::Enoent) => {}
        other => fail!("reading a removed node returned {other:?}, expected ENOENT"),
    }
    let median = median_ns(MEASURE_RUNS / 4, || {
        let _ = xenstore::write(&value_path, b"x");
        let _ = xenstore::read(&value_path);
    });
    log!(
        "measure xenstore write+read round trips: median {median} ns ({} runs)",
        MEASURE_RUNS / 4
    );
    xs(
        "rm after measuring",
        xenstore::rm(&alloc::format!("{dir}/rw")),
    )?;
    // Refused locally, never sent.
    match xenstore::read("bad//path") {
        Err(XsError::Request(RequestError::InvalidPath)) => {}
        other => fail!("an invalid path returned {other:?}"),
    }
    // Another domain's private node: xenstored refuses.
    match xenstore::write("/local/domain/0/xenrpc-forbidden", b"x") {
        Err(XsError::Reply(ReplyError::Xenstore(XsErrno::Eacces))) => Ok(()),
        other => fail!("writing into dom0's tree returned {other:?}, expected EACCES"),
    }
}

fn xenstore_watch_fires(_: &BootInfo) -> Result<(), TestError> {
    let path = alloc::format!("{SCRATCH}/watched");
    let token = "xenrpc-selftest-watch";
    let seen: Arc<spin::Mutex<Vec<String>>> = Arc::new(spin::Mutex::new(Vec::new()));
    let sink = seen.clone();
    xs("write initial", xenstore::write(&path, b"0"))?;
    xs(
        "watch",
        xenstore::watch(
            &path,
            token,
            Arc::new(move |p: &str| sink.lock().push(p.into())),
        ),
    )?;
    let result = (|| {
        let wait_for = |count: usize| {
            events::wait_until(5_000_000_000, || {
                xenstore::service();
                seen.lock().len() >= count
            })
        };
        // xenstored fires a new watch once.
        if let Err(e) = wait_for(1) {
            fail!("the registration event did not arrive: {e}");
        }
        xs("write", xenstore::write(&path, b"1"))?;
        if let Err(e) = wait_for(2) {
            fail!("no event after a write ({} seen): {e}", seen.lock().len());
        }
        let events = seen.lock().clone();
        // A watch on a relative path reports relative paths.
        if !events.iter().all(|p| *p == path) {
            fail!("events name unexpected paths: {events:?}, expected {path}");
        }
        Ok(())
    })();
    xs("unwatch", xenstore::unwatch(&path, token))?;
    xs("rm", xenstore::rm(&path))?;
    result
}

fn xenstore_transaction_retries(_: &BootInfo) -> Result<(), TestError> {
    let path = alloc::format!("{SCRATCH}/counter");
    xs("write", xenstore::write(&path, b"41"))?;
    let attempts = AtomicU32::new(0);
    let result = xenstore::transaction(|tx| {
        let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let text = xenstore::read_text_in(tx, &path)?;
        if n == 1 {
            // A write outside the transaction to a node it read: the commit must conflict.
            xenstore::write(&path, b"100")?;
        }
        let value: u32 = text.parse().unwrap_or(0);
        xenstore::write_in(tx, &path, alloc::format!("{}", value + 1).as_bytes())?;
        Ok(value)
    });
    let read_value = xs("transaction", result)?;
    let attempts = attempts.load(Ordering::SeqCst);
    if attempts != 2 {
        fail!("transaction ran {attempts} times, expected 2 (one EAGAIN retry)");
    }
    if read_value != 100 {
        fail!("the retried transaction read {read_value}, expected 100");
    }
    let final_value = xs("read", xenstore::read_text(&path))?;
    if final_value != "101" {
        fail!("counter is {final_value}, expected 101");
    }
    xs("rm", xenstore::rm(SCRATCH))?;
    Ok(())
}
