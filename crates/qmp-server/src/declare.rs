//! Declared argument and return types of the server's own commands, and
//! the `query-qmp-schema` generated from them.
//!
//! The generated schema is in QEMU's SchemaInfo format: type names other
//! than builtins masked as numbers in order of first use, arrays named
//! `[element]`, integer types folded into `int` as QEMU publishes them,
//! optional members with `"default": null`. Arguments are checked against
//! an unfolded copy, so our own integer members get QEMU's exact texts
//! (`Parameter 'x' expects uint8`).

use qmp_proto::qemu_json::{QDict, QObject};

/// A type, as QAPI has them.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// A string (`str`).
    Str,
    /// A boolean.
    Bool,
    /// Any number (`number`).
    Number,
    /// `null`.
    Null,
    /// Any value (`any`).
    Any,
    /// An integer in int64 (`int`).
    Int,
    /// An integer in int8.
    Int8,
    /// An integer in int16.
    Int16,
    /// An integer in int32.
    Int32,
    /// An integer in uint8.
    Uint8,
    /// An integer in uint16.
    Uint16,
    /// An integer in uint32.
    Uint32,
    /// An integer in uint64.
    Uint64,
    /// A size (uint64, also written with a suffix on the command line).
    Size,
    /// One of these strings.
    Enum(Vec<String>),
    /// An array of this type.
    List(Box<Ty>),
    /// An object with these members.
    Object(Vec<Field>),
}

/// A member of an object type.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The member's name.
    pub name: String,
    /// Its type.
    pub ty: Ty,
    /// Whether it may be left out.
    pub optional: bool,
}

impl Field {
    /// A member that must be given.
    pub fn required(name: &str, ty: Ty) -> Field {
        Field {
            name: name.into(),
            ty,
            optional: false,
        }
    }

    /// A member that may be left out.
    pub fn optional(name: &str, ty: Ty) -> Field {
        Field {
            name: name.into(),
            ty,
            optional: true,
        }
    }
}

impl Ty {
    /// An enumeration of these values.
    pub fn enumeration(values: &[&str]) -> Ty {
        Ty::Enum(values.iter().map(|v| v.to_string()).collect())
    }

    /// An array of `element`.
    pub fn list(element: Ty) -> Ty {
        Ty::List(Box::new(element))
    }

    /// The builtin's name: exact (`uint8`) or as QEMU publishes it (`int`).
    fn builtin(&self, exact: bool) -> Option<&'static str> {
        Some(match self {
            Ty::Str => "str",
            Ty::Bool => "bool",
            Ty::Number => "number",
            Ty::Null => "null",
            Ty::Any => "any",
            Ty::Int => "int",
            _ if !exact => match self {
                Ty::Int8
                | Ty::Int16
                | Ty::Int32
                | Ty::Uint8
                | Ty::Uint16
                | Ty::Uint32
                | Ty::Uint64
                | Ty::Size => "int",
                _ => return None,
            },
            Ty::Int8 => "int8",
            Ty::Int16 => "int16",
            Ty::Int32 => "int32",
            Ty::Uint8 => "uint8",
            Ty::Uint16 => "uint16",
            Ty::Uint32 => "uint32",
            Ty::Uint64 => "uint64",
            Ty::Size => "size",
            _ => return None,
        })
    }
}

/// A command's declaration.
#[derive(Debug, Clone)]
pub struct CommandDecl {
    /// The command's name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<Field>,
    /// What it returns (`None`: `{}`).
    pub returns: Option<Ty>,
    /// Whether it may run out of band.
    pub allow_oob: bool,
}

fn s(v: &str) -> QObject {
    QObject::String(v.into())
}

/// Builds SchemaInfo entries, interning types as it meets them.
struct Gen {
    exact: bool,
    entries: Vec<QObject>,
    types: Vec<(Ty, String)>,
    builtins: Vec<&'static str>,
}

impl Gen {
    fn name_of(&mut self, ty: &Ty) -> String {
        if let Some(b) = ty.builtin(self.exact) {
            if !self.builtins.contains(&b) {
                self.builtins.push(b);
            }
            return b.into();
        }
        if let Some((_, name)) = self.types.iter().find(|(t, _)| t == ty) {
            return name.clone();
        }
        let mut entry = QDict::new();
        let name = match ty {
            Ty::List(element) => format!("[{}]", self.name_of(element)),
            _ => (self
                .types
                .iter()
                .filter(|(t, _)| !matches!(t, Ty::List(_)))
                .count())
            .to_string(),
        };
        // reserve the name before members, so recursion sees it
        self.types.push((ty.clone(), name.clone()));
        entry.insert("name", s(&name));
        match ty {
            Ty::Enum(values) => {
                entry.insert(
                    "members",
                    QObject::List(
                        values
                            .iter()
                            .map(|v| {
                                QObject::Dict([("name".to_string(), s(v))].into_iter().collect())
                            })
                            .collect(),
                    ),
                );
                entry.insert("meta-type", s("enum"));
                entry.insert(
                    "values",
                    QObject::List(values.iter().map(|v| s(v)).collect()),
                );
            }
            Ty::List(element) => {
                let element = self.name_of(element);
                entry.insert("element-type", s(&element));
                entry.insert("meta-type", s("array"));
            }
            Ty::Object(fields) => {
                let members = fields
                    .iter()
                    .map(|f| {
                        let mut m = QDict::new();
                        m.insert("name", s(&f.name));
                        if f.optional {
                            m.insert("default", QObject::Null);
                        }
                        m.insert("type", s(&self.name_of(&f.ty)));
                        QObject::Dict(m)
                    })
                    .collect();
                entry.insert("members", QObject::List(members));
                entry.insert("meta-type", s("object"));
            }
            _ => unreachable!("builtins are handled above"),
        }
        self.entries.push(QObject::Dict(entry));
        name
    }
}

/// The SchemaInfo list for these commands (and no events). `exact` keeps
/// integer types apart, for checking; QEMU publishes them folded.
pub fn schema_info(commands: &[CommandDecl], exact: bool) -> QObject {
    let mut g = Gen {
        exact,
        entries: Vec::new(),
        types: Vec::new(),
        builtins: Vec::new(),
    };
    let mut command_entries = Vec::new();
    for c in commands {
        let arg_type = g.name_of(&Ty::Object(c.args.clone()));
        let ret_type = g.name_of(c.returns.as_ref().unwrap_or(&Ty::Object(vec![])));
        let mut e = QDict::new();
        e.insert("name", s(&c.name));
        e.insert("ret-type", s(&ret_type));
        e.insert("meta-type", s("command"));
        e.insert("arg-type", s(&arg_type));
        if c.allow_oob {
            e.insert("allow-oob", QObject::Bool(true));
        }
        command_entries.push(QObject::Dict(e));
    }
    let mut all = command_entries;
    all.append(&mut g.entries);
    for b in g.builtins {
        let json_type = match b {
            "str" => "string",
            "bool" => "boolean",
            "number" => "number",
            "null" => "null",
            "any" => "value",
            _ => "int",
        };
        let mut e = QDict::new();
        e.insert("name", s(b));
        e.insert("json-type", s(json_type));
        e.insert("meta-type", s("builtin"));
        all.push(QObject::Dict(e));
    }
    QObject::List(all)
}
