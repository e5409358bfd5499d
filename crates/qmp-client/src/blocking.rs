//! A blocking facade over the async client, for code that is not async.
//!
//! It owns a small tokio runtime with one worker thread, so the reader task
//! keeps routing replies and buffering events while the caller is busy
//! elsewhere. Do not use it from inside an async runtime. Everything the
//! async [`Client`](crate::Client) does, this does too, by the same names.
//!
//! ```
//! # let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
//! # std::thread::spawn(move || {
//! #     use std::io::{BufRead, BufReader, Write};
//! #     let mut w = theirs.try_clone().unwrap();
//! #     w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\n").unwrap();
//! #     for line in BufReader::new(theirs).lines() {
//! #         let line = line.unwrap();
//! #         let id = line.split("\"id\":").nth(1).map(|s| s.trim_end_matches('}').to_owned());
//! #         let reply = if line.contains("stop") {
//! #             w.write_all(b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n").unwrap();
//! #             "{}"
//! #         } else { "{}" };
//! #         let id = id.map(|i| format!(", \"id\":{i}")).unwrap_or_default();
//! #         w.write_all(format!("{{\"return\": {reply}{id}}}\n").as_bytes()).unwrap();
//! #     }
//! # });
//! use qmp_client::blocking::{Client, Waited};
//! use qmp_client::{ClientBuilder, EventFilter};
//! use std::time::Duration;
//!
//! // Usually Client::connect("/run/vm/qmp.sock"); here one end of a pair.
//! let client = Client::from_stream(ClientBuilder::new(), ours)?;
//! let mut stops = client.events(EventFilter::name("STOP"));
//! client.execute("stop", serde_json::json!({}))?;
//! match stops.next_timeout(Duration::from_secs(5)) {
//!     Waited::Event(e) => assert_eq!(e.name, "STOP"),
//!     other => panic!("no STOP: {other:?}"),
//! }
//! client.close();
//! # Ok::<(), qmp_client::Error>(())
//! ```

use crate::Result;
use crate::{Call, ClientBuilder, Disconnect, Event, EventFilter, Greeting, Lagged, Response};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// A QMP connection whose calls block the calling thread.
#[derive(Debug)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<Runtime>,
}

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("qmp-client")
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Connect {
            address: "(runtime)".into(),
            source: Arc::new(e),
        })
}

impl Client {
    /// Connects with default settings.
    pub fn connect(address: &str) -> Result<Client> {
        Self::connect_with(ClientBuilder::new(), address)
    }

    /// Connects with the settings of `builder`.
    pub fn connect_with(builder: ClientBuilder, address: &str) -> Result<Client> {
        Self::start(builder.connect(address))
    }

    /// Runs QMP over a unix socket already connected (one end of a
    /// socketpair given to a child QEMU, say).
    pub fn from_stream(
        builder: ClientBuilder,
        stream: std::os::unix::net::UnixStream,
    ) -> Result<Client> {
        Self::from_fd(builder, stream.into())
    }

    /// Runs QMP over a connected unix or TCP socket the caller owns (an
    /// inherited descriptor: only a program's `main` can know it owns one).
    pub fn from_fd(builder: ClientBuilder, fd: OwnedFd) -> Result<Client> {
        Self::start(builder.from_fd(fd))
    }

    /// Makes the client's runtime and connects on it.
    fn start(
        connecting: impl std::future::Future<Output = Result<crate::Client>>,
    ) -> Result<Client> {
        let runtime = Arc::new(runtime()?);
        let inner = runtime.block_on(connecting)?;
        Ok(Client { inner, runtime })
    }

    /// The server's greeting (`None` for a server that sends none).
    pub fn greeting(&self) -> Option<&Greeting> {
        self.inner.greeting()
    }

    /// Whether oob was negotiated (`exec-oob` allowed).
    pub fn oob_enabled(&self) -> bool {
        self.inner.oob_enabled()
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&self, command: &str, arguments: Value) -> Result<Value> {
        self.runtime
            .block_on(self.inner.execute(command, arguments))
    }

    /// Runs a command with typed arguments and a typed result.
    pub fn execute_typed<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        command: &str,
        arguments: &A,
    ) -> Result<R> {
        self.runtime
            .block_on(self.inner.execute_typed(command, arguments))
    }

    /// Runs a typed command (see [`crate::Client::run`]).
    pub fn run<C: qmp_proto::typed::Command>(&self, command: C) -> Result<C::Ok> {
        use qmp_proto::typed::Qmp;
        let reply = self
            .runtime
            .block_on(self.inner.run_value(C::NAME, command.to_qmp()))?;
        C::Ok::from_qmp(reply).map_err(|error| crate::Error::Type {
            command: C::NAME.to_owned(),
            error,
        })
    }

    /// Events of type `E`, decoded (see [`crate::Client::events_of`]).
    pub fn events_of<E: qmp_proto::typed::Event>(&self) -> TypedEvents<E> {
        TypedEvents {
            inner: self.inner.events_of(),
            runtime: self.runtime.clone(),
        }
    }

    /// Runs a fully specified [`Call`].
    pub fn call(&self, call: Call) -> Result<Value> {
        self.runtime.block_on(self.inner.call(call))
    }

    /// Runs a command and waits for the first event it causes that passes
    /// `filter` (see [`crate::Client::execute_and_wait`]).
    pub fn execute_and_wait(
        &self,
        command: &str,
        arguments: Value,
        filter: EventFilter,
    ) -> Result<(Value, Arc<Event>)> {
        self.runtime
            .block_on(self.inner.execute_and_wait(command, arguments, filter))
    }

    /// Subscribes to events that pass `filter`.
    pub fn events(&self, filter: EventFilter) -> EventStream {
        EventStream {
            inner: self.inner.events(filter),
            runtime: self.runtime.clone(),
        }
    }

    /// Replies that carry no id (see [`crate::Client::unsolicited`]), as
    /// a blocking receiver.
    pub fn unsolicited(&self) -> Unsolicited {
        Unsolicited {
            inner: self.inner.unsolicited(),
            runtime: self.runtime.clone(),
        }
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Blocks until the connection is gone and tells why.
    pub fn disconnected(&self) -> Disconnect {
        self.runtime.block_on(self.inner.disconnected())
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// Closes gracefully (see [`crate::Client::close`]).
    pub fn close(self) {
        self.runtime.block_on(self.inner.close());
    }
}

/// What [`EventStream::next_timeout`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Waited {
    /// The next event.
    Event(Arc<Event>),
    /// This many events were lost before the next one, for lack of room.
    Lagged(Lagged),
    /// Nothing came in time; the stream goes on.
    TimedOut,
    /// The connection is gone: no more events will come.
    Ended,
}

impl Waited {
    /// The event, if one came.
    pub fn event(self) -> Option<Arc<Event>> {
        match self {
            Waited::Event(e) => Some(e),
            _ => None,
        }
    }
}

/// A blocking event subscription.
#[derive(Debug)]
pub struct EventStream {
    inner: crate::EventStream,
    runtime: Arc<Runtime>,
}

/// Blocks for each next event; ends once the connection is gone.
impl Iterator for EventStream {
    type Item = std::result::Result<Arc<Event>, Lagged>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.inner.next())
    }
}

impl EventStream {
    /// Like [`next`](Iterator::next), giving up after `timeout`; says which
    /// of an event, a loss, the timeout or the end it was.
    pub fn next_timeout(&mut self, timeout: Duration) -> Waited {
        let next = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.next()).await });
        match next {
            Err(_) => Waited::TimedOut,
            Ok(None) => Waited::Ended,
            Ok(Some(Ok(e))) => Waited::Event(e),
            Ok(Some(Err(lagged))) => Waited::Lagged(lagged),
        }
    }

    /// The next event already buffered, without waiting.
    pub fn try_next(&mut self) -> Option<std::result::Result<Arc<Event>, Lagged>> {
        self.inner.try_next()
    }
}

/// A blocking typed subscription.
#[derive(Debug)]
pub struct TypedEvents<E> {
    inner: crate::TypedEvents<E>,
    runtime: Arc<Runtime>,
}

/// Blocks for each next event; ends once the connection is gone.
impl<E: qmp_proto::typed::Event> Iterator for TypedEvents<E> {
    type Item = std::result::Result<E, crate::TypedEventError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.inner.next())
    }
}

impl<E: qmp_proto::typed::Event> TypedEvents<E> {
    /// The next event, or `None` when `timeout` passes first or the
    /// connection ended.
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Option<std::result::Result<E, crate::TypedEventError>> {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.next()).await })
            .ok()
            .flatten()
    }
}

/// Replies without an id, received blocking.
#[derive(Debug)]
pub struct Unsolicited {
    inner: tokio::sync::broadcast::Receiver<Response>,
    runtime: Arc<Runtime>,
}

impl Unsolicited {
    /// The next reply without an id, waiting up to `timeout`; `None` when
    /// none came in time or the connection is gone. Replies lost because
    /// this receiver fell behind are skipped.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Response> {
        use tokio::sync::broadcast::error::RecvError;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                loop {
                    match self.inner.recv().await {
                        Ok(r) => return Some(r),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                }
            })
            .await
            .ok()
            .flatten()
        })
    }
}
