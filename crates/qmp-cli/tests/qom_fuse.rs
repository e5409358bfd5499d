//! `qom-fuse` mounted over qemu-system-x86_64 and read with plain `ls`,
//! `cat` and `readlink`.

use qmp_testkit::{per_qemu, Qemu, QemuVersion};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running qom-fuse; unmounted and stopped on drop, whatever happened.
struct Mount {
    child: Child,
    at: PathBuf,
}

impl Mount {
    fn start(address: &str, at: &Path, rw: bool) -> Mount {
        Self::start_with(address, at, if rw { &["--rw"] } else { &[] })
    }

    fn start_with(address: &str, at: &Path, options: &[&str]) -> Mount {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qom-fuse"));
        cmd.args(["-s", address]).args(options);
        let child = cmd.arg(at).stderr(Stdio::null()).spawn().unwrap();
        let m = Mount {
            child,
            at: at.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !at.join("machine").exists() {
            assert!(
                Instant::now() < deadline,
                "qom-fuse never mounted (is /dev/fuse there? .ci/run installs fuse3)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// SIGTERM, as a user's Ctrl-C or kill would; returns whether it
    /// exited cleanly.
    fn stop(&mut self) -> bool {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .stderr(Stdio::null())
            .status();
    }
}

/// `echo VALUE > FILE` through a shell, as a user would write a property.
fn echo_into(value: &str, file: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo {value} > '{}'", file.display()))
        .output()
        .unwrap()
}

fn run(program: &str, args: &[&Path]) -> (bool, String, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mounted_tree_read_with_ls_cat_readlink_then_unmounted_by_sigterm(v: QemuVersion) {
    let vm = Qemu::system(v);
    let dir = qmp_testkit::test_dir();
    let at = dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let mut m = Mount::start(&vm.address(), &at, false);
    let machine = at.join("machine");

    let (ok, listing, _) = run("ls", &[&machine]);
    assert!(ok);
    let names: Vec<&str> = listing.lines().collect();
    assert!(
        names.contains(&"peripheral")
            && names.contains(&"type")
            && names.contains(&"memory-backend"),
        "{names:?}"
    );
    let (ok, ty, _) = run("cat", &[&machine.join("type")]);
    assert!(ok);
    assert!(ty.starts_with("pc-i440fx-") && ty.ends_with('\n'), "{ty:?}");
    // a link is a symlink to its target, relative so it resolves in the mount
    let (ok, target, _) = run("readlink", &[&machine.join("memory-backend")]);
    assert!(ok);
    assert_eq!(target, "../objects/pc.ram\n");
    let (ok, ty, _) = run("cat", &[&machine.join("memory-backend/type")]);
    assert!(ok);
    assert_eq!(ty, "memory-backend-ram\n");
    // an unset link points at /dev/null, so `ls -la` lists it cleanly
    let (ok, target, _) = run("readlink", &[&machine.join("confidential-guest-support")]);
    assert!(ok);
    assert_eq!(target, "/dev/null\n");
    let (ok, _, err) = run("ls", &[Path::new("-la"), &machine]);
    assert!(ok, "{err}");
    // errno: missing, not readable, read-only
    let (ok, _, err) = run("cat", &[&machine.join("nope")]);
    assert!(!ok && err.contains("No such file"), "{err}");
    // a write-only property (11.1's pc machine has none left)
    if v != QemuVersion::V11_1 {
        let (ok, _, err) = run(
            "cat",
            &[&machine.join("unattached/device[0]/legacy-memory")],
        );
        assert!(!ok && err.contains("Permission denied"), "{err}");
    }
    let write = echo_into("false", &machine.join("dump-guest-core"));
    assert!(!write.status.success(), "read-only by default");

    assert!(m.stop(), "qom-fuse exits cleanly on SIGTERM");
    assert!(
        std::fs::read_dir(&at).unwrap().next().is_none(),
        "unmounted"
    );

    // --rw turns writes into qom-set
    let mut m = Mount::start(&vm.address(), &at, true);
    let write = echo_into("false", &machine.join("dump-guest-core"));
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let (_, value, _) = run("cat", &[&machine.join("dump-guest-core")]);
    assert_eq!(value, "false\n");
    // `>>` appends to the value, `>` replaces it
    let append = machine.join("append");
    assert!(echo_into("console=ttyS0", &append).status.success());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf ' quiet' >> '{}'", append.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, value, _) = run("cat", &[&append]);
    assert_eq!(value, "console=ttyS0 quiet\n");
    // the monitor serves one client at a time: leave it before asking QEMU
    assert!(m.stop());
    let out = Command::new(env!("CARGO_BIN_EXE_qom-get"))
        .args(["-s", &vm.address(), "/machine.dump-guest-core"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "false\n",
        "QEMU really has it"
    );
}
per_qemu!(
    #[test]
    mounted_tree_read_with_ls_cat_readlink_then_unmounted_by_sigterm
);

/// A mount point that is a file is refused before anything is mounted;
/// when QEMU goes away, qom-fuse unmounts and exits 2, instead of staying
/// mounted and answering EIO.
fn a_bad_mount_point_is_refused_and_qemu_going_away_unmounts(v: QemuVersion) {
    let mut vm = Qemu::system(v);
    let dir = qmp_testkit::test_dir();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qom-fuse"))
        .args(["-s", &vm.address()])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let mut m = Mount::start(&vm.address(), &at, false);
    vm.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = m.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "qom-fuse stayed after QEMU went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2));
    assert!(
        std::fs::read_dir(&at).unwrap().next().is_none(),
        "unmounted"
    );
}
per_qemu!(
    #[test]
    a_bad_mount_point_is_refused_and_qemu_going_away_unmounts
);

/// `--reconnect`: while QEMU is away the mount stays, its reads failing;
/// once QEMU is back at the same address they succeed again.
fn reconnect_keeps_the_mount_until_qemu_is_back(v: QemuVersion) {
    let dir = qmp_testkit::test_dir();
    let path = dir.path().join("vm.sock");
    let start_qemu = || {
        let vm = Qemu::system(v);
        std::fs::rename(&vm.socket, &path).unwrap();
        vm
    };
    let mut first = start_qemu();
    let at = dir.path().join("mnt");
    std::fs::create_dir(&at).unwrap();
    let mut m = Mount::start_with(&path.display().to_string(), &at, &["--reconnect"]);
    let kind = at.join("machine/type");
    let (ok, _, _) = run("cat", &[&kind]);
    assert!(ok);
    first.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = run("cat", &[&kind]);
        if !ok {
            // still mounted: EIO, not "No such file or directory"
            assert!(err.contains("Input/output error"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "reads never failed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _second = start_qemu();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, text, _) = run("cat", &[&kind]);
        if ok {
            assert!(text.starts_with("pc-i440fx-"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "reads never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(m.stop(), "qom-fuse exits cleanly on SIGTERM");
}
per_qemu!(
    #[test]
    reconnect_keeps_the_mount_until_qemu_is_back
);
