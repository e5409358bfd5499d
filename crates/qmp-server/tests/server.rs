//! The tokio server, driven by our client over real sockets, and by raw
//! bytes where a client would hide what is being checked.

use qmp_client::{Call, Client, ClientBuilder, EventFilter, Handshake};
use qmp_server::{QDict, QObject, QmpError, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn test_server() -> Server {
    test_server_with(|b| b)
}

/// The test server, with something more set on its builder.
fn test_server_with(
    more: impl FnOnce(qmp_server::ServerBuilder) -> qmp_server::ServerBuilder,
) -> Server {
    more(Server::builder())
        .version(10, 0, 2, "test")
        .command("echo", |req| async move {
            Ok(Some(QObject::Dict(req.arguments)))
        })
        .command("fail", |_| async {
            Err(QmpError {
                class: "DeviceNotFound".into(),
                desc: "no such thing".into(),
            })
        })
        .command("sleep", |req| async move {
            let ms = match req.arguments.get("ms") {
                Some(QObject::Int(ms)) => *ms as u64,
                _ => 0,
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(None)
        })
        .oob_command("ping", |_| async {
            Ok(Some(QObject::String("pong".into())))
        })
        .command("read-fd", |mut req| async move {
            // reads what the client wrote into the pipe it passed
            let fd = req
                .fds
                .pop()
                .ok_or_else(|| QmpError::generic("no fd was passed"))?;
            let mut text = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut text)
                .map_err(|e| QmpError::generic(e.to_string()))?;
            Ok(Some(QObject::String(text)))
        })
        .command("quit", |req| async move {
            req.close_after_reply();
            Ok(None)
        })
        .build()
}

struct Running {
    server: Server,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

async fn start(server: Server) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = server
        .bind(&format!("unix:{}", path.display()).parse().unwrap())
        .await
        .unwrap();
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve(listener).await });
    Running {
        server,
        path,
        _dir: dir,
        task,
    }
}

impl Running {
    fn address(&self) -> String {
        self.path.display().to_string()
    }
}

#[tokio::test]
async fn our_client_negotiates_and_runs_commands() {
    let r = start(test_server()).await;
    assert_eq!(
        std::fs::metadata(&r.path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let client = Client::connect(&r.address()).await.unwrap();
    let g = client.greeting().unwrap();
    assert_eq!(g.version.qemu.to_string(), "10.0.2");
    assert!(client.oob_enabled());
    assert_eq!(
        client
            .execute("echo", json!({"a": [1, "x"]}))
            .await
            .unwrap(),
        json!({"a": [1, "x"]})
    );
    assert_eq!(
        client.execute("sleep", Value::Null).await.unwrap(),
        json!({})
    );
    let err = client.execute("fail", Value::Null).await.unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "DeviceNotFound");
    let err = client.execute("nope", Value::Null).await.unwrap_err();
    assert_eq!(
        err.qmp().unwrap().desc,
        "The command nope has not been found"
    );
    let v = client.execute("query-version", Value::Null).await.unwrap();
    assert_eq!(
        v,
        json!({"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "test"})
    );
    let names: Vec<String> = client
        .execute("query-commands", Value::Null)
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    for n in [
        "qmp_capabilities",
        "echo",
        "ping",
        "query-version",
        "query-commands",
    ] {
        assert!(names.contains(&n.to_owned()), "{n} in {names:?}");
    }
    drop(r.task);
}

#[tokio::test]
async fn oob_overtakes_a_slow_inband_command() {
    let r = start(test_server()).await;
    let client = Client::connect(&r.address()).await.unwrap();
    let c = client.clone();
    let slow = tokio::spawn(async move { c.execute("sleep", json!({"ms": 500})).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pong = client.call(Call::new("ping").out_of_band()).await.unwrap();
    assert_eq!(pong, json!("pong"));
    assert!(
        !slow.is_finished(),
        "the oob reply came while the in-band command still ran"
    );
    slow.await.unwrap().unwrap();
    // and without oob it is refused as QEMU refuses it
    let err = client
        .call(Call::new("echo").out_of_band())
        .await
        .unwrap_err();
    assert_eq!(
        err.qmp().unwrap().desc,
        "The command echo does not support OOB"
    );
}

#[tokio::test]
async fn events_reach_negotiated_sessions_only() {
    let r = start(test_server()).await;
    let client = Client::connect(&r.address()).await.unwrap();
    let mut events = client.events(EventFilter::name("TEST_EVENT"));
    // a second session that has not negotiated yet
    let raw = ClientBuilder::new()
        .handshake(Handshake::GreetingOnly)
        .connect(&r.address())
        .await
        .unwrap();
    let mut raw_events = raw.events(EventFilter::all());
    let mut data = QDict::new();
    data.insert("n", QObject::Int(1));
    r.server.emit("TEST_EVENT", Some(QObject::Dict(data)));
    let e = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.data, Some(json!({"n": 1})));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((e.timestamp.seconds - now).abs() < 5);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), raw_events.next())
            .await
            .is_err(),
        "N8"
    );
    raw.execute("qmp_capabilities", Value::Null).await.unwrap();
    r.server.emit("TEST_EVENT", None);
    let e = tokio::time::timeout(Duration::from_secs(5), raw_events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.data, None);
}

#[tokio::test]
async fn file_descriptors_reach_the_handler() {
    let r = start(test_server()).await;
    let client = Client::connect(&r.address()).await.unwrap();
    let (rd, wr) = nix::unistd::pipe().unwrap();
    std::fs::File::from(wr)
        .write_all(b"through SCM_RIGHTS")
        .unwrap();
    let text = client.call(Call::new("read-fd").fd(rd)).await.unwrap();
    assert_eq!(text, json!("through SCM_RIGHTS"));
    let err = client.execute("read-fd", Value::Null).await.unwrap_err();
    assert_eq!(err.qmp().unwrap().desc, "no fd was passed");
}

#[tokio::test]
async fn quit_replies_then_closes() {
    let r = start(test_server()).await;
    let client = Client::connect(&r.address()).await.unwrap();
    assert_eq!(
        client.execute("quit", Value::Null).await.unwrap(),
        json!({})
    );
    let reason = tokio::time::timeout(Duration::from_secs(5), client.disconnected())
        .await
        .unwrap();
    assert!(matches!(reason, qmp_client::Disconnect::Eof), "{reason}");
}

#[tokio::test]
async fn one_client_at_a_time_like_qemu() {
    let r = start(Server::builder().one_client_at_a_time(true).build()).await;
    let first = Client::connect(&r.address()).await.unwrap();
    // M1: the second connects but gets no greeting while the first is there
    let err = ClientBuilder::new()
        .connect_timeout(Duration::from_millis(300))
        .connect(&r.address())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("one client at a time"), "{err}");
    drop(first);
    let second = Client::connect(&r.address()).await.unwrap();
    second.execute("query-version", Value::Null).await.unwrap();
}

#[tokio::test]
async fn half_close_still_gets_every_answer_then_eof() {
    let r = start(test_server()).await;
    let path = r.path.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"sleep\", \"arguments\": {\"ms\": 100}, \"id\": 1}\n{\"execute\": \"echo\", \"id\": 2}\n{\"execute\": \"echo\", \"arguments\": {\"x\": 1}, \"id\": 3}\n{\"execute\": \"echo\", \"id\": 4").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(
        lines[1..],
        [
            "{\"return\": {}}",
            "{\"return\": {}, \"id\": 1}",
            "{\"return\": {}, \"id\": 2}",
            "{\"return\": {\"x\": 1}, \"id\": 3}",
            ""
        ],
        "P6, and the partial last message dropped (J9)"
    );
}

#[tokio::test]
async fn shutdown_answers_what_was_read_then_closes() {
    let r = start(test_server()).await;
    let client = Client::connect(&r.address()).await.unwrap();
    let c = client.clone();
    let slow = tokio::spawn(async move { c.execute("sleep", json!({"ms": 300})).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.server.shutdown();
    assert_eq!(slow.await.unwrap().unwrap(), json!({}));
    tokio::time::timeout(Duration::from_secs(5), client.disconnected())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), r.task)
        .await
        .unwrap()
        .unwrap();
    assert!(!r.path.exists(), "socket file removed");
}

#[tokio::test]
async fn tcp_listener_and_typed_handlers() {
    #[derive(serde::Deserialize)]
    struct AddArgs {
        a: i64,
        b: i64,
    }
    #[derive(serde::Serialize)]
    struct Sum {
        sum: i64,
    }
    let server = Server::builder()
        .typed("add", |args: AddArgs| async move {
            Ok(Sum {
                sum: args.a + args.b,
            })
        })
        .build();
    let listener = server.bind(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.port().unwrap();
    let s = server.clone();
    tokio::spawn(async move { s.serve(listener).await });
    let client = Client::connect(&format!("127.0.0.1:{port}")).await.unwrap();
    assert_eq!(
        client
            .execute("add", json!({"a": 2, "b": 40}))
            .await
            .unwrap(),
        json!({"sum": 42})
    );
    let err = client.execute("add", json!({"a": 2})).await.unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "GenericError");
    assert!(
        err.qmp().unwrap().desc.contains("missing field `b`"),
        "{err}"
    );
}

#[tokio::test]
async fn throttled_events_first_at_once_then_the_last_per_window() {
    let period = Duration::from_millis(300);
    let r = start(Server::builder().event_throttle_period(period).build()).await;
    let client = Client::connect(&r.address()).await.unwrap();
    let mut events = client.events(EventFilter::name("RTC_CHANGE"));
    let offset = |n: i64| {
        let mut d = QDict::new();
        d.insert("offset", QObject::Int(n));
        Some(QObject::Dict(d))
    };
    for n in 1..=5 {
        r.server.emit_throttled("RTC_CHANGE", "", offset(n));
    }
    // another key has its own window
    r.server.emit_throttled("RTC_CHANGE", "other", offset(100));
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.data, Some(json!({"offset": 1})));
    let other = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(other.data, Some(json!({"offset": 100})));
    assert!(events.try_next().is_none(), "2 to 4 are held back");
    // at the window's end the last one comes, with its own (earlier) time
    let last = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(last.data, Some(json!({"offset": 5})));
    assert!(
        last.timestamp.microseconds + last.timestamp.seconds * 1_000_000
            - (first.timestamp.seconds * 1_000_000 + first.timestamp.microseconds)
            < 250_000
    );
    // a quiet window closes; the next event goes out at once
    tokio::time::sleep(period * 3).await;
    assert!(events.try_next().is_none());
    r.server.emit_throttled("RTC_CHANGE", "", offset(6));
    let again = tokio::time::timeout(Duration::from_millis(200), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.data, Some(json!({"offset": 6})));
}

#[tokio::test]
async fn declared_commands_are_checked_and_described_like_qemu() {
    use qmp_server::declare::{Field, Ty};
    let server = Server::builder()
        .command("set-level", |_| async { Ok(None) })
        .declare(
            "set-level",
            vec![
                Field::required("level", Ty::Uint8),
                Field::optional("mode", Ty::enumeration(&["fast", "slow"])),
                Field::optional("tags", Ty::list(Ty::Str)),
                Field::optional("limits", Ty::Object(vec![Field::required("max", Ty::Int)])),
            ],
            None,
        )
        .build();
    let r = start(server).await;
    let client = Client::connect(&r.address()).await.unwrap();
    let run = |args: Value| {
        let c = client.clone();
        async move {
            c.execute("set-level", args)
                .await
                .map_err(|e| e.qmp().unwrap().desc.clone())
        }
    };
    assert_eq!(
        run(json!({"level": 3, "mode": "fast", "tags": ["a"], "limits": {"max": 1}})).await,
        Ok(json!({}))
    );
    assert_eq!(
        run(json!({})).await,
        Err("Parameter 'level' is missing".into())
    );
    assert_eq!(
        run(json!({"level": 300})).await,
        Err("Parameter 'level' expects uint8".into())
    );
    assert_eq!(
        run(json!({"level": "x"})).await,
        Err("Parameter 'level' expects uint64".into())
    );
    assert_eq!(
        run(json!({"level": 1, "mode": "odd"})).await,
        Err("Parameter 'mode' does not accept value 'odd'".into())
    );
    assert_eq!(
        run(json!({"level": 1, "tags": [1]})).await,
        Err("Invalid parameter type for 'tags[0]', expected: string".into())
    );
    assert_eq!(
        run(json!({"level": 1, "limits": {"max": 1.5}})).await,
        Err("Invalid parameter type for 'limits.max', expected: integer".into())
    );
    assert_eq!(
        run(json!({"level": 1, "limits": {"max": 1, "x": 0}})).await,
        Err("Parameter 'limits.x' is unexpected".into())
    );
    assert_eq!(
        run(json!({"level": 1, "extra": 0})).await,
        Err("Parameter 'extra' is unexpected".into())
    );

    // the generated schema, in QEMU's format, and usable as a mock's
    let schema = client
        .execute("query-qmp-schema", Value::Null)
        .await
        .unwrap();
    let entries = schema.as_array().unwrap();
    let find = |name: &str| entries.iter().find(|e| e["name"] == name).cloned().unwrap();
    let cmd = find("set-level");
    assert_eq!(cmd["meta-type"], "command");
    let args = find(cmd["arg-type"].as_str().unwrap());
    assert!(
        args["name"].as_str().unwrap().parse::<u32>().is_ok(),
        "masked name"
    );
    assert_eq!(
        args["members"][0],
        json!({"name": "level", "type": "int"}),
        "integer types fold into int"
    );
    assert_eq!(args["members"][1]["default"], Value::Null);
    let tags_type = args["members"][2]["type"].as_str().unwrap();
    assert_eq!(tags_type, "[str]");
    assert_eq!(find(tags_type)["element-type"], "str");
    for builtin in [
        "qmp_capabilities",
        "query-version",
        "query-commands",
        "query-qmp-schema",
    ] {
        assert_eq!(find(builtin)["meta-type"], "command");
    }
    assert_eq!(find("int")["json-type"], "int");
    let loaded = qmp_server::schema::Schema::from_json(&schema).unwrap();
    assert!(loaded.command_names().any(|c| c == "set-level"));
}

/// Binds a listener at `path` with `mode` `times` times (for a moment
/// each) while another thread calls `look` on the path as fast as it can,
/// and counts the modes it reports.
fn modes_seen_while_binding(
    path: &std::path::Path,
    mode: u32,
    times: usize,
    look: fn(&std::path::Path) -> Option<u32>,
) -> std::collections::BTreeMap<u32, usize> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let looker = {
        let (path, done) = (path.to_owned(), done.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(m) = look(&path) {
                    *seen.entry(m).or_insert(0) += 1;
                }
            }
            seen
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let address: qmp_proto::Address = path.display().to_string().parse().unwrap();
    for _ in 0..times {
        let listener = rt
            .block_on(qmp_server::Listener::bind(&address, mode))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
        drop(listener);
    }
    done.store(true, Ordering::Relaxed);
    looker.join().unwrap()
}

fn mode_of(path: &std::path::Path) -> Option<u32> {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some(m.permissions().mode() & 0o777)
}

/// Security: under umask 000, a socket bound and then chmod'ed is open to
/// everyone for a moment. A watcher stats the path as fast as it can while
/// the listener is bound 30 times: it must only ever see mode 0600 (or
/// nothing).
#[test]
fn a_unix_listener_never_exists_with_wider_permissions() {
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let dir = qmp_testkit::test_dir();
    let path = dir.path().join("s.sock");
    let seen = modes_seen_while_binding(&path, 0o600, 30, mode_of);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [0o600],
        "{seen:?}"
    );
    // and binding over an existing file fails, as bind would
    std::fs::write(&path, b"").unwrap();
    let address: qmp_proto::Address = path.display().to_string().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(qmp_server::Listener::bind(&address, 0o600))
        .expect_err("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
}

/// A client must never connect before the socket has its mode: a
/// connector tries as fast as it can while the listener is bound with mode
/// 0660 a hundred times, and at every connection that goes through the
/// mode must already be 0660 (a proxy's test saw 0600 there once).
#[test]
fn a_unix_listener_takes_connections_only_once_it_has_its_mode() {
    let dir = qmp_testkit::test_dir();
    let path = dir.path().join("s.sock");
    let seen = modes_seen_while_binding(&path, 0o660, 100, |path| {
        let _connected = std::os::unix::net::UnixStream::connect(path).ok()?;
        mode_of(path)
    });
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [0o660],
        "{seen:?}"
    );
}

/// A server with an input budget disconnects a client whose request
/// outgrows it (here one 4 MiB string in a 1 MiB budget), serves requests
/// under it, and other clients all along; without one, as QEMU, it takes
/// the same request.
#[tokio::test]
async fn a_request_over_the_input_budget_ends_its_connection_only() {
    let big = "x".repeat(4 << 20);
    let small = "y".repeat(256 << 10);
    async fn echo(c: &Client, s: &str) -> qmp_client::Result<Value> {
        c.call(Call::new("echo").arg("s", s.to_owned())).await
    }

    let budgeted = start(test_server_with(|b| b.input_budget(1 << 20))).await;
    let other = Client::connect(&budgeted.address()).await.unwrap();
    let c = Client::connect(&budgeted.address()).await.unwrap();
    assert_eq!(echo(&c, &small).await.unwrap()["s"], json!(small));
    let e = echo(&c, &big).await.unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    assert_eq!(echo(&other, &small).await.unwrap()["s"], json!(small));

    let unbudgeted = start(test_server()).await;
    let c = Client::connect(&unbudgeted.address()).await.unwrap();
    assert_eq!(echo(&c, &big).await.unwrap()["s"], json!(big));
}
