//! Plays a transcript back as the QEMU that was recorded.
//!
//! Every client gets a session of the server framework: the recorded
//! greeting, negotiation with QEMU's rules, QEMU's request checks. Each
//! command is matched against the recorded exchanges (a request and its
//! reply):
//!
//! * [`MatchMode::Strict`]: the next exchange in recorded order, which must
//!   have the same command and arguments;
//! * [`MatchMode::ByCommand`]: the first unused exchange with the same
//!   command and arguments, in any order.
//!
//! A match is answered with the recorded reply under the client's own id,
//! after the events recorded before that reply (with their recorded
//! timestamps). A request that matches nothing gets a GenericError saying
//! what was expected, and is remembered for the [`Report`]. With a schema,
//! arguments QEMU would refuse are refused with QEMU's own texts.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_replay::{MatchMode, Replay};
//! use serde_json::json;
//!
//! // Usually a file the proxy recorded (`Replay::load(path)`).
//! let recorded = r#"
//! {"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}, "package": ""}, "capabilities": []}}}
//! {"client": 1, "dir": "request", "msg": {"execute": "stop", "id": 1}}
//! {"dir": "event", "msg": {"timestamp": {"seconds": 0, "microseconds": 0}, "event": "STOP"}}
//! {"client": 1, "dir": "reply", "msg": {"return": {}, "id": 1}}
//! {"client": 1, "dir": "request", "msg": {"execute": "query-status", "id": 2}}
//! {"client": 1, "dir": "reply", "msg": {"return": {"status": "paused", "running": false}, "id": 2}}
//! "#;
//! let replay = recorded.trim().parse::<Replay>()?.mode(MatchMode::ByCommand);
//! let dir = tempfile::tempdir()?;
//! let address = dir.path().join("replay.sock").display().to_string();
//! let server = replay.listen(&address.parse()?).await?;
//!
//! // The code under test talks to the replay as it would to QEMU.
//! let client = qmp_client::Client::connect(&address).await?;
//! let mut stops = client.events(qmp_client::EventFilter::name("STOP"));
//! let status = client.execute("query-status", json!({})).await?;
//! assert_eq!(status["status"], "paused");
//! client.execute("stop", json!({})).await?;
//! assert_eq!(stops.next().await.unwrap()?.name, "STOP");
//! client.close().await;
//!
//! // Every recorded exchange was asked for, and nothing else.
//! server.finish().await.assert_all_used();
//! # Ok(()) }
//! ```

use crate::transcript::{command_of, pairing_key, reply_of, Dir, Transcript, TranscriptError};
use qmp_proto::Address;
use qmp_server::connection::{Backend, BroadcastEvents, CallFuture, Ending};
use qmp_server::schema::Schema;
use qmp_server::session::{Call, CommandSet, QmpError, Session, SessionConfig};
use qmp_server::{Event, Listener, QObject};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How requests are matched to recorded exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatchMode {
    /// The next exchange in recorded order, same command and arguments.
    Strict,
    /// The first unused exchange with the same command and arguments.
    ByCommand,
}

/// One recorded request, its reply and what came with it.
#[derive(Debug, Clone)]
struct Exchange {
    command: String,
    arguments: Value,
    oob: bool,
    /// How many file descriptors came with the request.
    fds: usize,
    reply: Result<Value, QmpError>,
    /// Events recorded after the previous reply and before this one, with
    /// their offsets from the request.
    before: Vec<(Duration, Event)>,
    /// Events recorded after this reply while no command was in flight
    /// (a job's progress after `blockdev-create` returned), with their
    /// offsets from the reply.
    after: Vec<(Duration, Event)>,
    /// How long QEMU took to reply.
    took: Duration,
}

/// A request that matched nothing.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// The request's command.
    pub command: String,
    /// Its arguments.
    pub arguments: Value,
    /// What was expected instead, if anything was.
    pub expected: Option<(String, Value)>,
    /// Why nothing matched.
    pub reason: String,
}

/// What happened during a replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests answered from the recording.
    pub matched: usize,
    /// Requests that matched nothing.
    pub mismatched: Vec<Mismatch>,
    /// Exchanges never used: command and arguments.
    pub unused: Vec<(String, Value)>,
}

impl Report {
    /// No mismatch, and every exchange used unless `allow_unused`.
    pub fn is_clean(&self, allow_unused: bool) -> bool {
        self.mismatched.is_empty() && (allow_unused || self.unused.is_empty())
    }

    /// Panics with the summary unless every exchange was used and nothing
    /// mismatched.
    pub fn assert_all_used(&self) {
        assert!(self.is_clean(false), "the replay was not clean:\n{self}");
    }
}

/// The members of two argument objects that differ.
fn diff(expected: &Value, got: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (e, g) = (
        expected.as_object().unwrap_or(&empty),
        got.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = e.keys().chain(g.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| e.get(*k) != g.get(*k))
        .map(|k| match (e.get(k), g.get(k)) {
            (Some(a), Some(b)) => format!("{k}: expected {a}, got {b}"),
            (Some(a), None) => format!("{k}: expected {a}, missing"),
            (None, Some(b)) => format!("{k}: unexpected {b}"),
            (None, None) => unreachable!("a key of one of them"),
        })
        .collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay: {} matched, {} mismatched, {} unused",
            self.matched,
            self.mismatched.len(),
            self.unused.len()
        )?;
        for m in &self.mismatched {
            writeln!(f, "mismatch: {} {}: {}", m.command, m.arguments, m.reason)?;
            if let Some((command, arguments)) = &m.expected {
                if *command == m.command {
                    for line in diff(arguments, &m.arguments) {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        for (command, arguments) in &self.unused {
            writeln!(f, "unused: {command} {arguments}")?;
        }
        Ok(())
    }
}

/// A replay of a transcript's text.
impl std::str::FromStr for Replay {
    type Err = TranscriptError;

    fn from_str(text: &str) -> Result<Replay, TranscriptError> {
        Ok(Replay::from_transcript(&text.parse()?))
    }
}

/// A replay, ready to listen.
pub struct Replay {
    exchanges: Vec<Exchange>,
    config: SessionConfig,
    mode: MatchMode,
    realtime: bool,
    schema: Option<Schema>,
    exit_when_idle: bool,
}

fn event_of(msg: &Value) -> Event {
    Event {
        name: msg["event"].as_str().unwrap_or_default().to_owned(),
        data: msg.get("data").map(QObject::from_qemu_output),
        seconds: msg["timestamp"]["seconds"].as_i64().unwrap_or(0),
        microseconds: msg["timestamp"]["microseconds"].as_i64().unwrap_or(0),
    }
}

/// The event to send: as recorded, or stamped now if its timestamp is
/// zero (a normalized transcript).
fn stamped(event: &Event) -> Event {
    if event.seconds == 0 && event.microseconds == 0 {
        Event::now(&event.name, event.data.clone())
    } else {
        event.clone()
    }
}

impl Replay {
    /// A replay of the transcript in a file.
    pub fn load(path: &std::path::Path) -> Result<Replay, TranscriptError> {
        Ok(Replay::from_transcript(&Transcript::load(path)?))
    }

    /// A replay of a transcript already read.
    pub fn from_transcript(t: &Transcript) -> Replay {
        let mut exchanges: Vec<Exchange> = Vec::new();
        // requests waiting for their reply: (client, id text) -> exchange
        let mut open: HashMap<(Option<u64>, String), (usize, f64)> = HashMap::new();
        let mut events: Vec<(f64, Event)> = Vec::new();
        let mut last_reply: Option<(usize, f64)> = None;
        // a gap the recording cannot have had (times jumping by 1e20 s in
        // an edited file) is a day
        let since = |t: f64, then: f64| {
            Duration::try_from_secs_f64((t - then).max(0.0))
                .map_or(Duration::from_secs(86400), |d| {
                    d.min(Duration::from_secs(86400))
                })
        };
        for e in &t.entries {
            let t = e.t.unwrap_or(0.0);
            match e.dir {
                // An event while no command was in flight came after the
                // last reply; one during a command, before the next reply.
                Dir::Event => match last_reply {
                    Some((i, replied)) if open.is_empty() => {
                        let x: &mut Exchange = &mut exchanges[i];
                        x.after.push((since(t, replied), event_of(&e.msg)));
                    }
                    _ => events.push((t, event_of(&e.msg))),
                },
                Dir::Request => {
                    let Some((command, oob)) = command_of(&e.msg) else {
                        continue;
                    };
                    open.insert(pairing_key(e), (exchanges.len(), t));
                    exchanges.push(Exchange {
                        command: command.to_owned(),
                        arguments: e
                            .msg
                            .get("arguments")
                            .cloned()
                            .unwrap_or_else(|| serde_json::json!({})),
                        oob,
                        fds: e.fds,
                        reply: Ok(serde_json::json!({})),
                        before: Vec::new(),
                        after: Vec::new(),
                        took: Duration::ZERO,
                    });
                }
                Dir::Reply => {
                    let Some((i, sent)) = open.remove(&pairing_key(e)) else {
                        continue;
                    };
                    let x = &mut exchanges[i];
                    x.reply = reply_of(&e.msg);
                    x.took = since(t, sent);
                    x.before = events
                        .drain(..)
                        .map(|(t, ev)| (since(t, sent), ev))
                        .collect();
                    last_reply = Some((i, t));
                }
            }
        }
        if let Some((i, replied)) = last_reply {
            let rest = events.into_iter().map(|(t, e)| (since(t, replied), e));
            exchanges[i].after.extend(rest);
        }
        let g = &t.greeting["QMP"];
        let config = SessionConfig {
            version: serde::Deserialize::deserialize(&g["version"]).unwrap_or_default(),
            offer_oob: g["capabilities"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == "oob")),
            pretty: false,
        };
        Replay {
            exchanges,
            config,
            mode: MatchMode::Strict,
            realtime: false,
            schema: None,
            exit_when_idle: false,
        }
    }

    /// How requests are matched ([`MatchMode::Strict`] unless changed).
    pub fn mode(mut self, mode: MatchMode) -> Self {
        self.mode = mode;
        self
    }

    /// Keep the recorded gaps: events at their offsets, replies as late
    /// as QEMU gave them.
    pub fn realtime(mut self, yes: bool) -> Self {
        self.realtime = yes;
        self
    }

    /// Check every request's arguments against a real QEMU's schema
    /// (`query-qmp-schema` output), refusing with QEMU's texts.
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Finish once every client that came has gone.
    pub fn exit_when_idle(mut self, yes: bool) -> Self {
        self.exit_when_idle = yes;
        self
    }

    /// Binds `address` (unix sockets 0600) and serves in the background.
    pub async fn listen(self, address: &Address) -> std::io::Result<ReplayServer> {
        let listener = Listener::bind(address, 0o600).await?;
        let port = listener.port();
        let mut oob_commands: HashMap<String, bool> = HashMap::new();
        for x in &self.exchanges {
            *oob_commands.entry(x.command.clone()).or_default() |= x.oob;
        }
        let shared = Arc::new(Shared {
            config: self.config,
            commands: Commands(Arc::new(ReplayCommands {
                recorded: oob_commands,
                schema: self.schema.clone(),
            })),
            state: Mutex::new(State {
                used: vec![false; self.exchanges.len()],
                next: 0,
                matched: 0,
                mismatched: Vec::new(),
            }),
            exchanges: self.exchanges,
            mode: self.mode,
            realtime: self.realtime,
            schema: self.schema,
            events: broadcast::channel(4096).0,
            after: Mutex::new(After::default()),
            stop: watch::channel(false).0,
        });
        let (idle_tx, idle_rx) = watch::channel(false);
        let serving = shared.clone();
        let exit_when_idle = self.exit_when_idle;
        let task = tokio::spawn(async move {
            let mut stop = serving.stop.subscribe();
            let mut sessions = tokio::task::JoinSet::new();
            let mut seen = false;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    stream = listener.next_client() => {
                        seen = true;
                        let backend = Connection(serving.clone());
                        sessions.spawn(qmp_server::connection::run(backend, stream));
                    }
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {
                        if seen && sessions.is_empty() && exit_when_idle {
                            idle_tx.send_replace(true);
                            break;
                        }
                    }
                }
            }
            drop(listener);
            while sessions.join_next().await.is_some() {}
        });
        Ok(ReplayServer {
            shared,
            task,
            port,
            idle: idle_rx,
        })
    }
}

/// A replay serving in the background.
pub struct ReplayServer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    port: Option<u16>,
    idle: watch::Receiver<bool>,
}

impl ReplayServer {
    /// The TCP port bound, for `host:0`.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Resolves when every client that came has gone (with
    /// [`Replay::exit_when_idle`]).
    pub async fn idle(&mut self) {
        let _ = self.idle.wait_for(|i| *i).await;
    }

    /// Stops serving (clients get answers to what they sent) and reports.
    pub async fn finish(self) -> Report {
        self.shared.stop.send_replace(true);
        let _ = self.task.await;
        self.shared.report()
    }
}

struct State {
    used: Vec<bool>,
    /// Strict mode: the first exchange not yet used.
    next: usize,
    matched: usize,
    mismatched: Vec<Mismatch>,
}

struct Shared {
    config: SessionConfig,
    commands: Commands,
    exchanges: Vec<Exchange>,
    state: Mutex<State>,
    mode: MatchMode,
    realtime: bool,
    schema: Option<Schema>,
    events: broadcast::Sender<Event>,
    /// Events recorded after the last reply, not yet sent.
    after: Mutex<After>,
    stop: watch::Sender<bool>,
}

/// Events recorded after a reply while no command ran: sent by a timer
/// once the reply is on its way (at their recorded offsets with
/// `realtime`), or all at once when the next command comes.
#[derive(Default)]
struct After {
    /// Which reply they follow, so that an old timer leaves newer ones be.
    generation: u64,
    events: VecDeque<(Duration, Event)>,
}

/// How long after a reply its following events go out, without realtime.
const AFTER_REPLY: Duration = Duration::from_millis(20);

impl Shared {
    fn after(&self) -> std::sync::MutexGuard<'_, After> {
        self.after.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush_after(&self) {
        for (_, e) in std::mem::take(&mut self.after().events) {
            let _ = self.events.send(stamped(&e));
        }
    }

    /// Queues the events that follow a reply being sent now, and starts
    /// their timer.
    fn schedule_after(self: &Arc<Self>, events: &[(Duration, Event)]) {
        let now = tokio::time::Instant::now();
        let generation = {
            let mut a = self.after();
            a.generation += 1;
            a.events = events.iter().cloned().collect();
            a.generation
        };
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                let due = {
                    let a = shared.after();
                    match a.events.front() {
                        Some((offset, _)) if a.generation == generation && shared.realtime => {
                            now + (*offset).max(AFTER_REPLY)
                        }
                        Some(_) if a.generation == generation => now + AFTER_REPLY,
                        _ => return,
                    }
                };
                tokio::time::sleep_until(due).await;
                let mut a = shared.after();
                if a.generation != generation {
                    return;
                }
                let elapsed = now.elapsed();
                while let Some((offset, _)) = a.events.front() {
                    if shared.realtime && *offset > elapsed {
                        break;
                    }
                    if let Some((_, e)) = a.events.pop_front() {
                        let _ = shared.events.send(stamped(&e));
                    }
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self) -> Report {
        let st = self.lock();
        Report {
            matched: st.matched,
            mismatched: st.mismatched.clone(),
            unused: self
                .exchanges
                .iter()
                .zip(&st.used)
                .filter(|(_, used)| !**used)
                .map(|(x, _)| (x.command.clone(), x.arguments.clone()))
                .collect(),
        }
    }

    /// Finds and takes the exchange for a request, or says why not.
    fn take(&self, command: &str, arguments: &Value, fds: usize) -> Result<usize, Box<Mismatch>> {
        let mut st = self.lock();
        let fits = |x: &Exchange| {
            x.command == command && same_arguments(&x.arguments, arguments) && x.fds == fds
        };
        let found = match self.mode {
            MatchMode::Strict => {
                Some(st.next).filter(|&i| i < self.exchanges.len() && fits(&self.exchanges[i]))
            }
            MatchMode::ByCommand => {
                (0..self.exchanges.len()).find(|&i| !st.used[i] && fits(&self.exchanges[i]))
            }
        };
        match found {
            Some(i) => {
                st.used[i] = true;
                while st.next < st.used.len() && st.used[st.next] {
                    st.next += 1;
                }
                st.matched += 1;
                Ok(i)
            }
            None => {
                let expected = match self.mode {
                    MatchMode::Strict => self.exchanges.get(st.next),
                    MatchMode::ByCommand => (0..self.exchanges.len())
                        .find(|&i| !st.used[i] && self.exchanges[i].command == command)
                        .map(|i| &self.exchanges[i]),
                }
                .map(|x| (x.command.clone(), x.arguments.clone(), x.fds));
                let reason = match &expected {
                    Some((c, a, n))
                        if c == command && same_arguments(a, arguments) && *n != fds =>
                    {
                        format!("expected {n} file descriptor(s) with it, got {fds}")
                    }
                    Some((c, a, _)) if self.mode == MatchMode::Strict => {
                        format!("expected {c} with arguments {a}")
                    }
                    Some((c, a, _)) => {
                        format!("no unused exchange matches; an unused {c} has arguments {a}")
                    }
                    None if self.mode == MatchMode::Strict => {
                        "expected nothing more: the recording has ended".into()
                    }
                    None => format!("no unused exchange for {command}"),
                };
                let m = Mismatch {
                    command: command.to_owned(),
                    arguments: arguments.clone(),
                    expected: expected.map(|(c, a, _)| (c, a)),
                    reason,
                };
                st.mismatched.push(m.clone());
                Err(Box::new(m))
            }
        }
    }
}

/// Whether a request's arguments are those recorded. A value the proxy's
/// policy redacted when recording (`"<redacted>"`) stands for any value.
fn same_arguments(recorded: &Value, got: &Value) -> bool {
    match (recorded, got) {
        (Value::String(r), _) if r == crate::transcript::REDACTED => true,
        (Value::Object(r), Value::Object(g)) => {
            r.len() == g.len()
                && r.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|w| same_arguments(v, w)))
        }
        (Value::Array(r), Value::Array(g)) => {
            r.len() == g.len() && r.iter().zip(g).all(|(v, w)| same_arguments(v, w))
        }
        _ => recorded == got,
    }
}

/// What commands a replay has: with a schema, the schema's and the
/// recorded ones (a recorded answer to a name QEMU lacked is replayed
/// too); so other unknown names get QEMU's CommandNotFound. Without one,
/// every name, so that any request reaches the matcher and a stray one is
/// reported. A name the schema does not give claims oob support, so that
/// the matcher, not the session, answers it either way.
struct ReplayCommands {
    recorded: HashMap<String, bool>,
    schema: Option<Schema>,
}

#[derive(Clone)]
struct Commands(Arc<ReplayCommands>);

impl CommandSet for Commands {
    fn allow_oob(&self, command: &str) -> Option<bool> {
        match &self.0.schema {
            Some(s) => s
                .allow_oob(command)
                .or_else(|| self.0.recorded.contains_key(command).then_some(true)),
            None => Some(self.0.recorded.get(command).copied().unwrap_or(true)),
        }
    }
}

/// One client of the replay.
struct Connection(Arc<Shared>);

impl Backend for Connection {
    type Commands = Commands;
    type Events = BroadcastEvents;

    fn session(&self) -> Session<Self::Commands> {
        Session::new(self.0.config.clone(), self.0.commands.clone())
    }

    fn events(&self) -> BroadcastEvents {
        BroadcastEvents(self.0.events.subscribe())
    }

    fn start(&self, call: Call, fds: Vec<OwnedFd>, _close: Arc<AtomicBool>) -> CallFuture {
        let shared = self.0.clone();
        shared.flush_after();
        let arguments = QObject::Dict(call.arguments.clone()).to_value();
        let index = match shared.take(&call.command, &arguments, fds.len()) {
            Ok(i) => i,
            Err(m) => {
                // With a schema, what QEMU would refuse gets QEMU's text.
                let checked = shared.schema.as_ref().map(|s| {
                    qmp_server::schema::check_arguments(s, &call.command, &call.arguments)
                });
                let failure = match checked {
                    Some(Err(e)) => e,
                    _ => QmpError::generic(format!(
                        "replay: unexpected {} {}: {}",
                        m.command, m.arguments, m.reason
                    )),
                };
                return Box::pin(async move { Err(failure) });
            }
        };
        Box::pin(async move {
            let x = &shared.exchanges[index];
            let mut waited = Duration::ZERO;
            for (offset, event) in &x.before {
                if shared.realtime && *offset > waited {
                    tokio::time::sleep(*offset - waited).await;
                    waited = *offset;
                }
                let _ = shared.events.send(stamped(event));
            }
            if shared.realtime && x.took > waited {
                tokio::time::sleep(x.took - waited).await;
            }
            if !x.after.is_empty() {
                shared.schedule_after(&x.after);
            }
            match &x.reply {
                Ok(v) => Ok(Some(QObject::from_qemu_output(v))),
                Err(e) => Err(e.clone()),
            }
        })
    }

    fn ended(&self) -> impl Future<Output = Ending> + Send + 'static {
        let mut stop = self.0.stop.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            // stopping is stopping: a command replayed in real time may be
            // waiting out a recorded minute
            Ending::Now
        }
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("exchanges", &self.exchanges.len())
            .field("mode", &self.mode)
            .field("realtime", &self.realtime)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ReplayServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_that_jump_by_1e20_seconds_load_without_a_panic() {
        let text = [
            r#"{"qmp-transcript": 1, "greeting": {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0}, "package": ""}, "capabilities": []}}}"#,
            r#"{"t": 0, "client": 1, "dir": "request", "msg": {"execute": "stop", "id": 1}}"#,
            r#"{"t": 1e20, "dir": "event", "msg": {"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}}}"#,
            r#"{"t": 2e20, "client": 1, "dir": "reply", "msg": {"return": {}, "id": 1}}"#,
        ]
        .join("\n");
        let t: Transcript = text.parse().unwrap();
        let _ = Replay::from_transcript(&t);
    }
}
