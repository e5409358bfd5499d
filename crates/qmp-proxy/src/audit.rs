//! The audit log: one JSON line per command a client sent through the
//! proxy, written when its outcome is known.
//!
//! ```json
//! {"time": "2026-11-21T10:00:00.123456Z", "listener": "/run/ro.sock", "client": 3,
//!  "uid": 1000, "pid": 4242, "command": "blockdev-add", "arguments": {...},
//!  "oob": false, "outcome": "error", "class": "GenericError", "latency-us": 181}
//! ```
//!
//! `outcome` is `return`, `error` (with `class`), `denied` (refused by the
//! policy, never sent to QEMU) or `lost` (QEMU went away first). `uid` and
//! `pid` are `null` over TCP. Arguments the policy redacts read
//! `"<redacted>"`.

use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Return,
    Error(String),
    Denied,
    Lost,
}

/// Who sent a command, and through which listener.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub listener: String,
    pub client: u64,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

/// An append-only log file, shared by every connection.
pub struct AuditLog {
    file: Mutex<File>,
}

impl AuditLog {
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
        })
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
        let mut line = json!({
            "time": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "listener": who.listener,
            "client": who.client,
            "uid": who.uid,
            "pid": who.pid,
            "command": command,
            "arguments": arguments,
            "oob": oob,
            "outcome": outcome,
        });
        if let Some(class) = class {
            line["class"] = class.into();
        }
        line["latency-us"] = (latency.as_micros() as u64).into();
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&bytes) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
}
