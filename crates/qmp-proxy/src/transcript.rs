//! Transcripts of real QMP traffic: the format, the recorder the proxy
//! writes them with, and reading them back.
//!
//! A transcript is JSON lines. The first holds the greeting QEMU sent;
//! each later line is one message, with the seconds since the recording
//! began, the client it belongs to, and its direction:
//!
//! ```json
//! {"qmp-transcript": 1, "greeting": {"QMP": {"version": {...}, "capabilities": ["oob"]}}}
//! {"t": 0.0121, "client": 1, "dir": "request", "msg": {"execute": "stop", "id": 1}}
//! {"t": 0.0124, "dir": "event", "msg": {"timestamp": {...}, "event": "STOP"}}
//! {"t": 0.0125, "client": 1, "dir": "reply", "msg": {"return": {}, "id": 1}}
//! ```
//!
//! Requests and replies carry the client's own ids. A request that came
//! with file descriptors has `"fds": N` (the descriptors themselves cannot
//! be recorded). Events have no client: every client got them. Only what
//! reached QEMU is recorded; each client's negotiation and malformed
//! input were answered by its own session, as a replay answers them.

use qmp_client::{EventFilter, EventStream};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Direction of a recorded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Request,
    Reply,
    Event,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Request => "request",
            Dir::Reply => "reply",
            Dir::Event => "event",
        }
    }
}

/// One recorded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub t: f64,
    pub client: Option<u64>,
    pub dir: Dir,
    pub msg: Value,
    pub fds: usize,
}

impl Entry {
    pub fn to_line(&self) -> Value {
        let mut line = json!({"t": (self.t * 1e6).round() / 1e6});
        if let Some(c) = self.client {
            line["client"] = c.into();
        }
        line["dir"] = self.dir.name().into();
        line["msg"] = self.msg.clone();
        if self.fds > 0 {
            line["fds"] = self.fds.into();
        }
        line
    }
}

/// A whole transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The greeting as QEMU sent it.
    pub greeting: Value,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

impl Transcript {
    pub fn load(path: &Path) -> Result<Transcript, TranscriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| TranscriptError::Read {
            path: path.display().to_string(),
            source,
        })?;
        text.parse()
    }

    /// The transcript as JSON lines.
    pub fn to_lines(&self) -> String {
        let mut out = json!({"qmp-transcript": 1, "greeting": self.greeting}).to_string();
        out.push('\n');
        for e in &self.entries {
            out.push_str(&e.to_line().to_string());
            out.push('\n');
        }
        out
    }
}

impl std::str::FromStr for Transcript {
    type Err = TranscriptError;

    fn from_str(text: &str) -> Result<Transcript, TranscriptError> {
        let bad = |line: usize, message: String| TranscriptError::Line { line, message };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| bad(1, "empty: no greeting line".into()))?;
        let header: Value = serde_json::from_str(header).map_err(|e| bad(1, e.to_string()))?;
        if header["qmp-transcript"] != 1 || !header["greeting"]["QMP"].is_object() {
            return Err(bad(
                1,
                "expected {\"qmp-transcript\": 1, \"greeting\": {\"QMP\": ...}}".into(),
            ));
        }
        let mut entries = Vec::new();
        for (n, line) in lines {
            let v: Value = serde_json::from_str(line).map_err(|e| bad(n + 1, e.to_string()))?;
            let dir = match v["dir"].as_str() {
                Some("request") => Dir::Request,
                Some("reply") => Dir::Reply,
                Some("event") => Dir::Event,
                // A later greeting: QEMU came back (proxy --reconnect).
                Some("greeting") => continue,
                other => return Err(bad(n + 1, format!("unknown direction {other:?}"))),
            };
            if !v["msg"].is_object() {
                return Err(bad(n + 1, "\"msg\" must be an object".into()));
            }
            entries.push(Entry {
                t: v["t"].as_f64().unwrap_or(0.0),
                client: v["client"].as_u64(),
                dir,
                msg: v["msg"].clone(),
                fds: v["fds"].as_u64().unwrap_or(0) as usize,
            });
        }
        Ok(Transcript {
            greeting: header["greeting"].clone(),
            entries,
        })
    }
}

/// Writes a transcript while the proxy runs.
///
/// Events are taken from a subscription of their own, which QEMU's
/// reader fills before it routes the reply that follows them; so writing
/// the waiting events before each request and reply keeps them where they
/// stood. A pump writes the rest (events while no command runs).
pub struct Recorder {
    state: Mutex<State>,
    start: Instant,
    start_wall: f64,
}

struct State {
    file: File,
    events: Option<EventStream>,
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Recorder {
    pub fn create(path: &Path) -> io::Result<Arc<Recorder>> {
        Ok(Arc::new(Recorder {
            state: Mutex::new(State {
                file: File::create(path)?,
                events: None,
            }),
            start: Instant::now(),
            start_wall: wall_now(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts on a (new) upstream: its greeting, and its events from now.
    pub fn attach(&self, client: &qmp_client::Client) {
        let greeting = client
            .greeting()
            .map(|g| json!({"QMP": g}))
            .unwrap_or(Value::Null);
        let mut st = self.lock();
        let first = st.events.is_none();
        st.events = Some(client.events_with_capacity(EventFilter::all(), 65536));
        let line = if first {
            json!({"qmp-transcript": 1, "greeting": greeting})
        } else {
            json!({"t": self.start.elapsed().as_secs_f64(), "dir": "greeting", "msg": greeting})
        };
        write_line(&mut st.file, &line);
    }

    /// Writes the events waiting, then `entry` if any.
    fn write(&self, entry: Option<Entry>) {
        let mut st = self.lock();
        let mut waiting = Vec::new();
        if let Some(events) = st.events.as_mut() {
            while let Some(item) = events.try_next() {
                match item {
                    Ok(e) => waiting.push(e),
                    Err(lost) => tracing::error!("the transcript missed events: {lost}"),
                }
            }
        }
        for e in waiting {
            let wall = e.timestamp.seconds as f64 + e.timestamp.microseconds as f64 / 1e6;
            let entry = Entry {
                t: (wall - self.start_wall).max(0.0),
                client: None,
                dir: Dir::Event,
                msg: e.to_value(),
                fds: 0,
            };
            write_line(&mut st.file, &entry.to_line());
        }
        if let Some(entry) = entry {
            write_line(&mut st.file, &entry.to_line());
        }
    }

    pub fn request(&self, client: u64, msg: Value, fds: usize) {
        let t = self.start.elapsed().as_secs_f64();
        self.write(Some(Entry {
            t,
            client: Some(client),
            dir: Dir::Request,
            msg,
            fds,
        }));
    }

    pub fn reply(&self, client: u64, msg: Value) {
        let t = self.start.elapsed().as_secs_f64();
        self.write(Some(Entry {
            t,
            client: Some(client),
            dir: Dir::Reply,
            msg,
            fds: 0,
        }));
    }

    /// Writes events that arrive while no command runs, until dropped.
    pub async fn pump(self: Arc<Self>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.write(None);
        }
    }
}

fn write_line(file: &mut File, line: &Value) {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    if let Err(e) = file.write_all(&bytes) {
        tracing::error!("cannot write the transcript: {e}");
    }
}
