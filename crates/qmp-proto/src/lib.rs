#![warn(missing_docs, missing_debug_implementations)]
//! The QEMU Monitor Protocol without I/O.
//!
//! Comments and docs cite facts about QEMU's protocol by rule id ("rule
//! R3", "P4"): they are the sections of `docs/protocol-notes.md` in the
//! project's repository, each measured on real QEMU binaries.
//!
//! This crate holds what every part of the project shares and nothing that
//! touches a socket, so each piece can be tested (and fuzzed) byte by byte:
//!
//! * [`message`]: the message model (greeting, request, response, event);
//! * [`decoder`]: bytes in any chunking to messages, with a size limit;
//! * [`encoder`]: requests to compact JSON lines;
//! * [`args`]: the `key=value` argument syntax of the command-line tools;
//! * [`address`]: the one address syntax (`/path`, `host:port`, ...);
//! * [`schema`]: the model of a QEMU schema (`query-qmp-schema`).
//!
//! The tokio client in `qmp-client` wraps these thinly. Driving the
//! decoder by hand, as a client reads a server's bytes in whatever chunks
//! they come:
//!
//! ```
//! use qmp_proto::{Decoder, Message};
//! use serde_json::json;
//!
//! let mut decoder = Decoder::new();
//! let mut messages = Vec::new();
//! let wire: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n\
//!     {\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, \"event\": \"STOP\"}\r\n{\"return\": {}, \"id\": 1}\r\n";
//! for chunk in wire.chunks(7) {
//!     decoder.feed(chunk);
//!     while let Some(message) = decoder.next_message()? {
//!         messages.push(message);
//!     }
//! }
//! assert!(matches!(&messages[0], Message::Greeting(g) if g.offers("oob")));
//! assert!(matches!(&messages[1], Message::Event(e) if e.name == "STOP"));
//! assert!(matches!(&messages[2], Message::Response(r) if r.id == Some(json!(1))));
//!
//! // and the other way: a request as one line
//! let mut line = Vec::new();
//! qmp_proto::encode_request(&mut line, "stop", None::<&()>, Some(&2), false)?;
//! assert_eq!(line, b"{\"execute\":\"stop\",\"id\":2}\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod address;
pub mod args;
pub mod decoder;
pub mod encoder;
pub mod message;
pub mod qemu_json;
pub mod schema;
pub mod typed;

pub use address::{Address, AddressError, TlsOptions};

/// How many in-band requests QEMU queues per monitor with oob on (rule
/// O3): past them it reads nothing until one finishes. A server that
/// behaves as QEMU does queues this many; a client keeps at most this many
/// in flight.
pub const QUEUE_SIZE: usize = 8;
pub use decoder::{DecodeError, Decoder, DEFAULT_MAX_MESSAGE_SIZE};
pub use encoder::encode_request;
pub use message::{
    Arguments, Event, Greeting, Message, QemuVersion, QmpError, Request, Response, Timestamp,
    Version,
};
