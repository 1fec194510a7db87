//! `xenrpc --socket PATH`: the CLI, run as a process the way users run it, against a host
//! server (the real `Server` with the host services, in a thread of this test process; the
//! test's uid is its admin). Outputs, exit statuses (0 ok, 1 failure, an error status
//! included, 2 bad arguments) and messages are the ones the Xen transport gives.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Once};
use std::time::Duration;

use xenrpc_host::client::{Client, ClientOptions};
use xenrpc_host::server::{Server, ServerConfig};
use xenrpc_host::services::{host_registry, set_admin_uids, Counters, HostServices};
use xenrpc_proto::services::builtins;
use xenrpc_proto::services::echo;
use xenrpc_proto::services::kv::KvBudget;
use xenrpc_proto::ServiceEnv;

/// Every wait here is bounded by this, so a hang fails instead of hanging CI.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A uid other than the test's (which runs as root): not an admin.
const OTHER_UID: u32 = 1000;

struct HostServer {
    socket: PathBuf,
}

impl HostServer {
    /// Serves on a fresh socket that every uid may connect to, until the process ends.
    fn start(config: ServerConfig) -> HostServer {
        static ADMINS: Once = Once::new();
        ADMINS.call_once(|| {
            set_admin_uids(vec![rustix::process::getuid().as_raw()]);
        });
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = std::env::temp_dir().join(format!(
            "xenrpc-cli-test-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let (bound, listening) = mpsc::channel();
        let path = socket.clone();
        // The services hold `Rc`s: everything of the server lives in its thread.
        std::thread::spawn(move || {
            let mut server = match Server::bind(&path, config) {
                Ok(server) => server,
                Err(e) => return bound.send(Err(e)).unwrap_or(()),
            };
            // As `xenrpc-hostd --test-services` builds it.
            let env = ServiceEnv::new("", KvBudget::DEFAULT_HEAP_BYTES);
            let mut builtins = builtins(&env);
            let counters = Counters::default();
            let mut own = HostServices::new(counters.clone(), true);
            let mut registry = host_registry();
            let registered = registry
                .register_set(&mut builtins)
                .and_then(|()| registry.register_set(&mut own));
            if let Err(e) = registered {
                let error = std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string());
                return bound.send(Err(error)).unwrap_or(());
            }
            let _ = bound.send(Ok(()));
            let _ = server.run(&mut registry, |event| counters.record(event));
        });
        listening
            .recv_timeout(TIMEOUT)
            .expect("the server did not start in time")
            .expect("bind the server's socket");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777))
            .expect("open the socket to every uid");
        HostServer { socket }
    }

    fn default() -> HostServer {
        HostServer::start(ServerConfig::default())
    }

    /// A connection of the test's own: while it is open the test's uid keeps its kv
    /// namespace across the CLI's processes.
    fn hold(&self) -> Client {
        Client::connect(&self.socket, ClientOptions::default()).expect("connect")
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What one `xenrpc` run printed.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `xenrpc --socket SOCKET ARGS...` (as `uid` if given), bounded by `TIMEOUT`.
fn xenrpc_as(uid: Option<u32>, socket: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xenrpc"));
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let child = command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xenrpc");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(TIMEOUT)
        .expect("xenrpc did not finish in time")
        .expect("xenrpc output");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn xenrpc(socket: &Path, args: &[&str]) -> Run {
    xenrpc_as(None, socket, args)
}

/// Runs `xenrpc`, which must succeed; its stdout.
fn ok(socket: &Path, args: &[&str]) -> String {
    let run = xenrpc(socket, args);
    assert_eq!(run.code, 0, "xenrpc {args:?}: {run:?}");
    run.stdout
}

/// Runs `xenrpc`, which must fail with `code` and print `message` on stderr.
fn fails(uid: Option<u32>, socket: &Path, args: &[&str], code: i32, message: &str) {
    let run = xenrpc_as(uid, socket, args);
    assert_eq!(
        (run.code, run.stderr.trim_end()),
        (code, message),
        "xenrpc {args:?}: {run:?}"
    );
    assert_eq!(run.stdout, "", "xenrpc {args:?}");
}

#[test]
fn calls_answer_over_the_socket_as_they_do_over_xen() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    // A call with no result prints nothing; one field prints bare; more print `name=value`.
    assert_eq!(ok(s, &["call", "echo.ping"]), "");
    assert_eq!(ok(s, &["call", "arith.add", "40", "2"]), "42\n");
    assert_eq!(ok(s, &["call", "arith.add", "a=40", "b=-2"]), "38\n");
    assert_eq!(ok(s, &["call", "arith.mul", r#"{"a": 7, "b": 8}"#]), "56\n");
    assert_eq!(ok(s, &["call", "arith.div", "100", "7"]), "14\n");
    assert_eq!(
        ok(s, &["call", "echo.echo_inline", "hello-xenrpc"]),
        "hello-xenrpc\n"
    );
    assert_eq!(
        ok(s, &["call", "echo.echo_ool", "--data", "out-of-line-hello"]),
        "len=17\nout-of-line-hello\n"
    );
    assert_eq!(
        ok(s, &["call", "echo.echo_ool", "--data-hex", "00ff"]),
        "len=2\nhex:00ff\n"
    );
    assert_eq!(
        ok(s, &["call", "introspection.describe_service", "2"]),
        "id=2\nversion=1\nmethod_count=3\nname=arith\n"
    );
    let arith = ok(s, &["describe", "arith"]);
    assert_eq!(
        arith,
        "2 arith v1\n  1 add ({ a: i64, b: i64 }) -> ({ value: i64 })\n  \
         2 mul ({ a: i64, b: i64 }) -> ({ value: i64 })\n  \
         3 div ({ a: i64, b: i64 }) -> ({ value: i64 })\n"
    );
    let all = ok(s, &["describe"]);
    assert!(all.starts_with("0 introspection v1\n"), "{all}");
    assert!(
        all.contains("\n101 selftest v1\n  1 panic ({}) -> ({})\n"),
        "{all}"
    );
    assert_eq!(ok(s, &["call", "selftest.sleep", "20"]), "");
    // Returned bytes to a file.
    let dir = std::env::temp_dir().join(format!("xenrpc-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("echoed");
    let printed = ok(
        s,
        &[
            "call",
            "echo.echo_ool",
            "--data",
            "to a file",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        printed,
        format!("len=9\n(9 bytes written to {})\n", out.display())
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"to a file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kv_calls_see_the_namespace_of_the_uid() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    // The namespace lives as long as one of the uid's connections does.
    let _held = server.hold();
    assert_eq!(ok(s, &["call", "kv.put", "colour", "--data", "teal"]), "");
    assert_eq!(
        ok(s, &["call", "kv.put", "bytes=shape", "--data", "round"]),
        ""
    );
    assert_eq!(
        ok(s, &["call", "kv.get", "colour"]),
        "found=1\nlen=4\nteal\n"
    );
    // Records of a u32 length and the key: 06000000 "colour", 05000000 "shape".
    assert_eq!(
        ok(s, &["call", "kv.list", "0"]),
        "written=2\ntotal=2\nbytes=19\nhex:06000000636f6c6f7572050000007368617065\n"
    );
    assert_eq!(ok(s, &["call", "kv.delete", "shape"]), "1\n");
    assert_eq!(ok(s, &["call", "kv.delete", "shape"]), "0\n");
    // Another uid has a namespace of its own.
    let run = xenrpc_as(Some(OTHER_UID), s, &["call", "kv.get", "colour"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "found=0\nlen=0\n"),
        "{run:?}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&ok(s, &["--json", "call", "kv.get", "colour"])).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"ok": true, "service": "kv", "method": "get", "status": "Ok",
            "result": {"found": 1, "len": 4}, "bytes": {"len": 4, "data": "teal"}})
    );
}

#[test]
fn error_statuses_exit_1_and_bad_command_lines_exit_2() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    fails(
        None,
        s,
        &["call", "arith.div", "1", "0"],
        1,
        "xenrpc: error: server answered BadArguments",
    );
    fails(
        None,
        s,
        &["call", "selftest.panic"],
        1,
        "xenrpc: error: server answered HandlerFault",
    );
    // Longer than the server lets a handler stall.
    fails(
        None,
        s,
        &["call", "selftest.sleep", "5000"],
        1,
        "xenrpc: error: server answered BadArguments",
    );
    // Fields checked against the signature the server reported, before anything is sent.
    fails(
        None,
        s,
        &["call", "arith.add", "1"],
        2,
        "xenrpc: error: bad arguments: arith.add: field \"b\" needs a value",
    );
    fails(
        None,
        s,
        &["call", "arith.add", "1", "2", "c=3"],
        2,
        "xenrpc: error: bad arguments: arith.add: no field \"c\" (the fields are a, b)",
    );
    fails(
        None,
        s,
        &["call", "arith.add", "1", "two"],
        2,
        "xenrpc: error: bad arguments: arith.add: field \"b\": \"two\" is not a signed \
         integer of type i64",
    );
    fails(
        None,
        s,
        &["call", "arith.add", "1", "2", "--data", "x"],
        2,
        "xenrpc: error: bad arguments: arith.add takes no bytes: drop --data",
    );
    fails(
        None,
        s,
        &["call", "counter.incr", "5"],
        2,
        "xenrpc: error: bad arguments: unknown service \"counter\" (the server offers \
         introspection, echo, arith, kv, admin, selftest)",
    );
    fails(
        None,
        s,
        &["call", "arith.pow", "1", "2"],
        2,
        "xenrpc: error: bad arguments: service \"arith\" has no method \"pow\" (its methods \
         are add, mul, div)",
    );
    fails(
        None,
        s,
        &["bench"],
        2,
        "xenrpc: error: bad arguments: --socket works with list, call, describe and stats; \
         bench needs the Xen devices",
    );
    let run = xenrpc(s, &["--json", "call", "arith.div", "1", "0"]);
    assert_eq!(run.code, 1);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "remote-error");
    assert_eq!(doc["error"]["status"], "BadArguments");
}

#[test]
fn a_call_that_misses_its_deadline_says_so() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    let path = s.display();
    fails(
        None,
        s,
        &["call", "--timeout-ms", "100", "selftest.sleep", "1000"],
        1,
        &format!("xenrpc: error: deadline exceeded: no reply from the server at {path}"),
    );
}

#[test]
fn out_of_line_bytes_must_fit_the_data_region() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    let text = "x".repeat(40_000);
    // 40,000 bytes each way do not fit 16 pages (the echo does not fit the room left for
    // it); 32 pages hold them; more than the region holds is not sent at all.
    fails(
        None,
        s,
        &["call", "echo.echo_ool", "--data", &text],
        1,
        "xenrpc: error: server answered TooLarge",
    );
    assert_eq!(
        ok(
            s,
            &[
                "call",
                "--data-pages",
                "32",
                "echo.echo_ool",
                "--data",
                &text
            ]
        ),
        format!("len=40000\n{text}\n")
    );
    let huge = "x".repeat(70_000);
    fails(
        None,
        s,
        &["call", "echo.echo_ool", "--data", &huge],
        1,
        &format!(
            "xenrpc: error: call to the server at {}: the data region has no free window of \
             70000 bytes for the call's out-of-line bytes (calls in flight hold the rest)",
            s.display()
        ),
    );
}

#[test]
fn the_admin_service_answers_only_admin_uids() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    let _held = server.hold();
    let stats = ok(s, &["call", "admin.stats"]);
    assert!(
        stats.starts_with("connected=2\nconnected_total="),
        "{stats}"
    );
    // To anyone else the service is not there at all: introspection does not list it.
    fails(
        Some(OTHER_UID),
        s,
        &["call", "admin.stats"],
        2,
        "xenrpc: error: bad arguments: unknown service \"admin\" (the server offers \
         introspection, echo, arith, kv, selftest)",
    );
    // `stats` works for anyone, and says what only an admin sees.
    let run = xenrpc_as(Some(OTHER_UID), s, &["stats", "--probe", "5"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("\nserver connections: only for the server's admin uids (AccessDenied)\n"),
        "{run:?}"
    );
    let mine = ok(s, &["stats", "--probe", "5"]);
    let lines: Vec<&str> = mine.lines().collect();
    assert_eq!(lines.len(), 4, "{mine}");
    assert_eq!(
        lines[0],
        format!(
            "connection: xenrpc-hostd at {} (65536-byte data region)",
            s.display()
        )
    );
    assert!(lines[1].starts_with("probe: 5 pings, p50 "), "{mine}");
    assert!(
        lines[2].starts_with("server connections: connected=2 "),
        "{mine}"
    );
    assert!(
        lines[3].starts_with("server counters (all clients, since it started): "),
        "{mine}"
    );
}

#[test]
fn list_shows_the_services_and_their_methods() {
    let server = HostServer::default();
    let s = server.socket.as_path();
    let text = ok(s, &["list"]);
    assert!(
        text.starts_with("services:\n    0 introspection v1: "),
        "{text}"
    );
    assert!(text.contains("\n    2 arith v1: add, mul, div\n"), "{text}");
    assert!(
        text.contains("\n  101 selftest v1: panic, sleep\n"),
        "{text}"
    );
    let doc: serde_json::Value = serde_json::from_str(&ok(s, &["--json", "list"])).unwrap();
    let kv = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "kv")
        .expect("kv listed");
    assert_eq!(
        kv["methods"],
        serde_json::json!(["put", "get", "delete", "list"])
    );
}

#[test]
fn connect_failures_name_the_socket() {
    let missing =
        std::env::temp_dir().join(format!("xenrpc-no-server-{}.sock", std::process::id()));
    let run = xenrpc(&missing, &["call", "echo.ping"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "xenrpc: error: cannot connect to the server at {}: ",
            missing.display()
        )),
        "{run:?}"
    );
    // A full server refuses at set-up.
    let server = HostServer::start(ServerConfig {
        max_clients: 1,
        max_per_uid: 1,
        ..ServerConfig::default()
    });
    let mut held = server.hold();
    held.call(&echo::client::ping(&()), Some(TIMEOUT)).unwrap();
    fails(
        None,
        &server.socket,
        &["call", "echo.ping"],
        1,
        &format!(
            "xenrpc: error: cannot connect to the server at {}: it hung up during set-up (it \
             refuses newcomers when it is full or this uid holds its share of connections)",
            server.socket.display()
        ),
    );
}
