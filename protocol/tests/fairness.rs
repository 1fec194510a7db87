//! Fairness by cost, deterministically: an honest client (one null call in flight) shares a
//! round-robin server loop with greedy attackers, each on its own connection, and between two
//! of the honest client's requests the server does at most one pass budget of work for each
//! other connection, whatever they send.
//!
//! The attackers play by the rules, greedily:
//! - (a) one-way `echo.echo_ool` calls over maximal legal windows (`MAX_CALL_COPY` each), the
//!   ring kept full: every request really moves a megabyte;
//! - (b) a full ring of maximal two-way requests (192 inline bytes, windows of
//!   `MAX_CALL_COPY`): each reserves the worst case of a request, few really cost it;
//! - (c) windows larger than `MAX_CALL_COPY`: its copies are refused (`TooLarge`) before
//!   anything moves;
//! - (d) a storm of requests all refused at their header (unknown flag bits).
//!
//! Work is recorded per request by a dispatcher wrapper, independently of the server's count
//! (`REQUEST_COST` + the bytes the handler wrote to the client's result window, the only bytes
//! these handlers move), and per poll from `PollOutcome::work` for requests refused before
//! dispatch. If `poll` counted its budget in requests, attacker (a) alone would get its whole
//! ring (32 × `MAX_REQUEST_COST`, 16 times `PASS_BUDGET`) per pass and the bound would fail.

mod common;

use common::*;
use xenrpc_proto::services::echo::{self, InlineBytes, INLINE_BYTES_MAX};
use xenrpc_proto::{
    CallContext, CallError, Dispatcher, OolRef, PeerId, PollOutcome, Registry, RejectReason,
    Status, INLINE_CAPACITY, MAX_CALL_COPY, MAX_REQUEST_COST, PAGE_SIZE, PASS_BUDGET, REQUEST_COST,
};

const HONEST: u32 = 1;
const GREEDY_ONE_WAY: u32 = 10;
const MAXIMAL_TWO_WAY: u32 = 11;
const OVERSIZED: u32 = 12;
const REJECTED_STORM: u32 = 13;
const ATTACKERS: u64 = 4;

/// Honest calls to complete.
const HONEST_CALLS: usize = 40;
const ATTACKER_SLOTS: u32 = 32;

/// Work done for one connection, in the order the server did it.
#[derive(Clone, Copy, Debug)]
struct Work {
    peer: PeerId,
    units: u64,
}

/// The registry, recording every dispatched request's work.
struct Recording<'a> {
    registry: Registry<'a>,
    log: Vec<Work>,
}

impl Dispatcher for Recording<'_> {
    fn dispatch(&mut self, call: &mut CallContext<'_>) -> Status {
        let status = self.registry.dispatch(call);
        let written = call.ool_result().written();
        // The handlers here move bytes only by writing the result window; the server's own
        // meter must agree.
        assert_eq!(call.ool_moved(), written, "bytes moved besides the result");
        self.log.push(Work {
            peer: call.peer(),
            units: REQUEST_COST + written as u64,
        });
        status
    }
}

/// Polls one connection, checks the poll stayed within its budget and that the work recorded
/// per request adds up to what the poll charged; requests refused before dispatch are logged as
/// one entry of `REQUEST_COST` each.
fn poll(server: &mut Server<'_>, recording: &mut Recording<'_>) -> PollOutcome {
    let first = recording.log.len();
    let outcome = server.poll(recording, &clock(), PASS_BUDGET);
    assert!(!outcome.broken, "{:?}", server.broken());
    assert!(outcome.work <= PASS_BUDGET, "{outcome:?}");
    let dispatched = &recording.log[first..];
    let dispatched_work: u64 = dispatched.iter().map(|w| w.units).sum();
    let refused = u64::from(outcome.handled) - dispatched.len() as u64;
    assert_eq!(outcome.work, dispatched_work + refused * REQUEST_COST);
    for _ in 0..refused {
        recording.log.push(Work {
            peer: server.peer(),
            units: REQUEST_COST,
        });
    }
    outcome
}

/// Enqueues `call` until the ring (or the in-flight cap) is full, then publishes.
fn fill(client: &mut Client<'_>, call: &xenrpc_proto::CallRequest<'_>) {
    loop {
        match client.enqueue(call) {
            Ok(_) => {}
            Err(CallError::RingFull | CallError::TooManyInFlight) => break,
            Err(e) => panic!("attacker could not enqueue: {e:?}"),
        }
    }
    client.publish();
}

/// Consumes every response, checking each has `expected` status; how many.
fn drain(client: &mut Client<'_>, expected: Status) -> usize {
    let mut n = 0;
    while let Some(completion) = client.poll_response().unwrap() {
        assert_eq!(completion.status, expected);
        n += 1;
    }
    n
}

#[test]
fn an_honest_client_waits_at_most_one_budget_of_every_other_connection() {
    let big = MAX_CALL_COPY / PAGE_SIZE;
    let honest_mem = Memory::new(16, 1);
    let greedy_mem = Memory::new(ATTACKER_SLOTS, 2 * big);
    let maximal_mem = Memory::new(ATTACKER_SLOTS, 2 * big);
    let oversized_mem = Memory::new(ATTACKER_SLOTS, 2 * big);
    let storm_mem = Memory::new(ATTACKER_SLOTS, 1);

    let (mut honest, mut honest_server) = honest_mem.connect(1, HONEST);
    let (mut greedy, mut greedy_server) = greedy_mem.connect(1, GREEDY_ONE_WAY);
    let (mut maximal, mut maximal_server) =
        maximal_mem.connect(ATTACKER_SLOTS as usize, MAXIMAL_TWO_WAY);
    let (mut oversized, mut oversized_server) =
        oversized_mem.connect(ATTACKER_SLOTS as usize, OVERSIZED);
    let (mut storm, mut storm_server) = storm_mem.connect_raw(REJECTED_STORM);

    let mut services = Services::new();
    let mut recording = Recording {
        registry: services.registry(),
        log: Vec::new(),
    };

    let window = MAX_CALL_COPY as u32;
    let greedy_call = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, window))
        .ool_result(OolRef::new(window, window))
        .one_way();
    let inline = InlineBytes::new(&[0xa5; INLINE_BYTES_MAX]).unwrap();
    assert_eq!(core::mem::size_of::<InlineBytes>(), INLINE_CAPACITY);
    let maximal_call = echo::client::echo_inline(&inline)
        .ool_args(OolRef::new(0, window))
        .ool_result(OolRef::new(window, window));
    let oversized_call = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, 2 * window))
        .ool_result(OolRef::new(0, 2 * window));
    let mut bad_flags = RawClient::header(echo::SERVICE_ID, echo::methods::ping, echo::VERSION, 1);
    bad_flags.flags = 1 << 30;

    let ping = echo::client::ping(&());
    let mut honest_pending = Some(honest.start(&ping).unwrap());
    honest.publish();
    let mut honest_answers = 0;
    let (mut maximal_answers, mut oversized_answers, mut storm_answers) = (0, 0, 0);
    let mut passes = 0;
    while honest_answers < HONEST_CALLS {
        passes += 1;
        assert!(passes <= 4 * HONEST_CALLS, "the honest client is starved");
        // Attackers refill before every pass.
        fill(&mut greedy, greedy_call.request());
        maximal_answers += drain(&mut maximal, Status::Ok);
        fill(&mut maximal, maximal_call.request());
        oversized_answers += drain(&mut oversized, Status::TooLarge);
        fill(&mut oversized, oversized_call.request());
        while storm.pop().is_some() {
            storm_answers += 1;
        }
        let in_ring = storm.req_prod - storm.load(xenrpc_proto::layout::ctrl::REQ_CONS);
        for _ in in_ring..ATTACKER_SLOTS {
            storm.push(&bad_flags, &[]);
        }

        // One pass: every connection polled once, the honest one in the middle.
        let greedy_outcome = poll(&mut greedy_server, &mut recording);
        assert!(greedy_outcome.handled >= 1 && greedy_outcome.earned == 0);
        poll(&mut maximal_server, &mut recording);
        poll(&mut honest_server, &mut recording);
        if let Some(completion) = honest.poll_response().unwrap() {
            honest_pending.take().unwrap().finish(&completion).unwrap();
            honest_answers += 1;
            honest_pending = Some(honest.start(&ping).unwrap());
            honest.publish();
        }
        poll(&mut oversized_server, &mut recording);
        let storm_outcome = poll(&mut storm_server, &mut recording);
        assert_eq!(storm_outcome.earned, 0, "refused requests earn nothing");
    }

    // Between two honest requests, at most one budget per other connection.
    let honest_requests = recording
        .log
        .iter()
        .filter(|w| w.peer == PeerId(HONEST))
        .count();
    assert!(honest_requests >= HONEST_CALLS);
    let mut others = None;
    for work in &recording.log {
        if work.peer == PeerId(HONEST) {
            if let Some(others) = others {
                assert!(
                    others <= ATTACKERS * PASS_BUDGET,
                    "{others} units for others between two honest requests"
                );
            }
            others = Some(0);
        } else if let Some(others) = others.as_mut() {
            *others += work.units;
        }
    }

    // The attackers were served too, each as its calls deserve.
    let greedy_stats = greedy_server.stats();
    assert!(greedy_stats.requests >= passes as u64);
    assert_eq!(greedy_stats.status_count(Status::Ok), greedy_stats.requests);
    assert!(maximal_answers > 0 && oversized_answers > 0 && storm_answers > 0);
    for work in &recording.log {
        match work.peer.0 {
            GREEDY_ONE_WAY => assert_eq!(work.units, MAX_REQUEST_COST),
            // Oversized windows: refused before a byte moved.
            OVERSIZED | REJECTED_STORM | HONEST | MAXIMAL_TWO_WAY => {
                assert_eq!(work.units, REQUEST_COST)
            }
            other => panic!("work for unknown peer {other}"),
        }
    }
    let storm_stats = storm_server.stats();
    assert_eq!(
        storm_stats.rejected_count(RejectReason::UnknownFlags),
        storm_stats.requests
    );
    assert!(honest_mem.guards_intact() && greedy_mem.guards_intact());
}

#[test]
fn one_call_moves_at_most_max_call_copy() {
    let mem = Memory::new(16, 2 * MAX_CALL_COPY / PAGE_SIZE + 1);
    let (mut client, mut server) = mem.connect(4, 1);
    let mut services = Services::new();
    let mut registry = services.registry();
    client.data().fill(0, MAX_CALL_COPY + 1, 0x5a).unwrap();
    let result_at = (MAX_CALL_COPY + 1) as u32;
    // Exactly the limit: copied.
    let limit = MAX_CALL_COPY as u32;
    let fits = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, limit))
        .ool_result(OolRef::new(result_at, limit));
    let reply = round_trip(&mut client, &mut server, &mut registry, &fits).unwrap();
    assert_eq!(reply.value.len, limit);
    // One byte more: refused before a byte moved.
    client
        .data()
        .fill(result_at as usize, MAX_CALL_COPY, 0)
        .unwrap();
    let over = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, limit + 1))
        .ool_result(OolRef::new(result_at, limit + 1));
    let refused = round_trip(&mut client, &mut server, &mut registry, &over);
    assert_eq!(
        refused.map(|r| r.value),
        Err(CallError::Remote(Status::TooLarge))
    );
    let mut head = [0xffu8; 64];
    client.data().read(result_at as usize, &mut head).unwrap();
    assert_eq!(head, [0; 64]);
}
