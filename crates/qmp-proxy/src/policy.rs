//! Who may run what through the proxy: the policy file, the built-in
//! `read-only` policy, and the checks made for each client.
//!
//! The file is TOML; every section under `policy` is a policy a listener
//! can name (`--listen ADDR,policy=NAME`):
//!
//! ```toml
//! # Redacted in the audit log on every listener: command glob -> argument
//! # paths (dotted for nested members; "*" for all the arguments).
//! [redact]
//! "object-add" = ["data", "secret"]
//!
//! [policy.monitoring]
//! preset = "read-only"           # start from the built-in read-only lists
//! allow = ["query-*", "qom-get"] # command-name globs (default: all, or the preset's)
//! deny = ["query-qmp-schema"]    # wins over allow
//! events = ["JOB_*", "STOP"]     # event-name globs delivered (default: all)
//! deny-events = ["RTC_CHANGE"]
//!
//! [policy.monitoring.redact]     # more redaction, for this policy only
//! "blockdev-add" = ["file.password"]
//!
//! # A rule replaces the command lists for peers with these uids (unix
//! # listeners only; the first matching rule wins).
//! [[policy.monitoring.rule]]
//! uid = [0, 107]
//! allow = ["*"]
//!
//! [policy.operators]
//! preset = "all"
//!
//! # Which policy a client gets, by who it is: the first entry that
//! # matches wins; a client no entry matches gets its listener's policy.
//! [[client]]
//! identity = "CN=viewer-*"     # TLS: the certificate's subject (globs)
//! policy = "read-only"
//!
//! [[client]]
//! identity = ["CN=ops-*", "CN=admin,O=example"]
//! policy = "operators"
//!
//! [[client]]
//! uid = 1000                   # unix: the peer's uid (one or a list)
//! policy = "monitoring"
//! ```
//!
//! An identity is the subject of the certificate a client showed a TLS
//! listener with `client-ca=`, most specific part first:
//! `CN=alice,O=example`.
//!
//! Globs know `*` (any run of characters) and `?` (one character).
//!
//! Two commands carry other commands, and what they carry is checked too
//! ([`Access::refusal`]): each action of a `transaction` by its `type`, as
//! a command name (`block-dirty-bitmap-add`); and the command line of a
//! `human-monitor-command` as the name `hmp:LINE`, its whitespace runs made
//! one space (`hmp:info status`). So `allow = ["human-monitor-command",
//! "hmp:info *"]` lets HMP's `info` commands through and nothing else of
//! HMP, and a policy that denies `block-dirty-bitmap-*` denies them inside
//! a transaction as well.

use qmp_server::{QDict, QObject};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use qmp_replay::transcript::REDACTED;

/// Name of the built-in policy for queries and QOM reads.
pub const READ_ONLY: &str = "read-only";

/// What the built-in `read-only` policy allows: queries and QOM reads.
/// (`human-monitor-command` is not among them: HMP can do anything.)
pub const READ_ONLY_COMMANDS: &[&str] = &[
    "query-*",
    "x-query-*",
    "qom-list",
    "qom-get",
    "qom-list-get",
    "qom-list-types",
    "qom-list-properties",
    "device-list-properties",
];

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// It could not be read.
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A policy file's text is not valid (what is wrong, and where).
    #[error("{0}")]
    Syntax(String),
    #[error("policy file {path}: {message}")]
    /// It is not a valid policy file.
    Parse {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
    #[error(
        "no policy named '{0}' (the file defines none such, and the built-in one is 'read-only')"
    )]
    /// A listener names a policy the file does not define.
    Unknown(String),
    /// The file defines a policy under a built-in name.
    #[error("policy '{0}' is built in; give yours another name")]
    Reserved(String),
}

/// The policy file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    redact: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    policy: BTreeMap<String, PolicySpec>,
    #[serde(default)]
    client: Vec<ClientSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSpec {
    identity: Option<Globs>,
    uid: Option<Uids>,
    policy: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Globs {
    One(String),
    Many(Vec<String>),
}

/// Which clients a `[[client]]` entry of the policy file is for.
#[derive(Debug, Clone)]
pub struct ClientRule {
    identities: Option<Vec<String>>,
    uids: Option<Uids>,
}

impl ClientRule {
    /// Whether a client with this uid (unix listeners) and identity (TLS
    /// listeners with client certificates) is one the entry names: it
    /// must match each of the entry's conditions.
    pub fn matches(&self, uid: Option<u32>, identity: Option<&str>) -> bool {
        let uid_ok = match (&self.uids, uid) {
            (None, _) => true,
            (Some(uids), Some(uid)) => uids.contains(uid),
            (Some(_), None) => false,
        };
        let identity_ok = match (&self.identities, identity) {
            (None, _) => true,
            (Some(globs), Some(identity)) => globs.iter().any(|g| glob(g, identity)),
            (Some(_), None) => false,
        };
        uid_ok && identity_ok
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicySpec {
    preset: Option<Preset>,
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
    events: Option<Vec<String>>,
    #[serde(default)]
    deny_events: Vec<String>,
    #[serde(default)]
    redact: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Preset {
    ReadOnly,
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    uid: Uids,
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Uids {
    One(u32),
    Many(Vec<u32>),
}

impl Uids {
    fn contains(&self, uid: u32) -> bool {
        match self {
            Uids::One(u) => *u == uid,
            Uids::Many(us) => us.contains(&uid),
        }
    }
}

impl PolicyFile {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<PolicyFile, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PolicyFile::parse(&text).map_err(|e| match e {
            PolicyError::Syntax(message) => PolicyError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Reads and checks a policy file's text.
    pub fn parse(text: &str) -> Result<PolicyFile, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if file.policy.contains_key(READ_ONLY) {
            return Err(PolicyError::Reserved(READ_ONLY.into()));
        }
        for client in &file.client {
            if client.identity.is_none() && client.uid.is_none() {
                return Err(PolicyError::Syntax(format!(
                    "a [[client]] entry (policy '{}') names no one: give identity = \"GLOB\" or uid = N",
                    client.policy
                )));
            }
            file.policy(Some(&client.policy))?;
        }
        Ok(file)
    }

    /// The `[[client]]` entries, in order, each with the policy it gives.
    pub fn client_policies(&self) -> Result<Vec<(ClientRule, Arc<Policy>)>, PolicyError> {
        self.client
            .iter()
            .map(|c| {
                let rule = ClientRule {
                    identities: c.identity.clone().map(|g| match g {
                        Globs::One(g) => vec![g],
                        Globs::Many(gs) => gs,
                    }),
                    uids: c.uid.clone(),
                };
                Ok((rule, self.policy(Some(&c.policy))?))
            })
            .collect()
    }

    /// The policy a listener names, or the one that permits everything.
    pub fn policy(&self, name: Option<&str>) -> Result<Arc<Policy>, PolicyError> {
        let spec = match name {
            None => PolicySpec::default(),
            Some(READ_ONLY) => PolicySpec {
                preset: Some(Preset::ReadOnly),
                ..Default::default()
            },
            Some(other) => self
                .policy
                .get(other)
                .cloned()
                .ok_or_else(|| PolicyError::Unknown(other.into()))?,
        };
        let base_allow = match spec.preset {
            Some(Preset::ReadOnly) => READ_ONLY_COMMANDS.iter().map(|s| s.to_string()).collect(),
            Some(Preset::All) | None => vec!["*".to_owned()],
        };
        let mut redact = self.redact.clone();
        for (command, paths) in spec.redact {
            redact.entry(command).or_default().extend(paths);
        }
        Ok(Arc::new(Policy {
            name: name.map(str::to_owned),
            commands: Access::new(spec.allow.unwrap_or(base_allow), spec.deny),
            events: Access::new(
                spec.events.unwrap_or_else(|| vec!["*".into()]),
                spec.deny_events,
            ),
            rules: spec
                .rule
                .into_iter()
                .map(|r| {
                    let allow = r.allow.unwrap_or_else(|| vec!["*".into()]);
                    (r.uid, Access::new(allow, r.deny))
                })
                .collect(),
            redact,
        }))
    }
}

/// Allow and deny globs; deny wins.
#[derive(Debug, Clone)]
pub struct Access {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl Access {
    fn new(allow: Vec<String>, deny: Vec<String>) -> Access {
        Access { allow, deny }
    }

    /// Whether a name (a command's, an event's) is allowed: it matches an
    /// allow glob and no deny glob.
    pub fn permits(&self, name: &str) -> bool {
        self.allow.iter().any(|g| glob(g, name)) && !self.deny.iter().any(|g| glob(g, name))
    }

    /// What a request would run that this does not permit: `None` when
    /// all of it is permitted. Checks the command, each action of a
    /// `transaction` (by its type), and an HMP command line (as
    /// `hmp:LINE`). A carried command that cannot be read (no `actions`
    /// list, an action without a string `type`, no `command-line`) is left
    /// to QEMU, which refuses the request for its arguments.
    pub fn refusal(&self, command: &str, arguments: &QDict) -> Option<Refusal> {
        if !self.permits(command) {
            return Some(Refusal::Command(command.to_owned()));
        }
        match command {
            "transaction" => {
                let Some(QObject::List(actions)) = arguments.get("actions") else {
                    // QEMU refuses it for its arguments; nothing runs
                    return None;
                };
                actions.iter().find_map(|action| {
                    let kind = action.as_dict().and_then(|a| a.get("type"));
                    match kind.and_then(QObject::as_str) {
                        Some(kind) if self.permits(kind) => None,
                        Some(kind) => Some(Refusal::Action(kind.to_owned())),
                        None => None,
                    }
                })
            }
            "human-monitor-command" => {
                let line = arguments.get("command-line").and_then(QObject::as_str)?;
                let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
                let name = format!("hmp:{line}");
                (!self.permits(&name)).then_some(Refusal::Hmp(line))
            }
            _ => None,
        }
    }

    /// Whether this permits every name.
    pub fn is_everything(&self) -> bool {
        self.deny.is_empty() && self.allow.iter().any(|g| g == "*")
    }
}

/// What a policy refuses in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The command itself.
    Command(String),
    /// An action of a `transaction`, by its type.
    Action(String),
    /// An HMP command line of `human-monitor-command`.
    Hmp(String),
}

impl Refusal {
    /// The error text a client gets, naming the policy.
    pub fn describe(&self, policy: &str) -> String {
        match self {
            Refusal::Command(c) => {
                format!("The command {c} is not permitted by the proxy's policy '{policy}'")
            }
            Refusal::Action(a) => format!(
                "The transaction action {a} is not permitted by the proxy's policy '{policy}'"
            ),
            Refusal::Hmp(line) => format!(
                "The HMP command '{line}' is not permitted by the proxy's policy '{policy}'"
            ),
        }
    }
}

/// One listener's policy.
#[derive(Debug)]
pub struct Policy {
    /// `None` for a listener without a policy.
    pub name: Option<String>,
    commands: Access,
    events: Access,
    rules: Vec<(Uids, Access)>,
    redact: BTreeMap<String, Vec<String>>,
}

impl Policy {
    /// The command lists for a peer: those of the first rule that matches
    /// its uid, else the policy's own.
    pub fn commands_for(&self, uid: Option<u32>) -> &Access {
        uid.and_then(|uid| {
            self.rules
                .iter()
                .find(|(uids, _)| uids.contains(uid))
                .map(|(_, a)| a)
        })
        .unwrap_or(&self.commands)
    }

    /// The events this policy delivers.
    pub fn events(&self) -> &Access {
        &self.events
    }

    /// `arguments` with the values the policy redacts for `command`
    /// replaced by `"<redacted>"`.
    pub fn redact(&self, command: &str, arguments: &mut serde_json::Value) {
        for (pattern, paths) in &self.redact {
            if !glob(pattern, command) {
                continue;
            }
            for path in paths {
                if path == "*" {
                    *arguments = serde_json::Value::String(REDACTED.into());
                    return;
                }
                let pointer = format!("/{}", path.replace('.', "/"));
                if let Some(v) = arguments.pointer_mut(&pointer) {
                    *v = serde_json::Value::String(REDACTED.into());
                }
            }
        }
    }
}

/// Matches `text` against a glob of `*` and `?`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic backtracking over the last `*`: linear in practice.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_entries_choose_policies_by_identity_or_uid_in_order() {
        let file = PolicyFile::parse(
            r#"
            [policy.ops]
            preset = "all"
            [[client]]
            identity = "CN=viewer*"
            policy = "read-only"
            [[client]]
            identity = ["CN=ops-*", "CN=root,O=x"]
            policy = "ops"
            [[client]]
            uid = [1000, 1001]
            policy = "read-only"
            "#,
        )
        .unwrap();
        let rules = file.client_policies().unwrap();
        let pick = |uid, identity| {
            rules
                .iter()
                .find(|(r, _)| r.matches(uid, identity))
                .and_then(|(_, p)| p.name.clone())
        };
        assert_eq!(
            pick(None, Some("CN=viewer-1,O=x")).as_deref(),
            Some("read-only")
        );
        assert_eq!(pick(None, Some("CN=ops-2")).as_deref(), Some("ops"));
        assert_eq!(pick(None, Some("CN=root,O=x")).as_deref(), Some("ops"));
        assert_eq!(pick(None, Some("CN=root,O=y")), None);
        assert_eq!(pick(Some(1001), None).as_deref(), Some("read-only"));
        assert_eq!(pick(Some(0), None), None);
        assert_eq!(pick(None, None), None);
        assert!(PolicyFile::parse("[[client]]\npolicy = \"read-only\"").is_err());
        assert!(matches!(
            PolicyFile::parse("[[client]]\nuid = 1\npolicy = \"nope\""),
            Err(PolicyError::Unknown(_))
        ));
    }

    #[test]
    fn globs() {
        assert!(glob("query-*", "query-status"));
        assert!(glob("*", ""));
        assert!(glob("q?m-get", "qom-get"));
        assert!(glob("*-get", "qom-get"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(!glob("query-*", "x-query-foo"));
        assert!(!glob("quit", "quit2"));
    }

    #[test]
    fn read_only_allows_queries_and_qom_reads_only() {
        let ro = PolicyFile::default().policy(Some(READ_ONLY)).unwrap();
        let c = ro.commands_for(None);
        for ok in ["query-status", "qom-get", "qom-list", "x-query-roms"] {
            assert!(c.permits(ok), "{ok}");
        }
        for no in [
            "quit",
            "blockdev-add",
            "qom-set",
            "human-monitor-command",
            "stop",
        ] {
            assert!(!c.permits(no), "{no}");
        }
        let all = PolicyFile::default().policy(None).unwrap();
        assert!(all.commands_for(Some(0)).permits("quit"));
    }

    #[test]
    fn file_sections_rules_and_redaction() {
        let file = PolicyFile::parse(
            r#"
            [redact]
            "object-add" = ["data"]
            [policy.ops]
            preset = "read-only"
            allow = ["query-*", "stop", "cont"]
            deny = ["query-qmp-schema"]
            events = ["STOP", "RESUME"]
            [policy.ops.redact]
            "blockdev-*" = ["file.password"]
            [[policy.ops.rule]]
            uid = [0, 107]
            allow = ["*"]
            deny = ["quit"]
            "#,
        )
        .unwrap();
        let ops = file.policy(Some("ops")).unwrap();
        let c = ops.commands_for(Some(1000));
        assert!(c.permits("stop") && c.permits("query-status"));
        assert!(!c.permits("query-qmp-schema") && !c.permits("qom-get"));
        let root = ops.commands_for(Some(107));
        assert!(root.permits("blockdev-add") && !root.permits("quit"));
        assert!(ops.events().permits("STOP") && !ops.events().permits("JOB_STATUS_CHANGE"));
        let mut args = json!({"driver": "file", "file": {"password": "x", "filename": "f"}});
        ops.redact("blockdev-add", &mut args);
        assert_eq!(
            args,
            json!({"driver": "file", "file": {"password": "<redacted>", "filename": "f"}})
        );
        let mut args = json!({"qom-type": "secret", "id": "s", "data": "hunter2"});
        ops.redact("object-add", &mut args);
        assert_eq!(args["data"], "<redacted>");
        assert!(matches!(
            file.policy(Some("nope")),
            Err(PolicyError::Unknown(_))
        ));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let e = PolicyFile::parse("[policy.x]\nalow = []\n").unwrap_err();
        assert!(e.to_string().contains("alow"), "{e}");
        let e = PolicyFile::parse("[policy.read-only]\n").unwrap_err();
        assert!(e.to_string().contains("built in"), "{e}");
        let e = PolicyFile::parse("[policy.x]\npreset = \"rw\"\n").unwrap_err();
        assert!(e.to_string().contains("rw"), "{e}");
    }

    #[test]
    fn transaction_actions_and_hmp_lines_are_checked_as_commands() {
        let file = PolicyFile::parse(
            "[policy.p]\nallow = [\"transaction\", \"human-monitor-command\", \"hmp:info *\", \"blockdev-snapshot-sync\"]\n",
        )
        .unwrap();
        let access = file.policy(Some("p")).unwrap().commands_for(None).clone();
        let args = |json: &str| match qmp_proto::qemu_json::Streamer::new()
            .feed_collect(format!("{json}\n").as_bytes())
            .remove(0)
        {
            qmp_proto::qemu_json::Parsed::Value(QObject::Dict(d)) => d,
            other => panic!("{other:?}"),
        };
        let tx = args(
            r#"{"actions": [{"type": "blockdev-snapshot-sync", "data": {}}, {"type": "block-dirty-bitmap-add", "data": {}}]}"#,
        );
        assert_eq!(
            access.refusal("transaction", &tx),
            Some(Refusal::Action("block-dirty-bitmap-add".into()))
        );
        let ok = args(r#"{"actions": [{"type": "blockdev-snapshot-sync", "data": {}}]}"#);
        assert_eq!(access.refusal("transaction", &ok), None);
        let hmp = |line: &str| {
            let mut d = QDict::new();
            d.insert("command-line", QObject::String(line.into()));
            access.refusal("human-monitor-command", &d)
        };
        assert_eq!(hmp("info  status"), None);
        assert_eq!(hmp(" quit"), Some(Refusal::Hmp("quit".into())));
        assert_eq!(hmp("information"), Some(Refusal::Hmp("information".into())));
        assert_eq!(
            access.refusal("quit", &QDict::new()),
            Some(Refusal::Command("quit".into()))
        );
    }
}
