//! Helpers for people who read transcripts: a readable view ([`show`]), a
//! canonical form that diffs well in review ([`normalize`]), and a check
//! of every recorded request against a QEMU's schema ([`check`]).

use super::{command_of, pairing_key, reply_of, Dir, Entry, Transcript};
use qmp_server::schema::Schema;
use qmp_server::session::QmpError;
use qmp_server::QObject;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::{self, Write};

/// `value` as compact JSON, cut to `max` characters when given.
fn clip(value: &Value, max: Option<usize>) -> String {
    let text = value.to_string();
    match max {
        Some(max) if text.chars().count() > max => {
            let kept: String = text.chars().take(max).collect();
            format!("{kept}… ({} bytes)", text.len())
        }
        _ => text,
    }
}

/// A readable view: the greeting, then one line per message with its
/// time, client and direction. JSON values longer than `max` characters
/// are cut (`None`: never).
///
/// ```text
/// QEMU 7.2.0, capabilities: oob
///   0.004211  client 1  > query-jobs {}  id 1
///   0.004530  client 1  < []  id 1
///   0.009001  event     JOB_STATUS_CHANGE {"id":"j1","status":"created"}
/// ```
pub fn show(t: &Transcript, max: Option<usize>) -> String {
    let g = &t.greeting["QMP"];
    let q = &g["version"]["qemu"];
    let package = g["version"]["package"].as_str().unwrap_or_default().trim();
    let caps: Vec<&str> = g["capabilities"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = format!("QEMU {}.{}.{}", q["major"], q["minor"], q["micro"]);
    if !package.is_empty() {
        let _ = write!(out, " ({package})");
    }
    let caps = if caps.is_empty() {
        "none".to_owned()
    } else {
        caps.join(", ")
    };
    let _ = writeln!(out, ", capabilities: {caps}");
    let timed = t.entries.iter().any(|e| e.t.is_some());
    for e in &t.entries {
        let mut line = String::new();
        if timed {
            let _ = write!(line, "{:>10.6}  ", e.t.unwrap_or(0.0));
        }
        let who = match e.client {
            Some(c) if e.dir != Dir::Event => format!("client {c}"),
            _ => "event".to_owned(),
        };
        let _ = write!(line, "{who:<8}  ");
        let m = &e.msg;
        match e.dir {
            Dir::Request => {
                let (command, oob) = command_of(m).unwrap_or(("?", false));
                let oob = if oob { "oob " } else { "" };
                let args = m.get("arguments").cloned().unwrap_or_else(|| json!({}));
                let _ = write!(line, "> {oob}{command} {}", clip(&args, max));
            }
            Dir::Reply => match (m.get("return"), m.get("error")) {
                (Some(r), _) => {
                    let _ = write!(line, "< {}", clip(r, max));
                }
                (None, Some(err)) => {
                    let class = err["class"].as_str().unwrap_or("?");
                    let desc = err["desc"].as_str().unwrap_or_default();
                    let _ = write!(line, "< error {class}: {desc}");
                }
                (None, None) => {
                    let _ = write!(line, "< {}", clip(m, max));
                }
            },
            Dir::Event => {
                let name = m["event"].as_str().unwrap_or("?");
                let _ = write!(line, "{name}");
                if let Some(data) = m.get("data") {
                    let _ = write!(line, " {}", clip(data, max));
                }
            }
        }
        if e.dir != Dir::Event {
            if let Some(id) = m.get("id") {
                let _ = write!(line, "  id {id}");
            }
        }
        if e.fds > 0 {
            let s = if e.fds == 1 { "" } else { "s" };
            let _ = write!(line, "  [{} fd{s}]", e.fds);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The canonical form of a transcript, so that two recordings of the same
/// conversation are equal line for line however the client chose its ids
/// and however long QEMU took:
///
/// * clients are numbered 1, 2, ... in order of first appearance;
/// * each client's requests that carry an id get ids 1, 2, ... in order,
///   and their replies the same (requests without an id keep none);
/// * times are dropped, and event timestamps set to zero;
/// * object members are sorted by key, everywhere.
///
/// A normalized transcript still replays; its events are stamped with the
/// replay's own clock.
pub fn normalize(t: &Transcript) -> Transcript {
    let mut clients: HashMap<u64, u64> = HashMap::new();
    let mut next_id: HashMap<Option<u64>, u64> = HashMap::new();
    let mut open: HashMap<(Option<u64>, String), u64> = HashMap::new();
    let mut entries = Vec::with_capacity(t.entries.len());
    for e in &t.entries {
        let mut msg = e.msg.clone();
        let client = e.client.map(|c| {
            let n = clients.len() as u64 + 1;
            *clients.entry(c).or_insert(n)
        });
        match e.dir {
            Dir::Request if msg.get("id").is_some() => {
                let n = next_id.entry(client).or_insert(0);
                *n += 1;
                open.insert(pairing_key(e), *n);
                msg["id"] = (*n).into();
            }
            Dir::Reply if msg.get("id").is_some() => {
                if let Some(n) = open.remove(&pairing_key(e)) {
                    msg["id"] = n.into();
                }
            }
            Dir::Event if msg.get("timestamp").is_some() => {
                msg["timestamp"] = json!({"seconds": 0, "microseconds": 0});
            }
            _ => {}
        }
        msg.sort_all_objects();
        entries.push(Entry {
            t: None,
            client,
            dir: e.dir,
            msg,
            fds: e.fds,
            line: 0,
        });
    }
    let mut greeting = t.greeting.clone();
    greeting.sort_all_objects();
    Transcript { greeting, entries }
}

/// A recorded request that the schema's QEMU would refuse.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where the request is in the file (0 if not read from one).
    pub line: usize,
    /// The client that sent it.
    pub client: Option<u64>,
    /// Its command.
    pub command: String,
    /// Its arguments.
    pub arguments: Value,
    /// What that QEMU would answer.
    pub failure: QmpError,
    /// The recorded reply was this very error: the recording's QEMU
    /// refused it too.
    pub as_recorded: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} {}: {}: {}",
            self.line, self.command, self.arguments, self.failure.class, self.failure.desc
        )?;
        if self.as_recorded {
            write!(f, " (the recorded QEMU refused it the same way)")?;
        }
        Ok(())
    }
}

/// What a QEMU with `schema` would say to a request before running it:
/// an unknown command, `exec-oob` of a command without oob, or arguments
/// its schema does not accept.
fn refusal(schema: &Schema, command: &str, oob: bool, msg: &Value) -> Option<QmpError> {
    let Some(allows_oob) = schema.allow_oob(command) else {
        return Some(QmpError::not_found(format!(
            "The command {command} has not been found"
        )));
    };
    if oob && !allows_oob {
        return Some(QmpError::generic(format!(
            "The command {command} does not support OOB"
        )));
    }
    let arguments = msg.get("arguments").cloned().unwrap_or_else(|| json!({}));
    match QObject::from(&arguments) {
        QObject::Dict(args) => qmp_server::schema::check_arguments(schema, command, &args).err(),
        _ => Some(QmpError::generic(
            "QMP input member 'arguments' must be an object",
        )),
    }
}

/// Every recorded request that a QEMU with `schema` would refuse, with the
/// error it would give.
pub fn check(t: &Transcript, schema: &Schema) -> Vec<Problem> {
    // the recorded error for each request, found by pairing replies
    let mut open: HashMap<(Option<u64>, String), usize> = HashMap::new();
    let mut recorded: HashMap<usize, QmpError> = HashMap::new();
    for (i, e) in t.entries.iter().enumerate() {
        match e.dir {
            Dir::Request => {
                open.insert(pairing_key(e), i);
            }
            Dir::Reply => {
                if let (Some(req), Err(failure)) = (open.remove(&pairing_key(e)), reply_of(&e.msg))
                {
                    recorded.insert(req, failure);
                }
            }
            Dir::Event => {}
        }
    }
    let mut problems = Vec::new();
    for (i, e) in t.entries.iter().enumerate() {
        if e.dir != Dir::Request {
            continue;
        }
        let Some((command, oob)) = command_of(&e.msg) else {
            continue;
        };
        if let Some(failure) = refusal(schema, command, oob, &e.msg) {
            problems.push(Problem {
                line: e.line,
                client: e.client,
                command: command.to_owned(),
                arguments: e.msg.get("arguments").cloned().unwrap_or(json!({})),
                as_recorded: recorded.get(&i) == Some(&failure),
                failure,
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(lines: &[Value]) -> Transcript {
        let mut text = json!({"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}}).to_string();
        for l in lines {
            text.push('\n');
            text.push_str(&l.to_string());
        }
        text.parse().unwrap()
    }

    /// One conversation as two clients recorded it: different ids, client
    /// numbers, key order, times and event timestamps.
    fn two_recordings() -> (Transcript, Transcript) {
        let a = transcript(&[
            json!({"t": 0.1, "client": 4, "dir": "request", "msg": {"execute": "query-jobs", "id": "a-1"}}),
            json!({"t": 0.2, "client": 4, "dir": "reply", "msg": {"return": [], "id": "a-1"}}),
            json!({"t": 0.3, "client": 4, "dir": "request", "msg": {"execute": "stop"}}),
            json!({"t": 0.35, "dir": "event", "msg": {"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 5}}}),
            json!({"t": 0.4, "client": 4, "dir": "reply", "msg": {"return": {}}}),
            json!({"t": 0.5, "client": 4, "dir": "request", "msg": {"execute": "x", "arguments": {"b": 1, "a": {"d": 2, "c": 3}}, "id": "a-2"}}),
            json!({"t": 0.6, "client": 4, "dir": "reply", "msg": {"id": "a-2", "return": {"z": 1, "y": 2}}}),
        ]);
        let b = transcript(&[
            json!({"t": 2.0, "client": 1, "dir": "request", "msg": {"id": 100, "execute": "query-jobs"}}),
            json!({"t": 2.5, "client": 1, "dir": "reply", "msg": {"return": [], "id": 100}}),
            json!({"t": 3.0, "client": 1, "dir": "request", "msg": {"execute": "stop"}}),
            json!({"t": 3.1, "dir": "event", "msg": {"timestamp": {"seconds": 1800000000, "microseconds": 9}, "event": "STOP"}}),
            json!({"t": 3.2, "client": 1, "dir": "reply", "msg": {"return": {}}}),
            json!({"t": 4.0, "client": 1, "dir": "request", "msg": {"id": 101, "arguments": {"a": {"c": 3, "d": 2}, "b": 1}, "execute": "x"}}),
            json!({"t": 4.1, "client": 1, "dir": "reply", "msg": {"return": {"y": 2, "z": 1}, "id": 101}}),
        ]);
        (a, b)
    }

    #[test]
    fn two_recordings_of_one_conversation_normalize_to_the_same_text() {
        let (a, b) = two_recordings();
        assert_ne!(a.to_lines(), b.to_lines());
        let na = normalize(&a).to_lines();
        assert_eq!(na, normalize(&b).to_lines());
        let lines: Vec<&str> = na.lines().collect();
        assert_eq!(
            lines[1],
            r#"{"client":1,"dir":"request","msg":{"execute":"query-jobs","id":1}}"#
        );
        assert_eq!(
            lines[3],
            r#"{"client":1,"dir":"request","msg":{"execute":"stop"}}"#
        );
        assert_eq!(
            lines[4],
            r#"{"dir":"event","msg":{"event":"STOP","timestamp":{"microseconds":0,"seconds":0}}}"#
        );
        assert_eq!(
            lines[6],
            r#"{"client":1,"dir":"request","msg":{"arguments":{"a":{"c":3,"d":2},"b":1},"execute":"x","id":2}}"#
        );
        assert_eq!(
            lines[7],
            r#"{"client":1,"dir":"reply","msg":{"id":2,"return":{"y":2,"z":1}}}"#
        );
        // normalizing twice changes nothing
        let again: Transcript = na.parse().unwrap();
        assert_eq!(normalize(&again).to_lines(), na);
    }

    #[test]
    fn ids_pair_per_client_even_when_clients_reuse_them() {
        let t = transcript(&[
            json!({"client": 1, "dir": "request", "msg": {"execute": "a", "id": "x"}}),
            json!({"client": 2, "dir": "request", "msg": {"execute": "b", "id": "x"}}),
            json!({"client": 2, "dir": "request", "msg": {"execute": "c", "id": "y"}}),
            json!({"client": 2, "dir": "reply", "msg": {"return": 2, "id": "y"}}),
            json!({"client": 1, "dir": "reply", "msg": {"return": 1, "id": "x"}}),
            json!({"client": 2, "dir": "reply", "msg": {"return": 3, "id": "x"}}),
        ]);
        let n = normalize(&t);
        let ids: Vec<(u64, Value, Value)> = n
            .entries
            .iter()
            .map(|e| {
                let payload = e.msg.get("execute").or(e.msg.get("return")).unwrap();
                (e.client.unwrap(), payload.clone(), e.msg["id"].clone())
            })
            .collect();
        assert_eq!(
            ids,
            [
                (1, json!("a"), json!(1)),
                (2, json!("b"), json!(1)),
                (2, json!("c"), json!(2)),
                (2, json!(2), json!(2)),
                (1, json!(1), json!(1)),
                (2, json!(3), json!(1)),
            ]
        );
    }

    #[test]
    fn show_gives_one_readable_line_per_message() {
        let mut t = transcript(&[
            json!({"t": 0.5, "client": 1, "dir": "request", "msg": {"exec-oob": "query-yank", "id": 7}}),
            json!({"t": 0.5, "client": 1, "dir": "request", "msg": {"execute": "getfd", "arguments": {"fdname": "f"}, "id": 8}, "fds": 1}),
            json!({"t": 0.75, "dir": "event", "msg": {"event": "JOB_STATUS_CHANGE", "data": {"id": "j1", "status": "created"}, "timestamp": {"seconds": 1, "microseconds": 2}}}),
            json!({"t": 1.0, "client": 1, "dir": "reply", "msg": {"return": [], "id": 7}}),
            json!({"t": 1.25, "client": 1, "dir": "reply", "msg": {"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}, "id": 8}}),
        ]);
        assert_eq!(
            show(&t, None),
            "QEMU 7.2.0 (Debian 1:7.2), capabilities: oob\n\
             \x20 0.500000  client 1  > oob query-yank {}  id 7\n\
             \x20 0.500000  client 1  > getfd {\"fdname\":\"f\"}  id 8  [1 fd]\n\
             \x20 0.750000  event     JOB_STATUS_CHANGE {\"id\":\"j1\",\"status\":\"created\"}\n\
             \x20 1.000000  client 1  < []  id 7\n\
             \x20 1.250000  client 1  < error GenericError: No file descriptor supplied via SCM_RIGHTS  id 8\n"
        );
        t.entries.truncate(2);
        let cut = show(&normalize(&t), Some(5));
        assert!(
            cut.ends_with("client 1  > getfd {\"fdn… (14 bytes)  id 2  [1 fd]\n"),
            "{cut}"
        );
    }
}
