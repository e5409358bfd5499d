//! The model of a QEMU schema, as `query-qmp-schema` returns it.
//!
//! QEMU describes itself as a list of entries (`SchemaInfo`), each a
//! command, an event or a type, types named by masked numbers (`"0"`,
//! `"123"`) apart from the builtins (`str`, `int`, ...). Everything in the
//! project that reads a schema reads it through [`Schema`]: the server's
//! argument checks, the proxy's command table, the shell's completion.
//!
//! ```
//! use qmp_proto::schema::{Kind, Schema};
//! use serde_json::json;
//!
//! let schema = Schema::from_json(&json!([
//!     {"name": "stop", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
//!     {"name": "yank", "meta-type": "command", "arg-type": "1", "ret-type": "0",
//!      "allow-oob": true},
//!     {"name": "0", "meta-type": "object", "members": []},
//!     {"name": "1", "meta-type": "object", "members": [
//!         {"name": "instances", "type": "[2]"}, {"name": "force", "type": "bool", "default": null}]},
//!     {"name": "[2]", "meta-type": "array", "element-type": "2"},
//!     {"name": "2", "meta-type": "enum", "values": ["block-node", "chardev"]},
//!     {"name": "bool", "meta-type": "builtin", "json-type": "boolean"}
//! ]))?;
//! assert_eq!(schema.command_names().collect::<Vec<_>>(), ["stop", "yank"]);
//! assert_eq!(schema.allow_oob("yank"), Some(true));
//! assert_eq!(schema.allow_oob("nope"), None);
//! let Kind::Object { members, .. } = &schema.arguments_of("yank").unwrap().kind else { panic!() };
//! assert_eq!(members[1].name, "force");
//! assert!(members[1].optional);
//! # Ok::<(), qmp_proto::schema::SchemaError>(())
//! ```

use serde_json::Value;
use std::collections::HashMap;

/// A schema that cannot be read: not a list, or an entry without a name or
/// meta-type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a QEMU schema: {0}")]
pub struct SchemaError(String);

/// A member of an object type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name in the arguments.
    pub name: String,
    /// Its type's (masked) name.
    pub ty: String,
    /// Whether it may be left out (the entry has `default`).
    pub optional: bool,
}

/// One branch of a union: the tag value and the type of its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The tag's value that selects it.
    pub case: String,
    /// The object type whose members it adds.
    pub ty: String,
}

/// What an entry is, by its `meta-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A command: its arguments' object type and its return type.
    Command {
        /// The object type of the arguments.
        arg_type: String,
        /// The type of the `return` value.
        ret_type: String,
        /// Whether `exec-oob` may run it.
        allow_oob: bool,
    },
    /// An event and the object type of its `data`.
    Event {
        /// The object type of `data`.
        arg_type: String,
    },
    /// A struct, or a union (with `tag` and `variants`).
    Object {
        /// Members in declaration order (for a union, the common ones).
        members: Vec<Member>,
        /// The member whose value picks a variant.
        tag: Option<String>,
        /// The union's variants.
        variants: Vec<Variant>,
    },
    /// An enumeration.
    Enum {
        /// Its values.
        values: Vec<String>,
    },
    /// A list of one type.
    Array {
        /// The elements' type.
        element_type: String,
    },
    /// One of several types, told apart by their JSON kind.
    Alternate {
        /// The types it may be.
        members: Vec<String>,
    },
    /// A builtin (`str`, `int`, `any`, ...) and its JSON type.
    Builtin {
        /// `string`, `int`, `number`, `boolean`, `null`, `object`,
        /// `array` or `value`.
        json_type: String,
    },
    /// A meta-type this model does not know (from a newer QEMU).
    Other {
        /// The `meta-type` as given.
        meta_type: String,
    },
}

/// One entry of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name: a command's or event's own, a type's masked number.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Its features (`deprecated`, `unstable`, ...).
    pub features: Vec<String>,
}

/// A QEMU schema: its entries in QEMU's order, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key].as_array().into_iter().flatten()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    list(v, key)
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

impl Schema {
    /// Reads a `query-qmp-schema` reply. Members a newer QEMU may add are
    /// ignored; unknown meta-types are kept as [`Kind::Other`].
    pub fn from_json(schema: &Value) -> Result<Schema, SchemaError> {
        let items = schema
            .as_array()
            .ok_or_else(|| SchemaError("a schema is a JSON array of entries".into()))?;
        let mut s = Schema::default();
        for item in items {
            let name = item["name"]
                .as_str()
                .ok_or_else(|| SchemaError("an entry without a name".into()))?
                .to_owned();
            let meta_type = item["meta-type"]
                .as_str()
                .ok_or_else(|| SchemaError(format!("entry {name} has no meta-type")))?;
            let kind = match meta_type {
                "command" => Kind::Command {
                    arg_type: text(item, "arg-type"),
                    ret_type: text(item, "ret-type"),
                    allow_oob: item["allow-oob"] == true,
                },
                "event" => Kind::Event {
                    arg_type: text(item, "arg-type"),
                },
                "object" => Kind::Object {
                    members: list(item, "members")
                        .map(|m| Member {
                            name: text(m, "name"),
                            ty: text(m, "type"),
                            optional: m.get("default").is_some(),
                        })
                        .collect(),
                    tag: item["tag"].as_str().map(str::to_owned),
                    variants: list(item, "variants")
                        .map(|v| Variant {
                            case: text(v, "case"),
                            ty: text(v, "type"),
                        })
                        .collect(),
                },
                "enum" => Kind::Enum {
                    values: strings(item, "values"),
                },
                "array" => Kind::Array {
                    element_type: text(item, "element-type"),
                },
                "alternate" => Kind::Alternate {
                    members: list(item, "members").map(|m| text(m, "type")).collect(),
                },
                "builtin" => Kind::Builtin {
                    json_type: text(item, "json-type"),
                },
                other => Kind::Other {
                    meta_type: other.to_owned(),
                },
            };
            s.by_name.insert(name.clone(), s.entries.len());
            s.entries.push(Entry {
                name,
                kind,
                features: strings(item, "features"),
            });
        }
        Ok(s)
    }

    /// Every entry, in QEMU's order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of this name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The command entries, in QEMU's order.
    pub fn commands(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::Command { .. }))
    }

    /// The command names, in QEMU's order.
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.commands().map(|e| e.name.as_str())
    }

    /// `None` for a name that is not a command, else whether it may run
    /// out of band.
    pub fn allow_oob(&self, command: &str) -> Option<bool> {
        match self.get(command)?.kind {
            Kind::Command { allow_oob, .. } => Some(allow_oob),
            _ => None,
        }
    }

    /// The first member of `value` that type `ty` does not have, as a
    /// dotted path (`file.filenme`), looking into nested objects, list
    /// elements, union branches (by the tag's value) and the object
    /// member of an alternate; `None` when all are known.
    pub fn unknown_member(&self, ty: &str, value: &Value) -> Option<String> {
        match &self.get(ty)?.kind {
            Kind::Object { .. } => {
                let object = value.as_object()?;
                let members = self.object_members(ty, object);
                for (key, v) in object {
                    match members.iter().find(|m| &m.name == key) {
                        None => return Some(key.clone()),
                        Some(m) => {
                            if let Some(inner) = self.unknown_member(&m.ty, v) {
                                return Some(format!("{key}.{inner}"));
                            }
                        }
                    }
                }
                None
            }
            Kind::Array { element_type } => {
                value.as_array()?.iter().enumerate().find_map(|(i, v)| {
                    self.unknown_member(element_type, v)
                        .map(|inner| format!("{i}.{inner}"))
                })
            }
            Kind::Alternate { members } if value.is_object() => members
                .iter()
                .find(|m| matches!(self.get(m).map(|e| &e.kind), Some(Kind::Object { .. })))
                .and_then(|m| self.unknown_member(m, value)),
            _ => None,
        }
    }

    /// An object type's members, with those of the union branch that
    /// `object`'s tag picks.
    fn object_members(&self, ty: &str, object: &serde_json::Map<String, Value>) -> Vec<Member> {
        let Some(Entry {
            kind:
                Kind::Object {
                    members,
                    tag,
                    variants,
                },
            ..
        }) = self.get(ty)
        else {
            return Vec::new();
        };
        let mut all = members.clone();
        let case = tag
            .as_deref()
            .and_then(|t| object.get(t))
            .and_then(Value::as_str);
        if let Some(variant) = variants.iter().find(|v| Some(v.case.as_str()) == case) {
            all.extend(self.object_members(&variant.ty, object));
        }
        all
    }

    /// The object type of a command's arguments (or an event's data).
    pub fn arguments_of(&self, name: &str) -> Option<&Entry> {
        match &self.get(name)?.kind {
            Kind::Command { arg_type, .. } | Kind::Event { arg_type } => self.get(arg_type),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_schemas_are_errors_and_unknown_meta_types_are_kept() {
        assert!(Schema::from_json(&json!({})).is_err());
        assert!(Schema::from_json(&json!([{"meta-type": "enum"}])).is_err());
        assert!(Schema::from_json(&json!([{"name": "x"}])).is_err());
        let s = Schema::from_json(&json!([
            {"name": "x", "meta-type": "future-thing", "features": ["unstable"]},
            {"name": "SHUTDOWN", "meta-type": "event", "arg-type": "0"},
            {"name": "0", "meta-type": "object", "members": [], "tag": "t",
             "variants": [{"case": "a", "type": "1"}]},
            {"name": "1", "meta-type": "alternate", "members": [{"type": "str"}, {"type": "null"}]}
        ]))
        .unwrap();
        assert_eq!(
            s.get("x").unwrap().kind,
            Kind::Other {
                meta_type: "future-thing".into()
            }
        );
        assert_eq!(s.get("x").unwrap().features, ["unstable"]);
        assert_eq!(s.commands().count(), 0);
        let Kind::Object { tag, variants, .. } = &s.arguments_of("SHUTDOWN").unwrap().kind else {
            panic!()
        };
        assert_eq!(tag.as_deref(), Some("t"));
        assert_eq!(variants[0].ty, "1");
        assert_eq!(
            s.get("1").unwrap().kind,
            Kind::Alternate {
                members: vec!["str".into(), "null".into()]
            }
        );
    }
}
