//! The tokio server, driven by our client over real sockets, and by raw
//! bytes where a client would hide what is being checked.

use qmp_client::{Call, Client, ClientBuilder, EventFilter, Handshake};
use qmp_server::{QDict, QObject, QmpFailure, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn test_server() -> Server {
    Server::builder()
        .version(10, 0, 2, "test")
        .command("echo", |req| async move {
            Ok(Some(QObject::Dict(req.arguments)))
        })
        .command("fail", |_| async {
            Err(QmpFailure {
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
                .ok_or_else(|| QmpFailure::generic("no fd was passed"))?;
            let mut text = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut text)
                .map_err(|e| QmpFailure::generic(e.to_string()))?;
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
