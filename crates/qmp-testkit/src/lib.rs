//! Real QEMU processes for tests.
//!
//! Each [`Qemu`] runs in its own temp dir, is waited for until its monitor
//! is ready, and is killed (only it) when dropped. A test that needs a QEMU
//! binary that is missing fails with a message saying what to install; it
//! never skips.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const STORAGE_DAEMON: &str = "qemu-storage-daemon";
pub const SYSTEM_X86: &str = "qemu-system-x86_64";

/// How to tell that the process is ready.
pub enum Ready {
    /// A unix socket accepts connections.
    Socket(PathBuf),
    /// A TCP host and port accepts connections.
    Tcp(String, u16),
    /// Nothing to wait for (QEMU will connect to us).
    Started,
}

/// A connected probe stream.
trait ReadStream: Read {
    fn set_timeout(&mut self, t: Option<Duration>);
}

impl ReadStream for std::os::unix::net::UnixStream {
    fn set_timeout(&mut self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
    }
}

impl ReadStream for std::net::TcpStream {
    fn set_timeout(&mut self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
    }
}

pub struct Qemu {
    child: Child,
    dir: tempfile::TempDir,
    /// The monitor's unix socket, when it has one.
    pub socket: PathBuf,
    program: String,
}

/// The path of a QEMU binary, or a panic telling how to get it.
pub fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{program} is not installed, and this test needs a real QEMU: \
         run `apt-get install -y qemu-system-x86` (which also brings qemu-storage-daemon), as .ci/run does"
    );
}

/// A free TCP port on 127.0.0.1 (bound, then released for QEMU to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl Qemu {
    /// qemu-storage-daemon with a QMP monitor on a unix socket.
    pub fn storage_daemon() -> Qemu {
        Self::storage_daemon_with_monitor("")
    }

    /// qemu-storage-daemon whose monitor has extra options, such as
    /// `,pretty=on`.
    pub fn storage_daemon_with_monitor(monitor_options: &str) -> Qemu {
        let dir = tempdir();
        let sock = dir.path().join("qsd.sock");
        let args = vec![
            "--chardev".into(),
            format!("socket,path={},server=on,wait=off,id=m", sock.display()),
            "--monitor".into(),
            format!("chardev=m{monitor_options}"),
        ];
        Self::spawn_in(dir, STORAGE_DAEMON, args, Ready::Socket(sock))
    }

    /// qemu-storage-daemon with its monitor on TCP `host:port`.
    pub fn storage_daemon_tcp(host: &str, port: u16) -> Qemu {
        let args = vec![
            "--chardev".into(),
            format!("socket,host={host},port={port},server=on,wait=off,id=m"),
            "--monitor".into(),
            "chardev=m".into(),
        ];
        Self::spawn_in(
            tempdir(),
            STORAGE_DAEMON,
            args,
            Ready::Tcp(host.into(), port),
        )
    }

    /// qemu-storage-daemon that connects to our socket at `path`
    /// (`server=off`), for accept mode.
    pub fn storage_daemon_connecting_to(path: &Path) -> Qemu {
        let args = vec![
            "--chardev".into(),
            format!("socket,path={},server=off,id=m", path.display()),
            "--monitor".into(),
            "chardev=m".into(),
        ];
        Self::spawn_in(tempdir(), STORAGE_DAEMON, args, Ready::Started)
    }

    /// A stopped (`-S`) qemu-system-x86_64 `-M pc` with no devices.
    pub fn system() -> Qemu {
        Self::system_with(&[])
    }

    /// With extra arguments; `{dir}` in them stands for the temp dir, so a
    /// second monitor is `["-qmp", "unix:{dir}/second.sock,server=on,wait=off"]`.
    pub fn system_with(extra: &[&str]) -> Qemu {
        let dir = tempdir();
        let sock = dir.path().join("vm.sock");
        let mut args: Vec<String> = [
            "-M",
            "pc",
            "-S",
            "-nodefaults",
            "-display",
            "none",
            "-accel",
            "tcg",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("-qmp".into());
        args.push(format!("unix:{},server=on,wait=off", sock.display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn_in(dir, SYSTEM_X86, args, Ready::Socket(sock))
    }

    /// Starts `program` with `args` in `dir` and waits until `ready`.
    pub fn spawn_in(
        dir: tempfile::TempDir,
        program: &str,
        args: Vec<String>,
        ready: Ready,
    ) -> Qemu {
        let binary = require(program);
        // `{dir}` in an argument stands for the private temp dir.
        let dir_text = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir_text)).collect();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        let child = Command::new(&binary)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let socket = match &ready {
            Ready::Socket(p) => p.clone(),
            _ => PathBuf::new(),
        };
        let mut q = Qemu {
            child,
            dir,
            socket,
            program: program.into(),
        };
        q.wait_ready(&ready);
        match &ready {
            Ready::Socket(p) => q.wait_greeting(|| {
                std::os::unix::net::UnixStream::connect(p)
                    .map(|s| Box::new(s) as Box<dyn ReadStream>)
            }),
            Ready::Tcp(host, port) => {
                let (host, port) = (host.clone(), *port);
                q.wait_greeting(move || {
                    std::net::TcpStream::connect((host.as_str(), port))
                        .map(|s| Box::new(s) as Box<dyn ReadStream>)
                })
            }
            Ready::Started => {}
        }
        match &ready {
            Ready::Socket(p) => {
                q.wait_until(|| unix_connections(p) == 0, "the probe connection to close")
            }
            Ready::Tcp(_, port) => q.wait_until(
                || tcp_connections(*port) == 0,
                "the probe connection to close",
            ),
            Ready::Started => {}
        }
        q
    }

    /// Connects and reads until a greeting line arrives: QEMU listens
    /// before its monitor is attached, and a client that connects in
    /// between may never be greeted. Retries until greeted.
    fn wait_greeting(&mut self, connect: impl Fn() -> std::io::Result<Box<dyn ReadStream>>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = connect() {
                s.set_timeout(Some(Duration::from_millis(500)));
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(2).any(|w| w == b"\r\n") {
                        return;
                    }
                }
            }
            self.check_alive(deadline, "greet");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until(&mut self, mut cond: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            self.check_alive(deadline, what);
            std::thread::sleep(Duration::from_millis(2));
        }
        // QEMU closes the socket a moment before it is ready for the next
        // client; give it that moment.
        std::thread::sleep(Duration::from_millis(20));
    }

    fn check_alive(&mut self, deadline: Instant, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) while waiting to {what}: {}",
                self.program,
                self.stderr()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not {what} within 20 s: {}",
                self.program,
                self.stderr()
            );
        }
    }

    fn wait_ready(&mut self, ready: &Ready) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = match ready {
                Ready::Socket(p) => unix_listening(p),
                Ready::Tcp(_, port) => tcp_listening(*port),
                Ready::Started => true,
            };
            if ok {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited before its monitor was ready ({status}): {}",
                    self.program,
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not open its monitor within 20 s: {}",
                    self.program,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("stderr.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The monitor socket as an address string.
    pub fn address(&self) -> String {
        self.socket.display().to_string()
    }

    /// The private temp dir (for images and other files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to this process only.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

// Readiness is read from /proc rather than probed by connecting: the socket
// file appears at bind(), before QEMU listens, and a probe connection that
// closes at once can make QEMU drop the client that connects right after it.

/// Whether a unix socket is listening at `path` (/proc/net/unix: flags
/// 00010000 mark a listening socket; the path is the last column).
pub fn unix_listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let wanted = path.display().to_string();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 8 && cols[3] == "00010000" && cols[7] == wanted
    })
}

/// How many connections the server at `path` has accepted and holds
/// (accepted sockets carry the listener's path, in state 03, connected).
pub fn unix_connections(path: &Path) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return 0;
    };
    let wanted = path.display().to_string();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() >= 8 && cols[5] == "03" && cols[7] == wanted
        })
        .count()
}

/// How many TCP connections on local port `port` exist, LISTEN aside.
pub fn tcp_connections(port: u16) -> usize {
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|file| {
            std::fs::read_to_string(file).map_or(0, |table| {
                table
                    .lines()
                    .skip(1)
                    .filter(|line| {
                        let cols: Vec<&str> = line.split_whitespace().collect();
                        cols.len() > 3
                            && cols[1].ends_with(&suffix)
                            && cols[3] != "0A"
                            && cols[3] != "06"
                    })
                    .count()
            })
        })
        .sum()
}

/// Whether a TCP socket is listening on `port` (/proc/net/tcp and tcp6:
/// state 0A is LISTEN; the local address ends in `:PORT` in hex).
pub fn tcp_listening(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|table| {
            table.lines().skip(1).any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&suffix) && cols[3] == "0A"
            })
        })
    })
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("qmp-test-")
        .tempdir()
        .expect("create temp dir")
}

/// A temp dir for a test's own files.
pub fn test_dir() -> tempfile::TempDir {
    tempdir()
}
