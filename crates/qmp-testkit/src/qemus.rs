//! The QEMU releases the suite runs against, and how to launch each.
//!
//! `scripts/test-env.sh` installs them: 10.0 is the host's own
//! (`qemu-system-x86` from Debian 12's backports, and the image's
//! qemu-storage-daemon); 7.2 and 11.1 live in Debian roots under
//! `/var/lib/qmp-rs/roots` (or `$QMP_TEST_ROOTS`) and run with `chroot`.
//! The script bind-mounts `/tmp` into each root, and every test keeps its
//! sockets under `/tmp`, so a socket path is the same file inside and out.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// One QEMU release of the test matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QemuVersion {
    /// Debian 12's QEMU.
    V7_2,
    /// Debian 13's (and Debian 12 backports') QEMU.
    V10_0,
    /// Debian 13 backports' QEMU, the newest.
    V11_1,
}

impl QemuVersion {
    /// Every version, oldest first.
    pub const ALL: [QemuVersion; 3] = [QemuVersion::V7_2, QemuVersion::V10_0, QemuVersion::V11_1];

    /// `(major, minor)`.
    pub fn major_minor(self) -> (u64, u64) {
        match self {
            QemuVersion::V7_2 => (7, 2),
            QemuVersion::V10_0 => (10, 0),
            QemuVersion::V11_1 => (11, 1),
        }
    }

    /// How this version's JSON reader answers malformed input.
    pub fn dialect(self) -> qmp_proto::qemu_json::Dialect {
        let (major, minor) = self.major_minor();
        qmp_proto::qemu_json::Dialect::of_qemu(major, minor)
    }

    /// `"7.2"`, `"10.0"`, `"11.1"`.
    pub fn label(self) -> String {
        let (major, minor) = self.major_minor();
        format!("{major}.{minor}")
    }

    /// The Debian root this version runs in, or `None` for the host.
    pub fn root(self) -> Option<PathBuf> {
        let base = std::env::var_os("QMP_TEST_ROOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/qmp-rs/roots"));
        match self {
            QemuVersion::V7_2 => Some(base.join("bookworm")),
            QemuVersion::V10_0 => None,
            QemuVersion::V11_1 => Some(base.join("trixie")),
        }
    }

    /// A command that runs `program` (`qemu-system-x86_64`,
    /// `qemu-storage-daemon`, `qemu-ga`) of this version, checked once per process to
    /// be there and to be this version; otherwise a panic that says how to
    /// install it.
    pub fn command(self, program: &str) -> Command {
        let argv = self.argv(program);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// The words that start `program` of this version (`["chroot", ROOT,
    /// program]` or `[program]`), checked as [`command`](Self::command) is.
    pub fn argv(self, program: &str) -> Vec<String> {
        self.check(program);
        self.launcher(program)
    }

    fn launcher(self, program: &str) -> Vec<String> {
        match self.root() {
            None => vec![program.to_string()],
            Some(root) => vec!["chroot".into(), root.display().to_string(), program.into()],
        }
    }

    fn check(self, program: &str) {
        static CHECKED: OnceLock<std::sync::Mutex<Vec<(QemuVersion, String)>>> = OnceLock::new();
        let checked = CHECKED.get_or_init(Default::default);
        let mut checked = checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.iter().any(|(v, p)| *v == self && p == program) {
            return;
        }
        let install = "run `sudo scripts/test-env.sh` (the README's test command does), which installs all three QEMUs and their guest agents";
        if let Some(root) = self.root() {
            if !["usr/bin", "usr/sbin"]
                .iter()
                .any(|dir| root.join(dir).join(program).is_file())
            {
                panic!(
                    "QEMU {} ({program}) is not installed in {}: {install}",
                    self.label(),
                    root.display()
                );
            }
            let same = |a: &str, b: PathBuf| match (std::fs::metadata(a), std::fs::metadata(b)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same("/tmp", root.join("tmp")) {
                panic!(
                    "/tmp is not bind-mounted into {} (QEMU {} keeps its sockets there): {install}",
                    root.display(),
                    self.label()
                );
            }
        }
        let argv = self.launcher(program);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("--version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} of QEMU {}: {e}: {install}",
                    self.label()
                )
            });
        let text = String::from_utf8_lossy(&out.stdout);
        // "QEMU emulator version 7.2.22", "QEMU Guest Agent 7.2.22"
        let want = [
            format!("version {}.", self.label()),
            format!("Agent {}.", self.label()),
        ];
        if !out.status.success() || !want.iter().any(|w| text.contains(w)) {
            panic!(
                "{program} of QEMU {} is missing or another version ({}{}): {install}",
                self.label(),
                text.lines().next().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        checked.push((self, program.to_string()));
    }
}

impl std::str::FromStr for QemuVersion {
    type Err = String;

    /// `"7.2"`, `"10.0"` or `"11.1"`.
    fn from_str(s: &str) -> Result<Self, String> {
        QemuVersion::ALL
            .into_iter()
            .find(|v| v.label() == s)
            .ok_or_else(|| format!("unknown QEMU version {s:?}: the suite has 7.2, 10.0 and 11.1"))
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QEMU {}", self.label())
    }
}

/// Declares tests that run once per QEMU version: for each `name`, a module
/// `name` with tests `qemu_7_2`, `qemu_10_0` and `qemu_11_1`, each calling
/// the function `name(version)` under the attribute given.
///
/// ```ignore
/// async fn greets(v: QemuVersion) { let qsd = Qemu::storage_daemon(v); ... }
/// per_qemu!(#[tokio::test] async greets);
///
/// fn blocking(v: QemuVersion) { ... }
/// per_qemu!(#[test] blocking);
/// ```
#[macro_export]
macro_rules! per_qemu {
    (#[$attr:meta] async $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[$attr]
                async fn qemu_7_2() {
                    super::$name($crate::QemuVersion::V7_2).await
                }
                #[$attr]
                async fn qemu_10_0() {
                    super::$name($crate::QemuVersion::V10_0).await
                }
                #[$attr]
                async fn qemu_11_1() {
                    super::$name($crate::QemuVersion::V11_1).await
                }
            }
        )+
    };
    (#[$attr:meta] $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[$attr]
                fn qemu_7_2() {
                    super::$name($crate::QemuVersion::V7_2)
                }
                #[$attr]
                fn qemu_10_0() {
                    super::$name($crate::QemuVersion::V10_0)
                }
                #[$attr]
                fn qemu_11_1() {
                    super::$name($crate::QemuVersion::V11_1)
                }
            }
        )+
    };
}
