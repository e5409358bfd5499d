//! `qmp proxy` as a command: options, a policy file, the audit log, logs
//! on stderr, SIGTERM, and clear errors for bad configuration; and its
//! recording side: `qmp record`, `qmp replay`, `qmp transcript`.

use qmp_testkit::{per_qemu, Qemu, QemuVersion, Started};
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn qmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(args)
        .output()
        .expect("qmp runs")
}

/// `qmp record` from the daemon's monitor to `{dir}/rec.sock`, writing
/// `{dir}/t.qmp`; listening by the time this returns.
fn start_recorder(qsd: &Qemu, dir: &std::path::Path) -> Started {
    let at = |name: &str| dir.join(name).display().to_string();
    let recorder = Started(
        Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(["record", "--upstream", &qsd.address()])
            .args(["--listen", &at("rec.sock"), "--out", &at("t.qmp")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    qmp_testkit::wait_listening(&dir.join("rec.sock"));
    recorder
}

fn proxy_serves_two_listeners_with_a_policy_file_and_stops_on_sigterm(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        at("policy.toml"),
        "[policy.jobs]\nallow = [\"query-*\", \"job-*\"]\ndeny = [\"query-qmp-schema\"]\n",
    )
    .unwrap();
    let mut proxy = Started(
        Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(["proxy", "--upstream", &qsd.address()])
            .args(["--listen", &at("all.sock")])
            .args([
                "--listen",
                &format!("{},policy=jobs,mode=0660", at("jobs.sock")),
            ])
            .args(["--policy", &at("policy.toml"), "--audit", &at("audit.log")])
            .env_remove("QMP_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    qmp_testkit::wait_listening(&dir.path().join("jobs.sock"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |name: &str| std::fs::metadata(at(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("all.sock"), mode("jobs.sock")), (0o600, 0o660));

    let out = qmp(&["-s", &at("jobs.sock"), "query-jobs"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = qmp(&["-s", &at("jobs.sock"), "query-qmp-schema"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: CommandNotFound: The command query-qmp-schema is not permitted by the proxy's policy 'jobs'"
    );
    let out = qmp(&["-s", &at("all.sock"), "query-qmp-schema"]);
    assert!(out.status.success());

    sigterm(&proxy.0);
    let status = proxy.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !dir.path().join("all.sock").exists(),
        "socket files are removed"
    );
    let mut log = String::new();
    proxy
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("client 1 connected on"), "{log}");
    assert!(log.contains("upstream QEMU"), "{log}");
    assert!(!log.contains('\x1b'), "no colours into a pipe: {log}");
    let audit = std::fs::read_to_string(at("audit.log")).unwrap();
    let outcomes: Vec<&str> = audit
        .lines()
        .map(|l| {
            if l.contains("\"denied\"") {
                "denied"
            } else {
                "return"
            }
        })
        .collect();
    assert_eq!(outcomes, ["return", "denied", "return"]);
}
per_qemu!(
    #[test]
    proxy_serves_two_listeners_with_a_policy_file_and_stops_on_sigterm
);

#[test]
fn bad_configuration_is_one_clear_line_and_exit_2() {
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(at("bad.toml"), "[policy.x]\nallow = \"query-*\"\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--listen", "/nonexistent/dir/p.sock"],
            "cannot listen on /nonexistent/dir/p.sock",
        ),
        (&["--listen", "PATH,policy=nope"], "no policy named 'nope'"),
        (
            &["--listen", "PATH,colour=blue"],
            "unknown listener option 'colour=blue'",
        ),
        (&["--listen", "PATH", "--policy", "BAD"], "bad.toml"),
    ];
    for (args, expected) in cases {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("PATH", &at("p.sock"))
                    .replace("BAD", &at("bad.toml"))
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(["proxy", "--upstream", &at("nothing.sock")])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // No QEMU there: said at once, not retried.
    let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args([
            "proxy",
            "--upstream",
            &at("nothing.sock"),
            "--listen",
            &at("p.sock"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach QEMU at"), "{err}");
}

fn record_then_replay_from_the_command_line(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let mut recorder = start_recorder(&qsd, dir.path());
    let script = |sock: &str| -> Vec<String> {
        [
            &["query-jobs"][..],
            &["blockdev-del", "node-name=nope"],
            &["query-version"],
        ]
        .iter()
        .map(|args| {
            let mut all = vec!["-s", sock];
            all.extend_from_slice(args);
            let out = qmp(&all);
            format!(
                "{:?} {} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
        .collect()
    };
    let real = script(&at("rec.sock"));
    sigterm(&recorder.0);
    assert!(recorder.0.wait().unwrap().success());
    assert_eq!(
        real[1],
        "Some(1)  error: GenericError: Failed to find node with node-name='nope'"
    );

    // Each `qmp` run is a client of its own, and the replay ends when the
    // last client leaves: one idle connection keeps it up meanwhile.
    let replay = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["replay", &at("t.qmp"), "--listen", &at("rp.sock")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&dir.path().join("rp.sock"));
    let keeper = std::os::unix::net::UnixStream::connect(dir.path().join("rp.sock")).unwrap();
    assert_eq!(script(&at("rp.sock")), real);
    drop(keeper);
    let out = replay.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains("replay: 3 matched, 0 mismatched, 0 unused"),
        "{summary}"
    );
}
per_qemu!(
    #[test]
    record_then_replay_from_the_command_line
);

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn transcript_show_normalize_and_check_from_the_command_line(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let mut recorder = start_recorder(&qsd, dir.path());
    assert!(qmp(&["-s", &at("rec.sock"), "query-jobs"]).status.success());
    let refused = qmp(&[
        "-s",
        &at("rec.sock"),
        "blockdev-del",
        "node-name=x",
        "foo=1",
    ]);
    let qemu_says = String::from_utf8_lossy(&refused.stderr)
        .trim()
        .strip_prefix("error: ")
        .unwrap()
        .to_owned();
    assert!(qemu_says.starts_with("GenericError: "), "{qemu_says}");
    sigterm(&recorder.0);
    assert!(recorder.0.wait().unwrap().success());
    let schema = qmp(&["-s", &qsd.address(), "schema"]);
    assert!(schema.status.success());
    std::fs::write(at("schema.json"), &schema.stdout).unwrap();

    // show: one line per message
    let shown = qmp(&["transcript", "show", &at("t.qmp")]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with(&format!("QEMU {}.", v.label())),
        "{shown}"
    );
    assert!(lines[0].ends_with(", capabilities: oob"), "{shown}");
    assert!(
        lines[1].contains("client 1  > query-jobs {}  id "),
        "{shown}"
    );
    assert!(lines[2].contains("client 1  < []  id "), "{shown}");
    assert!(
        lines[3].contains(r#"client 2  > blockdev-del {"node-name":"x","foo":1}  id "#),
        "{shown}"
    );
    assert!(
        lines[4].contains(&format!("client 2  < error {qemu_says}  id ")),
        "{shown}"
    );

    // normalize: no times, ids from 1, and normalizing again changes nothing
    let out = qmp(&["transcript", "normalize", &at("t.qmp"), "-o", &at("n.qmp")]);
    assert!(out.status.success());
    let normal = std::fs::read_to_string(at("n.qmp")).unwrap();
    assert!(!normal.contains(r#""t":"#), "{normal}");
    assert_eq!(
        normal.lines().nth(3).unwrap(),
        r#"{"client":2,"dir":"request","msg":{"arguments":{"foo":1,"node-name":"x"},"execute":"blockdev-del","id":1}}"#
    );
    let again = qmp(&["transcript", "normalize", &at("n.qmp")]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), normal);

    // check: the refused request, with QEMU's own words
    let check = |transcript: &str, schema: &str| {
        let out = qmp(&[
            "transcript",
            "check",
            &at(transcript),
            "--schema",
            &at(schema),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = check("t.qmp", "schema.json");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: line 4: blockdev-del {{\"node-name\":\"x\",\"foo\":1}}: {qemu_says} \
             (the recorded QEMU refused it the same way)\n",
            at("t.qmp")
        )
    );
    assert!(
        stderr.contains("1 of 2 requests would be refused"),
        "{stderr}"
    );
    // Without the refused exchange, the transcript is clean.
    let valid: String = std::fs::read_to_string(at("t.qmp"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("blockdev-del") && !l.contains(r#""client":2"#))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(at("valid.qmp"), valid).unwrap();
    let (code, stdout, stderr) = check("valid.qmp", "schema.json");
    assert_eq!((code, stdout.as_str()), (Some(0), ""), "{stderr}");
    assert!(
        stderr.contains("0 of 1 requests would be refused"),
        "{stderr}"
    );
    // Against a QEMU without query-jobs, that request is the problem.
    let mut schema: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(at("schema.json")).unwrap()).unwrap();
    schema.retain(|e| e["name"] != "query-jobs");
    std::fs::write(at("older.json"), serde_json::to_vec(&schema).unwrap()).unwrap();
    let (code, stdout, _) = check("valid.qmp", "older.json");
    assert_eq!(code, Some(1));
    assert!(
        stdout.ends_with(
            "line 2: query-jobs {}: CommandNotFound: The command query-jobs has not been found\n"
        ),
        "{stdout}"
    );
}
per_qemu!(
    #[test]
    transcript_show_normalize_and_check_from_the_command_line
);

/// A hand-written transcript of two exchanges.
const TWO_EXCHANGES: &str = r#"{"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}}
{"t": 0.1, "client": 1, "dir": "request", "msg": {"execute": "query-status", "id": 1}}
{"t": 0.2, "client": 1, "dir": "reply", "msg": {"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}}
{"t": 0.3, "client": 1, "dir": "request", "msg": {"execute": "stop", "id": 2}}
{"t": 0.4, "client": 1, "dir": "reply", "msg": {"return": {}, "id": 2}}
"#;

#[test]
fn replay_stops_on_sigterm_and_exchanges_left_unused_fail_it() {
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(at("two.qmp"), TWO_EXCHANGES).unwrap();
    for allow_unused in [false, true] {
        let socket = dir.path().join(format!("r-{allow_unused}.sock"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_qmp"));
        command
            .args(["replay", &at("two.qmp"), "--listen"])
            .arg(&socket);
        if allow_unused {
            command.arg("--allow-unused");
        }
        let replay = command.stderr(Stdio::piped()).spawn().unwrap();
        qmp_testkit::wait_listening(&socket);
        // A client that stays: without SIGTERM the replay would go on.
        let _stays = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let status = qmp(&["-s", &socket.display().to_string(), "query-status"]);
        assert_eq!(
            String::from_utf8_lossy(&status.stdout).trim(),
            r#"{"status":"running","singlestep":false,"running":true}"#
        );
        sigterm(&replay);
        let out = replay.wait_with_output().unwrap();
        let summary = String::from_utf8_lossy(&out.stderr);
        assert!(
            summary.contains("replay: 1 matched, 0 mismatched, 1 unused\nunused: stop {}\n"),
            "{summary}"
        );
        assert_eq!(
            out.status.code(),
            Some(if allow_unused { 0 } else { 1 }),
            "{summary}"
        );
    }
}

/// CPU time (user + system) process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // after the command name in parentheses: fields 14 and 15 are utime, stime
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of descriptors, a replay's accept fails again and again: it must
/// wait between tries, not spin (it used to take a whole core). Run with a
/// limit of 24 descriptors and 40 clients knocking.
#[test]
fn a_replay_out_of_descriptors_waits_instead_of_spinning() {
    use std::os::unix::process::CommandExt;
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(at("two.qmp"), TWO_EXCHANGES).unwrap();
    let socket = dir.path().join("r.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qmp"));
    command
        .args(["replay", &at("two.qmp"), "--listen"])
        .arg(&socket)
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 24, 24)
                .map_err(std::io::Error::from)
        });
    }
    let replay = Started(command.spawn().unwrap());
    qmp_testkit::wait_listening(&socket);
    let _knocking: Vec<_> = (0..40)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(replay.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(replay.0.id()) - before;
    // a spinning loop uses about 200 ticks in 2 s (100 per second)
    assert!(
        used < 50,
        "the replay used {used} clock ticks in 2 s while out of descriptors"
    );
}

/// A command whose reply QEMU gave an hour later.
const HOUR_LONG_REPLY: &str = r#"{"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}}
{"t": 0.1, "client": 1, "dir": "request", "msg": {"execute": "stop", "id": 1}}
{"t": 3600.1, "client": 1, "dir": "reply", "msg": {"return": {}, "id": 1}}
"#;

#[test]
fn a_realtime_replay_ends_when_its_client_leaves_during_a_recorded_delay() {
    use std::io::{BufRead, BufReader, Write};
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(at("hour.qmp"), HOUR_LONG_REPLY).unwrap();
    let socket = dir.path().join("r.sock");
    let mut replay = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["replay", &at("hour.qmp"), "--realtime", "--listen"])
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&socket);
    let client = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let mut lines = BufReader::new(client.try_clone().unwrap()).lines();
    lines.next().unwrap().unwrap(); // the greeting
    (&client)
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), r#"{"return": {}}"#);
    (&client)
        .write_all(b"{\"execute\":\"stop\",\"id\":1}\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(lines);
    drop(client);
    // Without noticing, the replay would wait out the recorded hour.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = replay.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = replay.kill();
            panic!("the replay did not end when its only client left");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = replay.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("replay: 1 matched, 0 mismatched, 0 unused"),
        "{summary}"
    );
    assert_eq!(status.code(), Some(0), "{summary}");
}

/// A transcript takes the place of an existing file only once recording
/// has started: a `qmp record` that cannot reach QEMU leaves it as it was.
/// The transcript is created mode 0600, whatever the umask.
fn record_replaces_its_file_only_once_recording_starts(v: QemuVersion) {
    use std::os::unix::fs::PermissionsExt;
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(at("t.qmp"), b"an earlier transcript\n").unwrap();
    let failed = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["record", "--upstream", &at("nobody.sock")])
        .args(["--listen", &at("rec.sock"), "--out", &at("t.qmp")])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(at("t.qmp")).unwrap(),
        "an earlier transcript\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let qsd = Qemu::storage_daemon(v);
    let mut recorder = {
        // a permissive umask for the recorder only
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let r = start_recorder(&qsd, dir.path());
        nix::sys::stat::umask(old);
        r
    };
    assert!(qmp(&["-s", &at("rec.sock"), "query-jobs"]).status.success());
    sigterm(&recorder.0);
    assert!(recorder.0.wait().unwrap().success());
    let mode = std::fs::metadata(at("t.qmp")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(at("t.qmp")).unwrap();
    assert!(text.starts_with("{\"qmp-transcript\""), "{text}");
    assert!(text.contains("query-jobs"), "{text}");
}
per_qemu!(
    #[test]
    record_replaces_its_file_only_once_recording_starts
);

use qmp_testkit::scale::{idle_connections, query_version_on_each, raise_fd_limit, rss_kib};

/// `qmp ARGS...` in the background, serving on `sock` by the time this
/// returns; stopped when dropped.
fn serving(args: &[&str], sock: &std::path::Path) -> Started {
    let started = Started(
        Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    qmp_testkit::wait_listening(sock);
    started
}

/// `qmp proxy` for `qemu`, one listener at `sock`.
fn proxy_for(qemu: &Qemu, sock: &std::path::Path) -> Started {
    let upstream = qemu.address();
    let listen = sock.display().to_string();
    serving(
        &["proxy", "--upstream", &upstream, "--listen", &listen],
        sock,
    )
}

/// The resident memory of process `pid` before and after `count`
/// clients connect to `sock`, read the greeting and leave (after a
/// warm-up of `count / 10`).
fn rss_around_passing_clients(pid: u32, sock: &std::path::Path, count: usize) -> (u64, u64) {
    let greet = || {
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"{\"QMP\""));
    };
    (0..count / 10).for_each(|_| greet());
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    (0..count).for_each(|_| greet());
    std::thread::sleep(Duration::from_millis(300));
    (before, rss_kib(pid))
}

/// Connections that come and go while QEMU sends no event cost nothing
/// once closed: 3,000 clients that read the greeting and leave grow the
/// proxy by less than 16 MiB (each used to keep its 32 KiB event buffer
/// until QEMU's next event: about 100 MiB here).
fn closed_connections_leave_nothing_behind_in_the_proxy(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("p.sock");
    let proxy = proxy_for(&qsd, &sock);
    let (before, after) = rss_around_passing_clients(proxy.0.id(), &sock, 3000);
    eprintln!("proxy RSS after 3,000 closed connections: {before} -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "the proxy grew from {before} KiB to {after} KiB"
    );
}
per_qemu!(
    #[test]
    closed_connections_leave_nothing_behind_in_the_proxy
);

/// The same for the server framework (here `qmp demo`): 20,000 clients
/// that come and go leave it less than 8 MiB larger (it used to keep an
/// entry for every client it ever had: about 30 MiB here).
#[test]
fn closed_connections_leave_nothing_behind_in_the_server() {
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("demo.sock");
    let demo = serving(&["demo", "--listen", &sock.display().to_string()], &sock);
    let (before, after) = rss_around_passing_clients(demo.0.id(), &sock, 20_000);
    eprintln!("server RSS after 20,000 closed connections: {before} -> {after} KiB");
    assert!(
        after < before + 8 * 1024,
        "the server grew from {before} KiB to {after} KiB"
    );
}

/// How many clients the scale tests connect at once.
const AT_ONCE: usize = 10_000;

/// Holds [`AT_ONCE`] negotiated connections to `sock` (served by process
/// `pid`), twice: checks that each connection costs under 16 KiB of the
/// process, that with all of them open one command from each is answered,
/// and that the second round, after the first closed, grows it by less
/// than a tenth of the first (memory is reused, not kept).
fn ten_thousand_at_once(pid: u32, sock: &std::path::Path) {
    let start = rss_kib(pid);
    let mut peak = 0;
    for round in 0..2 {
        let began = std::time::Instant::now();
        let mut clients = idle_connections(sock, AT_ONCE);
        let connected = began.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        let idle = rss_kib(pid);
        let replies = query_version_on_each(&mut clients).unwrap();
        for (i, reply) in replies.iter().enumerate() {
            assert!(
                reply.contains("\"qemu\"") && reply.contains(&format!("\"id\": {i}}}")),
                "{reply}"
            );
        }
        let served = rss_kib(pid);
        drop(clients);
        std::thread::sleep(Duration::from_millis(300));
        let closed = rss_kib(pid);
        eprintln!(
            "round {round}: {AT_ONCE} connections in {connected:?}; RSS {start} KiB at first, \
             {idle} KiB with them idle, {served} KiB after a command each, {closed} KiB once closed"
        );
        if round == 0 {
            let per_connection = idle.saturating_sub(start) as f64 / AT_ONCE as f64;
            peak = served;
            assert!(
                per_connection < 16.0,
                "{per_connection:.1} KiB per idle connection"
            );
        } else {
            assert!(
                served < peak + (peak - start) / 10,
                "the second round grew the process from {peak} KiB to {served} KiB"
            );
        }
    }
}

/// Scale: 10,000 clients at once on one proxy (whose QEMU serves their
/// commands one at a time), then on one server (`qmp demo`). See
/// [`ten_thousand_at_once`]. One QEMU version only: the figures are the
/// proxy's, and three runs would triple the time.
#[test]
fn ten_thousand_clients_at_once_on_the_proxy_and_the_server_on_10_0_only_for_time() {
    raise_fd_limit(AT_ONCE as u64 + 1000);
    let qsd = Qemu::storage_daemon(QemuVersion::V10_0);
    let dir = qmp_testkit::test_dir();
    let proxy_sock = dir.path().join("p.sock");
    let proxy = proxy_for(&qsd, &proxy_sock);
    ten_thousand_at_once(proxy.0.id(), &proxy_sock);
    drop(proxy);
    let demo_sock = dir.path().join("demo.sock");
    let demo = serving(
        &["demo", "--listen", &demo_sock.display().to_string()],
        &demo_sock,
    );
    ten_thousand_at_once(demo.0.id(), &demo_sock);
}

/// Scale from the other side: one process (this test) holds 10,000
/// library clients, each connected to a server (`qmp demo`) and
/// negotiated. Each costs this process under 16 KiB; all of them run a
/// command at once and get their own replies; once warmed up, another
/// round leaves the process within a tenth of a round's growth of where
/// the one before left it.
#[test]
fn ten_thousand_library_clients_in_one_process() {
    raise_fd_limit(AT_ONCE as u64 + 1000);
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("demo.sock");
    let _demo = serving(&["demo", "--listen", &sock.display().to_string()], &sock);
    let address = sock.display().to_string();
    let me = std::process::id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let start = rss_kib(me);
        let mut rounds = Vec::new();
        for round in 0..3 {
            let mut clients = Vec::with_capacity(AT_ONCE);
            for _ in 0..AT_ONCE {
                clients.push(qmp_client::Client::connect(&address).await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let idle = rss_kib(me);
            let mut replies = Vec::with_capacity(AT_ONCE);
            for (i, c) in clients.iter().enumerate() {
                let (c, call) = (
                    c.clone(),
                    qmp_client::Call::new("query-version").id(i as u64),
                );
                replies.push(tokio::spawn(async move { c.call(call).await }));
            }
            for reply in replies {
                let version = reply.await.unwrap().unwrap();
                assert!(version["qemu"]["major"].is_u64(), "{version}");
            }
            let served = rss_kib(me);
            for c in clients.drain(..) {
                c.close().await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let closed = rss_kib(me);
            eprintln!(
                "round {round}: RSS {start} KiB at first, {idle} KiB with {AT_ONCE} clients, \
                 {served} KiB after a command each, {closed} KiB once closed",
            );
            if round == 0 {
                let each = idle.saturating_sub(start) as f64 / AT_ONCE as f64;
                assert!(each < 16.0, "{each:.1} KiB per connected client");
            }
            rounds.push((served, closed));
        }
        // A leak grows the process round after round. What does not: once,
        // in whichever round the scheduler happens to have all 10,000 calls
        // in flight together, the allocator grows by what they need at once
        // (about 16 MB, 1.6 KB a call) and keeps it. So the last round may
        // not add more than half of what the process grew to in all.
        let peak = rounds.iter().map(|r| r.0).max().unwrap_or(start);
        let (kept, now) = (rounds[1].1, rounds[2].1);
        assert!(
            now < kept + (peak - start) / 2,
            "the third round left the process at {now} KiB, the second at {kept} KiB"
        );
    });
}

/// Another client is served at `sock` meanwhile: `qmp query-version`
/// succeeds.
fn assert_serves_others(sock: &std::path::Path) {
    let out = qmp(&["-s", &sock.display().to_string(), "query-version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an array of `1,` tokens that never closes, up to `limit` bytes;
/// returns how many bytes went before the server closed the connection
/// (`None` if it never did).
fn endless_array(sock: &std::path::Path, limit: usize) -> Option<usize> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(b"{\"execute\": \"qmp_capabilities\"}\n[")
        .unwrap();
    let chunk = b"1,".repeat(32 * 1024);
    let mut sent = 0;
    while sent < limit {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => return Some(sent),
        }
    }
    None
}

/// The input budget: a client whose one unfinished request grows without
/// end (millions of one-byte tokens, each costing the reader tens of
/// bytes; QEMU's own limit would let it reach 2 Mi tokens, some 150 MiB)
/// is disconnected once its input holds 16 MiB, the proxy's default, and
/// the proxy stays small and serves others.
fn a_request_that_grows_without_end_is_cut_off_at_the_input_budget(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("p.sock");
    let proxy = proxy_for(&qsd, &sock);
    let before = rss_kib(proxy.0.id());
    let sent = endless_array(&sock, 64 << 20).expect("the proxy never cut the client off");
    let after = rss_kib(proxy.0.id());
    eprintln!("cut off after {sent} bytes; RSS {before} -> {after} KiB");
    // 16 MiB of budget at tens of bytes per token: well under 4 MiB of input
    assert!(sent < 4 << 20, "took {sent} bytes");
    assert!(
        after < before + 40 * 1024,
        "grew from {before} KiB to {after} KiB"
    );
    assert_serves_others(sock.as_path());
}
per_qemu!(
    #[test]
    a_request_that_grows_without_end_is_cut_off_at_the_input_budget
);

/// Large replies left unread count by their bytes: a client that asks
/// for the schema (about 90 KiB a reply) 300 times and reads nothing is
/// held back once 1 MiB of replies waits for it (they used to be queued
/// whole: 600 grew the proxy by 55 MB, so 300 by about 27 MB), and others
/// are served meanwhile; once it reads, its replies come again.
fn unread_large_replies_are_bounded_by_bytes(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("p.sock");
    let proxy = proxy_for(&qsd, &sock);
    let before = rss_kib(proxy.0.id());
    let mut c = qmp_testkit::scale::Idle::connect(&sock).unwrap();
    c.send(&b"{\"execute\": \"query-qmp-schema\"}\n".repeat(300))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(proxy.0.id());
    eprintln!("RSS {before} -> {after} KiB with 300 schema requests sent and nothing read");
    assert!(
        after < before + 10 * 1024,
        "grew from {before} KiB to {after} KiB"
    );
    assert_serves_others(sock.as_path());
    for _ in 0..20 {
        assert!(c.reply().unwrap().starts_with("{\"return\": [{"));
    }
}
per_qemu!(
    #[test]
    unread_large_replies_are_bounded_by_bytes
);

/// A client that writes NUL bytes (one parse error each) and never reads:
/// writes until the server stops taking them for 3 seconds, or 16 MiB.
/// Returns how much was taken.
fn flood_without_reading(sock: &std::path::Path) -> (std::os::unix::net::UnixStream, usize) {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let (mut sent, mut stuck_since) = (0usize, None::<std::time::Instant>);
    while sent < 16 << 20 {
        match s.write(&chunk) {
            Ok(n) => {
                sent += n;
                stuck_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *stuck_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(3) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    (s, sent)
}

/// Backpressure: garbage from a client that never reads stops being read
/// once 1 MiB of answers waits for it, so the process stays small (it
/// grew by about 175 bytes per byte of garbage: 356 MB for 2 MB), and the
/// other clients are served all along. For the proxy and for the server
/// framework (`qmp demo`).
fn a_garbage_flood_from_a_client_that_never_reads_costs_others_nothing(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let proxy_sock = dir.path().join("p.sock");
    let demo_sock = dir.path().join("demo.sock");
    let proxy = proxy_for(&qsd, &proxy_sock);
    let demo = serving(
        &["demo", "--listen", &demo_sock.display().to_string()],
        &demo_sock,
    );
    for (sock, pid) in [(&proxy_sock, proxy.0.id()), (&demo_sock, demo.0.id())] {
        let before = rss_kib(pid);
        let (_flooder, sent) = flood_without_reading(sock);
        let after = rss_kib(pid);
        eprintln!(
            "{}: RSS {before} -> {after} KiB while a client sent {sent} bytes of garbage and read nothing",
            sock.file_name().unwrap_or_default().to_string_lossy()
        );
        assert!(
            after < before + 16 * 1024,
            "{} grew from {before} KiB to {after} KiB taking {sent} bytes of garbage",
            sock.display()
        );
        assert!(sent < 16 << 20, "it stopped reading: took {sent} bytes");
        assert_serves_others(sock.as_path());
    }
}
per_qemu!(
    #[test]
    a_garbage_flood_from_a_client_that_never_reads_costs_others_nothing
);

/// `quit` through the proxy: QEMU answers and closes its monitor at once,
/// and the answer must still reach the client before the proxy closes it
/// (it was sometimes lost: exit status 2 though QEMU had quit).
fn the_reply_to_quit_reaches_the_client_through_the_proxy(v: QemuVersion) {
    for _ in 0..8 {
        let mut qsd = Qemu::storage_daemon(v);
        let dir = qmp_testkit::test_dir();
        let sock = dir.path().join("p.sock");
        let _proxy = proxy_for(&qsd, &sock);
        let out = qmp(&["-s", &sock.display().to_string(), "quit"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{}");
        assert!(qsd.wait_exit(Duration::from_secs(5)).is_some(), "QEMU quit");
    }
}
per_qemu!(
    #[test]
    the_reply_to_quit_reaches_the_client_through_the_proxy
);

/// `qmp replay --realtime` stops on SIGTERM at once, even while a command
/// waits out its recorded duration (a minute here).
#[test]
fn realtime_replay_stops_on_sigterm_during_a_recorded_delay() {
    let dir = qmp_testkit::test_dir();
    let transcript = dir.path().join("slow.qmp");
    std::fs::write(
        &transcript,
        concat!(
            r#"{"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}, "package": ""}, "capabilities": []}}}"#,
            "\n",
            r#"{"t": 1.0, "client": 1, "dir": "request", "msg": {"execute": "stop", "id": 1}}"#,
            "\n",
            r#"{"t": 61.0, "client": 1, "dir": "reply", "msg": {"return": {}, "id": 1}}"#,
            "\n"
        ),
    )
    .unwrap();
    let socket = dir.path().join("r.sock");
    let replay = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args([
            "replay",
            &transcript.display().to_string(),
            "--realtime",
            "--listen",
        ])
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&socket);
    let address = socket.display().to_string();
    let client = std::thread::spawn(move || qmp(&["-s", &address, "--timeout", "120", "stop"]));
    std::thread::sleep(Duration::from_millis(500));
    let stopped = std::time::Instant::now();
    sigterm(&replay);
    let out = replay.wait_with_output().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "the replay took {:?} to stop",
        stopped.elapsed()
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("replay: 1 matched"), "{summary}");
    // the client was cut off, not answered
    assert_eq!(client.join().unwrap().status.code(), Some(2));
}
