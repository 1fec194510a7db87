//! An honest client thread and server thread that really sleep: each side waits on a sticky
//! event (like an eventfd or an event channel) only after arming its threshold and re-checking,
//! and the other side signals it only when `publish`/`poll` say so. A lost wake-up would leave
//! a side asleep with work pending; the waits therefore carry a deadlock detector (a generous
//! timeout that only a lost wake-up can reach), and every call's result is checked.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use common::*;
use xenrpc_proto::services::arith::{self, Operands};
use xenrpc_proto::wait::{spin_then_arm, SpinBudget, SpinPolicy, StdClock, WaitStep};
use xenrpc_proto::{Notify, Pending};

/// Long enough that only a lost wake-up (nobody will ever signal) reaches it.
const DEADLOCK: Duration = Duration::from_secs(20);
const CALLS: i64 = 4_000;

/// A sticky event: `notify` sets it, `wait` consumes it.
#[derive(Default)]
struct Event {
    set: Mutex<bool>,
    cv: Condvar,
    signals: AtomicU64,
}

impl Notify for Event {
    fn notify(&self) {
        self.signals.fetch_add(1, Ordering::Relaxed);
        *self.set.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

impl Event {
    /// Waits until notified; `false` if the deadlock detector fired.
    fn wait(&self) -> bool {
        let guard = self.set.lock().unwrap();
        let (mut guard, timeout) = self
            .cv
            .wait_timeout_while(guard, DEADLOCK, |set| !*set)
            .unwrap();
        *guard = false;
        !timeout.timed_out()
    }
}

#[test]
fn sleeping_peers_never_lose_a_wake_up() {
    let mem = Memory::new(16, 0);
    let (mut client, server) = mem.connect(8, 1);
    let server_event = Event::default();
    let client_event = Event::default();
    let done = AtomicBool::new(false);

    let server_sleeps = std::thread::scope(|s| {
        let server_thread = s.spawn(|| {
            let mut server = server;
            let mut services = Services::new();
            let mut registry = services.registry();
            let mut sleeps = 0u64;
            loop {
                let outcome = server.poll_and_notify(&mut registry, &clock(), 16, &client_event);
                assert!(!outcome.broken);
                if outcome.handled > 0 || outcome.more || server.prepare_to_sleep() {
                    continue;
                }
                if done.load(Ordering::Acquire) {
                    return sleeps;
                }
                sleeps += 1;
                assert!(
                    server_event.wait(),
                    "server slept through a request (lost wake-up)"
                );
            }
        });

        let mut pending: Vec<(i64, Pending<arith::Value>)> = Vec::new();
        let mut next = 0i64;
        let mut answered = 0i64;
        while answered < CALLS {
            // Keep up to the cap in flight, publishing a batch at once.
            while next < CALLS && client.in_flight() < client.max_in_flight() {
                let operands = Operands {
                    a: next,
                    b: 1_000_000,
                };
                pending.push((next, client.start(&arith::client::add(&operands)).unwrap()));
                next += 1;
            }
            if client.publish() {
                server_event.notify();
            }
            // The protocol's wait sequence, with no spinning: look, arm, look again, sleep.
            let step = spin_then_arm(
                &mut SpinBudget::new(SpinPolicy::BLOCKING),
                &StdClock,
                &mut client,
                |client| client.poll_response().unwrap(),
                |client| client.prepare_to_wait(),
                || false,
            );
            match step {
                WaitStep::Ready(completion) => {
                    let index = pending
                        .iter()
                        .position(|(_, p)| p.call_id() == completion.call_id)
                        .unwrap();
                    let (a, p) = pending.swap_remove(index);
                    assert_eq!(p.finish(&completion).unwrap().value.value, a + 1_000_000);
                    answered += 1;
                }
                WaitStep::Block => assert!(
                    client_event.wait(),
                    "client slept through a response (lost wake-up)"
                ),
                WaitStep::TimedOut => unreachable!("no deadline"),
            }
        }
        done.store(true, Ordering::Release);
        server_event.notify();
        server_thread.join().expect("server thread panicked")
    });
    println!(
        "{CALLS} calls: server slept {server_sleeps} times, {} server and {} client signals",
        server_event.signals.load(Ordering::Relaxed),
        client_event.signals.load(Ordering::Relaxed)
    );
    assert!(mem.guards_intact());
}
