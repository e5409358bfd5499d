//! `vm-info` / `qmp info` against qemu-system-x86_64, qemu-storage-daemon
//! and the demo machine: each line only when the server has its command.

use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use serde_json::{json, Value};
use std::process::Command;

fn vm_info(address: &str, json_output: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-info"));
    cmd.args(["-s", address]);
    if json_output {
        cmd.args(["--json", "--compact"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn a_full_vm(v: QemuVersion) {
    let vm = Qemu::system_with(
        v,
        &[
            "-name",
            "testvm",
            "-uuid",
            "12345678-1234-1234-1234-123456789abc",
        ],
    );
    let text = vm_info(&vm.address(), false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "name     testvm");
    assert_eq!(lines[1], "uuid     12345678-1234-1234-1234-123456789abc");
    assert!(
        lines[2].starts_with("version  7.") || lines[2].starts_with("version  1"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "status   prelaunch");
    assert!(lines[4].starts_with("kvm      disabled") || lines[4] == "kvm      enabled");
    assert_eq!(
        &lines[5..],
        ["cpus     1", "memory   128 MiB", "block    none"]
    );
    // --json: QEMU's objects, numbers as numbers
    let j: Value = serde_json::from_str(&vm_info(&vm.address(), true)).unwrap();
    assert_eq!(j["name"], "testvm");
    assert_eq!(j["status"]["status"], "prelaunch");
    assert_eq!(j["status"]["running"], false);
    assert_eq!(j["cpus"].as_array().unwrap().len(), 1);
    assert_eq!(j["memory"]["base-memory"], 128 << 20);
    assert!(j["version"]["qemu"]["major"].as_u64().unwrap() >= 7);
    assert_eq!(j["block"], json!([]));
}
per_qemu!(
    #[test]
    a_full_vm
);

/// Disks as libvirt makes them (`-blockdev` and `-device`, no drive id)
/// are named by their device and node, beside an old-style `-drive`.
fn disks_made_with_blockdev_and_device(v: QemuVersion) {
    let vm = Qemu::system_with(
        v,
        &[
            "-blockdev",
            "driver=null-co,node-name=n0",
            "-device",
            "virtio-blk-pci,drive=n0,id=disk0",
            "-drive",
            "if=none,id=old,driver=null-co",
        ],
    );
    let text = vm_info(&vm.address(), false);
    let block = text.lines().find(|l| l.starts_with("block")).unwrap();
    assert_eq!(
        block, "block    old (null-co), disk0 (n0, null-co)",
        "{text}"
    );
    let j: Value = serde_json::from_str(&vm_info(&vm.address(), true)).unwrap();
    let disk0 = j["block"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "disk0")
        .expect("disk0")
        .clone();
    assert_eq!(disk0["node-name"], "n0");
    assert_eq!(disk0["driver"], "null-co");
    assert_eq!(disk0["read-only"], false);
    assert!(disk0["qdev"].as_str().unwrap().contains("disk0"));
}
per_qemu!(
    #[test]
    disks_made_with_blockdev_and_device
);

fn a_storage_daemon_shows_what_it_has(v: QemuVersion) {
    let qsd = Qemu::storage_daemon(v);
    let client = qmp_client::blocking::Client::connect(&qsd.address()).unwrap();
    client
        .execute(
            "blockdev-add",
            json!({"driver": "null-co", "node-name": "n0"}),
        )
        .unwrap();
    client.close();
    let text = vm_info(&qsd.address(), false);
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(keys, ["version", "block"], "{text}");
    assert!(text.contains("block    n0 (null-co)"), "{text}");
}
per_qemu!(
    #[test]
    a_storage_daemon_shows_what_it_has
);

#[test]
fn the_demo_machine() {
    let dir = qmp_testkit::test_dir();
    let sock = dir.path().join("demo.sock");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_qmp"))
        .args(["demo", "--listen", &sock.display().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    qmp_testkit::wait_listening(&sock);
    let text = vm_info(&sock.display().to_string(), false);
    let _ = demo.kill();
    let _ = demo.wait();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "name     demo",
            &format!("uuid     {}", qmp_server::demo::DEMO_UUID),
            "version  10.1.0 (qmp-rs demo)",
            "status   prelaunch",
        ]
    );
}
