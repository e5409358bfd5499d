//! The real guest agent (Debian's `qemu-guest-agent`), run on the host.
//!
//! On the host, the agent acts on the host itself. So it runs with a block
//! list of everything that would change the machine (fsfreeze, fstrim,
//! shutdown, suspend, time, passwords, vCPUs, memory), and in a mount
//! namespace of its own in which every file system is read-only except
//! the test's directory: a file write anywhere else fails.

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
    child: Child,
    dir: tempfile::TempDir,
    /// Its socket.
    pub socket: PathBuf,
}

impl GuestAgent {
    /// Starts the agent in a temp dir of its own and waits for its socket.
    pub fn start() -> GuestAgent {
        let dir = crate::tempdir();
        let socket = dir.path().join("ga.sock");
        let child = spawn(dir.path(), &socket);
        let agent = GuestAgent { child, dir, socket };
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
        self.child = spawn(self.dir.path(), &self.socket);
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

fn spawn(dir: &Path, socket: &Path) -> Child {
    let qemu_ga = ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("qemu-ga is not installed: run `sudo scripts/test-env.sh` (the README's test command does), which installs qemu-guest-agent")
        });
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    let d = dir.display();
    // In a private mount namespace: the test's directory stays writable,
    // every other mount becomes read-only, then the agent starts.
    let script = format!(
        "set -e; mount --bind '{d}' '{d}'; \
         for m in $(awk '{{print $2}}' /proc/self/mounts | sort -u); do \
           [ \"$m\" = '{d}' ] || mount -o remount,bind,ro \"$m\" 2>/dev/null || true; \
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
