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
//! * [`address`]: the one address syntax (`/path`, `host:port`, ...).
//!
//! The tokio client in `qmp-client` wraps these thinly.

pub mod address;
pub mod args;
pub mod decoder;
pub mod encoder;
pub mod message;
pub mod qemu_json;

pub use address::{Address, AddressError};
pub use decoder::{DecodeError, Decoder, DEFAULT_MAX_MESSAGE_SIZE};
pub use encoder::encode_request;
pub use message::{
    Arguments, Event, Greeting, Message, QemuVersion, QmpError, Request, Response, Timestamp,
    Version,
};
