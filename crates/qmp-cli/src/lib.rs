//! `qmp`: one-shot QMP from the shell, and the classic QOM tools.
//!
//! Everything runs through [`main_with`]; the binaries (`qmp`, `qom-list`,
//! `qom-get`, `qom-set`, `qom-tree`) differ only in the words they put in
//! front of the user's arguments.
//!
//! Exit status: 0 on success, 1 when QEMU answered with an error (printed
//! as `error: <class>: <desc>`), 2 when the connection or the protocol
//! failed or the command line was wrong (one line on stderr).

// Its doc comments are the tools' --help texts, where `[x]` means
// optional, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
pub mod cli;
mod commands;
mod output;

/// The README's library examples (the `rust` blocks of the repository's
/// README.md), compiled and run as this crate's doc tests, so the README
/// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use output::Style;
use qmp_client::{Client, ClientBuilder};
use std::process::ExitCode;
use std::time::Duration;

/// What a subcommand needs to connect and print.
pub struct Context {
    address: Option<String>,
    pub style: Style,
    /// Whether `--pretty` was given (the shell pretty-prints only then).
    pub pretty_given: bool,
    /// Whether `--pretty` or `--compact` was given: the tools whose output
    /// is for people print JSON then.
    pub json_given: bool,
    pub timeout: f64,
    /// Whether `--timeout` was given (events wait forever otherwise).
    pub timeout_given: bool,
}

impl Context {
    /// The address from -s or $QMP_SOCKET, if any.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// `--timeout` as a duration; past a year it is a year (a timeout
    /// that large means "wait", and a Duration cannot hold every f64).
    pub fn limit(&self) -> Duration {
        const A_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        Duration::try_from_secs_f64(self.timeout).map_or(A_YEAR, |d| d.min(A_YEAR))
    }

    pub async fn connect(&self) -> Result<Client, Failure> {
        self.connect_with(ClientBuilder::new()).await
    }

    /// Connects to a guest agent (see [`ClientBuilder::guest_agent`]).
    pub async fn connect_agent(&self) -> Result<Client, Failure> {
        self.connect_with(ClientBuilder::new().guest_agent()).await
    }

    async fn connect_with(&self, builder: ClientBuilder) -> Result<Client, Failure> {
        let address = self.address.as_deref().ok_or_else(|| {
            Failure::Usage("no QMP address: pass -s ADDR or set QMP_SOCKET".into())
        })?;
        let limit = self.limit();
        let builder = builder.timeout(Some(limit)).connect_timeout(limit);
        connect_with(builder, address).await
    }
}

/// Connects `builder` to `address`; an `fd:N` address is a descriptor this
/// process inherited (the tools are programs: they know their fds).
pub async fn connect_with(builder: ClientBuilder, address: &str) -> Result<Client, Failure> {
    // A person at a shell wants to hear at once that another client has
    // the monitor, not after the whole timeout.
    let builder = builder.fail_if_busy(true);
    let address: qmp_client::Address = address
        .parse()
        .map_err(|e: qmp_proto::AddressError| Failure::Usage(e.to_string()))?;
    match with_tls_options(address)? {
        qmp_client::Address::Fd(fd) => Ok(builder.from_fd(inherited(fd)?).await?),
        address => Ok(builder.connect_to(&address).await?),
    }
}

/// The command line's `--tls-*` options, set once in `main_with`.
static TLS_OPTIONS: std::sync::OnceLock<qmp_proto::TlsOptions> = std::sync::OnceLock::new();

/// `address` with the `--tls-*` options applied: over a `tls:` address's
/// own, and making a `host:port` address TLS. A unix socket takes none.
fn with_tls_options(address: qmp_client::Address) -> Result<qmp_client::Address, Failure> {
    use qmp_client::Address;
    let Some(tls) = TLS_OPTIONS.get().filter(|t| !t.is_empty()) else {
        return Ok(address);
    };
    match address {
        Address::Tls {
            host,
            port,
            mut options,
        } => {
            options.merge(tls);
            Ok(Address::Tls {
                host,
                port,
                options,
            })
        }
        Address::Tcp(host, port) => Ok(Address::Tls {
            host,
            port,
            options: tls.clone(),
        }),
        other => Err(Failure::Usage(format!(
            "--tls-* options are for host:port and tls: addresses, not {other}"
        ))),
    }
}

/// Takes ownership of inherited descriptor `fd`, once per process.
fn inherited(fd: i32) -> Result<std::os::fd::OwnedFd, Failure> {
    use std::os::fd::FromRawFd;
    static TAKEN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains(&fd) || fd < 3 {
        return Err(Failure::Usage(format!(
            "fd:{fd} is not a descriptor this command can use (0-2 are the terminal's; each is used once)"
        )));
    }
    if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(Failure::Usage(format!("fd:{fd}: no such open descriptor")));
    }
    taken.push(fd);
    // SAFETY: `fd:N` on the command line names a descriptor this process
    // inherited from whoever started it, open (checked above) and used
    // nowhere else in the program; it is taken once (checked above).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Why the command failed, which decides the exit status.
pub enum Failure {
    /// Already reported; exit with this status.
    Quiet(u8),
    Qmp(qmp_client::QmpError),
    Connection(String),
    Usage(String),
}

impl From<qmp_client::Error> for Failure {
    fn from(e: qmp_client::Error) -> Self {
        match e {
            qmp_client::Error::Qmp(q) => Failure::Qmp(q),
            other => Failure::Connection(other.to_string()),
        }
    }
}

/// Lets a server take as many clients as the system allows: the soft
/// limit on open descriptors (often 1024) up to the hard one. The
/// servers use `epoll`, so no `select` limit applies.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// `text` in bold red on a terminal's stderr, unless `NO_COLOR` is set.
fn red(text: &str) -> String {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) && output::colour_allowed() {
        format!("\x1b[1;31m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Runs the command line `argv` (program name first).
pub fn main_with(argv: Vec<std::ffi::OsString>) -> ExitCode {
    // A closed pipe (`qom-tree | head`) ends the tool quietly, as with any
    // Unix tool, instead of failing a write; Rust ignores SIGPIPE otherwise.
    // SAFETY: setting a signal's disposition to its default, before any
    // thread exists.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    let argv = cli::rewrite_shortcut(argv);
    let command = Cli::command();
    let matches = command.get_matches_from(argv);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // Long-running servers must survive a client that hangs up while they
    // write to it, and the proxy logs who comes and goes by default.
    let serving = matches!(
        cli.command,
        Command::Demo(_)
            | Command::Mock(_)
            | Command::Proxy(_)
            | Command::Record(_)
            | Command::Replay(_)
    );
    if serving {
        raise_descriptor_limit();
        // SAFETY: as above.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigIgn,
            )
        };
    }
    let log_filter = match std::env::var("QMP_LOG") {
        Ok(filter) => Some(filter),
        Err(_) if matches!(cli.command, Command::Proxy(_) | Command::Record(_)) => {
            Some("info".to_owned())
        }
        Err(_) => None,
    };
    if let Some(filter) = log_filter {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let timeout_given = cli.global.timeout.is_some();
    let timeout = cli.global.timeout.unwrap_or(30.0);
    if !(timeout > 0.0 && timeout.is_finite()) {
        eprintln!("{}: --timeout must be a positive number of seconds", tool());
        return ExitCode::from(2);
    }
    let _ = TLS_OPTIONS.set(cli.global.tls());
    let ctx = Context {
        address: cli.global.socket.clone(),
        style: Style::choose(cli.global.pretty, cli.global.compact),
        pretty_given: cli.global.pretty,
        json_given: cli.global.pretty || cli.global.compact,
        timeout,
        timeout_given,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start: {e}", tool());
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Exec(a) => commands::exec::run(&ctx, a).await,
            Command::Events(a) => commands::events::run(&ctx, a).await,
            Command::Schema => commands::schema::run(&ctx).await,
            Command::Dump => commands::schema::dump(&ctx).await,
            Command::Demo(a) => commands::demo::run(a).await,
            Command::Mock(a) => commands::mock::run(a).await,
            Command::Proxy(a) => commands::proxy::run(a).await,
            Command::Record(a) => commands::proxy::record(a).await,
            Command::Replay(a) => commands::replay::run(a).await,
            Command::Transcript(t) => commands::transcript::run(t),
            Command::Qom(q) => commands::qom::run(&ctx, q).await,
            Command::Info(a) => commands::info::run(&ctx, a).await,
            Command::Job(cli::JobCommand::Wait { id }) => commands::job::wait(&ctx, id).await,
            Command::Completions { shell, tool, .. } => completions(*shell, tool),
            Command::Man { tool, .. } => man_page(tool),
            Command::Shell(a) => commands::shell::run(&ctx, a).await,
            Command::Ga(c) => commands::ga::run(&ctx, c).await,
            Command::Codegen(a) => commands::codegen::run(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Qmp(e)) => {
            eprintln!("{}: {}: {}", red("error"), e.class, e.desc);
            ExitCode::from(1)
        }
        Err(Failure::Connection(msg)) => {
            eprintln!("{}: {msg}", red(tool()));
            ExitCode::from(2)
        }
        Err(Failure::Quiet(code)) => ExitCode::from(code),
        Err(Failure::Usage(msg)) => {
            eprintln!("{}: {msg}", red(tool()));
            ExitCode::from(2)
        }
    }
}

/// The name errors go by: the tool's own name for the classic tools
/// (`qom-list: ...`), else `qmp`.
static TOOL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

fn tool() -> &'static str {
    TOOL.get().copied().unwrap_or("qmp")
}

/// The classic tools: each name, and the words of `qmp` it stands for.
const CLASSIC: &[(&str, &[&str])] = &[
    ("qmp-shell", &["shell"]),
    ("qom-list", &["qom", "list"]),
    ("qom-get", &["qom", "get"]),
    ("qom-set", &["qom", "set"]),
    ("qom-tree", &["qom", "tree"]),
    ("qom-fuse", &["qom", "fuse"]),
    ("vm-info", &["info"]),
];

/// The `qmp` binary, which is every tool: called by a classic tool's name
/// (a link such as `qom-list -> qmp`) it is that tool, else `qmp`.
pub fn main_multicall() -> ExitCode {
    let called = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match CLASSIC
        .iter()
        .find(|(name, _)| called.as_deref() == Some(*name))
    {
        Some((name, words)) => main_classic(name, words),
        None => main_with(std::env::args_os().collect()),
    }
}

/// Runs a classic tool, `tool` (such as `qom-list`), as `qmp WORDS...`
/// (such as `qom list`) followed by what the user typed. Its help, usage,
/// version and errors carry its own name.
pub fn main_classic(tool: &'static str, words: &[&str]) -> ExitCode {
    let _ = TOOL.set(tool);
    // The tool's own command line first: `qom-list --help` is about
    // qom-list, not `qmp qom list`. What passes it passes `qmp` too.
    if let Err(e) = tool_command(tool, words).try_get_matches_from(std::env::args_os()) {
        e.exit();
    }
    main_with(classic(words))
}

/// The command line of classic tool `tool`, which is `qmp WORDS...`, by
/// its own name: for its help, man page and shell completion.
fn tool_command(tool: &'static str, words: &[&str]) -> clap::Command {
    let mut sub = Cli::command();
    for word in words {
        match sub.find_subcommand(word) {
            Some(s) => sub = s.clone(),
            None => break,
        }
    }
    let mut own = sub
        .name(tool)
        .bin_name(tool)
        .version(env!("CARGO_PKG_VERSION"));
    // The global options, where the tool has none of its own by that name.
    let globals = <cli::Global as clap::Args>::augment_args(clap::Command::new("globals"));
    for arg in globals.get_arguments() {
        if own.get_arguments().all(|a| a.get_id() != arg.get_id()) {
            own = own.arg(arg.clone());
        }
    }
    own
}

/// `qmp` or a classic tool's command line, by name.
fn command_of(tool: &str) -> Result<clap::Command, Failure> {
    if tool == "qmp" {
        return Ok(Cli::command());
    }
    CLASSIC
        .iter()
        .find(|(name, _)| *name == tool)
        .map(|(name, words)| tool_command(name, words))
        .ok_or_else(|| {
            let names: Vec<&str> = CLASSIC.iter().map(|(n, _)| *n).collect();
            Failure::Usage(format!(
                "no tool named {tool}: qmp, or one of {}",
                names.join(", ")
            ))
        })
}

/// `qmp completions SHELL [TOOL]`: a completion script on stdout.
fn completions(shell: clap_complete::Shell, tool: &str) -> Result<(), Failure> {
    let mut command = command_of(tool)?;
    clap_complete::generate(shell, &mut command, tool, &mut std::io::stdout());
    Ok(())
}

/// `qmp man [TOOL]`: a man page (roff) on stdout.
fn man_page(tool: &str) -> Result<(), Failure> {
    let command = command_of(tool)?;
    clap_mangen::Man::new(command)
        .render(&mut std::io::stdout())
        .map_err(|e| Failure::Connection(e.to_string()))
}

/// The arguments of a classic tool such as `qom-list`: `qmp qom list`
/// followed by what the user typed.
pub fn classic(words: &[&str]) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = vec!["qmp".into()];
    argv.extend(words.iter().map(Into::into));
    argv.extend(std::env::args_os().skip(1));
    argv
}
