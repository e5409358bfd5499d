//! The client against real QEMU processes: qemu-storage-daemon always,
//! qemu-system-x86_64 for what only a VM has (STOP/RESUME, oob commands,
//! getfd). Rule ids refer to docs/protocol-notes.md.

use nix::sys::signal::Signal;
use qmp_client::{
    Call, Client, ClientBuilder, Disconnect, Error, EventFilter, Handshake, Listener,
};
use qmp_testkit::{free_port, per_qemu, test_dir, Qemu, QemuVersion};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn handshake_negotiates_oob_and_greeting_matches_query_version(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let greeting = client.greeting().unwrap().clone();
    assert!(greeting.offers("oob"));
    assert!(client.oob_enabled());
    // G2: the greeting's version is what query-version returns
    let v: qmp_client::proto::Version = client
        .execute_typed("query-version", &json!({}))
        .await
        .unwrap();
    assert_eq!(v, greeting.version);
    assert!(v.qemu.major >= 7);
}
per_qemu!(#[tokio::test] async handshake_negotiates_oob_and_greeting_matches_query_version);

async fn handshake_without_oob_when_disabled(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = ClientBuilder::new()
        .oob(false)
        .connect(&qsd.address())
        .await
        .unwrap();
    assert!(!client.oob_enabled());
    let err = client
        .call(Call::new("query-version").out_of_band())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OobNotNegotiated), "{err}");
    client.execute("query-version", Value::Null).await.unwrap();
}
per_qemu!(#[tokio::test] async handshake_without_oob_when_disabled);

async fn greeting_only_leaves_negotiation_to_the_caller(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = ClientBuilder::new()
        .handshake(Handshake::GreetingOnly)
        .connect(&qsd.address())
        .await
        .unwrap();
    // N2: anything but qmp_capabilities is refused until negotiation
    let err = client
        .execute("query-version", Value::Null)
        .await
        .unwrap_err();
    let e = err.qmp().unwrap();
    assert_eq!(e.class, "CommandNotFound");
    assert_eq!(
        e.desc,
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    );
    client
        .execute("qmp_capabilities", Value::Null)
        .await
        .unwrap();
    client.execute("query-version", Value::Null).await.unwrap();
}
per_qemu!(#[tokio::test] async greeting_only_leaves_negotiation_to_the_caller);

#[derive(Deserialize)]
struct Property {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

async fn qom_list_of_the_root(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let props: Vec<Property> = client
        .execute_typed("qom-list", &json!({"path": "/"}))
        .await
        .unwrap();
    assert!(props.iter().any(|p| p.name == "type" && p.kind == "string"));
    assert!(props.iter().any(|p| p.kind.starts_with("child<")));
}
per_qemu!(#[tokio::test] async qom_list_of_the_root);

async fn errors_keep_their_class_and_text(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let err = client
        .execute("no-such-cmd", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "CommandNotFound");
    assert_eq!(
        err.qmp().unwrap().desc,
        "The command no-such-cmd has not been found"
    );
    let err = client
        .execute("blockdev-del", json!({"node-name": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "GenericError");
    assert_eq!(
        err.qmp().unwrap().desc,
        "Failed to find node with node-name='nope'"
    );
    let err = client
        .execute("blockdev-del", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().desc, "Parameter 'node-name' is missing");
    // the session is still fine
    client.execute("query-version", Value::Null).await.unwrap();
}
per_qemu!(#[tokio::test] async errors_keep_their_class_and_text);

async fn blockdev_create_job_streams_job_status_change_through_concluded(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let mut statuses = client.events(EventFilter::name("JOB_STATUS_CHANGE").data_eq("/id", "j1"));
    let image = qsd.dir().join("disk.img");
    let create =
        json!({"job-id": "j1", "options": {"driver": "file", "filename": image, "size": 1048576}});
    let (ret, concluded) = client
        .execute_and_wait(
            "blockdev-create",
            create,
            EventFilter::name("JOB_STATUS_CHANGE")
                .data_eq("/id", "j1")
                .data_eq("/status", "concluded"),
        )
        .await
        .unwrap();
    assert_eq!(ret, json!({}));
    assert_eq!(concluded.data_at("/status"), Some(&json!("concluded")));
    assert!(concluded.timestamp.seconds > 1_600_000_000);
    let mut seen = Vec::new();
    while let Some(Ok(e)) = statuses.try_next() {
        seen.push(e.data_at("/status").unwrap().as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen,
        ["created", "running", "waiting", "pending", "concluded"]
    );
    client
        .execute("job-dismiss", json!({"id": "j1"}))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), statuses.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.data_at("/status"), Some(&json!("null")));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 1048576);
}
per_qemu!(#[tokio::test] async blockdev_create_job_streams_job_status_change_through_concluded);

async fn stop_and_resume_events_arrive_before_their_replies(v: QemuVersion) {
    let vm = Qemu::system(v);
    let client = Client::connect(&vm.address()).await.unwrap();
    client.execute("cont", Value::Null).await.unwrap();
    let mut events = client.events(EventFilter::names(["STOP", "RESUME"]));
    for (command, event) in [("stop", "STOP"), ("cont", "RESUME"), ("stop", "STOP")] {
        client.execute(command, Value::Null).await.unwrap();
        // P4: the event came first on the wire, so it is already buffered
        // when the reply is handed back.
        let e = events
            .try_next()
            .expect("event delivered before the reply")
            .unwrap();
        assert_eq!(e.name, event);
    }
    let status = client.execute("query-status", Value::Null).await.unwrap();
    assert_eq!(status["status"], "paused");
}
per_qemu!(#[tokio::test] async stop_and_resume_events_arrive_before_their_replies);

async fn oob_command_overtakes_queued_inband_commands(v: QemuVersion) {
    let vm = Qemu::system(v);
    let client = Client::connect(&vm.address()).await.unwrap();
    assert!(client.oob_enabled());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..7 {
        let (c, order) = (client.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let schema = c.execute("query-qmp-schema", Value::Null).await.unwrap();
            assert!(schema.as_array().unwrap().len() > 500);
            order.lock().unwrap().push(format!("schema{i}"));
        }));
        tokio::task::yield_now().await;
    }
    let (c, o) = (client.clone(), order.clone());
    tasks.push(tokio::spawn(async move {
        let r = c.call(Call::new("query-yank").out_of_band()).await.unwrap();
        assert!(r.is_array());
        o.lock().unwrap().push("oob".into());
    }));
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap();
    let oob_at = order.iter().position(|s| s == "oob").unwrap();
    assert!(
        oob_at < 6,
        "oob reply should overtake the in-band ones: {order:?}"
    );
}
per_qemu!(#[tokio::test] async oob_command_overtakes_queued_inband_commands);

async fn fd_passing_with_getfd_then_closefd(v: QemuVersion) {
    let vm = Qemu::system(v);
    let client = Client::connect(&vm.address()).await.unwrap();
    assert!(client.can_pass_fds());
    let (r, _w) = nix::unistd::pipe().unwrap();
    client
        .call(Call::new("getfd").arg("fdname", "myfd").fd(r))
        .await
        .unwrap();
    client
        .execute("closefd", json!({"fdname": "myfd"}))
        .await
        .unwrap();
    // closing it again fails: QEMU really had it, and now does not
    let err = client
        .execute("closefd", json!({"fdname": "myfd"}))
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "GenericError");
    // getfd without an fd is refused by QEMU
    let err = client
        .execute("getfd", json!({"fdname": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "GenericError");
}
per_qemu!(#[tokio::test] async fd_passing_with_getfd_then_closefd);

async fn fd_passing_with_add_fd_into_an_fdset(v: QemuVersion) {
    let vm = Qemu::system(v);
    let client = Client::connect(&vm.address()).await.unwrap();
    let (r, _w) = nix::unistd::pipe().unwrap();
    let added = client
        .call(
            Call::new("add-fd")
                .arg("fdset-id", 7)
                .arg("opaque", "from-test")
                .fd(r),
        )
        .await
        .unwrap();
    assert_eq!(added["fdset-id"], 7);
    let fd = added["fd"].as_i64().unwrap();
    let sets = client.execute("query-fdsets", Value::Null).await.unwrap();
    let set = sets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["fdset-id"] == 7)
        .expect("fdset 7 exists");
    assert_eq!(set["fds"][0]["fd"], fd);
    assert_eq!(set["fds"][0]["opaque"], "from-test");
    client
        .execute("remove-fd", json!({"fdset-id": 7}))
        .await
        .unwrap();
}
per_qemu!(#[tokio::test] async fd_passing_with_add_fd_into_an_fdset);

async fn tcp_transport_and_fd_passing_refused_over_tcp(v: QemuVersion) {
    let port = free_port();
    let qsd = Qemu::storage_daemon_tcp(v, "127.0.0.1", port);
    let client = Client::connect(&format!("tcp:127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(!client.can_pass_fds());
    client.execute("query-version", Value::Null).await.unwrap();
    let (r, _w) = nix::unistd::pipe().unwrap();
    let err = client
        .call(Call::new("getfd").arg("fdname", "x").fd(r))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FdPassingUnsupported), "{err}");
    drop(qsd);
}
per_qemu!(#[tokio::test] async tcp_transport_and_fd_passing_refused_over_tcp);

async fn tcp_over_ipv6_loopback(v: QemuVersion) {
    let port = free_port();
    let args = vec![
        "--chardev".into(),
        format!("socket,host=::1,port={port},ipv6=on,server=on,wait=off,id=m"),
        "--monitor".into(),
        "chardev=m".into(),
    ];
    let _qsd = Qemu::spawn_in(
        v,
        test_dir(),
        qmp_testkit::STORAGE_DAEMON,
        args,
        qmp_testkit::Ready::Tcp("::1".into(), port),
    );
    let client = Client::connect(&format!("[::1]:{port}")).await.unwrap();
    client.execute("query-version", Value::Null).await.unwrap();
}
per_qemu!(#[tokio::test] async tcp_over_ipv6_loopback);

async fn already_connected_stream_and_inherited_fd(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let std_stream = std::os::unix::net::UnixStream::connect(&qsd.socket).unwrap();
    std_stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(std_stream).unwrap();
    let client = ClientBuilder::new().from_stream(stream).await.unwrap();
    client.execute("query-version", Value::Null).await.unwrap();
    client.close().await;
    // the same from a descriptor we own
    while qmp_testkit::unix_connections(&qsd.socket) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let std_stream = std::os::unix::net::UnixStream::connect(&qsd.socket).unwrap();
    let fd = std::os::fd::OwnedFd::from(std_stream);
    let client = ClientBuilder::new().from_fd(fd).await.unwrap();
    client.execute("query-version", Value::Null).await.unwrap();
    // an fd:N address is refused by the library: it cannot know the
    // descriptor is the caller's to give (a program's main does, and
    // passes it with from_fd)
    let e = Client::connect("fd:0").await.expect_err("refused");
    assert!(e.to_string().contains("ClientBuilder::from_fd"), "{e}");
}
per_qemu!(#[tokio::test] async already_connected_stream_and_inherited_fd);

async fn accept_mode_with_qemu_connecting_in(v: QemuVersion) {
    let dir = test_dir();
    let path = dir.path().join("listen.sock");
    let listener = Listener::bind(&format!("unix:{}", path.display()).parse().unwrap())
        .await
        .unwrap();
    let _qsd = Qemu::storage_daemon_connecting_to(v, &path);
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        ClientBuilder::new().accept(&listener),
    )
    .await
    .expect("QEMU connected in")
    .unwrap();
    assert!(client.greeting().is_some());
    client.execute("query-version", Value::Null).await.unwrap();
    drop(listener);
    assert!(!path.exists(), "the listener removes its socket file");
}
per_qemu!(#[tokio::test] async accept_mode_with_qemu_connecting_in);

async fn accept_mode_over_tcp(v: QemuVersion) {
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let qmp_client::Address::Tcp(_, port) = listener.address().clone() else {
        panic!()
    };
    let args = vec![
        "--chardev".into(),
        format!("socket,host=127.0.0.1,port={port},server=off,id=m"),
        "--monitor".into(),
        "chardev=m".into(),
    ];
    let _qsd = Qemu::spawn_in(
        v,
        test_dir(),
        qmp_testkit::STORAGE_DAEMON,
        args,
        qmp_testkit::Ready::Started,
    );
    let client = tokio::time::timeout(
        Duration::from_secs(20),
        ClientBuilder::new().accept(&listener),
    )
    .await
    .expect("QEMU connected in")
    .unwrap();
    assert!(!client.can_pass_fds());
    client.execute("query-version", Value::Null).await.unwrap();
}
per_qemu!(#[tokio::test] async accept_mode_over_tcp);

async fn dropped_clients_leave_no_tasks_behind(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for _ in 0..20 {
        let client = Client::connect(&qsd.address()).await.unwrap();
        let _events = client.events(EventFilter::all());
        client.execute("query-version", Value::Null).await.unwrap();
        drop(client);
        // QEMU serves the next client once it has seen this one go
        let deadline = Instant::now() + Duration::from_secs(10);
        while qmp_testkit::unix_connections(&qsd.socket) > 0 {
            assert!(Instant::now() < deadline, "connection not closed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > baseline {
        assert!(
            Instant::now() < deadline,
            "{} tasks still alive",
            metrics.num_alive_tasks() - baseline
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
per_qemu!(#[tokio::test] async dropped_clients_leave_no_tasks_behind);

async fn monitor_with_pretty_output(v: QemuVersion) {
    let qsd = Qemu::storage_daemon_with_monitor(v, ",pretty=on");
    let client = Client::connect(&qsd.address()).await.unwrap();
    let props = client
        .execute("qom-list", json!({"path": "/"}))
        .await
        .unwrap();
    assert!(props.as_array().unwrap().len() >= 2);
    let err = client.execute("nope", Value::Null).await.unwrap_err();
    assert_eq!(err.qmp().unwrap().class, "CommandNotFound");
    let schema = client
        .execute("query-qmp-schema", Value::Null)
        .await
        .unwrap();
    assert!(schema.as_array().unwrap().len() > 100);
}
per_qemu!(#[tokio::test] async monitor_with_pretty_output);

async fn many_concurrent_callers_with_ids_of_every_json_type(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let ids = [
        json!("text"),
        json!(null),
        json!({"a": [1, 2]}),
        json!([3]),
        json!(true),
        json!(-5),
        json!(1.5),
        json!(7),
    ];
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let c = client.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            // qom-list of different paths, so a mixed-up reply would show
            let path = if i % 2 == 0 { "/" } else { "/chardevs" };
            let r = c
                .call(Call::new("qom-list").arg("path", path).id(id))
                .await
                .unwrap();
            (path, r)
        }));
    }
    for i in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "/" } else { "/chardevs" };
            (
                path,
                c.execute("qom-list", json!({"path": path})).await.unwrap(),
            )
        }));
    }
    for t in tasks {
        let (path, r) = t.await.unwrap();
        let has_chardevs = r
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "chardevs");
        assert_eq!(
            has_chardevs,
            path == "/",
            "reply routed to the wrong caller"
        );
    }
}
per_qemu!(#[tokio::test] async many_concurrent_callers_with_ids_of_every_json_type);

async fn duplicate_caller_id_is_refused_while_pending(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    qsd.signal(Signal::SIGSTOP);
    let c = client.clone();
    let first = tokio::spawn(async move { c.call(Call::new("query-version").id("same")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = client
        .call(Call::new("query-version").id("same"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateId(_)), "{err}");
    qsd.signal(Signal::SIGCONT);
    first.await.unwrap().unwrap();
}
per_qemu!(#[tokio::test] async duplicate_caller_id_is_refused_while_pending);

async fn timed_out_call_does_not_desync_later_ones(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    qsd.signal(Signal::SIGSTOP);
    let err = client
        .call(
            Call::new("qom-list")
                .arg("path", "/chardevs")
                .timeout(Some(Duration::from_millis(200))),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // and a cancelled one (future dropped)
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        client.execute("qom-list", json!({"path": "/chardevs"})),
    )
    .await;
    assert!(cancelled.is_err());
    qsd.signal(Signal::SIGCONT);
    // QEMU now answers the two abandoned calls first; those replies must
    // not reach this caller.
    let r = client
        .execute("qom-list", json!({"path": "/"}))
        .await
        .unwrap();
    assert!(r
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "chardevs"));
    let v = client.execute("query-version", Value::Null).await.unwrap();
    assert!(v["qemu"]["major"].is_u64());
}
per_qemu!(#[tokio::test] async timed_out_call_does_not_desync_later_ones);

async fn sigkill_with_50_commands_in_flight_fails_them_all_promptly(v: QemuVersion) {
    let mut qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let mut events = client.events(EventFilter::all());
    qsd.signal(Signal::SIGSTOP);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.execute("query-version", Value::Null).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Instant::now();
    qsd.kill();
    for t in tasks {
        // well under the 60 s default timeout: they fail because of the
        // disconnect, not a timeout
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("prompt failure")
            .unwrap();
        match r {
            Err(Error::Disconnected(Disconnect::Eof | Disconnect::Io(_))) => {}
            other => panic!("expected a disconnect error, got {other:?}"),
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(5));
    assert!(events.next().await.is_none(), "event streams end");
    assert!(client.is_closed());
    let err = client
        .execute("query-version", Value::Null)
        .await
        .unwrap_err();
    assert!(err.is_disconnect(), "{err}");
}
per_qemu!(#[tokio::test] async sigkill_with_50_commands_in_flight_fails_them_all_promptly);

async fn graceful_close_answers_what_was_sent(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = Client::connect(&qsd.address()).await.unwrap();
    let c = client.clone();
    let inflight = tokio::spawn(async move { c.execute("query-version", Value::Null).await });
    tokio::task::yield_now().await;
    client.close().await;
    inflight.await.unwrap().unwrap();
    let err = client
        .execute("query-version", Value::Null)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Disconnected(Disconnect::Closed)),
        "{err}"
    );
}
per_qemu!(#[tokio::test] async graceful_close_answers_what_was_sent);

async fn second_client_on_a_busy_monitor_times_out_with_a_clear_message(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let _first = Client::connect(&qsd.address()).await.unwrap();
    let err = ClientBuilder::new()
        .connect_timeout(Duration::from_millis(300))
        .connect(&qsd.address())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("one client at a time"), "{err}");
}
per_qemu!(#[tokio::test] async second_client_on_a_busy_monitor_times_out_with_a_clear_message);

fn blocking_facade(v: QemuVersion) {
    use qmp_client::blocking::Waited;
    let vm = Qemu::system(v);
    let client = qmp_client::blocking::Client::connect(&vm.address()).unwrap();
    let mut events = client.events(EventFilter::name("RESUME"));
    let status = client.execute("query-status", Value::Null).unwrap();
    assert_eq!(status["status"], "prelaunch");
    // nothing yet: a timeout, told apart from the end of the stream
    assert!(matches!(
        events.next_timeout(Duration::from_millis(100)),
        Waited::TimedOut
    ));
    client.execute("cont", Value::Null).unwrap();
    let e = events.next_timeout(Duration::from_secs(5)).event().unwrap();
    assert_eq!(e.name, "RESUME");
    // the command and the event it causes, in one call
    let (ret, stop) = client
        .execute_and_wait("stop", Value::Null, EventFilter::name("STOP"))
        .unwrap();
    assert_eq!((ret, stop.name.as_str()), (json!({}), "STOP"));
    assert!(!client.is_closed());
    // QEMU goes away: the stream ends, and the client says why
    client.execute("quit", Value::Null).unwrap();
    assert!(matches!(
        events.next_timeout(Duration::from_secs(5)),
        Waited::Ended
    ));
    let why = client.disconnected();
    assert!(client.is_closed());
    assert!(matches!(why, qmp_client::Disconnect::Eof), "{why}");
}
per_qemu!(
    #[test]
    blocking_facade
);

/// An id that is an object with several members comes back with its
/// members in QEMU's order, not ours; the reply still reaches its caller
/// (it used to time out, with "dropped a reply with an id nobody is
/// waiting for").
async fn object_ids_with_several_members_get_their_replies(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = ClientBuilder::new()
        .timeout(Some(Duration::from_secs(5)))
        .connect(&qsd.address())
        .await
        .unwrap();
    for id in [
        json!({"b": 1, "a": 2}),
        json!({"zz": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": 0, "m": "text"}),
        json!([{"d": 4, "c": 3}, {"b": 2, "a": 1}]),
    ] {
        let r = client
            .call(Call::new("query-version").id(id.clone()))
            .await
            .unwrap_or_else(|e| panic!("id {id}: {e}"));
        assert_eq!(r["qemu"]["major"], v.major_minor().0);
    }
    // written in either order, one after the other
    for id in [json!({"x": 1, "y": 2}), json!({"y": 2, "x": 1})] {
        assert!(client.call(Call::new("query-version").id(id)).await.is_ok());
    }
}
per_qemu!(
    #[tokio::test]
    async object_ids_with_several_members_get_their_replies
);

/// A monitor serves one client at a time (M1): with `fail_if_busy` a
/// second client is told so instead of waiting out its connect timeout;
/// without it, it waits; and once the first leaves, it is served.
async fn a_busy_monitor_is_reported_as_busy(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let first = Client::connect(&qsd.address()).await.unwrap();
    let e = ClientBuilder::new()
        .fail_if_busy(true)
        .connect(&qsd.address())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    assert!(e.to_string().contains("busy"), "{e}");
    let e = ClientBuilder::new()
        .connect_timeout(Duration::from_millis(500))
        .connect(&qsd.address())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Handshake(_)),
        "without it, a timeout: {e}"
    );
    // More in the queue than it holds: busy too, not an I/O error
    let mut waiting = Vec::new();
    for _ in 0..4 {
        // (non-blocking: a full queue answers EAGAIN at once)
        waiting.push(tokio::net::UnixStream::connect(&qsd.socket).await);
    }
    assert!(waiting.iter().any(|w| w.is_err()), "the queue filled up");
    let e = ClientBuilder::new()
        .fail_if_busy(true)
        .connect(&qsd.address())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e}");
    drop(waiting);
    first.close().await;
    // QEMU takes the abandoned connections in the queue one by one first
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        match ClientBuilder::new()
            .fail_if_busy(true)
            .connect(&qsd.address())
            .await
        {
            Ok(c) => break c,
            Err(Error::Busy { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(second.execute("query-version", json!({})).await.is_ok());
}
per_qemu!(#[tokio::test] async a_busy_monitor_is_reported_as_busy);
