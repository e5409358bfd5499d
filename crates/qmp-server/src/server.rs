//! The tokio server: a command registry, listeners and event broadcast.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_server::{QObject, Server};
//! let server = Server::builder()
//!     .version(10, 0, 2, "demo")
//!     .command("query-name", |_req| async { Ok(Some(QObject::Dict(Default::default()))) })
//!     .build();
//! let dir = tempfile::tempdir()?;
//! let address = dir.path().join("qmp.sock").display().to_string();
//! let listener = server.bind(&address.parse()?).await?;
//! tokio::spawn({
//!     let server = server.clone();
//!     async move { server.serve(listener).await }
//! });
//! let client = qmp_client::Client::connect(&address).await?;
//! assert_eq!(client.execute("query-name", serde_json::json!({})).await?, serde_json::json!({}));
//! assert_eq!(client.greeting().unwrap().version.package, "demo");
//! # Ok(()) }
//! ```

use crate::connection::{self, Backend, BroadcastEvents, CallFuture, Ending, Event, HandlerResult};
use crate::declare::{schema_info, CommandDecl, Field, Ty};
use crate::schema::Schema;
use crate::session::{Call, CommandSet, QmpError, Session, SessionConfig};
use qmp_proto::qemu_json::{QDict, QObject};
use qmp_proto::Address;
use qmp_proto::Version;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// What a handler gets: the request, its arguments as QEMU holds them,
/// the descriptors passed with it. (The same request as a message is
/// [`qmp_proto::Request`].)
#[derive(Debug)]
pub struct Request {
    /// The command's name.
    pub command: String,
    /// `{}` when the client sent none.
    pub arguments: QDict,
    /// File descriptors the client passed (SCM_RIGHTS) since its last
    /// command, oldest first, for `getfd`-like commands.
    pub fds: Vec<OwnedFd>,
    /// Close the connection once this command's reply is sent (`quit`).
    pub close_after_reply: Arc<std::sync::atomic::AtomicBool>,
    /// The server running the handler.
    server: Server,
}

impl Request {
    /// The server running this handler: to raise events (an event a
    /// command causes, raised before the handler returns, reaches the
    /// client before the reply, rule P4), or to shut down.
    ///
    /// ```
    /// use qmp_server::Server;
    /// let server = Server::builder()
    ///     .command("stop", |req| async move {
    ///         req.server().emit("STOP", None);
    ///         Ok(None)
    ///     })
    ///     .build();
    /// # drop(server);
    /// ```
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Asks for the connection to close after the reply (rule P5).
    pub fn close_after_reply(&self) {
        self.close_after_reply
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Command {
    handler: Handler,
    allow_oob: bool,
}

pub(crate) struct Inner {
    pub(crate) config: SessionConfig,
    commands: HashMap<String, Command>,
    /// Names in registration order, for `query-commands`.
    order: Vec<String>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) shutdown: watch::Sender<bool>,
    one_at_a_time: bool,
    socket_mode: u32,
    sessions: Mutex<usize>,
    throttle_period: std::time::Duration,
    input_budget: Option<usize>,
    /// Argument checker for the commands that declared their types.
    checker: Schema,
    declared: std::collections::HashSet<String>,
    /// Open rate-limit windows, by event name and key, with the event
    /// waiting for the window's end.
    throttled: Mutex<HashMap<(String, String), Option<Event>>>,
}

/// The events QEMU rate-limits (rule E4).
pub const QEMU_THROTTLED_EVENTS: &[&str] = &[
    "RTC_CHANGE",
    "BLOCK_IO_ERROR",
    "WATCHDOG",
    "BALLOON_CHANGE",
    "QUORUM_REPORT_BAD",
    "QUORUM_FAILURE",
    "VSERPORT_CHANGE",
    "MEMORY_DEVICE_SIZE_CHANGE",
    "HV_BALLOON_STATUS_REPORT",
];

/// The command table a session sees.
pub(crate) struct Registry(pub(crate) Arc<Inner>);

/// A connection served by the server's own handlers.
struct Local(Arc<Inner>);

impl Backend for Local {
    type Commands = Registry;
    type Events = BroadcastEvents;

    fn session(&self) -> Session<Registry> {
        Session::new(self.0.config.clone(), Registry(self.0.clone()))
    }

    fn events(&self) -> BroadcastEvents {
        BroadcastEvents(self.0.events.subscribe())
    }

    fn input_budget(&self) -> Option<usize> {
        self.0.input_budget
    }

    fn start(&self, call: Call, fds: Vec<OwnedFd>, close: Arc<AtomicBool>) -> CallFuture {
        let checked = self.0.check(&call.command, &call.arguments);
        let handler = self.0.handler(&call.command);
        let request = Request {
            command: call.command,
            arguments: call.arguments,
            fds,
            close_after_reply: close,
            server: Server {
                inner: self.0.clone(),
            },
        };
        match (checked, handler) {
            (Err(e), _) => Box::pin(async move { Err(e) }),
            (Ok(()), Some(handler)) => handler(request),
            // The session only hands out registered commands.
            (Ok(()), None) => {
                Box::pin(async { Err(QmpError::generic("internal error: no handler")) })
            }
        }
    }

    fn ended(&self) -> impl Future<Output = Ending> + Send + 'static {
        let mut stop = self.0.shutdown.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            Ending::Drain
        }
    }
}

impl CommandSet for Registry {
    fn allow_oob(&self, command: &str) -> Option<bool> {
        self.0.commands.get(command).map(|c| c.allow_oob)
    }
}

impl Inner {
    pub(crate) fn handler(&self, command: &str) -> Option<Handler> {
        self.commands.get(command).map(|c| c.handler.clone())
    }

    /// Checks a declared command's arguments.
    pub(crate) fn check(&self, command: &str, args: &QDict) -> Result<(), QmpError> {
        if self.declared.contains(command) {
            crate::schema::check_arguments(&self.checker, command, args)
        } else {
            Ok(())
        }
    }
}

/// The built-in commands' types, as QEMU declares them.
fn builtin_declarations() -> Vec<(&'static str, Vec<Field>, Option<Ty>)> {
    let version = Ty::Object(vec![
        Field::required(
            "qemu",
            Ty::Object(vec![
                Field::required("major", Ty::Int),
                Field::required("minor", Ty::Int),
                Field::required("micro", Ty::Int),
            ]),
        ),
        Field::required("package", Ty::Str),
    ]);
    vec![
        (
            "qmp_capabilities",
            vec![Field::optional(
                "enable",
                Ty::list(Ty::enumeration(&["oob"])),
            )],
            None,
        ),
        ("query-version", vec![], Some(version)),
        (
            "query-commands",
            vec![],
            Some(Ty::list(Ty::Object(vec![Field::required("name", Ty::Str)]))),
        ),
        ("query-qmp-schema", vec![], Some(Ty::list(Ty::Any))),
    ]
}

/// Builds a [`Server`].
pub struct ServerBuilder {
    version: Version,
    offer_oob: bool,
    pretty: bool,
    one_at_a_time: bool,
    socket_mode: u32,
    input_budget: Option<usize>,
    commands: HashMap<String, Command>,
    order: Vec<String>,
    /// `query-commands` order given by the embedder, if any.
    listed_order: Option<Vec<String>>,
    throttle_period: std::time::Duration,
    declarations: HashMap<String, (Vec<Field>, Option<Ty>)>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// A builder for a server with no commands but the built-in ones
    /// (`qmp_capabilities`, `query-version`, `query-commands`,
    /// `query-qmp-schema`), whose greeting says QEMU 10.0.0.
    pub fn new() -> Self {
        ServerBuilder {
            version: Version::new(10, 0, 0, ""),
            offer_oob: true,
            pretty: false,
            one_at_a_time: false,
            socket_mode: 0o600,
            input_budget: None,
            commands: HashMap::new(),
            order: Vec::new(),
            listed_order: None,
            throttle_period: std::time::Duration::from_secs(1),
            declarations: HashMap::new(),
        }
    }

    /// `query-commands` lists the commands in this order (a real QEMU's,
    /// for a mock); commands not named follow in registration order.
    /// Without it, `qmp_capabilities` comes first, then registration order.
    pub fn list_commands_in(mut self, order: Vec<String>) -> Self {
        self.listed_order = Some(order);
        self
    }

    /// The version in the greeting and `query-version`; it also picks how
    /// malformed input is answered (see [`SessionConfig::version`]).
    pub fn version(mut self, major: u64, minor: u64, micro: u64, package: &str) -> Self {
        self.version = Version::new(major, minor, micro, package);
        self
    }

    /// Whether to offer `oob` (default true, as QEMU's socket monitors do).
    pub fn offer_oob(mut self, offer: bool) -> Self {
        self.offer_oob = offer;
        self
    }

    /// Pretty output, as a monitor with `pretty=on`.
    pub fn pretty(mut self, pretty: bool) -> Self {
        self.pretty = pretty;
        self
    }

    /// Serve one client at a time, as a QEMU monitor does (rule M1): a
    /// second client waits, unanswered, until the first leaves.
    pub fn one_client_at_a_time(mut self, yes: bool) -> Self {
        self.one_at_a_time = yes;
        self
    }

    /// Permissions of unix socket files (default 0600).
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode;
        self
    }

    /// Declares a command's argument members and return type. Its
    /// arguments are then checked, with QEMU's texts, before its handler
    /// runs, and `query-qmp-schema` describes it. Undeclared commands are
    /// listed there without arguments and are not checked.
    pub fn declare(mut self, name: &str, args: Vec<Field>, returns: Option<Ty>) -> Self {
        self.declarations.insert(name.to_owned(), (args, returns));
        self
    }

    /// Memory a client's input may hold (the message being read and its
    /// queued requests, about) before the client is disconnected, with the
    /// reason logged. Without one, only QEMU's own limits apply, as in
    /// QEMU (a message of up to 64 MiB of tokens, 2 Mi tokens: a few
    /// hundred MiB at worst per client); set one when clients may be
    /// hostile and none sends large requests.
    ///
    /// ```
    /// let server = qmp_server::Server::builder().input_budget(8 << 20).build();
    /// # drop(server);
    /// ```
    pub fn input_budget(mut self, bytes: usize) -> Self {
        self.input_budget = Some(bytes);
        self
    }

    /// The window of [`Server::emit_throttled`] (QEMU's is one second).
    pub fn event_throttle_period(mut self, period: std::time::Duration) -> Self {
        self.throttle_period = period;
        self
    }

    fn add(mut self, name: &str, allow_oob: bool, handler: Handler) -> Self {
        if self
            .commands
            .insert(name.to_owned(), Command { handler, allow_oob })
            .is_none()
        {
            self.order.push(name.to_owned());
        }
        self
    }

    /// Registers an in-band command.
    pub fn command<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add(name, false, Arc::new(move |r| Box::pin(f(r))))
    }

    /// Registers a command that may also run out of band (`exec-oob`).
    pub fn oob_command<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.add(name, true, Arc::new(move |r| Box::pin(f(r))))
    }

    /// Registers a command with serde-typed arguments and result. Arguments
    /// that do not fit `A` are refused with a GenericError naming serde's
    /// complaint (checking them with QEMU's exact texts needs a schema).
    pub fn typed<A, R, F, Fut>(self, name: &str, f: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, QmpError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.command(name, move |req: Request| {
            let f = f.clone();
            async move {
                let args = QObject::Dict(req.arguments).to_value();
                let args: A =
                    serde_json::from_value(args).map_err(|e| QmpError::generic(e.to_string()))?;
                let ret = f(args).await?;
                let ret =
                    serde_json::to_value(ret).map_err(|e| QmpError::generic(e.to_string()))?;
                Ok(Some(QObject::from(&ret)))
            }
        })
    }

    /// The server, ready to bind and serve.
    pub fn build(self) -> Server {
        let version = self.version.clone();
        let mut b = self;
        // Built-ins, as QEMU has them. qmp_capabilities is the session's.
        let v = version.to_qobject();
        b = b.command("query-version", move |req| {
            let result = no_arguments(&req).map(|()| Some(v.clone()));
            async move { result }
        });
        // The embedder's own query-qmp-schema (the mock's) wins.
        let own_schema = b.commands.contains_key("query-qmp-schema");
        let mut names = vec!["qmp_capabilities".to_owned()];
        names.extend(b.order.iter().filter(|n| *n != "qmp_capabilities").cloned());
        for builtin in ["query-commands", "query-qmp-schema"] {
            if !names.iter().any(|n| n == builtin) {
                names.push(builtin.to_owned());
            }
        }
        if let Some(listed) = b.listed_order.take() {
            let mut ordered: Vec<String> =
                listed.into_iter().filter(|n| names.contains(n)).collect();
            let rest: Vec<String> = names
                .iter()
                .filter(|n| !ordered.contains(n))
                .cloned()
                .collect();
            ordered.extend(rest);
            names = ordered;
        }
        let list = QObject::List(
            names
                .iter()
                .map(|n| {
                    let mut d = QDict::new();
                    d.insert("name", QObject::String(n.clone()));
                    QObject::Dict(d)
                })
                .collect(),
        );
        b = b.command("query-commands", move |req| {
            let result = no_arguments(&req).map(|()| Some(list.clone()));
            async move { result }
        });
        // Declarations: the built-ins', then the embedder's, in command order.
        for (name, args, returns) in builtin_declarations() {
            b.declarations
                .entry(name.to_owned())
                .or_insert((args, returns));
        }
        let decl = |name: &String| {
            let (args, returns) = b.declarations.get(name).cloned().unwrap_or_default();
            CommandDecl {
                name: name.clone(),
                args,
                returns,
                allow_oob: b.commands.get(name).is_some_and(|c| c.allow_oob),
            }
        };
        let all: Vec<CommandDecl> = names.iter().map(decl).collect();
        let declared: Vec<CommandDecl> = names
            .iter()
            .filter(|n| b.declarations.contains_key(*n))
            .map(decl)
            .collect();
        let published = schema_info(&all, false);
        let checker = Schema::from_json(&schema_info(&declared, true).to_value())
            .expect("generated schemas are well-formed");
        if !own_schema {
            b = b.command("query-qmp-schema", move |req| {
                let result = no_arguments(&req).map(|()| Some(published.clone()));
                async move { result }
            });
        }
        let (events, _) = broadcast::channel(1024);
        Server {
            inner: Arc::new(Inner {
                config: SessionConfig {
                    version,
                    offer_oob: b.offer_oob,
                    pretty: b.pretty,
                },
                commands: b.commands,
                order: b.order,
                events,
                shutdown: watch::channel(false).0,
                one_at_a_time: b.one_at_a_time,
                socket_mode: b.socket_mode,
                sessions: Mutex::new(0),
                throttle_period: b.throttle_period,
                input_budget: b.input_budget,
                throttled: Mutex::new(HashMap::new()),
                declared: b.declarations.keys().cloned().collect(),
                checker,
            }),
        }
    }
}

/// QEMU's check for a command without arguments: the first extra one is
/// named unexpected.
fn no_arguments(req: &Request) -> Result<(), QmpError> {
    match qmp_proto::qemu_json::first_unexpected(&req.arguments, &[]) {
        Some(extra) => Err(QmpError::generic(format!(
            "Parameter '{extra}' is unexpected"
        ))),
        None => Ok(()),
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// A unix socket, and its path (removed when the listener is dropped).
    Unix(tokio::net::UnixListener, PathBuf),
    /// A TCP socket.
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    /// Binds a unix socket, created with permissions `mode`, or a TCP
    /// address.
    ///
    /// The socket never exists at `path` with wider permissions than 0600
    /// or `mode`, whatever the umask: it is bound under umask 0177, then
    /// given `mode`.
    pub async fn bind(address: &Address, mode: u32) -> io::Result<Listener> {
        match address {
            Address::Unix(path) => {
                let l = bind_privately(path, mode)?;
                Ok(Listener::Unix(l, path.clone()))
            }
            Address::Tcp(host, port) => Ok(Listener::Tcp(
                tokio::net::TcpListener::bind((host.as_str(), *port)).await?,
            )),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot listen on {other}"),
            )),
        }
    }

    /// The next client.
    pub async fn accept(&self) -> io::Result<connection::Stream> {
        match self {
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| connection::Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                connection::Stream::Tcp(s)
            }),
        }
    }

    /// The next client, waiting out failures: an accept that fails (out
    /// of descriptors, EMFILE, say) is logged and retried after a pause
    /// that doubles up to a second, rather than in a busy loop. The one
    /// accept loop of the server, the proxy and the replay.
    pub async fn next_client(&self) -> connection::Stream {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.accept().await {
                Ok(stream) => return stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}; trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// The TCP port actually bound (for `host:0`).
    pub fn port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }
}

/// See [`Listener::bind`]. The socket is bound, given `mode`, and only
/// then listens: no client can connect while the permissions are still
/// the umask's.
fn bind_privately(path: &std::path::Path, mode: u32) -> io::Result<tokio::net::UnixListener> {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    use nix::sys::stat::{umask, Mode};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    // umask is the process's: one bind at a time changes it, and restores
    // it at once. Files other threads create meanwhile come out more
    // private, never less.
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    {
        let _one = UMASK.lock().unwrap_or_else(|e| e.into_inner());
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
        umask(old);
        bound?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    socket::listen(&fd, Backlog::new(1024)?)?;
    tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A QMP server. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

impl Server {
    /// A builder (see [`ServerBuilder`]).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// Registered command names, in registration order.
    pub fn command_names(&self) -> &[String] {
        &self.inner.order
    }

    /// Binds a unix socket (created with the configured mode, 0600 by
    /// default) or a TCP address.
    pub async fn bind(&self, address: &Address) -> io::Result<Listener> {
        Listener::bind(address, self.inner.socket_mode).await
    }

    /// Accepts clients until [`shutdown`](Self::shutdown), then waits for
    /// the sessions to finish what they have read.
    pub async fn serve(&self, listener: Listener) {
        let mut stop = self.inner.shutdown.subscribe();
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let stream = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                // sessions are reaped as they end: a server that runs for
                // months keeps nothing of the clients it had
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                s = listener.next_client() => s,
            };
            let server = self.clone();
            let session = sessions.spawn(async move { server.serve_connection(stream).await });
            if self.inner.one_at_a_time {
                // The next client waits in the kernel's backlog, as with
                // QEMU, until this one is gone.
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = sessions.join_next() => {}
                }
                let _ = session;
            }
        }
        drop(listener);
        while sessions.join_next().await.is_some() {}
    }

    /// Serves one connected stream until it closes.
    pub async fn serve_connection(&self, stream: connection::Stream) {
        *self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += 1;
        connection::run(Local(self.inner.clone()), stream).await;
        *self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) -= 1;
    }

    /// Number of connected clients.
    pub fn session_count(&self) -> usize {
        *self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sends an event to every negotiated session, stamped with the wall
    /// clock now (rules E1–E3).
    pub fn emit(&self, name: &str, data: Option<QObject>) {
        let _ = self.inner.events.send(Event::now(name, data));
    }

    /// Sends an event rate-limited as QEMU limits the events in
    /// [`QEMU_THROTTLED_EVENTS`] (rule E4), per `name` and `key` (QEMU keys
    /// some events by a data member, such as a device id): the first at
    /// once; later ones within the window replace each other, and the last
    /// is sent when the window ends, with its own timestamp, opening a new
    /// window. Must be called within a tokio runtime.
    pub fn emit_throttled(&self, name: &str, key: &str, data: Option<QObject>) {
        let event = Event::now(name, data);
        let id = (name.to_owned(), key.to_owned());
        {
            let mut open = self
                .inner
                .throttled
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(waiting) = open.get_mut(&id) {
                *waiting = Some(event);
                return;
            }
            open.insert(id.clone(), None);
        }
        let _ = self.inner.events.send(event);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(inner.throttle_period).await;
                let mut open = inner.throttled.lock().unwrap_or_else(|e| e.into_inner());
                match open.get_mut(&id).and_then(Option::take) {
                    Some(last) => {
                        let _ = inner.events.send(last);
                    }
                    None => {
                        open.remove(&id);
                        return;
                    }
                }
            }
        });
    }

    /// Stops accepting; sessions answer what they have read, then close.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("version", &self.version)
            .field("commands", &self.order)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("version", &self.inner.config.version)
            .field("commands", &self.inner.order)
            .finish_non_exhaustive()
    }
}
