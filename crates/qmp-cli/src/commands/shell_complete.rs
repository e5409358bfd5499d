//! Completion and `help` for `qmp-shell`, from the live `query-qmp-schema`:
//! command names, argument names (nested ones with dots, union variants
//! included) and enum values after `name=`.

use qmp_proto::schema::{Kind, Schema};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Dotted path, such as `cache.direct`.
    pub path: String,
    /// A readable type: `str`, `int`, `enum (a|b)`, `[str]`, `object`.
    pub ty: String,
    pub optional: bool,
    pub values: Vec<String>,
    /// For a union branch's member, the tag values that select it, such as
    /// `[("driver", "file")]` (several for nested unions); empty for the
    /// members every request has.
    pub when: Vec<(String, String)>,
    /// The object type behind an alternate member (`file` of blockdev-add:
    /// a node name, or a node of its own), whose members are completed
    /// dotted on demand (expanding them all up front would multiply
    /// without end: a node's `file` is a node again).
    pub object_branch: Option<String>,
}

impl Arg {
    /// `driver=file`, or `driver=qcow2, file.driver=file` for nested unions.
    fn condition(&self) -> String {
        self.when
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub commands: Vec<String>,
    /// For what is expanded on demand.
    schema: Option<std::sync::Arc<Schema>>,
    args: HashMap<String, Vec<Arg>>,
    /// Words a command takes next, such as HMP's `info` subcommands, or
    /// the action types of `transaction(`.
    next_words: HashMap<String, Vec<String>>,
}

impl Catalog {
    /// From a schema: its commands, with their arguments.
    pub fn from_schema(schema: &Schema) -> Catalog {
        let mut c = Catalog::default();
        for e in schema.commands() {
            let mut args = Vec::new();
            if let Kind::Command { arg_type, .. } = &e.kind {
                members(schema, arg_type, "", &[], &mut args, 0);
            }
            c.args.insert(e.name.clone(), args);
            c.commands.push(e.name.clone());
        }
        c.commands.sort();
        c.schema = Some(std::sync::Arc::new(schema.clone()));
        // transaction( ACTION ...: the values of the actions' `type` tag
        let actions = c
            .args
            .get("transaction")
            .into_iter()
            .flatten()
            .find(|a| a.path == "actions")
            .map(|_| transaction_actions(schema))
            .unwrap_or_default();
        if !actions.is_empty() {
            c.next_words.insert("transaction(".into(), actions);
        }
        c
    }

    /// Also completes `command WORD` with `words` (HMP's `info X`).
    pub fn with_next_words(mut self, command: &str, mut words: Vec<String>) -> Catalog {
        words.sort();
        words.dedup();
        self.next_words.insert(command.to_owned(), words);
        self
    }

    /// Only command names (HMP's, from its `help` text).
    pub fn from_names(mut names: Vec<String>) -> Catalog {
        names.sort();
        names.dedup();
        Catalog {
            commands: names,
            ..Catalog::default()
        }
    }

    /// Where the word being completed starts, and the candidates.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let first = before[..start].split_whitespace().next();
        let command_names = |word: &str| {
            self.commands
                .iter()
                .filter(|c| c.starts_with(word))
                .cloned()
                .collect()
        };
        let Some(command) = first else {
            return (start, command_names(word));
        };
        // `help CMD`: a command's name
        let second = before[..start].split_whitespace().count() == 1;
        if command == "help" && second {
            return (start, command_names(word));
        }
        // `info X`, and each action of `transaction( X ... ; X ...`
        let after_separator = before[..start].split_whitespace().last() == Some(";");
        let in_transaction = before.trim_start().starts_with("transaction(");
        let key = if in_transaction {
            "transaction("
        } else {
            command
        };
        if let Some(words) = self.next_words.get(key) {
            if second || (in_transaction && after_separator) {
                let found = words
                    .iter()
                    .filter(|w| w.starts_with(word))
                    .cloned()
                    .collect();
                return (start, found);
            }
        }
        // What the line has given already: KEY=VALUE words before this one.
        let given: Vec<(&str, &str)> = before[..start]
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.split_once('='))
            .collect();
        let listed = self
            .args
            .get(command)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // `file.dri`: the members of an alternate's object, on demand
        let mut on_demand = Vec::new();
        if let (Some(schema), Some((prefix, _))) = (&self.schema, word.rsplit_once('.')) {
            let key = prefix.split('=').next().unwrap_or(prefix);
            for a in listed.iter().filter(|a| a.path == key) {
                if let Some(object) = &a.object_branch {
                    members(
                        schema,
                        object,
                        &format!("{key}."),
                        &a.when,
                        &mut on_demand,
                        0,
                    );
                }
            }
        }
        let args: Vec<&Arg> = listed
            .iter()
            .chain(on_demand.iter())
            // a union's branch only once its tag says so, if it was given
            .filter(|a| {
                a.when.iter().all(|(tag, case)| {
                    given
                        .iter()
                        .find(|(k, _)| k == tag)
                        .is_none_or(|(_, v)| v == case)
                })
            })
            .collect();
        let found = match word.split_once('=') {
            Some((key, value)) => args
                .iter()
                .filter(|a| a.path == key)
                .flat_map(|a| {
                    a.values
                        .iter()
                        .filter(|v| v.starts_with(value))
                        .map(|v| format!("{key}={v}"))
                })
                .collect(),
            None => args
                .iter()
                .filter(|a| a.path.starts_with(word))
                // not one already given
                .filter(|a| !given.iter().any(|(k, _)| *k == a.path))
                .map(|a| format!("{}=", a.path))
                .collect(),
        };
        (start, found)
    }

    /// `help CMD`: the command's arguments and types.
    pub fn help(&self, command: &str) -> Option<String> {
        let args = self.args.get(command)?;
        if args.is_empty() {
            return Some(format!("{command}: no arguments"));
        }
        let width = args.iter().map(|a| a.path.len()).max().unwrap_or(0);
        let mut out = format!("{command}:");
        let line = |a: &Arg, indent: &str| {
            let opt = if a.optional { " (optional)" } else { "" };
            format!("\n{indent}{:width$}  {}{opt}", a.path, a.ty)
        };
        // The members every request has, then each union branch's under
        // the tag values that select it: "required" there means required
        // when that branch is chosen.
        for a in args.iter().filter(|a| a.when.is_empty()) {
            out.push_str(&line(a, "  "));
        }
        let mut branches: Vec<String> = Vec::new();
        for a in args.iter().filter(|a| !a.when.is_empty()) {
            let c = a.condition();
            if !branches.contains(&c) {
                branches.push(c);
            }
        }
        for branch in branches {
            out.push_str(&format!("\n  with {branch}:"));
            for a in args.iter().filter(|a| a.condition() == branch) {
                out.push_str(&line(a, "    "));
            }
        }
        Some(out)
    }
}

/// An object type's members, flattened with dotted paths (nesting capped);
/// `when` is the branch condition they are under.
fn members(
    schema: &Schema,
    ty: &str,
    prefix: &str,
    when: &[(String, String)],
    out: &mut Vec<Arg>,
    depth: usize,
) {
    let Some(Kind::Object {
        members: list,
        tag,
        variants,
    }) = schema.get(ty).map(|e| &e.kind)
    else {
        return;
    };
    if depth > 6 {
        return;
    }
    for m in list {
        let path = format!("{prefix}{}", m.name);
        let (shown, values) = describe(schema, &m.ty);
        if !out.iter().any(|a| a.path == path && a.when == when) {
            let object_branch = match schema.get(&m.ty).map(|e| &e.kind) {
                Some(Kind::Alternate { members: branches }) => branches
                    .iter()
                    .find(|b| matches!(schema.get(b).map(|e| &e.kind), Some(Kind::Object { .. })))
                    .cloned(),
                _ => None,
            };
            out.push(Arg {
                path: path.clone(),
                ty: shown,
                optional: m.optional,
                values,
                when: when.to_vec(),
                object_branch,
            });
        }
        members(schema, &m.ty, &format!("{path}."), when, out, depth + 1);
    }
    for v in variants {
        let mut branch = when.to_vec();
        if let Some(tag) = tag {
            branch.push((format!("{prefix}{tag}"), v.case.clone()));
        }
        members(schema, &v.ty, prefix, &branch, out, depth + 1);
    }
}

fn describe(schema: &Schema, ty: &str) -> (String, Vec<String>) {
    let Some(e) = schema.get(ty) else {
        return (ty.to_owned(), vec![]);
    };
    match &e.kind {
        Kind::Builtin { .. } => (ty.to_owned(), vec![]),
        Kind::Enum { values } => (format!("enum ({})", values.join("|")), values.clone()),
        Kind::Array { element_type } => {
            let (inner, _) = describe(schema, element_type);
            (format!("[{inner}]"), vec![])
        }
        Kind::Object { .. } => ("object".into(), vec![]),
        Kind::Alternate { .. } => ("alternate".into(), vec![]),
        _ => ("value".into(), vec![]),
    }
}

/// The action types `transaction` takes: the values of the `type` tag of
/// its `actions` elements.
fn transaction_actions(schema: &Schema) -> Vec<String> {
    let arg_type = |name: &str| match &schema.get(name)?.kind {
        Kind::Command { arg_type, .. } => Some(arg_type.clone()),
        _ => None,
    };
    let member_type = |ty: &str, member: &str| match &schema.get(ty)?.kind {
        Kind::Object { members, .. } => members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.ty.clone()),
        _ => None,
    };
    let actions = (|| {
        let list = member_type(&arg_type("transaction")?, "actions")?;
        let Kind::Array { element_type } = &schema.get(&list)?.kind else {
            return None;
        };
        let tag_type = member_type(element_type, "type")?;
        match &schema.get(&tag_type)?.kind {
            Kind::Enum { values } => Some(values.clone()),
            _ => None,
        }
    })();
    let mut actions = actions.unwrap_or_default();
    actions.sort();
    actions
}

/// HMP command names from the text of HMP's `help`.
pub fn hmp_names(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|w| w.split('|'))
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::from_json(&json!([
            {"name": "blockdev-add", "meta-type": "command", "arg-type": "0", "ret-type": "1"},
            {"name": "blockdev-del", "meta-type": "command", "arg-type": "1", "ret-type": "1"},
            {"name": "0", "meta-type": "object", "tag": "driver", "members": [
                {"name": "driver", "type": "2"}, {"name": "node-name", "type": "str", "default": null},
                {"name": "cache", "type": "3", "default": null}],
             "variants": [{"case": "file", "type": "4"}]},
            {"name": "1", "meta-type": "object", "members": [{"name": "node-name", "type": "str"}]},
            {"name": "2", "meta-type": "enum", "values": ["file", "null-co", "raw"]},
            {"name": "3", "meta-type": "object", "members": [{"name": "direct", "type": "bool", "default": null}]},
            {"name": "4", "meta-type": "object", "members": [{"name": "filename", "type": "str"}]},
            {"name": "str", "meta-type": "builtin", "json-type": "string"},
            {"name": "bool", "meta-type": "builtin", "json-type": "boolean"}
        ]))
        .unwrap()
    }

    #[test]
    fn completes_commands_arguments_nested_names_and_enum_values() {
        let c = Catalog::from_schema(&schema());
        assert_eq!(
            c.complete("block", 5),
            (0, vec!["blockdev-add".into(), "blockdev-del".into()])
        );
        assert_eq!(
            c.complete("blockdev-add ca", 15).1,
            ["cache=", "cache.direct="]
        );
        assert_eq!(
            c.complete("blockdev-add driver=n", 21),
            (13, vec!["driver=null-co".into()])
        );
        assert!(
            c.complete("blockdev-add fi", 15)
                .1
                .contains(&"filename=".to_string()),
            "union variant members"
        );
        let help = c.help("blockdev-add").unwrap();
        assert!(
            help.contains("driver        enum (file|null-co|raw)"),
            "{help}"
        );
        assert!(help.contains("cache.direct  bool (optional)"), "{help}");
        // a branch's members under the tag value that selects them
        assert!(
            help.ends_with("\n  with driver=file:\n    filename      str"),
            "{help}"
        );
    }

    /// Dotted keys reach into an alternate's object, as blockdev-add's
    /// `file` (a node name, or a node of its own), and follow its tag.
    #[test]
    fn dotted_keys_through_an_alternate() {
        let schema = Schema::from_json(&json!([
            {"name": "blockdev-add", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
            {"name": "0", "meta-type": "object", "tag": "driver",
             "members": [{"name": "driver", "type": "3"}, {"name": "file", "type": "1", "default": null}],
             "variants": [{"case": "file", "type": "4"}]},
            {"name": "1", "meta-type": "alternate", "members": [{"type": "0"}, {"type": "str"}]},
            {"name": "3", "meta-type": "enum", "values": ["file", "raw"]},
            {"name": "4", "meta-type": "object", "members": [{"name": "filename", "type": "str"}]},
            {"name": "str", "meta-type": "builtin", "json-type": "string"}
        ]))
        .unwrap();
        let c = Catalog::from_schema(&schema);
        let offered = |line: &str| c.complete(line, line.len()).1;
        assert_eq!(
            offered("blockdev-add driver=raw file."),
            ["file.driver=", "file.file=", "file.filename="]
        );
        // the inner node's own tag narrows its members
        assert_eq!(
            offered("blockdev-add driver=raw file.driver=file file.f"),
            ["file.file=", "file.filename="]
        );
        assert_eq!(
            offered("blockdev-add file.driver=raw file.f"),
            ["file.file="]
        );
        assert_eq!(offered("blockdev-add file.driver=r"), ["file.driver=raw"]);
    }

    #[test]
    fn completion_narrows_to_the_chosen_branch_and_skips_what_was_given() {
        let c = Catalog::from_schema(&schema());
        let offered = |line: &str| c.complete(line, line.len()).1;
        // the file branch's member, only while driver is file or not given
        assert!(offered("blockdev-add driver=file f").contains(&"filename=".into()));
        assert!(offered("blockdev-add driver=raw f").is_empty());
        // names given already are not offered again
        assert_eq!(offered("blockdev-add node-name=n0 n"), Vec::<String>::new());
        // help CMD completes a command
        assert_eq!(offered("help blockdev-d"), ["blockdev-del"]);
    }

    #[test]
    fn hmp_help_names() {
        let help = "announce_self [interfaces] [id] -- Trigger GARP/RARP announcements\ninfo [subcommand] -- show various information\nq|quit  -- quit the emulator";
        assert_eq!(hmp_names(help), ["announce_self", "info", "q", "quit"]);
    }
}
