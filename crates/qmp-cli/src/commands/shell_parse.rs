//! What a line typed into `qmp-shell` means, without I/O.
//!
//! * `cmd key=value ...`: the `qmp` command's argument syntax, after shell
//!   quoting (`desc="two words"`, `name='"123"'`);
//! * a line starting with `{`: a raw JSON request;
//! * `transaction( action k=v ... )`: a transaction on one line (actions
//!   may be separated by `;`), or over several lines, one action per line,
//!   ending with a line that is, or ends with, `)`.

use qmp_proto::args;
use serde_json::{json, Map, Value};

/// A request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: String,
    pub arguments: Value,
    pub id: Option<Value>,
    pub oob: bool,
}

/// Splits a line into words as a shell would: whitespace separates,
/// quotes group and are removed, a backslash escapes the next character.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => match chars.next() {
                Some(n) => word.push(n),
                None => return Err("a backslash ends the line".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// `cmd key=value ...` as a command name and its arguments.
pub fn command(line: &str) -> Result<(String, Map<String, Value>), String> {
    let words = words(line)?;
    let (name, rest) = words.split_first().ok_or("an empty command")?;
    let arguments = args::parse_assignments(rest).map_err(|e| e.to_string())?;
    Ok((name.clone(), arguments))
}

/// A raw JSON request (`{"execute": ...}`).
pub fn raw(line: &str) -> Result<Request, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err("a request is a JSON object".into());
    };
    let (command, oob) = match (m.remove("execute"), m.remove("exec-oob")) {
        (Some(Value::String(c)), None) => (c, false),
        (None, Some(Value::String(c))) => (c, true),
        _ => {
            return Err("a request needs \"execute\" (or \"exec-oob\") with a command name".into())
        }
    };
    let arguments = m.remove("arguments").unwrap_or(Value::Null);
    let id = m.remove("id");
    if let Some(extra) = m.keys().next() {
        return Err(format!("unexpected member \"{extra}\""));
    }
    Ok(Request {
        command,
        arguments,
        id,
        oob,
    })
}

/// Gathers a transaction's actions, line by line.
#[derive(Debug, Default)]
pub struct Transaction {
    actions: Vec<Value>,
}

impl Transaction {
    /// Adds the actions on one line (without the `transaction(` opener);
    /// returns true when the line closed the transaction with `)`.
    pub fn add_line(&mut self, line: &str) -> Result<bool, String> {
        let trimmed = line.trim();
        let (body, closes) = match trimmed.strip_suffix(')') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        for part in body.split(';') {
            if part.trim().is_empty() {
                continue;
            }
            let (kind, data) = command(part)?;
            self.actions.push(json!({"type": kind, "data": data}));
        }
        Ok(closes)
    }

    pub fn into_request(self) -> Request {
        Request {
            command: "transaction".into(),
            arguments: json!({"actions": self.actions}),
            id: None,
            oob: false,
        }
    }
}

/// If `line` opens a transaction, what follows `transaction(`.
pub fn transaction_start(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("transaction(")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(words("a b  c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            words("desc=\"two words\" x='\"123\"'").unwrap(),
            ["desc=two words", "x=\"123\""]
        );
        assert_eq!(words("a\\ b 'it'\"'\"'s'").unwrap(), ["a b", "it's"]);
        assert!(words("x=\"open").is_err());
    }

    #[test]
    fn commands_use_the_qmp_argument_syntax() {
        let (name, args) = command("blockdev-add driver=null-co node-name=\"my node\" size=1048576 cache.direct=false read-only=null ratio=0.5").unwrap();
        assert_eq!(name, "blockdev-add");
        assert_eq!(
            Value::Object(args),
            json!({"driver": "null-co", "node-name": "my node", "size": 1048576, "cache": {"direct": false}, "read-only": null, "ratio": 0.5})
        );
        // a.b=1 c=2 keeps c at the top (qmp-shell's old bug)
        let (_, args) = command("x a.b=1 c=2").unwrap();
        assert_eq!(Value::Object(args), json!({"a": {"b": 1}, "c": 2}));
    }

    #[test]
    fn raw_json_requests() {
        let r = raw(r#"{"execute": "qom-list", "arguments": {"path": "/"}, "id": "x"}"#).unwrap();
        assert_eq!(r.command, "qom-list");
        assert_eq!(r.id, Some(json!("x")));
        assert!(raw(r#"{"exec-oob": "query-yank"}"#).unwrap().oob);
        assert!(raw("{").is_err());
        assert!(raw(r#"{"arguments": {}}"#).is_err());
    }

    #[test]
    fn transactions_on_one_line_and_over_several() {
        let mut t = Transaction::default();
        let rest = transaction_start("transaction( block-dirty-bitmap-add node=d0 name=b1 ; block-dirty-bitmap-clear node=d0 name=b0 )").unwrap();
        assert!(t.add_line(rest).unwrap());
        assert_eq!(
            t.into_request().arguments,
            json!({"actions": [
                {"type": "block-dirty-bitmap-add", "data": {"node": "d0", "name": "b1"}},
                {"type": "block-dirty-bitmap-clear", "data": {"node": "d0", "name": "b0"}}
            ]})
        );
        let mut t = Transaction::default();
        assert!(!t
            .add_line(transaction_start("transaction(").unwrap())
            .unwrap());
        assert!(!t.add_line("abort").unwrap());
        assert!(!t
            .add_line("block-dirty-bitmap-add node=d0 name=b1")
            .unwrap());
        assert!(t.add_line(")").unwrap());
        let args = t.into_request().arguments;
        assert_eq!(args["actions"].as_array().unwrap().len(), 2);
        assert_eq!(args["actions"][0], json!({"type": "abort", "data": {}}));
    }
}
