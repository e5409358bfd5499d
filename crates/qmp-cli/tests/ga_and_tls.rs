//! `qmp ga` against the real qemu-ga (on the host,
//! blocked from touching it; see qmp-testkit's `agent`), and the tools
//! over TLS against a real QEMU monitor with client certificates.

use qmp_testkit::agent::GuestAgent;
use qmp_testkit::pki::Pki;
use qmp_testkit::{free_port, per_qemu, Qemu, QemuVersion, STORAGE_DAEMON};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn qmp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(args)
        .env_remove("QMP_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn qmp_ga_exec_prints_the_guest_programs_output_and_exits_with_its_status(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let s = agent.address();
    // The "guest" is this host: the same uname.
    let out = qmp(&["ga", "-s", &s, "exec", "--", "uname", "-a"]);
    let here = Command::new("uname").arg("-a").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&here.stdout));

    let out = qmp(&[
        "ga",
        "-s",
        &s,
        "exec",
        "--input",
        "in\n",
        "--",
        "sh",
        "-c",
        "cat; echo to-stderr >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "in\n");
    assert_eq!(text(&out.stderr), "to-stderr\n");

    // --timeout gives up on a program that runs on.
    let started = Instant::now();
    let out = qmp(&["ga", "-s", &s, "--timeout", "1", "exec", "--", "sleep", "5"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("still runs"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}
per_qemu!(
    #[test]
    qmp_ga_exec_prints_the_guest_programs_output_and_exits_with_its_status
);

fn qmp_ga_copies_files_both_ways_and_reports_what_the_agent_refuses(v: QemuVersion) {
    let agent = GuestAgent::start(v);
    let s = agent.address();
    let dir = agent.dir();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("here.bin"), &data).unwrap();
    let guest = dir.join("in-guest.bin").display().to_string();
    let back = dir.join("back.bin").display().to_string();
    let here = dir.join("here.bin").display().to_string();
    let out = qmp(&["ga", "-s", &s, "file", "put", &here, &guest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = qmp(&["ga", "-s", &s, "file", "get", &guest, &back]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Outside the test's directory the file system is read-only.
    let out = qmp(&[
        "ga",
        "-s",
        &s,
        "file",
        "put",
        &here,
        "/qmp-rs-must-not-exist",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );

    // Blocked: the agent's refusal, exit status 1.
    let out = qmp(&["ga", "-s", &s, "fsfreeze", "freeze"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has been disabled"),
        "{}",
        text(&out.stderr)
    );
    let out = qmp(&["ga", "-s", &s, "fsfreeze", "status"]);
    assert_eq!(text(&out.stdout), "thawed\n", "{}", text(&out.stderr));

    let out = qmp(&["ga", "-s", &s, "ping"]);
    assert!(out.status.success());
    let out = qmp(&["ga", "-s", &s, "info"]);
    assert!(
        text(&out.stdout).contains("guest-shutdown"),
        "{}",
        text(&out.stdout)
    );
    let out = qmp(&["ga", "-s", &s, "network"]);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("lo ") && l.contains("127.0.0.1/8")),
        "{}",
        text(&out.stdout)
    );
    // As JSON, the agent's reply as it sent it: its members in its order
    // (counters aside, which move between calls).
    let keys = |args: &[&str]| -> Vec<String> {
        let out = qmp(args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(
        keys(&["ga", "-s", &s, "--compact", "network"]),
        keys(&["ga", "-s", &s, "--compact", "guest-network-get-interfaces"])
    );
    // Any other command, with key=value arguments.
    let out = qmp(&["ga", "-s", &s, "--compact", "guest-get-host-name"]);
    let host = text(&Command::new("hostname").output().unwrap().stdout);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{{\"host-name\":\"{}\"}}", host.trim())
    );
}
per_qemu!(
    #[test]
    qmp_ga_copies_files_both_ways_and_reports_what_the_agent_refuses
);

fn qmp_ga_exec_ends_with_a_clear_error_when_the_agent_dies_mid_exec(v: QemuVersion) {
    let mut agent = GuestAgent::start(v);
    let s = agent.address();
    let child = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["ga", "-s", &s, "exec", "--", "sleep", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let killed = Instant::now();
    agent.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("closed") || text(&out.stderr).contains("connection"),
        "{}",
        text(&out.stderr)
    );
    assert!(killed.elapsed() < Duration::from_secs(3));
}
per_qemu!(
    #[test]
    qmp_ga_exec_ends_with_a_clear_error_when_the_agent_dies_mid_exec
);

#[test]
fn the_tools_reach_a_tls_only_monitor_with_certificates_from_options_or_the_address() {
    let pki = Pki::new(&["operator"]);
    let port = free_port();
    let _qemu = Qemu::tls_monitor(QemuVersion::V10_0, STORAGE_DAEMON, &pki, port);
    let (ca, cert, key) = (
        pki.ca_cert().display().to_string(),
        pki.file("operator-cert.pem").display().to_string(),
        pki.file("operator-key.pem").display().to_string(),
    );
    // --tls-* options make host:port TLS.
    let address = format!("localhost:{port}");
    let out = qmp(&[
        "-s",
        &address,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--compact",
        "query-version",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"major\":10"),
        "{}",
        text(&out.stdout)
    );
    // The same in the address, for a classic tool.
    let address = format!("tls:localhost:{port},{}", pki.client_options("operator"));
    let out = Command::new(env!("CARGO_BIN_EXE_qom-list"))
        .args(["-s", &address, "/objects"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Without a certificate: a clear error, exit status 2.
    let out = qmp(&[
        "-s",
        &format!("tls:localhost:{port},ca={ca}"),
        "--timeout",
        "3",
        "query-version",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("certificate"),
        "{}",
        text(&out.stderr)
    );
    // --tls-* on a unix socket is a usage error.
    let out = qmp(&["-s", "/tmp/x.sock", "--tls-ca", &ca, "query-version"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--tls-"),
        "{}",
        text(&out.stderr)
    );
}
