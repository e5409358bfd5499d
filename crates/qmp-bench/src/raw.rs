//! A raw socket client, no library: write one request, read until its
//! reply's line ends, repeat. The floor any client pays, and the probe
//! that measures the proxy without a client library in the way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A negotiated (oob on) connection doing one `query-version` at a time.
pub(crate) struct Raw {
    s: UnixStream,
    buf: Vec<u8>,
    have: usize,
    next_id: u64,
    req: Vec<u8>,
}

impl Raw {
    pub(crate) fn connect(path: &Path) -> Raw {
        let mut raw = Raw {
            s: UnixStream::connect(path).unwrap(),
            buf: vec![0u8; 65536],
            have: 0,
            next_id: 1,
            req: Vec::with_capacity(64),
        };
        raw.line(); // greeting
        raw.s
            .write_all(
                b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]},\"id\":0}\n",
            )
            .unwrap();
        raw.line();
        raw
    }

    /// The next line the server sent, without its `\r\n`.
    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(pos) = self.buf[..self.have].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..pos].to_vec();
                self.buf.copy_within(pos + 2..self.have, 0);
                self.have -= pos + 2;
                return line;
            }
            let k = self.s.read(&mut self.buf[self.have..]).unwrap();
            assert!(k > 0, "EOF");
            self.have += k;
        }
    }

    /// One `query-version`; how long it took.
    pub(crate) fn roundtrip(&mut self) -> Duration {
        self.req.clear();
        writeln!(
            self.req,
            "{{\"execute\":\"query-version\",\"id\":{}}}",
            self.next_id
        )
        .unwrap();
        self.next_id += 1;
        let t0 = Instant::now();
        self.s.write_all(&self.req).unwrap();
        let line = self.line();
        debug_assert!(line.starts_with(b"{\"return\""));
        t0.elapsed()
    }
}
