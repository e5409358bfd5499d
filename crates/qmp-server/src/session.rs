//! One QMP session as QEMU's monitor runs it, without I/O.
//!
//! ```
//! use qmp_server::session::{CommandSet, Session, SessionConfig, Step};
//!
//! /// One command, `stop`, not allowed out of band.
//! struct Commands;
//! impl CommandSet for Commands {
//!     fn allow_oob(&self, command: &str) -> Option<bool> {
//!         (command == "stop").then_some(false)
//!     }
//! }
//!
//! let config = SessionConfig {
//!     version: qmp_proto::Version::new(10, 0, 0, ""),
//!     offer_oob: false,
//!     pretty: false,
//! };
//! let mut session = Session::new(config, Commands);
//! let mut out = session.greeting();
//! let input = b"{'execute': 'qmp_capabilities'} {'execute': 'stop', 'id': 7} {'execute': 'nope'}";
//! let mut rest: &[u8] = input;
//! while !rest.is_empty() || !session.is_idle() {
//!     let mut ready = Vec::new(); // exec-oob requests, dispatched as read
//!     let used = session.feed(rest, &mut ready);
//!     rest = &rest[used..];
//!     while let Some(step) = session.next_inband() {
//!         match step {
//!             Step::Reply(bytes) => out.extend(bytes),
//!             // run it (here: at once), then answer
//!             Step::Call(call) => out.extend(session.reply(&call, Ok(None))),
//!         }
//!     }
//! }
//! let text = String::from_utf8(out).unwrap();
//! let lines: Vec<&str> = text.lines().collect();
//! assert_eq!(lines[1], r#"{"return": {}}"#);
//! assert_eq!(lines[2], r#"{"return": {}, "id": 7}"#);
//! assert_eq!(
//!     lines[3],
//!     r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#
//! );
//! ```
//!
//! The transport feeds input with [`Session::feed`], which reads it the way
//! QEMU does: byte by byte, stopping as soon as the in-band queue is full
//! (one request without oob, eight with it, rule O3). The caller keeps the
//! bytes not consumed and offers them again when [`Session::wants_input`]
//! says so.
//!
//! Requests for `exec-oob` are dispatched the moment they are read (O1);
//! every other message, parse errors included, waits in the in-band queue
//! and is taken, strictly in order, with [`Session::next_inband`] (P3).
//! Each dispatch is a [`Step`]: either a reply that is already decided
//! (every error QEMU raises before running a command, and the whole of
//! `qmp_capabilities`), or a [`Call`] for the embedder to run, answered
//! with [`Session::reply`].
//!
//! Checks run in QEMU's order with QEMU's texts: the request's members in
//! QEMU's hash order (R3), then the command lookup (R4), then oob support
//! (R5). Before negotiation only `qmp_capabilities` exists, and any
//! "not found" is reworded as QEMU does (N2). Argument checking of other
//! commands is the embedder's (or its schema validator's) job.

use qmp_proto::qemu_json::{first_unexpected, to_line, Dialect, Parsed, QDict, QObject, Streamer};
use qmp_proto::Version;
use std::collections::VecDeque;

/// What the session needs to know about the commands it serves.
pub trait CommandSet {
    /// `None` if there is no such command; otherwise whether it may run
    /// out of band.
    fn allow_oob(&self, command: &str) -> Option<bool>;
}

/// What every session of a server shares: what the greeting says, and how
/// output is written.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// What `query-version` returns; the greeting carries it (rule G2).
    /// Its `qemu` member also picks how malformed input is answered: as
    /// QEMU 11 does from major version 11 on, else as QEMU 10 and older.
    pub version: Version,
    /// Whether to offer the `oob` capability.
    pub offer_oob: bool,
    /// Pretty output, as a monitor with `pretty=on` writes it.
    pub pretty: bool,
}

/// An error reply: a class and a text (the client's type, shared).
pub use qmp_proto::QmpError;

/// A command for the embedder to run: a request the session accepted.
/// (The same request seen from the client's side, before it is sent, is
/// `qmp_client::Call`.)
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The command's name.
    pub command: String,
    /// `{}` when the request had no `arguments` (rule R6).
    pub arguments: QDict,
    /// The request's id, echoed in the reply.
    pub id: Option<QObject>,
    /// Whether it came as `exec-oob`.
    pub oob: bool,
}

/// The outcome of dispatching one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Bytes to send as they are.
    Reply(Vec<u8>),
    /// Run this, then send [`Session::reply`] for it.
    Call(Call),
}

/// A message waiting in the in-band queue.
enum Queued {
    /// A request, and about how much memory it holds.
    Request(QObject, usize),
    Error(String),
}

/// One client's session, without I/O: feed it input, run the calls it
/// hands out, send what it returns (see the module's notes).
pub struct Session<C> {
    config: SessionConfig,
    commands: C,
    streamer: Streamer,
    queue: VecDeque<Queued>,
    negotiated: bool,
    oob: bool,
    /// An in-band call handed out and not yet answered. Without oob QEMU
    /// reads no further input until it is.
    in_progress: bool,
    /// About how much memory the queued requests hold.
    queued_bytes: usize,
}

impl<C: CommandSet> Session<C> {
    /// A session that has not yet greeted; `commands` is its command table.
    pub fn new(config: SessionConfig, commands: C) -> Self {
        Session {
            streamer: Streamer::with_dialect(Dialect::of_qemu(
                config.version.qemu.major,
                config.version.qemu.minor,
            )),
            config,
            commands,
            queue: VecDeque::new(),
            negotiated: false,
            oob: false,
            in_progress: false,
            queued_bytes: 0,
        }
    }

    /// Its command table.
    pub fn commands(&self) -> &C {
        &self.commands
    }

    /// Whether `qmp_capabilities` has succeeded.
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Whether oob was enabled by the negotiation.
    pub fn oob_enabled(&self) -> bool {
        self.oob
    }

    /// The greeting (rule G1).
    pub fn greeting(&self) -> Vec<u8> {
        let capabilities = if self.config.offer_oob {
            vec![QObject::String("oob".into())]
        } else {
            vec![]
        };
        let mut body = QDict::new();
        body.insert("version", self.config.version.to_qobject());
        body.insert("capabilities", QObject::List(capabilities));
        let mut greeting = QDict::new();
        greeting.insert("QMP", QObject::Dict(body));
        self.line(QObject::Dict(greeting))
    }

    /// About how much memory this session's input holds, in bytes: the
    /// message being read and the requests queued (see
    /// [`Streamer::held_bytes`](qmp_proto::qemu_json::Streamer::held_bytes)).
    /// What a server checks against a per-client input budget.
    pub fn input_held(&self) -> usize {
        self.streamer.held_bytes() + self.queued_bytes
    }

    /// Whether nothing is queued or running in band.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.in_progress
    }

    /// Whether QEMU would read more input now.
    pub fn wants_input(&self) -> bool {
        if self.oob {
            self.queue.len() < qmp_proto::QUEUE_SIZE
        } else {
            self.queue.is_empty() && !self.in_progress
        }
    }

    /// Reads `input` byte by byte while [`wants_input`](Self::wants_input)
    /// holds; returns how many bytes were consumed. Out-of-band requests
    /// read on the way are dispatched at once into `ready`.
    pub fn feed(&mut self, input: &[u8], ready: &mut Vec<Step>) -> usize {
        let mut consumed = 0;
        while consumed < input.len() && self.wants_input() {
            // up to the byte that completes a message: then wants_input()
            // may change, and QEMU reads no further than that byte
            let mut parsed = Vec::new();
            consumed += self
                .streamer
                .feed_some(&input[consumed..], |p| parsed.push(p));
            for p in parsed {
                match p {
                    Parsed::Value(v) if is_oob_request(&v) => ready.push(self.dispatch(v)),
                    Parsed::Value(v) => {
                        let size = v.approx_size();
                        self.queued_bytes += size;
                        self.queue.push_back(Queued::Request(v, size));
                    }
                    Parsed::Error(e) => self.queue.push_back(Queued::Error(e)),
                }
            }
        }
        consumed
    }

    /// Dispatches the next queued in-band message, in arrival order.
    pub fn next_inband(&mut self) -> Option<Step> {
        if self.in_progress {
            return None;
        }
        let step = match self.queue.pop_front()? {
            Queued::Error(text) => Step::Reply(self.error_line(None, QmpError::generic(text))),
            Queued::Request(v, size) => {
                self.queued_bytes -= size;
                self.dispatch(v)
            }
        };
        self.in_progress = matches!(step, Step::Call(_));
        Some(step)
    }

    /// The reply to a call; `Ok(None)` for a command without a result
    /// (QEMU answers `{}`, rule P1).
    pub fn reply(&mut self, call: &Call, result: Result<Option<QObject>, QmpError>) -> Vec<u8> {
        if !call.oob {
            self.in_progress = false;
        }
        match result {
            Ok(ret) => {
                self.return_line(call.id.as_ref(), ret.unwrap_or(QObject::Dict(QDict::new())))
            }
            Err(e) => self.error_line(call.id.as_ref(), e),
        }
    }

    /// An event for this session, or `None` while it is still negotiating
    /// (rule N8). `data` is left out when `None` (E1).
    pub fn event(
        &self,
        name: &str,
        data: Option<QObject>,
        seconds: i64,
        microseconds: i64,
    ) -> Option<Vec<u8>> {
        if !self.negotiated {
            return None;
        }
        let mut timestamp = QDict::new();
        timestamp.insert("seconds", QObject::Int(seconds));
        timestamp.insert("microseconds", QObject::Int(microseconds));
        let mut event = QDict::new();
        event.insert("timestamp", QObject::Dict(timestamp));
        event.insert("event", QObject::String(name.into()));
        if let Some(data) = data {
            event.insert("data", data);
        }
        Some(self.line(QObject::Dict(event)))
    }

    /// QEMU's `qmp_dispatch`, up to running the command.
    fn dispatch(&mut self, request: QObject) -> Step {
        let QObject::Dict(dict) = request else {
            return Step::Reply(
                self.error_line(None, QmpError::generic("QMP input must be a JSON object")),
            );
        };
        let id = dict.get("id").cloned();
        match self.check(&dict) {
            Ok(call) => match call.command.as_str() {
                "qmp_capabilities" => {
                    let result = self.qmp_capabilities(&call.arguments);
                    Step::Reply(match result {
                        Ok(()) => self.return_line(id.as_ref(), QObject::Dict(QDict::new())),
                        Err(e) => self.error_line(id.as_ref(), e),
                    })
                }
                _ => Step::Call(call),
            },
            Err(mut e) => {
                if !self.negotiated && e.class == "CommandNotFound" {
                    e.desc = "Expecting capabilities negotiation with 'qmp_capabilities'".into();
                }
                Step::Reply(self.error_line(id.as_ref(), e))
            }
        }
    }

    /// Request checks in QEMU's order (rules R3–R6).
    fn check(&self, dict: &QDict) -> Result<Call, QmpError> {
        let mut exec_key: Option<&str> = None;
        for (key, value) in dict.qemu_order() {
            match key {
                "execute" | "exec-oob" if key == "execute" || self.oob => {
                    if !matches!(value, QObject::String(_)) {
                        return Err(QmpError::generic(format!(
                            "QMP input member '{key}' must be a string"
                        )));
                    }
                    if let Some(first) = exec_key {
                        return Err(QmpError::generic(format!(
                            "QMP input member '{key}' clashes with '{first}'"
                        )));
                    }
                    exec_key = Some(key);
                }
                "arguments" => {
                    if !matches!(value, QObject::Dict(_)) {
                        return Err(QmpError::generic(
                            "QMP input member 'arguments' must be an object",
                        ));
                    }
                }
                "id" => {}
                _ => {
                    return Err(QmpError::generic(format!(
                        "QMP input member '{key}' is unexpected"
                    )))
                }
            }
        }
        let Some(exec_key) = exec_key else {
            return Err(QmpError::generic("QMP input lacks member 'execute'"));
        };
        let oob = exec_key == "exec-oob";
        let command = dict
            .get(exec_key)
            .and_then(QObject::as_str)
            .unwrap_or_default()
            .to_owned();
        let allow_oob = match self.lookup(&command) {
            Some(allow_oob) => allow_oob,
            None => {
                return Err(QmpError::not_found(format!(
                    "The command {command} has not been found"
                )))
            }
        };
        if oob && !allow_oob {
            return Err(QmpError::generic(format!(
                "The command {command} does not support OOB"
            )));
        }
        let arguments = match dict.get("arguments") {
            Some(QObject::Dict(args)) => args.clone(),
            _ => QDict::new(),
        };
        Ok(Call {
            command,
            arguments,
            id: dict.get("id").cloned(),
            oob,
        })
    }

    /// Before negotiation only `qmp_capabilities` exists (rule N1).
    fn lookup(&self, command: &str) -> Option<bool> {
        match (command, self.negotiated) {
            ("qmp_capabilities", _) => Some(false),
            (_, false) => None,
            (other, true) => self.commands.allow_oob(other),
        }
    }

    /// `qmp_capabilities`: its arguments checked as QEMU's generated code
    /// checks them, then negotiation (rules N4–N7).
    fn qmp_capabilities(&mut self, args: &QDict) -> Result<(), QmpError> {
        let mut enable_oob = false;
        if let Some(enable) = args.get("enable") {
            let QObject::List(items) = enable else {
                return Err(QmpError::generic(
                    "Invalid parameter type for 'enable', expected: array",
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let QObject::String(name) = item else {
                    return Err(QmpError::generic(format!(
                        "Invalid parameter type for 'enable[{i}]', expected: string"
                    )));
                };
                // QEMU names list elements 'null' in this one message.
                if name != "oob" {
                    return Err(QmpError::generic(format!(
                        "Parameter 'null' does not accept value '{name}'"
                    )));
                }
                enable_oob = true;
            }
        }
        if let Some(extra) = first_unexpected(args, &["enable"]) {
            return Err(QmpError::generic(format!(
                "Parameter '{extra}' is unexpected"
            )));
        }
        if self.negotiated {
            return Err(QmpError::not_found(
                "Capabilities negotiation is already complete, command ignored",
            ));
        }
        if enable_oob && !self.config.offer_oob {
            return Err(QmpError::generic("Capability oob not available"));
        }
        self.negotiated = true;
        self.oob = enable_oob;
        Ok(())
    }

    fn return_line(&self, id: Option<&QObject>, ret: QObject) -> Vec<u8> {
        let mut reply = QDict::new();
        reply.insert("return", ret);
        if let Some(id) = id {
            reply.insert("id", id.clone());
        }
        self.line(QObject::Dict(reply))
    }

    fn error_line(&self, id: Option<&QObject>, e: QmpError) -> Vec<u8> {
        let mut error = QDict::new();
        error.insert("class", QObject::String(e.class));
        error.insert("desc", QObject::String(e.desc));
        let mut reply = QDict::new();
        reply.insert("error", QObject::Dict(error));
        if let Some(id) = id {
            reply.insert("id", id.clone());
        }
        self.line(QObject::Dict(reply))
    }

    fn line(&self, value: QObject) -> Vec<u8> {
        to_line(&value, self.config.pretty)
    }
}

/// QEMU's test for "run this out of band": `exec-oob` and no `execute`,
/// whether or not oob was negotiated (the checks come later).
fn is_oob_request(v: &QObject) -> bool {
    v.as_dict()
        .is_some_and(|d| d.contains_key("exec-oob") && !d.contains_key("execute"))
}

impl<C> std::fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("negotiated", &self.negotiated)
            .field("oob", &self.oob)
            .field("queued", &self.queue.len())
            .field("in_progress", &self.in_progress)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Commands;
    impl CommandSet for Commands {
        fn allow_oob(&self, command: &str) -> Option<bool> {
            match command {
                "query-version" => Some(false),
                "query-yank" => Some(true),
                _ => None,
            }
        }
    }

    fn session(offer_oob: bool) -> Session<Commands> {
        let version = qmp_proto::Version::new(10, 0, 0, "");
        Session::new(
            SessionConfig {
                version,
                offer_oob,
                pretty: false,
            },
            Commands,
        )
    }

    /// Feeds everything, answering calls with `{}`; returns the output.
    fn run(s: &mut Session<Commands>, input: &[u8]) -> String {
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let mut ready = Vec::new();
            let n = s.feed(rest, &mut ready);
            rest = &rest[n..];
            let mut steps: VecDeque<Step> = ready.into();
            while let Some(step) = steps.pop_front().or_else(|| s.next_inband()) {
                match step {
                    Step::Reply(bytes) => out.extend(bytes),
                    Step::Call(call) => out.extend(s.reply(&call, Ok(None))),
                }
            }
            if rest.is_empty() && s.queue.is_empty() {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn capability_offered_or_not() {
        let mut s = session(false);
        assert_eq!(
            String::from_utf8(s.greeting()).unwrap(),
            "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n"
        );
        // N6: known but not offered; the session stays in negotiation
        assert_eq!(
            run(&mut s, b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}, \"id\": 1}"),
            "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"Capability oob not available\"}}\r\n"
        );
        assert!(!s.negotiated());
        assert_eq!(
            run(&mut s, b"{\"execute\": \"qmp_capabilities\"}"),
            "{\"return\": {}}\r\n"
        );
        assert!(s.negotiated() && !s.oob_enabled());
    }

    #[test]
    fn without_oob_input_waits_for_the_call_in_progress() {
        let mut s = session(true);
        run(&mut s, b"{\"execute\": \"qmp_capabilities\"}");
        let mut ready = Vec::new();
        let input = b"{\"execute\": \"query-version\", \"id\": 1}{\"execute\": \"query-version\", \"id\": 2}";
        let n = s.feed(input, &mut ready);
        // stops right after the first complete request
        assert_eq!(n, input.len() / 2);
        let Some(Step::Call(call)) = s.next_inband() else {
            panic!()
        };
        assert!(!s.wants_input());
        s.reply(&call, Ok(None));
        assert!(s.wants_input());
    }

    #[test]
    fn with_oob_eight_queue_and_oob_requests_go_first() {
        let mut s = session(true);
        run(
            &mut s,
            b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}",
        );
        let mut input = Vec::new();
        for i in 0..10 {
            input.extend(format!("{{\"execute\": \"query-version\", \"id\": {i}}}").into_bytes());
        }
        input.extend(b"{\"exec-oob\": \"query-yank\", \"id\": \"oob\"}");
        let mut ready = Vec::new();
        let n = s.feed(&input, &mut ready);
        assert_eq!(s.queue.len(), 8);
        assert!(ready.is_empty());
        assert!(n < input.len());
        // taking one frees room: reading resumes while it runs
        let Some(Step::Call(_)) = s.next_inband() else {
            panic!()
        };
        assert!(s.wants_input());
        let n2 = s.feed(&input[n..], &mut ready);
        assert!(n + n2 < input.len(), "stops again at 8");
        // events reach only negotiated sessions
        assert!(s.event("STOP", None, 1, 2).is_some());
        assert!(session(true).event("STOP", None, 1, 2).is_none());
    }

    #[test]
    fn reply_ids_and_event_layout() {
        let mut s = session(true);
        run(&mut s, b"{\"execute\": \"qmp_capabilities\"}");
        assert_eq!(
            run(
                &mut s,
                b"{\"id\": {\"b\": 1, \"a\": 2}, \"execute\": \"query-version\"}"
            ),
            "{\"return\": {}, \"id\": {\"a\": 2, \"b\": 1}}\r\n"
        );
        let mut data = QDict::new();
        data.insert("status", QObject::String("running".into()));
        assert_eq!(
            String::from_utf8(s.event("JOB_STATUS_CHANGE", Some(QObject::Dict(data)), 5, 6).unwrap()).unwrap(),
            "{\"timestamp\": {\"seconds\": 5, \"microseconds\": 6}, \"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"running\"}}\r\n"
        );
    }
}
