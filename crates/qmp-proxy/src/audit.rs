//! The audit log: one JSON line per command a client sent through the
//! proxy, written when its outcome is known.
//!
//! ```json
//! {"time": "2026-11-21T10:00:00.123456Z", "listener": "/run/ro.sock", "client": 3,
//!  "uid": 1000, "pid": 4242, "identity": null, "command": "blockdev-add", "arguments": {...},
//!  "oob": false, "outcome": "error", "class": "GenericError", "latency-us": 181}
//! ```
//!
//! `outcome` is `return`, `error` (with `class`), `denied` (refused by the
//! policy, never sent to QEMU) or `lost` (QEMU went away first). `uid` and
//! `pid` are `null` over TCP; `identity`, the subject of a TLS client's
//! certificate (`CN=alice,O=example`), is `null` elsewhere. Arguments the policy redacts read
//! `"<redacted>"`; a string longer than 256 bytes is cut there (with its
//! length noted), and arguments still over 4 KiB are replaced by their
//! size, so no client can make a line large.
//!
//! The file is created mode 0600. Strict mode (`--audit-strict`) fails
//! closed: a `sent` line is written before a command goes to QEMU, and a
//! command whose line cannot be written is refused.

use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// QEMU returned a value.
    Return,
    /// QEMU answered with an error of this class.
    Error(String),
    /// The policy refused it (or strict auditing could not log it).
    Denied,
    /// QEMU went away before answering.
    Lost,
}

/// Who sent a command, and through which listener.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The listener it came through, as written.
    pub listener: String,
    /// The proxy's number for the connection (1, 2, ... from start-up).
    pub client: u64,
    /// The peer's uid (unix listeners only).
    pub uid: Option<u32>,
    /// The peer's pid (unix listeners only).
    pub pid: Option<i32>,
    /// The subject of the peer's certificate (TLS listeners with
    /// `client-ca` only), such as `CN=alice,O=example`.
    pub identity: Option<String>,
}

/// An append-only log file, shared by every connection.
pub struct AuditLog {
    file: Mutex<File>,
    strict: bool,
}

/// Longest string kept whole in a logged argument.
const MAX_STRING: usize = 256;
/// Largest arguments logged at all (as JSON text).
const MAX_ARGUMENTS: usize = 4096;

/// `arguments` made small enough to log: long strings cut, and the whole
/// replaced by its size if it is still too large.
pub fn capped(arguments: Value) -> Value {
    fn cut(v: &mut Value) {
        match v {
            Value::String(s) if s.len() > MAX_STRING => {
                let mut end = MAX_STRING;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                *s = format!("{}... ({} bytes)", &s[..end], s.len());
            }
            Value::Array(items) => items.iter_mut().for_each(cut),
            Value::Object(members) => members.values_mut().for_each(cut),
            _ => {}
        }
    }
    let mut arguments = arguments;
    cut(&mut arguments);
    let size = arguments.to_string().len();
    if size > MAX_ARGUMENTS {
        Value::String(format!("<{size} bytes of arguments, not logged>"))
    } else {
        arguments
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log for appending; `strict`:
    /// fail closed (see the module's notes).
    pub fn open(path: &Path, strict: bool) -> io::Result<AuditLog> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
            strict,
        })
    }

    /// Whether commands must be logged before they are sent.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// In strict mode: the line written before a command is sent. An error
    /// means the command must not be sent.
    pub fn sent(
        &self,
        who: &ClientInfo,
        command: &str,
        arguments: Value,
        oob: bool,
    ) -> io::Result<()> {
        self.write(who, command, arguments, oob, "sent", None, None)
    }

    /// Appends one line. Each line is one `write`, so lines never mix.
    pub fn record(
        &self,
        who: &ClientInfo,
        command: &str,
        arguments: Value,
        oob: bool,
        outcome: &Outcome,
        latency: Duration,
    ) {
        let (outcome, class) = match outcome {
            Outcome::Return => ("return", None),
            Outcome::Error(class) => ("error", Some(class.as_str())),
            Outcome::Denied => ("denied", Some("CommandNotFound")),
            Outcome::Lost => ("lost", None),
        };
        if let Err(e) = self.write(who, command, arguments, oob, outcome, class, Some(latency)) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        who: &ClientInfo,
        command: &str,
        arguments: Value,
        oob: bool,
        outcome: &str,
        class: Option<&str>,
        latency: Option<Duration>,
    ) -> io::Result<()> {
        let arguments = capped(arguments);
        let mut line = json!({
            "time": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "listener": who.listener,
            "client": who.client,
            "uid": who.uid,
            "pid": who.pid,
            "identity": who.identity,
            "command": command,
            "arguments": arguments,
            "oob": oob,
            "outcome": outcome,
        });
        if let Some(class) = class {
            line["class"] = class.into();
        }
        if let Some(latency) = latency {
            line["latency-us"] = (latency.as_micros() as u64).into();
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&bytes)?;
        file.flush()
    }
}
