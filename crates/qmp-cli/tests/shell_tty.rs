//! `qmp-shell` on a terminal: driven in a tmux pane against
//! qemu-system-x86_64, with a second monitor to cause events.

use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    server: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.server)
            .args(args)
            .output()
            .expect("tmux (.ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "shell"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "shell"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Ctrl-C, then the fresh prompt: keys typed before it is up could
    /// reach the terminal between two lines and be lost.
    fn interrupt(&self) {
        self.keys(&["C-c"]);
        self.wait_for("a fresh prompt", |s| {
            s.lines()
                .rfind(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_end() == "(QEMU)")
        });
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "waited for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `qmp-shell ADDRESS` in a fresh tmux server, its history in `state`,
/// its pane kept after it exits; waits for the prompt and returns the
/// screen then.
fn open_shell(args: &str, tag: &str, state: &std::path::Path) -> (Tmux, String) {
    let tmux = Tmux {
        server: format!("qmp-shell-test-{tag}-{}", std::process::id()),
    };
    // HOME too: the shell looks there for Python qmp-shell's history
    let command = format!(
        "env XDG_STATE_HOME={0} HOME={0} {1} {args}",
        state.display(),
        env!("CARGO_BIN_EXE_qmp-shell")
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "shell",
        "-x",
        "160",
        "-y",
        "40",
        &command,
    ]);
    // keep the pane (and its last words) after the shell exits
    tmux.run(&["set-window-option", "-t", "shell", "remain-on-exit", "on"]);
    // (tmux trims the prompt's trailing space)
    let screen = tmux.wait_for("the prompt", |s| s.contains("(QEMU)"));
    (tmux, screen)
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn completion_events_while_typing_ctrl_c_and_the_server_going_away(v: QemuVersion) {
    let mut vm = Qemu::system_with(v, &["-qmp", "unix:{dir}/events.sock,server=on,wait=off"]);
    let second = vm.dir().join("events.sock").display().to_string();
    let state = qmp_testkit::test_dir();
    let (tmux, s) = open_shell(&vm.address(), "vm", state.path());
    assert!(
        s.contains("Welcome to the QMP shell. Connected to QEMU"),
        "{s}"
    );

    // completion of a command name from the live schema
    tmux.keys(&["query-statu", "Tab"]);
    tmux.wait_for("completion", |s| s.contains("(QEMU) query-status"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the reply", |s| s.contains("\"status\":\"prelaunch\""));

    // an event arrives while a line is half typed: printed at once, and
    // the typed text is still there
    tmux.keys(&["query-na"]);
    tmux.wait_for("typed text", |s| {
        s.lines().any(|l| l.ends_with("(QEMU) query-na"))
    });
    let cont = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", &second, "cont"])
        .output()
        .unwrap();
    assert!(cont.status.success());
    let s = tmux.wait_for("the event", |s| s.contains("\"event\":\"RESUME\""));
    assert!(
        last_line(&s).ends_with("(QEMU) query-na"),
        "line kept:\n{s}"
    );
    tmux.keys(&["me", "Enter"]);
    tmux.wait_for("query-name's reply", |s| s.contains("{\"return\":{}}"));

    // Ctrl-C drops the line
    tmux.keys(&["this is not sent", "C-c"]);
    tmux.keys(&["query-status", "Enter"]);
    let s = tmux.wait_for("running", |s| s.contains("\"status\":\"running\""));
    assert!(
        !s.contains("not sent\"") && !s.contains("CommandNotFound"),
        "{s}"
    );

    // an event a command of the shell causes: on a line of its own,
    // before the command's reply
    tmux.keys(&["stop", "Enter"]);
    let s = tmux.wait_for("stop's event and reply", |s| {
        let lines: Vec<&str> = s.lines().collect();
        let event = lines.iter().rposition(|l| l.contains("\"event\":\"STOP\""));
        let reply = lines.iter().rposition(|l| l.trim() == "{\"return\":{}}");
        matches!((event, reply), (Some(e), Some(r)) if e < r)
    });
    assert!(
        s.lines()
            .all(|l| !(l.contains("\"event\"") && l.contains("\"return\""))),
        "an event glued to a reply:\n{s}"
    );

    // the server goes away: said at once, and the shell ends without a
    // key pressed
    vm.kill();
    let s = tmux.wait_for("the shell to end", |s| s.contains("closed"));
    assert!(!s.contains("panicked") && !s.contains("Traceback"), "{s}");
    let dead = tmux.run(&["display-message", "-p", "-t", "shell", "#{pane_dead}"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut dead = dead;
    while dead.trim() != "1" {
        assert!(
            Instant::now() < deadline,
            "the shell did not exit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
        dead = tmux.run(&["display-message", "-p", "-t", "shell", "#{pane_dead}"]);
    }
    // history was written under the state directory
    let deadline = Instant::now() + Duration::from_secs(5);
    let history = state.path().join("qmp-shell/history");
    while !history.exists() {
        assert!(Instant::now() < deadline, "history file");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::fs::read_to_string(&history)
        .unwrap()
        .contains("query-status"));
}
per_qemu!(
    #[test]
    completion_events_while_typing_ctrl_c_and_the_server_going_away
);

fn argument_completion_and_a_typed_transaction_on_a_storage_daemon(v: QemuVersion) {
    let mut qsd = Qemu::storage_daemon(v);
    let state = qmp_testkit::test_dir();
    let (tmux, _) = open_shell(&qsd.address(), "qsd", state.path());
    // an argument name, then an enum value, completed from the schema
    tmux.keys(&["blockdev-add driv", "Tab"]);
    tmux.wait_for("argument completion", |s| {
        s.contains("(QEMU) blockdev-add driver=")
    });
    tmux.keys(&["null-c", "Tab"]);
    tmux.wait_for("enum completion", |s| {
        s.contains("blockdev-add driver=null-co")
    });
    tmux.keys(&[" node-name=n0", "Enter"]);
    tmux.wait_for("blockdev-add's reply", |s| s.contains("{\"return\":{}}"));
    // dotted keys into a node of its own (`file`, an alternate)
    tmux.keys(&["blockdev-add driver=raw file.driver=file file.filen", "Tab"]);
    tmux.wait_for("file.filename", |s| {
        s.contains("(QEMU) blockdev-add driver=raw file.driver=file file.filename=")
    });
    tmux.interrupt();
    // an action of a one-line transaction completes from the schema
    tmux.keys(&["transaction( block-dirty-bitmap-ad", "Tab"]);
    tmux.wait_for("the action", |s| {
        s.contains("(QEMU) transaction( block-dirty-bitmap-add")
    });
    tmux.interrupt();
    // a transaction over several lines, at the TRANS> prompt
    tmux.keys(&["transaction(", "Enter"]);
    tmux.wait_for("TRANS>", |s| s.contains("TRANS>"));
    tmux.keys(&["block-dirty-bitmap-add node=n0 name=b1", "Enter"]);
    tmux.keys(&["block-dirty-bitmap-add node=n0 name=b2", "Enter"]);
    tmux.keys(&[")", "Enter"]);
    tmux.keys(&["query-named-block-nodes flat=true", "Enter"]);
    let s = tmux.wait_for("the bitmaps", |s| s.contains("\"name\":\"b2\""));
    assert!(s.contains("\"name\":\"b1\""), "{s}");
    // the daemon goes away
    qsd.kill();
    tmux.keys(&["query-version", "Enter"]);
    let s = tmux.wait_for("the shell to end", |s| s.contains("closed"));
    assert!(!s.contains("panicked"), "{s}");
}
per_qemu!(
    #[test]
    argument_completion_and_a_typed_transaction_on_a_storage_daemon
);

/// The last non-blank line of a screen.
fn last_line(screen: &str) -> &str {
    screen.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("")
}

/// In HMP mode, events stay on the screen through the prompt's redraws.
fn hmp_mode_keeps_events_on_the_screen(v: QemuVersion) {
    let vm = Qemu::system(v);
    let state = qmp_testkit::test_dir();
    let (tmux, _) = open_shell(&format!("-H {}", vm.address()), "hmp", state.path());
    // HMP's info subcommands complete after `info`
    tmux.keys(&["info registe", "Tab"]);
    tmux.wait_for("info registers", |s| s.contains("(QEMU) info registers"));
    tmux.interrupt();
    tmux.keys(&["cont", "Enter"]);
    tmux.wait_for("RESUME", |s| s.contains("\"event\":\"RESUME\""));
    tmux.keys(&["info status", "Enter"]);
    let s = tmux.wait_for("the status", |s| s.contains("VM status: running"));
    assert!(
        s.contains("\"event\":\"RESUME\""),
        "the event was erased:\n{s}"
    );
    tmux.keys(&["stop", "Enter"]);
    tmux.keys(&["info status", "Enter"]);
    let s = tmux.wait_for("paused", |s| s.contains("VM status: paused"));
    assert!(
        s.contains("\"event\":\"STOP\"") && s.contains("\"event\":\"RESUME\""),
        "{s}"
    );
}
per_qemu!(
    #[test]
    hmp_mode_keeps_events_on_the_screen
);

/// Python qmp-shell's history is taken over the first time: Up brings
/// back its last line.
fn pythons_history_is_taken_over(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let state = qmp_testkit::test_dir();
    std::fs::write(
        state.path().join(".qmp-shell_history"),
        "query-version\nquery-named-block-nodes flat=true\n",
    )
    .unwrap();
    let (tmux, _) = open_shell(&qsd.address(), "pyhist", state.path());
    tmux.keys(&["Up"]);
    tmux.wait_for("Python's last line", |s| {
        s.contains("(QEMU) query-named-block-nodes flat=true")
    });
}
per_qemu!(
    #[test]
    pythons_history_is_taken_over
);

/// Values only the live VM knows complete too: QOM paths and property
/// names, device ids, block node names.
fn live_values_complete(v: QemuVersion) {
    let vm = Qemu::system_with(
        v,
        &[
            "-blockdev",
            "driver=null-co,node-name=n0",
            "-device",
            "virtio-blk-pci,drive=n0,id=disk0",
        ],
    );
    let state = qmp_testkit::test_dir();
    let (tmux, _) = open_shell(&vm.address(), "live", state.path());
    tmux.keys(&["qom-get path=/mach", "Tab"]);
    tmux.wait_for("a QOM path", |s| s.contains("(QEMU) qom-get path=/machine"));
    tmux.keys(&[" property=dump-g", "Tab"]);
    tmux.wait_for("a property", |s| {
        s.contains("qom-get path=/machine property=dump-guest-core")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("its value", |s| s.contains("{\"return\":true}"));
    tmux.keys(&["device_del id=d", "Tab"]);
    tmux.wait_for("a device id", |s| s.contains("(QEMU) device_del id=disk0"));
    tmux.interrupt();
    tmux.keys(&["block-dirty-bitmap-add node=", "Tab"]);
    tmux.wait_for("a node name", |s| {
        s.contains("(QEMU) block-dirty-bitmap-add node=n0")
    });
    tmux.interrupt();
    // a command that fails, then Ctrl-D: a person leaving
    // (tmux 3.3 here does not always report the exit status of this
    // pane, so the status, 0, is not checked)
    tmux.keys(&["no-such-command", "Enter"]);
    tmux.wait_for("the error", |s| s.contains("CommandNotFound"));
    tmux.keys(&["C-d"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dead = tmux.run(&["display-message", "-p", "-t", "shell", "#{pane_dead}"]);
        if dead.trim() == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shell did not leave on Ctrl-D"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
per_qemu!(
    #[test]
    live_values_complete
);

/// `--reconnect`: QEMU goes away and comes back at the same address; the
/// shell waits for it and carries on.
fn reconnect_waits_for_qemu_to_come_back(v: QemuVersion) {
    let dir = qmp_testkit::test_dir();
    let path = dir.path().join("vm.sock");
    // each QEMU starts on a socket of its own, then moves where the shell looks
    let start_qemu = || {
        let qsd = Qemu::storage_daemon(v);
        std::fs::rename(&qsd.socket, &path).unwrap();
        qsd
    };
    let mut first = start_qemu();
    let state = qmp_testkit::test_dir();
    let (tmux, _) = open_shell(
        &format!("--reconnect {}", path.display()),
        "reconnect",
        state.path(),
    );
    first.kill();
    tmux.wait_for("the wait", |s| s.contains("waiting for QEMU to come back"));
    let _second = start_qemu();
    tmux.wait_for("the new connection", |s| s.contains("connected again"));
    tmux.keys(&["query-version", "Enter"]);
    tmux.wait_for("a reply", |s| s.contains("{\"return\":{\"qemu\""));
}
per_qemu!(
    #[test]
    reconnect_waits_for_qemu_to_come_back
);

/// Several candidates: a second Tab lists them, as bash does, rather than
/// cycling through them in place.
fn a_second_tab_lists_the_candidates(v: QemuVersion) {
    let vm = Qemu::system(v);
    let state = qmp_testkit::test_dir();
    let (tmux, _) = open_shell(&vm.address(), "list", state.path());
    tmux.keys(&["query-c", "Tab", "Tab"]);
    tmux.wait_for("the candidates listed", |s| {
        s.contains("query-cpus-fast")
            && s.lines()
                .any(|l| l.contains("query-chardev") && l.contains("query-commands"))
    });
}
per_qemu!(
    #[test]
    a_second_tab_lists_the_candidates
);

/// Lines pasted at once, or typed while a command runs, all run: what the
/// terminal hands over past the end of one line is kept for the next,
/// not dropped with the line editor's read buffer; and after Ctrl-C.
fn pasted_lines_and_typing_ahead_all_run(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let state = qmp_testkit::test_dir();
    let (tmux, _) = open_shell(&qsd.address(), "paste", state.path());
    // one write to the terminal: three lines
    tmux.keys(&[
        "query-jobs",
        "Enter",
        "query-version",
        "Enter",
        "query-block-jobs",
        "Enter",
    ]);
    tmux.wait_for("three replies", |s| {
        s.contains("(QEMU) query-jobs\n{\"return\":[]}")
            && s.contains("(QEMU) query-version\n{\"return\":{\"qemu\"")
            && s.contains("(QEMU) query-block-jobs\n{\"return\":[]}")
    });
    // a line dropped with Ctrl-C, and the next typed at once
    tmux.keys(&["not sent", "C-c", "query-named-block-nodes", "Enter"]);
    let s = tmux.wait_for("the line after Ctrl-C", |s| {
        s.contains("(QEMU) query-named-block-nodes\n{\"return\":[]}")
    });
    assert!(!s.contains("CommandNotFound"), "{s}");
}
per_qemu!(
    #[test]
    pasted_lines_and_typing_ahead_all_run
);
