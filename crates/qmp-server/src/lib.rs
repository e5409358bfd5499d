#![warn(missing_docs, missing_debug_implementations)]
//! A QMP server that answers like QEMU's own monitor.
//!
//! Comments and docs cite facts about QEMU's protocol by rule id ("rule
//! R3", "P4"): they are the sections of `docs/protocol-notes.md` in the
//! project's repository, each measured on real QEMU binaries.
//!
//! * [`session`]: the protocol without I/O: greeting, capability
//!   negotiation, request checks, the in-band queue and out-of-band
//!   dispatch, with QEMU's texts and QEMU's order.
//! * [`server`]: the tokio server around it: unix and TCP listeners,
//!   sessions, command handlers, events, file descriptors, shutdown.
//! * [`connection`]: one client connection driving a session, for any
//!   [`Backend`] (the server's handlers, or a proxy's QEMU).
//! * [`declare`]: declared argument and return types, and the
//!   `query-qmp-schema` generated from them.
//! * [`schema`]: arguments checked against a QEMU schema with QEMU's texts.
//! * [`mock`]: a mock QEMU from a real QEMU's schema dump.
//! * [`demo`]: a demo machine built on the server, the framework's showcase.
//!
//! A server with a typed handler, and a client of it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use qmp_server::Server;
//!
//! #[derive(serde::Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! let server = Server::builder()
//!     .version(10, 0, 0, "my-emulator")
//!     .typed("add", |args: Add| async move { Ok(args.a + args.b) })
//!     .build();
//! let dir = tempfile::tempdir()?;
//! let address = format!("unix:{}", dir.path().join("qmp.sock").display());
//! let listener = server.bind(&address.parse()?).await?;
//! tokio::spawn({
//!     let server = server.clone();
//!     async move { server.serve(listener).await }
//! });
//!
//! let client = qmp_client::Client::connect(&address).await?;
//! let sum = client.execute("add", serde_json::json!({"a": 2, "b": 3})).await?;
//! assert_eq!(sum, 5);
//! let e = client.execute("add", serde_json::json!({"a": 2})).await.unwrap_err();
//! assert_eq!(e.qmp().unwrap().desc, "missing field `b`");
//! # Ok(()) }
//! ```

pub mod connection;
pub mod declare;
pub mod demo;
pub mod mock;
pub mod schema;
pub mod server;
pub mod session;

pub use connection::{Backend, Event, HandlerResult, Stream};
pub use qmp_proto::qemu_json::{QDict, QObject};
pub use server::{Listener, Request, Server, ServerBuilder};
pub use session::{Call, CommandSet, QmpError, Session, SessionConfig, Step};
