//! Full client/server conversations over the host transport (a real `xenrpc-hostd` process),
//! one for every status a call can end with.

mod common;

use std::time::Duration;

use common::{call_from_process, Answer, ServerProcess, TIMEOUT};
use xenrpc_host::client::{deadline_after, Client, ClientError, ClientOptions};
use xenrpc_host::services::{admin, selftest, SleepArgs};
use xenrpc_proto::services::arith::{self, Operands};
use xenrpc_proto::services::echo::{self, InlineBytes};
use xenrpc_proto::services::kv::{self, Key, MAX_ENTRIES_PER_PEER};
use xenrpc_proto::{CallError, OolRef, Status, TypedCall};

fn status_of<R>(result: Result<R, ClientError>) -> Status {
    match result {
        Ok(_) => Status::Ok,
        Err(ClientError::Call(CallError::Remote(status))) => status,
        Err(other) => panic!("expected a status reply, got {other}"),
    }
}

#[test]
fn every_status_in_a_conversation() {
    let server = ServerProcess::start(&[]);
    let mut client = server.connect_with(ClientOptions {
        data_len: 256 * 1024,
        ..ClientOptions::default()
    });
    let t = Some(TIMEOUT);

    // Ok: a null call, an inline echo, arithmetic, an out-of-line echo of 48 KiB.
    client.call(&echo::client::ping(&()), t).unwrap();
    let hello = InlineBytes::new(b"hello over memfd").unwrap();
    let reply = client.call(&echo::client::echo_inline(&hello), t).unwrap();
    assert_eq!(reply.value.bytes(), Some(&b"hello over memfd"[..]));
    let sum = client
        .call(&arith::client::add(&Operands { a: 40, b: 2 }), t)
        .unwrap();
    assert_eq!(sum.value.value, 42);
    let payload: Vec<u8> = (0..48 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    client.data().write(0, &payload).unwrap();
    let len = payload.len() as u32;
    let call = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, len))
        .ool_result(OolRef::new(len, len));
    let reply = client.call(&call, t).unwrap();
    assert_eq!((reply.value.len, reply.ool_written), (len, len));
    let mut echoed = vec![0u8; payload.len()];
    client.data().read(payload.len(), &mut echoed).unwrap();
    assert_eq!(echoed, payload);

    // UnknownService, UnknownMethod, VersionMismatch.
    let unknown_service = TypedCall::<()>::new(999, 1, 1, &[]);
    assert_eq!(
        status_of(client.call(&unknown_service, t)),
        Status::UnknownService
    );
    let unknown_method = TypedCall::<()>::new(echo::SERVICE_ID, 99, echo::VERSION, &[]);
    assert_eq!(
        status_of(client.call(&unknown_method, t)),
        Status::UnknownMethod
    );
    let wrong_version = echo::client::ping(&()).version(echo::VERSION + 1);
    assert_eq!(
        status_of(client.call(&wrong_version, t)),
        Status::VersionMismatch
    );

    // BadArguments: division by zero.
    let div0 = arith::client::div(&Operands { a: 1, b: 0 });
    assert_eq!(status_of(client.call(&div0, t)), Status::BadArguments);

    // TooLarge: the result window is smaller than the arguments to echo.
    let too_small = echo::client::echo_ool(&())
        .ool_args(OolRef::new(0, 4096))
        .ool_result(OolRef::new(8192, 100));
    assert_eq!(status_of(client.call(&too_small, t)), Status::TooLarge);

    // DeadlineExceeded: a deadline already past, and one that passes while the call waits
    // behind a slow one.
    let late = echo::client::ping(&()).deadline_ns(1);
    assert_eq!(status_of(client.call(&late, t)), Status::DeadlineExceeded);
    let slow = client
        .start(&selftest::client::sleep(&SleepArgs { millis: 300 }))
        .unwrap();
    let queued = client
        .start(&echo::client::ping(&()).deadline_ns(deadline_after(Duration::from_millis(50))))
        .unwrap();
    client.flush();
    client.finish(slow, t).unwrap();
    assert_eq!(
        status_of(client.finish(queued, t)),
        Status::DeadlineExceeded
    );

    // Busy: the kv store's per-peer quota runs out.
    let mut statuses = Vec::new();
    for i in 0..=MAX_ENTRIES_PER_PEER {
        let key = Key::new(format!("key-{i}").as_bytes()).unwrap();
        statuses.push(status_of(client.call(&kv::client::put(&key), t)));
    }
    assert!(statuses[..MAX_ENTRIES_PER_PEER]
        .iter()
        .all(|&s| s == Status::Ok));
    assert_eq!(statuses[MAX_ENTRIES_PER_PEER], Status::Busy);

    // HandlerFault: a handler panics; the server answers and keeps serving.
    assert_eq!(
        status_of(client.call(&selftest::client::panic(&()), t)),
        Status::HandlerFault
    );
    client.call(&echo::client::ping(&()), t).unwrap();

    // AccessDenied: the admin service answers this uid (named with --admin-uid), also from
    // another process, and refuses a process of another uid, identified by the kernel's peer
    // credentials.
    let stats = client.call(&admin::client::stats(&()), t).unwrap().value;
    assert_eq!(stats.connected, 1);
    let admin_stats = |c: &mut Client| c.call(&admin::client::stats(&()), Some(TIMEOUT)).map(drop);
    assert_eq!(
        call_from_process(None, server.path(), admin_stats),
        Answer::Ok
    );
    assert_eq!(
        call_from_process(Some(1000), server.path(), admin_stats),
        Answer::Status(Status::AccessDenied)
    );
    let ping = |c: &mut Client| c.call(&echo::client::ping(&()), Some(TIMEOUT)).map(drop);
    assert_eq!(call_from_process(None, server.path(), ping), Answer::Ok);
}

#[test]
fn several_clients_at_once_get_their_own_answers() {
    // Short spins: four clients and a server share two cores here.
    let server = ServerProcess::start(&["--spin-us", "20"]);
    let workers: Vec<_> = (0..4u8)
        .map(|n| {
            let mut client = server.connect_with(ClientOptions {
                spin: xenrpc_host::wait::SpinPolicy::micros(20),
                ..ClientOptions::default()
            });
            std::thread::spawn(move || {
                let size = 1000 + 777 * n as usize;
                for round in 0..200u32 {
                    let payload: Vec<u8> = (0..size)
                        .map(|i| (i as u32 ^ round ^ (u32::from(n) * 31)) as u8)
                        .collect();
                    client.data().write(0, &payload).unwrap();
                    let call = echo::client::echo_ool(&())
                        .ool_args(OolRef::new(0, size as u32))
                        .ool_result(OolRef::new(16384, size as u32));
                    let reply = client.call(&call, Some(TIMEOUT)).unwrap();
                    assert_eq!(reply.ool_written as usize, size);
                    let mut echoed = vec![0u8; size];
                    client.data().read(16384, &mut echoed).unwrap();
                    assert_eq!(echoed, payload, "client {n} round {round}");
                    let op = Operands {
                        a: i64::from(n),
                        b: i64::from(round),
                    };
                    let product = client
                        .call(&arith::client::mul(&op), Some(TIMEOUT))
                        .unwrap();
                    assert_eq!(product.value.value, i64::from(n) * i64::from(round));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread failed");
    }
}

#[test]
fn pipelined_calls_complete_in_any_order_of_collection() {
    let server = ServerProcess::start(&["--spin-us", "0"]);
    let mut client = server.connect();
    let pending: Vec<_> = (0..client.max_in_flight() as i64)
        .map(|i| {
            client
                .start(&arith::client::add(&Operands { a: i, b: 1000 }))
                .unwrap()
        })
        .collect();
    client.flush();
    for (i, call) in pending.into_iter().enumerate().rev() {
        assert_eq!(
            client.finish(call, Some(TIMEOUT)).unwrap().value.value,
            i as i64 + 1000
        );
    }
}

#[test]
fn a_busy_client_does_not_keep_others_out() {
    // Spin mode: the server never sleeps while the first client keeps it busy.
    let server = ServerProcess::start(&["--spin-us", "100000"]);
    let mut busy = server.connect_with(ClientOptions {
        max_in_flight: 8,
        ..ClientOptions::default()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut calls = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pending: Vec<_> = (0..8)
                    .map(|_| busy.start(&echo::client::ping(&())).unwrap())
                    .collect();
                busy.flush();
                for call in pending {
                    busy.finish(call, Some(TIMEOUT)).unwrap();
                }
                calls += 8;
            }
            calls
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // A newcomer is accepted and served while the hammering goes on.
    let mut newcomer = server.connect();
    for _ in 0..10 {
        newcomer
            .call(&echo::client::ping(&()), Some(TIMEOUT))
            .unwrap();
    }
    let stats = newcomer
        .call(&admin::client::stats(&()), Some(TIMEOUT))
        .unwrap()
        .value;
    assert_eq!(stats.connected, 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(hammer.join().unwrap() > 0);
}

#[test]
fn no_lost_wake_ups_when_both_sides_sleep_between_calls() {
    // Both sides block between calls (and, in the second run, spin only 2 µs first), on two
    // different CPUs, so every call races a publish against the peer arming for sleep. Without
    // the arm-then-recheck and its barriers, a wake-up gets lost within a few thousand calls
    // here; a lost wake-up shows up as a time-out.
    for spin_us in [0u64, 2] {
        let server = ServerProcess::start(&["--spin-us", &spin_us.to_string()]);
        if xenrpc_host::process::available_cpus() >= 2 {
            let mut server_cpu = rustix::thread::CpuSet::new();
            server_cpu.set(1);
            let pid = rustix::process::Pid::from_raw(server.child.id() as i32);
            let _ = rustix::thread::sched_setaffinity(pid, &server_cpu);
            xenrpc_host::process::pin_to_cpu(0);
        }
        let mut client = server.connect_with(ClientOptions {
            spin: xenrpc_host::wait::SpinPolicy::micros(spin_us),
            ..ClientOptions::default()
        });
        for i in 0..10_000 {
            if let Err(e) = client.call(&echo::client::ping(&()), Some(Duration::from_secs(5))) {
                panic!("spin {spin_us} µs, call {i}: {e}");
            }
        }
    }
}

#[test]
fn kv_namespace_outlives_one_of_its_tenants_connections() {
    use xenrpc_proto::services::kv::ValueInfo;
    let server = ServerProcess::start(&[]);
    let key = Key::new(b"colour").unwrap();
    let value = b"teal";
    let mut first = server.connect();
    first.data().write(0, value).unwrap();
    first
        .call(
            &kv::client::put(&key).ool_args(OolRef::new(0, value.len() as u32)),
            Some(TIMEOUT),
        )
        .unwrap();
    // A second connection of this uid sees the value; closing the first keeps it.
    let mut second = server.connect();
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    let got: ValueInfo = second
        .call(
            &kv::client::get(&key).ool_result(OolRef::new(0, 64)),
            Some(TIMEOUT),
        )
        .unwrap()
        .value;
    assert_eq!((got.found, got.len), (1, value.len() as u32));
    let mut read_back = [0u8; 4];
    second.data().read(0, &mut read_back).unwrap();
    assert_eq!(&read_back, value);
}

#[test]
fn typed_client_objects_work_over_the_host_transport() {
    let server = ServerProcess::start(&[]);
    let mut client = server.connect();
    client.set_call_timeout(Some(TIMEOUT));
    let key = Key::new(b"shape").unwrap();
    kv::Client::new(&mut client).put(&key, b"round").unwrap();
    let (info, value) = kv::Client::new(&mut client).get(&key).unwrap();
    assert_eq!((info.found, value.as_slice()), (1, &b"round"[..]));
    let blob: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let (len, echoed) = echo::Client::new(&mut client).echo_ool(&(), &blob).unwrap();
    assert_eq!((len.len as usize, echoed), (blob.len(), blob));
    assert_eq!(
        status_of(arith::Client::new(&mut client).div(&Operands { a: 1, b: 0 })),
        Status::BadArguments
    );
}

#[test]
fn answers_are_stamped_with_the_servers_clock_of_the_call_even_after_it_slept() {
    // The server stamps answers with its clock as the loop last read it (at most a few µs of
    // polls ago while it spins): that reading must be taken again after every sleep, or a call
    // after an idle spell carries a time from before it.
    const SLACK_NS: u64 = 1_000_000;
    let server = ServerProcess::start(&["--spin-us", "5"]);
    let mut client = server.connect();
    for idle_ms in [0u64, 50, 200] {
        std::thread::sleep(Duration::from_millis(idle_ms));
        let before = xenrpc_host::client::monotonic_ns() - SLACK_NS;
        let pending = client.start(&echo::client::ping(&())).unwrap();
        client.flush();
        let answer = client.wait_for(pending.call_id(), Some(TIMEOUT)).unwrap();
        let after = xenrpc_host::client::monotonic_ns();
        assert!(
            (before..=after).contains(&answer.server_time_ns),
            "idle {idle_ms} ms: stamped {} outside {before}..={after}",
            answer.server_time_ns
        );
        pending.finish(&answer).unwrap();
    }
}

#[test]
fn a_client_stops_spinning_for_answers_that_come_late_and_spins_again_for_prompt_ones() {
    // The spin window learns from the waits (xenrpc_proto::wait::SpinBudget): answers that
    // come later than the policy's time halve it down to zero, answers a longer spin would
    // have caught double it back. 10 ms calls against a 4 ms policy, then null calls.
    const POLICY: Duration = Duration::from_millis(4);
    let server = ServerProcess::start(&[]);
    let mut client = server.connect_with(ClientOptions {
        spin: xenrpc_host::wait::SpinPolicy { spin_for: POLICY },
        ..ClientOptions::default()
    });
    client.set_call_timeout(Some(TIMEOUT));
    assert_eq!(client.spin_window(), POLICY);
    let mut windows = Vec::new();
    for _ in 0..12 {
        selftest::Client::new(&mut client)
            .sleep(&SleepArgs { millis: 10 })
            .unwrap();
        windows.push(client.spin_window());
    }
    assert!(
        windows.windows(2).all(|w| w[1] < w[0] || w[1].is_zero()),
        "the window did not shrink with each late answer: {windows:?}"
    );
    assert_eq!(client.spin_window(), Duration::ZERO, "{windows:?}");
    for _ in 0..20 {
        echo::Client::new(&mut client).ping(&()).unwrap();
    }
    assert!(
        !client.spin_window().is_zero(),
        "prompt answers did not open the window again"
    );
}
