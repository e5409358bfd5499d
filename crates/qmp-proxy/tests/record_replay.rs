//! Record a real QEMU through the proxy, replay the transcript, and run
//! the same client code against both: the outputs must be equal.

use qmp_client::{Call, Client, EventFilter};
use qmp_proxy::{ListenSpec, Proxy};
use qmp_replay::replay::{MatchMode, Replay, ReplayServer, Report};
use qmp_replay::transcript::{self, Transcript};
use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Client code under test: what it prints for each step. Its requests
/// carry the ids `ids` gives (numbers or strings, say).
async fn storage_session(address: &str, image: &Path, ids: fn(u64) -> Value) -> Vec<String> {
    let c = Client::connect(address).await.unwrap();
    let mut n = 0;
    let mut call = |command: &str, arguments: Value| {
        n += 1;
        c.call(Call::new(command).arguments(arguments).id(ids(n)))
    };
    let mut out = vec![format!("greeting {:?}", c.greeting().unwrap().version.qemu)];
    out.push(format!("{}", call("query-jobs", json!({})).await.unwrap()));
    let mut jobs = c.events(EventFilter::name("JOB_STATUS_CHANGE"));
    let create =
        json!({"job-id": "j1", "options": {"driver": "file", "filename": image, "size": 1048576}});
    out.push(format!(
        "{}",
        call("blockdev-create", create).await.unwrap()
    ));
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), jobs.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        out.push(format!(
            "event {} {} stamped {}",
            e.name,
            e.data.clone().unwrap_or(Value::Null),
            e.timestamp.seconds > 0
        ));
        if e.data_at("/status") == Some(&json!("concluded")) {
            break;
        }
    }
    let failed = call("blockdev-del", json!({"node-name": "nope"}))
        .await
        .unwrap_err();
    out.push(format!("error {failed}"));
    let dismissed = call("job-dismiss", json!({"id": "j1"})).await.unwrap();
    out.push(format!("{dismissed}"));
    c.close().await;
    out
}

fn numbers(n: u64) -> Value {
    json!(n)
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

/// Serves `replay` at `{dir}/replay.sock`; the server and its address.
async fn serve(replay: Replay, dir: &Path) -> (ReplayServer, String) {
    let address = dir.join("replay.sock").display().to_string();
    let server = replay.listen(&address.parse().unwrap()).await.unwrap();
    (server, address)
}

/// A replay of `{dir}/session.qmp` in `mode`.
async fn replay_of(dir: &Path, mode: MatchMode) -> (ReplayServer, String) {
    let replay = Replay::load(&dir.join("session.qmp")).unwrap().mode(mode);
    serve(replay, dir).await
}

fn clean(report: &Report) {
    assert!(report.is_clean(false), "{report}");
}

async fn a_recorded_storage_daemon_session_replays_with_the_same_outputs(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let (proxy, listen) = record(&qsd.socket, dir.path()).await;
    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    let real = storage_session(&listen, &dir.path().join("a.img"), numbers).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert!(real.iter().any(|l| l.contains("concluded")), "{real:?}");
    assert!(real.iter().any(|l| l.starts_with("error ")), "{real:?}");

    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    let replayed = storage_session(&address, &dir.path().join("a.img"), numbers).await;
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
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async a_recorded_storage_daemon_session_replays_with_the_same_outputs);

async fn by_command_accepts_a_reordered_session_and_strict_does_not(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
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
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async by_command_accepts_a_reordered_session_and_strict_does_not);

async fn stop_and_resume_of_a_vm_replay_before_their_replies(v: QemuVersion) {
    let vm = Qemu::system(v);
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
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async stop_and_resume_of_a_vm_replay_before_their_replies);

async fn with_a_schema_invalid_arguments_get_qemus_own_error(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
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
    let schema = qmp_server::schema::Schema::from_json(&schema).unwrap();
    let dir = qmp_testkit::test_dir();
    let replay = transcript.parse::<Replay>().unwrap().schema(schema);
    let (server, address) = serve(replay, dir.path()).await;
    let c = Client::connect(&address).await.unwrap();
    let e = c.execute("blockdev-del", bad).await.unwrap_err();
    assert_eq!(e.qmp(), qemu_says.qmp());
    let e = c.execute("no-such-command", json!({})).await.unwrap_err();
    assert_eq!(e.qmp().unwrap().class, "CommandNotFound");
    c.close().await;
    let report = server.finish().await;
    assert_eq!(report.mismatched.len(), 1, "{report}");
}
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async with_a_schema_invalid_arguments_get_qemus_own_error);

async fn two_recordings_of_one_session_normalize_alike_and_the_normal_form_replays(v: QemuVersion) {
    let dir = qmp_testkit::test_dir();
    let image = dir.path().join("a.img");
    let string_ids: fn(u64) -> Value = |n| json!(format!("req-{n}"));
    // Where the job's later events fall against blockdev-create's reply is
    // a race inside QEMU (under load the job can finish first). Such a
    // pair is recorded again, a few times at most: what is tested is that
    // normalizing removes every difference that is ours to remove.
    let mut attempt = 0;
    let (recorded, outputs, normal) = loop {
        attempt += 1;
        let mut recorded = Vec::new();
        let mut outputs = Vec::new();
        for (name, ids) in [("one", numbers as fn(u64) -> Value), ("two", string_ids)] {
            let qsd = Qemu::storage_daemon(v);
            let sub = dir.path().join(format!("{name}-{attempt}"));
            std::fs::create_dir(&sub).unwrap();
            let (proxy, listen) = record(&qsd.socket, &sub).await;
            let handle = proxy.handle();
            let running = tokio::spawn(proxy.run());
            outputs.push(storage_session(&listen, &image, ids).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
            handle.shutdown();
            running.await.unwrap().unwrap();
            recorded.push(Transcript::load(&sub.join("session.qmp")).unwrap());
        }
        let normal: Vec<String> = recorded
            .iter()
            .map(|t| transcript::normalize(t).to_lines())
            .collect();
        if normal[0] == normal[1] || attempt == 4 {
            break (recorded, outputs, normal);
        }
    };
    assert_eq!(outputs[0], outputs[1]);
    // The raw recordings differ (ids, times, event timestamps) ...
    assert_ne!(recorded[0].to_lines(), recorded[1].to_lines());
    // ... their normal forms do not, line for line.
    assert_eq!(normal[0], normal[1]);
    assert!(
        normal[0].contains(r#"{"client":1,"dir":"request","msg":{"execute":"query-jobs","id":1}}"#),
        "{}",
        normal[0]
    );
    assert!(!normal[0].contains(r#""t":"#), "{}", normal[0]);

    // The normal form still replays, with events stamped by the replay.
    let (server, address) = serve(normal[1].parse().unwrap(), dir.path()).await;
    assert_eq!(
        storage_session(&address, &image, string_ids).await,
        outputs[0]
    );
    clean(&server.finish().await);
}
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async two_recordings_of_one_session_normalize_alike_and_the_normal_form_replays);

async fn passed_fds_are_recorded_as_placeholders_and_replay_wants_as_many(v: QemuVersion) {
    let vm = Qemu::system(v);
    let dir = qmp_testkit::test_dir();
    let (proxy, listen) = record(&vm.socket, dir.path()).await;
    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    let getfd = |address: String, with_fd: bool| async move {
        let c = Client::connect(&address).await.unwrap();
        let mut call = Call::new("getfd").arg("fdname", "passed");
        if with_fd {
            call = call.fd(std::fs::File::open("/dev/null").unwrap().into());
        }
        let result = c.call(call).await;
        c.close().await;
        result
    };
    assert_eq!(getfd(listen, true).await.unwrap(), json!({}));
    handle.shutdown();
    running.await.unwrap().unwrap();
    let text = std::fs::read_to_string(dir.path().join("session.qmp")).unwrap();
    let request = text.lines().find(|l| l.contains("getfd")).unwrap();
    let request: Value = serde_json::from_str(request).unwrap();
    assert_eq!(request["fds"], 1, "{text}");
    assert_eq!(request["msg"]["arguments"], json!({"fdname": "passed"}));

    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    assert_eq!(getfd(address, true).await.unwrap(), json!({}));
    clean(&server.finish().await);

    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    let e = getfd(address, false).await.unwrap_err();
    let desc = &e.qmp().unwrap().desc;
    assert!(
        desc.contains("expected 1 file descriptor(s) with it, got 0"),
        "{desc}"
    );
    let report = server.finish().await;
    assert_eq!(report.mismatched.len(), 1, "{report}");
    assert_eq!(report.unused.len(), 1, "{report}");
}
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async passed_fds_are_recorded_as_placeholders_and_replay_wants_as_many);

/// A hand-written transcript (QEMU's own timing is not exact enough to
/// test the gaps with): an event 0.3 s into a command that took 0.5 s,
/// and another 0.4 s after its reply.
const SLOW_COMMAND: &str = r#"{"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}}
{"t": 1.0, "client": 1, "dir": "request", "msg": {"execute": "stop", "id": 1}}
{"t": 1.3, "dir": "event", "msg": {"timestamp": {"seconds": 1700000000, "microseconds": 1}, "event": "STOP"}}
{"t": 1.5, "client": 1, "dir": "reply", "msg": {"return": {}, "id": 1}}
{"t": 1.9, "dir": "event", "msg": {"timestamp": {"seconds": 1700000001, "microseconds": 1}, "event": "RESUME"}}
"#;

/// When the STOP event, the reply and the RESUME event reached a client of
/// a replay of [`SLOW_COMMAND`], counted from the request. Also checks
/// that STOP came before the reply (the client has it when the reply
/// comes) and RESUME after.
async fn slow_command_timeline(realtime: bool) -> [Duration; 3] {
    let dir = qmp_testkit::test_dir();
    let replay = SLOW_COMMAND.parse::<Replay>().unwrap().realtime(realtime);
    let (server, address) = serve(replay, dir.path()).await;
    let c = Client::connect(&address).await.unwrap();
    let mut in_order = c.events(EventFilter::all());
    let mut timed = c.events(EventFilter::all());
    let start = std::time::Instant::now();
    let timing = tokio::spawn(async move {
        let mut at = Vec::new();
        for name in ["STOP", "RESUME"] {
            let e = timed.next().await.unwrap().unwrap();
            assert_eq!(e.name, name);
            // recorded timestamps are sent as recorded
            assert_eq!(e.timestamp.microseconds, 1);
            at.push(start.elapsed());
        }
        at
    });
    c.execute("stop", json!({})).await.unwrap();
    let replied = start.elapsed();
    assert_eq!(in_order.try_next().unwrap().unwrap().name, "STOP");
    assert!(in_order.try_next().is_none(), "RESUME before the reply");
    assert_eq!(in_order.next().await.unwrap().unwrap().name, "RESUME");
    let at = timing.await.unwrap();
    c.close().await;
    clean(&server.finish().await);
    [at[0], replied, at[1]]
}

#[tokio::test]
async fn realtime_keeps_the_recorded_gaps() {
    let [stop, reply, resume] = slow_command_timeline(true).await;
    assert!(stop >= Duration::from_millis(300), "STOP after {stop:?}");
    assert!(reply >= Duration::from_millis(500), "reply after {reply:?}");
    assert!(
        resume >= Duration::from_millis(900),
        "RESUME after {resume:?}"
    );
    // Without realtime nothing waits for the recorded gaps (so the last
    // event comes well before its 0.9 s); the order is checked the same.
    let [_, _, resume] = slow_command_timeline(false).await;
    assert!(
        resume < Duration::from_millis(900),
        "RESUME after {resume:?}"
    );
}

/// What a client of a restricted listener sees: an unknown command, a
/// refused one, and two with a file name the policy redacts.
async fn restricted_session(address: &str, image: &Path) -> Vec<String> {
    let c = Client::connect(address).await.unwrap();
    let mut out = Vec::new();
    let run = |command: &'static str, arguments: Value| {
        let call = c.call(Call::new(command).arguments(arguments));
        async move {
            match call.await {
                Ok(v) => format!("{command}: {v}"),
                Err(e) => format!("{command}: {e}"),
            }
        }
    };
    out.push(run("no-such-command", json!({})).await);
    out.push(run("quit", json!({})).await);
    let add = json!({"driver": "file", "node-name": "n1", "filename": image});
    out.push(run("blockdev-add", add).await);
    out.push(run("blockdev-del", json!({"node-name": "n1"})).await);
    c.close().await;
    out
}

async fn what_the_proxy_answered_itself_replays_and_redacted_arguments_match_any(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let image = dir.path().join("secret-name.img");
    std::fs::write(&image, vec![0u8; 65536]).unwrap();
    let listen = dir.path().join("rec.sock").display().to_string();
    let policies = qmp_proxy::PolicyFile::parse(
        "[policy.ops]\ndeny = [\"quit\"]\n[policy.ops.redact]\n\"blockdev-add\" = [\"filename\"]\n",
    )
    .unwrap();
    let proxy = Proxy::builder(qsd.socket.display().to_string().parse().unwrap())
        .listen(
            format!("{listen},policy=ops")
                .parse::<ListenSpec>()
                .unwrap(),
        )
        .policies(policies)
        .record(dir.path().join("session.qmp"))
        .bind()
        .await
        .unwrap();
    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    let real = restricted_session(&listen, &image).await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert!(real[0].contains("has not been found"), "{real:?}");
    assert!(real[1].contains("not permitted"), "{real:?}");
    assert_eq!(real[2], "blockdev-add: {}", "{real:?}");

    let text = std::fs::read_to_string(dir.path().join("session.qmp")).unwrap();
    assert!(
        !text.contains("secret-name"),
        "the file name leaked:\n{text}"
    );
    assert!(text.contains(r#""filename":"<redacted>""#), "{text}");
    assert_eq!(text.matches(r#""dir":"reply""#).count(), 4, "{text}");

    // Replayed, the client sees what it saw, in strict order; a different
    // file name matches the redacted one.
    let (server, address) = replay_of(dir.path(), MatchMode::Strict).await;
    let replayed = restricted_session(&address, &dir.path().join("other.img")).await;
    assert_eq!(replayed, real);
    clean(&server.finish().await);

    // With QEMU's schema the recorded unknown command is replayed too.
    let c = Client::connect(&qsd.socket.display().to_string())
        .await
        .unwrap();
    let schema = c.execute("query-qmp-schema", json!({})).await.unwrap();
    c.close().await;
    let replay = Replay::load(&dir.path().join("session.qmp"))
        .unwrap()
        .schema(qmp_server::schema::Schema::from_json(&schema).unwrap());
    let (server, address) = serve(replay, dir.path()).await;
    let replayed = restricted_session(&address, &image).await;
    assert_eq!(replayed, real);
    clean(&server.finish().await);
}
per_qemu!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async what_the_proxy_answered_itself_replays_and_redacted_arguments_match_any);
