//! Many connections at once, for the scale tests and benchmarks: the
//! descriptor limit they need, negotiated idle connections, and the
//! resident memory of a process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Raises this process's limit on open descriptors to at least `needed`
/// (the soft limit up to the hard one; the hard one too when running as
/// root). Children inherit it. Panics, naming the limit, if it cannot.
pub fn raise_fd_limit(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= needed {
        return;
    }
    let hard = if hard < needed && setrlimit(Resource::RLIMIT_NOFILE, needed, needed).is_ok() {
        needed
    } else {
        hard
    };
    assert!(
        hard >= needed,
        "this test needs {needed} open descriptors, and the hard limit is {hard}: \
         raise it (ulimit -Hn, or run as root)"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

/// One negotiated connection that stays idle: the greeting read,
/// `qmp_capabilities` answered.
pub struct Idle {
    reader: BufReader<UnixStream>,
}

impl Idle {
    /// Connects to the server at `socket` and negotiates.
    pub fn connect(socket: &Path) -> std::io::Result<Idle> {
        let stream = UnixStream::connect(socket)?;
        let mut idle = Idle {
            reader: BufReader::with_capacity(512, stream),
        };
        idle.line()?;
        idle.send(b"{\"execute\": \"qmp_capabilities\"}\n")?;
        let reply = idle.line()?;
        if !reply.contains("\"return\"") {
            return Err(std::io::Error::other(format!(
                "negotiation failed: {reply}"
            )));
        }
        Ok(idle)
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one line (a message; events included).
    pub fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    /// Reads lines until a reply (`return` or `error`), skipping events
    /// (which QEMU, and so our servers, start with their timestamp).
    pub fn reply(&mut self) -> std::io::Result<String> {
        loop {
            let line = self.line()?;
            if !line.starts_with("{\"timestamp\"") {
                return Ok(line);
            }
        }
    }

    /// Whether the server closed the connection (without waiting).
    pub fn closed_by_peer(&mut self) -> bool {
        let stream = self.reader.get_mut();
        let _ = stream.set_nonblocking(true);
        let mut byte = [0u8; 1];
        let closed = matches!(stream.read(&mut byte), Ok(0));
        let _ = stream.set_nonblocking(false);
        closed
    }
}

/// `count` negotiated connections to `socket`, opened one after another.
pub fn idle_connections(socket: &Path, count: usize) -> Vec<Idle> {
    (0..count)
        .map(|i| {
            Idle::connect(socket)
                .unwrap_or_else(|e| panic!("connection {i} to {}: {e}", socket.display()))
        })
        .collect()
}

/// Sends one `query-version` on each connection, with its index as id,
/// then reads every reply: all of them in flight at once. The replies,
/// in connection order.
pub fn query_version_on_each(crowd: &mut [Idle]) -> std::io::Result<Vec<String>> {
    for (i, c) in crowd.iter_mut().enumerate() {
        c.send(format!("{{\"execute\": \"query-version\", \"id\": {i}}}\n").as_bytes())?;
    }
    crowd.iter_mut().map(Idle::reply).collect()
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}
