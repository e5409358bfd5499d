//! `qmp proxy` as a command: options, a policy file, the audit log, logs
//! on stderr, SIGTERM, and clear errors for bad configuration.

use qmp_testkit::Qemu;
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};

fn qmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(args)
        .output()
        .expect("qmp runs")
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn proxy_serves_two_listeners_with_a_policy_file_and_stops_on_sigterm() {
    let qsd = Qemu::storage_daemon();
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        at("policy.toml"),
        "[policy.jobs]\nallow = [\"query-*\", \"job-*\"]\ndeny = [\"query-qmp-schema\"]\n",
    )
    .unwrap();
    let mut proxy = Proxy(
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

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
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

#[test]
fn record_then_replay_from_the_command_line() {
    let qsd = Qemu::storage_daemon();
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let mut recorder = Proxy(
        Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(["record", "--upstream", &qsd.address()])
            .args(["--listen", &at("rec.sock"), "--out", &at("t.qmp")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    qmp_testkit::wait_listening(&dir.path().join("rec.sock"));
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
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(recorder.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
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
