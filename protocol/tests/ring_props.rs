//! Property tests of the rings under arbitrary interleavings of client and server steps, with
//! and without a hostile peer writing arbitrary words between steps.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use common::*;
use proptest::prelude::*;
use xenrpc_proto::services::arith::{self, Operands};
use xenrpc_proto::services::echo;
use xenrpc_proto::{CallError, OolRef, SharedRegion, Status};

#[derive(Clone, Debug)]
enum Op {
    /// Start a call: add(a, b), or an out-of-line echo of `len` bytes; maybe one-way.
    StartAdd {
        a: i32,
        b: i32,
        one_way: bool,
    },
    StartEcho {
        len: u16,
    },
    Publish,
    ServerPoll {
        budget: u8,
    },
    ClientPoll,
    ServerSleep,
    ClientWait,
    /// A hostile write of `value` at word `word` of the ring (or the data) region.
    Scribble {
        data: bool,
        word: u16,
        value: u32,
    },
}

fn honest_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<i32>(), any::<i32>(), any::<bool>()).prop_map(|(a, b, one_way)| Op::StartAdd { a, b, one_way }),
        1 => (1u16..=512).prop_map(|len| Op::StartEcho { len }),
        2 => Just(Op::Publish),
        2 => (1u8..20).prop_map(|budget| Op::ServerPoll { budget }),
        2 => Just(Op::ClientPoll),
        1 => Just(Op::ServerSleep),
        1 => Just(Op::ClientWait),
    ]
}

/// Where the ring indices start: 0, just below the 32-bit wrap, or anywhere.
fn start_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        (1u32..=64).prop_map(|k| 0u32.wrapping_sub(k)),
        any::<u32>()
    ]
}

fn scribble(data_only: bool) -> impl Strategy<Value = Op> {
    (any::<bool>(), any::<u16>(), any::<u32>(), 0u8..4).prop_map(
        move |(data, word, value, small)| {
            // Small values make plausible indices; large ones anything.
            let value = if small == 0 { value % 40 } else { value };
            Op::Scribble {
                data: data || data_only,
                word,
                value,
            }
        },
    )
}

/// What the model expects of an in-flight call.
enum Expect {
    Sum(i64),
    /// Echo through window `window` (argument at `window * 512`, result 4096 above it).
    Echo {
        window: usize,
        len: u32,
        fill: u8,
    },
}

/// Out-of-line windows per in-flight echo call, so that no two calls' windows overlap.
const ECHO_WINDOWS: usize = 8;
const ECHO_WINDOW_BYTES: u32 = 512;

struct Run {
    mem: Memory,
}

impl Run {
    fn new() -> Self {
        Run {
            mem: Memory::new(16, 2),
        }
    }

    /// Runs the ops; with `strict` (no scribbling of the ring) also checks every reply and the
    /// notification rules.
    fn go(&self, ops: &[Op], strict: bool, start: u32) -> Result<(), TestCaseError> {
        let mem = &self.mem;
        let (mut client, mut server) = mem.connect_at(8, 1, start);
        let mut services = Services::new();
        let mut registry = services.registry();
        let ring = SharedRegion::new(&mem.ring).unwrap();
        let data = SharedRegion::new(&mem.data).unwrap();
        let mut expected: HashMap<u64, Expect> = HashMap::new();
        // Notification model: which side is asleep (armed and told it may sleep).
        let mut server_asleep = true; // attach arms for the first request
        let mut client_asleep = true; // a new client arms for the first response
        let mut echo_windows: [bool; ECHO_WINDOWS] = [false; ECHO_WINDOWS];
        let mut fills = 0u8;
        let mut unpublished = 0;

        for op in ops {
            match *op {
                Op::StartAdd { a, b, one_way } => {
                    let ops = Operands {
                        a: a.into(),
                        b: b.into(),
                    };
                    let call = arith::client::add(&ops);
                    let result = if one_way {
                        client.start_one_way(call).map(|_| None)
                    } else {
                        client.start(&call).map(Some)
                    };
                    match result {
                        Ok(Some(p)) => {
                            expected.insert(p.call_id(), Expect::Sum(i64::from(a) + i64::from(b)));
                            unpublished += 1;
                        }
                        Ok(None) => unpublished += 1,
                        Err(CallError::TooManyInFlight | CallError::RingFull) => {}
                        Err(e) => prop_assert!(!strict, "unexpected {e:?}"),
                    }
                }
                Op::StartEcho { len } => {
                    let Some(window) = echo_windows.iter().position(|busy| !busy) else {
                        continue;
                    };
                    let len = u32::from(len);
                    let at = window as u32 * ECHO_WINDOW_BYTES;
                    fills = fills.wrapping_add(1);
                    let fill = fills;
                    data.view().fill(at as usize, len as usize, fill).unwrap();
                    let call = echo::client::echo_ool(&())
                        .ool_args(OolRef::new(at, len))
                        .ool_result(OolRef::new(4096 + at, len));
                    match client.start(&call) {
                        Ok(p) => {
                            expected.insert(p.call_id(), Expect::Echo { window, len, fill });
                            echo_windows[window] = true;
                            unpublished += 1;
                        }
                        Err(CallError::TooManyInFlight | CallError::RingFull) => {}
                        Err(e) => prop_assert!(!strict, "unexpected {e:?}"),
                    }
                }
                Op::Publish => {
                    let notify = client.publish();
                    if strict {
                        if unpublished > 0 && server_asleep {
                            prop_assert!(notify, "lost wake-up of a sleeping server");
                        }
                        if !server_asleep {
                            prop_assert!(!notify, "notified a server that did not ask");
                        }
                        if notify {
                            server_asleep = false;
                        }
                    }
                    unpublished = 0;
                }
                Op::ServerPoll { budget } => {
                    let before = server.stats().responses;
                    let budget = u64::from(budget) * xenrpc_proto::REQUEST_COST;
                    let outcome = server.poll(&mut registry, &clock(), budget);
                    prop_assert!(outcome.work <= budget.max(xenrpc_proto::MAX_REQUEST_COST));
                    prop_assert!(outcome.earned <= outcome.handled);
                    if strict {
                        prop_assert!(!outcome.broken);
                        let responded = server.stats().responses > before;
                        if responded && client_asleep {
                            prop_assert!(outcome.notify, "lost wake-up of a sleeping client");
                        }
                        if !client_asleep {
                            prop_assert!(!outcome.notify, "notified a client that did not ask");
                        }
                        if outcome.notify {
                            client_asleep = false;
                        }
                        // A server that polled is awake until it arms again.
                        if outcome.handled > 0 {
                            server_asleep = false;
                        }
                    }
                }
                Op::ClientPoll => match client.poll_response() {
                    Ok(Some(completion)) => {
                        let expect = expected.remove(&completion.call_id);
                        prop_assert!(expect.is_some(), "completion for an unknown call");
                        let expect = expect.unwrap();
                        if let Expect::Echo { window, .. } = expect {
                            echo_windows[window] = false;
                        }
                        if strict {
                            check_completion(&data, &completion, expect)?;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => prop_assert!(!strict, "client error {e:?}"),
                },
                Op::ServerSleep => {
                    let work = server.prepare_to_sleep();
                    if strict {
                        prop_assert_eq!(work, server.has_requests());
                        server_asleep = !work;
                    }
                }
                Op::ClientWait => {
                    let work = client.prepare_to_wait();
                    if strict {
                        prop_assert_eq!(work, client.has_responses());
                        client_asleep = !work;
                    }
                }
                Op::Scribble {
                    data: to_data,
                    word,
                    value,
                } => {
                    let view = if to_data { data.view() } else { ring.view() };
                    let offset = (usize::from(word) * 4) % view.len();
                    view.store_u32(offset, value, Ordering::Relaxed).unwrap();
                }
            }
            let stats = server.stats();
            prop_assert_eq!(stats.by_status.iter().sum::<u64>(), stats.requests);
            prop_assert_eq!(stats.requests, stats.responses + stats.one_way);
            prop_assert!(stats.violations <= 1 || server.broken().is_some());
        }

        // Drain: with an honest ring every call started is answered exactly once.
        if strict {
            client.publish();
            loop {
                let outcome = server.poll(&mut registry, &clock(), 64);
                prop_assert!(!outcome.broken);
                let mut got = 0;
                while let Some(c) = client
                    .poll_response()
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
                {
                    let expect = expected.remove(&c.call_id);
                    prop_assert!(expect.is_some());
                    check_completion(&data, &c, expect.unwrap())?;
                    got += 1;
                }
                if outcome.handled == 0 && got == 0 {
                    break;
                }
            }
            prop_assert!(
                expected.is_empty(),
                "{} calls never answered",
                expected.len()
            );
            prop_assert_eq!(client.in_flight(), 0);
        }
        prop_assert!(mem.guards_intact(), "write outside the regions");
        Ok(())
    }
}

fn check_completion(
    data: &SharedRegion<&xenrpc_proto::mem::HeapRegion>,
    completion: &xenrpc_proto::Completion,
    expect: Expect,
) -> Result<(), TestCaseError> {
    match expect {
        Expect::Sum(sum) => {
            prop_assert_eq!(completion.status, Status::Ok);
            prop_assert_eq!(completion.inline(), &sum.to_ne_bytes()[..]);
        }
        Expect::Echo { window, len, fill } => {
            prop_assert_eq!(completion.status, Status::Ok);
            prop_assert_eq!(completion.ool_written, len);
            let mut out = vec![0u8; len as usize];
            let at = 4096 + window * ECHO_WINDOW_BYTES as usize;
            data.view().read(at, &mut out).unwrap();
            prop_assert!(out.iter().all(|&b| b == fill), "echo result differs");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Honest peers, arbitrary interleaving: every reply correct, every call answered once,
    /// no lost and no unrequested notification.
    #[test]
    fn honest_interleavings(ops in prop::collection::vec(honest_op(), 1..150), start in start_index()) {
        Run::new().go(&ops, true, start)?;
    }

    /// A hostile peer scribbling on the data region cannot break the ring: everything is still
    /// answered (with whatever the scribbled bytes mean).
    #[test]
    fn data_scribbles_do_not_break_the_ring(
        ops in prop::collection::vec(prop_oneof![4 => honest_op(), 1 => scribble(true)], 1..150)
    ) {
        let run = Run::new();
        let (mut client, mut server) = run.mem.connect(8, 1);
        let mut services = Services::new();
        let mut registry = services.registry();
        let data = SharedRegion::new(&run.mem.data).unwrap();
        let mut started = 0;
        let mut answered = 0;
        for op in &ops {
            match *op {
                Op::StartEcho { len } => {
                    let call = echo::client::echo_ool(&())
                        .ool_args(OolRef::new(0, len.into()))
                        .ool_result(OolRef::new(4096, len.into()));
                    started += u32::from(client.start(&call).is_ok());
                }
                Op::StartAdd { a, b, .. } => {
                    let operands = Operands { a: a.into(), b: b.into() };
                    started += u32::from(client.start(&arith::client::add(&operands)).is_ok());
                }
                Op::Scribble { word, value, .. } => {
                    data.view().store_u32(usize::from(word) * 4 % data.len(), value, Ordering::Relaxed).unwrap();
                }
                Op::Publish => { client.publish(); }
                Op::ServerPoll { budget } => { prop_assert!(!server.poll(&mut registry, &clock(), budget.into()).broken); }
                Op::ClientPoll => answered += u32::from(client.poll_response().unwrap().is_some()),
                _ => {}
            }
        }
        client.publish();
        while server.poll(&mut registry, &clock(), 64).handled > 0 || client.has_responses() {
            while client.poll_response().unwrap().is_some() { answered += 1; }
        }
        prop_assert_eq!(started, answered);
        prop_assert!(run.mem.guards_intact());
    }

    /// A hostile peer scribbling anywhere, between any steps: no panic, no write outside the
    /// regions, counters consistent, and a broken connection stays broken.
    #[test]
    fn scribbles_anywhere_are_survived(
        ops in prop::collection::vec(prop_oneof![3 => honest_op(), 1 => scribble(false)], 1..200),
        start in start_index(),
    ) {
        Run::new().go(&ops, false, start)?;
    }
}
