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
use qmp_client::{Call, Client, ClientBuilder, EventFilter, EventStream, Handshake};
use qmp_proto::schema::Schema;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, ExternalPrinter,
    Helper, Highlighter, Hinter, KeyEvent, RepeatCount, Validator,
};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Helper, Highlighter, Hinter, Validator)]
struct ShellHelper {
    catalog: Arc<Mutex<Catalog>>,
    /// The live VM, for values only it knows (QOM paths, node names, ...);
    /// `None` in HMP mode.
    live: Option<(Client, tokio::runtime::Handle)>,
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let (start, found) = self
            .catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete(line, pos);
        if !found.is_empty() {
            return Ok((start, found));
        }
        // A value the schema cannot list: ask the VM. (This runs on the
        // line editor's thread; the runtime's own thread keeps serving the
        // connection meanwhile.)
        let Some((client, handle)) = &self.live else {
            return Ok((start, found));
        };
        let before = &line[..pos];
        let word = &before[start..];
        let mut words = before[..start].split_whitespace();
        let (Some(command), Some((key, partial))) = (words.next(), word.split_once('=')) else {
            return Ok((start, found));
        };
        let given: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let values = handle.block_on(live_values(client, command, key, partial, &given));
        let found = values
            .into_iter()
            .filter(|v| v.starts_with(partial))
            .map(|v| format!("{key}={v}"))
            .collect();
        Ok((start, found))
    }
}

/// Values of argument `key` of `command` that the live VM has: QOM paths
/// and property names, block node names, device and object ids, device
/// and object types. Empty when there is nothing to offer or the VM
/// cannot say.
async fn live_values(
    client: &Client,
    command: &str,
    key: &str,
    partial: &str,
    given: &[(&str, &str)],
) -> Vec<String> {
    let ask = |cmd: &'static str, args: Value| async move {
        tokio::time::timeout(Duration::from_secs(2), client.execute(cmd, args))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(Value::Null)
    };
    let names = |v: &Value, keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| keep(e))
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    };
    let is_child = |e: &Value| e["type"].as_str().is_some_and(|t| t.starts_with("child<"));
    match (command, key) {
        // a QOM path, one level at a time: the children of what is typed
        (_, "path") => {
            let parent = match partial.rfind('/') {
                Some(0) | None => "/",
                Some(i) => &partial[..i],
            };
            let listing = ask("qom-list", json!({"path": parent})).await;
            let base = parent.trim_end_matches('/');
            names(&listing, &|e| {
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("child<") || t.starts_with("link<"))
            })
            .into_iter()
            .map(|n| format!("{base}/{n}"))
            .collect()
        }
        (_, "property") => {
            let path = given
                .iter()
                .find(|(k, _)| *k == "path")
                .map_or("/", |(_, v)| *v);
            names(&ask("qom-list", json!({"path": path})).await, &|_| true)
        }
        ("device_del" | "device-list-properties", "id") => names(
            &ask("qom-list", json!({"path": "/machine/peripheral"})).await,
            &is_child,
        ),
        ("object-del", "id") => names(
            &ask("qom-list", json!({"path": "/objects"})).await,
            &is_child,
        ),
        ("device_add", "driver") => names(
            &ask(
                "qom-list-types",
                json!({"implements": "device", "abstract": false}),
            )
            .await,
            &|_| true,
        ),
        ("object-add", "qom-type") => names(
            &ask(
                "qom-list-types",
                json!({"implements": "user-creatable", "abstract": false}),
            )
            .await,
            &|_| true,
        ),
        ("blockdev-add", _) => Vec::new(),
        (_, "node-name" | "node" | "device" | "target" | "base-node" | "top-node" | "overlay") => {
            let nodes = ask("query-named-block-nodes", json!({"flat": true})).await;
            nodes
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["node-name"].as_str().map(str::to_owned))
                .collect()
        }
        _ => Vec::new(),
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

/// Python qmp-shell's history file, `~/.qmp-shell_history`, if there is one.
fn python_history() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(std::env::var_os("HOME")?).join(".qmp-shell_history");
    path.is_file().then_some(path)
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
    if a.ga {
        builder = builder.guest_agent();
    }
    let client = crate::connect_with(builder.clone(), &address).await?;
    let out = Output {
        pretty: a.pretty || ctx.pretty_given,
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
            // `help info` lists `info X -- ...` lines: X completes after info
            let info = match client
                .execute(
                    "human-monitor-command",
                    json!({"command-line": "help info"}),
                )
                .await
            {
                Ok(Value::String(text)) => text
                    .lines()
                    .filter_map(|l| l.strip_prefix("info "))
                    .flat_map(hmp_names)
                    .collect(),
                _ => Vec::new(),
            };
            *catalog.lock().unwrap_or_else(|e| e.into_inner()) =
                Catalog::from_names(hmp_names(&help)).with_next_words("info", info);
        }
    } else if a.ga {
        // The agent has no schema to ask for: its command names complete.
        if let Ok(info) = client.execute("guest-info", Value::Null).await {
            let names = info["supported_commands"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["enabled"] == true)
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect();
            *catalog.lock().unwrap_or_else(|e| e.into_inner()) = Catalog::from_names(names);
            if interactive {
                println!(
                    "Welcome to the QMP shell. Connected to the guest agent {}.",
                    info["version"].as_str().unwrap_or("?")
                );
            }
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
        events: Some(client.events(EventFilter::all())),
        client,
        out,
        catalog,
        cpu_index: None,
        hmp: a.hmp,
        failures: 0,
        limit,
        seen: Seen::default(),
        reconnect: (a.reconnect && interactive).then(|| (builder, address.clone())),
    };
    if interactive {
        // A person leaving with Ctrl-D has seen every error already.
        shell.interactive().await
    } else {
        shell.piped().await?;
        if shell.failures > 0 {
            return Err(Failure::Quiet(1));
        }
        Ok(())
    }
}

struct Shell {
    client: Client,
    /// Every event, printed as it comes: by a watcher while a line is
    /// being read, by the shell itself while a command runs (so that an
    /// event a command causes is printed before its reply, as it came).
    /// (`None` only while the watcher has it.)
    events: Option<EventStream>,
    out: Output,
    catalog: Arc<Mutex<Catalog>>,
    cpu_index: Option<i64>,
    hmp: bool,
    failures: usize,
    limit: Duration,
    seen: Seen,
    /// With `--reconnect`: how to connect again when QEMU goes away.
    reconnect: Option<(ClientBuilder, String)>,
}

/// Events printed while a command ran, which the shell's own stream also
/// holds: that stream skips them, so nothing is printed twice.
#[derive(Default)]
struct Seen(std::collections::VecDeque<Arc<qmp_client::Event>>);

impl Seen {
    fn printed(&mut self, e: &Arc<qmp_client::Event>) {
        // Every subscriber gets the same Arc, so identity is exact; the
        // bound only matters if the shell's stream lagged and lost some.
        if self.0.len() == 4096 {
            self.0.pop_front();
        }
        self.0.push_back(e.clone());
    }

    /// Whether `e` was printed already; forgets it (and anything older).
    fn was_printed(&mut self, e: &Arc<qmp_client::Event>) -> bool {
        match self.0.iter().position(|p| Arc::ptr_eq(p, e)) {
            Some(at) => {
                self.0.drain(..=at);
                true
            }
            None => false,
        }
    }
}

/// The terminal as it was before the line editor put it in raw mode, to
/// give back when a line is ended from outside (see [`Terminal::end_input`]).
struct Terminal {
    input: std::os::fd::OwnedFd,
    mode: nix::sys::termios::Termios,
}

impl Terminal {
    /// Keeps standard input and its terminal mode.
    fn save() -> Option<Terminal> {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let mode = nix::sys::termios::tcgetattr(stdin.as_fd()).ok()?;
        let input = stdin.as_fd().try_clone_to_owned().ok()?;
        Some(Terminal { input, mode })
    }

    /// Makes the line editor's next read of standard input return
    /// end-of-file, so `readline` returns as for Ctrl-D: `/dev/null` takes
    /// the place of descriptor 0 until [`restore`](Self::restore).
    fn end_input() {
        use std::os::fd::AsRawFd;
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        }
    }

    /// Puts the terminal back on descriptor 0, in its mode from before:
    /// the line editor could not restore the mode through `/dev/null`.
    fn restore(&self) {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2(self.input.as_raw_fd(), 0);
        let _ = nix::sys::termios::tcsetattr(
            &self.input,
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.mode,
        );
    }
}

/// An event as the shell prints it: JSON on its own line.
fn event_text(e: Result<Arc<qmp_client::Event>, qmp_client::Lagged>, pretty: bool) -> String {
    match e {
        Ok(e) => {
            let v = e.to_value();
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                v.to_string()
            };
            format!("{text}\n")
        }
        Err(lagged) => format!("qmp-shell: {lagged}\n"),
    }
}

/// Prints events above the line being typed until `stop`, then hands the
/// printer and the stream back. A connection that ends meanwhile is said
/// at once, not at the next Enter.
async fn watch<P: ExternalPrinter>(
    mut printer: P,
    mut events: EventStream,
    mut seen: Seen,
    client: Client,
    pretty: bool,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (P, EventStream, Seen) {
    let mut told = client.is_closed();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return (printer, events, seen),
            Some(e) = events.next() => {
                if matches!(&e, Ok(e) if seen.was_printed(e)) {
                    continue;
                }
                // Always newline-terminated: while no line is being read
                // the printer writes the text as it is.
                let _ = printer.print(event_text(e, pretty));
            }
            why = client.disconnected(), if !told => {
                told = true;
                // The line being read ends as if Ctrl-D was pressed: the
                // shell then says why and exits, with nothing to press.
                Terminal::end_input();
                let _ = printer.print(format!("qmp-shell: the connection was closed ({why})\n"));
            }
        }
    }
}

/// Ctrl-C ends the line as Enter does, marked as dropped. rustyline's own
/// Ctrl-C is an error that takes the editor's read buffer with it, so
/// whatever the terminal had already handed over after the Ctrl-C (a
/// paste, keys typed ahead) would be lost.
struct DropLine(Arc<AtomicBool>);

impl ConditionalEventHandler for DropLine {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, _: &EventContext) -> Option<Cmd> {
        self.0.store(true, Ordering::Relaxed);
        Some(Cmd::AcceptLine)
    }
}

impl Shell {
    async fn interactive(&mut self) -> Result<(), Failure> {
        // Tab completes what is common, and a second Tab lists the
        // candidates (as bash does), rather than cycling through 200 of them.
        let config = rustyline::Config::builder()
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config)
            .map_err(|e| Failure::Connection(format!("cannot open the terminal: {e}")))?;
        editor.set_helper(Some(ShellHelper {
            live: (!self.hmp).then(|| (self.client.clone(), tokio::runtime::Handle::current())),
            catalog: self.catalog.clone(),
        }));
        let dropped = Arc::new(AtomicBool::new(false));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(DropLine(dropped.clone()))),
        );
        let history = history_path();
        if let Some(h) = &history {
            if h.exists() {
                let _ = editor.load_history(h);
            } else if let Some(python) = python_history() {
                // Python qmp-shell's history, taken over once: from now on
                // it is kept in ours.
                let _ = editor.load_history(&python);
            }
        }
        let terminal = Terminal::save();
        // Events go above the line being typed, as they arrive.
        let mut printer = Some(
            editor
                .create_external_printer()
                .map_err(|e| Failure::Connection(e.to_string()))?,
        );
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
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let events = self
                .events
                .take()
                .expect("the stream comes back after each line");
            let watcher = tokio::spawn(watch(
                printer
                    .take()
                    .expect("the printer comes back after each line"),
                events,
                std::mem::take(&mut self.seen),
                self.client.clone(),
                self.out.pretty,
                stopped,
            ));
            let read = tokio::task::spawn_blocking(move || {
                let line = ed.readline(prompt);
                (ed, line)
            })
            .await;
            let _ = stop.send(());
            let (p, events, seen) = watcher
                .await
                .map_err(|e| Failure::Connection(e.to_string()))?;
            self.seen = seen;
            (printer, self.events) = (Some(p), Some(events));
            let (ed, line) = read.map_err(|e| Failure::Connection(e.to_string()))?;
            editor = Some(ed);
            let line = match line {
                Ok(_) if dropped.swap(false, Ordering::Relaxed) => Err(ReadlineError::Interrupted),
                other => other,
            };
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
                Err(ReadlineError::Eof) => {
                    if let Some(t) = &terminal {
                        t.restore();
                    }
                    // Ctrl-D leaves; a connection that ended leaves too,
                    // unless --reconnect waits for QEMU to come back.
                    if !(self.client.is_closed() && self.reconnected().await) {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(Failure::Connection(format!("terminal: {e}"))),
            }
            if self.client.is_closed() && !self.reconnected().await {
                break;
            }
        }
        if let (Some(h), Some(ed)) = (&history, editor.as_mut()) {
            let _ = ed.save_history(h);
        }
        self.closed_check().await
    }

    async fn piped(&mut self) -> Result<(), Failure> {
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
            if self.client.is_closed() {
                break;
            }
        }
        if transaction.is_some() {
            eprintln!("qmp-shell: the input ended inside a transaction");
            self.failures += 1;
        }
        if !self.client.is_closed() {
            self.trailing_events(&mut stdout).await;
        }
        self.closed_check().await
    }

    /// After the last input line: the events of jobs the input started
    /// (a block job's `waiting`, `pending`, `concluded` come after the
    /// command's reply), until every job has concluded or the timeout
    /// passes; then what is still on its way.
    async fn trailing_events(&mut self, w: &mut impl Write) {
        let running = |jobs: &Value| {
            jobs.as_array().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| !matches!(j["status"].as_str(), Some("concluded" | "null")))
            })
        };
        let deadline = tokio::time::Instant::now() + self.limit;
        loop {
            let jobs = self.call(Call::new("query-jobs"), w).await;
            // No query-jobs (not a QEMU with jobs), or none left running.
            let Ok(jobs) = jobs else { break };
            if !running(&jobs) {
                break;
            }
            let next = tokio::time::timeout_at(deadline, self.next_event()).await;
            match next {
                Ok(Some(e)) => {
                    let _ = write!(w, "{}", event_text(e, self.out.pretty));
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Events already on their way.
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(100), self.next_event()).await
        {
            let _ = write!(w, "{}", event_text(e, self.out.pretty));
        }
    }

    /// Runs `call`, printing the events that come meanwhile as they come,
    /// and each before or after the reply as the server sent it (a
    /// command's own events come before its reply, rule P4).
    async fn call(&mut self, call: Call, w: &mut impl Write) -> qmp_client::Result<Value> {
        let client = self.client.clone();
        let (mut before_reply, reply) = client.call_with_events(call, EventFilter::all());
        tokio::pin!(reply);
        let pretty = self.out.pretty;
        let mut print = |e: Result<Arc<qmp_client::Event>, qmp_client::Lagged>, seen: &mut Seen| {
            if let Ok(e) = &e {
                seen.printed(e);
            }
            let _ = write!(w, "{}", event_text(e, pretty));
        };
        let outcome = loop {
            tokio::select! {
                biased;
                Some(e) = before_reply.next() => print(e, &mut self.seen),
                outcome = &mut reply => break outcome,
            }
        };
        // The stream ends right after the last event before the reply.
        while let Some(e) = before_reply.next().await {
            print(e, &mut self.seen);
        }
        outcome
    }

    /// The next event of the shell's own stream not printed yet.
    async fn next_event(&mut self) -> Option<Result<Arc<qmp_client::Event>, qmp_client::Lagged>> {
        loop {
            let e = self.stream().next().await?;
            if !matches!(&e, Ok(e) if self.seen.was_printed(e)) {
                return Some(e);
            }
        }
    }

    fn stream(&mut self) -> &mut EventStream {
        self.events
            .as_mut()
            .expect("the watcher hands the stream back before a command runs")
    }

    /// With `--reconnect`, after the connection ended: waits (a try a
    /// second, Ctrl-C gives up) until QEMU is back at the address, then
    /// carries on with the new connection. False without `--reconnect`.
    async fn reconnected(&mut self) -> bool {
        let Some((builder, address)) = self.reconnect.clone() else {
            return false;
        };
        println!("qmp-shell: waiting for QEMU to come back at {address} (Ctrl-C gives up)");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(client) = crate::connect_with(builder.clone(), &address).await else {
                continue;
            };
            if let Some(g) = client.greeting() {
                println!("qmp-shell: connected again, to QEMU {}", g.version.qemu);
            }
            self.events = Some(client.events(EventFilter::all()));
            self.seen = Seen::default();
            self.client = client;
            return true;
        }
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
        if catalog.commands.is_empty() {
            drop(catalog);
            self.fail(if self.hmp {
                "qmp-shell: this monitor's HMP help listed no commands"
            } else {
                "qmp-shell: no command list yet: the session is not negotiated (-N); run qmp_capabilities first"
            });
            return;
        }
        if topic.is_empty() {
            let _ = write!(w, "{}", columns(&catalog.commands, terminal_width()));
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
            let Ok(n) = n.trim().parse::<i64>() else {
                self.fail("qmp-shell: cpu needs a number");
                return Ok(());
            };
            // Tried before it is kept: QEMU refuses every later command
            // that names a CPU it does not have.
            let probe = json!({"command-line": "info version", "cpu-index": n});
            match self.client.execute("human-monitor-command", probe).await {
                Ok(_) => self.cpu_index = Some(n),
                Err(e) if e.is_disconnect() => {}
                Err(_) => self.fail(&format!(
                    "qmp-shell: bad CPU index {n}; still using {}",
                    self.cpu_index.unwrap_or(0)
                )),
            }
            return Ok(());
        }
        let mut args = json!({"command-line": line});
        if let Some(cpu) = self.cpu_index {
            args["cpu-index"] = json!(cpu);
        }
        let outcome = self
            .call(Call::new("human-monitor-command").arguments(args), w)
            .await;
        match outcome {
            Ok(Value::String(text)) => {
                let _ = write!(w, "{text}");
                if matches!(line.split_whitespace().next(), Some("quit" | "q")) {
                    self.after("quit").await;
                }
            }
            Ok(other) => {
                let _ = writeln!(w, "{other}");
            }
            Err(e) => self.fail(&format!("error: {e}")),
        }
        Ok(())
    }

    /// What a command changes for the shell: after `qmp_capabilities`
    /// (the user negotiating by hand, `-N`) the schema can be read for
    /// completion and help; after `quit` the connection is about to end,
    /// and the shell ends with it instead of prompting again.
    async fn after(&mut self, command: &str) {
        match command {
            "qmp_capabilities" if !self.hmp => {
                let empty = self
                    .catalog
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .commands
                    .is_empty();
                if empty {
                    if let Ok(schema) = self.client.execute("query-qmp-schema", Value::Null).await {
                        if let Ok(schema) = Schema::from_json(&schema) {
                            *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) =
                                Catalog::from_schema(&schema);
                        }
                    }
                }
            }
            "quit" => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), self.client.disconnected()).await;
            }
            _ => {}
        }
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
        let outcome = self.call(call, w).await;
        if outcome.is_ok() {
            self.after(&r.command).await;
        }
        let mut response = match outcome {
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
        // A request that came with an id gets it back, as QEMU sends it.
        if let Some(id) = shown.get("id") {
            response["id"] = id.clone();
        }
        let _ = writeln!(w, "{}", self.out.json(&response));
        if let Some(log) = &mut self.out.log {
            let _ = writeln!(log, "{}", json!({"request": shown, "response": response}));
        }
    }
}

/// The terminal's width in columns: `$COLUMNS`, else the terminal's, else 80.
fn terminal_width() -> usize {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return n;
    }
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given.
    let ok = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        size.ws_col as usize
    } else {
        80
    }
}

/// Names in columns down the page, as `ls` lists them, to fit `width`.
fn columns(names: &[String], width: usize) -> String {
    let cell = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) + 2;
    let per_row = (width / cell.max(1)).max(1);
    let rows = names.len().div_ceil(per_row);
    let mut out = String::new();
    for r in 0..rows {
        let mut line = String::new();
        for c in 0..per_row {
            if let Some(name) = names.get(c * rows + r) {
                line.push_str(&format!("{name:cell$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_in_columns_down_the_page() {
        let names: Vec<String> = ["cont", "quit", "stop", "query-status", "qom-get"]
            .map(String::from)
            .into();
        // cells of 14: two per row in 30 columns, three rows
        assert_eq!(
            columns(&names, 30),
            "cont          query-status\nquit          qom-get\nstop\n"
        );
        assert_eq!(columns(&names, 1).lines().count(), 5);
        assert_eq!(columns(&[], 80), "");
    }
}
