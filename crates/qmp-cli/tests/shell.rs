//! `qmp-shell` in pipe mode (stdin not a terminal) against real QEMU.

use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn shell(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qmp-shell"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn commands_quoting_raw_json_and_the_exit_status(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let out = shell(
        &[&qsd.address()],
        "blockdev-add driver=null-co node-name=n0 size=4096 read-zeroes=true\n\
         {\"execute\": \"query-named-block-nodes\", \"arguments\": {\"flat\": true}, \"id\": \"raw\"}\n\
         qom-get path=/chardevs property=type\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = json_lines(&out);
    assert_eq!(replies[0], json!({"return": {}}));
    assert_eq!(replies[1]["return"][0]["node-name"], "n0");
    // a raw request's own id comes back with its reply, as from QEMU
    assert_eq!(replies[1]["id"], "raw");
    assert_eq!(replies[2], json!({"return": "container"}));
    // a failure makes the exit status non-zero, and the shell goes on
    let out = shell(
        &[&qsd.address()],
        "blockdev-del node-name=nope\nquery-version\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let replies = json_lines(&out);
    assert_eq!(replies[0]["error"]["class"], "GenericError");
    assert!(replies[1]["return"]["qemu"].is_object());
    // quoting: a string with spaces reaches QEMU whole
    let out = shell(
        &[&qsd.address()],
        "blockdev-add driver=null-co node-name=\"two words\"\n",
    );
    assert_eq!(
        json_lines(&out)[0]["error"]["desc"],
        "Invalid node-name: 'two words'"
    );
}
per_qemu!(
    #[test]
    commands_quoting_raw_json_and_the_exit_status
);

fn transactions_on_one_line_and_over_several(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let out = shell(
        &["-v", &qsd.address()],
        "blockdev-add driver=null-co node-name=n0\n\
         transaction( block-dirty-bitmap-add node=n0 name=b1 ; block-dirty-bitmap-add node=n0 name=b2 )\n\
         transaction(\n\
         block-dirty-bitmap-add node=n0 name=b3\n\
         )\n\
         query-named-block-nodes flat=true\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    // with -v each request is shown before its reply
    assert_eq!(
        lines[2],
        json!({"execute": "transaction", "arguments": {"actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b1"}},
            {"type": "block-dirty-bitmap-add", "data": {"node": "n0", "name": "b2"}}]}})
    );
    assert_eq!(lines[3], json!({"return": {}}));
    assert_eq!(lines[5], json!({"return": {}}));
    let nodes = &lines[7]["return"];
    let bitmaps: Vec<&str> = nodes[0]["dirty-bitmaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for b in ["b1", "b2", "b3"] {
        assert!(bitmaps.contains(&b), "{bitmaps:?}");
    }
}
per_qemu!(
    #[test]
    transactions_on_one_line_and_over_several
);

fn hmp_mode_with_cpu_switching(v: QemuVersion) {
    let vm = Qemu::system(v);
    let out = shell(
        &["-H", &vm.address()],
        "info status\ncpu 0\ninfo registers\n\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VM status: paused (prelaunch)"), "{text}");
    assert!(text.contains("EAX="), "{text}");
    // a CPU the VM lacks is refused, and the one in use stays
    let out = shell(
        &["--hmp", &vm.address()],
        "cpu 9\ninfo registers\ninfo status\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "qmp-shell: bad CPU index 9; still using 0\n"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("EAX=") && text.contains("VM status"),
        "{text}"
    );
    // a server without HMP: one clear line
    let qsd = Qemu::storage_daemon(v);
    let out = shell(&["-H", &qsd.address()], "info status\n");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "qmp-shell: this server has no HMP (human-monitor-command)\n"
    );
}
per_qemu!(
    #[test]
    hmp_mode_with_cpu_switching
);

fn no_negotiation_logfile_and_pretty(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let log = dir.path().join("log.jsonl");
    let out = shell(
        &["-N", "-p", "-l", &log.display().to_string(), &qsd.address()],
        "query-version\nhelp\nqmp_capabilities\nquery-version\nhelp query-version\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // help says why it has nothing before negotiation, and works after
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not negotiated (-N); run qmp_capabilities"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("query-version: no arguments"), "{text}");
    assert!(
        text.contains("Expecting capabilities negotiation with 'qmp_capabilities'"),
        "{text}"
    );
    assert!(text.contains("{\n  \"return\""), "pretty: {text}");
    let logged: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 3);
    assert_eq!(
        logged[1],
        json!({"request": {"execute": "qmp_capabilities"}, "response": {"return": {}}})
    );
    assert!(qsd.socket.exists(), "the log never touches the socket");
}
per_qemu!(
    #[test]
    no_negotiation_logfile_and_pretty
);

/// Python qmp-shell's long options are taken as they are.
fn pythons_long_options(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let dir = qmp_testkit::test_dir();
    let log = dir.path().join("log.jsonl");
    let out = shell(
        &[
            "--skip-negotiation",
            "--pretty",
            "--verbose",
            "--logfile",
            &log.display().to_string(),
            &qsd.address(),
        ],
        "qmp_capabilities\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // --verbose shows the request, --pretty spreads the reply
    assert!(text.contains("\"execute\": \"qmp_capabilities\""), "{text}");
    assert!(text.contains("{\n  \"return\": {}\n}"), "{text}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}
per_qemu!(
    #[test]
    pythons_long_options
);

/// A block job's events: those before the reply of the command that
/// started it are printed before that reply, and those after the last
/// input line (`waiting`, `pending`, `concluded`) are not lost.
fn job_events_in_order_and_after_the_last_line(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let image = qsd.dir().join("new.img");
    let out = shell(
        &[&qsd.address()],
        &format!(
            "blockdev-create job-id=j0 options.driver=file options.filename={} options.size=0\n",
            image.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let status = |l: &Value| l["data"]["status"].as_str().map(str::to_owned);
    let reply = lines
        .iter()
        .position(|l| l.get("return").is_some())
        .expect("the reply");
    let created = lines
        .iter()
        .position(|l| status(l).as_deref() == Some("created"));
    let concluded = lines
        .iter()
        .position(|l| status(l).as_deref() == Some("concluded"));
    let seen: Vec<String> = lines
        .iter()
        .map(|l| status(l).unwrap_or_else(|| l.to_string()))
        .collect();
    assert!(created.is_some_and(|c| c < reply), "{seen:?}");
    assert!(concluded.is_some_and(|c| c > reply), "{seen:?}");
    assert!(image.exists());
}
per_qemu!(
    #[test]
    job_events_in_order_and_after_the_last_line
);

fn launch_starts_and_stops_qemu(v: QemuVersion) {
    let mut args = vec!["--launch".to_string(), "--".into()];
    args.extend(v.argv(qmp_testkit::STORAGE_DAEMON));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = shell(&args, "query-version\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_lines(&out)[0]["return"]["qemu"]["major"].as_u64(),
        Some(v.major_minor().0)
    );
}
per_qemu!(
    #[test]
    launch_starts_and_stops_qemu
);

#[test]
fn a_closed_connection_ends_the_shell_with_one_line() {
    let out = shell(
        &["--demo"],
        "query-status\nquit\nquery-status\nquery-status\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("closed"), "{err}");
}

/// On a terminal (`script`'s), a person who ran a failing command and
/// leaves with Ctrl-D gets exit status 0: the failures count in pipe mode
/// only.
fn ctrl_d_on_a_terminal_exits_0_after_a_failed_command(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let line = format!("{} {}", env!("CARGO_BIN_EXE_qmp-shell"), qsd.address());
    let mut script = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut keys = script.stdin.take().unwrap();
    // typed, as a person would: the command, then Ctrl-D at the next prompt
    keys.write_all(b"no-such-command\r").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    keys.write_all(b"\x04").unwrap();
    let out = script.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CommandNotFound"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    drop(keys);
}
per_qemu!(
    #[test]
    ctrl_d_on_a_terminal_exits_0_after_a_failed_command
);

/// `qmp-shell --ga` against the real qemu-ga (blocked from touching this
/// host; see qmp-testkit's `agent`).
fn qmp_shell_ga_runs_agent_commands_from_its_input(v: QemuVersion) {
    let agent = qmp_testkit::agent::GuestAgent::start(v);
    let out = shell(
        &["--ga", &agent.address()],
        "guest-ping\nguest-get-host-name\nguest-shutdown\n",
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let stdout = text(&out.stdout);
    let host = text(&Command::new("hostname").output().unwrap().stdout);
    assert!(stdout.contains("{}"), "{stdout}");
    assert!(stdout.contains(host.trim()), "{stdout}");
    assert!(
        text(&out.stderr).contains("disabled") || stdout.contains("disabled"),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed command makes the exit status 1"
    );
}
per_qemu!(
    #[test]
    qmp_shell_ga_runs_agent_commands_from_its_input
);
