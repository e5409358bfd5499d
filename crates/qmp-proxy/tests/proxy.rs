//! The proxy between real QEMU processes and several clients at once: our
//! client, raw sockets, and QEMU's own Python library `qemu.qmp`.
//!
//! Each test starts its own QEMU and its own proxy (in-process, on a
//! runtime of its own), and uses only blocking client code, as a tool
//! would.

use nix::sys::signal::Signal;
use qmp_client::blocking::Client;
use qmp_client::{Call, EventFilter};
use qmp_proxy::{ListenSpec, PolicyFile, Proxy, ProxyBuilder, ProxyError, ProxyHandle};
use qmp_testkit::{per_qemu, Qemu, QemuVersion, RawPeer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_secs(10);

/// A proxy running on a thread of its own.
struct TestProxy {
    handle: ProxyHandle,
    thread: Option<std::thread::JoinHandle<Result<(), ProxyError>>>,
    dir: tempfile::TempDir,
}

impl TestProxy {
    /// A proxy for the QEMU monitor at `upstream`, listening on
    /// `listeners` (`{dir}` stands for its temp dir), configured further by
    /// `configure`.
    fn start(
        upstream: &Path,
        listeners: &[&str],
        configure: impl FnOnce(ProxyBuilder, &Path) -> ProxyBuilder + Send + 'static,
    ) -> TestProxy {
        let dir = qmp_testkit::test_dir();
        let at = dir.path().to_owned();
        let mut builder = Proxy::builder(upstream.display().to_string().parse().unwrap());
        for l in listeners {
            let spec: ListenSpec = l
                .replace("{dir}", &at.display().to_string())
                .parse()
                .unwrap();
            builder = builder.listen(spec);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let proxy = configure(builder, &at).bind().await?;
                tx.send(proxy.handle()).unwrap();
                proxy.run().await
            })
        });
        let handle = rx.recv().expect("the proxy binds its listeners");
        TestProxy {
            handle,
            thread: Some(thread),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn addr(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Waits for `run` to return on its own.
    fn outcome(mut self, within: Duration) -> Result<(), ProxyError> {
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + within;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the proxy did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Configures a [`TestProxy`] with the policy file `text`.
fn with_policies(text: &'static str) -> impl FnOnce(ProxyBuilder, &Path) -> ProxyBuilder + Send {
    move |b, _| b.policies(PolicyFile::parse(text).unwrap())
}

/// A raw client that has read the greeting and negotiated (with oob when
/// `oob`).
fn raw_negotiated(path: &Path, oob: bool) -> RawPeer {
    let mut peer = RawPeer::connect(path, QUIET);
    peer.read_n(1);
    let enable = if oob {
        r#", "arguments": {"enable": ["oob"]}"#
    } else {
        ""
    };
    write!(
        peer.stream,
        r#"{{"execute": "qmp_capabilities"{enable}, "id": "neg"}}"#
    )
    .unwrap();
    assert_eq!(
        peer.read_until("\"neg\""),
        [r#"{"return": {}, "id": "neg"}"#]
    );
    peer
}

fn every_client_gets_what_a_direct_qemu_session_would_byte_for_byte(v: QemuVersion) {
    let qsd = Qemu::storage_daemon_with_second_monitor(v, "direct.sock");
    let proxy = TestProxy::start(&qsd.socket, &["{dir}/p.sock"], |b, _| b);
    let mut direct = RawPeer::connect(&qsd.dir().join("direct.sock"), QUIET);
    let mut proxied = RawPeer::connect(&proxy.path("p.sock"), QUIET);
    assert_eq!(proxied.read_n(1), direct.read_n(1), "the greeting");
    for (n, phase) in qmp_testkit::SESSION_PHASES.iter().enumerate() {
        let marker = format!("{{\"execute\": \"query-version\", \"id\": \"marker-{n}\"}}\n");
        let mut input = phase.to_vec();
        input.extend_from_slice(marker.as_bytes());
        direct.stream.write_all(&input).unwrap();
        proxied.stream.write_all(&input).unwrap();
        let expected = direct.read_until(&format!("\"marker-{n}\""));
        let got = proxied.read_until(&format!("\"marker-{n}\""));
        assert_eq!(
            got,
            expected,
            "phase {n}: {}",
            String::from_utf8_lossy(phase)
        );
    }
    // Events too: a job run from the direct session, seen by both.
    let image = qsd.dir().join("disk.img");
    write!(
        direct.stream,
        r#"{{"execute": "blockdev-create", "arguments": {{"job-id": "j1", "options": {{"driver": "file", "filename": "{}", "size": 1048576}}}}}}"#,
        image.display()
    )
    .unwrap();
    let events = |frames: Vec<String>| -> Vec<String> {
        frames
            .into_iter()
            .filter(|f| f.contains("\"event\""))
            .collect()
    };
    let expected = events(direct.read_until("concluded"));
    assert_eq!(expected.len(), 5, "{expected:?}");
    assert_eq!(events(proxied.read_until("concluded")), expected);
}
per_qemu!(
    #[test]
    every_client_gets_what_a_direct_qemu_session_would_byte_for_byte
);

/// Python's qemu.qmp as a third client: reads with the id `same` too,
/// says `ready`, then prints the events it gets until `until` (an event
/// name, or `JOB_STATUS_CHANGE:status`), then runs one more command.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys
from qemu.qmp import QMPClient

async def main(path, until):
    qmp = QMPClient('proxy-test')
    await qmp.connect(path)
    print('greeting', qmp.greeting.QMP.version['qemu']['major'], flush=True)
    reply = await qmp._raw({'execute': 'query-version', 'id': 'same'}, assign_id=False)
    print('reply', reply['id'], 'qemu' in reply['return'], flush=True)
    with qmp.listener() as listener:
        print('ready', flush=True)
        async def watch():
            async for event in listener:
                name = event['event']
                if name == 'JOB_STATUS_CHANGE':
                    name += ':' + event['data']['status']
                print('event', name, flush=True)
                if name == until:
                    return
        await asyncio.wait_for(watch(), 30)
    reply = await qmp._raw({'execute': 'query-jobs', 'id': 'same'}, assign_id=False)
    print('reply', reply['id'], type(reply['return']).__name__, flush=True)
    await qmp.disconnect()
    print('done', flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

struct Python {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    lines: Vec<String>,
}

impl Python {
    fn start(path: &Path, until: &str) -> Python {
        let mut child = Command::new("python3")
            .args(["-c", PYTHON_CLIENT, &path.display().to_string(), until])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut python = Python {
            child,
            out,
            lines: Vec::new(),
        };
        python.read_through("ready");
        python
    }

    fn read_through(&mut self, last: &str) {
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                self.child
                    .stderr
                    .as_mut()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(
                    !err.contains("No module named 'qemu'"),
                    "this test needs Python's qemu.qmp: pip install qemu.qmp (.ci/run does)"
                );
                panic!("qemu.qmp ended early: {:?}\n{err}", self.lines);
            }
            let line = line.trim_end().to_owned();
            self.lines.push(line.clone());
            if line == last {
                return;
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.read_through("done");
        assert!(self.child.wait().unwrap().success());
        self.lines
    }
}

fn three_clients_with_the_same_ids_each_get_their_replies_and_every_job_event(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let proxy = TestProxy::start(&qsd.socket, &["{dir}/p.sock"], |b, _| b);
    let path = proxy.path("p.sock");
    let python = Python::start(&path, "JOB_STATUS_CHANGE:concluded");
    let mut raw = raw_negotiated(&path, true);
    let ours = Client::connect(&proxy.addr("p.sock")).unwrap();
    let mut statuses = ours.events(EventFilter::name("JOB_STATUS_CHANGE"));

    // The raw client's request waits unread while ours runs one with the
    // same id; each gets its own reply.
    raw.stream
        .write_all(br#"{"execute": "query-jobs", "id": "same"}"#)
        .unwrap();
    let version = ours.call(Call::new("query-version").id("same")).unwrap();
    assert!(version["qemu"]["major"].is_u64(), "{version}");
    assert_eq!(raw.read_n(1), [r#"{"return": [], "id": "same"}"#]);
    // and a request without an id gets its reply, without one
    raw.stream
        .write_all(br#"{"execute": "query-jobs"}"#)
        .unwrap();
    assert_eq!(raw.read_n(1), [r#"{"return": []}"#]);

    let image = proxy.path("disk.img");
    let create =
        json!({"job-id": "j1", "options": {"driver": "file", "filename": image, "size": 1048576}});
    ours.execute("blockdev-create", create).unwrap();
    let expected = ["created", "running", "waiting", "pending", "concluded"];
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let e = statuses
            .next_timeout(QUIET)
            .event()
            .expect("an event in time");
        seen.push(e.data_at("/status").unwrap().as_str().unwrap().to_owned());
    }
    assert_eq!(seen, expected);
    let raw_seen: Vec<String> = raw
        .read_until("concluded")
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap()["data"]["status"].to_string())
        .collect();
    assert_eq!(raw_seen, expected.map(|s| format!("\"{s}\"")));
    let lines = python.finish();
    assert!(lines[0].starts_with("greeting "), "{lines:?}");
    assert_eq!(
        lines[1..],
        [
            "reply same True",
            "ready",
            "event JOB_STATUS_CHANGE:created",
            "event JOB_STATUS_CHANGE:running",
            "event JOB_STATUS_CHANGE:waiting",
            "event JOB_STATUS_CHANGE:pending",
            "event JOB_STATUS_CHANGE:concluded",
            "reply same list",
            "done",
        ]
    );
    ours.execute("job-dismiss", json!({"id": "j1"})).unwrap();
}
per_qemu!(
    #[test]
    three_clients_with_the_same_ids_each_get_their_replies_and_every_job_event
);

fn stop_and_resume_reach_every_client_and_precede_the_reply(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(&vm.socket, &["{dir}/p.sock"], |b, _| b);
    let path = proxy.path("p.sock");
    let python = Python::start(&path, "STOP");
    let ours = Client::connect(&proxy.addr("p.sock")).unwrap();
    let mut events = ours.events(EventFilter::names(["STOP", "RESUME"]));
    let mut raw = raw_negotiated(&path, false);
    raw.stream
        .write_all(br#"{"execute": "cont", "id": 1}"#)
        .unwrap();
    let frames = raw.read_until("\"id\": 1");
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].contains(r#""event": "RESUME""#), "{frames:?}");
    assert_eq!(frames[1], r#"{"return": {}, "id": 1}"#);
    // Our client stops the VM; the raw client sees it too.
    ours.execute("stop", json!({})).unwrap();
    assert!(raw.read_n(1)[0].contains(r#""event": "STOP""#));
    let names: Vec<String> = (0..2)
        .map(|_| events.next_timeout(QUIET).event().unwrap().name.clone())
        .collect();
    assert_eq!(names, ["RESUME", "STOP"]);
    let lines = python.finish();
    assert_eq!(lines[3..5], ["event RESUME", "event STOP"]);
}
per_qemu!(
    #[test]
    stop_and_resume_reach_every_client_and_precede_the_reply
);

fn a_read_only_listener_refuses_what_it_must_and_the_audit_log_tells_who_did_what(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let proxy = TestProxy::start(
        &qsd.socket,
        &["{dir}/rw.sock", "{dir}/ro.sock,policy=read-only"],
        |b, dir| {
            let policy =
                PolicyFile::parse("[redact]\n\"blockdev-add\" = [\"filename\"]\n").unwrap();
            b.policies(policy).audit(dir.join("audit.log"))
        },
    );
    let ro = Client::connect(&proxy.addr("ro.sock")).unwrap();
    for (command, args) in [
        ("quit", json!({})),
        (
            "blockdev-add",
            json!({"driver": "file", "node-name": "n1", "filename": "/etc/hostname"}),
        ),
    ] {
        let e = ro.execute(command, args).unwrap_err();
        let e = e.qmp().expect("a QMP error");
        assert_eq!(e.class, "CommandNotFound");
        assert_eq!(
            e.desc,
            format!("The command {command} is not permitted by the proxy's policy 'read-only'")
        );
    }
    let listed: Vec<String> = ro
        .execute("query-commands", json!({}))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.contains(&"query-version".to_owned()) && listed.contains(&"qom-get".to_owned()));
    assert!(!listed.iter().any(|c| c == "quit" || c == "blockdev-add"));
    // QEMU is up, and nothing was added to it.
    let rw = Client::connect(&proxy.addr("rw.sock")).unwrap();
    let nodes = rw.execute("query-named-block-nodes", json!({})).unwrap();
    assert_eq!(nodes, json!([]));
    let all = rw.execute("query-commands", json!({})).unwrap();
    assert!(all.as_array().unwrap().len() > listed.len());
    let e = rw
        .execute("blockdev-add", json!({"driver": "file", "node-name": "n1"}))
        .unwrap_err();
    assert_eq!(e.qmp().unwrap().desc, "Parameter 'filename' is missing");
    drop((ro, rw));

    let log = std::fs::read_to_string(proxy.path("audit.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let uid = nix::unistd::getuid().as_raw();
    let pid = std::process::id();
    let summary: Vec<(String, String, String, Value)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["uid"], uid, "{l}");
            assert_eq!(l["pid"], pid, "{l}");
            assert!(l["latency-us"].is_u64(), "{l}");
            assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
            assert!(l["client"].is_u64(), "{l}");
            let listener = l["listener"].as_str().unwrap().rsplit('/').next().unwrap();
            (
                listener.to_owned(),
                l["command"].as_str().unwrap().to_owned(),
                format!(
                    "{}{}",
                    l["outcome"].as_str().unwrap(),
                    l.get("class").map(|c| format!(" {c}")).unwrap_or_default()
                ),
                l["arguments"].clone(),
            )
        })
        .collect();
    let row = |l: &str, c: &str, o: &str, a: Value| (l.to_owned(), c.to_owned(), o.to_owned(), a);
    assert_eq!(
        summary,
        [
            row("ro.sock", "quit", "denied \"CommandNotFound\"", json!({})),
            row(
                "ro.sock",
                "blockdev-add",
                "denied \"CommandNotFound\"",
                json!({"driver": "file", "node-name": "n1", "filename": "<redacted>"})
            ),
            row("ro.sock", "query-commands", "return", json!({})),
            row("rw.sock", "query-named-block-nodes", "return", json!({})),
            row("rw.sock", "query-commands", "return", json!({})),
            row(
                "rw.sock",
                "blockdev-add",
                "error \"GenericError\"",
                json!({"driver": "file", "node-name": "n1"})
            ),
        ]
    );
    assert_ne!(lines[0]["client"], lines[3]["client"]);
}
per_qemu!(
    #[test]
    a_read_only_listener_refuses_what_it_must_and_the_audit_log_tells_who_did_what
);

fn a_client_that_never_reads_is_cut_off_while_the_others_keep_working(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(&vm.socket, &["{dir}/p.sock"], |b, _| b.client_buffer(50));
    let path = proxy.path("p.sock");
    let mut sleeper = raw_negotiated(&path, false);
    let watcher_path = path.clone();
    const PAIRS: usize = 600;
    let (ready, watching) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let mut w = raw_negotiated(&watcher_path, false);
        ready.send(()).unwrap();
        let mut count = 0;
        while count < 2 * PAIRS {
            count += w
                .read_n(1)
                .iter()
                .filter(|f| f.contains("\"STOP\"") || f.contains("\"RESUME\""))
                .count();
        }
        count
    });
    // the watcher must be subscribed before the first event
    watching.recv().unwrap();
    let worker = Client::connect(&proxy.addr("p.sock")).unwrap();
    for _ in 0..PAIRS {
        worker.execute("cont", json!({})).unwrap();
        worker.execute("stop", json!({})).unwrap();
    }
    assert_eq!(
        watcher.join().unwrap(),
        2 * PAIRS,
        "every event reached the reader"
    );
    // The sleeper got what fit in its socket and its buffer, then EOF.
    sleeper
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut unread = Vec::new();
    sleeper
        .stream
        .read_to_end(&mut unread)
        .expect("EOF, not a timeout: the proxy cut it off");
    let received = String::from_utf8_lossy(&unread)
        .matches("\"event\"")
        .count();
    assert!(received < 2 * PAIRS, "received {received}");
    assert_eq!(
        worker.execute("query-status", json!({})).unwrap()["status"],
        "paused"
    );
}
per_qemu!(
    #[test]
    a_client_that_never_reads_is_cut_off_while_the_others_keep_working
);

fn when_qemu_dies_every_client_sees_eof_within_a_second(v: QemuVersion) {
    let mut qsd = Qemu::storage_daemon(v);
    let proxy = TestProxy::start(&qsd.socket, &["{dir}/p.sock"], |b, _| b);
    let path = proxy.path("p.sock");
    let mut negotiated = raw_negotiated(&path, true);
    let mut greeted = RawPeer::connect(&path, QUIET);
    greeted.read_n(1);
    let ours = Client::connect(&proxy.addr("p.sock")).unwrap();
    ours.execute("query-version", json!({})).unwrap();
    qsd.kill();
    let killed = Instant::now();
    for peer in [&mut negotiated, &mut greeted] {
        let mut rest = Vec::new();
        peer.stream.read_to_end(&mut rest).expect("EOF");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    let e = ours.execute("query-version", json!({})).unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(1), "EOF took {took:?}");
    match proxy.outcome(QUIET) {
        Err(ProxyError::UpstreamLost(_)) => {}
        other => panic!("{other:?}"),
    }
}
per_qemu!(
    #[test]
    when_qemu_dies_every_client_sees_eof_within_a_second
);

fn with_reconnect_clients_are_served_again_once_qemu_is_back(v: QemuVersion) {
    let dir = qmp_testkit::test_dir();
    let upstream = dir.path().join("vm.sock");
    // Each QEMU starts on a socket of its own, proven ready there, then
    // moves to where the proxy looks.
    let start_qemu = || {
        let qsd = Qemu::storage_daemon(v);
        std::fs::rename(&qsd.socket, &upstream).unwrap();
        qsd
    };
    let mut first = start_qemu();
    let proxy = TestProxy::start(&upstream, &["{dir}/p.sock"], |b, _| b.reconnect(true));
    let client = Client::connect(&proxy.addr("p.sock")).unwrap();
    let works = |c: &Client| c.execute("query-version", json!({})).unwrap();
    works(&client);
    first.kill();
    let e = client.execute("query-version", json!({})).unwrap_err();
    assert!(e.is_disconnect(), "{e}");
    // A client that comes while QEMU is away waits, then is served.
    let path = proxy.path("p.sock");
    let waiting = std::thread::spawn(move || {
        let mut peer = RawPeer::connect(&path, Duration::from_secs(20));
        peer.read_n(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "greeted while QEMU was away");
    let _second = start_qemu();
    let greeting = waiting.join().unwrap();
    assert!(greeting[0].starts_with(r#"{"QMP": "#), "{greeting:?}");
    let again = Client::connect(&proxy.addr("p.sock")).unwrap();
    works(&again);
}
per_qemu!(
    #[test]
    with_reconnect_clients_are_served_again_once_qemu_is_back
);

fn file_descriptors_pass_through_the_proxy_to_getfd(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(&vm.socket, &["{dir}/p.sock"], |b, _| b);
    let client = Client::connect(&proxy.addr("p.sock")).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let ret = client
        .call(
            Call::new("getfd")
                .arg("fdname", "passed")
                .fd(std::os::fd::OwnedFd::from(file)),
        )
        .unwrap();
    assert_eq!(ret, json!({}));
    // QEMU holds it now: it can close it once, by name.
    client
        .execute("closefd", json!({"fdname": "passed"}))
        .unwrap();
    let e = client
        .execute("closefd", json!({"fdname": "passed"}))
        .unwrap_err();
    assert_eq!(e.qmp().unwrap().class, "GenericError");
    // Without a descriptor, QEMU says so: the fd above really travelled.
    let e = client
        .execute("getfd", json!({"fdname": "none"}))
        .unwrap_err();
    assert!(e.qmp().unwrap().desc.contains("SCM_RIGHTS"), "{e}");
}
per_qemu!(
    #[test]
    file_descriptors_pass_through_the_proxy_to_getfd
);

fn oob_goes_through_and_one_clients_garbage_never_reaches_qemu(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(&vm.socket, &["{dir}/p.sock"], |b, _| b);
    let path = proxy.path("p.sock");
    let mut oob = raw_negotiated(&path, true);
    oob.stream
        .write_all(br#"{"exec-oob": "query-yank", "id": "y"}"#)
        .unwrap();
    let reply = oob.read_n(1);
    assert!(
        reply[0].starts_with(r#"{"return": ["#) && reply[0].ends_with(r#""id": "y"}"#),
        "{reply:?}"
    );
    // Sent straight to QEMU 7.2 with oob on, a flood of parse errors makes
    // it abort; through the proxy, the sender's own session answers them.
    let mut garbage = raw_negotiated(&path, true);
    let deep = "[".repeat(2000);
    for _ in 0..20 {
        garbage.stream.write_all(deep.as_bytes()).unwrap();
        garbage.stream.write_all(b"\x01").unwrap();
    }
    garbage
        .stream
        .write_all(b"}}}\xff{\"execute\": \"query-status\", \"id\": \"after\"}")
        .unwrap();
    let answers = garbage.read_until("\"after\"");
    assert!(answers.len() > 20, "{}", answers.len());
    assert!(
        answers[0].contains("JSON nesting depth limit exceeded"),
        "{answers:?}"
    );
    let ours = Client::connect(&proxy.addr("p.sock")).unwrap();
    assert_eq!(
        ours.execute("query-status", json!({})).unwrap()["status"],
        "prelaunch"
    );
}
per_qemu!(
    #[test]
    oob_goes_through_and_one_clients_garbage_never_reaches_qemu
);

fn a_client_that_leaves_mid_command_costs_the_others_nothing(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let proxy = TestProxy::start(&qsd.socket, &["{dir}/p.sock"], |b, dir| {
        b.audit(dir.join("audit.log"))
    });
    let path = proxy.path("p.sock");
    let mut leaver = raw_negotiated(&path, true);
    let mut stayer = raw_negotiated(&path, true);
    qsd.signal(Signal::SIGSTOP);
    leaver
        .stream
        .write_all(br#"{"execute": "query-jobs", "id": 1}"#)
        .unwrap();
    stayer
        .stream
        .write_all(br#"{"execute": "query-version", "id": 1}"#)
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(leaver);
    std::thread::sleep(Duration::from_millis(100));
    qsd.signal(Signal::SIGCONT);
    let reply = stayer.read_n(1);
    assert!(reply[0].starts_with(r#"{"return": {"qemu": "#), "{reply:?}");
    assert!(reply[0].ends_with(r#""id": 1}"#), "{reply:?}");
    // The command of the client that left still ran, and was logged.
    let deadline = Instant::now() + QUIET;
    loop {
        let log = std::fs::read_to_string(proxy.path("audit.log")).unwrap_or_default();
        if log.contains("\"query-jobs\"") {
            assert!(log
                .lines()
                .any(|l| l.contains("\"query-jobs\"") && l.contains("\"return\"")));
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
per_qemu!(
    #[test]
    a_client_that_leaves_mid_command_costs_the_others_nothing
);

/// What the held upstream saw.
#[derive(Default)]
struct Held {
    /// `work` requests in the order they arrived: (client, n).
    arrivals: Vec<(u64, u64)>,
    /// Ids of requests not answered yet, oldest first.
    pending: std::collections::VecDeque<Value>,
    most_pending: usize,
    answering: bool,
}

/// A fake QEMU, for what a real one cannot do: hold every reply until the
/// test says, and count exactly what is in flight. It offers oob, has one
/// command `work`, and once released answers the oldest request every
/// 20 ms (long enough for the proxy's sessions to queue their next one).
fn held_upstream(path: &Path) -> HeldUpstream {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let shared = Arc::new((Mutex::new(Held::default()), Condvar::new()));
    let state = shared.clone();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        out.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n").unwrap();
        let answers = out.try_clone().unwrap();
        let answering = state.clone();
        std::thread::spawn(move || {
            let mut answers = answers;
            let (lock, ready) = &*answering;
            loop {
                let id = {
                    let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while !held.answering || held.pending.is_empty() {
                        held = ready.wait(held).unwrap_or_else(|e| e.into_inner());
                    }
                    held.pending.pop_front().unwrap()
                };
                std::thread::sleep(Duration::from_millis(20));
                let reply = json!({"return": {}, "id": id}).to_string() + "\r\n";
                if answers.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let request: Value = serde_json::from_str(&line).unwrap();
            let id = request["id"].clone();
            let ret = match request["execute"].as_str() {
                Some("query-qmp-schema") => {
                    json!([{"name": "work", "meta-type": "command", "allow-oob": false}])
                }
                Some("work") => {
                    let (lock, ready) = &*state;
                    let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let args = &request["arguments"];
                    let who = (
                        args["client"].as_u64().unwrap(),
                        args["n"].as_u64().unwrap(),
                    );
                    held.arrivals.push(who);
                    held.pending.push_back(id);
                    held.most_pending = held.most_pending.max(held.pending.len());
                    ready.notify_all();
                    continue;
                }
                _ => json!({}),
            };
            let reply = json!({"return": ret, "id": id}).to_string() + "\r\n";
            out.write_all(reply.as_bytes()).unwrap();
        }
        // The proxy hung up: hang up too, as QEMU does.
        let _ = out.shutdown(std::net::Shutdown::Both);
    });
    HeldUpstream(shared)
}

struct HeldUpstream(Arc<(Mutex<Held>, Condvar)>);

impl HeldUpstream {
    fn release(&self) {
        let (lock, ready) = &*self.0;
        lock.lock().unwrap_or_else(|e| e.into_inner()).answering = true;
        ready.notify_all();
    }
}

/// Releases the replies however the test ends, so that a failed assertion
/// fails the test instead of leaving the proxy waiting for them.
struct ReleaseOnDrop<'a>(&'a HeldUpstream);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[test]
fn ten_busy_clients_share_qemus_eight_places_round_robin() {
    let dir = qmp_testkit::test_dir();
    let upstream = dir.path().join("held.sock");
    let held = held_upstream(&upstream);
    let proxy = TestProxy::start(&upstream, &["{dir}/p.sock"], |b, _| b);
    let _release = ReleaseOnDrop(&held);
    // Ten clients each send five requests at once.
    let mut clients: Vec<RawPeer> = (0..10u64)
        .map(|c| {
            let mut peer = raw_negotiated(&proxy.path("p.sock"), true);
            let burst: String = (0..5)
                .map(|n| {
                    json!({"execute": "work", "arguments": {"client": c, "n": n}, "id": n})
                        .to_string()
                })
                .collect();
            peer.stream.write_all(burst.as_bytes()).unwrap();
            peer
        })
        .collect();
    let lock = &held.0 .0;
    let arrived = |n: usize| {
        let deadline = Instant::now() + QUIET;
        while lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .arrivals
            .len()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "only {:?}",
                lock.lock().unwrap_or_else(|e| e.into_inner()).arrivals
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // QEMU's in-band queue holds eight: no more are sent while it is full,
    // and they are eight different clients' (each client's own commands
    // run one at a time, as with QEMU).
    arrived(8);
    // (long enough, on a loaded machine, for the proxy to have read the
    // last two clients' first requests too: round robin is about them)
    std::thread::sleep(Duration::from_millis(500));
    {
        let held = lock.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(held.arrivals.len(), 8, "{:?}", held.arrivals);
        let mut first: Vec<u64> = held.arrivals.iter().map(|a| a.0).collect();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 8, "{:?}", held.arrivals);
    }
    held.release();
    for (c, client) in clients.iter_mut().enumerate() {
        let replies = client.read_n(5);
        let want: Vec<String> = (0..5)
            .map(|n| format!(r#"{{"return": {{}}, "id": {n}}}"#))
            .collect();
        assert_eq!(replies, want, "client {c}");
    }
    arrived(50);
    let held = lock.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(held.most_pending, 8);
    // Round robin: however far the queue is, no client is ever more than
    // one request ahead of another that still had requests waiting.
    let mut count = [0u64; 10];
    for (i, &(c, n)) in held.arrivals.iter().enumerate() {
        assert_eq!(n, count[c as usize], "client {c} out of order");
        count[c as usize] += 1;
        let (most, least) = (count.iter().max().unwrap(), count.iter().min().unwrap());
        assert!(
            most - least <= 1,
            "after {} arrivals: {count:?}\n{:?}",
            i + 1,
            held.arrivals
        );
    }
}

fn open_fd(path: &Path) -> std::os::fd::OwnedFd {
    std::os::fd::OwnedFd::from(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap(),
    )
}

/// Security: a read-only client attaches a descriptor to an allowed
/// command. Straight to QEMU it would wait there for the next command that
/// takes one, whoever sends it; the proxy closes it instead, so a
/// privileged client's `getfd` without a descriptor is refused, not handed
/// the attacker's file.
fn a_descriptor_sent_with_another_command_never_reaches_qemu(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(
        &vm.socket,
        &["{dir}/rw.sock", "{dir}/ro.sock,policy=read-only"],
        |b, _| b,
    );
    let attacker = Client::connect(&proxy.addr("ro.sock")).unwrap();
    let planted = proxy.path("planted");
    attacker
        .call(Call::new("query-version").fd(open_fd(&planted)))
        .unwrap();
    // and with a command the policy refuses
    let e = attacker
        .call(
            Call::new("getfd")
                .arg("fdname", "mine")
                .fd(open_fd(&planted)),
        )
        .unwrap_err();
    assert_eq!(e.qmp().unwrap().class, "CommandNotFound", "{e}");
    let admin = Client::connect(&proxy.addr("rw.sock")).unwrap();
    let e = admin
        .execute("getfd", json!({"fdname": "victim"}))
        .unwrap_err();
    assert!(e.qmp().unwrap().desc.contains("SCM_RIGHTS"), "{e}");
    // QEMU holds no descriptor of the planted file
    let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/fd", vm.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .collect();
    assert!(!held.contains(&planted), "{held:?}");
}
per_qemu!(
    #[test]
    a_descriptor_sent_with_another_command_never_reaches_qemu
);

/// Security: two privileged clients pass descriptors at once, many times.
/// Each `add-fd` must get the file its own client sent, never the other's
/// (QEMU reads ahead, so without the proxy's one-at-a-time turn a
/// descriptor sent a moment later can take the place of one not yet used).
fn concurrent_add_fd_calls_each_get_their_own_clients_file(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(&vm.socket, &["{dir}/p.sock"], |b, _| b);
    let run = |name: &'static str| {
        let addr = proxy.addr("p.sock");
        let file = proxy.path(name);
        let vm_pid = vm.pid();
        std::thread::spawn(move || {
            let client = Client::connect(&addr).unwrap();
            let mut wrong = Vec::new();
            for _ in 0..60 {
                let ret = client.call(Call::new("add-fd").fd(open_fd(&file))).unwrap();
                let fd = ret["fd"].as_u64().unwrap();
                let got = std::fs::read_link(format!("/proc/{vm_pid}/fd/{fd}")).unwrap();
                if got != file {
                    wrong.push(got);
                }
            }
            wrong
        })
    };
    let (a, b) = (run("file-a"), run("file-b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!(a.is_empty() && b.is_empty(), "swapped: {a:?} {b:?}");
    // and the fdsets hold 120 descriptors in all
    let client = Client::connect(&proxy.addr("p.sock")).unwrap();
    let sets = client.execute("query-fdsets", json!({})).unwrap();
    let fds: usize = sets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fds"].as_array().unwrap().len())
        .sum();
    assert_eq!(fds, 120);
}
per_qemu!(
    #[test]
    concurrent_add_fd_calls_each_get_their_own_clients_file
);

/// Security (a QEMU's reply must not end the proxy): a 140-image qcow2
/// backing chain makes `query-named-block-nodes` nest about 146 levels.
/// Asked on a read-only listener, the reply reaches the client whole, and
/// every client stays connected.
fn a_deeply_nested_reply_reaches_a_read_only_client(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qsd.dir().to_owned();
    let mut previous: Option<PathBuf> = None;
    for n in 0..140 {
        let image = dir.join(format!("chain{n}.qcow2"));
        let mut c = Command::new("qemu-img");
        c.args(["create", "-q", "-f", "qcow2"]);
        if let Some(p) = &previous {
            // -u: do not open the chain below (quadratic otherwise)
            c.arg("-u").arg("-F").arg("qcow2").arg("-b").arg(p);
        }
        let ok = c
            .arg(&image)
            .arg("1M")
            .status()
            .expect("qemu-img (qemu-utils)");
        assert!(ok.success());
        previous = Some(image);
    }
    let proxy = TestProxy::start(
        &qsd.socket,
        &["{dir}/rw.sock", "{dir}/ro.sock,policy=read-only"],
        |b, _| b,
    );
    let admin = Client::connect(&proxy.addr("rw.sock")).unwrap();
    admin
        .execute(
            "blockdev-add",
            json!({"driver": "qcow2", "node-name": "top",
                   "file": {"driver": "file", "filename": previous.unwrap()}}),
        )
        .unwrap();
    let reader = Client::connect(&proxy.addr("ro.sock")).unwrap();
    let nodes = reader
        .execute("query-named-block-nodes", json!({}))
        .unwrap();
    let top = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == "top")
        .expect("the top node");
    let mut depth = 0;
    let mut image = &top["image"];
    while !image["backing-image"].is_null() {
        depth += 1;
        image = &image["backing-image"];
    }
    assert_eq!(depth, 139);
    // nobody was cut off
    for c in [&admin, &reader] {
        assert!(c.execute("query-version", json!({})).is_ok());
    }
}
per_qemu!(
    #[test]
    a_deeply_nested_reply_reaches_a_read_only_client
);

/// Security: what `transaction` and `human-monitor-command` carry is
/// checked by the policy too. With `transaction` allowed and
/// `block-dirty-bitmap-*` denied, a transaction cannot add a bitmap; with
/// only `hmp:info *` allowed of HMP, `quit` through HMP (however spaced) is
/// refused and QEMU stays up.
fn the_policy_applies_to_transaction_actions_and_hmp_lines(v: QemuVersion) {
    let vm = Qemu::system(v);
    let proxy = TestProxy::start(
        &vm.socket,
        &["{dir}/admin.sock", "{dir}/ops.sock,policy=ops"],
        with_policies("[policy.ops]\nallow = [\"transaction\", \"query-*\", \"human-monitor-command\", \"hmp:info *\"]\n"),
    );
    let admin = Client::connect(&proxy.addr("admin.sock")).unwrap();
    admin
        .execute(
            "blockdev-add",
            json!({"driver": "null-co", "node-name": "disk0"}),
        )
        .unwrap();
    let ops = Client::connect(&proxy.addr("ops.sock")).unwrap();
    let e = ops
        .execute(
            "transaction",
            json!({"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "b0"}}
            ]}),
        )
        .unwrap_err();
    assert_eq!(
        e.qmp().unwrap().desc,
        "The transaction action block-dirty-bitmap-add is not permitted by the proxy's policy 'ops'"
    );
    let nodes = admin
        .execute("query-named-block-nodes", json!({"flat": true}))
        .unwrap();
    let disk = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == "disk0")
        .unwrap();
    assert!(
        disk["dirty-bitmaps"]
            .as_array()
            .is_none_or(|b| b.is_empty()),
        "{disk}"
    );
    for line in ["quit", "  quit ", "\tquit\n", "system_reset"] {
        let e = ops
            .execute("human-monitor-command", json!({"command-line": line}))
            .unwrap_err();
        assert!(
            e.qmp().unwrap().desc.starts_with("The HMP command '"),
            "{line:?}: {e}"
        );
    }
    let status = ops
        .execute(
            "human-monitor-command",
            json!({"command-line": "info  status"}),
        )
        .unwrap();
    assert!(status.as_str().unwrap().contains("VM status"), "{status}");
    assert!(
        admin.execute("query-status", json!({})).is_ok(),
        "QEMU is up"
    );
    // the same transaction from the admin listener runs
    admin
        .execute(
            "transaction",
            json!({"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "b0"}}
            ]}),
        )
        .unwrap();
}
per_qemu!(
    #[test]
    the_policy_applies_to_transaction_actions_and_hmp_lines
);

/// Security: the audit log is created 0600 whatever the umask, keeps its
/// lines small whatever a client sends, and with strict auditing a command
/// that cannot be logged is not run (`/dev/full` fails every write).
fn the_audit_log_is_private_small_and_can_fail_closed(v: QemuVersion) {
    use std::os::unix::fs::PermissionsExt;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let qsd = Qemu::storage_daemon(v);
    let proxy = TestProxy::start(
        &qsd.socket,
        &["{dir}/p.sock", "{dir}/ro.sock,policy=read-only"],
        |b, dir| b.audit(dir.join("audit.log")),
    );
    let ro = Client::connect(&proxy.addr("ro.sock")).unwrap();
    let huge = "x".repeat(5 << 20);
    for _ in 0..3 {
        let e = ro
            .execute(
                "blockdev-add",
                json!({"driver": "null-co", "node-name": huge}),
            )
            .unwrap_err();
        assert_eq!(e.qmp().unwrap().class, "CommandNotFound");
    }
    let log = proxy.path("audit.log");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        assert!(line.len() < 1024, "{} bytes", line.len());
        let entry: Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["outcome"], "denied");
        let shown = entry["arguments"]["node-name"].as_str().unwrap();
        assert!(shown.ends_with("... (5242880 bytes)"), "{line}");
    }
    drop(proxy);

    // fail-closed: nothing runs unlogged
    let strict = TestProxy::start(&qsd.socket, &["{dir}/s.sock"], |b, _| {
        b.audit("/dev/full").audit_strict(true)
    });
    let c = Client::connect(&strict.addr("s.sock")).unwrap();
    let e = c
        .execute(
            "blockdev-add",
            json!({"driver": "null-co", "node-name": "unlogged"}),
        )
        .unwrap_err();
    assert!(
        e.qmp()
            .unwrap()
            .desc
            .starts_with("The proxy cannot write its audit log"),
        "{e}"
    );
    drop(c);
    drop(strict);
    // without strict the same command runs (and the log error is only logged)
    let lax = TestProxy::start(&qsd.socket, &["{dir}/l.sock"], |b, _| b.audit("/dev/full"));
    let c = Client::connect(&lax.addr("l.sock")).unwrap();
    let nodes = c.execute("query-named-block-nodes", json!({})).unwrap();
    assert!(
        !nodes.to_string().contains("unlogged"),
        "the refused command never reached QEMU"
    );
    c.execute(
        "blockdev-add",
        json!({"driver": "null-co", "node-name": "logged"}),
    )
    .unwrap();
}
per_qemu!(
    #[test]
    the_audit_log_is_private_small_and_can_fail_closed
);

/// A restricted listener's `query-qmp-schema`, like its `query-commands`,
/// shows only the commands it may run and the events it delivers.
fn a_restricted_listener_sees_only_its_own_commands_in_the_schema(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let proxy = TestProxy::start(
        &qsd.socket,
        &["{dir}/rw.sock", "{dir}/ro.sock,policy=watch"],
        with_policies("[policy.watch]\npreset = \"read-only\"\nevents = [\"JOB_STATUS_CHANGE\"]\n"),
    );
    let names = |sock: &str, meta: &str| -> Vec<String> {
        let c = Client::connect(&proxy.addr(sock)).unwrap();
        c.execute("query-qmp-schema", json!({}))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["meta-type"] == meta)
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = names("rw.sock", "command");
    let mine = names("ro.sock", "command");
    assert!(all.iter().any(|c| c == "blockdev-add"));
    assert!(!mine.iter().any(|c| c == "blockdev-add"), "{mine:?}");
    assert!(mine.iter().any(|c| c == "query-version"));
    let read_only = |c: &String| {
        ["query-", "x-query-", "qom-", "device-list-"]
            .iter()
            .any(|p| c.starts_with(p))
    };
    assert!(mine.iter().all(read_only), "{mine:?}");
    assert!(names("rw.sock", "event").len() > 5);
    assert_eq!(names("ro.sock", "event"), ["JOB_STATUS_CHANGE"]);
}
per_qemu!(
    #[test]
    a_restricted_listener_sees_only_its_own_commands_in_the_schema
);
