//! Tenants are uids: the identity a connection gets at connect (`SO_PEERCRED`'s uid) is what
//! its calls carry for its whole life, whichever process uses it; each uid has its own kv
//! namespace, forgotten with its last connection; and connection slots are capped per uid,
//! with idle connections reaped only when a newcomer needs the slot.
//!
//! The tests run as root and fork children that switch to other uids before connecting.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{call_from_process, fork_as, read_line, write_line, Answer, ServerProcess, TIMEOUT};
use xenrpc_host::client::{Client, ClientError, ClientOptions};
use xenrpc_host::services::{admin, AdminStats};
use xenrpc_proto::services::echo;
use xenrpc_proto::services::kv::{self, Key};
use xenrpc_proto::{OolRef, Status};

const ALICE: u32 = 1000;
const BOB: u32 = 1001;
const CAROL: u32 = 1002;

fn connect(path: &Path) -> Result<Client, String> {
    Client::connect(path, ClientOptions::default()).map_err(|e| format!("connect: {e}"))
}

fn put(client: &mut Client, key: &str, value: &str) -> Result<(), String> {
    let key = Key::new(key.as_bytes()).ok_or("bad key")?;
    client
        .data()
        .write(0, value.as_bytes())
        .map_err(|_| "write")?;
    let call = kv::client::put(&key).ool_args(OolRef::new(0, value.len() as u32));
    client
        .call(&call, Some(TIMEOUT))
        .map(drop)
        .map_err(|e| format!("put: {e}"))
}

/// The value under `key`, or `None`.
fn get(client: &mut Client, key: &str) -> Result<Option<String>, String> {
    let key = Key::new(key.as_bytes()).ok_or("bad key")?;
    let call = kv::client::get(&key).ool_result(OolRef::new(0, 64));
    let info = client
        .call(&call, Some(TIMEOUT))
        .map_err(|e| format!("get: {e}"))?
        .value;
    if info.found == 0 {
        return Ok(None);
    }
    let mut bytes = vec![0u8; info.len as usize];
    client.data().read(0, &mut bytes).map_err(|_| "read")?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn ping(client: &mut Client) -> Result<(), ClientError> {
    client
        .call(&echo::client::ping(&()), Some(TIMEOUT))
        .map(drop)
}

fn expect(what: &str, got: Option<String>, want: Option<&str>) -> Result<(), String> {
    if got.as_deref() == want {
        return Ok(());
    }
    Err(format!("{what}: got {got:?}, want {want:?}"))
}

fn admin_stats(client: &mut Client) -> AdminStats {
    client
        .call(&admin::client::stats(&()), Some(TIMEOUT))
        .unwrap()
        .value
}

#[test]
fn identity_is_the_uid_at_connect_whoever_uses_the_connection() {
    let server = ServerProcess::start(&["--max-per-uid", "8"]);
    let path = server.path().to_path_buf();

    // Alice's first process stores a value and keeps its connection.
    let mut alice = fork_as(Some(ALICE), {
        let path = path.clone();
        move |mut control| {
            let mut client = connect(&path)?;
            put(&mut client, "colour", "teal")?;
            write_line(&mut control, "stored")?;
            read_line(&mut control)?;
            expect(
                "alice's own value",
                get(&mut client, "colour")?,
                Some("teal"),
            )
        }
    });
    assert_eq!(alice.hear(), "stored");

    // Another process of Alice's uid is the same tenant; Bob, another uid, sees nothing of
    // hers and his own value does not touch hers.
    let path2 = path.clone();
    let alice_again = fork_as(Some(ALICE), move |_| {
        let mut client = connect(&path2)?;
        expect(
            "alice from another process",
            get(&mut client, "colour")?,
            Some("teal"),
        )
    });
    assert_eq!(alice_again.wait(), 0);
    let path2 = path.clone();
    let bob = fork_as(Some(BOB), move |_| {
        let mut client = connect(&path2)?;
        expect("bob before he stores", get(&mut client, "colour")?, None)?;
        put(&mut client, "colour", "ruby")?;
        expect("bob's own value", get(&mut client, "colour")?, Some("ruby"))
    });
    assert_eq!(bob.wait(), 0);

    // A connection handed to a process of another uid keeps the identity it was made with:
    // this (root, admin) process connects, then a forked child that became Carol uses the
    // inherited connection and is still root's tenant, admin rights included.
    let mut root = server.connect();
    put(&mut root, "colour", "root's").unwrap();
    let inherited = fork_as(Some(CAROL), move |_| {
        expect(
            "inherited connection",
            get(&mut root, "colour")?,
            Some("root's"),
        )?;
        root.call(&admin::client::stats(&()), Some(TIMEOUT))
            .map(drop)
            .map_err(|e| format!("admin over the inherited connection: {e}"))
    });
    // Carol on a connection of her own is Carol: no admin, an empty namespace.
    let admin_call = |c: &mut Client| c.call(&admin::client::stats(&()), Some(TIMEOUT)).map(drop);
    assert_eq!(
        call_from_process(Some(CAROL), &path, admin_call),
        Answer::Status(Status::AccessDenied)
    );
    assert_eq!(inherited.wait(), 0);

    // Alice's last connection goes: her namespace is forgotten, so a later process of her
    // uid (whatever its pid) starts empty.
    alice.tell("done");
    assert_eq!(alice.wait(), 0);
    let mut watcher = server.connect();
    wait_until(&mut watcher, |s| s.connected == 1);
    let path2 = path.clone();
    let alice_later = fork_as(Some(ALICE), move |_| {
        let mut client = connect(&path2)?;
        expect(
            "alice after her last connection went",
            get(&mut client, "colour")?,
            None,
        )
    });
    assert_eq!(alice_later.wait(), 0);
}

/// Polls the admin counters until `done` holds (bounded by `TIMEOUT`).
fn wait_until(client: &mut Client, done: impl Fn(&AdminStats) -> bool) -> AdminStats {
    let end = std::time::Instant::now() + TIMEOUT;
    loop {
        let stats = admin_stats(client);
        if done(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < end,
            "server counters never reached the expected state: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child of `uid` that opens `count` connections, says `open`, then on each `ping` line
/// pings all of them and answers how many are gone; ends on `done` (or EOF).
fn holder(path: &Path, uid: u32, count: usize) -> common::Forked {
    let path = path.to_path_buf();
    fork_as(Some(uid), move |mut control| {
        let mut clients = (0..count)
            .map(|_| connect(&path))
            .collect::<Result<Vec<_>, _>>()?;
        write_line(&mut control, "open")?;
        loop {
            match read_line(&mut control)?.as_str() {
                "ping" => {
                    let gone = clients
                        .iter_mut()
                        .map(ping)
                        .filter(|pinged| matches!(pinged, Err(ClientError::ServerGone)))
                        .count();
                    write_line(&mut control, &format!("gone {gone}"))?;
                }
                "one more" => {
                    let answer = match connect(&path) {
                        Ok(client) => {
                            clients.push(client);
                            "admitted".to_string()
                        }
                        Err(e) => format!("refused ({e})"),
                    };
                    write_line(&mut control, &answer)?;
                }
                _ => return Ok(()),
            }
        }
    })
}

#[test]
fn a_uid_at_its_cap_is_refused_while_other_uids_still_connect() {
    // Nothing idles a minute in this test: refusals, never reaping.
    let server = ServerProcess::start(&[
        "--max-clients",
        "4",
        "--max-per-uid",
        "2",
        "--idle-reap-ms",
        "60000",
    ]);
    let mut alice = holder(server.path(), ALICE, 2);
    assert_eq!(alice.hear(), "open");
    alice.tell("one more");
    assert!(alice.hear().starts_with("refused"));
    // Other uids still get in: this one (an admin), and Bob.
    let mut root = server.connect();
    assert_eq!(
        call_from_process(Some(BOB), server.path(), ping),
        Answer::Ok
    );
    let stats = wait_until(&mut root, |s| s.disconnected == 1);
    assert_eq!(
        (stats.refused, stats.refused_uid_cap, stats.reaped),
        (1, 1, 0)
    );
    // The server is full once root takes a second slot: now anyone is refused.
    let _root2 = server.connect();
    match call_from_process(Some(CAROL), server.path(), ping) {
        Answer::Failed(why) => assert!(why.starts_with("failed connect: "), "{why}"),
        other => panic!("a full server admitted Carol: {other:?}"),
    }
    let stats = admin_stats(&mut root);
    assert_eq!(
        (stats.refused, stats.refused_uid_cap, stats.reaped),
        (2, 1, 0)
    );
    alice.tell("ping");
    assert_eq!(alice.hear(), "gone 0");
    alice.tell("done");
    assert_eq!(alice.wait(), 0);
}

#[test]
fn idle_connections_are_reaped_only_when_a_newcomer_needs_the_slot() {
    // One uid may take the whole server.
    let server = ServerProcess::start(&[
        "--max-clients",
        "3",
        "--max-per-uid",
        "3",
        "--idle-reap-ms",
        "200",
    ]);
    let reap_wait = Duration::from_millis(500);
    let mut alice = holder(server.path(), ALICE, 3);
    assert_eq!(alice.hear(), "open");
    // Idle past the reap time with nobody waiting: nothing is reaped.
    std::thread::sleep(reap_wait);
    alice.tell("ping");
    assert_eq!(alice.hear(), "gone 0");
    // Idle again; now Bob needs a slot: one of Alice's idle connections makes room.
    std::thread::sleep(reap_wait);
    assert_eq!(
        call_from_process(Some(BOB), server.path(), ping),
        Answer::Ok
    );
    alice.tell("ping");
    assert_eq!(alice.hear(), "gone 1");
    // Full again (Alice's two, root's one): Alice's newcomer displaces the connection idle
    // longest, one of her own, not root's, which has just made a call.
    let mut root = server.connect();
    std::thread::sleep(reap_wait);
    ping(&mut root).unwrap();
    alice.tell("one more");
    assert_eq!(alice.hear(), "admitted");
    ping(&mut root).unwrap();
    alice.tell("ping");
    assert_eq!(alice.hear(), "gone 2");
    let stats = admin_stats(&mut root);
    assert_eq!((stats.reaped, stats.refused), (2, 0), "{stats:?}");
    alice.tell("done");
    assert_eq!(alice.wait(), 0);
}
