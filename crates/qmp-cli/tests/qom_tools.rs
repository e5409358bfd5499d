//! The QOM tools against qemu-storage-daemon and qemu-system-x86_64, by
//! their classic names and as `qmp qom ...`.

use qmp_testkit::{per_qemu, Qemu, QemuVersion, Started};
use serde_json::{json, Value};
use std::process::{Command, Output};

fn tool(name: &str, address: &str, args: &[&str]) -> Output {
    let program = match name {
        "qom-list" => env!("CARGO_BIN_EXE_qom-list"),
        "qom-get" => env!("CARGO_BIN_EXE_qom-get"),
        "qom-set" => env!("CARGO_BIN_EXE_qom-set"),
        "qom-tree" => env!("CARGO_BIN_EXE_qom-tree"),
        _ => unreachable!(),
    };
    Command::new(program)
        .arg("-s")
        .arg(address)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn qom_list_marks_children_and_links(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let lines = text(&tool("qom-list", &qsd.address(), &["/"]));
    let lines: Vec<&str> = lines.lines().collect();
    assert!(
        lines.contains(&"type") && lines.contains(&"chardevs/"),
        "{lines:?}"
    );
    let vm = Qemu::system(v);
    let machine = text(&tool("qom-list", &vm.address(), &["/machine"]));
    assert!(machine.lines().any(|l| l == "peripheral/"), "{machine}");
    assert!(
        machine
            .lines()
            .any(|l| l.starts_with('@') && l.ends_with('/')),
        "a link: {machine}"
    );
    // the same through qmp
    let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", &vm.address(), "qom", "list", "/machine"])
        .output()
        .unwrap();
    assert_eq!(text(&out), machine);
}
per_qemu!(
    #[test]
    qom_list_marks_children_and_links
);

fn qom_get_scalars_and_objects_and_qom_set(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    assert_eq!(
        text(&tool("qom-get", &qsd.address(), &["/chardevs.type"])),
        "container\n"
    );
    let vm = Qemu::system(v);
    assert!(text(&tool("qom-get", &vm.address(), &["/machine.type"])).starts_with("pc-i440fx-"));
    // an object value prints as key: value lines
    let memory = text(&tool("qom-get", &vm.address(), &["/machine.memory"]));
    assert!(memory.lines().any(|l| l.starts_with("size: ")), "{memory}");
    assert_eq!(
        text(&tool(
            "qom-set",
            &vm.address(),
            &["/machine.dump-guest-core", "false"]
        )),
        ""
    );
    assert_eq!(
        text(&tool(
            "qom-get",
            &vm.address(),
            &["/machine.dump-guest-core"]
        )),
        "false\n"
    );
    // errors
    let out = tool("qom-get", &vm.address(), &["/nope.type"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: DeviceNotFound: Device '/nope' not found\n"
    );
    let out = tool("qom-get", &vm.address(), &["/machine"]);
    assert_eq!(out.status.code(), Some(2));
}
per_qemu!(
    #[test]
    qom_get_scalars_and_objects_and_qom_set
);

fn qom_tree_prints_values_with_types_and_errors_inline(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let tree = text(&tool("qom-tree", &qsd.address(), &[]));
    // strings as qom-get prints them, without quotes
    assert!(
        tree.starts_with("/\n  type: container (string)\n"),
        "{tree}"
    );
    assert!(tree.lines().any(|l| l == "/chardevs"));
    let vm = Qemu::system(v);
    let tree = text(&tool("qom-tree", &vm.address(), &["/machine"]));
    assert!(
        tree.lines().any(|l| l.starts_with("  type: pc-i440fx-")),
        "machine type"
    );
    assert!(
        tree.lines().any(|l| l.contains(": <error: ")),
        "errors inline"
    );
    assert!(
        tree.lines().any(|l| l == "/machine/peripheral"),
        "children follow"
    );
    assert!(tree.lines().count() > 500);
    // every object line is followed by its properties, then a blank line
    let objects = tree.lines().filter(|l| l.starts_with('/')).count();
    let blanks = tree.lines().filter(|l| l.is_empty()).count();
    assert_eq!(objects, blanks);
}
per_qemu!(
    #[test]
    qom_tree_prints_values_with_types_and_errors_inline
);

/// `--json` (and `--pretty`/`--compact`, which are about JSON) give
/// qom-list's reply, qom-get's JSON value and the tree nested.
fn qom_tools_print_json_when_asked(v: QemuVersion) {
    let vm = Qemu::system(v);
    let json = |name: &str, args: &[&str]| -> Value {
        serde_json::from_str(&text(&tool(name, &vm.address(), args))).unwrap()
    };
    let listing = json("qom-list", &["--json", "/machine"]);
    assert!(listing
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "peripheral" && p["type"] == "child<container>"));
    assert_eq!(json("qom-list", &["--compact", "/machine"]), listing);
    let kind = json("qom-get", &["--json", "/machine.type"]);
    assert!(kind.as_str().unwrap().starts_with("pc-i440fx-"), "{kind}");
    let tree = json("qom-tree", &["--json", "/machine/peripheral-anon"]);
    assert_eq!(tree["path"], "/machine/peripheral-anon");
    assert_eq!(tree["properties"][0]["name"], "type");
    assert_eq!(tree["properties"][0]["value"], "container");
    let whole = json("qom-tree", &["--json", "/machine"]);
    let child = whole["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/machine/peripheral-anon")
        .expect("children nested");
    assert_eq!(child["children"], json!([]));
    // a property that cannot be read carries QEMU's error instead
    fn walk(node: &Value, found: &mut usize) {
        for p in node["properties"].as_array().unwrap() {
            if p.get("error").is_some() {
                assert!(p.get("value").is_none());
                *found += 1;
            }
        }
        for c in node["children"].as_array().unwrap() {
            walk(c, found);
        }
    }
    let mut errors = 0;
    walk(&whole, &mut errors);
    assert!(errors > 0);
}
per_qemu!(
    #[test]
    qom_tools_print_json_when_asked
);

/// The classic tools go by their own names: usage, --version, errors.
#[test]
fn classic_tools_use_their_own_names() {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env_remove("QMP_SOCKET")
            .output()
            .unwrap()
    };
    for (program, name) in [
        (env!("CARGO_BIN_EXE_qom-list"), "qom-list"),
        (env!("CARGO_BIN_EXE_qom-tree"), "qom-tree"),
        (env!("CARGO_BIN_EXE_vm-info"), "vm-info"),
        (env!("CARGO_BIN_EXE_qmp-shell"), "qmp-shell"),
    ] {
        let help = String::from_utf8(run(program, &["--help"]).stdout).unwrap();
        assert!(help.contains(&format!("Usage: {name} [OPTIONS]")), "{help}");
        let version = run(program, &["--version"]);
        assert!(version.status.success());
        assert_eq!(
            String::from_utf8(version.stdout).unwrap(),
            format!("{name} {}\n", env!("CARGO_PKG_VERSION"))
        );
        let failed = run(program, &["-s", "/nonexistent/qmp.sock"]);
        assert_eq!(failed.status.code(), Some(2));
        let err = String::from_utf8(failed.stderr).unwrap();
        assert!(err.starts_with(&format!("{name}: cannot connect")), "{err}");
    }
    // `qmp` linked under a classic name is that tool
    let dir = qmp_testkit::test_dir();
    let link = dir.path().join("qom-tree");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_qmp"), &link).unwrap();
    let version = run(link.to_str().unwrap(), &["--version"]);
    assert_eq!(
        String::from_utf8(version.stdout).unwrap(),
        format!("qom-tree {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8(run(link.to_str().unwrap(), &["--help"]).stdout).unwrap();
    assert!(help.contains("Usage: qom-tree [OPTIONS] [PATH]"), "{help}");
    // positional arguments are described
    let help = String::from_utf8(run(env!("CARGO_BIN_EXE_qom-set"), &["--help"]).stdout).unwrap();
    assert!(
        help.contains("<PATH.PROPERTY>  The object's path and the property"),
        "{help}"
    );
    assert!(help.contains("<VALUE>          The new value"), "{help}");
}

fn qmp_in_background(args: &[&str]) -> Started {
    Started(
        Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `qmp proxy` in front of `upstream`, with two listeners in `dir`:
/// `new.sock` may use everything, `old.sock` is denied `qom-list-get` (as
/// if its QEMU were older); both are audited in `audit.log`.
fn proxy_with_an_older_listener(upstream: &str, dir: &std::path::Path) -> Started {
    let at = |name: &str| dir.join(name).display().to_string();
    std::fs::write(
        at("policy.toml"),
        "[policy.older]\ndeny = [\"qom-list-get\"]\n",
    )
    .unwrap();
    let proxy = qmp_in_background(&[
        "proxy",
        "--upstream",
        upstream,
        "--listen",
        &at("new.sock"),
        "--listen",
        &format!("{},policy=older", at("old.sock")),
        "--policy",
        &at("policy.toml"),
        "--audit",
        &at("audit.log"),
    ]);
    qmp_testkit::wait_listening(&dir.join("old.sock"));
    // serving, not only bound: it greets once connected to QEMU
    let mut peer =
        qmp_testkit::RawPeer::connect(&dir.join("new.sock"), std::time::Duration::from_secs(10));
    peer.read_n(1);
    proxy
}

/// The demo machine has QEMU 10.1's `qom-list-get`. A proxy in front of
/// it shows which commands `qom-tree` sends: through one listener it may
/// use everything, through the other `qom-list-get` is denied (as if the
/// QEMU were older), and the output must be the same.
#[test]
fn qom_tree_uses_qom_list_get_when_there_and_prints_the_same_without() {
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let _demo = qmp_in_background(&["demo", "--listen", &at("demo.sock")]);
    qmp_testkit::wait_listening(&dir.path().join("demo.sock"));
    let _proxy = proxy_with_an_older_listener(&at("demo.sock"), dir.path());
    let with_list_get = text(&tool("qom-tree", &at("new.sock"), &[]));
    let without = text(&tool("qom-tree", &at("old.sock"), &[]));
    assert_eq!(with_list_get, without);
    for line in [
        "/machine",
        "  memory-size: 134217728 (size)",
        "  legacy-memory: <error: Property 'demo-machine.legacy-memory' is not readable> (str)",
        "/machine/peripheral",
    ] {
        assert!(
            with_list_get.lines().any(|l| l == line),
            "{line}\n{with_list_get}"
        );
    }

    let audit = std::fs::read_to_string(at("audit.log")).unwrap();
    let commands = |listener: &str| -> Vec<(String, String)> {
        audit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["listener"] == listener)
            .map(|e| {
                let command = e["command"].as_str().unwrap().to_owned();
                (command, e["outcome"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let count = |calls: &[(String, String)], command: &str| {
        calls.iter().filter(|(c, _)| c == command).count()
    };
    // One qom-list-get per level of the tree (/, /machine and /objects,
    // /machine/peripheral), and a qom-get only for the error's text.
    let new = commands(&at("new.sock"));
    assert_eq!(count(&new, "qom-list-get"), 3, "{new:?}");
    assert_eq!(count(&new, "qom-list"), 0, "{new:?}");
    assert_eq!(count(&new, "qom-get"), 1, "{new:?}");
    // Without it: refused once, then one qom-list per object and a qom-get
    // per property.
    let old = commands(&at("old.sock"));
    assert_eq!(old[0], ("qom-list-get".to_owned(), "denied".to_owned()));
    assert_eq!(count(&old, "qom-list"), 4, "{old:?}");
    assert!(count(&old, "qom-get") > 4, "{old:?}");
}

/// The same on a real `-M pc` machine: QEMU 11.1 has `qom-list-get`, and
/// `qom-tree` uses it, one request per level; 7.2 and 10.0 lack it, and
/// `qom-tree` reads each object with `qom-list` and `qom-get`. Either way
/// the tree printed is the one read one property at a time (the listener
/// that denies `qom-list-get`).
fn qom_tree_of_a_vm_uses_qom_list_get_where_qemu_has_it(v: QemuVersion) {
    let vm = Qemu::system(v);
    let dir = qmp_testkit::test_dir();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let _proxy = proxy_with_an_older_listener(&vm.address(), dir.path());
    let tree = text(&tool("qom-tree", &at("new.sock"), &["/machine"]));
    let one_at_a_time = text(&tool("qom-tree", &at("old.sock"), &["/machine"]));
    // the same tree, clocks aside (the RTC's time moves between the two)
    let steady = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.contains("\"tm_sec\""))
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (steady(&tree), steady(&one_at_a_time));
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        first_difference.is_none() && a.len() == b.len(),
        "trees differ at line {first_difference:?}: {:?} / {:?}",
        first_difference.map(|i| &a[i]),
        first_difference.map(|i| &b[i])
    );
    assert!(tree.lines().count() > 500);
    let audit = std::fs::read_to_string(at("audit.log")).unwrap();
    let count = |command: &str| {
        audit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["listener"] == at("new.sock") && e["command"] == command)
            .count()
    };
    let objects = tree.lines().filter(|l| l.starts_with('/')).count();
    if v == QemuVersion::V11_1 {
        let levels = count("qom-list-get");
        assert!((2..10).contains(&levels), "{levels} qom-list-get");
        assert_eq!(count("qom-list"), 0);
    } else {
        // one try, which QEMU's CommandNotFound ends (the proxy logs it)
        assert_eq!(count("qom-list-get"), 1);
        assert!(
            audit.contains(r#""command":"qom-list-get","#) && audit.contains("CommandNotFound")
        );
        assert_eq!(count("qom-list"), objects);
    }
}
per_qemu!(
    #[test]
    qom_tree_of_a_vm_uses_qom_list_get_where_qemu_has_it
);

/// Man pages and completion scripts for qmp and every classic tool.
#[test]
fn man_pages_and_completion_scripts() {
    let qmp = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for tool in [
        "qmp",
        "qmp-shell",
        "qom-list",
        "qom-get",
        "qom-set",
        "qom-tree",
        "qom-fuse",
        "vm-info",
    ] {
        let man = qmp(&["man", tool]);
        assert!(man.contains(&format!(".TH {tool} 1")), "{man}");
        for shell in ["bash", "zsh", "fish"] {
            let script = qmp(&["completions", shell, tool]);
            assert!(script.contains(tool), "{shell} {tool}: {script}");
        }
    }
    let bash = qmp(&["completions", "bash", "qom-tree"]);
    assert!(bash.contains("complete -F _qom__tree"), "{bash}");
    assert!(bash.contains("--json"), "{bash}");
    let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["man", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // --help shows examples, and only the options that mean something
    assert!(qmp(&["--help"]).contains("Examples:"));
    for sub in [
        &["demo", "--help"][..],
        &["transcript", "show", "--help"],
        &["man", "--help"],
    ] {
        let help = qmp(sub);
        assert!(
            !help.contains("--socket") && !help.contains("--timeout"),
            "{help}"
        );
    }
    assert!(qmp(&["exec", "--help"]).contains("--socket"));
    assert!(!qmp(&["shell", "--help"]).contains("--compact"));
    // still taken, for scripts that pass -s everywhere
    let out = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["-s", "/x", "man", "--timeout", "3", "qom-get"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(qmp(&["shell", "--help"]).contains("qmp-shell --demo"));
}

/// On a terminal an error's prefix is red, unless NO_COLOR is set; piped
/// it is plain.
#[test]
fn errors_are_red_on_a_terminal_only() {
    let line = format!(
        "{} -s /nonexistent/qmp.sock",
        env!("CARGO_BIN_EXE_qom-list")
    );
    let run = |no_color: bool| {
        let mut script = Command::new("script");
        script
            .args(["-qec", &line, "/dev/null"])
            .env_remove("NO_COLOR");
        if no_color {
            script.env("NO_COLOR", "1");
        }
        String::from_utf8(script.output().expect("script (util-linux)").stdout).unwrap()
    };
    assert!(
        run(false).starts_with("\x1b[1;31mqom-list\x1b[0m: cannot connect"),
        "{:?}",
        run(false)
    );
    assert!(
        run(true).starts_with("qom-list: cannot connect"),
        "{:?}",
        run(true)
    );
    let piped = Command::new(env!("CARGO_BIN_EXE_qom-list"))
        .args(["-s", "/nonexistent/qmp.sock"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(String::from_utf8(piped.stderr)
        .unwrap()
        .starts_with("qom-list: cannot connect"));
}
