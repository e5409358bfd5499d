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

pub mod agent;
pub mod pki;
mod qemus;
pub mod scale;
pub use qemus::QemuVersion;

pub const STORAGE_DAEMON: &str = "qemu-storage-daemon";
pub const SYSTEM_X86: &str = "qemu-system-x86_64";

/// The machine every test's qemu-system-x86_64 is: a stopped (`-S`) `pc`
/// without devices or display, under TCG.
pub const SYSTEM_MACHINE: &[&str] = &[
    "-M",
    "pc",
    "-S",
    "-nodefaults",
    "-display",
    "none",
    "-accel",
    "tcg",
];

/// How to tell that the process is ready.
pub enum Ready {
    /// A unix socket accepts connections.
    Socket(PathBuf),
    /// A TCP host and port accepts connections.
    Tcp(String, u16),
    /// A TCP host and port listens; no probe session runs (TLS, which the
    /// plain probe cannot speak).
    TcpNoProbe(String, u16),
    /// Nothing to wait for (QEMU will connect to us).
    Started,
}

/// A connected probe stream.
trait ReadStream: Read + std::io::Write {
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
    version: QemuVersion,
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
    pub fn storage_daemon(v: QemuVersion) -> Qemu {
        Self::storage_daemon_with_monitor(v, "")
    }

    /// qemu-storage-daemon whose monitor has extra options, such as
    /// `,pretty=on`.
    pub fn storage_daemon_with_monitor(v: QemuVersion, monitor_options: &str) -> Qemu {
        let dir = tempdir();
        let sock = dir.path().join("qsd.sock");
        let args = vec![
            "--chardev".into(),
            format!("socket,path={},server=on,wait=off,id=m", sock.display()),
            "--monitor".into(),
            format!("chardev=m{monitor_options}"),
        ];
        Self::spawn_in(v, dir, STORAGE_DAEMON, args, Ready::Socket(sock))
    }

    /// qemu-storage-daemon with a second monitor at `{dir}/second`, for
    /// comparing what another client sees or gets directly, or for a side
    /// channel. The second socket listens by the time this returns.
    pub fn storage_daemon_with_second_monitor(v: QemuVersion, second: &str) -> Qemu {
        Self::storage_daemon_with_monitors(v, &[second])
    }

    /// qemu-storage-daemon with more monitors, at `{dir}/NAME` for each
    /// name; they listen by the time this returns.
    pub fn storage_daemon_with_monitors(v: QemuVersion, names: &[&str]) -> Qemu {
        let dir = tempdir();
        let sock = dir.path().join("qsd.sock");
        let mut args = vec![
            "--chardev".into(),
            format!("socket,path={},server=on,wait=off,id=m", sock.display()),
            "--monitor".into(),
            "chardev=m".into(),
        ];
        for (i, name) in names.iter().enumerate() {
            let path = dir.path().join(name);
            args.push("--chardev".into());
            args.push(format!(
                "socket,path={},server=on,wait=off,id=m{i}",
                path.display()
            ));
            args.push("--monitor".into());
            args.push(format!("chardev=m{i}"));
        }
        let others: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
        let qsd = Self::spawn_in(v, dir, STORAGE_DAEMON, args, Ready::Socket(sock));
        for other in &others {
            wait_listening(other);
        }
        // Past QEMU 7.2's start-up window (see spawn_in) before anyone
        // connects to the other monitors.
        std::thread::sleep(Duration::from_millis(50));
        qsd
    }

    /// qemu-storage-daemon with its monitor on TCP `host:port`.
    pub fn storage_daemon_tcp(v: QemuVersion, host: &str, port: u16) -> Qemu {
        let args = vec![
            "--chardev".into(),
            format!("socket,host={host},port={port},server=on,wait=off,id=m"),
            "--monitor".into(),
            "chardev=m".into(),
        ];
        Self::spawn_in(
            v,
            tempdir(),
            STORAGE_DAEMON,
            args,
            Ready::Tcp(host.into(), port),
        )
    }

    /// qemu-storage-daemon that connects to our socket at `path`
    /// (`server=off`), for accept mode.
    pub fn storage_daemon_connecting_to(v: QemuVersion, path: &Path) -> Qemu {
        let args = vec![
            "--chardev".into(),
            format!("socket,path={},server=off,id=m", path.display()),
            "--monitor".into(),
            "chardev=m".into(),
        ];
        Self::spawn_in(v, tempdir(), STORAGE_DAEMON, args, Ready::Started)
    }

    /// A stopped (`-S`) qemu-system-x86_64 `-M pc` with no devices.
    pub fn system(v: QemuVersion) -> Qemu {
        Self::system_with(v, &[])
    }

    /// With extra arguments; `{dir}` in them stands for the temp dir, so a
    /// second monitor is `["-qmp", "unix:{dir}/second.sock,server=on,wait=off"]`.
    pub fn system_with(v: QemuVersion, extra: &[&str]) -> Qemu {
        let dir = tempdir();
        let sock = dir.path().join("vm.sock");
        let mut args: Vec<String> = SYSTEM_MACHINE.iter().map(|s| s.to_string()).collect();
        args.push("-qmp".into());
        args.push(format!("unix:{},server=on,wait=off", sock.display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn_in(v, dir, SYSTEM_X86, args, Ready::Socket(sock))
    }

    /// Starts `program` with `args` in `dir` and waits until `ready`.
    ///
    /// QEMU 7.2 has a start-up window in which a client that connects and
    /// leaves can wedge the monitor for good (seen about once in a hundred
    /// starts, more under load). So readiness is proven, not guessed: after
    /// the socket listens (read from /proc, without connecting), a probe
    /// runs a whole session (greeting, negotiation, one command), closes,
    /// and QEMU must close its end too. If any step fails, that QEMU is
    /// killed and a fresh one started, up to three times.
    pub fn spawn_in(
        version: QemuVersion,
        dir: tempfile::TempDir,
        program: &str,
        args: Vec<String>,
        ready: Ready,
    ) -> Qemu {
        // `{dir}` in an argument stands for the private temp dir.
        let dir_text = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &dir_text)).collect();
        let socket = match &ready {
            Ready::Socket(p) => p.clone(),
            _ => PathBuf::new(),
        };
        let mut q = Qemu {
            child: start(version.command(program), &args, dir.path()),
            dir,
            socket,
            program: program.into(),
            version,
        };
        for attempt in 1.. {
            match q.prove_ready(&ready) {
                Ok(()) => return q,
                Err(why) if attempt < 3 => {
                    eprintln!("{program} was not ready ({why}); starting it again");
                    q.kill();
                    if let Ready::Socket(p) = &ready {
                        let _ = std::fs::remove_file(p);
                    }
                    q.child = start(version.command(program), &args, q.dir.path());
                }
                Err(why) => panic!("{program} never became ready: {why}: {}", q.stderr()),
            }
        }
        unreachable!()
    }

    fn prove_ready(&mut self, ready: &Ready) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = || match ready {
            Ready::Socket(p) => unix_listening(p),
            Ready::Tcp(_, port) | Ready::TcpNoProbe(_, port) => tcp_listening(*port),
            Ready::Started => true,
        };
        while !listening() {
            self.check_alive(deadline)?;
            std::thread::sleep(Duration::from_millis(2));
        }
        let connections = || match ready {
            Ready::Socket(p) => unix_connections(p),
            Ready::Tcp(_, port) | Ready::TcpNoProbe(_, port) => tcp_connections(*port),
            Ready::Started => 0,
        };
        let probe: Box<dyn ReadStream> = match ready {
            Ready::Started => return Ok(()),
            Ready::TcpNoProbe(..) => {
                // Past QEMU 7.2's start-up window, without a probe.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(());
            }
            Ready::Socket(p) => {
                std::thread::sleep(Duration::from_millis(50));
                Box::new(std::os::unix::net::UnixStream::connect(p).map_err(|e| e.to_string())?)
            }
            Ready::Tcp(host, port) => {
                std::thread::sleep(Duration::from_millis(50));
                Box::new(
                    std::net::TcpStream::connect((host.as_str(), *port))
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        probe_session(probe)?;
        let closed_by = Instant::now() + Duration::from_secs(3);
        while connections() > 0 {
            if Instant::now() > closed_by {
                return Err("QEMU kept the probe connection open".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // QEMU closes the socket a moment before it serves the next client.
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }

    fn check_alive(&mut self, deadline: Instant) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) before its monitor was ready: {}",
                self.program,
                self.stderr()
            );
        }
        if Instant::now() > deadline {
            return Err("its monitor did not listen within 20 s".into());
        }
        Ok(())
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

    /// The QEMU release this is.
    pub fn version(&self) -> QemuVersion {
        self.version
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

/// Waits (up to 10 s, then panics) until a unix socket listens at `path`:
/// a server this test started, such as `qmp demo` or `qmp proxy`.
pub fn wait_listening(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !unix_listening(path) {
        assert!(
            Instant::now() < deadline,
            "{} never listened",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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
        // under /tmp, which the QEMU roots share (see qemus.rs)
        .tempdir_in("/tmp")
        .expect("create temp dir")
}

/// A temp dir for a test's own files.
pub fn test_dir() -> tempfile::TempDir {
    tempdir()
}

/// Deterministic pseudo-random numbers (a 64-bit LCG), for generated test
/// input that a failure can name by its seed and replay.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// A process a test started (a proxy, a demo server), killed when the test
/// ends however it ends.
pub struct Started(pub Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the process with stderr going to `stderr.log` in `dir`.
fn start(mut command: Command, args: &[String], dir: &Path) -> Child {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr log");
    let program = format!("{:?}", command.get_program());
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A whole QMP session on a fresh connection: greeting, negotiation, one
/// command. Proves the monitor works; the connection closes on return.
fn probe_session(mut s: Box<dyn ReadStream>) -> Result<(), String> {
    use qmp_proto::{Decoder, Message};
    s.set_timeout(Some(Duration::from_secs(2)));
    let mut decoder = Decoder::new();
    let mut next = |s: &mut Box<dyn ReadStream>| -> Result<Message, String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = decoder.next_message().map_err(|e| e.to_string())? {
                return Ok(m);
            }
            let n = s.read(&mut buf).map_err(|e| format!("probe read: {e}"))?;
            if n == 0 {
                return Err("QEMU closed the probe connection".into());
            }
            decoder.feed(&buf[..n]);
        }
    };
    match next(&mut s)? {
        Message::Greeting(_) => {}
        other => return Err(format!("probe got {other:?} instead of a greeting")),
    }
    for request in [
        &b"{\"execute\":\"qmp_capabilities\"}\n"[..],
        b"{\"execute\":\"query-version\"}\n",
    ] {
        s.write_all(request)
            .map_err(|e| format!("probe write: {e}"))?;
        match next(&mut s)? {
            Message::Response(r) if r.result.is_ok() => {}
            other => return Err(format!("probe got {other:?}")),
        }
    }
    Ok(())
}

/// A raw connection to a monitor, for tests that compare QEMU's bytes with
/// ours: it frames what arrives (QEMU's output is not always JSON: it can
/// write `inf`) without parsing it.
pub struct RawPeer {
    pub stream: std::os::unix::net::UnixStream,
    decoder: qmp_proto::Decoder,
}

impl RawPeer {
    /// `quiet`: the longest the server may take to say anything.
    pub fn connect(path: &Path, quiet: Duration) -> RawPeer {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connect to the monitor");
        stream
            .set_read_timeout(Some(quiet))
            .expect("set a read timeout");
        RawPeer {
            stream,
            decoder: qmp_proto::Decoder::new(),
        }
    }

    /// Frames up to and including the one containing `marker`.
    pub fn read_until(&mut self, marker: &str) -> Vec<String> {
        self.read_frames(|frame, _| frame.contains(marker))
    }

    /// The next `n` frames.
    pub fn read_n(&mut self, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        self.read_frames(|_, count| count == n)
    }

    /// Frames until `done(last frame, frames so far)` holds.
    fn read_frames(&mut self, mut done: impl FnMut(&str, usize) -> bool) -> Vec<String> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            while let Some(f) = self.decoder.next_frame().expect("frames") {
                let text = String::from_utf8_lossy(f).into_owned();
                let stop = done(&text, frames.len() + 1);
                frames.push(text);
                if stop {
                    return frames;
                }
            }
            let n = self
                .stream
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("no answer in time ({e}); got so far: {frames:?}"));
            assert!(n > 0, "the connection closed; got so far: {frames:?}");
            self.decoder.feed(&buf[..n]);
        }
    }
}

/// Raw client input that exercises a QEMU session from negotiation to
/// out-of-band requests: every rule of N, R and O that a request can
/// trigger. Differential tests send it to QEMU and to ours and compare.
pub const SESSION_PHASES: &[&[u8]] = &[
    // negotiation phase: N1-N3, N5, and R checks that come first
    b"{\"execute\": \"query-version\", \"id\": 1}\n{\"execute\": \"nope\", \"id\": 2}\n",
    b"{\"exec-oob\": \"query-version\", \"id\": 3}\n",
    b"{\"exec-oob\": \"nope\", \"id\": \"3b\"}\n",
    b"{\"id\": 1,}\n[]\n{\"id\": 5}\n{\"execute\": 1}\n{\"execute\": \"query-version\", \"exec-oob\": \"x\", \"id\": 6}\n",
    b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"foo\": 1}, \"id\": 7}\n{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": null}, \"id\": 8}\n",
    b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"foo\"]}, \"id\": 9}\n{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [1]}, \"id\": 10}\n",
    b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"foo\": 1, \"enable\": \"x\"}, \"id\": 11}\n{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [], \"bar\": 2, \"foo\": 1}, \"id\": 12}\n",
    b"{\"execute\": \"qmp_capabilities\", \"arguments\": null, \"id\": 13}\n{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\", \"foo\"]}, \"id\": 14}\n",
    // N4: enable may repeat "oob"
    b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\", \"oob\"]}, \"id\": \"negotiated\"}\n",
    // N7 and the R rules, in band
    b"{\"execute\": \"qmp_capabilities\", \"id\": 20}\n{\"execute\": \"qmp_capabilities\", \"arguments\": {\"x\": 1}, \"id\": 21}\n",
    b"{\"execute\": \"query-version\", \"id\": \"s\"}\n{\"execute\": \"query-version\", \"id\": null}\n{\"execute\": \"query-version\", \"id\": {\"b\": [1, {}], \"a\": true}}\n{\"execute\": \"query-version\"}\n",
    b"{\"execute\": \"query-version\", \"arguments\": {\"zz\": 1, \"b\": 2, \"a\": 3}, \"id\": 22}\n{\"execute\": \"query-version\", \"arguments\": [], \"id\": 23}\n",
    b"{\"execute\": \"query-version\", \"exec-oob\": \"x\", \"id\": 24}\n{\"execute\": \"query-version\", \"foo\": 1, \"id\": 25}\n{\"arguments\": {}, \"id\": 26}\n",
    b"{\"execute\": \"no-such-cmd\", \"id\": 27}\n{\"execute\": \"Query-Version\", \"id\": 28}\n{\"execute\": \"query-version\", \"exec-oob\": 5, \"id\": 29}\n",
    b"{\"execute\": \"query-version\", \"arguments\": {}, \"id\": 30}\r\n  {'execute': 'query-version', 'id': 'single'}",
    b"\n\"scalar\"\n{\"id\": 31,,}\n",
    // out of band, one at a time (O1, R5)
    b"{\"exec-oob\": \"query-version\", \"id\": \"o1\"}\n",
    b"{\"exec-oob\": \"nope\", \"id\": \"o2\"}\n",
    b"{\"exec-oob\": 7, \"id\": \"o3\"}\n",
    b"{\"exec-oob\": \"query-version\", \"arguments\": 1, \"id\": \"o4\"}\n",
];
