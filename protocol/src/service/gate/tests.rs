//! Calls through export, serve and import over plain memory answer exactly as direct dispatch,
//! and a reply no honest service writes is `HandlerFault`.

use alloc::sync::Arc;
use alloc::vec;

use super::*;
use crate::caller::Caller;
use crate::client::CallRequest;
use crate::fair::CopyMeter;
use crate::layout::{OolRef, RequestHeader, PAGE_SIZE};
use crate::mem::HeapRegion;
use crate::region::SharedRegion;
use crate::service::{BatchedCall, OolArgs, OolResult, ServiceEnv, ServiceInfo, MAX_BATCH};
use crate::services::{echo, kv};
use crate::testing::TestServer;

const WINDOW: usize = 4 * PAGE_SIZE;

/// How the test's "service side" spoils its reply before the kernel side imports it.
#[derive(Clone, Copy)]
enum Spoil {
    None,
    Status(u32),
    ReplyLen(u32),
    Written(u32),
    /// The entry fails while running the batch's call with this index (a fault).
    FailAt(usize),
    /// The service claims more calls done than the batch has.
    Done(u32),
}

/// A service behind the gate: every call is exported into a private record and windows, served
/// there, and imported back, as the service VM does across the user-mode boundary.
struct Gated<H> {
    inner: H,
    windows: SharedRegion<Arc<HeapRegion>>,
    spoil: Spoil,
    /// Entries into the "service", and the calls each carried.
    entries: Vec<usize>,
    /// Calls answered as failed.
    failures: usize,
}

impl<H: ServiceHandler> Gated<H> {
    fn new(inner: H) -> Self {
        Gated {
            inner,
            windows: SharedRegion::new(Arc::new(HeapRegion::new(2 * WINDOW))).unwrap(),
            spoil: Spoil::None,
            entries: Vec::new(),
            failures: 0,
        }
    }

    /// The service side of one entry: serves `batch` over the windows (after the kernel side
    /// wrote `args` there), spoiled as asked; what it wrote in its result window into
    /// `result`.
    fn enter(
        &mut self,
        batch: &GateBatch,
        args: &mut [u8],
        result: &mut [u8],
    ) -> (GateBatchReply, Result<(), ()>) {
        self.entries.push(batch.calls().len());
        // The service's windows are the kernel's memory: it sees what the kernel left there.
        self.windows.view().write(0, args).unwrap();
        self.windows.view().write(WINDOW, result).unwrap();
        let mut page = GateBatchReply::zeroed();
        let spoil = self.spoil;
        let mut failed = false;
        serve_batch(
            &mut self.inner,
            batch.handler,
            batch.calls(),
            self.windows.view(),
            WINDOW,
            |i, reply| {
                if failed || matches!(spoil, Spoil::FailAt(at) if at == i) {
                    failed = true;
                    return;
                }
                let mut reply = *reply;
                match spoil {
                    Spoil::Status(s) => reply.status = s,
                    Spoil::ReplyLen(n) => reply.reply_len = n,
                    Spoil::Written(n) => reply.ool_written = n,
                    _ => {}
                }
                page.replies[i] = reply;
                page.done = i as u32 + 1;
            },
        );
        self.windows.view().read(WINDOW, result).unwrap();
        if let Spoil::Done(n) = spoil {
            page.done = n;
        }
        (page, if failed { Err(()) } else { Ok(()) })
    }
}

impl<H: ServiceHandler> ServiceHandler for Gated<H> {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn handle(&mut self, call: &mut CallContext<'_>) -> Status {
        let mut args = vec![0u8; WINDOW];
        let mut result = vec![0u8; WINDOW];
        let this = core::cell::RefCell::new(self);
        run_one(
            call,
            7,
            &mut args,
            &mut result,
            |batch, args, result| {
                assert!(batch.calls().iter().all(|c| c.handler == 7));
                this.borrow_mut().enter(batch, args, result)
            },
            |_, ()| {
                this.borrow_mut().failures += 1;
                Status::HandlerFault
            },
        )
    }

    fn forget_peer(&mut self, peer: PeerId) {
        let gate = export_forget_peer(0, peer);
        let mut reply = GateReply::zeroed();
        serve(
            &mut self.inner,
            &gate,
            self.windows.view(),
            WINDOW,
            &mut reply,
        );
        assert_eq!(reply.status, Status::Ok.to_wire());
    }
}

fn echo_server() -> TestServer<Gated<echo::Handler<echo::EchoServer>>> {
    TestServer::new(Gated::new(echo::Handler(echo::EchoServer)))
}

#[test]
fn inline_and_window_calls_cross_the_gate() {
    let mut server = echo_server();
    echo::Client::new(&mut server).ping(&()).unwrap();
    let hello = echo::InlineBytes::new(b"hello").unwrap();
    let back = echo::Client::new(&mut server).echo_inline(&hello).unwrap();
    assert_eq!(back.bytes(), Some(&b"hello"[..]));
    let payload: alloc::vec::Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let (len, echoed) = echo::Client::new(&mut server)
        .echo_ool(&(), &payload)
        .unwrap();
    assert_eq!(len.len as usize, payload.len());
    assert_eq!(echoed, payload);
}

#[test]
fn a_window_larger_than_the_services_is_too_large() {
    let mut server = TestServer::with_memory(Gated::new(echo::Handler(echo::EchoServer)), 32, 16);
    let payload = vec![1u8; WINDOW + 1];
    let status = echo_status(&mut server, &payload);
    assert_eq!(status, Status::TooLarge);
}

fn echo_status<S: crate::ServiceSet>(server: &mut TestServer<S>, input: &[u8]) -> Status {
    let request = CallRequest {
        service_id: echo::SERVICE_ID,
        method_id: 3,
        version: echo::VERSION,
        deadline_ns: 0,
        one_way: false,
        inline: &[],
        ool_args: OolRef::default(),
        ool_result: OolRef::default(),
    };
    server
        .call_raw(&request, input, Some(input.len()))
        .unwrap()
        .status
}

#[test]
fn replies_no_honest_service_writes_are_handler_faults() {
    let payload = [9u8; 64];
    for spoil in [
        Spoil::Status(Status::COUNT as u32),
        Spoil::Status(u32::MAX),
        Spoil::ReplyLen(INLINE_CAPACITY as u32 + 1),
        Spoil::Written(payload.len() as u32 + 1),
        Spoil::Written(u32::MAX),
    ] {
        let mut server = echo_server();
        server.services().spoil = spoil;
        assert_eq!(echo_status(&mut server, &payload), Status::HandlerFault);
    }
}

#[test]
fn a_services_own_error_status_passes_through_without_bytes() {
    let mut server = echo_server();
    server.services().spoil = Spoil::Status(Status::Busy.to_wire());
    assert_eq!(echo_status(&mut server, &[1, 2, 3]), Status::Busy);
}

#[test]
fn state_and_forget_peer_cross_the_gate() {
    let env = ServiceEnv::new("", 1 << 20);
    let store = kv::KvStore::with_budget(kv::KvBudget::from_env(&env));
    let mut server = TestServer::new(Gated::new(kv::Handler(store)));
    let key = kv::Key::new(b"k").unwrap();
    kv::Client::new(&mut server).put(&key, b"value").unwrap();
    let (info, value) = kv::Client::new(&mut server).get(&key).unwrap();
    assert_eq!(value, b"value");
    assert_eq!(info.len, 5);
    let peer = server.peer();
    server.forget_peer(peer).unwrap();
    let (info, value) = kv::Client::new(&mut server).get(&key).unwrap();
    assert_eq!((info.found, value.len()), (0, 0));
}

#[test]
fn serve_refuses_records_that_do_not_fit_its_windows() {
    let mut gated = Gated::new(echo::Handler(echo::EchoServer));
    for gate in [
        GateCall {
            op: GATE_OP_CALL,
            args_len: WINDOW as u32 + 1,
            ..GateCall::zeroed()
        },
        GateCall {
            op: GATE_OP_CALL,
            inline_len: INLINE_CAPACITY as u32 + 1,
            ..GateCall::zeroed()
        },
        GateCall {
            op: 99,
            ..GateCall::zeroed()
        },
    ] {
        let mut reply = GateReply::zeroed();
        serve(
            &mut gated.inner,
            &gate,
            gated.windows.view(),
            WINDOW,
            &mut reply,
        );
        assert_eq!(reply.status, Status::HandlerFault.to_wire());
    }
}

/// Each call's status and echoed bytes.
type Outcomes = Vec<(Status, Vec<u8>)>;

/// Echoes of `inputs` (out of line, one 4 KiB slot each, results of up to `result_len`) run
/// as one batch through the gate, the service spoiled as `spoil` says: each call's status and
/// echoed bytes, and the gate.
fn echo_batch(
    inputs: &[&[u8]],
    result_len: usize,
    spoil: Spoil,
) -> (Outcomes, Gated<echo::Handler<echo::EchoServer>>) {
    const SLOT: usize = PAGE_SIZE;
    let data = SharedRegion::new(HeapRegion::new(2 * inputs.len() * SLOT)).unwrap();
    let results_at = inputs.len() * SLOT;
    let meters: Vec<CopyMeter> = inputs
        .iter()
        .map(|input| CopyMeter::for_windows(input.len(), result_len))
        .collect();
    let mut replies = vec![[0u8; INLINE_CAPACITY]; inputs.len()];
    let headers: Vec<RequestHeader> = (0..inputs.len())
        .map(|i| RequestHeader {
            call_id: i as u64,
            service_id: echo::SERVICE_ID,
            method_id: 3,
            version: echo::VERSION,
            ..RequestHeader::default()
        })
        .collect();
    let mut batch = Vec::new();
    let calls = inputs.iter().zip(&meters).zip(&mut replies).zip(&headers);
    for (i, (((input, meter), reply), header)) in calls.enumerate() {
        data.view().write(i * SLOT, input).unwrap();
        batch.push(BatchedCall {
            call: CallContext::new(
                PeerId(1),
                header,
                &[],
                OolArgs::new(data.view(), i * SLOT, input.len(), meter),
                OolResult::new(data.view(), results_at + i * SLOT, result_len, meter),
                reply,
            ),
            status: Status::Ok,
        });
    }
    let mut gated = Gated::new(echo::Handler(echo::EchoServer));
    gated.spoil = spoil;
    let (mut args, mut result) = (vec![0u8; WINDOW], vec![0u8; WINDOW]);
    let this = core::cell::RefCell::new(&mut gated);
    run_batch(
        &mut batch,
        7,
        &mut args,
        &mut result,
        |record, args, result| this.borrow_mut().enter(record, args, result),
        |_, ()| {
            this.borrow_mut().failures += 1;
            Status::HandlerFault
        },
    );
    let outcomes = batch
        .iter()
        .enumerate()
        .map(|(i, one)| {
            let mut echoed = vec![0u8; one.call.ool_written()];
            data.view()
                .read(results_at + i * SLOT, &mut echoed)
                .unwrap();
            (one.status, echoed)
        })
        .collect();
    (outcomes, gated)
}

#[test]
fn a_batch_is_one_entry_and_each_call_gets_its_own_answer() {
    let inputs: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i + 1; 100 * (i as usize + 1)])
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let (outcomes, gated) = echo_batch(&refs, 2048, Spoil::None);
    assert_eq!(gated.entries, [5]);
    for (input, (status, echoed)) in inputs.iter().zip(outcomes) {
        assert_eq!((status, &echoed), (Status::Ok, input));
    }
}

#[test]
fn calls_that_overfill_the_windows_go_in_the_next_entry() {
    // Four results of 4 KiB fit the 16 KiB window beside each other; eight do not.
    let input = vec![7u8; 2000];
    let refs: Vec<&[u8]> = (0..MAX_BATCH).map(|_| input.as_slice()).collect();
    let (outcomes, gated) = echo_batch(&refs, PAGE_SIZE, Spoil::None);
    assert_eq!(gated.entries, [4, 4]);
    assert!(outcomes
        .iter()
        .all(|(s, e)| *s == Status::Ok && *e == input));
}

#[test]
fn a_failed_entry_fails_the_running_call_and_the_rest_run_again() {
    let inputs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 1; 64]).collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let (outcomes, gated) = echo_batch(&refs, 2048, Spoil::FailAt(1));
    // Call 0 answered, call 1 failed, calls 2 and 3 in a new entry (failing at its 2nd: 3).
    assert_eq!(gated.entries, [4, 2]);
    assert_eq!(gated.failures, 2);
    let statuses: Vec<Status> = outcomes.iter().map(|o| o.0).collect();
    assert_eq!(
        statuses,
        [
            Status::Ok,
            Status::HandlerFault,
            Status::Ok,
            Status::HandlerFault
        ]
    );
    assert_eq!(outcomes[0].1, inputs[0]);
    assert_eq!(outcomes[2].1, inputs[2]);
}

#[test]
fn a_service_that_claims_calls_it_did_not_do_gets_handler_faults() {
    let input = vec![3u8; 10];
    let refs = [input.as_slice(), input.as_slice()];
    let (outcomes, _) = echo_batch(&refs, 2048, Spoil::Done(1));
    assert_eq!(outcomes[0], (Status::Ok, input.clone()));
    assert_eq!(outcomes[1].0, Status::HandlerFault);
    let (outcomes, _) = echo_batch(&refs, 2048, Spoil::Done(u32::MAX));
    assert!(outcomes.iter().all(|o| o.0 == Status::Ok));
}

#[test]
fn windows_are_cleared_when_another_domain_enters_and_only_then() {
    let mut owner = WindowOwner::new();
    let (mut args, mut result) = (vec![0u8; 64], vec![0u8; 64]);
    let batch_reaching = |reach: u32| {
        let mut batch = GateBatch::zeroed();
        batch.count = 1;
        batch.calls[0].args_len = reach;
        WindowOwner::reach(batch.calls())
    };
    // Domain 1 runs a batch with 40 argument bytes and writes its result window.
    args[..40].fill(1);
    assert!(owner.claim(1, batch_reaching(40), &mut args, &mut result));
    result.fill(2);
    // Its next batch, 10 bytes: nothing is cleared (what is there is its own).
    args[..10].fill(3);
    assert!(!owner.claim(1, batch_reaching(10), &mut args, &mut result));
    assert!(args[10..40].iter().all(|&b| b == 1) && result.iter().all(|&b| b == 2));
    // Domain 2's batch of 20 bytes: its own bytes stay, domain 1's past them and the whole
    // result window are cleared.
    args[..20].fill(4);
    assert!(owner.claim(2, batch_reaching(20), &mut args, &mut result));
    assert!(args[..20].iter().all(|&b| b == 4));
    assert!(args[20..].iter().all(|&b| b == 0) && result.iter().all(|&b| b == 0));
    // After a reset of domain 2, its own next entry finds the windows cleared too.
    result.fill(5);
    owner.disown();
    assert!(owner.claim(2, batch_reaching(0), &mut args, &mut result));
    assert!(args.iter().all(|&b| b == 0) && result.iter().all(|&b| b == 0));
}
