//! Calls through export, serve and import over plain memory answer exactly as direct dispatch,
//! and a reply no honest service writes is `HandlerFault`.

use alloc::sync::Arc;
use alloc::vec;

use super::*;
use crate::caller::Caller;
use crate::client::CallRequest;
use crate::layout::{OolRef, PAGE_SIZE};
use crate::mem::HeapRegion;
use crate::region::SharedRegion;
use crate::service::{ServiceEnv, ServiceInfo};
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
}

/// A service behind the gate: every call is exported into a private record and windows, served
/// there, and imported back, as the service VM does across the user-mode boundary.
struct Gated<H> {
    inner: H,
    windows: SharedRegion<Arc<HeapRegion>>,
    spoil: Spoil,
}

impl<H: ServiceHandler> Gated<H> {
    fn new(inner: H) -> Self {
        Gated {
            inner,
            windows: SharedRegion::new(Arc::new(HeapRegion::new(2 * WINDOW))).unwrap(),
            spoil: Spoil::None,
        }
    }

    fn through_gate(&mut self, gate: &GateCall) -> GateReply {
        let mut reply = GateReply::zeroed();
        serve(
            &mut self.inner,
            gate,
            self.windows.view(),
            0,
            WINDOW,
            &mut reply,
        );
        match self.spoil {
            Spoil::None => {}
            Spoil::Status(s) => reply.status = s,
            Spoil::ReplyLen(n) => reply.reply_len = n,
            Spoil::Written(n) => reply.ool_written = n,
        }
        reply
    }
}

impl<H: ServiceHandler> ServiceHandler for Gated<H> {
    fn info(&self) -> &'static ServiceInfo {
        self.inner.info()
    }

    fn handle(&mut self, call: &mut CallContext<'_>) -> Status {
        let mut gate = GateCall::zeroed();
        let mut args = vec![0u8; WINDOW];
        if let Err(status) = export(call, 7, &mut gate, &mut args, WINDOW) {
            return status;
        }
        assert_eq!(gate.handler, 7);
        self.windows.view().write(0, &args).unwrap();
        let reply = self.through_gate(&gate);
        let mut result = vec![0u8; WINDOW];
        self.windows.view().read(WINDOW, &mut result).unwrap();
        import(call, &gate, &reply, &result)
    }

    fn forget_peer(&mut self, peer: PeerId) {
        let gate = export_forget_peer(0, peer);
        let reply = self.through_gate(&gate);
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
        let reply = gated.through_gate(&gate);
        assert_eq!(reply.status, Status::HandlerFault.to_wire());
    }
}
