//! `qmp ga ...`: the guest agent from the shell.
//!
//! Every subcommand connects in guest agent mode (a sync with
//! `guest-sync-delimited` first, see `qmp_client::Client::resync`), runs
//! one or a few agent commands, and prints what a person wants to read:
//! `exec` the program's own output and exit status, `file` the bytes,
//! `network` one line per interface.

use crate::cli::{FreezeAction, GaCommand, GaExecArgs, GaFileCommand};
use crate::{Context, Failure};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use qmp_client::Client;
use qmp_types::guest_agent::*;
use qmp_types::{Command, Qmp};
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Bytes moved per `guest-file-read` / `guest-file-write` (the agent
/// allows up to 48 MiB a read; a MiB keeps each reply small).
const CHUNK: usize = 1 << 20;

pub async fn run(ctx: &Context, command: &GaCommand) -> Result<(), Failure> {
    let agent = ctx.connect_agent().await?;
    match command {
        GaCommand::Ping => {
            agent.execute("guest-ping", json!({})).await?;
            println!("the agent answers");
            Ok(())
        }
        GaCommand::Info => info(ctx, &agent).await,
        GaCommand::Exec(a) => exec(ctx, &agent, a).await,
        GaCommand::File(GaFileCommand::Get { guest, local }) => get(&agent, guest, local).await,
        GaCommand::File(GaFileCommand::Put { local, guest }) => put(&agent, local, guest).await,
        GaCommand::Fsfreeze { action } => {
            let (command, what) = match action {
                FreezeAction::Freeze => ("guest-fsfreeze-freeze", "file systems frozen"),
                FreezeAction::Thaw => ("guest-fsfreeze-thaw", "file systems thawed"),
                FreezeAction::Status => ("guest-fsfreeze-status", ""),
            };
            let ret = agent.execute(command, json!({})).await?;
            match (action, &ret) {
                (FreezeAction::Status, Value::String(state)) => println!("{state}"),
                (_, Value::Number(n)) => println!("{n} {what}"),
                _ => {
                    ctx.style.print(&ret);
                }
            }
            Ok(())
        }
        GaCommand::Network => network(ctx, &agent).await,
        GaCommand::Other(words) => {
            let (name, assignments) = words
                .split_first()
                .ok_or_else(|| Failure::Usage("which agent command?".into()))?;
            let mut arguments = Map::new();
            for item in assignments {
                qmp_proto::args::insert_assignment(&mut arguments, item)
                    .map_err(|e| Failure::Usage(e.to_string()))?;
            }
            let ret = agent.execute(name, Value::Object(arguments)).await?;
            ctx.style.print(&ret);
            Ok(())
        }
    }
}

async fn info(ctx: &Context, agent: &Client) -> Result<(), Failure> {
    let info = agent.execute("guest-info", json!({})).await?;
    if ctx.json_given {
        ctx.style.print(&info);
        return Ok(());
    }
    let commands = info["supported_commands"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let disabled: Vec<&str> = commands
        .iter()
        .filter(|c| c["enabled"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    println!(
        "qemu-ga {}: {} commands, {} disabled",
        info["version"].as_str().unwrap_or("?"),
        commands.len(),
        disabled.len()
    );
    if !disabled.is_empty() {
        println!("disabled: {}", disabled.join(", "));
    }
    Ok(())
}

/// `guest-exec`, then `guest-exec-status` until the program ends.
async fn exec(ctx: &Context, agent: &Client, a: &GaExecArgs) -> Result<(), Failure> {
    let (path, args) = a
        .command
        .split_first()
        .ok_or_else(|| Failure::Usage("which program?".into()))?;
    let mut command = GuestExec::new(path.clone())
        .with_arg(args.to_vec())
        .with_capture_output(GuestExecCaptureOutput::Bool(true));
    if !a.env.is_empty() {
        command = command.with_env(a.env.clone());
    }
    if let Some(input) = &a.input {
        command = command.with_input_data(BASE64.encode(input));
    }
    let pid = agent
        .run(command)
        .await?
        .pid
        .ok_or_else(|| Failure::Connection("the agent gave no pid for the program".into()))?;
    let started = Instant::now();
    let deadline = ctx.timeout_given.then(|| ctx.limit());
    let mut pause = Duration::from_millis(10);
    let status = loop {
        let status = agent.run(GuestExecStatus::new(pid)).await?;
        if status.exited == Some(true) {
            break status;
        }
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            eprintln!(
                "qmp ga exec: {path} (guest pid {pid}) still runs after {:?}; left running",
                ctx.limit()
            );
            return Err(Failure::Quiet(124));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    };
    let decode = |data: &Option<String>| -> Vec<u8> {
        data.as_deref()
            .and_then(|b64| BASE64.decode(b64).ok())
            .unwrap_or_default()
    };
    let _ = std::io::stdout().write_all(&decode(&status.out_data));
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&decode(&status.err_data));
    for (truncated, what) in [
        (status.out_truncated, "standard output"),
        (status.err_truncated, "standard error"),
    ] {
        if truncated == Some(true) {
            eprintln!("qmp ga exec: the agent cut the program's {what} short");
        }
    }
    let code = match (status.exitcode, status.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => {
            eprintln!("qmp ga exec: {path} was killed by signal {signal}");
            128 + signal
        }
        _ => 0,
    };
    match code {
        0 => Ok(()),
        code => Err(Failure::Quiet(u8::try_from(code).unwrap_or(255))),
    }
}

/// Progress on stderr when it is a terminal: `\r12.0 of 40.0 MiB (30%)`.
struct Progress {
    shown: bool,
    total: Option<u64>,
    last: Instant,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress {
            shown: std::io::stderr().is_terminal(),
            total,
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: u64, finished: bool) {
        if !self.shown || (!finished && self.last.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last = Instant::now();
        let mib = |n: u64| n as f64 / (1 << 20) as f64;
        let line = match self.total {
            Some(total) if total > 0 => format!(
                "{:.1} of {:.1} MiB ({}%)",
                mib(done),
                mib(total),
                done * 100 / total
            ),
            _ => format!("{:.1} MiB", mib(done)),
        };
        eprint!("\r{line}\x1b[K");
        if finished {
            eprintln!();
        }
    }
}

/// Opens a guest file, runs `work` with its handle, and closes it
/// whatever happened.
async fn with_guest_file<T>(
    agent: &Client,
    path: &str,
    mode: &str,
    work: impl AsyncFnOnce(i64) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let handle = agent
        .run(GuestFileOpen::new(path.into()).with_mode(mode.into()))
        .await?;
    let result = work(handle).await;
    let closed = agent.run(GuestFileClose::new(handle)).await;
    let value = result?;
    closed?;
    Ok(value)
}

async fn get(agent: &Client, guest: &str, local: &str) -> Result<(), Failure> {
    let mut out: Box<dyn Write> = if local == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(local)
                .map_err(|e| Failure::Usage(format!("cannot create {local}: {e}")))?,
        )
    };
    with_guest_file(agent, guest, "r", async |handle| {
        // The size, for the progress line: seek to the end and back.
        let seek = |whence| GuestFileSeek::new(handle, 0, GuestFileSeekWhence::Str(whence));
        let end = agent.run(seek(GuestFileSeekWhenceStr::End)).await?;
        agent.run(seek(GuestFileSeekWhenceStr::Set)).await?;
        let mut progress = Progress::new(end.position.and_then(|p| u64::try_from(p).ok()));
        let mut done = 0u64;
        loop {
            let chunk = agent
                .run(GuestFileRead::new(handle).with_count(CHUNK as i64))
                .await?;
            let bytes = chunk
                .buf_b64
                .as_deref()
                .and_then(|b| BASE64.decode(b).ok())
                .ok_or_else(|| {
                    Failure::Connection(format!(
                        "the agent sent unreadable data: {}",
                        chunk.to_qmp()
                    ))
                })?;
            out.write_all(&bytes)
                .map_err(|e| Failure::Usage(format!("cannot write {local}: {e}")))?;
            done += bytes.len() as u64;
            progress.update(done, false);
            if chunk.eof == Some(true) || bytes.is_empty() {
                break;
            }
        }
        progress.update(done, true);
        out.flush()
            .map_err(|e| Failure::Usage(format!("cannot write {local}: {e}")))
    })
    .await
}

async fn put(agent: &Client, local: &str, guest: &str) -> Result<(), Failure> {
    let mut input: Box<dyn Read> = if local == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(local)
                .map_err(|e| Failure::Usage(format!("cannot open {local}: {e}")))?,
        )
    };
    let total = (local != "-")
        .then(|| std::fs::metadata(local).ok().map(|m| m.len()))
        .flatten();
    with_guest_file(agent, guest, "w", async |handle| {
        let mut progress = Progress::new(total);
        let mut buf = Vec::with_capacity(CHUNK);
        let mut done = 0u64;
        loop {
            // A whole chunk, or what is left of the input.
            buf.clear();
            let n = (&mut input)
                .take(CHUNK as u64)
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Usage(format!("cannot read {local}: {e}")))?;
            if n == 0 {
                break;
            }
            let wrote = agent
                .run(GuestFileWrite::new(handle, BASE64.encode(&buf[..n])))
                .await?;
            if wrote.count != Some(n as i64) {
                return Err(Failure::Connection(format!(
                    "the agent wrote {} of {n} bytes",
                    wrote.to_qmp()["count"]
                )));
            }
            done += n as u64;
            progress.update(done, false);
        }
        progress.update(done, true);
        agent.run(GuestFileFlush::new(handle)).await?;
        Ok(())
    })
    .await
}

async fn network(ctx: &Context, agent: &Client) -> Result<(), Failure> {
    if ctx.json_given {
        // The agent's reply as it sent it (the typed value would put its
        // members in the description's order).
        let interfaces = agent
            .execute(GuestNetworkGetInterfaces::NAME, json!({}))
            .await?;
        ctx.style.print(&interfaces);
        return Ok(());
    }
    let interfaces = agent.run(GuestNetworkGetInterfaces::new()).await?;
    for i in interfaces {
        let addresses: Vec<String> = i
            .ip_addresses
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{}/{}",
                    a.ip_address.as_deref().unwrap_or("?"),
                    a.prefix.unwrap_or(0)
                )
            })
            .collect();
        println!(
            "{:<12} {:<17} {}",
            i.name.as_deref().unwrap_or("?"),
            i.hardware_address.as_deref().unwrap_or("-"),
            addresses.join(" ")
        );
    }
    Ok(())
}
