//! The QMP message model, shared by everything in this workspace.
//!
//! Four kinds of message cross a QMP connection:
//!
//! * the server's [`Greeting`], sent once when a client connects;
//! * a client [`Request`] (`execute` or `exec-oob`, optional `arguments`,
//!   optional `id` of any JSON type);
//! * the server's [`Response`], `return` or `error {class, desc}`, echoing
//!   the request's id;
//! * the server's asynchronous [`Event`] with a timestamp and optional data.
//!
//! [`Message::from_slice`] classifies one complete JSON object by the members
//! it carries, never by its position in the stream (rule P4): an event can
//! arrive between any request and its reply.

use crate::qemu_json::{QDict, QObject};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Command arguments: a JSON object.
pub type Arguments = Map<String, Value>;

/// `{"micro": .., "minor": .., "major": ..}` (QEMU writes them in this order).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
/// QEMU's release numbers.
pub struct QemuVersion {
    /// The third number (`2` in 10.0.2).
    #[serde(default)]
    pub micro: u64,
    /// The second number.
    #[serde(default)]
    pub minor: u64,
    /// The first number.
    #[serde(default)]
    pub major: u64,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// The version object of the greeting and of `query-version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Version {
    /// The release.
    pub qemu: QemuVersion,
    /// Distribution suffix such as `Debian 1:10.0.2+ds-2`; may be empty.
    #[serde(default)]
    pub package: String,
}

impl Version {
    /// QEMU `major.minor.micro` with a package suffix (may be empty).
    ///
    /// ```
    /// use qmp_proto::Version;
    /// let v = Version::new(10, 0, 2, "Debian 1:10.0.2+ds-2");
    /// assert_eq!(v.qemu.to_string(), "10.0.2");
    /// // As QEMU writes it: the same members, in QEMU's order.
    /// assert_eq!(
    ///     qmp_proto::qemu_json::to_json(&v.to_qobject(), false),
    ///     r#"{"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}"#
    /// );
    /// ```
    pub fn new(major: u64, minor: u64, micro: u64, package: impl Into<String>) -> Version {
        Version {
            qemu: QemuVersion {
                micro,
                minor,
                major,
            },
            package: package.into(),
        }
    }

    /// As a QEMU object, members inserted in QAPI order (which decides
    /// their output order where they share a hash bucket), so a server
    /// writes it as QEMU does.
    pub fn to_qobject(&self) -> QObject {
        let mut qemu = QDict::new();
        qemu.insert("major", QObject::Int(self.qemu.major as i64));
        qemu.insert("minor", QObject::Int(self.qemu.minor as i64));
        qemu.insert("micro", QObject::Int(self.qemu.micro as i64));
        let mut v = QDict::new();
        v.insert("qemu", QObject::Dict(qemu));
        v.insert("package", QObject::String(self.package.clone()));
        QObject::Dict(v)
    }

    /// Reads a `query-version` reply held as a QEMU object; `None` when it
    /// is not one.
    pub fn from_qobject(v: &QObject) -> Option<Version> {
        let d = v.as_dict()?;
        let qemu = d.get("qemu")?.as_dict()?;
        let n = |key| match qemu.get(key)? {
            QObject::Int(n) => u64::try_from(*n).ok(),
            QObject::UInt(n) => Some(*n),
            _ => None,
        };
        let package = d.get("package")?.as_str()?;
        Some(Version::new(n("major")?, n("minor")?, n("micro")?, package))
    }
}

/// The first message of every connection:
/// `{"QMP": {"version": {...}, "capabilities": ["oob"]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// The server's version, as `query-version` returns it (rule G2).
    pub version: Version,
    /// Capabilities the server offers. `oob` is the only one QEMU knows
    /// today (rule G3), but unknown strings are kept, not rejected.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Greeting {
    /// Whether the server offers the named capability (such as `oob`).
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The command's name, as in `execute`.
    pub command: String,
    /// `None` sends no `arguments` member, which QEMU reads as `{}` (R6).
    pub arguments: Option<Arguments>,
    /// Any JSON value, `null` included (R2). `None` sends no `id`.
    pub id: Option<Value>,
    /// `exec-oob` instead of `execute` (only with oob negotiated).
    pub oob: bool,
}

impl Request {
    /// A request for `command`, without arguments or id, in band.
    pub fn new(command: impl Into<String>) -> Self {
        Request {
            command: command.into(),
            arguments: None,
            id: None,
            oob: false,
        }
    }

    /// Sets the arguments.
    pub fn with_arguments(mut self, arguments: Arguments) -> Self {
        self.arguments = Some(arguments);
        self
    }

    /// Sets the id.
    pub fn with_id(mut self, id: Value) -> Self {
        self.id = Some(id);
        self
    }

    /// Sends it as `exec-oob`.
    pub fn out_of_band(mut self) -> Self {
        self.oob = true;
        self
    }
}

/// The `error` member of a failed reply: a class and a human-readable text.
///
/// Clients must accept any class string (rule X1) and should not parse
/// `desc`; both are kept exactly as the server sent them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpError {
    /// The error class, such as `GenericError` or `CommandNotFound`.
    #[serde(default)]
    pub class: String,
    /// The text meant for people.
    #[serde(default)]
    pub desc: String,
}

impl QmpError {
    /// An error of class `GenericError`, the class of most of QEMU's.
    pub fn generic(desc: impl Into<String>) -> Self {
        QmpError {
            class: "GenericError".into(),
            desc: desc.into(),
        }
    }

    /// An error of class `CommandNotFound`.
    pub fn not_found(desc: impl Into<String>) -> Self {
        QmpError {
            class: "CommandNotFound".into(),
            desc: desc.into(),
        }
    }
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.desc)
    }
}

impl std::error::Error for QmpError {}

/// A reply to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id echoed back; `None` when the request had none or the server
    /// could not read it (a parse error is answered without an id).
    pub id: Option<Value>,
    /// The `return` value, or the `error`.
    pub result: Result<Value, QmpError>,
}

/// When the server raised an event (wall-clock time, rule E2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Microseconds within that second.
    pub microseconds: i64,
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name, such as `STOP`.
    pub name: String,
    /// `None` when the server left `data` out (it does when it is empty).
    pub data: Option<Value>,
    /// When it was raised.
    pub timestamp: Timestamp,
}

impl Event {
    /// The member of `data` at a JSON pointer such as `/id` or
    /// `/info/status`, if present.
    pub fn data_at(&self, pointer: &str) -> Option<&Value> {
        self.data.as_ref()?.pointer(pointer)
    }

    /// The event as QEMU writes it: `{"timestamp", "event", "data"}` (in
    /// that order where serde_json keeps insertion order: its
    /// `preserve_order` feature, which this crate leaves to its users).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "timestamp".into(),
            serde_json::json!({"seconds": self.timestamp.seconds, "microseconds": self.timestamp.microseconds}),
        );
        m.insert("event".into(), Value::String(self.name.clone()));
        if let Some(data) = &self.data {
            m.insert("data".into(), data.clone());
        }
        Value::Object(m)
    }
}

/// Any message on a QMP connection.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// The greeting (`{"QMP": ...}`).
    Greeting(Greeting),
    /// A request (`execute` or `exec-oob`), as a server reads them.
    Request(Request),
    /// A reply (`return` or `error`).
    Response(Response),
    /// An event.
    Event(Event),
    /// A well-formed JSON object with none of the members that identify a
    /// QMP message. Kept rather than rejected so that a newer or odder
    /// server does not break the connection.
    Other(Value),
}

/// Why a complete JSON object could not be read as a message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MessageError(#[from] serde_json::Error);

impl Message {
    /// Classifies one complete JSON text.
    ///
    /// Nesting is not limited here (serde_json's 128 levels are lifted,
    /// and the stack grows as needed); the [`Decoder`](crate::Decoder)
    /// bounds it before a frame gets here.
    pub fn from_slice(bytes: &[u8]) -> Result<Message, MessageError> {
        let wire: Wire = from_slice_deep(bytes)?;
        match wire.classify() {
            Some(message) => Ok(message),
            None => Ok(Message::Other(from_slice_deep(bytes)?)),
        }
    }

    /// Classifies a JSON value already parsed.
    pub fn from_value(value: Value) -> Result<Message, MessageError> {
        let wire = Wire::deserialize(&value)?;
        Ok(wire.classify().unwrap_or(Message::Other(value)))
    }
}

/// `serde_json::from_slice` without its recursion limit, on a stack that
/// grows on the heap when a deep value needs it.
fn from_slice_deep<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(serde_stacker::Deserializer::new(&mut de))?;
    de.end()?;
    Ok(value)
}

/// Every member that identifies a message, all optional; which ones are
/// present decides the kind. Unknown members are ignored.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "QMP", default)]
    greeting: Option<Greeting>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
    #[serde(rename = "return", default, deserialize_with = "present")]
    ret: Option<Value>,
    #[serde(default)]
    error: Option<QmpError>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default)]
    execute: Option<String>,
    #[serde(rename = "exec-oob", default)]
    exec_oob: Option<String>,
    #[serde(default)]
    arguments: Option<Arguments>,
}

/// Maps a member that is present to `Some`, even when its value is `null`
/// (`"id": null` is a valid id, distinct from no id).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Wire {
    fn classify(self) -> Option<Message> {
        if let Some(greeting) = self.greeting {
            return Some(Message::Greeting(greeting));
        }
        if let Some(name) = self.event {
            return Some(Message::Event(Event {
                name,
                data: self.data,
                timestamp: self.timestamp.unwrap_or_default(),
            }));
        }
        if let Some(ret) = self.ret {
            return Some(Message::Response(Response {
                id: self.id,
                result: Ok(ret),
            }));
        }
        if let Some(error) = self.error {
            return Some(Message::Response(Response {
                id: self.id,
                result: Err(error),
            }));
        }
        let (command, oob) = match (self.execute, self.exec_oob) {
            (Some(c), _) => (c, false),
            (None, Some(c)) => (c, true),
            (None, None) => return None,
        };
        Some(Message::Request(Request {
            command,
            arguments: self.arguments,
            id: self.id,
            oob,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_greeting_from_qemu_10() {
        let m = Message::from_slice(br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}, "capabilities": ["oob"]}}"#).unwrap();
        let Message::Greeting(g) = m else {
            panic!("not a greeting: {m:?}")
        };
        assert_eq!(g.version.qemu.to_string(), "10.0.2");
        assert_eq!(g.version.package, "Debian 1:10.0.2+ds-2");
        assert!(g.offers("oob"));
        assert!(!g.offers("other"));
    }

    #[test]
    fn null_id_is_distinct_from_no_id() {
        let with_null = Message::from_slice(br#"{"return": {}, "id": null}"#).unwrap();
        let without = Message::from_slice(br#"{"return": {}}"#).unwrap();
        assert_eq!(
            with_null,
            Message::Response(Response {
                id: Some(Value::Null),
                result: Ok(json!({}))
            })
        );
        assert_eq!(
            without,
            Message::Response(Response {
                id: None,
                result: Ok(json!({}))
            })
        );
    }

    #[test]
    fn error_keeps_class_and_desc() {
        let m = Message::from_slice(
            br#"{"id": {"a": [1]}, "error": {"class": "SomeFutureClass", "desc": "it broke"}}"#,
        )
        .unwrap();
        let Message::Response(r) = m else { panic!() };
        assert_eq!(r.id, Some(json!({"a": [1]})));
        let e = r.result.unwrap_err();
        assert_eq!(e.class, "SomeFutureClass");
        assert_eq!(e.to_string(), "SomeFutureClass: it broke");
    }

    #[test]
    fn event_with_and_without_data() {
        let m = Message::from_slice(
            br#"{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}"#,
        )
        .unwrap();
        let Message::Event(e) = m else { panic!() };
        assert_eq!(e.name, "STOP");
        assert_eq!(e.data, None);
        assert_eq!(e.timestamp.microseconds, 5);
        let m = Message::from_slice(br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "JOB_STATUS_CHANGE", "data": {"status": "concluded", "id": "j1"}}"#).unwrap();
        let Message::Event(e) = m else { panic!() };
        assert_eq!(e.data_at("/id"), Some(&json!("j1")));
        assert_eq!(
            e.to_value(),
            json!({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "JOB_STATUS_CHANGE", "data": {"status": "concluded", "id": "j1"}})
        );
    }

    #[test]
    fn requests_and_unknown_shapes() {
        let m = Message::from_slice(br#"{"exec-oob": "query-yank", "id": "x"}"#).unwrap();
        assert_eq!(
            m,
            Message::Request(Request::new("query-yank").with_id(json!("x")).out_of_band())
        );
        let m = Message::from_slice(br#"{"something": "new"}"#).unwrap();
        assert_eq!(m, Message::Other(json!({"something": "new"})));
        assert!(Message::from_slice(br#"{"event": 5}"#).is_err());
        assert!(Message::from_slice(b"[1]").is_err());
    }
}
