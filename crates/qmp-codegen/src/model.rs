//! Types merged across schema dumps.
//!
//! Introspection masks the names of non-builtin types, so a type is known
//! only by where it is used: a command's arguments, a member of those, an
//! element of a list. The model expands every command's and event's types
//! by that path, in each dump, and merges what the dumps say about the
//! same path: members are the union of all dumps' (optional when any dump
//! lacks one or makes it optional), enum values likewise, and two dumps
//! that disagree about a member's kind make it a JSON value.

use qmp_proto::schema::{Kind, Schema};

/// Which dumps (by index) have something.
pub type Seen = u64;

/// A type's shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `str`.
    Str,
    /// Signed integers (`int`, `int8` ... `int64`).
    Int,
    /// Unsigned integers (`uint8` ... `uint64`, `size`).
    Uint,
    /// `number`: kept as JSON wrote it.
    Number,
    /// `bool`.
    Bool,
    /// `null`.
    Null,
    /// `any`, or dumps that disagree: a JSON value.
    Any,
    /// An enumeration: each value and the dumps that have it.
    Enum(Vec<(String, Seen)>),
    /// A list.
    Array(Box<Shape>),
    /// A struct or union.
    Object(Object),
    /// One of several shapes, told apart by JSON kind.
    Alternate(Vec<Shape>),
    /// The type of the object `n` levels up the path (a recursive type).
    Up(usize),
}

/// An object: its members, and for a union, its tag and branches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Object {
    /// Members in the order the newest dump has them.
    pub members: Vec<Field>,
    /// The member whose value picks a branch.
    pub tag: Option<String>,
    /// The branches: tag value, its members, the dumps that have it.
    pub branches: Vec<(String, Object, Seen)>,
}

/// A member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// The member's name in JSON.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Whether some dump lets it be absent.
    pub optional: bool,
    /// The dumps that have it.
    pub seen: Seen,
}

/// A command, merged.
#[derive(Debug, Clone)]
pub struct Command {
    /// Its name.
    pub name: String,
    /// Its arguments.
    pub arguments: Object,
    /// Its return value.
    pub returns: Shape,
    /// Whether any dump allows it out of band.
    pub allow_oob: bool,
    /// The dumps that have it.
    pub seen: Seen,
}

/// An event, merged.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its data.
    pub data: Object,
    /// The dumps that have it.
    pub seen: Seen,
}

/// Everything the dumps have.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The dumps' labels, by index.
    pub labels: Vec<String>,
    /// Commands, by name.
    pub commands: Vec<Command>,
    /// Events, by name.
    pub events: Vec<Event>,
}

impl Model {
    /// Merges the dumps, given with their labels.
    pub fn merge(dumps: &[(String, Schema)]) -> Model {
        assert!(dumps.len() <= 64, "at most 64 dumps");
        let mut model = Model {
            labels: dumps.iter().map(|(l, _)| l.clone()).collect(),
            ..Default::default()
        };
        for (i, (_, schema)) in dumps.iter().enumerate() {
            let bit = 1u64 << i;
            for entry in schema.entries() {
                match &entry.kind {
                    Kind::Command {
                        arg_type,
                        ret_type,
                        allow_oob,
                    } => {
                        let arguments = object(schema, arg_type, &mut Vec::new(), bit);
                        let returns = shape(schema, ret_type, &mut Vec::new(), bit);
                        match model.commands.iter_mut().find(|c| c.name == entry.name) {
                            Some(c) => {
                                c.arguments = merge_objects(&c.arguments, &arguments);
                                c.returns = merge(&c.returns, &returns);
                                c.allow_oob |= allow_oob;
                                c.seen |= bit;
                            }
                            None => model.commands.push(Command {
                                name: entry.name.clone(),
                                arguments,
                                returns,
                                allow_oob: *allow_oob,
                                seen: bit,
                            }),
                        }
                    }
                    Kind::Event { arg_type } => {
                        let data = object(schema, arg_type, &mut Vec::new(), bit);
                        match model.events.iter_mut().find(|e| e.name == entry.name) {
                            Some(e) => {
                                e.data = merge_objects(&e.data, &data);
                                e.seen |= bit;
                            }
                            None => model.events.push(Event {
                                name: entry.name.clone(),
                                data,
                                seen: bit,
                            }),
                        }
                    }
                    _ => {}
                }
            }
        }
        model.commands.sort_by(|a, b| a.name.cmp(&b.name));
        model.events.sort_by(|a, b| a.name.cmp(&b.name));
        model
    }

    /// Every dump's bit.
    pub fn all(&self) -> Seen {
        if self.labels.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.labels.len()) - 1
        }
    }
}

/// The shape of type `name` in `schema`; `path` holds the object types
/// being expanded above it (for recursion).
fn shape(schema: &Schema, name: &str, path: &mut Vec<String>, bit: Seen) -> Shape {
    match name {
        "str" => return Shape::Str,
        "int" | "int8" | "int16" | "int32" | "int64" => return Shape::Int,
        "uint8" | "uint16" | "uint32" | "uint64" | "size" => return Shape::Uint,
        "number" => return Shape::Number,
        "bool" => return Shape::Bool,
        "null" => return Shape::Null,
        "any" => return Shape::Any,
        _ => {}
    }
    let Some(entry) = schema.get(name) else {
        return Shape::Any;
    };
    match &entry.kind {
        Kind::Object { .. } => {
            if let Some(up) = path.iter().rev().position(|p| p == name) {
                return Shape::Up(up);
            }
            Shape::Object(object(schema, name, path, bit))
        }
        Kind::Enum { values } => Shape::Enum(values.iter().map(|v| (v.clone(), bit)).collect()),
        Kind::Array { element_type } => {
            Shape::Array(Box::new(shape(schema, element_type, path, bit)))
        }
        Kind::Alternate { members } => {
            let mut shapes: Vec<Shape> = Vec::new();
            for m in members {
                let s = shape(schema, m, path, bit);
                add_alternative(&mut shapes, s);
            }
            Shape::Alternate(shapes)
        }
        Kind::Builtin { json_type } => match json_type.as_str() {
            "string" => Shape::Str,
            "int" => Shape::Int,
            "number" => Shape::Number,
            "boolean" => Shape::Bool,
            "null" => Shape::Null,
            _ => Shape::Any,
        },
        _ => Shape::Any,
    }
}

fn object(schema: &Schema, name: &str, path: &mut Vec<String>, bit: Seen) -> Object {
    let Some(Kind::Object {
        members,
        tag,
        variants,
    }) = schema.get(name).map(|e| &e.kind)
    else {
        return Object::default();
    };
    path.push(name.to_owned());
    let members = members
        .iter()
        .map(|m| Field {
            name: m.name.clone(),
            shape: shape(schema, &m.ty, path, bit),
            optional: m.optional,
            seen: bit,
        })
        .collect();
    let branches = variants
        .iter()
        .map(|v| (v.case.clone(), object(schema, &v.ty, path, bit), bit))
        .collect();
    path.pop();
    Object {
        members,
        tag: tag.clone(),
        branches,
    }
}

/// Adds an alternative, merging it with one of the same JSON kind.
fn add_alternative(shapes: &mut Vec<Shape>, s: Shape) {
    match shapes.iter_mut().find(|x| json_kind(x) == json_kind(&s)) {
        Some(x) => *x = merge(x, &s),
        None => shapes.push(s),
    }
}

/// The JSON kind a shape is written as (alternates are told apart by it).
pub fn json_kind(s: &Shape) -> &'static str {
    match s {
        Shape::Str | Shape::Enum(_) => "string",
        Shape::Int | Shape::Uint | Shape::Number => "number",
        Shape::Bool => "boolean",
        Shape::Null => "null",
        Shape::Array(_) => "array",
        Shape::Object(_) | Shape::Up(_) => "object",
        Shape::Any => "any",
        Shape::Alternate(_) => "alternate",
    }
}

/// What two dumps say about the same place, as one shape.
fn merge(a: &Shape, b: &Shape) -> Shape {
    match (a, b) {
        _ if a == b => a.clone(),
        (Shape::Enum(x), Shape::Enum(y)) => {
            let mut values = x.clone();
            for (v, seen) in y {
                match values.iter_mut().find(|(w, _)| w == v) {
                    Some((_, s)) => *s |= seen,
                    None => values.push((v.clone(), *seen)),
                }
            }
            Shape::Enum(values)
        }
        (Shape::Array(x), Shape::Array(y)) => Shape::Array(Box::new(merge(x, y))),
        (Shape::Object(x), Shape::Object(y)) => Shape::Object(merge_objects(x, y)),
        (Shape::Alternate(x), Shape::Alternate(y)) => {
            let mut shapes = x.clone();
            for s in y {
                add_alternative(&mut shapes, s.clone());
            }
            Shape::Alternate(shapes)
        }
        (Shape::Int, Shape::Uint) | (Shape::Uint, Shape::Int) => Shape::Number,
        // A string in one dump, an enum in another: the enum's values are
        // only some of the strings.
        (Shape::Str, Shape::Enum(_)) | (Shape::Enum(_), Shape::Str) => Shape::Str,
        _ => Shape::Any,
    }
}

fn merge_objects(a: &Object, b: &Object) -> Object {
    // Members in b's order (the later dump), then a's that b lacks.
    let mut members = Vec::new();
    for f in &b.members {
        match a.members.iter().find(|g| g.name == f.name) {
            Some(g) => members.push(Field {
                name: f.name.clone(),
                shape: merge(&g.shape, &f.shape),
                optional: f.optional || g.optional,
                seen: f.seen | g.seen,
            }),
            None => members.push(Field {
                optional: true,
                ..f.clone()
            }),
        }
    }
    for g in &a.members {
        if !b.members.iter().any(|f| f.name == g.name) {
            members.push(Field {
                optional: true,
                ..g.clone()
            });
        }
    }
    let mut branches = b.branches.clone();
    for (case, o, seen) in &a.branches {
        match branches.iter_mut().find(|(c, _, _)| c == case) {
            Some((_, p, s)) => {
                *p = merge_objects(o, p);
                *s |= seen;
            }
            None => branches.push((case.clone(), o.clone(), *seen)),
        }
    }
    Object {
        members,
        tag: b.tag.clone().or_else(|| a.tag.clone()),
        branches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(members: serde_json::Value, values: serde_json::Value) -> Schema {
        Schema::from_json(&json!([
            {"name": "query-x", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
            {"name": "0", "meta-type": "object", "members": []},
            {"name": "1", "meta-type": "object", "members": members},
            {"name": "2", "meta-type": "enum", "values": values},
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "int", "meta-type": "builtin", "json-type": "int"}
        ]))
        .unwrap()
    }

    #[test]
    fn dumps_merge_into_options_value_unions_and_json_values_where_they_disagree() {
        let old = schema(
            json!([{"name": "a", "type": "str"}, {"name": "gone", "type": "int"},
                   {"name": "kind", "type": "2"}, {"name": "changed", "type": "str"}]),
            json!(["x", "y"]),
        );
        let new = schema(
            json!([{"name": "a", "type": "str"}, {"name": "kind", "type": "2"},
                   {"name": "changed", "type": "1"}, {"name": "added", "type": "int", "default": null}]),
            json!(["y", "z"]),
        );
        let m = Model::merge(&[("old".into(), old), ("new".into(), new)]);
        let Shape::Object(ret) = &m.commands[0].returns else {
            panic!()
        };
        let field = |n: &str| ret.members.iter().find(|f| f.name == n).unwrap();
        assert!(!field("a").optional);
        assert_eq!(field("a").seen, 0b11);
        assert!(field("gone").optional, "absent from one dump");
        assert_eq!(field("gone").seen, 0b01);
        assert!(field("added").optional);
        assert_eq!(field("added").seen, 0b10);
        assert_eq!(
            field("changed").shape,
            Shape::Any,
            "a string, then an object"
        );
        let Shape::Enum(values) = &field("kind").shape else {
            panic!()
        };
        assert_eq!(
            values,
            &[("x".into(), 0b01), ("y".into(), 0b11), ("z".into(), 0b10)]
        );
    }
}
