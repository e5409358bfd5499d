//! What typed QMP is written in: the [`Command`] and [`Event`] traits, the
//! [`Qmp`] conversion to and from JSON values, and the helpers the
//! generated code (the `qmp-types` crate, `qmp codegen`) uses to take
//! members out of an object.
//!
//! The conversions are written out per type rather than derived with
//! serde: generated code of plain functions builds in a fraction of the
//! time (and memory) that serde's derives of the same types take.
//!
//! ```
//! use qmp_proto::typed::{Command, Empty, Qmp, TypeError};
//! use serde_json::{json, Map, Value};
//!
//! /// What `qmp codegen` writes for a command, in short.
//! struct Stop;
//! impl Qmp for Stop {
//!     fn from_qmp(_: Value) -> Result<Self, TypeError> { Ok(Stop) }
//!     fn to_qmp(&self) -> Value { json!({}) }
//! }
//! impl Command for Stop {
//!     const NAME: &'static str = "stop";
//!     const ALLOW_OOB: bool = false;
//!     const SINCE: &'static [&'static str] = &["7.2-system"];
//!     type Ok = Empty;
//! }
//! // Members nobody declared are kept, and written back.
//! let reply = Empty::from_qmp(json!({"new-in-12.0": 1}))?;
//! assert_eq!(reply.to_qmp(), json!({"new-in-12.0": 1}));
//! # Ok::<(), TypeError>(())
//! ```

use serde_json::{Map, Value};

/// Why a value did not decode: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, got {got}")]
pub struct TypeError {
    /// The member path (`inserted.image.filename`), empty at the top.
    pub path: String,
    /// What the type wants.
    pub expected: &'static str,
    /// What came, abbreviated.
    pub got: String,
}

impl TypeError {
    fn new(expected: &'static str, got: &Value) -> TypeError {
        let mut text = got.to_string();
        if text.len() > 60 {
            let mut end = 60;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        TypeError {
            path: String::new(),
            expected,
            got: text,
        }
    }

    fn inside(mut self, key: &str) -> TypeError {
        self.path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{key}.{}", self.path)
        };
        self
    }
}

/// A type that converts to and from QMP's JSON.
pub trait Qmp: Sized {
    /// Decodes a value QEMU sent.
    fn from_qmp(v: Value) -> Result<Self, TypeError>;
    /// Encodes for QEMU.
    fn to_qmp(&self) -> Value;
}

impl Qmp for String {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        string(v)
    }
    fn to_qmp(&self) -> Value {
        Value::String(self.clone())
    }
}

impl Qmp for i64 {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        v.as_i64().ok_or_else(|| TypeError::new("an integer", &v))
    }
    fn to_qmp(&self) -> Value {
        Value::from(*self)
    }
}

impl Qmp for u64 {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        // QEMU writes a few unsigned values as negative numbers (-1 for
        // "none"); they are kept as the same 64 bits.
        v.as_u64()
            .or_else(|| v.as_i64().map(|i| i as u64))
            .ok_or_else(|| TypeError::new("an unsigned integer", &v))
    }
    fn to_qmp(&self) -> Value {
        Value::from(*self)
    }
}

impl Qmp for serde_json::Number {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        match v {
            Value::Number(n) => Ok(n),
            other => Err(TypeError::new("a number", &other)),
        }
    }
    fn to_qmp(&self) -> Value {
        Value::Number(self.clone())
    }
}

impl Qmp for bool {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        v.as_bool()
            .ok_or_else(|| TypeError::new("true or false", &v))
    }
    fn to_qmp(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Qmp for () {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        match v {
            Value::Null => Ok(()),
            other => Err(TypeError::new("null", &other)),
        }
    }
    fn to_qmp(&self) -> Value {
        Value::Null
    }
}

impl Qmp for Value {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        Ok(v)
    }
    fn to_qmp(&self) -> Value {
        self.clone()
    }
}

impl<T: Qmp> Qmp for Vec<T> {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| T::from_qmp(item).map_err(|e| e.inside(&i.to_string())))
                .collect(),
            other => Err(TypeError::new("a list", &other)),
        }
    }
    fn to_qmp(&self) -> Value {
        Value::Array(self.iter().map(Qmp::to_qmp).collect())
    }
}

impl<T: Qmp> Qmp for Box<T> {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        T::from_qmp(v).map(Box::new)
    }
    fn to_qmp(&self) -> Value {
        (**self).to_qmp()
    }
}

/// An object without members (what most commands return): whatever it
/// holds is kept.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Empty {
    /// Members the dumps did not have, as received.
    pub other: Map<String, Value>,
}

impl Qmp for Empty {
    fn from_qmp(v: Value) -> Result<Self, TypeError> {
        Ok(Empty { other: object(v)? })
    }
    fn to_qmp(&self) -> Value {
        Value::Object(self.other.clone())
    }
}

/// The value as a string.
pub fn string(v: Value) -> Result<String, TypeError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(TypeError::new("a string", &other)),
    }
}

/// The value as an object's members.
pub fn object(v: Value) -> Result<Map<String, Value>, TypeError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(TypeError::new("an object", &other)),
    }
}

/// Takes a member that must be there.
pub fn required<T: Qmp>(m: &mut Map<String, Value>, key: &str) -> Result<T, TypeError> {
    match m.remove(key) {
        Some(v) => T::from_qmp(v).map_err(|e| e.inside(key)),
        None => Err(TypeError {
            path: key.to_owned(),
            expected: "a member",
            got: "nothing".into(),
        }),
    }
}

/// Takes a member that may be missing.
pub fn optional<T: Qmp>(m: &mut Map<String, Value>, key: &str) -> Result<Option<T>, TypeError> {
    match m.remove(key) {
        Some(v) => T::from_qmp(v).map(Some).map_err(|e| e.inside(key)),
        None => Ok(None),
    }
}

/// Puts a member.
pub fn put<T: Qmp>(m: &mut Map<String, Value>, key: &str, v: &T) {
    m.insert(key.to_owned(), v.to_qmp());
}

/// Puts a member that is set.
pub fn put_optional<T: Qmp>(m: &mut Map<String, Value>, key: &str, v: &Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v.to_qmp());
    }
}

/// A command: its arguments are the type itself.
pub trait Command: Qmp {
    /// The command's name.
    const NAME: &'static str;
    /// Whether it may run out of band.
    const ALLOW_OOB: bool;
    /// The schema dumps that have it (`"10.0-system"`, ...).
    const SINCE: &'static [&'static str];
    /// What it returns.
    type Ok: Qmp;
}

/// An event: its data is the type itself.
pub trait Event: Qmp {
    /// The event's name.
    const NAME: &'static str;
    /// The schema dumps that have it.
    const SINCE: &'static [&'static str];
}
