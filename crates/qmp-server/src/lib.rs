//! A QMP server that answers like QEMU's own monitor.
//!
//! [`session`] is the protocol without I/O: greeting, capability
//! negotiation, request checks, the in-band queue and out-of-band
//! dispatch, with QEMU's texts and QEMU's order. A transport feeds it bytes
//! and writes what it returns; it runs the commands the session hands out.

pub mod session;

pub use session::{Call, CommandSet, QmpFailure, Session, SessionConfig, Step};
