//! The `key=value` argument syntax shared by `qmp` and `qmp-shell`.
//!
//! * A value that parses as JSON is JSON: `size=1048576`, `force=true`,
//!   `x=null`, `ratio=0.5`, `name="quoted"`, `opts={"a":1}`, `l=[1,2]`.
//!   Anything else is a plain string: `node-name=disk0`, `path=/machine`.
//!   To pass a string that looks like JSON, quote it: `name='"123"'`.
//! * Dotted keys nest: `cache.direct=false` gives `{"cache":{"direct":false}}`.
//!   Each key is inserted on its own path from the root, so dotted and plain
//!   keys can be mixed in any order (`a.b=1 c=2 a.d=3` keeps `c` at the top).
//! * Setting a key twice, or both `a=1` and `a.b=2`, is an error rather than
//!   a silent overwrite.

use serde_json::{Map, Value};

/// Why `key=value` arguments could not be turned into a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// A word without `=`.
    #[error("argument '{0}' is not of the form key=value")]
    NotAnAssignment(String),
    /// A key, or a part of a dotted key, that is empty (`=1`, `a..b=1`).
    #[error("argument '{0}' has an empty key or key part")]
    EmptyKey(String),
    /// The same key twice.
    #[error("argument '{0}' is given more than once")]
    Duplicate(String),
    /// A dotted key under a key that already holds a value that is not an
    /// object (`a=1 a.b=2`).
    #[error("argument '{path}' cannot nest under '{parent}', which is not an object")]
    NotAnObject {
        /// The dotted key.
        path: String,
        /// The key above it that holds a value.
        parent: String,
    },
}

/// Reads a value: JSON when it parses as JSON, else the text as a string.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Parses `key=value` items into an arguments object.
pub fn parse_assignments<I, S>(items: I) -> Result<Map<String, Value>, ArgError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut map = Map::new();
    for item in items {
        insert_assignment(&mut map, item.as_ref())?;
    }
    Ok(map)
}

/// Adds one `key=value` item to `map`, nesting at dots.
pub fn insert_assignment(map: &mut Map<String, Value>, item: &str) -> Result<(), ArgError> {
    let (key, text) = item
        .split_once('=')
        .ok_or_else(|| ArgError::NotAnAssignment(item.to_owned()))?;
    insert_path(map, key, parse_value(text))
}

/// Sets `value` at a dotted `path` below `map`.
pub fn insert_path(map: &mut Map<String, Value>, path: &str, value: Value) -> Result<(), ArgError> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ArgError::EmptyKey(path.to_owned()));
    }
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut node = map;
    for (depth, part) in parents.iter().enumerate() {
        let slot = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match slot {
            Value::Object(inner) => inner,
            _ => {
                return Err(ArgError::NotAnObject {
                    path: path.to_owned(),
                    parent: parts[..=depth].join("."),
                })
            }
        };
    }
    if node.contains_key(*last) {
        return Err(ArgError::Duplicate(path.to_owned()));
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(items: &[&str]) -> Value {
        Value::Object(parse_assignments(items).unwrap())
    }

    #[test]
    fn json_values_and_plain_strings() {
        assert_eq!(
            parse(&[
                "a=1",
                "b=true",
                "c=null",
                "d=0.5",
                "e=\"x y\"",
                "f=disk0",
                "g=/machine",
                "h=",
                "i=[1,\"2\"]",
                "j={\"k\":1}",
                "k=-3",
                "l=1e3"
            ]),
            json!({"a": 1, "b": true, "c": null, "d": 0.5, "e": "x y", "f": "disk0", "g": "/machine", "h": "", "i": [1, "2"], "j": {"k": 1}, "k": -3, "l": 1000.0})
        );
        // a string with spaces, as a shell passes it after unquoting
        assert_eq!(parse(&["desc=hello world"]), json!({"desc": "hello world"}));
        // only the first '=' splits
        assert_eq!(parse(&["x=a=b"]), json!({"x": "a=b"}));
    }

    #[test]
    fn dotted_keys_nest_in_any_order() {
        assert_eq!(
            parse(&["cache.direct=false"]),
            json!({"cache": {"direct": false}})
        );
        assert_eq!(
            parse(&["a.b=1", "c=2", "a.d=3", "a.e.f=4", "g=5"]),
            json!({"a": {"b": 1, "d": 3, "e": {"f": 4}}, "c": 2, "g": 5})
        );
        assert_eq!(
            parse(&["c=2", "a.b=1", "a.e.f=4", "a.e.g=x"]),
            json!({"c": 2, "a": {"b": 1, "e": {"f": 4, "g": "x"}}})
        );
    }

    #[test]
    fn conflicts_are_errors() {
        assert_eq!(
            parse_assignments(["a=1", "a=2"]),
            Err(ArgError::Duplicate("a".into()))
        );
        assert_eq!(
            parse_assignments(["a=1", "a.b=2"]),
            Err(ArgError::NotAnObject {
                path: "a.b".into(),
                parent: "a".into()
            })
        );
        assert_eq!(
            parse_assignments(["a.b=2", "a=1"]),
            Err(ArgError::Duplicate("a".into()))
        );
        assert_eq!(
            parse_assignments(["novalue"]),
            Err(ArgError::NotAnAssignment("novalue".into()))
        );
        assert_eq!(
            parse_assignments(["a..b=1"]),
            Err(ArgError::EmptyKey("a..b".into()))
        );
        assert_eq!(
            parse_assignments(["=1"]),
            Err(ArgError::EmptyKey("".into()))
        );
    }
}
