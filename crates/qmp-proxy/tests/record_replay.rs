//! Record a real QEMU through the proxy, replay the transcript, and run
//! the same client code against both: the outputs must be equal.

use qmp_client::{Client, EventFilter};
use qmp_proxy::replay::{MatchMode, Replay, Report};
use qmp_proxy::{ListenSpec, Proxy};
use qmp_testkit::Qemu;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Client code under test: what it prints for each step.
async fn storage_session(address: &str, image: &Path) -> Vec<String> {
    let c = Client::connect(address).await.unwrap();
    let mut out = vec![format!("greeting {:?}", c.greeting().unwrap().version.qemu)];
    out.push(format!(
        "{}",
        c.execute("query-jobs", json!({})).await.unwrap()
    ));
    let mut jobs = c.events(EventFilter::name("JOB_STATUS_CHANGE"));
    let create =
        json!({"job-id": "j1", "options": {"driver": "file", "filename": image, "size": 1048576}});
    out.push(format!(
        "{}",
        c.execute("blockdev-create", create).await.unwrap()
    ));
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), jobs.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        out.push(format!(
            "event {} {}",
            e.name,
            e.data.clone().unwrap_or(Value::Null)
        ));
        if e.data_at("/status") == Some(&json!("concluded")) {
            break;
        }
    }
    let failed = c
        .execute("blockdev-del", json!({"node-name": "nope"}))
        .await
        .unwrap_err();
    out.push(format!("error {failed}"));
    out.push(format!(
        "{}",
        c.execute("job-dismiss", json!({"id": "j1"})).await.unwrap()
    ));
    c.close().await;
    out
}

async fn record(upstream: &Path, dir: &Path) -> (Proxy, String) {
    let listen = dir.join("rec.sock").display().to_string();
    let proxy = Proxy::builder(upstream.display().to_string().parse().unwrap())
        .listen(listen.parse::<ListenSpec>().unwrap())
        .record(dir.join("session.qmp"))
        .bind()
        .await
        .unwrap();
    (proxy, listen)
}

async fn replay_of(dir: &Path, mode: MatchMode) -> (qmp_proxy::replay::ReplayServer, String) {
    let text = std::fs::read_to_string(dir.join("session.qmp")).unwrap();
    let address = dir.join("replay.sock").display().to_string();
    let server = Replay::from_str(&text)
        .unwrap()
        .mode(mode)
        .listen(&address.parse().unwrap())
        .await
        .unwrap();
    (server, address)
}

fn clean(report: &Report) {
    assert!(report.is_clean(false), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_storage_daemon_session_replays_with_the_same_outputs() {
    let qsd = Qemu::storage_daemon();
    let dir = qmp_testkit::test_dir();
    let (proxy, listen) = record(&qsd.socket, dir.path()).await;
    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    let real = storage_session(&listen, &dir.path().join("a.img")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert!(real.iter().any(|l| l.contains("concluded")), "{real:?}");
    assert!(real.iter().any(|l| l.starts_with("error ")), "{real:?}");

    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    let replayed = storage_session(&address, &dir.path().join("a.img")).await;
    assert_eq!(replayed, real);
    clean(&server.finish().await);

    // The same session with one argument changed: strict mode says what it
    // expected, and the report shows the difference.
    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    let c = Client::connect(&address).await.unwrap();
    c.execute("query-jobs", json!({})).await.unwrap();
    let bad = json!({"job-id": "j2", "options": {"driver": "file", "filename": dir.path().join("a.img"), "size": 1048576}});
    let e = c.execute("blockdev-create", bad).await.unwrap_err();
    let e = e.qmp().unwrap().clone();
    assert_eq!(e.class, "GenericError");
    assert!(
        e.desc.contains("expected blockdev-create with arguments"),
        "{}",
        e.desc
    );
    drop(c);
    let report = server.finish().await;
    assert_eq!(report.mismatched.len(), 1, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("job-id: expected \"j1\", got \"j2\""),
        "{text}"
    );
    assert!(!report.is_clean(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_command_accepts_a_reordered_session_and_strict_does_not() {
    let qsd = Qemu::storage_daemon();
    let dir = qmp_testkit::test_dir();
    let (proxy, listen) = record(&qsd.socket, dir.path()).await;
    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    let c = Client::connect(&listen).await.unwrap();
    let version = c.execute("query-version", json!({})).await.unwrap();
    let jobs = c.execute("query-jobs", json!({})).await.unwrap();
    c.close().await;
    handle.shutdown();
    running.await.unwrap().unwrap();

    let reordered = |address: String| async move {
        let c = Client::connect(&address).await.unwrap();
        let j = c.execute("query-jobs", json!({})).await;
        let v = c.execute("query-version", json!({})).await;
        c.close().await;
        (j, v)
    };
    let (server, address) = replay_of(dir.path(), MatchMode::ByCommand).await;
    let (j, v) = reordered(address).await;
    assert_eq!((j.unwrap(), v.unwrap()), (jobs, version));
    clean(&server.finish().await);

    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    let (j, _) = reordered(address).await;
    assert!(j
        .unwrap_err()
        .qmp()
        .unwrap()
        .desc
        .contains("expected query-version"));
    assert!(!server.finish().await.is_clean(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_resume_of_a_vm_replay_before_their_replies() {
    let vm = Qemu::system();
    let dir = qmp_testkit::test_dir();
    let (proxy, listen) = record(&vm.socket, dir.path()).await;
    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    let session = |address: String| async move {
        let c = Client::connect(&address).await.unwrap();
        let mut events = c.events(EventFilter::names(["STOP", "RESUME"]));
        let mut out = Vec::new();
        for command in ["cont", "stop", "query-status"] {
            let ret = c.execute(command, json!({})).await.unwrap();
            // the event is already here when the reply is (rule P4)
            while let Some(Ok(e)) = events.try_next() {
                out.push(format!("event {} {}", e.name, e.timestamp.seconds > 0));
            }
            out.push(format!("{command} {ret}"));
        }
        c.close().await;
        out
    };
    let real = session(listen).await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(
        real[..4],
        ["event RESUME true", "cont {}", "event STOP true", "stop {}"]
    );
    assert!(real[4].starts_with("query-status {"), "{real:?}");
    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    assert_eq!(session(address).await, real);
    clean(&server.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_schema_invalid_arguments_get_qemus_own_error() {
    let qsd = Qemu::storage_daemon();
    let direct = Client::connect(&qsd.address()).await.unwrap();
    let schema = direct.execute("query-qmp-schema", json!({})).await.unwrap();
    let bad = json!({"node-name": "x", "foo": 1});
    let qemu_says = direct
        .execute("blockdev-del", bad.clone())
        .await
        .unwrap_err();
    direct.close().await;

    let transcript = format!(
        "{}\n",
        json!({"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}})
    );
    let schema =
        qmp_server::schema::Schema::from_qobject(&qmp_server::QObject::from(&schema)).unwrap();
    let dir = qmp_testkit::test_dir();
    let address = dir.path().join("r.sock").display().to_string();
    let server = Replay::from_str(&transcript)
        .unwrap()
        .schema(schema)
        .listen(&address.parse().unwrap())
        .await
        .unwrap();
    let c = Client::connect(&address).await.unwrap();
    let e = c.execute("blockdev-del", bad).await.unwrap_err();
    assert_eq!(e.qmp(), qemu_says.qmp());
    let e = c.execute("no-such-command", json!({})).await.unwrap_err();
    assert_eq!(e.qmp().unwrap().class, "CommandNotFound");
    c.close().await;
    let report = server.finish().await;
    assert_eq!(report.mismatched.len(), 1, "{report}");
}
