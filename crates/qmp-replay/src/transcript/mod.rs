//! Transcripts of real QMP traffic: the format, and reading them back.
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
//! be recorded). Events have no client: every client got them. Every
//! command a client ran is recorded with the reply it got, whether QEMU
//! gave it or the proxy did (an unknown command, a policy's refusal), so
//! that a replay answers as the client was answered. Negotiation and
//! malformed input are not: each client's own session answered them, as a
//! replay's session does. Arguments the listener's policy redacts are
//! recorded as `"<redacted>"`, which a replay takes to match any value.
//!
//! `t` is optional: a [`normalize`]d transcript has none, and its events'
//! timestamps are zero (a replay stamps those with its own clock).
//!
//! The proxy of `qmp-proxy` writes them. [`show`], [`normalize`] and
//! [`check`] are for people reading transcripts and for review diffs.

mod review;

pub use review::{check, normalize, show, Problem};

/// What an argument redacted by a policy reads in a transcript (and in the
/// proxy's audit log). A replay takes it to match any value.
pub const REDACTED: &str = "<redacted>";

use qmp_server::session::QmpError;
use serde_json::{json, Value};
use std::io;
use std::path::Path;

/// Direction of a recorded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// A client's request.
    Request,
    /// The reply that client got.
    Reply,
    /// An event (every client got it).
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

/// The key that pairs a request with its reply: the client and its id
/// (as JSON text; "" for a request without one).
pub(crate) fn pairing_key(e: &Entry) -> (Option<u64>, String) {
    (
        e.client,
        e.msg.get("id").map(Value::to_string).unwrap_or_default(),
    )
}

/// A request's command name and whether it came as `exec-oob`.
pub(crate) fn command_of(msg: &Value) -> Option<(&str, bool)> {
    match (msg.get("execute"), msg.get("exec-oob")) {
        (Some(c), _) => c.as_str().map(|c| (c, false)),
        (None, Some(c)) => c.as_str().map(|c| (c, true)),
        (None, None) => None,
    }
}

/// A recorded reply: its return value, or its error.
pub(crate) fn reply_of(msg: &Value) -> Result<Value, QmpError> {
    match msg.get("error") {
        Some(err) => Err(QmpError {
            class: err["class"].as_str().unwrap_or("GenericError").into(),
            desc: err["desc"].as_str().unwrap_or_default().into(),
        }),
        None => Ok(msg.get("return").cloned().unwrap_or(Value::Null)),
    }
}

/// One recorded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Seconds since the recording began; none once normalized.
    pub t: Option<f64>,
    /// The client it belongs to; none for events.
    pub client: Option<u64>,
    /// Which way it went.
    pub dir: Dir,
    /// The message, with the client's own id.
    pub msg: Value,
    /// How many file descriptors came with a request.
    pub fds: usize,
    /// The line of the file it was read from (0 when not read).
    pub line: usize,
}

impl Entry {
    /// The entry as its transcript line.
    pub fn to_line(&self) -> Value {
        let mut line = json!({});
        if let Some(t) = self.t {
            line["t"] = ((t * 1e6).round() / 1e6).into();
        }
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
    /// Every message after it, in order.
    pub entries: Vec<Entry>,
}

/// Why a transcript could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscriptError {
    #[error("cannot read {path}: {source}")]
    /// The file could not be read.
    Read {
        /// The file.
        path: String,
        /// What the system said.
        source: io::Error,
    },
    #[error("line {line}: {message}")]
    /// A line is not a transcript line.
    Line {
        /// Its number, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

impl Transcript {
    /// Reads the transcript in the file at `path`.
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
                Some(other) => return Err(bad(n + 1, format!("unknown direction \"{other}\""))),
                None => {
                    return Err(bad(
                        n + 1,
                        "\"dir\" must be \"request\", \"reply\" or \"event\"".into(),
                    ))
                }
            };
            if !v["msg"].is_object() {
                return Err(bad(n + 1, "\"msg\" must be an object".into()));
            }
            entries.push(Entry {
                t: v["t"].as_f64(),
                client: v["client"].as_u64(),
                dir,
                msg: v["msg"].clone(),
                fds: v["fds"].as_u64().unwrap_or(0) as usize,
                line: n + 1,
            });
        }
        Ok(Transcript {
            greeting: header["greeting"].clone(),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0}, "package": ""}, "capabilities": []}}}"#;

    #[test]
    fn bad_lines_are_named_in_plain_words() {
        let e = format!("{HEADER}\n{{\"t\": 0, \"dir\": \"bogus\", \"msg\": {{}}}}\n")
            .parse::<Transcript>()
            .unwrap_err();
        assert_eq!(e.to_string(), "line 2: unknown direction \"bogus\"");
        let e = format!("{HEADER}\n{{\"t\": 0, \"msg\": {{}}}}\n")
            .parse::<Transcript>()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: \"dir\" must be \"request\", \"reply\" or \"event\""
        );
    }
}
