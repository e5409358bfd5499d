//! A mock QEMU: any real QEMU's command set, from that QEMU's schema dump.
//!
//! Every command of the schema exists; its arguments are checked as that
//! QEMU would check them ([`Schema`]); `query-version`, `query-commands`
//! and `query-qmp-schema` are answered from the configuration; everything
//! else from a replies file, or with an empty success.
//!
//! The QEMU comes as a [`Dump`]: what `qmp dump` writes (its version, its
//! `query-commands` in its own order, its schema), or a bare schema. A
//! bare schema cannot tell QEMU's command order (introspection lists
//! commands in an order of its own), so `query-commands` then follows the
//! schema's order.
//!
//! The replies file is a JSON array of rules, the first match winning:
//!
//! ```json
//! [
//!   {"command": "query-status", "return": {"status": "running", "running": true}},
//!   {"command": "blockdev-del", "arguments": {"node-name": "busy"},
//!    "error": {"class": "GenericError", "desc": "Node busy is in use"}},
//!   {"command": "stop", "events": [{"event": "STOP"}]}
//! ]
//! ```
//!
//! A rule matches the command by name and, when it has `arguments`, every
//! member given there must equal the request's (other members may differ).
//! It answers with `return` (default `{}`) or `error` (`class` defaults to
//! GenericError), and first sends its `events` (`event`, optional `data`),
//! as QEMU sends an event before the reply of the command that caused it.

use crate::schema::{check_arguments, Schema};
use crate::server::{Server, ServerBuilder};
use crate::session::QmpError;
use qmp_proto::qemu_json::{QDict, QObject};
use qmp_proto::Version;
use std::sync::Arc;

/// One rule of the replies file.
#[derive(Debug, Clone)]
struct Rule {
    command: String,
    arguments: Option<QDict>,
    outcome: Result<QObject, QmpError>,
    events: Vec<(String, Option<QObject>)>,
}

/// The replies file.
#[derive(Debug, Clone, Default)]
pub struct Replies {
    rules: Vec<Rule>,
}

/// A replies file, dump or schema a mock cannot use; the text says what
/// is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError(String);

impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockError {}

impl Replies {
    /// Reads the rules from their JSON form (see the README's `qmp mock
    /// --replies`); the error says which rule is wrong.
    pub fn from_qobject(v: &QObject) -> Result<Replies, MockError> {
        Self::read(v).map_err(MockError)
    }

    fn read(v: &QObject) -> Result<Replies, String> {
        let QObject::List(items) = v else {
            return Err("a replies file is a JSON array of rules".into());
        };
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let d = item
                .as_dict()
                .ok_or_else(|| format!("rule {i} is not an object"))?;
            if let Some((key, _)) = d
                .iter()
                .find(|(k, _)| !["command", "arguments", "return", "error", "events"].contains(k))
            {
                return Err(format!(
                    "rule {i}: unknown member \"{key}\" (a rule has command, arguments, return or error, events)"
                ));
            }
            let command = d
                .get("command")
                .and_then(QObject::as_str)
                .ok_or_else(|| format!("rule {i} has no \"command\""))?
                .to_owned();
            let arguments = match d.get("arguments") {
                None => None,
                Some(QObject::Dict(a)) => Some(a.clone()),
                Some(_) => return Err(format!("rule {i}: \"arguments\" must be an object")),
            };
            let outcome = match (d.get("return"), d.get("error")) {
                (Some(_), Some(_)) => {
                    return Err(format!("rule {i} has both \"return\" and \"error\""))
                }
                (_, Some(e)) => {
                    let e = e
                        .as_dict()
                        .ok_or_else(|| format!("rule {i}: \"error\" must be an object"))?;
                    let text = |key: &str, default: &str| match e.get(key) {
                        None => Ok(default.to_owned()),
                        Some(QObject::String(s)) => Ok(s.clone()),
                        Some(_) => Err(format!("rule {i}: \"error\".\"{key}\" must be a string")),
                    };
                    Err(QmpError {
                        class: text("class", "GenericError")?,
                        desc: text("desc", "")?,
                    })
                }
                (Some(r), None) => Ok(r.clone()),
                (None, None) => Ok(QObject::Dict(QDict::new())),
            };
            let mut events = Vec::new();
            let listed = match d.get("events") {
                None => &[][..],
                Some(QObject::List(list)) => &list[..],
                Some(_) => return Err(format!("rule {i}: \"events\" must be an array of events")),
            };
            for e in listed {
                let name = e
                    .as_dict()
                    .and_then(|e| e.get("event"))
                    .and_then(QObject::as_str)
                    .ok_or_else(|| format!("rule {i}: each event needs an \"event\" name"))?;
                events.push((
                    name.to_owned(),
                    e.as_dict().and_then(|e| e.get("data")).cloned(),
                ));
            }
            rules.push(Rule {
                command,
                arguments,
                outcome,
                events,
            });
        }
        Ok(Replies { rules })
    }

    fn find(&self, command: &str, args: &QDict) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.command == command
                && r.arguments
                    .as_ref()
                    .is_none_or(|want| want.iter().all(|(k, v)| args.get(k) == Some(v)))
        })
    }
}

/// A QEMU to mock, as `qmp dump` writes it, or just its schema.
#[derive(Debug, Clone)]
pub struct Dump {
    /// The `query-qmp-schema` reply.
    pub schema: QObject,
    /// The `query-version` reply, when the dump has it.
    pub version: Option<Version>,
    /// The command names as `query-commands` lists them, when known.
    pub commands: Option<Vec<String>>,
}

impl Dump {
    /// Reads `qmp dump` output (an object with `schema`, `version`,
    /// `commands`) or a bare schema (the `query-qmp-schema` array).
    pub fn from_qobject(v: QObject) -> Result<Dump, MockError> {
        Self::read(v).map_err(MockError)
    }

    fn read(v: QObject) -> Result<Dump, String> {
        let QObject::Dict(d) = v else {
            return Ok(Dump {
                schema: v,
                version: None,
                commands: None,
            });
        };
        let schema = d
            .get("schema")
            .cloned()
            .ok_or("a dump needs \"schema\" (the query-qmp-schema reply)")?;
        let version = match d.get("version") {
            None => None,
            Some(v) => Some(Version::from_qobject(v).ok_or(
                "\"version\" must be a query-version reply: {\"qemu\": {\"major\", \"minor\", \"micro\"}, \"package\"}",
            )?),
        };
        let commands = match d.get("commands") {
            None => None,
            Some(QObject::List(list)) => Some(
                list.iter()
                    .map(|c| {
                        c.as_dict()
                            .and_then(|c| c.get("name"))
                            .and_then(QObject::as_str)
                            .map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or("\"commands\" must be a query-commands reply: [{\"name\": ...}]")?,
            ),
            Some(_) => return Err("\"commands\" must be a query-commands reply (an array)".into()),
        };
        Ok(Dump {
            schema,
            version,
            commands,
        })
    }
}

/// Builds a mock QEMU: `version` is what it claims, which also picks how
/// malformed input is answered.
pub fn server(dump: Dump, version: &Version, replies: Replies) -> Result<Server, MockError> {
    let schema_dump = dump.schema;
    let schema =
        Schema::from_json(&schema_dump.to_value()).map_err(|e| MockError(e.to_string()))?;
    let schema = Arc::new(schema);
    let replies = Arc::new(replies);
    let mut b = ServerBuilder::new().version(
        version.qemu.major,
        version.qemu.minor,
        version.qemu.micro,
        &version.package,
    );
    if let Some(order) = dump.commands {
        b = b.list_commands_in(order);
    }
    for command in schema.command_names() {
        // the session answers qmp_capabilities; query-qmp-schema is below
        if command == "qmp_capabilities" || command == "query-qmp-schema" {
            continue;
        }
        let allow_oob = schema.allow_oob(command) == Some(true);
        let (name, checker, replies) = (command.to_owned(), schema.clone(), replies.clone());
        let handler = move |req: crate::server::Request| {
            let checked = check_arguments(&checker, &name, &req.arguments);
            let rule = replies.find(&name, &req.arguments).cloned();
            async move {
                checked?;
                let Some(rule) = rule else {
                    return Ok(None);
                };
                for (event, data) in rule.events {
                    req.server().emit(&event, data);
                }
                rule.outcome.map(Some)
            }
        };
        b = if allow_oob {
            b.oob_command(command, handler)
        } else {
            b.command(command, handler)
        };
    }
    // The dump itself, one copy shared by every call.
    if schema.allow_oob("query-qmp-schema").is_some() {
        let dump = Arc::new(schema_dump);
        let checker = schema.clone();
        b = b.command("query-qmp-schema", move |req| {
            let result = check_arguments(&checker, "query-qmp-schema", &req.arguments)
                .map(|()| Some(QObject::clone(&dump)));
            async move { result }
        });
    }
    Ok(b.build())
}
