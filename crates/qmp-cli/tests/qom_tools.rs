//! The QOM tools against qemu-storage-daemon and qemu-system-x86_64, by
//! their classic names and as `qmp qom ...`.

use qmp_testkit::Qemu;
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

#[test]
fn qom_list_marks_children_and_links() {
    let qsd = Qemu::storage_daemon();
    let lines = text(&tool("qom-list", &qsd.address(), &["/"]));
    let lines: Vec<&str> = lines.lines().collect();
    assert!(
        lines.contains(&"type") && lines.contains(&"chardevs/"),
        "{lines:?}"
    );
    let vm = Qemu::system();
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

#[test]
fn qom_get_scalars_and_objects_and_qom_set() {
    let qsd = Qemu::storage_daemon();
    assert_eq!(
        text(&tool("qom-get", &qsd.address(), &["/chardevs.type"])),
        "container\n"
    );
    let vm = Qemu::system();
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

#[test]
fn qom_tree_prints_values_with_types_and_errors_inline() {
    let qsd = Qemu::storage_daemon();
    let tree = text(&tool("qom-tree", &qsd.address(), &[]));
    assert!(
        tree.starts_with("/\n  type: \"container\" (string)\n"),
        "{tree}"
    );
    assert!(tree.lines().any(|l| l == "/chardevs"));
    let vm = Qemu::system();
    let tree = text(&tool("qom-tree", &vm.address(), &["/machine"]));
    assert!(
        tree.lines().any(|l| l.starts_with("  type: \"pc-i440fx-")),
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
