//! The real guest agent (Debian's `qemu-guest-agent`) of each QEMU
//! version, run on the host (7.2 and 11.1 in their Debian roots, as their
//! QEMUs are).
//!
//! On the host, the agent acts on the host itself. So it runs with a block
//! list of everything that would change the machine (fsfreeze, fstrim,
//! shutdown, suspend, time, passwords, vCPUs, memory), and in a mount
//! namespace of its own in which every file system is read-only except
//! the test's directory: a file write anywhere else fails.

use crate::QemuVersion;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Commands the agent refuses in every test.
pub const BLOCKED: &[&str] = &[
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fstrim",
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-set-time",
    "guest-set-user-password",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
];

/// A running qemu-ga listening on `{dir}/ga.sock`.
pub struct GuestAgent {
    version: QemuVersion,
    child: Child,
    dir: tempfile::TempDir,
    /// Its socket.
    pub socket: PathBuf,
}

impl GuestAgent {
    /// Starts the agent of QEMU `version` in a temp dir of its own and
    /// waits for its socket.
    pub fn start(version: QemuVersion) -> GuestAgent {
        let dir = crate::tempdir();
        let socket = dir.path().join("ga.sock");
        let child = spawn(version, dir.path(), &socket);
        let agent = GuestAgent {
            version,
            child,
            dir,
            socket,
        };
        agent.wait_ready();
        agent
    }

    /// The directory it may write in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The socket as an address string.
    pub fn address(&self) -> String {
        self.socket.display().to_string()
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kills it (SIGKILL: no goodbye) and waits for it to go.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Kills it and starts a new one on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.version, self.dir.path(), &self.socket);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !crate::unix_listening(&self.socket) {
            assert!(
                Instant::now() < deadline,
                "qemu-ga did not listen on {} within 10 s: {}",
                self.socket.display(),
                std::fs::read_to_string(self.dir.path().join("ga.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for GuestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(version: QemuVersion, dir: &Path, socket: &Path) -> Child {
    let qemu_ga = version.argv("qemu-ga").join(" ");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    let d = dir.display();
    // In a private mount namespace: the test's directory stays writable
    // (in the version's root too, with the host's /proc there), every other
    // mount becomes read-only, then the agent starts.
    let (root_mounts, writable) = match version.root() {
        Some(root) => {
            let r = root.display();
            (
                format!("mount --bind '{d}' '{r}{d}'; mount -t proc proc '{r}/proc'; "),
                format!("'{d}'|'{r}{d}'"),
            )
        }
        None => (String::new(), format!("'{d}'")),
    };
    let script = format!(
        "set -e; mount --bind '{d}' '{d}'; {root_mounts}\
         for m in $(awk '{{print $2}}' /proc/self/mounts | sort -u); do \
           case \"$m\" in {writable}) ;; *) mount -o remount,bind,ro \"$m\" 2>/dev/null || true ;; esac; \
         done; \
         exec {qemu_ga} -m unix-listen -p '{}' -t '{}' -b {}",
        socket.display(),
        state.display(),
        BLOCKED.join(",")
    );
    let log = std::fs::File::create(dir.join("ga.log")).expect("create ga.log");
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-ga under unshare: {e}"))
}
