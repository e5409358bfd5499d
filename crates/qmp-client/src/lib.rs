#![warn(missing_docs, missing_debug_implementations)]
//! An async QMP client on tokio, with a blocking facade.
//!
//! Comments and docs cite facts about QEMU's protocol by rule id ("rule
//! R3", "P4"): they are the sections of `docs/protocol-notes.md` in the
//! project's repository, each measured on real QEMU binaries.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_client::{Call, Client, EventFilter};
//! use serde_json::json;
//!
//! // The demo machine of qmp-server stands in for QEMU here. With QEMU,
//! // an address: "/run/vm/qmp.sock", "unix:/path", "localhost:4444", ...
//! let demo = qmp_server::demo::start().await?;
//! let client = Client::connect(demo.address()).await?;
//! println!("QEMU {}", client.greeting().unwrap().version.qemu);
//! let status = client.execute("query-status", json!({})).await?;
//! assert_eq!(status["status"], "prelaunch");
//!
//! // Subscribe first: an event a command causes comes before its reply.
//! let mut events = client.events(EventFilter::names(["RESUME", "STOP"]));
//! client.execute("cont", json!({})).await?;
//! client.call(Call::new("stop").id("my-own-id")).await?;
//! assert_eq!(events.next().await.unwrap()?.name, "RESUME");
//! assert_eq!(events.next().await.unwrap()?.name, "STOP");
//!
//! // QEMU's errors come back as errors, with their class and text
//! let e = client.execute("no-such-command", json!({})).await.unwrap_err();
//! assert_eq!(e.qmp().unwrap().class, "CommandNotFound");
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! How it is built, module by module:
//! * [`address`] (from `qmp-proto`): the one address syntax;
//! * [`transport`]: unix and TCP streams, accept mode, fd passing;
//! * `connection`: framed reads over the sans-IO decoder of `qmp-proto`;
//! * `handshake`: greeting and capability negotiation;
//! * [`session`]: ids, pending calls, the in-band window and routing,
//!   as a sans-IO state machine;
//! * `router`: the reader task that feeds the session and delivers
//!   replies and events; `writer`: the task that batches writes;
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
mod nudge;
mod router;
pub mod session;
pub mod transport;
mod typed;
mod writer;

pub use builder::{ClientBuilder, Handshake, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use client::{Call, Client};
pub use error::{Disconnect, Error, Result};
pub use events::{EventFilter, EventStream, Lagged, DEFAULT_EVENT_BUFFER};
pub use qmp_proto::address::{self, Address};
pub use qmp_proto::{self as proto, Event, Greeting, QmpError, Response};
pub use transport::{Listener, Stream};
pub use typed::{TypedEventError, TypedEvents};
