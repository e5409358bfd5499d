//! QEMU's value model.

use serde_json::{Map, Number, Value};

/// A JSON value as QEMU holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum QObject {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in int64.
    Int(i64),
    /// An integer above int64's range that fits in uint64.
    UInt(u64),
    /// A number written with a fraction or exponent, or an integer beyond
    /// uint64. May be infinite (`1e400`).
    Double(f64),
    /// A string.
    String(String),
    /// An array.
    List(Vec<QObject>),
    /// An object.
    Dict(QDict),
}

impl QObject {
    /// About how much memory this value holds, in bytes: its nodes, its
    /// strings' and containers' buffers. For budgets, not accounting: an
    /// allocator's own overhead is left out.
    pub fn approx_size(&self) -> usize {
        let node = std::mem::size_of::<QObject>();
        node + match self {
            QObject::String(s) => s.capacity(),
            QObject::List(items) => {
                (items.capacity() - items.len()) * node
                    + items.iter().map(QObject::approx_size).sum::<usize>()
            }
            QObject::Dict(d) => d
                .entries
                .iter()
                .map(|(k, v)| k.capacity() + v.approx_size() + std::mem::size_of::<String>())
                .sum(),
            _ => 0,
        }
    }
}

/// An object. Members keep their insertion order here; the writer puts
/// them in QEMU's output order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QDict {
    entries: Vec<(String, QObject)>,
}

impl QDict {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// The member named `key`.
    pub fn get(&self, key: &str) -> Option<&QObject> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether there is a member named `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets a member; an existing one keeps its place (as in QEMU).
    pub fn insert(&mut self, key: impl Into<String>, value: QObject) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Takes the member named `key` out.
    pub fn remove(&mut self, key: &str) -> Option<QObject> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Members in the order QEMU iterates them (its hash table's order):
    /// the order it writes them in, and checks them in.
    pub fn qemu_order(&self) -> Vec<(&str, &QObject)> {
        super::writer::output_order(self)
    }

    /// Members in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &QObject)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<(String, QObject)> for QDict {
    fn from_iter<I: IntoIterator<Item = (String, QObject)>>(iter: I) -> Self {
        let mut d = QDict::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

impl QObject {
    /// The JSON type name QEMU uses in "expected: ..." messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            QObject::Null => "null",
            QObject::Bool(_) => "boolean",
            QObject::Int(_) | QObject::UInt(_) | QObject::Double(_) => "number",
            QObject::String(_) => "string",
            QObject::List(_) => "array",
            QObject::Dict(_) => "object",
        }
    }

    /// The object, if this is one.
    pub fn as_dict(&self) -> Option<&QDict> {
        match self {
            QObject::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            QObject::String(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to serde's model. Infinite doubles have no JSON form there
    /// and become `null`.
    pub fn to_value(&self) -> Value {
        match self {
            QObject::Null => Value::Null,
            QObject::Bool(b) => Value::Bool(*b),
            QObject::Int(i) => Value::Number((*i).into()),
            QObject::UInt(u) => Value::Number((*u).into()),
            QObject::Double(d) => Number::from_f64(*d).map_or(Value::Null, Value::Number),
            QObject::String(s) => Value::String(s.clone()),
            QObject::List(l) => Value::Array(l.iter().map(QObject::to_value).collect()),
            QObject::Dict(d) => Value::Object(
                d.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl From<&Value> for QObject {
    /// From serde's model: integers that fit int64 become `Int`, larger
    /// unsigned ones `UInt`, all others `Double`, as QEMU's parser would.
    /// Members are inserted in the order given.
    fn from(v: &Value) -> Self {
        convert(v, false)
    }
}

impl QObject {
    /// From a value QEMU wrote (parsed with its members in the order they
    /// came), such that writing it again gives QEMU's bytes exactly.
    ///
    /// QEMU writes a dict's members in its hash table's order, where
    /// members sharing a bucket come newest first. Inserting them here in
    /// reverse of the order they were written puts every bucket back in
    /// the order QEMU had it, whatever order QEMU inserted them in.
    ///
    /// The order "they came" is only there when serde_json keeps it (its
    /// `preserve_order` feature, on in `qmp-proxy` and the tools); without
    /// it the value is the same, its members' order alphabetical.
    pub fn from_qemu_output(v: &Value) -> QObject {
        convert(v, true)
    }
}

fn convert(v: &Value, reverse: bool) -> QObject {
    match v {
        Value::Null => QObject::Null,
        Value::Bool(b) => QObject::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                QObject::Int(i)
            } else if let Some(u) = n.as_u64() {
                QObject::UInt(u)
            } else {
                QObject::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => QObject::String(s.clone()),
        Value::Array(a) => QObject::List(a.iter().map(|e| convert(e, reverse)).collect()),
        Value::Object(m) => {
            let members = m.iter().map(|(k, v)| (k.clone(), convert(v, reverse)));
            QObject::Dict(if reverse {
                members.rev().collect()
            } else {
                members.collect()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu_json::to_json;

    #[test]
    fn qemu_output_is_written_again_byte_for_byte() {
        // As QEMU 7.2 wrote them: `micro` and `major` share a bucket, so
        // the order depends on which QEMU inserted first.
        for text in [
            r#"{"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}"#,
            r#"[{"type": "chardev", "id": "compat_monitor0"}, {"name": "x", "value": 0.10000000000000001}]"#,
            r#"{"return": {}, "id": 18446744073709551615}"#,
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(to_json(&QObject::from_qemu_output(&v), false), text);
        }
        let text = r#"{"micro": 22, "minor": 2, "major": 7}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_ne!(
            to_json(&QObject::from(&v), false),
            text,
            "inserted in written order, a shared bucket comes out reversed"
        );
    }
}
