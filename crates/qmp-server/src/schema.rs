//! Command arguments checked against a QEMU schema, as QEMU checks them.
//!
//! The schema is QEMU's own introspection data (`query-qmp-schema`, as
//! `qmp schema` prints it): entries for commands, objects (with unions as
//! `tag` plus `variants`), enums, arrays, alternates and builtins, type
//! names masked as numbers. [`check_arguments`] walks a command's
//! arguments the way QEMU's generated code walks them, and fails with the
//! error QEMU would give first:
//!
//! * members in declaration order, then a union's variant members; a
//!   missing member is reported before an unexpected one;
//! * names as QEMU builds them: `file.bar`, `enable[0]`; some messages
//!   use the bare member name (`Parameter 'driver' does not accept value
//!   'nope'`), or `null` for a list element, as QEMU's do;
//! * `Invalid parameter type for 'x', expected: integer` for int64,
//!   `Parameter 'x' expects uint64` for uint64 and size (which also take
//!   negative integers, as QEMU does), `Parameter 'x' expects int8` for a
//!   narrower integer out of range; a float is never an integer (R8);
//! * the leftover member QEMU calls unexpected, from its hash table order.
//!
//! One text cannot be reproduced: a value that fits no branch of an
//! alternate gets QEMU's name for the alternate type (`expected:
//! BlockdevRef`), which the masked schema does not carry; the masked
//! name stands in.

use crate::session::QmpError;
use qmp_proto::qemu_json::{QDict, QObject};
use qmp_proto::schema::Kind;
pub use qmp_proto::schema::Schema;

/// Checks a command's arguments against `schema`; the error is the one
/// QEMU gives (CommandNotFound for a name the schema lacks).
pub fn check_arguments(schema: &Schema, command: &str, args: &QDict) -> Result<(), QmpError> {
    let Some(Kind::Command { arg_type, .. }) = schema.get(command).map(|e| &e.kind) else {
        return Err(QmpError::not_found(format!(
            "The command {command} has not been found"
        )));
    };
    let mut walk = Walk {
        schema,
        stack: Vec::new(),
    };
    walk.struct_at(None, args, arg_type)
        .map_err(QmpError::generic)
}

/// A schema is a command set: a session can check requests against a real
/// QEMU's commands with it.
impl crate::session::CommandSet for Schema {
    fn allow_oob(&self, command: &str) -> Option<bool> {
        Schema::allow_oob(self, command)
    }
}

/// One level of QEMU's visitor stack: an object (with the keys not yet
/// visited) or a list (with the index being visited).
struct Frame {
    name: Option<String>,
    kind: FrameKind,
}

enum FrameKind {
    Dict(qmp_proto::qemu_json::LeftoverKeys),
    List(usize),
}

struct Walk<'a> {
    schema: &'a Schema,
    stack: Vec<Frame>,
}

type Check = Result<(), String>;

impl Walk<'_> {
    /// QEMU's `full_name`: the member's path from the arguments' root.
    fn full_name(&self, name: Option<&str>) -> String {
        let mut out = String::new();
        let mut name = name.map(str::to_owned);
        for frame in self.stack.iter().rev() {
            match &frame.kind {
                FrameKind::Dict(_) => {
                    out.insert_str(0, name.as_deref().unwrap_or("<anonymous>"));
                    out.insert(0, '.');
                }
                FrameKind::List(index) => out.insert_str(0, &format!("[{index}]")),
            }
            name = frame.name.clone();
        }
        match name {
            Some(n) => out.insert_str(0, &n),
            None if out.starts_with('.') => {
                out.remove(0);
            }
            None if out.is_empty() => return "<anonymous>".into(),
            None => {}
        }
        out
    }

    fn type_error(&self, name: Option<&str>, expected: &str) -> String {
        format!(
            "Invalid parameter type for '{}', expected: {expected}",
            self.full_name(name)
        )
    }

    /// A value of type `ty`, visited under `name` (`None` in a list).
    fn value(&mut self, name: Option<&str>, value: &QObject, ty: &str) -> Check {
        let schema = self.schema;
        let Some(entry) = schema.get(ty) else {
            return Ok(());
        };
        match &entry.kind {
            Kind::Builtin { .. } => self.builtin(name, value, ty),
            Kind::Enum { values } => {
                let QObject::String(s) = value else {
                    return Err(self.type_error(name, "string"));
                };
                if values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(format!(
                        "Parameter '{}' does not accept value '{s}'",
                        name.unwrap_or("null")
                    ))
                }
            }
            Kind::Array { element_type } => {
                let QObject::List(items) = value else {
                    return Err(self.type_error(name, "array"));
                };
                self.stack.push(Frame {
                    name: name.map(str::to_owned),
                    kind: FrameKind::List(0),
                });
                for (i, item) in items.iter().enumerate() {
                    if let Some(Frame {
                        kind: FrameKind::List(index),
                        ..
                    }) = self.stack.last_mut()
                    {
                        *index = i;
                    }
                    self.value(None, item, element_type)?;
                }
                self.stack.pop();
                Ok(())
            }
            Kind::Object { .. } => {
                let QObject::Dict(d) = value else {
                    return Err(self.type_error(name, "object"));
                };
                self.struct_at(name, d, ty)
            }
            Kind::Alternate { members } => {
                let branch = members
                    .iter()
                    .find(|m| self.json_kind(m).is_some_and(|k| k == kind_of(value)));
                match branch {
                    Some(m) => self.value(name, value, m),
                    None => Err(format!(
                        "Invalid parameter type for '{}', expected: {ty}",
                        name.unwrap_or("null")
                    )),
                }
            }
            _ => Ok(()),
        }
    }

    /// The JSON kind a type accepts, to pick an alternate's branch.
    fn json_kind(&self, ty: &str) -> Option<&'static str> {
        Some(match &self.schema.get(ty)?.kind {
            Kind::Builtin { .. } => match ty {
                "str" => "string",
                "bool" => "boolean",
                "null" => "null",
                "any" => return None,
                _ => "number",
            },
            Kind::Enum { .. } => "string",
            Kind::Object { .. } => "object",
            Kind::Array { .. } => "array",
            _ => return None,
        })
    }

    fn builtin(&self, name: Option<&str>, value: &QObject, ty: &str) -> Check {
        let bare = || name.unwrap_or("null").to_owned();
        match ty {
            "str" => matches!(value, QObject::String(_))
                .then_some(())
                .ok_or_else(|| self.type_error(name, "string")),
            "bool" => matches!(value, QObject::Bool(_))
                .then_some(())
                .ok_or_else(|| self.type_error(name, "boolean")),
            "null" => matches!(value, QObject::Null)
                .then_some(())
                .ok_or_else(|| self.type_error(name, "null")),
            "number" => matches!(
                value,
                QObject::Int(_) | QObject::UInt(_) | QObject::Double(_)
            )
            .then_some(())
            .ok_or_else(|| self.type_error(name, "number")),
            "int" | "int64" | "int8" | "int16" | "int32" => {
                let QObject::Int(i) = value else {
                    return Err(self.type_error(name, "integer"));
                };
                let (lo, hi) = match ty {
                    "int8" => (i8::MIN as i64, i8::MAX as i64),
                    "int16" => (i16::MIN as i64, i16::MAX as i64),
                    "int32" => (i32::MIN as i64, i32::MAX as i64),
                    _ => (i64::MIN, i64::MAX),
                };
                if *i < lo || *i > hi {
                    return Err(format!("Parameter '{}' expects {ty}", bare()));
                }
                Ok(())
            }
            "uint64" | "size" | "uint8" | "uint16" | "uint32" => {
                // negative integers are taken, as QEMU takes them
                let u = match value {
                    QObject::Int(i) => *i as u64,
                    QObject::UInt(u) => *u,
                    _ => {
                        return Err(format!(
                            "Parameter '{}' expects uint64",
                            self.full_name(name)
                        ))
                    }
                };
                let max = match ty {
                    "uint8" => u8::MAX as u64,
                    "uint16" => u16::MAX as u64,
                    "uint32" => u32::MAX as u64,
                    _ => u64::MAX,
                };
                if u > max {
                    return Err(format!("Parameter '{}' expects {ty}", bare()));
                }
                Ok(())
            }
            _ => Ok(()), // any, QType and builtins not checked here
        }
    }

    /// An object type's members (and variant members) in `dict`, then the
    /// leftover check.
    fn struct_at(&mut self, name: Option<&str>, dict: &QDict, ty: &str) -> Check {
        self.stack.push(Frame {
            name: name.map(str::to_owned),
            kind: FrameKind::Dict(qmp_proto::qemu_json::LeftoverKeys::new(dict)),
        });
        self.members(dict, ty, &mut Vec::new())?;
        let Some(Frame {
            kind: FrameKind::Dict(left),
            ..
        }) = self.stack.last()
        else {
            unreachable!("pushed above")
        };
        if let Some(extra) = left.first() {
            return Err(format!(
                "Parameter '{}' is unexpected",
                self.full_name(Some(&extra))
            ));
        }
        self.stack.pop();
        Ok(())
    }

    /// Checks `dict`'s members against object type `ty` and, for a union,
    /// the variant its tag picks. `expanded` holds the types already
    /// applied to this dict: a schema whose union has itself as a variant
    /// (no QEMU's does; a hand-made file can) stops there.
    fn members(&mut self, dict: &QDict, ty: &str, expanded: &mut Vec<String>) -> Check {
        if expanded.iter().any(|t| t == ty) {
            return Ok(());
        }
        expanded.push(ty.to_owned());
        let schema = self.schema;
        let Some(Kind::Object {
            members,
            tag,
            variants,
        }) = schema.get(ty).map(|e| &e.kind)
        else {
            return Ok(());
        };
        for m in members {
            match dict.get(&m.name) {
                Some(v) => {
                    if let Some(Frame {
                        kind: FrameKind::Dict(left),
                        ..
                    }) = self.stack.last_mut()
                    {
                        left.take(&m.name);
                    }
                    self.value(Some(&m.name), v, &m.ty)?;
                }
                None if m.optional => {}
                None => {
                    return Err(format!(
                        "Parameter '{}' is missing",
                        self.full_name(Some(&m.name))
                    ))
                }
            }
        }
        if let Some(tag) = tag {
            let case = dict.get(tag).and_then(QObject::as_str).unwrap_or_default();
            if let Some(variant) = variants.iter().find(|v| v.case == case) {
                self.members(dict, &variant.ty, expanded)?;
            }
        }
        Ok(())
    }
}

fn kind_of(v: &QObject) -> &'static str {
    match v {
        QObject::String(_) => "string",
        QObject::Bool(_) => "boolean",
        QObject::Null => "null",
        QObject::Int(_) | QObject::UInt(_) | QObject::Double(_) => "number",
        QObject::Dict(_) => "object",
        QObject::List(_) => "array",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmp_proto::qemu_json::{Parsed, Streamer};

    fn parse(text: &str) -> QObject {
        match Streamer::new()
            .feed_collect(format!("{text}\n").as_bytes())
            .remove(0)
        {
            Parsed::Value(v) => v,
            Parsed::Error(e) => panic!("{e}"),
        }
    }

    /// No QEMU's schema has a union that is its own variant, but a file
    /// can: checking against it must end, not overflow the stack.
    #[test]
    fn a_union_that_is_its_own_variant_is_checked_without_end() {
        let schema = Schema::from_json(
            &parse(
                r#"[{"name": "boom", "meta-type": "command", "arg-type": "U", "ret-type": "K"},
                {"name": "U", "meta-type": "object", "members": [{"name": "kind", "type": "K"}],
                 "tag": "kind", "variants": [{"case": "a", "type": "U"}]},
                {"name": "K", "meta-type": "enum", "values": ["a"]}]"#,
            )
            .to_value(),
        )
        .unwrap();
        let QObject::Dict(args) = parse(r#"{"kind": "a"}"#) else {
            panic!()
        };
        assert!(check_arguments(&schema, "boom", &args).is_ok());
        let QObject::Dict(args) = parse(r#"{"kind": "a", "x": 1}"#) else {
            panic!()
        };
        assert_eq!(
            check_arguments(&schema, "boom", &args).unwrap_err().desc,
            "Parameter 'x' is unexpected"
        );
    }
}
