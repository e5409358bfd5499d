#![warn(missing_docs, missing_debug_implementations)]
//! An async QMP client on tokio, with a blocking facade.
//!
//! Comments and docs cite facts about QEMU's protocol by rule id ("rule
//! R3", "P4"): they are the sections of `docs/protocol-notes.md` in the
//! project's repository, each measured on real QEMU binaries.
//!
//! ```no_run
//! # async fn demo() -> qmp_client::Result<()> {
//! use qmp_client::{Client, EventFilter};
//! use serde_json::json;
//!
//! let client = Client::connect("/run/vm/qmp.sock").await?;
//! println!("QEMU {}", client.greeting().unwrap().version.qemu);
//! let status = client.execute("query-status", json!(null)).await?;
//! let mut stops = client.events(EventFilter::name("STOP"));
//! client.execute("stop", json!(null)).await?;
//! let stop = stops.next().await;
//! # Ok(()) }
//! ```
//!
//! How it is built, module by module:
//! * [`address`] (from `qmp-proto`): the one address syntax;
//! * [`transport`]: unix and TCP streams, accept mode, fd passing;
//! * `connection`: framed reads over the sans-IO decoder of `qmp-proto`;
//! * `handshake`: greeting and capability negotiation;
//! * `router`: the reader task that routes replies by id and events to
//!   subscribers; `writer`: the task that batches writes;
//! * [`Client`] and [`ClientBuilder`]: the API; [`blocking`]: the same
//!   without async.
//!
//! Traffic is logged with `tracing` at debug level under the target
//! `qmp::wire` (`<-` received, `->` sent); when that level is off, no
//! message is formatted.

#[cfg(feature = "blocking")]
pub mod blocking;
mod builder;
mod client;
mod connection;
mod error;
mod events;
mod handshake;
mod router;
pub mod transport;
mod writer;

pub use builder::{ClientBuilder, Handshake, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use client::{Call, Client};
pub use error::{Disconnect, Error, Result};
pub use events::{EventFilter, EventStream, Lagged, DEFAULT_EVENT_BUFFER};
pub use qmp_proto::address::{self, Address};
pub use qmp_proto::{self as proto, Event, Greeting, QmpError, Response};
pub use router::INBAND_WINDOW;
pub use transport::{Listener, Stream};
