//! The async client: one connection, any number of concurrent callers.
//!
//! A call encodes its request, registers a waiter under its id, queues the
//! bytes for the writer task and waits; the router task completes the
//! waiter when the reply with that id arrives. Nothing here blocks on
//! another caller, and nothing a caller does (time out, be cancelled) can
//! make a reply reach the wrong caller.

use crate::error::{Disconnect, Error, Result};
use crate::events::StreamEnd;
use crate::events::{EventFilter, EventStream, DEFAULT_EVENT_BUFFER};
use crate::router::{Shared, Waiter};
use crate::session::{Outgoing, Ticket};
use crate::writer::{self, Sink, SinkClosed};
use qmp_proto::{Event, Greeting, Response};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use tokio::task::AbortHandle;

/// A QMP connection. Cheap to clone; all clones share the connection,
/// which closes when the last one is dropped (or on [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "qemu",
                &self.inner.greeting.as_ref().map(|g| &g.version.qemu),
            )
            .field("oob", &self.inner.oob)
            .field("fd_passing", &self.inner.fd_passing)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    shared: Arc<Shared>,
    sink: Arc<Sink>,
    greeting: Option<Greeting>,
    oob: bool,
    fd_passing: bool,
    default_timeout: Option<Duration>,
    router: AbortHandle,
    /// Guest agent mode: held while a `guest-sync-delimited` runs.
    agent: Option<tokio::sync::Mutex<()>>,
    /// What the server has, read on the first typed call (see `typed`).
    pub(crate) schema: tokio::sync::OnceCell<Option<Arc<crate::typed::Known>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer task finishes what is queued, half-closes and ends;
        // the reader is stopped here.
        self.sink.shutdown(None);
        self.router.abort();
        self.shared.close(Disconnect::Closed);
    }
}

/// One request with every option: caller-chosen id, `exec-oob`, its own
/// timeout, file descriptors to pass.
#[derive(Debug)]
pub struct Call {
    command: String,
    arguments: Option<Value>,
    id: Option<Value>,
    oob: bool,
    timeout: Option<Option<Duration>>,
    fds: Vec<OwnedFd>,
}

impl Call {
    /// A call of `command`, without arguments, in band, with the client's
    /// own id and its default timeout.
    pub fn new(command: impl Into<String>) -> Call {
        Call {
            command: command.into(),
            arguments: None,
            id: None,
            oob: false,
            timeout: None,
            fds: Vec::new(),
        }
    }

    /// Arguments as a JSON object (`null` or `{}` send none).
    pub fn arguments(mut self, arguments: Value) -> Call {
        self.arguments = Some(arguments);
        self
    }

    /// Sets one argument.
    pub fn arg(mut self, name: &str, value: impl Into<Value>) -> Call {
        let args = self
            .arguments
            .get_or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(map) = args {
            map.insert(name.to_owned(), value.into());
        }
        self
    }

    /// An id of any JSON type instead of an automatic one. It must not
    /// equal the id of a call still waiting for its reply.
    pub fn id(mut self, id: impl Into<Value>) -> Call {
        self.id = Some(id.into());
        self
    }

    /// Send as `exec-oob` (needs oob negotiated).
    pub fn out_of_band(mut self) -> Call {
        self.oob = true;
        self
    }

    /// This call's timeout; `None` waits as long as it takes.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Call {
        self.timeout = Some(timeout);
        self
    }

    /// A file descriptor to pass with the request (SCM_RIGHTS), as
    /// `getfd` and `add-fd` expect. It is closed here once sent; the
    /// server holds its own copy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qmp_client::{Call, Client};
    /// use std::os::fd::OwnedFd;
    ///
    /// let demo = qmp_server::demo::start().await?; // stands in for QEMU
    /// let client = Client::connect(demo.address()).await?;
    /// assert!(client.can_pass_fds()); // a unix socket
    /// let file = std::fs::File::open("/dev/null")?;
    /// client
    ///     .call(Call::new("getfd").arg("fdname", "log").fd(OwnedFd::from(file)))
    ///     .await?;
    /// client.call(Call::new("closefd").arg("fdname", "log")).await?;
    /// # Ok(()) }
    /// ```
    pub fn fd(mut self, fd: OwnedFd) -> Call {
        self.fds.push(fd);
        self
    }
}

impl Client {
    pub(crate) fn start(
        shared: Arc<Shared>,
        sink: Arc<Sink>,
        router: AbortHandle,
        greeting: Option<Greeting>,
        fd_passing: bool,
        default_timeout: Option<Duration>,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                shared,
                sink,
                greeting,
                oob: false,
                fd_passing,
                default_timeout,
                router,
                agent: None,
                schema: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Turns on guest agent mode. Only called while opening, while this
    /// is the only handle.
    pub(crate) fn set_agent(&mut self) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.agent = Some(tokio::sync::Mutex::new(()));
        }
    }

    /// Whether this client talks to a guest agent
    /// ([`ClientBuilder::guest_agent`](crate::ClientBuilder::guest_agent)).
    pub fn is_guest_agent(&self) -> bool {
        self.inner.agent.is_some()
    }

    /// Resynchronizes with the guest agent: sends the 0xFF byte (which
    /// makes the agent drop a request half received), then
    /// `guest-sync-delimited` with a random id, and discards everything
    /// received until the 0xFF that precedes the reply carrying that id.
    /// A guest agent client does this when it connects, and before the
    /// next call after a call timed out or bytes came that were no
    /// message; call it yourself after the guest restarted its agent.
    /// An error for a client that is not a guest agent's.
    pub async fn resync(&self) -> Result<()> {
        let Some(lock) = &self.inner.agent else {
            return Err(Error::Handshake(
                "resync is for guest agent connections (ClientBuilder::guest_agent)".into(),
            ));
        };
        let _one = lock.lock().await;
        let token = random_token();
        let id = Value::String(format!("sync-{token}"));
        {
            let mut st = self.inner.shared.lock();
            st.syncing = Some(id.clone());
            st.needs_sync = true;
        }
        // The marker, then the request: the writer keeps their order.
        let _ = self
            .inner
            .sink
            .send(writer::Outgoing::Frame(vec![0xFF]), false);
        let request = Outgoing::new("guest-sync-delimited").id(id);
        let arguments = serde_json::json!({ "id": token });
        let timeout = Some(self.inner.default_timeout.or(Some(SYNC_TIMEOUT)));
        let result = self
            .exchange(request.arguments(&arguments), timeout, None)
            .await;
        let mut st = self.inner.shared.lock();
        st.syncing = None;
        match result {
            Ok(v) if v == serde_json::json!(token) => {
                st.needs_sync = false;
                Ok(())
            }
            Ok(other) => Err(Error::Handshake(format!(
                "guest-sync-delimited returned {other}, not the {token} it was sent"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Records that oob was negotiated. Only called during the handshake,
    /// while this is the only handle.
    pub(crate) fn set_oob(&mut self, oob: bool) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.oob = oob;
        }
    }

    /// The server's greeting (`None` for a server that sends none, such as
    /// the guest agent).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.inner.greeting.as_ref()
    }

    /// Whether oob was negotiated (`exec-oob` allowed).
    pub fn oob_enabled(&self) -> bool {
        self.inner.oob
    }

    /// Whether file descriptors can be passed on this connection.
    pub fn can_pass_fds(&self) -> bool {
        self.inner.fd_passing
    }

    /// Runs a command and returns its `return` value. `arguments` is a JSON
    /// object, or `Value::Null` for none.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value> {
        let request = Outgoing::new(command).arguments(&arguments);
        self.roundtrip(request, None, None).await
    }

    /// Runs a command with typed arguments and a typed result. The
    /// arguments are serialized straight to the wire.
    pub async fn execute_typed<A, R>(&self, command: &str, arguments: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let request = Outgoing::new(command).arguments(arguments);
        let v = self.roundtrip(request, None, None).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Runs a fully specified [`Call`].
    pub async fn call(&self, call: Call) -> Result<Value> {
        self.call_scoped(call, None).await
    }

    /// Runs `call` and streams the events that pass `filter` from now
    /// until its reply: the stream ends right after the last such event
    /// the server sent before the reply. Since QEMU sends the events a
    /// command causes before its reply (rule P4), the stream holds the
    /// command's events in their order relative to the reply, however the
    /// reads were batched; a program can print them as they come and
    /// still put each one before or after the reply where it belongs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qmp_client::{Call, Client, EventFilter};
    ///
    /// let demo = qmp_server::demo::start().await?; // stands in for QEMU
    /// let client = Client::connect(demo.address()).await?;
    /// let (mut events, reply) = client.call_with_events(Call::new("cont"), EventFilter::all());
    /// reply.await?;
    /// let mut before_the_reply = Vec::new();
    /// while let Some(e) = events.next().await {
    ///     before_the_reply.push(e?.name.clone());
    /// }
    /// assert_eq!(before_the_reply, ["RESUME"]);
    /// # Ok(()) }
    /// ```
    pub fn call_with_events(
        &self,
        call: Call,
        filter: EventFilter,
    ) -> (
        EventStream,
        impl std::future::Future<Output = Result<Value>> + Send + '_,
    ) {
        // Subscribed now, before anything is sent.
        let (sub, stream) = crate::events::Subscriber::new(filter, DEFAULT_EVENT_BUFFER);
        let end = sub.end_handle();
        self.inner.shared.add_subscriber(sub);
        (stream, self.call_scoped(call, Some(end)))
    }

    async fn call_scoped(&self, call: Call, events: Option<StreamEnd>) -> Result<Value> {
        let Call {
            command,
            arguments,
            id,
            oob,
            timeout,
            fds,
        } = call;
        let mut request = Outgoing::new(&command).out_of_band(oob).fds(fds);
        if let Some(id) = id {
            request = request.id(id);
        }
        let request = request.arguments_or_none(arguments.as_ref());
        self.roundtrip(request, timeout, events).await
    }

    /// Subscribes to events that pass `filter`, with the default buffer.
    pub fn events(&self, filter: EventFilter) -> EventStream {
        self.events_with_capacity(filter, DEFAULT_EVENT_BUFFER)
    }

    /// Subscribes with a buffer of `capacity` events.
    pub fn events_with_capacity(&self, filter: EventFilter, capacity: usize) -> EventStream {
        self.inner.shared.subscribe(filter, capacity)
    }

    /// Runs a command and waits for the first event it causes that passes
    /// `filter`. The subscription is made before the command is sent, so
    /// an event that arrives before the reply (as QEMU sends them, rule P4)
    /// is not missed. The wait is bounded by the default timeout.
    pub async fn execute_and_wait(
        &self,
        command: &str,
        arguments: Value,
        filter: EventFilter,
    ) -> Result<(Value, Arc<Event>)> {
        let mut events = self.events(filter);
        let ret = self.execute(command, arguments).await?;
        let wait = async {
            loop {
                match events.next().await {
                    Some(Ok(e)) => return Ok(e),
                    // Only matching events are buffered, so the ones kept
                    // after a lag still match.
                    Some(Err(_lagged)) => continue,
                    None => return Err(self.inner.shared.disconnected()),
                }
            }
        };
        let event = match self.inner.default_timeout {
            Some(t) => tokio::time::timeout(t, wait)
                .await
                .map_err(|_| Error::Timeout {
                    command: format!("{command} (waiting for its event)"),
                    timeout: t,
                })??,
            None => wait.await?,
        };
        Ok((ret, event))
    }

    /// Replies that carry no id, such as QEMU's answer to a request it
    /// could not parse. They cannot be matched to a caller, so they are
    /// reported here (and logged) instead of tearing the session down.
    pub fn unsolicited(&self) -> broadcast::Receiver<Response> {
        self.inner.shared.unsolicited()
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed_watch().borrow().is_some()
    }

    /// Waits until the connection is gone and tells why.
    pub async fn disconnected(&self) -> Disconnect {
        let mut w = self.inner.shared.closed_watch();
        let reason = match w.wait_for(|c| c.is_some()).await {
            Ok(c) => c.clone(),
            Err(_) => None,
        };
        reason.unwrap_or(Disconnect::Closed)
    }

    /// Closes gracefully: no new calls are accepted, calls already made
    /// get their replies, then the socket is half-closed and the server
    /// given a moment to close its side. Bounded by `grace`; what is still
    /// pending then fails with [`Disconnect::Closed`].
    ///
    /// It waits for the replies before half-closing because QEMU does not
    /// reliably answer what it has read once it sees EOF: QEMU 7.2 was seen
    /// to drop a request queued just before the half-close.
    pub async fn close_with_grace(&self, grace: Duration) {
        let shared = &self.inner.shared;
        shared.lock().closing = true;
        let drain = async {
            loop {
                let progress = shared.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if shared.idle() {
                    break;
                }
                progress.await;
            }
            let (done_tx, done_rx) = oneshot::channel();
            self.inner.sink.shutdown(Some(done_tx));
            let _ = done_rx.await;
            self.disconnected().await;
        };
        let _ = tokio::time::timeout(grace, drain).await;
        self.inner.router.abort();
        shared.close(Disconnect::Closed);
    }

    /// [`close_with_grace`](Self::close_with_grace) with 5 seconds.
    pub async fn close(&self) {
        self.close_with_grace(Duration::from_secs(5)).await
    }

    /// One call; for the guest agent, synced first when needed, and
    /// marked for a sync if it times out (its reply may still come).
    async fn roundtrip<A: Serialize + ?Sized>(
        &self,
        request: Outgoing<'_, A>,
        timeout: Option<Option<Duration>>,
        events: Option<StreamEnd>,
    ) -> Result<Value> {
        if self.inner.agent.is_none() {
            return self.exchange(request, timeout, events).await;
        }
        if self.inner.shared.lock().needs_sync {
            self.resync().await?;
        }
        let result = self.exchange(request, timeout, events).await;
        if let Err(Error::Timeout { .. }) = &result {
            self.inner.shared.lock().needs_sync = true;
        }
        result
    }

    async fn exchange<A: Serialize + ?Sized>(
        &self,
        request: Outgoing<'_, A>,
        timeout: Option<Option<Duration>>,
        events: Option<StreamEnd>,
    ) -> Result<Value> {
        if request.oob && !self.inner.oob {
            return Err(Error::OobNotNegotiated);
        }
        if !request.fds.is_empty() && !self.inner.fd_passing {
            return Err(Error::FdPassingUnsupported);
        }
        let timeout = timeout.unwrap_or(self.inner.default_timeout);
        let command = request.command;
        let work = async {
            let (ticket, reply) = self.submit(request, events)?;
            let guard = GiveUpGuard {
                client: self,
                ticket: Some(ticket),
            };
            let result = match reply.await {
                Ok(result) => result,
                Err(_) => Err(self.inner.shared.disconnected()),
            };
            guard.disarm();
            result
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, work).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    command: command.to_owned(),
                    timeout: t,
                })
            }),
            None => work.await,
        }
    }

    /// Registers one request with the session and writes it (or leaves it
    /// queued in the session for a place in the in-band window), all
    /// without awaiting, so a cancelled caller can never leave a request
    /// half-registered.
    fn submit<A: Serialize + ?Sized>(
        &self,
        request: Outgoing<'_, A>,
        events: Option<StreamEnd>,
    ) -> Result<(Ticket, oneshot::Receiver<Result<Value>>)> {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter { tx, events };
        let shared = &self.inner.shared;
        let mut st = shared.lock();
        if let Some(reason) = &st.closed {
            return Err(Error::Disconnected(reason.clone()));
        }
        if st.closing {
            return Err(Error::Disconnected(Disconnect::Closed));
        }
        // Write directly only when no other caller waits for a reply;
        // otherwise let the writer task batch this with its neighbours.
        let direct = st.session.is_idle();
        let started = st.session.start(request, waiter)?;
        shared.started_call();
        let Some(t) = started.transmit else {
            return Ok((started.ticket, rx));
        };
        let out = writer::Outgoing::request(t);
        if let Err(SinkClosed(cause)) = self.inner.sink.send(out, direct) {
            st.session.abandon(&started.ticket);
            drop(st);
            if let Some(e) = cause {
                shared.close(Disconnect::Io(Arc::new(e)));
            }
            return Err(shared.disconnected());
        }
        Ok((started.ticket, rx))
    }
}

/// How long a sync waits for the agent when calls have no timeout.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// A number no earlier sync used: random, below 2^31 (the agent takes any
/// integer; small ones read well in logs).
fn random_token() -> u64 {
    use std::hash::BuildHasher;
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(n) & 0x7fff_ffff
}

/// Runs when a caller stops waiting before its reply came (timeout or
/// cancellation): the session forgets a request not yet sent, and frees
/// the window place of a sent one (see [`ClientSession::abandon`]), which
/// may let a queued request go.
///
/// [`ClientSession::abandon`]: crate::session::ClientSession::abandon
struct GiveUpGuard<'a> {
    client: &'a Client,
    ticket: Option<Ticket>,
}

impl GiveUpGuard<'_> {
    fn disarm(mut self) {
        self.ticket = None;
    }
}

impl Drop for GiveUpGuard<'_> {
    fn drop(&mut self) {
        let Some(ticket) = &self.ticket else { return };
        let inner = &self.client.inner;
        let mut st = inner.shared.lock();
        st.session.abandon(ticket);
        // The freed place may let a queued request go.
        let failed = inner.shared.transmit(&mut st, &inner.sink).err();
        drop(st);
        if let Some(reason) = failed {
            inner.shared.close(reason);
        }
        inner.shared.progress.notify_waiters();
    }
}
