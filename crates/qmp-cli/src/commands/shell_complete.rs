//! Completion and `help` for `qmp-shell`, from the live `query-qmp-schema`:
//! command names, argument names (nested ones with dots, union variants
//! included) and enum values after `name=`.

use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// Dotted path, such as `cache.direct`.
    pub path: String,
    /// A readable type: `str`, `int`, `enum (a|b)`, `[str]`, `object`.
    pub ty: String,
    pub optional: bool,
    pub values: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub commands: Vec<String>,
    args: HashMap<String, Vec<Arg>>,
}

impl Catalog {
    /// From a SchemaInfo list (commands come from its command entries).
    pub fn from_schema(schema: &Value) -> Catalog {
        let entries: HashMap<&str, &Value> = schema
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|e| Some((e["name"].as_str()?, e)))
                    .collect()
            })
            .unwrap_or_default();
        let mut c = Catalog::default();
        for e in schema.as_array().into_iter().flatten() {
            if e["meta-type"] != "command" {
                continue;
            }
            let name = e["name"].as_str().unwrap_or_default().to_owned();
            let mut args = Vec::new();
            if let Some(t) = e["arg-type"].as_str() {
                members(&entries, t, "", &mut args, 0);
            }
            c.args.insert(name.clone(), args);
            c.commands.push(name);
        }
        c.commands.sort();
        c
    }

    /// Only command names (HMP's, from its `help` text).
    pub fn from_names(mut names: Vec<String>) -> Catalog {
        names.sort();
        names.dedup();
        Catalog {
            commands: names,
            args: HashMap::new(),
        }
    }

    /// Where the word being completed starts, and the candidates.
    pub fn complete(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let first = before[..start].split_whitespace().next();
        let Some(command) = first else {
            let found = self
                .commands
                .iter()
                .filter(|c| c.starts_with(word))
                .cloned()
                .collect();
            return (start, found);
        };
        let args = self
            .args
            .get(command)
            .map(Vec::as_slice)
            .unwrap_or_default();
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
        for a in args {
            let opt = if a.optional { " (optional)" } else { "" };
            out.push_str(&format!("\n  {:width$}  {}{opt}", a.path, a.ty));
        }
        Some(out)
    }
}

/// An object type's members, flattened with dotted paths (nesting capped).
fn members(
    entries: &HashMap<&str, &Value>,
    ty: &str,
    prefix: &str,
    out: &mut Vec<Arg>,
    depth: usize,
) {
    let Some(e) = entries.get(ty) else { return };
    if e["meta-type"] != "object" || depth > 6 {
        return;
    }
    for m in e["members"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let path = format!("{prefix}{name}");
        let mty = m["type"].as_str().unwrap_or_default();
        let (shown, values) = describe(entries, mty);
        if !out.iter().any(|a| a.path == path) {
            out.push(Arg {
                path: path.clone(),
                ty: shown,
                optional: m.get("default").is_some(),
                values,
            });
        }
        members(entries, mty, &format!("{path}."), out, depth + 1);
    }
    for v in e["variants"].as_array().into_iter().flatten() {
        if let Some(t) = v["type"].as_str() {
            members(entries, t, prefix, out, depth + 1);
        }
    }
}

fn describe(entries: &HashMap<&str, &Value>, ty: &str) -> (String, Vec<String>) {
    let Some(e) = entries.get(ty) else {
        return (ty.to_owned(), vec![]);
    };
    match e["meta-type"].as_str().unwrap_or_default() {
        "builtin" => (ty.to_owned(), vec![]),
        "enum" => {
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            (format!("enum ({})", values.join("|")), values)
        }
        "array" => {
            let (inner, _) = describe(entries, e["element-type"].as_str().unwrap_or_default());
            (format!("[{inner}]"), vec![])
        }
        other => (other.to_owned(), vec![]),
    }
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

    fn schema() -> Value {
        json!([
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
        ])
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
    }

    #[test]
    fn hmp_help_names() {
        let help = "announce_self [interfaces] [id] -- Trigger GARP/RARP announcements\ninfo [subcommand] -- show various information\nq|quit  -- quit the emulator";
        assert_eq!(hmp_names(help), ["announce_self", "info", "q", "quit"]);
    }
}
