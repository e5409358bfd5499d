//! A blocking facade over the async client, for code that is not async.
//!
//! It owns a small tokio runtime with one worker thread, so the reader task
//! keeps routing replies and buffering events while the caller is busy
//! elsewhere. Do not use it from inside an async runtime.

use crate::{Call, ClientBuilder, Event, EventFilter, Greeting, Lagged, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

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

    pub fn connect_with(builder: ClientBuilder, address: &str) -> Result<Client> {
        let runtime = Arc::new(runtime()?);
        let inner = runtime.block_on(builder.connect(address))?;
        Ok(Client { inner, runtime })
    }

    pub fn greeting(&self) -> Option<&Greeting> {
        self.inner.greeting()
    }

    pub fn execute(&self, command: &str, arguments: Value) -> Result<Value> {
        self.runtime
            .block_on(self.inner.execute(command, arguments))
    }

    pub fn execute_typed<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        command: &str,
        arguments: &A,
    ) -> Result<R> {
        self.runtime
            .block_on(self.inner.execute_typed(command, arguments))
    }

    pub fn call(&self, call: Call) -> Result<Value> {
        self.runtime.block_on(self.inner.call(call))
    }

    pub fn events(&self, filter: EventFilter) -> EventStream {
        EventStream {
            inner: self.inner.events(filter),
            runtime: self.runtime.clone(),
        }
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    pub fn close(self) {
        self.runtime.block_on(self.inner.close());
    }
}

/// A blocking event subscription.
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
    /// Like [`next`](Self::next), giving up after `timeout` (`None` then).
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Option<std::result::Result<Arc<Event>, Lagged>> {
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.inner.next())
                .await
                .ok()
                .flatten()
        })
    }
}
