//! `qmp`: one-shot QMP from the shell.
//!
//! Exit status: 0 on success, 1 when QEMU answered with an error (printed
//! as `error: <class>: <desc>`), 2 when the connection or the protocol
//! failed or the command line was wrong (one line on stderr).

mod cli;
mod commands;
mod output;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use output::Style;
use qmp_client::{Client, ClientBuilder};
use std::process::ExitCode;
use std::time::Duration;

/// What a subcommand needs to connect and print.
pub struct Session {
    address: Option<String>,
    pub style: Style,
    pub timeout: f64,
    /// Whether `--timeout` was given (events wait forever otherwise).
    pub timeout_given: bool,
}

impl Session {
    pub async fn connect(&self) -> Result<Client, Failure> {
        let address = self.address.as_deref().ok_or_else(|| {
            Failure::Usage("no QMP address: pass -s ADDR or set QMP_SOCKET".into())
        })?;
        let limit = Duration::from_secs_f64(self.timeout);
        Ok(ClientBuilder::new()
            .timeout(Some(limit))
            .connect_timeout(limit)
            .connect(address)
            .await?)
    }
}

/// Why the command failed, which decides the exit status.
pub enum Failure {
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

fn main() -> ExitCode {
    if std::env::var_os("QMP_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("QMP_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let argv = cli::rewrite_shortcut(std::env::args_os().collect());
    let matches = Cli::command().get_matches_from(argv);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let timeout_given =
        matches.value_source("timeout") == Some(clap::parser::ValueSource::CommandLine);
    if !(cli.global.timeout > 0.0 && cli.global.timeout.is_finite()) {
        eprintln!("qmp: --timeout must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let session = Session {
        address: cli.global.socket.clone(),
        style: Style::choose(cli.global.pretty, cli.global.compact),
        timeout: cli.global.timeout,
        timeout_given,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qmp: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Exec(a) => commands::exec::run(&session, a).await,
            Command::Events(a) => commands::events::run(&session, a).await,
            Command::Schema => commands::schema::run(&session).await,
            Command::Demo(a) => commands::demo::run(a).await,
            Command::Mock(a) => commands::mock::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Qmp(e)) => {
            eprintln!("error: {}: {}", e.class, e.desc);
            ExitCode::from(1)
        }
        Err(Failure::Connection(msg)) => {
            eprintln!("qmp: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("qmp: {msg}");
            ExitCode::from(2)
        }
    }
}
