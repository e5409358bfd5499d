//! `qmp-shell` (`qmp shell`): an interactive QMP shell.
//!
//! On a terminal: a `(QEMU) ` prompt with history (kept under the user's
//! state directory) and completion from the live schema; events are printed
//! as JSON the moment they arrive, above the line being typed. From a pipe
//! or a script: one command per line, and a non-zero exit if any failed.

use super::shell_complete::{hmp_names, Catalog};
use super::shell_parse::{self, Request, Transaction};
use crate::cli::ShellArgs;
use crate::{Context, Failure};
use qmp_client::{Call, Client, ClientBuilder, EventFilter, Handshake};
use qmp_proto::schema::Schema;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Editor, ExternalPrinter, Helper, Highlighter, Hinter, Validator};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Helper, Highlighter, Hinter, Validator)]
struct ShellHelper {
    catalog: Arc<Mutex<Catalog>>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self
            .catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(line, pos))
    }
}

/// Where the shell's output goes, and how it is written.
struct Output {
    pretty: bool,
    verbose: bool,
    log: Option<std::fs::File>,
}

impl Output {
    fn json(&self, v: &Value) -> String {
        if self.pretty {
            serde_json::to_string_pretty(v).unwrap_or_default()
        } else {
            v.to_string()
        }
    }
}

/// The QEMU a `--launch` started; stopped and its temp dir removed on drop.
struct Launched {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts QEMU with a QMP socket in a private temp dir.
fn launch(command: &[String]) -> Result<(Launched, String), Failure> {
    // `--launch -- qemu ...`: the separator may arrive as the first word
    let command = match command.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => command,
    };
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::Usage("--launch needs a QEMU command".into()))?;
    let dir = tempfile::Builder::new()
        .prefix("qmp-shell-")
        .tempdir()
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let sock = dir.path().join("qmp.sock");
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // the daemon may be started through a wrapper (`chroot DIR qemu-storage-daemon`)
    if command.iter().any(|word| word.contains("storage-daemon")) {
        cmd.args([
            "--chardev",
            &format!(
                "socket,path={},server=on,wait=off,id=qmp-shell",
                sock.display()
            ),
        ]);
        cmd.args(["--monitor", "chardev=qmp-shell"]);
    } else {
        cmd.args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", sock.display()),
        ]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::Connection(format!("cannot start {program}: {e}")))?;
    for _ in 0..500 {
        if sock.exists() {
            // QEMU creates the file a moment before it serves the socket
            std::thread::sleep(Duration::from_millis(50));
            let address = sock.display().to_string();
            return Ok((Launched { child, _dir: dir }, address));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::Connection(format!(
                "{program} exited ({status}) before opening its monitor"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    Err(Failure::Connection(format!(
        "{program} did not open its monitor within 10 s"
    )))
}

fn history_path() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })?;
    let dir = base.join("qmp-shell");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

pub async fn run(ctx: &Context, a: &ShellArgs) -> Result<(), Failure> {
    // Where to connect: --demo, --launch, or an address.
    let mut _launched = None;
    let mut _demo_dir = None;
    let address = if a.demo {
        let dir = tempfile::tempdir().map_err(|e| Failure::Connection(e.to_string()))?;
        let path = dir.path().join("demo.sock");
        let server = qmp_server::demo::server();
        let listener = server
            .bind(&qmp_proto::Address::Unix(path.clone()))
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
        tokio::spawn(async move { server.serve(listener).await });
        _demo_dir = Some(dir);
        path.display().to_string()
    } else if !a.launch.is_empty() {
        let (launched, address) = launch(&a.launch)?;
        _launched = Some(launched);
        address
    } else {
        a.address
            .clone()
            .or_else(|| ctx.address().map(str::to_owned))
            .ok_or_else(|| {
                Failure::Usage("no QMP address: give ADDR, -s ADDR or set QMP_SOCKET".into())
            })?
    };
    let limit = ctx.limit();
    let mut builder = ClientBuilder::new()
        .timeout(Some(limit))
        .connect_timeout(limit);
    if a.no_negotiate {
        builder = builder.handshake(Handshake::GreetingOnly);
    }
    let client = crate::connect_with(builder, &address).await?;
    let out = Output {
        pretty: a.pretty,
        verbose: a.verbose,
        log: match &a.log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Failure::Usage(format!("cannot open {path}: {e}")))?,
            ),
            None => None,
        },
    };
    let interactive = std::io::stdin().is_terminal();
    let catalog = Arc::new(Mutex::new(Catalog::default()));
    if a.hmp {
        let commands = client
            .execute("query-commands", Value::Null)
            .await
            .unwrap_or(Value::Null);
        if !commands
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["name"] == "human-monitor-command"))
        {
            return Err(Failure::Connection(
                "this server has no HMP (human-monitor-command)".into(),
            ));
        }
        if let Ok(Value::String(help)) = client
            .execute("human-monitor-command", json!({"command-line": "help"}))
            .await
        {
            *catalog.lock().unwrap_or_else(|e| e.into_inner()) =
                Catalog::from_names(hmp_names(&help));
        }
    } else if !a.no_negotiate {
        let schema = client.execute("query-qmp-schema", Value::Null).await;
        if let Some(schema) = schema.ok().and_then(|s| Schema::from_json(&s).ok()) {
            *catalog.lock().unwrap_or_else(|e| e.into_inner()) = Catalog::from_schema(&schema);
        }
    }
    if interactive {
        if let Some(g) = client.greeting() {
            let package = if g.version.package.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.version.package)
            };
            println!(
                "Welcome to the QMP shell. Connected to QEMU {}{package}.",
                g.version.qemu
            );
        }
        println!(
            "Type 'help' for commands, 'help CMD' for a command's arguments, Ctrl-D to leave.\n"
        );
    }
    let mut shell = Shell {
        client,
        out,
        catalog,
        cpu_index: None,
        hmp: a.hmp,
        failures: 0,
    };
    if interactive {
        shell.interactive().await?;
    } else {
        shell.piped().await?;
    }
    if shell.failures > 0 {
        return Err(Failure::Quiet(1));
    }
    Ok(())
}

struct Shell {
    client: Client,
    out: Output,
    catalog: Arc<Mutex<Catalog>>,
    cpu_index: Option<i64>,
    hmp: bool,
    failures: usize,
}

impl Shell {
    async fn interactive(&mut self) -> Result<(), Failure> {
        let mut editor: Editor<ShellHelper, FileHistory> = Editor::new()
            .map_err(|e| Failure::Connection(format!("cannot open the terminal: {e}")))?;
        editor.set_helper(Some(ShellHelper {
            catalog: self.catalog.clone(),
        }));
        let history = history_path();
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        // Events go above the line being typed, as they arrive.
        let mut printer = editor
            .create_external_printer()
            .map_err(|e| Failure::Connection(e.to_string()))?;
        let mut events = self.client.events(EventFilter::all());
        let pretty = self.out.pretty;
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                let text = match e {
                    Ok(e) => {
                        let v = e.to_value();
                        if pretty {
                            serde_json::to_string_pretty(&v).unwrap_or_default()
                        } else {
                            v.to_string()
                        }
                    }
                    Err(lagged) => format!("qmp-shell: {lagged}"),
                };
                if printer.print(text).is_err() {
                    break;
                }
            }
        });
        let mut transaction: Option<Transaction> = None;
        let mut editor = Some(editor);
        loop {
            let prompt = if transaction.is_some() {
                "TRANS> "
            } else {
                "(QEMU) "
            };
            let mut ed = editor
                .take()
                .expect("the editor comes back after each line");
            let (ed, line) = tokio::task::spawn_blocking(move || {
                let line = ed.readline(prompt);
                (ed, line)
            })
            .await
            .map_err(|e| Failure::Connection(e.to_string()))?;
            editor = Some(ed);
            match line {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor
                            .as_mut()
                            .expect("just put back")
                            .add_history_entry(line.as_str());
                    }
                    self.line(&line, &mut transaction, &mut std::io::stdout())
                        .await?;
                }
                Err(ReadlineError::Interrupted) => {
                    transaction = None; // Ctrl-C drops the line (and a transaction in progress)
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(Failure::Connection(format!("terminal: {e}"))),
            }
            if self.client.is_closed() {
                break;
            }
        }
        if let (Some(h), Some(ed)) = (&history, editor.as_mut()) {
            let _ = ed.save_history(h);
        }
        self.closed_check().await
    }

    async fn piped(&mut self) -> Result<(), Failure> {
        let mut events = self.client.events(EventFilter::all());
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut transaction = None;
        let mut stdout = std::io::stdout();
        while let Some(line) = lines.recv().await {
            self.line(&line, &mut transaction, &mut stdout).await?;
            while let Some(Ok(e)) = events.try_next() {
                let _ = writeln!(stdout, "{}", self.out.json(&e.to_value()));
            }
            if self.client.is_closed() {
                break;
            }
        }
        if transaction.is_some() {
            eprintln!("qmp-shell: the input ended inside a transaction");
            self.failures += 1;
        }
        self.closed_check().await
    }

    /// A closed connection ends the shell with one line.
    async fn closed_check(&self) -> Result<(), Failure> {
        if !self.client.is_closed() {
            return Ok(());
        }
        let why = self.client.disconnected().await;
        Err(Failure::Connection(format!(
            "the connection was closed ({why})"
        )))
    }

    async fn line(
        &mut self,
        line: &str,
        transaction: &mut Option<Transaction>,
        w: &mut impl Write,
    ) -> Result<(), Failure> {
        let trimmed = line.trim();
        if let Some(t) = transaction.as_mut() {
            match t.add_line(trimmed) {
                Ok(true) => {
                    let request = transaction.take().expect("in a transaction").into_request();
                    self.send(request, w).await;
                }
                Ok(false) => {}
                Err(e) => self.fail(&format!("qmp-shell: {e}")),
            }
            return Ok(());
        }
        if trimmed.is_empty() {
            return Ok(());
        }
        if self.hmp {
            return self.hmp_line(trimmed, w).await;
        }
        if let Some(rest) = shell_parse::transaction_start(trimmed) {
            let mut t = Transaction::default();
            match t.add_line(rest) {
                Ok(true) => self.send(t.into_request(), w).await,
                Ok(false) => *transaction = Some(t),
                Err(e) => self.fail(&format!("qmp-shell: {e}")),
            }
            return Ok(());
        }
        if let Some(topic) = trimmed.strip_prefix("help") {
            if topic.is_empty() || topic.starts_with(' ') {
                self.help(topic.trim(), w);
                return Ok(());
            }
        }
        let request = if trimmed.starts_with('{') {
            shell_parse::raw(trimmed)
        } else {
            shell_parse::command(trimmed).map(|(command, args)| Request {
                command,
                arguments: Value::Object(args),
                id: None,
                oob: false,
            })
        };
        match request {
            Ok(r) => self.send(r, w).await,
            Err(e) => self.fail(&format!("qmp-shell: {e}")),
        }
        Ok(())
    }

    fn help(&mut self, topic: &str, w: &mut impl Write) {
        let catalog = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if topic.is_empty() {
            let _ = writeln!(w, "{}", catalog.commands.join("  "));
        } else {
            match catalog.help(topic) {
                Some(text) => {
                    let _ = writeln!(w, "{text}");
                }
                None => {
                    drop(catalog);
                    self.fail(&format!("qmp-shell: no command {topic}"));
                }
            }
        }
    }

    fn fail(&mut self, message: &str) {
        eprintln!("{message}");
        self.failures += 1;
    }

    async fn hmp_line(&mut self, line: &str, w: &mut impl Write) -> Result<(), Failure> {
        if let Some(n) = line.strip_prefix("cpu ") {
            match n.trim().parse() {
                Ok(n) => self.cpu_index = Some(n),
                Err(_) => self.fail("qmp-shell: cpu needs a number"),
            }
            return Ok(());
        }
        let mut args = json!({"command-line": line});
        if let Some(cpu) = self.cpu_index {
            args["cpu-index"] = json!(cpu);
        }
        match self.client.execute("human-monitor-command", args).await {
            Ok(Value::String(text)) => {
                let _ = write!(w, "{text}");
            }
            Ok(other) => {
                let _ = writeln!(w, "{other}");
            }
            Err(e) => self.fail(&format!("error: {e}")),
        }
        Ok(())
    }

    async fn send(&mut self, r: Request, w: &mut impl Write) {
        let mut shown = serde_json::Map::new();
        shown.insert(
            (if r.oob { "exec-oob" } else { "execute" }).into(),
            json!(r.command),
        );
        if !r.arguments.is_null() && r.arguments != json!({}) {
            shown.insert("arguments".into(), r.arguments.clone());
        }
        if let Some(id) = &r.id {
            shown.insert("id".into(), id.clone());
        }
        let shown = Value::Object(shown);
        if self.out.verbose {
            let _ = writeln!(w, "{}", self.out.json(&shown));
        }
        let mut call = Call::new(&r.command).arguments(r.arguments);
        if let Some(id) = r.id {
            call = call.id(id);
        }
        if r.oob {
            call = call.out_of_band();
        }
        let response = match self.client.call(call).await {
            Ok(ret) => json!({"return": ret}),
            Err(qmp_client::Error::Qmp(e)) => {
                self.failures += 1;
                json!({"error": {"class": e.class, "desc": e.desc}})
            }
            // said once, with its cause, as the shell ends
            Err(e) if e.is_disconnect() => return,
            Err(e) => {
                self.fail(&format!("qmp-shell: {e}"));
                return;
            }
        };
        let _ = writeln!(w, "{}", self.out.json(&response));
        if let Some(log) = &mut self.out.log {
            let _ = writeln!(log, "{}", json!({"request": shown, "response": response}));
        }
    }
}
