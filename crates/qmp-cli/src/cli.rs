//! Command-line syntax of `qmp`.
//!
//! `qmp [-s ADDR] CMD [key=value ...]` is shorthand for
//! `qmp [-s ADDR] exec CMD [key=value ...]`: when the first word that is
//! not an option is no subcommand of ours, `exec` is put in front of it.
//! Options may come before or after the command and its arguments.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;

#[derive(Debug, Parser)]
#[command(
    name = "qmp",
    version,
    propagate_version = true,
    about = "Talk to a QEMU monitor (QMP) from the shell",
    after_help = "\
Examples:
  qmp -s /run/vm/qmp.sock query-status
  qmp blockdev-add driver=null-co node-name=n0 size=1048576
  qmp blockdev-create job-id=j1 options.driver=file options.filename=/tmp/a.img options.size=0 --wait
  qmp events --name JOB_STATUS_CHANGE --data id=j1 --count 1 --timeout 60
  qmp shell                    (or qmp-shell; `qmp shell --demo` needs no QEMU)

Exit status: 0 success; 1 QEMU answered with an error; 2 the connection,
the protocol or the command line failed."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Monitor address: /path, unix:/path, host:port, tcp:host:port, [v6]:port, fd:N,
    /// tls:host:port[,ca=FILE,cert=FILE,key=FILE,server-name=NAME]
    #[arg(
        short = 's',
        long = "socket",
        env = "QMP_SOCKET",
        global = true,
        value_name = "ADDR"
    )]
    pub socket: Option<String>,
    /// Pretty-print JSON output (default when stdout is a terminal)
    #[arg(long, global = true, conflicts_with = "compact")]
    pub pretty: bool,
    /// Print JSON output on one line (default when stdout is not a terminal)
    #[arg(long, global = true)]
    pub compact: bool,
    /// Give up on connecting or on a reply after SECS seconds [default: 30];
    /// `events` waits for events without end unless this is given
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// TLS: the CA that signed QEMU's certificate (PEM); makes a host:port
    /// address TLS
    #[arg(long, global = true, value_name = "FILE", help_heading = "TLS")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// TLS: this client's certificate (PEM), which QEMU's verify-peer=on asks for
    #[arg(long, global = true, value_name = "FILE", help_heading = "TLS")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: the private key of --tls-cert (PEM)
    #[arg(long, global = true, value_name = "FILE", help_heading = "TLS")]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS: the name QEMU's certificate must carry, when not the host's
    #[arg(long, global = true, value_name = "NAME", help_heading = "TLS")]
    pub tls_server_name: Option<String>,
}

impl Global {
    /// The `--tls-*` options.
    pub fn tls(&self) -> qmp_proto::TlsOptions {
        let mut tls = qmp_proto::TlsOptions::default();
        tls.ca = self.tls_ca.clone();
        tls.cert = self.tls_cert.clone();
        tls.key = self.tls_key.clone();
        tls.server_name = self.tls_server_name.clone();
        tls
    }
}

/// The global options, for the subcommands that have no use for them:
/// still taken (a script may pass `-s` everywhere), but left out of their
/// help, where they would mean nothing.
#[derive(Debug, Default, Args)]
pub struct NoMonitor {
    #[arg(short = 's', long = "socket", value_name = "ADDR", hide = true)]
    socket: Option<String>,
    #[arg(long, hide = true)]
    pretty: bool,
    #[arg(long, hide = true)]
    compact: bool,
    #[arg(long, value_name = "SECS", hide = true)]
    timeout: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command and print its return value
    Exec(ExecArgs),
    /// Print events as JSON lines
    Events(EventsArgs),
    /// Print the server's query-qmp-schema reply
    Schema,
    /// Print what `qmp mock` needs to pass for this QEMU: version, commands
    /// in QEMU's order, schema
    Dump,
    /// Serve a demo machine (run state, events, a small QOM tree)
    Demo(DemoArgs),
    /// Serve a mock QEMU with the command set of a schema dump
    Mock(MockArgs),
    /// Share one QEMU monitor between many clients, with policy and audit
    Proxy(ProxyArgs),
    /// A transparent tap: a proxy that writes a transcript of the traffic
    Record(RecordArgs),
    /// Play a transcript back as the QEMU that was recorded
    Replay(ReplayArgs),
    /// Read transcripts: show, normalize, check against a schema
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// The QOM tools: list, get, set, tree, fuse
    #[command(subcommand)]
    Qom(QomCommand),
    /// A VM's name, uuid, version, status, KVM, CPUs, memory and block devices
    Info(InfoArgs),
    /// Block jobs: wait for one to end
    #[command(subcommand)]
    Job(JobCommand),
    /// Print a shell completion script for qmp or a classic tool
    #[command(after_help = "Examples:\n  \
        qmp completions bash > ~/.local/share/bash-completion/completions/qmp\n  \
        qmp completions zsh qom-list > ~/.zfunc/_qom-list\n  \
        qmp completions fish qmp-shell > ~/.config/fish/completions/qmp-shell.fish")]
    Completions {
        #[command(flatten)]
        unused: NoMonitor,
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
        /// qmp, or a classic tool (qmp-shell, qom-list, ..., vm-info)
        #[arg(default_value = "qmp")]
        tool: String,
    },
    /// Print the man page of qmp or a classic tool
    #[command(after_help = "Example:\n  qmp man qom-tree > ~/.local/share/man/man1/qom-tree.1")]
    Man {
        #[command(flatten)]
        unused: NoMonitor,
        /// qmp, or a classic tool (qmp-shell, qom-list, ..., vm-info)
        #[arg(default_value = "qmp")]
        tool: String,
    },
    /// An interactive QMP shell
    Shell(ShellArgs),
    /// Generate typed commands and events (Rust) from query-qmp-schema dumps
    #[command(after_help = "\
Example:
  qmp -s /run/vm/qmp.sock schema > my-qemu.json
  qmp codegen --schema my-qemu.json -o src/qmp_types.rs

The file needs the crates qmp-proto and serde_json; `mod qmp_types;` then
gives the types, which `qmp_client::Client::run` and `events_of` take.
A dump's file name (without .json) is the label its docs name it by.")]
    Codegen(CodegenArgs),
    /// The guest agent (qemu-ga): -s is QEMU's end of the guest's
    /// agent channel, or the agent's own socket
    #[command(subcommand)]
    Ga(GaCommand),
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  qmp ga -s /run/vm1/ga.sock ping
  qmp ga -s /run/vm1/ga.sock exec -- uname -a
  qmp ga -s /run/vm1/ga.sock file get /var/log/syslog ./syslog
  qmp ga -s /run/vm1/ga.sock guest-get-osinfo
  qmp-shell --ga /run/vm1/ga.sock")]
pub enum GaCommand {
    /// Check that the agent answers
    Ping,
    /// The agent's version and which commands it has enabled
    Info,
    /// Run a program in the guest; print its output; exit with its status
    #[command(
        after_help = "With --timeout, give up after SECS seconds (exit 124);         without, wait for the program however long it runs."
    )]
    Exec(GaExecArgs),
    /// Copy files between the guest and here
    #[command(subcommand)]
    File(GaFileCommand),
    /// Freeze or thaw the guest's file systems, or ask which they are
    Fsfreeze {
        /// freeze, thaw or status
        action: FreezeAction,
    },
    /// The guest's network interfaces and addresses
    Network,
    /// Any agent command: `guest-get-osinfo`, `guest-get-fsinfo`, ...
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Args)]
pub struct CodegenArgs {
    #[command(flatten)]
    pub unused: NoMonitor,
    /// A query-qmp-schema dump (`qmp schema`); repeat for several QEMUs
    #[arg(long = "schema", value_name = "DUMP", required = true)]
    pub schemas: Vec<std::path::PathBuf>,
    /// Where to write the Rust source
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct GaExecArgs {
    /// Environment variables for the program (repeatable)
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Send this text to the program's standard input
    #[arg(long, value_name = "TEXT")]
    pub input: Option<String>,
    /// The program and its arguments (after --)
    #[arg(required = true, last = true, value_name = "PROGRAM ARGS")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum GaFileCommand {
    /// Copy a guest file here
    Get {
        /// The file in the guest
        guest: String,
        /// Where to write it here (- for standard output)
        local: String,
    },
    /// Copy a file here into the guest
    Put {
        /// The file here (- for standard input)
        local: String,
        /// Where to write it in the guest
        guest: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FreezeAction {
    Freeze,
    Thaw,
    Status,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  qmp-shell /run/vm/qmp.sock
  qmp-shell --demo
  qmp-shell --launch -- qemu-system-x86_64 -M pc -S -nodefaults
  echo 'query-status' | qmp-shell -s /run/vm/qmp.sock

At the prompt: `command key=value ...`, a raw JSON request, `help`, `help
CMD`, `transaction( action k=v ; ... )`; Tab completes, Ctrl-D leaves.")]
pub struct ShellArgs {
    /// Monitor address (or -s ADDR, or $QMP_SOCKET)
    #[arg(value_name = "ADDR")]
    pub address: Option<String>,
    /// Pretty-print replies and events (also --pretty)
    // Its own id: with the global --pretty's id, it would hide that option.
    #[arg(short = 'p', id = "shell-pretty")]
    pub pretty: bool,
    /// Show each request before it is sent
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// HMP mode: lines go through human-monitor-command
    #[arg(short = 'H', long = "hmp")]
    pub hmp: bool,
    /// Do not negotiate capabilities (for the guest agent, or to try it by hand)
    #[arg(short = 'N', long = "skip-negotiation")]
    pub no_negotiate: bool,
    /// ADDR is a guest agent (qemu-ga), not a QEMU monitor
    #[arg(long, conflicts_with_all = ["hmp", "no_negotiate", "demo", "launch"])]
    pub ga: bool,
    /// Append each request and its reply to LOGFILE as JSON lines
    #[arg(short = 'l', long = "logfile", value_name = "LOGFILE")]
    pub log: Option<String>,
    /// A shell on the built-in demo machine
    #[arg(long, conflicts_with_all = ["address", "launch"])]
    pub demo: bool,
    /// When QEMU goes away, wait for it to come back at the same address
    /// and carry on (on a terminal)
    #[arg(long, conflicts_with_all = ["demo", "launch"])]
    pub reconnect: bool,
    /// (The shell prints compact JSON unless -p: --compact means nothing.)
    #[arg(long, hide = true)]
    pub compact: bool,
    /// Start QEMU with these arguments and a private QMP socket: --launch -- qemu-system-x86_64 ...
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "QEMU ARGS")]
    pub launch: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  vm-info -s /run/vm/qmp.sock\n  vm-info --json | jq .block")]
pub struct InfoArgs {
    /// Print JSON instead of aligned text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QomCommand {
    /// List an object's properties: `name/` for children, `@name/` for links
    List {
        /// The object's path
        #[arg(default_value = "/")]
        path: String,
        /// Print the listing as JSON (qom-list's reply)
        #[arg(long)]
        json: bool,
    },
    /// Print a property's value (PATH.PROPERTY, split at the last dot)
    Get {
        /// The object's path and the property, such as /machine.type
        #[arg(value_name = "PATH.PROPERTY")]
        target: String,
        /// Print the value as JSON (strings quoted)
        #[arg(long)]
        json: bool,
    },
    /// Set a property (VALUE is JSON when it parses, else a string)
    #[command(
        after_help = "Examples:\n  qom-set /machine.dump-guest-core false\n  qom-set /objects/mem0.prealloc true"
    )]
    Set {
        /// The object's path and the property, such as /machine.dump-guest-core
        #[arg(value_name = "PATH.PROPERTY")]
        target: String,
        /// The new value: JSON when it parses (true, 42, "x"), else a string
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print objects and their property values, recursively
    #[command(
        after_help = "Examples:\n  qom-tree /machine\n  qom-tree --json /machine/peripheral | jq ."
    )]
    Tree {
        /// Where to start
        #[arg(default_value = "/")]
        path: String,
        /// Print the tree as nested JSON: {"path", "properties", "children"}
        #[arg(long)]
        json: bool,
    },
    /// Mount the object tree as a filesystem (foreground; Ctrl-C unmounts)
    Fuse {
        /// Turn writes into qom-set (read-only otherwise)
        #[arg(long)]
        rw: bool,
        /// When QEMU goes away, stay mounted (reads fail with EIO) and
        /// carry on once it is back at the same address
        #[arg(long)]
        reconnect: bool,
        /// An empty directory to mount the tree on
        mountpoint: String,
    },
}

#[derive(Debug, Args)]
// Its --version is the QEMU version to claim, not this program's.
#[command(disable_version_flag = true)]
pub struct MockArgs {
    #[command(flatten)]
    pub unused: NoMonitor,
    /// The QEMU to mock: `qmp dump` of it (version, command order and
    /// schema), or just its schema as `qmp schema` prints it
    #[arg(long, value_name = "FILE")]
    pub schema: String,
    /// Where to listen: /path, unix:/path or host:port
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The QEMU version to claim (in the greeting and query-version); it
    /// also picks how malformed input is answered [default: the dump's,
    /// else 10.0.0]
    #[arg(long = "version", alias = "qemu-version", value_name = "X.Y.Z")]
    pub qemu_version: Option<String>,
    /// The version's package text [default: the dump's, else empty]
    #[arg(long, value_name = "TEXT")]
    pub package: Option<String>,
    /// Rules for replies (see the README); default: `{}` for everything
    #[arg(long, value_name = "FILE")]
    pub replies: Option<String>,
}

/// A size in bytes: `4096`, `64K`, `16M`, `1G` (powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        other => return Err(format!("unknown unit '{other}' (use K, M or G)")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a size such as 4096, 64K or 16M"))
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub unused: NoMonitor,
    /// QEMU's monitor: /path, unix:/path, host:port, tcp:host:port
    #[arg(long, value_name = "ADDR")]
    pub upstream: String,
    /// Where clients connect, with an optional policy and socket mode
    /// (repeatable): ADDR[,policy=NAME][,mode=0660]
    #[arg(long = "listen", value_name = "ADDR[,policy=NAME]", required = true)]
    pub listen: Vec<String>,
    /// The policy file (TOML; see the README); `read-only` is built in
    #[arg(long, value_name = "FILE")]
    pub policy: Option<String>,
    /// Append one JSON line per command to this file (created mode 0600)
    #[arg(long, value_name = "FILE")]
    pub audit: Option<String>,
    /// Fail closed: log each command before it is sent, and refuse those
    /// that cannot be logged
    #[arg(long, requires = "audit")]
    pub audit_strict: bool,
    /// When QEMU goes away, wait for it to come back instead of exiting
    #[arg(long)]
    pub reconnect: bool,
    /// Messages a client may leave unread before it is disconnected
    #[arg(long, value_name = "N", default_value_t = qmp_proxy::proxy::DEFAULT_CLIENT_BUFFER)]
    pub client_buffer: usize,
    /// Bytes a client's input may hold (the request being read and those
    /// queued) before it is disconnected; suffixes K, M, G
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub client_input_budget: usize,
    /// Also write a transcript of the traffic to this file
    #[arg(long, value_name = "FILE")]
    pub record: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub unused: NoMonitor,
    /// QEMU's monitor
    #[arg(long, value_name = "ADDR")]
    pub upstream: String,
    /// Where clients connect
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The transcript to write
    #[arg(long, value_name = "FILE")]
    pub out: String,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub unused: NoMonitor,
    /// The transcript (from `qmp record` or `qmp proxy --record`)
    pub file: String,
    /// Where clients connect
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// strict: requests in recorded order; by-command: any order
    #[arg(long = "match", value_name = "MODE", default_value = "strict")]
    pub match_mode: String,
    /// Keep the recorded gaps before events and replies
    #[arg(long)]
    pub realtime: bool,
    /// Check arguments against this schema (`qmp schema` of a real QEMU)
    #[arg(long, value_name = "FILE")]
    pub schema: Option<String>,
    /// Exchanges left unused do not make the exit status non-zero
    #[arg(long)]
    pub allow_unused: bool,
}

#[derive(Debug, Subcommand)]
pub enum TranscriptCommand {
    /// A readable view: one line per message, with time, client and direction
    Show {
        #[command(flatten)]
        unused: NoMonitor,
        /// The transcript
        file: String,
        /// Print JSON values in full (cut at 200 characters otherwise)
        #[arg(long)]
        full: bool,
    },
    /// Renumber clients and ids, drop timing, sort keys: diffs well in review
    Normalize {
        #[command(flatten)]
        unused: NoMonitor,
        /// The transcript
        file: String,
        /// Write here instead of standard output (may be FILE itself)
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<String>,
    },
    /// Check every recorded request against a QEMU's schema (`qmp schema`)
    Check {
        #[command(flatten)]
        unused: NoMonitor,
        /// The transcript
        file: String,
        /// The schema to check against (`qmp schema` of a real QEMU)
        #[arg(long, value_name = "SCHEMA")]
        schema: String,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub unused: NoMonitor,
    /// Where to listen: /path, unix:/path or host:port
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The QMP command, such as query-status or qom-list
    pub command: String,
    /// Arguments as key=value; values that parse as JSON are JSON, dotted keys nest
    #[arg(value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// Arguments as one JSON object (key=value items are added to it)
    #[arg(long = "args", value_name = "JSON")]
    pub json_args: Option<String>,
    /// For a command that starts a block job: follow the job to its end
    /// (see `qmp job wait`)
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Follow a job to its end: a progress bar on a terminal, its final
    /// state as JSON when piped; exit status 0 when it concluded without
    /// error, 1 with its error
    Wait {
        /// The job's id
        id: String,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "\
Output: on a terminal one line per event (local time, name, data); JSON lines
otherwise, or with --pretty/--compact.

Exit status: 0 once --count events were printed (or stdout was closed); 2
when the server went away or --timeout passed first (without --count the
stream is followed until one of them ends it).

Examples:
  qmp events --name STOP --name RESUME
  qmp events --name JOB_STATUS_CHANGE --data id=j1 --data status=concluded --count 1 --timeout 60")]
pub struct EventsArgs {
    /// Only events with this name (repeatable)
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Only events whose data has this value at KEY (dots for nested
    /// keys; VALUE is JSON when it parses, else a string); repeatable, all
    /// must hold
    #[arg(long = "data", value_name = "KEY=VALUE")]
    pub data: Vec<String>,
    /// Stop after this many events
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// Options that take a value, so that value is not mistaken for the command.
const VALUE_OPTIONS: &[&str] = &[
    "-s",
    "--socket",
    "--timeout",
    "--args",
    "--name",
    "--data",
    "--count",
    "--listen",
    "--schema",
    "--version",
    "--qemu-version",
    "--replies",
    "--upstream",
    "--policy",
    "--audit",
    "--client-buffer",
    "--client-input-budget",
    "--record",
    "--out",
    "--match",
    "-o",
    "--output",
    "-l",
    "--logfile",
];

/// Puts `exec` first when the first positional word is not one of our
/// subcommands: the options before the command then belong to `exec`
/// too (`qmp --args JSON CMD`), and the global ones are taken anywhere.
pub fn rewrite_shortcut(args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    while i < args.len() {
        let word = args[i].to_string_lossy();
        if word == "--" {
            break;
        }
        if word.starts_with('-') {
            if VALUE_OPTIONS.contains(&word.as_ref()) {
                i += 1; // skip the option's value
            }
            i += 1;
            continue;
        }
        let is_subcommand = word == "help"
            || <Cli as clap::CommandFactory>::command()
                .get_subcommands()
                .any(|c| c.get_name() == word);
        if is_subcommand {
            return args;
        }
        let mut out = args;
        out.insert(1, "exec".into());
        return out;
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn rw(args: &[&str]) -> Vec<String> {
        rewrite_shortcut(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    /// Every subcommand's options are well formed (clap checks names,
    /// conflicts and the like only as a command is built).
    #[test]
    fn the_command_lines_are_consistent() {
        Cli::command().debug_assert();
        for sub in Cli::command().get_subcommands() {
            sub.clone().debug_assert();
        }
    }

    #[test]
    fn shortcut_inserts_exec() {
        assert_eq!(
            rw(&["qmp", "query-status"]),
            ["qmp", "exec", "query-status"]
        );
        assert_eq!(
            rw(&["qmp", "-s", "/x", "--pretty", "qom-list", "path=/"]),
            ["qmp", "exec", "-s", "/x", "--pretty", "qom-list", "path=/"]
        );
        assert_eq!(
            rw(&["qmp", "--socket=/x", "stop"]),
            ["qmp", "exec", "--socket=/x", "stop"]
        );
        // an option of exec's before the command
        let cli =
            Cli::try_parse_from(rw(&["qmp", "--args", "{\"a\": 1}", "x-cmd", "b=2"])).unwrap();
        let Command::Exec(e) = cli.command else {
            panic!()
        };
        assert_eq!(
            (e.command.as_str(), e.json_args.as_deref()),
            ("x-cmd", Some("{\"a\": 1}"))
        );
        assert_eq!(
            rw(&["qmp", "events", "--count", "1"]),
            ["qmp", "events", "--count", "1"]
        );
        assert_eq!(
            rw(&["qmp", "-s", "schema", "schema"]),
            ["qmp", "-s", "schema", "schema"]
        );
        assert_eq!(rw(&["qmp", "--help"]), ["qmp", "--help"]);
    }

    #[test]
    fn options_after_the_command() {
        let cli = Cli::try_parse_from(rw(&[
            "qmp",
            "qom-list",
            "path=/",
            "-s",
            "/x",
            "--compact",
            "--timeout",
            "2",
        ]))
        .unwrap();
        assert_eq!(cli.global.socket.as_deref(), Some("/x"));
        assert!(cli.global.compact);
        assert_eq!(cli.global.timeout, Some(2.0));
        let Command::Exec(e) = cli.command else {
            panic!()
        };
        assert_eq!(e.command, "qom-list");
        assert_eq!(e.args, ["path=/"]);
    }
}
