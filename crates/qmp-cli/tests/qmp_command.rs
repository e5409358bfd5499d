//! The `qmp` binary against real QEMU.

use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn qmp(address: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp"))
        .env("QMP_SOCKET", address)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run qmp")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "qmp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn shortcut_and_exec_print_the_return_value_compact_when_piped(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let a = qmp(&qsd.address(), &["qom-list", "path=/"]);
    let b = qmp(&qsd.address(), &["exec", "qom-list", "path=/"]);
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout.clone()).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "compact: one line when not a terminal"
    );
    let v = stdout_json(&a);
    assert!(v.as_array().unwrap().iter().any(|p| p["name"] == "type"));
}
per_qemu!(
    #[test]
    shortcut_and_exec_print_the_return_value_compact_when_piped
);

fn options_before_or_after_and_forced_pretty(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args([
            "query-version",
            "--pretty",
            "-s",
            &qsd.address(),
            "--timeout",
            "5",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.lines().count() > 3, "pretty spans lines: {text}");
    let v = stdout_json(&out);
    assert!(v["qemu"]["major"].as_u64().unwrap() >= 7);
    let out = qmp(&qsd.address(), &["--compact", "query-version"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}
per_qemu!(
    #[test]
    options_before_or_after_and_forced_pretty
);

fn dotted_keys_and_json_values_reach_qemu_nested(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    // dotted and plain keys mixed in any order
    let out = qmp(
        &qsd.address(),
        &[
            "blockdev-add",
            "file.driver=null-co",
            "node-name=r0",
            "file.size=4096",
            "driver=raw",
            "read-only=true",
            "file.read-zeroes=true",
        ],
    );
    assert_eq!(stdout_json(&out), json!({}));
    let nodes = stdout_json(&qmp(&qsd.address(), &["query-named-block-nodes"]));
    let r0 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node-name"] == "r0")
        .expect("r0 exists");
    assert_eq!(r0["drv"], "raw");
    assert_eq!(r0["ro"], true);
    assert_eq!(r0["image"]["backing-image"], Value::Null);
    assert_eq!(r0["image"]["virtual-size"], 4096);
    // --args with key=value added
    let out = qmp(
        &qsd.address(),
        &[
            "blockdev-add",
            "--args",
            r#"{"driver": "null-co", "size": 512}"#,
            "node-name=n1",
        ],
    );
    assert_eq!(stdout_json(&out), json!({}));
    let nodes = stdout_json(&qmp(
        &qsd.address(),
        &["query-named-block-nodes", "flat=true"],
    ));
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node-name"] == "n1"));
}
per_qemu!(
    #[test]
    dotted_keys_and_json_values_reach_qemu_nested
);

fn qmp_error_exits_1_with_class_and_desc(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let out = qmp(&qsd.address(), &["blockdev-del", "node-name=nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: GenericError: Failed to find node with node-name='nope'\n"
    );
    assert!(out.stdout.is_empty());
    let out = qmp(&qsd.address(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .starts_with("error: CommandNotFound: "));
}
per_qemu!(
    #[test]
    qmp_error_exits_1_with_class_and_desc
);

fn connection_failures_exit_2_with_one_line(v: QemuVersion) {
    let dir = qmp_testkit::test_dir();
    let missing = dir.path().join("absent.sock");
    let out = qmp(&missing.display().to_string(), &["query-version"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot connect") && err.contains("absent.sock"),
        "{err}"
    );
    // a monitor busy with another client: a timeout, not a hang
    let qsd = Qemu::storage_daemon(v);
    let _holder = std::os::unix::net::UnixStream::connect(&qsd.socket).unwrap();
    let out = qmp(&qsd.address(), &["--timeout", "0.5", "query-version"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("one client at a time"));
    // bad argument syntax
    let out = qmp(&qsd.address(), &["query-version", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
}
per_qemu!(
    #[test]
    connection_failures_exit_2_with_one_line
);

fn schema_prints_the_introspection_array(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let schema = stdout_json(&qmp(&qsd.address(), &["schema"]));
    let entries = schema.as_array().unwrap();
    assert!(entries.len() > 300);
    assert!(entries
        .iter()
        .any(|e| e["name"] == "blockdev-add" && e["meta-type"] == "command"));
}
per_qemu!(
    #[test]
    schema_prints_the_introspection_array
);

fn events_prints_json_lines_until_the_count(v: QemuVersion) {
    let vm = Qemu::system_with(v, &["-qmp", "unix:{dir}/events.sock,server=on,wait=off"]);
    let events_sock = vm.dir().join("events.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events_sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let listener = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args([
            "-s",
            &events_sock.display().to_string(),
            "events",
            "--name",
            "STOP",
            "--name",
            "RESUME",
            "--count",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until QEMU has accepted the listener's connection, then toggle
    // the run state until it has seen three events: events raised before
    // it finished negotiating are, rightly, not sent to it (N8).
    let deadline = Instant::now() + Duration::from_secs(20);
    while qmp_testkit::unix_connections(&events_sock) == 0 {
        assert!(Instant::now() < deadline, "events listener never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut listener = listener;
    let mut running = false;
    while listener.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "events listener never got 3 events"
        );
        let cmd = if running { "stop" } else { "cont" };
        assert!(qmp(&vm.address(), &[cmd]).status.success());
        running = !running;
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = listener.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    // they alternate, as the run state did
    for pair in names.windows(2) {
        assert_ne!(pair[0], pair[1], "{names:?}");
        assert!(["STOP", "RESUME"].contains(&pair[0]));
    }
    assert!(lines[0]["timestamp"]["seconds"].as_i64().unwrap() > 1_600_000_000);
}
per_qemu!(
    #[test]
    events_prints_json_lines_until_the_count
);

/// Without --count, the timeout ends the stream too, and a script can
/// tell: exit status 2 and the reason.
fn events_stops_at_the_timeout(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let started = Instant::now();
    let out = qmp(&qsd.address(), &["events", "--timeout", "0.3"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "qmp: no more events within 0.3 s (0 events)"
    );
    assert!(out.stdout.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
}
per_qemu!(
    #[test]
    events_stops_at_the_timeout
);

#[test]
fn demo_subcommand_serves_until_quit() {
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("demo.sock");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["demo", "--listen", &sock.display().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&sock);
    let address = sock.display().to_string();
    assert_eq!(
        stdout_json(&qmp(&address, &["query-status"])),
        json!({"running": false, "status": "prelaunch"})
    );
    assert!(qmp(&address, &["cont"]).status.success());
    assert_eq!(
        stdout_json(&qmp(&address, &["query-status"]))["status"],
        "running"
    );
    assert!(qmp(&address, &["quit"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = demo.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "demo did not exit after quit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!sock.exists(), "socket removed");
}

/// `--count N` is a promise a script relies on: fewer events than asked
/// for, because the timeout passed or QEMU went away, is exit status 2
/// with the reason; a timeout too large for a duration means "wait".
fn events_short_of_the_count_fail_and_huge_timeouts_are_fine(v: QemuVersion) {
    let mut qsd = Qemu::storage_daemon(v);
    let out = qmp(
        &qsd.address(),
        &["events", "--count", "2", "--timeout", "0.5"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "qmp: no more events within 0.5 s: 0 of 2 events"
    );
    // QEMU serves one client at a time: let it take the next one
    while qmp_testkit::unix_connections(&qsd.socket) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let out = qmp(&qsd.address(), &["--timeout", "1.9e19", "query-version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // QEMU goes away while the events are awaited
    while qmp_testkit::unix_connections(&qsd.socket) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let address = qsd.address();
    let waiting = std::thread::spawn(move || qmp(&address, &["events", "--count", "1"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while qmp_testkit::unix_connections(&qsd.socket) == 0 {
        assert!(Instant::now() < deadline, "events never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    // accepted; time for the greeting and the negotiation, so that QEMU
    // goes away while events are awaited, not during the handshake
    std::thread::sleep(Duration::from_millis(500));
    qsd.kill();
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // EOF, or a reset, depending on how the kernel ends the socket
    assert!(
        err.contains("closed the connection: 0 of 1 events") || err.contains("disconnected"),
        "{err}"
    );
}
per_qemu!(
    #[test]
    events_short_of_the_count_fail_and_huge_timeouts_are_fine
);

/// `-s fd:N`: the tool uses a connected socket it inherited, here fd 5
/// from the shell that started it.
fn an_inherited_socket_is_an_address(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let qmp_binary = env!("CARGO_BIN_EXE_qmp");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 5<>/dev/null; python3 -c 'import os,socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); os.dup2(s.fileno(), 5); os.set_inheritable(5, True); os.execv(sys.argv[2], [sys.argv[2], \"-s\", \"fd:5\", \"query-version\"])' {} {qmp_binary}",
            qsd.address()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(version["qemu"]["major"], v.major_minor().0);
    // an fd that is not open is a clear error
    let out = qmp(&qsd.address(), &["-s", "fd:77", "query-version"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fd:77: no such open descriptor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
per_qemu!(
    #[test]
    an_inherited_socket_is_an_address
);

/// Waits until `sock` has a client (QEMU serves one per monitor).
fn connected(sock: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while qmp_testkit::unix_connections(sock) == 0 {
        assert!(
            Instant::now() < deadline,
            "nobody connected to {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--data` filters on the event's data: of two jobs' status changes,
/// only j1's `concluded` passes.
fn events_filter_on_data(v: QemuVersion) {
    let qsd = Qemu::storage_daemon_with_second_monitor(v, "events.sock");
    let events_sock = qsd.dir().join("events.sock");
    let listener = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", &events_sock.display().to_string(), "events"])
        .args(["--name", "JOB_STATUS_CHANGE", "--data", "id=j1"])
        .args([
            "--data",
            "status=concluded",
            "--count",
            "1",
            "--timeout",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    connected(&events_sock);
    // Events raised before the listener negotiated are not sent to it
    // (N8): run the jobs again until it has seen one that passes.
    let mut listener = listener;
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        for job in [format!("j2-{round}"), "j1".to_owned()] {
            let image = qsd.dir().join(format!("{job}.img"));
            let out = qmp(
                &qsd.address(),
                &[
                    "blockdev-create",
                    &format!("job-id={job}"),
                    "options.driver=file",
                    &format!("options.filename={}", image.display()),
                    "options.size=0",
                ],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        if listener.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listener never saw j1 conclude"
        );
        assert!(qmp(&qsd.address(), &["job-dismiss", "id=j1"])
            .status
            .success());
    }
    let out = listener.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["data"], json!({"status": "concluded", "id": "j1"}));
    // a malformed --data is a usage error, before connecting
    let out = qmp(&qsd.address(), &["events", "--data", "nokey"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
}
per_qemu!(
    #[test]
    events_filter_on_data
);

/// On a terminal (here `script`'s), one line per event for people: the
/// local time to the millisecond and the name, highlighted unless
/// `NO_COLOR` is set.
fn events_on_a_terminal_are_lines_for_people(v: QemuVersion) {
    let vm = Qemu::system_with(v, &["-qmp", "unix:{dir}/events.sock,server=on,wait=off"]);
    let events_sock = vm.dir().join("events.sock");
    qmp_testkit::wait_listening(&events_sock);
    for no_color in [true, false] {
        let line = format!(
            "{} -s {} events --count 1 --timeout 20",
            env!("CARGO_BIN_EXE_qmp"),
            events_sock.display()
        );
        let mut script = Command::new("script");
        script.args(["-qec", &line, "/dev/null"]);
        script.env_remove("NO_COLOR");
        if no_color {
            script.env("NO_COLOR", "1");
        }
        let listener = script
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        connected(&events_sock);
        // Until the listener, once negotiated, has seen one (N8).
        let mut listener = listener;
        let mut running = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while listener.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no event reached the listener");
            let cmd = if running { "stop" } else { "cont" };
            assert!(qmp(&vm.address(), &[cmd]).status.success());
            running = !running;
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = listener.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.trim_end();
        let (time, rest) = line.split_once(' ').unwrap_or(("", ""));
        let shown = ["RESUME", "STOP"].map(|name| {
            if no_color {
                name.to_owned()
            } else {
                format!("\x1b[1;36m{name}\x1b[0m")
            }
        });
        assert!(shown.iter().any(|s| s == rest), "{line:?}");
        let digits: Vec<&str> = time.split([':', '.']).collect();
        assert!(
            digits.len() == 4
                && digits
                    .iter()
                    .zip([2, 2, 2, 3])
                    .all(|(d, n)| d.len() == n && d.chars().all(|c| c.is_ascii_digit())),
            "{line:?}"
        );
        while qmp_testkit::unix_connections(&events_sock) > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
per_qemu!(
    #[test]
    events_on_a_terminal_are_lines_for_people
);

/// Another client has the monitor: the tools say so at once, with exit
/// status 2, instead of after their whole timeout.
fn a_busy_monitor_is_said_at_once(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let mut holder = std::os::unix::net::UnixStream::connect(&qsd.socket).unwrap();
    let mut greeting = [0u8; 8];
    std::io::Read::read_exact(&mut holder, &mut greeting).unwrap();
    // a timeout far beyond the test's patience: only the busy check ends it
    let out = qmp(&qsd.address(), &["--timeout", "600", "query-status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("qmp: the monitor at ") && err.contains("is busy"),
        "{err}"
    );
}
per_qemu!(
    #[test]
    a_busy_monitor_is_said_at_once
);

/// `--wait` follows the job a command starts, `qmp job wait` any job: the
/// final state as JSON when piped, the job's outcome as the exit status;
/// on a terminal a progress bar.
fn jobs_are_followed_to_their_end(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let create = |id: &str, file: &std::path::Path| {
        qmp(
            &qsd.address(),
            &[
                "blockdev-create",
                &format!("job-id={id}"),
                "options.driver=file",
                &format!("options.filename={}", file.display()),
                "options.size=0",
                "--wait",
            ],
        )
    };
    let out = create("j1", &qsd.dir().join("a.img"));
    let last = stdout_json(&out);
    assert_eq!(last["id"], "j1");
    assert_eq!(last["status"], "concluded");
    assert!(last.get("error").is_none());
    // a job that fails: exit status 1 and its error
    let out = create("j2", &qsd.dir().join("no/such/dir/a.img"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: GenericError: job 'j2' failed: Could not create"),
        "{err}"
    );
    // a concluded job is waited for at once; a missing one is an error
    let out = qmp(&qsd.address(), &["job", "wait", "j1"]);
    assert_eq!(stdout_json(&out)["status"], "concluded");
    let out = qmp(&qsd.address(), &["job", "wait", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "qmp: there is no job 'nope'\n"
    );
    let out = qmp(&qsd.address(), &["query-status", "--wait"]);
    assert_eq!(out.status.code(), Some(2));
    // on a terminal: the bar, then a line for people
    let line = format!(
        "{} -s {} job wait j1",
        env!("CARGO_BIN_EXE_qmp"),
        qsd.address()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[##############################] 100%  concluded"),
        "{text:?}"
    );
    assert!(text.contains("job 'j1' concluded"), "{text:?}");
}
per_qemu!(
    #[test]
    jobs_are_followed_to_their_end
);
